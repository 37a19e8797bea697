"""Benchmark: what running trials through `hpo tune` costs over running the same trials in one Optuna process, with
the engine's warm and cold trial starts side by side, and Ray Tune on the same trials as the peer.

The same work in every variant, measured in one run:

* ``in-process``: one Optuna study in this process runs the trials (the configurations the engine's seeded sampler
  chose, enqueued) with ``hpo_lib.trial.run`` as its objective: the trials' compute and nothing else;
* ``hpo tune (warm)``: the engine as it runs by default: each trial the manifest's command, forked from the warm
  worker (torch imported once), stdout parsed with Katib's filter, Optuna storage in SQLite, no MLflow;
* ``hpo tune (cold)``: the same with ``--cold-start``: each trial a fresh interpreter;
* ``hpo tune (warm+MLflow)``: warm, with MLflow tracking (a parent run, a nested run per trial);
* ``Ray Tune`` and ``Ray Tune (reuse_actors)``: ``ray.tune.Tuner`` on the same configurations, one at a time, each
  trial ``hpo_lib.trial.run`` in a Ray worker; Ray runs from its own venv (``make ray-venv``) and is skipped with a
  line when that is absent. Its wall time includes ``ray.init``, as a user's run does.

The ratio to ``in-process`` is the overhead; (variant - in-process) / trials is the fixed cost per trial. Variants
alternate over repeats and medians are reported.

    python bench/engine_overhead.py           # 8 trials x 2 epochs of the MLP manifest, 1 repeat
    python bench/engine_overhead.py --quick   # 2 trials x 1 epoch, no Ray
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from hpo_lib import engine, trial

ROOT = Path(__file__).resolve().parents[1]
RAY_PYTHON = ROOT / ".ray-venv" / "bin" / "python"


def run_engine(manifest: Path, state: Path, args: argparse.Namespace, *, warm: bool,
               tracking: bool) -> tuple[float, optuna.Study]:
    overrides = {"data": args.data, "epochs": str(args.epochs), "threads": str(args.threads), "folds": "1",
                 "seeds": "1"}
    options = engine.TuneOptions(overrides=overrides, state_dir=state, max_trials=args.trials, parallel=1,
                                 pruner="none", tracking=tracking, warm_start="own" if warm else "off")
    start = time.perf_counter()
    study = engine.run(manifest, options)
    return time.perf_counter() - start, study


def trial_argvs(study: optuna.Study) -> list[list[str]]:
    """Each trial's flags exactly as the engine ran it (what follows ``hpo trial`` or ``python -m hpo_lib.trial``)."""
    argvs = []
    for t in study.trials:
        argv = list(t.user_attrs["argv"])
        head = argv.index("hpo_lib.trial") if "hpo_lib.trial" in argv else argv.index("trial")
        argvs.append(argv[head + 1 :])
    return argvs


def run_in_process(argvs: list[list[str]], out_dir: Path) -> float:
    """The engine's trials again, from the exact argv each one ran with, as one Optuna study in this process."""
    study = optuna.create_study()
    for number in range(len(argvs)):
        study.enqueue_trial({"number": number})

    def objective(t: optuna.Trial) -> float:
        number = t.suggest_int("number", 0, len(argvs) - 1)
        args = trial.parse_args([*argvs[number], f"--output-dir={out_dir / str(number)}"])
        final = trial.run(args, out=io.StringIO(), err=io.StringIO())
        return float(final["val"]["loss"])

    start = time.perf_counter()
    study.optimize(objective, n_trials=len(argvs))
    return time.perf_counter() - start


