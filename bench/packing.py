"""Benchmark: a trial's fold x seed replicas trained in one process (packed where the family packs), and whether the
robust objective they give picks better winners.

**Throughput.** R replicas of one configuration as ``hpo trial`` trains them, against the same R replicas as R
separate trial processes. The replicas are seeds on the usual split (``--folds=1 --seeds=R``, seeds 0..R-1): a
separate process can reproduce such a replica exactly with ``--seed=s``, while it has no flag that picks one fold of
several (and expanding folds differ in length, so they would not pack together anyway). Three variants, each a real
``python -m hpo_lib.trial`` process with the same model flags, data, epochs (patience off) and ``--threads``:

* ``sep``: R processes ``--seed=0 .. R-1`` run one after another (the processes for R = 1, 4, 8 are the first 1, 4,
  8 of the 16 measured for R = 16: the separate variant *is* those processes, so they are measured once);
* ``auto``: one process ``--seeds=R --pack=auto`` (the trial's default: ``assemble.load_datasets`` once,
  ``assemble.build_replicas``, ``train.fit_replicas``; the MLP packs into ``models.PackedMLP``, the other families
  train one after another in that process);
* ``off``: one process ``--seeds=R --pack=off`` (MLP only: for the other families ``auto`` already is ``off``), so
  the packing gain is told apart from the gain of one process start and one data load.

Reported: wall seconds from spawn to exit, replica-epochs per second (R x epochs / wall seconds), their ratios, and
peak memory, the process's peak RSS (``ru_maxrss`` of ``os.wait4``'s rusage for that one child; ``sep``: the largest
of its processes, since they run one after another). With a CUDA GPU it adds a table of R packed MLP replicas in this
process against one replica alone, with the GPU utilisation sampled while they train; without one, one line says so.

**Selection reliability.** On ``sample:sp500`` and ``sample:nasdaq``, return and volatility targets, the MLP
manifest's study (its multivariate TPE with ``random_state`` = the study seed, no early stopping: patience = epochs,
no pruner) runs the same number of trials in this process with (a) ``--folds=1 --seeds=1`` and (b) ``--folds=4
--seeds=2``; the objective is each trial's best ``val_loss`` (for (b) the mean over its 8 replicas). Afterwards every
completed trial's configuration is scored once on the test split the same way for (a) and (b): trained with
``--folds=1 --seeds=1`` (seed 0, the manifest's other flags) on the usual train split, its best-validation-epoch
weights scored with ``hpo_lib.data.scoring.score(ds, "test", ...)``'s ``loss``. That is exactly (a)'s own trial, so
(a)'s trained model is scored directly, and a configuration met twice is scored once. Per cell and setting, over the
study seeds: Spearman's rank correlation between the objective and the test loss across the study's trials, the
winner's (best objective) test regret (its test loss minus the best test loss among the study's trials), and its
val->test gap (its test loss minus its objective). The test split is never seen while tuning.

    python bench/packing.py           # the four families at 1, 4, 8, 16 replicas; 4 cells x 3 seeds x 8 trials
    python bench/packing.py --quick   # mlp + gru at 1, 4 replicas, 1 epoch; 1 cell x 2 seeds x 4 trials
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from _objective import ROOT, Bench, Datasets, fit_replicas_trial, machine, quiet, with_seed
from optuna.trial import TrialState
from scipy.stats import spearmanr

from hpo_lib import train
from hpo_lib.data import scoring
from hpo_lib.engine import sampling
from hpo_lib.errors import TrainingError
from hpo_lib.trial import assemble
from hpo_lib.trial.flags import TrialArgs, parse_args

# model flags per family (the trial's defaults otherwise): small recurrent models, so that 16 separate processes of
# each family fit the bench's time on 2 cores
FAMILY_FLAGS = {
    "mlp": ["--hidden-size=256", "--num-layers=3", "--seq-len=60"],
    "lstm": ["--hidden-size=32", "--num-layers=1", "--seq-len=30"],
    "gru": ["--hidden-size=32", "--num-layers=1", "--seq-len=30"],
    "cnn-lstm": ["--cnn-filters=32", "--cnn-layers=1", "--lstm-hidden=32", "--seq-len=30"],
}
CELLS = [("sample:sp500", "return"), ("sample:sp500", "volatility"),
         ("sample:nasdaq", "return"), ("sample:nasdaq", "volatility")]
SETTINGS = [(1, 1), (4, 2)]  # (folds, seeds): (a), (b)


# ----------------------------------------------------------------------------------------------- throughput
def run_process(argv: list[str], err_path: Path) -> tuple[float, float]:
    """One trial process: its wall seconds and peak RSS (MiB, ``ru_maxrss`` of this child alone)."""
    with open(err_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = err_path.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"trial process failed (exit {proc.returncode}): {' '.join(argv)}\n" + "\n".join(tail))
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def throughput(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for family in args.families:
        base = [sys.executable, "-m", "hpo_lib.trial", f"--model={family}", *FAMILY_FLAGS[family],
                f"--data={args.data}", "--target=return", f"--epochs={args.epochs}", f"--patience={args.epochs}",
                f"--threads={args.threads}", "--device=cpu"]
        top = max(args.replicas)
        separate = [run_process([*base, f"--seed={s}", f"--output-dir={tmp / f'{family}-sep{s}'}"],
                                tmp / "err.txt") for s in range(top)]
        for r in args.replicas:
            row: dict[str, Any] = {"family": family, "replicas": r,
                                   "sep_s": sum(w for w, _ in separate[:r]), "sep_mib": max(m for _, m in separate[:r])}
            for pack in ("auto", "off") if family == "mlp" else ("auto",):
                wall, mib = run_process([*base, "--seed=0", f"--seeds={r}", f"--pack={pack}",
                                         f"--output-dir={tmp / f'{family}-{pack}{r}'}"], tmp / "err.txt")
                row[f"{pack}_s"], row[f"{pack}_mib"] = wall, mib
            rows.append(row)
    return rows


def print_throughput(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[tuple[str, int], dict[str, str]]:
    """The table; returns every printed cell by (family, replicas), so the headline quotes exactly what is shown."""
    print(f"# packing throughput | {', '.join(args.families)} at {', '.join(map(str, args.replicas))} replicas "
          f"(seeds on the usual split), {args.epochs} epoch(s), {args.data}, target return, --threads={args.threads} "
          f"per process, separate processes one after another, 1 run each; ep/s = replica-epochs per wall second "
          f"(process start to exit), MiB = peak RSS (wait4 ru_maxrss; sep: largest process); off = --pack=off "
          f"(mlp only: the other families have no packed form, so auto trains them one after another already); "
          f"at 1 replica the variants are one and the same command (their ratios are noise); goals: auto/sep >= 1.00 "
          f"for every family at 2+ replicas, >= 1.50 for mlp at 8 replicas; {machine()}")
    head = ("family", "replicas", "sep_s", "auto_s", "off_s", "sep_ep/s", "auto_ep/s", "off_ep/s",
            "auto/sep", "off/sep", "auto/off", "sep_MiB", "auto_MiB", "off_MiB")
    print(" ".join(f"{h:>9}" if i > 1 else f"{h:<9}" for i, h in enumerate(head)))
    printed = {}
    for row in rows:
        epochs = row["replicas"] * args.epochs
        cells = {"family": row["family"], "replicas": str(row["replicas"])}
        for v in ("sep", "auto", "off"):
            cells[f"{v}_s"] = f"{row[v + '_s']:.2f}" if v + "_s" in row else "-"
            cells[f"{v}_ep/s"] = f"{epochs / row[v + '_s']:.3f}" if v + "_s" in row else "-"
            cells[f"{v}_MiB"] = f"{row[v + '_mib']:.0f}" if v + "_mib" in row else "-"
        for num, den in (("auto", "sep"), ("off", "sep"), ("auto", "off")):
            known = cells[f"{num}_ep/s"] != "-" and cells[f"{den}_ep/s"] != "-"
            cells[f"{num}/{den}"] = (f"{float(cells[f'{num}_ep/s']) / float(cells[f'{den}_ep/s']):.3f}"
                                     if known else "-")
        print(" ".join(f"{cells[h]:>9}" if i > 1 else f"{cells[h]:<9}" for i, h in enumerate(head)))
        printed[(row["family"], row["replicas"])] = cells
    return printed


# ----------------------------------------------------------------------------------------------- GPU
def gpu_table(args: argparse.Namespace) -> str | None:
    """R packed MLP replicas on the GPU in this process against one replica alone; None without CUDA."""
    if not torch.cuda.is_available():
        print("# gpu packing | skipped: no CUDA GPU visible (torch.cuda.is_available() is False)")
        return None
    from gpu_throughput import UtilisationSampler

    levels = [1, 8] if args.quick else [1, 8, 32, 64, 128]
    flags = ["--model=mlp", *FAMILY_FLAGS["mlp"], "--data=sample:sp500", "--target=return", "--device=cuda",
             f"--epochs={args.epochs}", f"--patience={args.epochs}", f"--threads={args.threads}"]
    datasets = Datasets()
    warm = parse_args([*flags, "--epochs=1", "--patience=1", "--seeds=2"])
    fit_replicas_trial(warm, datasets)  # CUDA context, kernels and data outside the measurement
    rows = []
    for r in levels:
        targs = parse_args([*flags, f"--seeds={r}"])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with UtilisationSampler(interval_s=0.2) as sampler:
            result = fit_replicas_trial(targs, datasets)
            torch.cuda.synchronize()
        rows.append((r, result.train_time_s, r * result.epochs_run / result.train_time_s, sampler.mean(0),
                     torch.cuda.max_memory_allocated() / 2**20))
    name = torch.cuda.get_device_name(0)
    print(f"# gpu packing | {name}: R packed MLP replicas (seeds on the usual split of sample:sp500) trained in this "
          f"process by train.fit_replicas, {args.epochs} epochs; one at a time = the R=1 row's rate; train seconds "
          f"from fit_replicas; util = mean GPU utilisation while training ({UtilisationSampler().source}); "
          f"MiB = torch.cuda.max_memory_allocated")
    print(f"{'replicas':<9} {'train_s':>9} {'ep/s':>9} {'vs_one':>9} {'util_%':>7} {'MiB':>8}")
    one = f"{rows[0][2]:.3f}"
    top = ""
    for r, seconds, rate, util, mib in rows:
        top = f"{rate:.3f}"
        vs = f"{float(top) / float(one):.3f}"
        print(f"{r:<9} {seconds:>9.2f} {top:>9} {vs:>9} {util:>7.0f} {mib:>8.0f}")
    return f"gpu {levels[-1]} packed replicas {vs}x one at a time"


# ----------------------------------------------------------------------------------------------- selection
def test_loss(targs: TrialArgs, datasets: Datasets, cache: dict) -> tuple[float, float]:
    """A configuration trained with --folds=1 --seeds=1 and scored on test: (its best val_loss, its test loss)."""
    key = tuple(sorted(vars(targs).items()))
    if key not in cache:
        cfg = assemble.seeded_config(targs)
        ds = datasets.get(targs)
        model = assemble.build_model(targs, ds)
        result = train.fit(model, ds, cfg)
        forecast = train.to_forecast(ds, train.predict(model, assemble.inputs_on_device(ds, "test", result.device)))
        cache[key] = (result.best_val_loss, scoring.score(ds, "test", forecast)["loss"])
    return cache[key]


def study(bench: Bench, seed: int, n_trials: int, cache: dict) -> list[tuple[float, float]]:
    """One study: the engine's sampler, ask / tell, no pruner; per completed trial (objective, test loss)."""
    sampler = sampling.make_sampler(with_seed(bench.algorithm, seed), bench.distributions, n_trials)
    opt = optuna.create_study(direction=bench.direction, sampler=sampler, study_name=f"packing-{seed}")
    scored = []
    for _ in range(n_trials):
        current = opt.ask(bench.distributions)
        targs = bench.args(current.params)
        try:
            if targs.folds == 1 and targs.seeds == 1:  # (a): the trial is its own test-scoring run
                objective, loss = test_loss(targs, bench.datasets, cache)
            else:
                objective = fit_replicas_trial(targs, bench.datasets).best_val_loss
                single = bench.args(current.params)
                single.folds, single.seeds = 1, 1
                loss = test_loss(single, bench.datasets, cache)[1]
        except TrainingError:
            opt.tell(current, None, state=TrialState.FAIL)
            continue
        opt.tell(current, objective)
        scored.append((objective, loss))
    return scored


