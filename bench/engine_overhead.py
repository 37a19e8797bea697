"""Benchmark: what running trials through `hpo tune` costs over running the same trials in one process.

Three variants of the same work, measured side by side in one run:

* ``engine``: ``hpo tune`` on a manifest (sampler seed fixed, no early stopping, one trial at a time, no MLflow):
  each trial is a process running the manifest's command, its stdout parsed with Katib's filter, Optuna storage
  in SQLite;
* ``engine+mlflow``: the same, with MLflow tracking on (a parent run, a nested run per trial);
* ``in-process``: the very same trials (the parameters the engine's sampler chose, read back from its study)
  run one after another with ``hpo_lib.trial.run`` in this process: the trials' compute and nothing else.

The ratio engine / in-process is the engine's overhead; (engine - in-process) / trials is the fixed cost per trial
(a Python start, ``import torch``, the data load). Variants alternate over repeats and medians are reported.

    python bench/engine_overhead.py           # 4 trials x 3 epochs of the MLP manifest, 2 repeats
    python bench/engine_overhead.py --quick   # 2 trials x 1 epoch of the MLP manifest, 1 repeat
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from hpo_lib import engine, trial

ROOT = Path(__file__).resolve().parents[1]


def run_engine(manifest: Path, state: Path, args: argparse.Namespace, tracking: bool) -> tuple[float, optuna.Study]:
    options = engine.TuneOptions(overrides={"data": args.data, "epochs": str(args.epochs),
                                            "threads": str(args.threads)},
                                 state_dir=state, max_trials=args.trials, parallel=1, pruner="none",
                                 tracking=tracking)
    start = time.perf_counter()
    study = engine.run(manifest, options)
    return time.perf_counter() - start, study


def run_in_process(study: optuna.Study, out_dir: Path) -> float:
    """The engine's trials again, from the exact argv each one ran with, in this process."""
    start = time.perf_counter()
    for t in study.trials:
        argv = [a for a in t.user_attrs["argv"][2:] if not a.startswith("--output-dir=")]
        trial.run(trial.parse_args([*argv, f"--output-dir={out_dir / str(t.number)}"]), out=io.StringIO(),
                  err=io.StringIO())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="Experiment YAML (default: the MLP manifest)")
    parser.add_argument("--trials", type=int, default=None, help="trials per variant (default 4, quick 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3, quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each variant (default 2, quick 1)")
    parser.add_argument("--data", default="sample:sp500", help="data spec (default sample:sp500)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per trial (default 2)")
    parser.add_argument("--quick", action="store_true", help="a small run, for the test suite")
    args = parser.parse_args()
    manifest = Path(args.manifest or ROOT / "manifests" / "mlp-experiment.yaml")
    args.trials = args.trials or (2 if args.quick else 4)
    args.epochs = args.epochs or (1 if args.quick else 3)
    args.repeats = args.repeats or (1 if args.quick else 2)
    logging.disable(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")

    times: dict[str, list[float]] = {"engine": [], "engine+mlflow": [], "in-process": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            # the order alternates between repeats, so drift on a shared machine hits every variant
            seconds, study = run_engine(manifest, Path(tmp) / f"plain{repeat}", args, tracking=False)
            times["engine"].append(seconds)
            if repeat % 2:
                seconds, tracked = run_engine(manifest, Path(tmp) / f"tracked{repeat}", args, tracking=True)
                times["engine+mlflow"].append(seconds)
                times["in-process"].append(run_in_process(study, Path(tmp) / f"inproc{repeat}"))
            else:
                times["in-process"].append(run_in_process(study, Path(tmp) / f"inproc{repeat}"))
                seconds, tracked = run_engine(manifest, Path(tmp) / f"tracked{repeat}", args, tracking=True)
                times["engine+mlflow"].append(seconds)
            same = [t.params for t in tracked.trials] == [t.params for t in study.trials]
            if not same:
                print("# note: the tracked run sampled different parameters (sampler seed not fixed?)")

    median = {k: statistics.median(v) for k, v in times.items()}
    base = median["in-process"]
    print(f"# engine overhead | {manifest.name}, {args.trials} trials x {args.epochs} epochs, {args.data}, "
          f"{args.repeats} repeat(s), {platform.machine()}, {args.threads} threads per trial")
    print(f"{'variant':<15} {'wall s':>8} {'ratio':>7} {'s/trial over in-process':>24}")
    for name, seconds in median.items():
        print(f"{name:<15} {seconds:>8.2f} {seconds / base:>7.3f} {(seconds - base) / args.trials:>24.2f}")
    print(f"headline: engine/in-process = {median['engine'] / base:.3f}x, with MLflow "
          f"{median['engine+mlflow'] / base:.3f}x; fixed cost {(median['engine'] - base) / args.trials:.2f} s/trial")


if __name__ == "__main__":
    main()