def run_ray(argvs: list[list[str]], out_dir: Path, reuse: bool) -> float | None:
    """Ray Tune on the same trials, in Ray's own venv; None (with a line) when that venv is absent or Ray fails."""
    if not RAY_PYTHON.exists():
        return None
    spec = out_dir / "trials.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(argvs))
    command = [str(RAY_PYTHON), str(ROOT / "bench" / "ray_tune_peer.py"), str(spec), str(out_dir)]
    done = subprocess.run([*command, *(["--reuse-actors"] if reuse else [])], capture_output=True, text=True,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"}, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"# Ray Tune failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1][:200]}")
        return None
    return float(json.loads(lines[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="Experiment YAML (default: the MLP manifest)")
    parser.add_argument("--trials", type=int, default=None, help="trials per variant (default 8, quick 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 2, quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each variant (default 1, quick 1)")
    parser.add_argument("--data", default="sample:sp500", help="data spec (default sample:sp500)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1)")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray Tune peer")
    parser.add_argument("--quick", action="store_true", help="a small run, for the test suite (no Ray)")
    args = parser.parse_args()
    manifest = Path(args.manifest or ROOT / "manifests" / "mlp-experiment.yaml")
    args.trials = args.trials or (2 if args.quick else 8)
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.repeats = args.repeats or 1
    ray = not (args.quick or args.no_ray)
    logging.disable(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")

    names = ["in-process", "hpo tune (warm)", "hpo tune (cold)", "hpo tune (warm+MLflow)"]
    if ray:
        names += ["Ray Tune", "Ray Tune (reuse_actors)"]
    times: dict[str, list[float]] = {name: [] for name in names}
    skipped: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for repeat in range(args.repeats):
            seconds, study = run_engine(manifest, root / f"warm{repeat}", args, warm=True, tracking=False)
            times["hpo tune (warm)"].append(seconds)
            argvs = trial_argvs(study)
            runs = {
                "in-process": lambda: run_in_process(argvs, root / f"inproc{repeat}"),
                "hpo tune (cold)": lambda: run_engine(manifest, root / f"cold{repeat}", args, warm=False,
                                                      tracking=False),
                "hpo tune (warm+MLflow)": lambda: run_engine(manifest, root / f"tracked{repeat}", args, warm=True,
                                                             tracking=True),
                "Ray Tune": lambda: run_ray(argvs, root / f"ray{repeat}", reuse=False),
                "Ray Tune (reuse_actors)": lambda: run_ray(argvs, root / f"rayreuse{repeat}", reuse=True),
            }
            order = [n for n in names if n != "hpo tune (warm)"]
            for name in order if repeat % 2 == 0 else order[::-1]:  # alternate: drift hits every variant
                result = runs[name]()
                if isinstance(result, tuple):
                    seconds, other = result
                    if [t.params for t in other.trials] != [t.params for t in study.trials]:
                        print(f"# note: {name} sampled other parameters (sampler seed not fixed?)")
                else:
                    seconds = result
                if seconds is None:
                    skipped.add(name)
                else:
                    times[name].append(seconds)
    if ray and not RAY_PYTHON.exists():
        print("# Ray Tune: skipped (no .ray-venv; `make ray-venv` installs it in its own venv)")
    median = {k: statistics.median(v) for k, v in times.items() if v}
    base = median["in-process"]
    print(f"# engine overhead | {manifest.name}, {args.trials} trials x {args.epochs} epochs, {args.data}, one trial "
          f"at a time, {args.repeats} repeat(s), {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch "
          f"thread(s) per trial, Python {platform.python_version()}")
    print(f"{'variant':<24} {'wall s':>8} {'ratio':>7} {'s/trial over in-process':>24}")
    for name, seconds in median.items():
        print(f"{name:<24} {seconds:>8.2f} {seconds / base:>7.3f} {(seconds - base) / args.trials:>24.2f}")
    warm = median["hpo tune (warm)"]
    line = (f"headline: hpo tune (warm)/in-process = {warm / base:.3f}x, fixed cost "
            f"{(warm - base) / args.trials:.2f} s/trial; cold {median['hpo tune (cold)'] / base:.3f}x "
            f"({(median['hpo tune (cold)'] - base) / args.trials:.2f} s/trial)")
    if "Ray Tune (reuse_actors)" in median:
        line += f"; Ray Tune (reuse_actors)/hpo tune (warm) = {median['Ray Tune (reuse_actors)'] / warm:.2f}x"
    print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