def summarise(scored: list[tuple[float, float]]) -> dict[str, float]:
    objectives, losses = [o for o, _ in scored], [t for _, t in scored]
    winner = min(range(len(scored)), key=lambda i: objectives[i])
    return {"spearman": float(spearmanr(objectives, losses).statistic),
            "regret": losses[winner] - min(losses), "gap": losses[winner] - objectives[winner],
            "test": losses[winner], "n": len(scored)}


def selection(args: argparse.Namespace) -> dict[tuple[str, str], list[dict[str, float]]]:
    datasets = Datasets()
    cache: dict = {}
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    for data_spec, target in args.cells:
        for folds, seeds in SETTINGS:
            bench = Bench(args.manifest, datasets=datasets,
                          fixed={"data": data_spec, "target": target, "epochs": str(args.sel_epochs),
                                 "patience": str(args.sel_epochs), "threads": str(args.threads),
                                 "folds": str(folds), "seeds": str(seeds), "seed": "0", "device": "cpu"})
            out[(f"{data_spec.split(':')[1].split(',')[0]}/{target}", f"{folds}x{seeds}")] = [
                summarise(study(bench, seed, args.trials, cache)) for seed in range(args.study_seeds)]
    return out


def spread(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f} [{' '.join(f'{v:.{digits}f}' for v in values)}]"


