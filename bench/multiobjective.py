"""Benchmark: the Pareto front's hypervolume, katib-hpo-multiobjective against Katib's single-objective TPE.

The seed use case: the CNN-LSTM of ``manifests/cnn-lstm-pareto-experiment.yaml`` traded off on validation loss,
training time and model size. For each seed, two studies of N trials each, trained for real one after another in
this process (``bench/_objective.py``, the engine's trial flags):

* ``katib-hpo-multiobjective``: the manifest's algorithm (multi-objective TPE), proposals from
  :func:`hpo_lib.katib.suggestion.propose` through the engine's sampler, i.e. what the suggestion service answers;
* ``multivariate-tpe (val_loss)``: what Katib runs without this project, Optuna's TPE on the first objective only
  (Katib's ``suggestion-optuna``, the same seed and random start); its trials' time and size are recorded, not told.

Reported: the hypervolume of each study's Pareto front after N trials (all three objectives minimized), in one
normalized space: each objective scaled by the min and max seen over every trial of every study, the reference
point 1.1 on each axis. Higher is better; the last line is the mean ratio (multi-objective / single-objective).

Trial cost is kept small so three seeds run in minutes on 2 cores: one epoch, one fold and one seed per trial, a
short window and series, and the costliest knobs fixed (one unidirectional LSTM layer, no attention); training time
is the trial's own wall-clock ``train_time_s``, so it carries the machine's noise, as it does on a cluster.

    python bench/multiobjective.py             # 3 seeds x 12 trials, 4 random start trials (20 s on 2 cores)
    python bench/multiobjective.py --trials 40 --startup 10   # the manifest's budget and random start (49 s)
    python bench/multiobjective.py --quick     # 2 seeds x 4 trials, for the tests
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna
from _objective import ROOT, Bench, machine, quiet, with_seed
from optuna.trial import TrialState

from hpo_lib import models, train, trial
from hpo_lib.engine import sampling
from hpo_lib.errors import TrainingError
from hpo_lib.katib import experiment, suggestion

MANIFEST = ROOT / "manifests" / "cnn-lstm-pareto-experiment.yaml"
CHEAP = {  # fixed for every trial of both studies: a few seconds a trial on a shared CPU
    "data": "sample:sp500,start=2017-01-01",
    "target": "return",
    "folds": "1",
    "seeds": "1",
    "threads": "1",
    "seq-len": "20",
    "split-window": "20",
    "batch-size": "128",
    "lstm-layers": "1",
    "bidirectional": "false",
    "attention-heads": "0",
}
METHODS = ("katib-hpo-multiobjective", "multivariate-tpe (val_loss)")


def hypervolume(points: list[tuple[float, float, float]], reference: tuple[float, float, float]) -> float:
    """The volume dominated by ``points`` (minimized) and bounded by ``reference``: z-slices of 2-D sweeps."""
    inside = sorted({p for p in points if all(v < r for v, r in zip(p, reference))}, key=lambda p: p[2])
    volume = 0.0
    for i, point in enumerate(inside):
        top = inside[i + 1][2] if i + 1 < len(inside) else reference[2]
        if top > point[2]:
            volume += _area([(q[0], q[1]) for q in inside[: i + 1]], reference[:2]) * (top - point[2])
    return volume


def _area(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    area, lowest = 0.0, reference[1]
    for x, y in sorted(points):
        if y < lowest:
            area += (reference[0] - x) * (lowest - y)
            lowest = y
    return area


def run_study(bench: Bench, method: str, seed: int, n_trials: int, startup: int) -> list[tuple[float, float, float]]:
    """N trials of one method; each finished trial's (val_loss, train_time_s, model_size_mb)."""
    if method == METHODS[0]:
        algorithm = with_seed(bench.algorithm, seed)
        algorithm["algorithmSettings"] = [s for s in algorithm["algorithmSettings"] if s["name"] != "n_startup_trials"]
        algorithm["algorithmSettings"].append({"name": "n_startup_trials", "value": str(startup)})
        directions = ["minimize"] * len(experiment.objectives(bench.doc))
    else:
        algorithm = {"algorithmName": "multivariate-tpe", "algorithmSettings": [
            {"name": "n_startup_trials", "value": str(startup)}, {"name": "random_state", "value": str(seed)}]}
        directions = ["minimize"]
    sampler = sampling.make_sampler(algorithm, bench.distributions, n_trials)
    study = optuna.create_study(directions=directions, sampler=sampler)
    points = []
    for _ in range(n_trials):
        current = study.ask(bench.distributions)
        args = bench.args(current.params)
        cfg = trial.seeded_config(args)
        ds = bench.datasets.get(args)
        model = trial.build_model(args, ds)
        size = models.model_size_mb(model)
        try:
            result = train.fit(model, ds, cfg)
        except TrainingError:
            study.tell(current, state=TrialState.FAIL)
            continue
        point = (result.best_val_loss, result.train_time_s, size)
        points.append(point)
        study.tell(current, list(point) if len(directions) == 3 else point[0])
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="trials per study (default 12)")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds (default 3)")
    parser.add_argument("--startup", type=int, default=4, help="random start trials of both samplers (default 4)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--manifest", default=str(MANIFEST))
    parser.add_argument("--quick", action="store_true", help="2 seeds x 4 trials, 2 random start: for the tests")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.startup = 2, 4, 2
    quiet()
    bench = Bench(Path(args.manifest), fixed={**CHEAP, "epochs": str(args.epochs), "patience": str(args.epochs)})
    if bench.algorithm.get("algorithmName") != suggestion.ALGORITHM:
        parser.error(f"--manifest must use algorithm {suggestion.ALGORITHM}")

    started = time.perf_counter()
    fronts: dict[str, list[list[tuple[float, float, float]]]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        for method in METHODS:  # interleaved per seed: machine noise hits both alike
            fronts[method].append(run_study(bench, method, seed, args.trials, args.startup))
    elapsed = time.perf_counter() - started

    every = [p for runs in fronts.values() for points in runs for p in points]
    low = [min(p[i] for p in every) for i in range(3)]
    high = [max(p[i] for p in every) for i in range(3)]

    def scaled(p: tuple[float, float, float]) -> tuple[float, float, float]:
        return tuple((v - lo) / ((hi - lo) or 1.0) for v, lo, hi in zip(p, low, high))  # type: ignore[return-value]

    reference = (1.1, 1.1, 1.1)
    volumes = {m: [hypervolume([scaled(p) for p in points], reference) for points in fronts[m]] for m in METHODS}

    print(f"# {machine()}")
    print(f"# {MANIFEST.name}: {args.seeds} seeds x {args.trials} trials x {args.epochs} epoch(s), "
          f"{args.startup} random start trials, {elapsed:.0f} s")
    print("# objectives (minimized): val_loss, train_time_s, model_size_mb; normalized over every trial, "
          f"val_loss {low[0]:.4g}..{high[0]:.4g}, train_time_s {low[1]:.3g}..{high[1]:.3g}, "
          f"model_size_mb {low[2]:.3g}..{high[2]:.3g}; reference point 1.1")
    print(f"| {'sampler':<30} | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean |")
    print("|" + "-" * 32 + "|" + "--------|" * args.seeds + "------|")
    for method in METHODS:
        cells = " | ".join(f"{v:.4f}" for v in volumes[method])
        print(f"| {method:<30} | {cells} | {statistics.mean(volumes[method]):.4f} |")
    ratio = statistics.mean(volumes[METHODS[0]]) / statistics.mean(volumes[METHODS[1]])
    print(f"hypervolume after {args.trials} trials, multi-objective / single-objective TPE: {ratio:.2f}x")


if __name__ == "__main__":
    main()