def print_selection(results: dict[tuple[str, str], list[dict[str, float]]],
                    args: argparse.Namespace) -> dict[str, dict[str, str]]:
    print(f"# selection reliability | {Path(args.manifest).name}, {len(args.cells)} cell(s) x {args.study_seeds} "
          f"study seeds x {args.trials} trials x {args.sel_epochs} epochs, settings folds x seeds = 1x1 (a) and "
          f"4x2 (b), --threads={args.threads}, no pruner, patience off, {args.startup}; every completed trial's "
          "configuration scored once on test (--folds=1 --seeds=1, seed 0, best-val epoch); spearman = rank "
          "correlation of the objective with the test loss across trials; regret = winner's test loss - best test "
          "loss among the study's trials; gap = winner's test loss - its objective; mean ± sd [per study seed]; "
          "losses in standardised MSE; 'all' = mean over cells [per cell]")
    print(f"{'cell':<17} {'setting':<7} {'trials':>6}  spearman | regret | gap | winner_test")
    metrics = (("spearman", 3), ("regret", 4), ("gap", 4), ("test", 4))
    for (cell, setting), per_seed in results.items():
        trials = min(s["n"] for s in per_seed)
        shown = " | ".join(spread([s[m] for s in per_seed], d) for m, d in metrics)
        print(f"{cell:<17} {setting:<7} {trials:>6}  {shown}")
    means = {}
    for setting in dict.fromkeys(s for _, s in results):
        cells = [v for (_, s), v in results.items() if s == setting]
        per_cell = {m: [statistics.mean(x[m] for x in c) for c in cells] for m, _ in metrics}
        means[setting] = {m: f"{statistics.mean(per_cell[m]):.{d}f}" for m, d in metrics}
        shown = " | ".join(spread(per_cell[m], d) for m, d in metrics)
        print(f"{'all':<17} {setting:<7} {'':>6}  {shown}")
    return means


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run, for the test suite")
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "mlp-experiment.yaml"))
    parser.add_argument("--data", default="sample:sp500,start=2012-01-01", help="throughput data spec")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="throughput epochs (default 2, quick 1)")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default 8, quick 4)")
    parser.add_argument("--sel-epochs", type=int, default=None, help="epochs per tuning trial (default 3, quick 1)")
    args = parser.parse_args()
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.trials = args.trials or (4 if args.quick else 8)
    args.sel_epochs = args.sel_epochs or (1 if args.quick else 3)
    args.families = ["mlp", "gru"] if args.quick else list(FAMILY_FLAGS)
    args.replicas = [1, 4] if args.quick else [1, 4, 8, 16]
    args.study_seeds = 2 if args.quick else 3
    args.cells = [("sample:sp500,start=2008-01-01", "return")] if args.quick else CELLS
    quiet()
    startup = int(dict((s["name"], s["value"]) for s in Bench(args.manifest).algorithm["algorithmSettings"])
                  .get("n_startup_trials", 0))
    args.startup = (f"the first {min(startup, args.trials)} trials are TPE's random start-up draws: for one study seed "
                    f"the same configurations in (a) and (b)")

    with tempfile.TemporaryDirectory() as tmp:
        printed = print_throughput(throughput(args, Path(tmp)), args)
    gpu = gpu_table(args)
    means = print_selection(selection(args), args)

    at = 8 if 8 in args.replicas else max(args.replicas)
    ratios = ", ".join(f"{f} {printed[(f, at)]['auto/sep']}x" for f in args.families)
    # at 1 replica the three variants run the same command: those ratios are run-to-run noise, not a gain or loss
    lowest = min((c["auto/sep"] for (_, r), c in printed.items() if r > 1), key=float)
    mlp = printed[("mlp", at)]
    if at != 8:
        met = "not checked: no 8-replica row"
    else:
        met = "met" if float(lowest) >= 1.0 and float(mlp["auto/sep"]) >= 1.5 else "not met"
    a, b = means["1x1"], means["4x2"]
    print(f"headline: in-process/separate replica-epochs/s at {at} replicas: {ratios}; mlp packed/unpacked "
          f"{mlp['auto/off']}x; lowest at 2+ replicas {lowest}x (goals >= 1.00x every family, "
          f">= 1.50x mlp at 8: {met}){'; ' + gpu if gpu else '; gpu skipped'}; selection 1x1 vs 4x2: spearman "
          f"{a['spearman']} vs {b['spearman']}, regret {a['regret']} vs {b['regret']}, gap {a['gap']} vs {b['gap']}")
    sys.stdout.flush()
    if any(math.isnan(float(v)) for v in (*a.values(), *b.values())):
        print("# note: a Spearman correlation is undefined (constant objective or test loss)", file=sys.stderr)


if __name__ == "__main__":
    main()
