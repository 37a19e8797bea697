"""In-process trials for the benchmarks: a manifest's study run with ask / report / tell inside one Python process.

Each trial is built the way the engine builds it and trained the way ``hpo_lib.trial.run`` trains it:

* the trial's flags are the manifest's trial command with Katib's substitution and the overrides applied
  (:func:`hpo_lib.katib.experiment.trial_command`), parsed by :func:`hpo_lib.trial.flags.parse_args`;
* training is :func:`hpo_lib.trial.assemble.seeded_config` -> :func:`hpo_lib.trial.assemble.build_model` ->
  :func:`hpo_lib.train.fit`,
  the reporter calling ``trial.report(val_loss, step)`` and raising ``optuna.TrialPruned`` on ``should_prune()``;
* samplers and pruners are the engine's (:func:`hpo_lib.engine.sampling.make_sampler`,
  :mod:`hpo_lib.engine.pruners`), and a
  Katib medianstop pruner is frozen right after ``ask()`` as the engine does; the objective value is the trial's
  best ``val_loss`` (the manifests' ``metricStrategies: min``).

What is left out is the engine's process plumbing (a Python start, the data load and file writes per trial),
measured separately by ``bench/engine_overhead.py``. Data are prepared once per distinct data configuration.
"""

from __future__ import annotations

import argparse
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hpo_lib import data, train
from hpo_lib.data import baselines
from hpo_lib.engine import pruners
from hpo_lib.errors import TrainingError
from hpo_lib.katib import experiment, space
from hpo_lib.results.render import katib_value
from hpo_lib.trial import assemble, flags

ROOT = Path(__file__).resolve().parents[1]


def quiet() -> None:
    """Benchmarks print tables, not Optuna's per-trial log lines or library warnings."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def parse_args(description: str, **sizes: tuple[str, int, int]) -> argparse.Namespace:
    """The flags every in-process benchmark takes, plus its own sizes as ``name=(help, default, quick default)``.

    ``--seeds`` is a size of every benchmark; a size left unset takes its default, or its quick default with
    ``--quick``.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run, for the test suite")
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "mlp-experiment.yaml"))
    parser.add_argument("--data", default="sample:sp500,start=2010-01-01", help="data spec")
    parser.add_argument("--target", default="volatility", choices=("return", "direction", "volatility"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    sizes = {"seeds": ("sampler seeds", 3, 2), **sizes}
    for name, (text, full, quick) in sizes.items():
        parser.add_argument(f"--{name}", type=int, default=None, help=f"{text} (default {full}, quick {quick})")
    args = parser.parse_args()
    for name, (_, full, quick) in sizes.items():
        setattr(args, name, getattr(args, name) or (quick if args.quick else full))
    return args


def with_seed(algorithm: dict[str, Any], seed: int, name: str | None = None) -> dict[str, Any]:
    """A copy of ``spec.algorithm`` with ``random_state`` set to ``seed`` (and the algorithm renamed if asked)."""
    settings = [s for s in algorithm.get("algorithmSettings") or [] if s["name"] != "random_state"]
    if name is not None and name != algorithm.get("algorithmName"):
        settings = []  # another algorithm's settings do not carry over
    return {"algorithmName": name or algorithm["algorithmName"],
            "algorithmSettings": [*settings, {"name": "random_state", "value": str(seed)}]}


class Datasets:
    """``data.prepare`` once per distinct data configuration; prices once per data spec."""

    def __init__(self) -> None:
        self._prices: dict[str, data.Prices] = {}
        self._prepared: dict[tuple, data.Dataset] = {}
        self._baseline: dict[tuple, tuple[str, float]] = {}
        self._folds: dict[tuple, list[data.Dataset]] = {}

    @staticmethod
    def key(args: flags.TrialArgs) -> tuple:
        return (args.data, args.target, args.horizon, args.seq_len, args.split_window, args.val_frac, args.test_frac)

    def get(self, args: flags.TrialArgs) -> data.Dataset:
        key = self.key(args)
        if key not in self._prepared:
            if args.data not in self._prices:
                self._prices[args.data] = data.load_prices(args.data, cache_dir=args.cache_dir or None)
            self._prepared[key] = assemble.load_dataset(args, prices=self._prices[args.data])
        return self._prepared[key]

    def folds(self, args: flags.TrialArgs) -> list[data.Dataset]:
        """:func:`hpo_lib.trial.assemble.load_datasets`'s walk-forward folds of ``args``, once per distinct
        configuration."""
        key = (*self.key(args), args.folds, args.embargo, args.fold_train)
        if key not in self._folds:
            if args.folds == 1:
                self._folds[key] = [self.get(args)]
            else:
                if args.data not in self._prices:
                    self._prices[args.data] = data.load_prices(args.data, cache_dir=args.cache_dir or None)
                self._folds[key] = assemble.load_datasets(args, prices=self._prices[args.data])
        return self._folds[key]

    def best_baseline(self, args: flags.TrialArgs) -> tuple[str, float]:
        """The best naive baseline's name and validation ``loss`` (the same days for every ``seq_len``)."""
        key = self.key(args)[:3] + self.key(args)[4:]
        if key not in self._baseline:
            results = baselines.evaluate(self.get(args), ("val",))
            self._baseline[key] = (results.best, results.report[results.best]["val"]["loss"])
        return self._baseline[key]


def fit_trial(args: flags.TrialArgs, datasets: Datasets,
              reporter: Callable[[dict[str, float]], Any] = lambda record: None) -> train.FitResult:
    """``hpo_lib.trial.run``'s training steps for ``args`` (seed, config, data, model, fit), without its outputs."""
    cfg = assemble.seeded_config(args)
    ds = datasets.get(args)
    return train.fit(assemble.build_model(args, ds), ds, cfg, reporter=reporter)


def fit_replicas_trial(args: flags.TrialArgs, datasets: Datasets,
                       reporter: Callable[[dict[str, float]], Any] = lambda record: None) -> train.FitResult:
    """``hpo_lib.trial.run``'s training steps with ``--folds``/``--seeds``: every fold x seed replica, packed where
    ``--pack`` and the family allow (:func:`hpo_lib.train.fit_replicas`); the objective is the mean curve's best."""
    cfg = assemble.configure(args)
    replicas, built = assemble.build_replicas(args, datasets.folds(args))
    return train.fit_replicas(built, replicas, cfg, reporter=reporter, pack=args.pack,
                              primary=(args.folds - 1) * args.seeds)


@dataclass
class Bench:
    """One manifest's study, runnable in-process: its search space, trial flags and objective direction.

    ``fixed`` are trial flags forced for every trial (``--set`` in ``hpo tune``); a searched parameter named there is
    dropped from the search space, so the sampler does not spend a dimension on a knob that has no effect.
    """

    manifest: Path | str
    fixed: dict[str, str] = field(default_factory=dict)
    doc: dict[str, Any] = field(init=False)
    distributions: dict[str, optuna.distributions.BaseDistribution] = field(init=False)
    datasets: Datasets = field(default_factory=Datasets)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Bench:
        """The study of ``parse_args``'s flags: ``--epochs`` per trial with patience = epochs (off), so nothing but a
        pruner stops a trial early."""
        return cls(args.manifest, fixed={"data": args.data, "target": args.target, "epochs": str(args.epochs),
                                         "patience": str(args.epochs), "threads": str(args.threads)})

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.doc = experiment.load_experiment(self.manifest)
        self.distributions = {p["name"]: space.from_katib_parameter(p) for p in self.doc["spec"]["parameters"]
                              if p["name"] not in self.fixed}

    @property
    def algorithm(self) -> dict[str, Any]:
        return self.doc["spec"]["algorithm"]

    @property
    def direction(self) -> str:
        return self.doc["spec"]["objective"]["type"]

    @property
    def early_stopping(self) -> dict[str, Any] | None:
        return self.doc["spec"].get("earlyStopping")

    def args(self, params: dict[str, Any]) -> flags.TrialArgs:
        """The trial's flags, exactly as the engine would build its command line, parsed by the trial's parser."""
        searched = {p["name"] for p in self.doc["spec"]["parameters"]}
        assignments = {**{k: v for k, v in self.fixed.items() if k in searched},
                       **{name: katib_value(value) for name, value in params.items()}}
        command = experiment.trial_command(self.doc, assignments, {**self.fixed, "output-dir": "unused-in-process"})
        return flags.parse_args(command.flags)

    def pruner(self, name: str) -> optuna.pruners.BasePruner:
        """``medianstop`` from the manifest's earlyStopping; the others via ``make_pruner`` on the same settings."""
        if name == "medianstop":
            return pruners.from_katib_settings(self.early_stopping)
        settings = {s["name"]: int(s["value"]) for s in (self.early_stopping or {}).get("algorithmSettings") or []}
        if name == "optuna-median":
            return pruners.make_pruner(name, **settings)
        return pruners.make_pruner(name)

    def run(self, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
            n_trials: int) -> StudyResult:
        """``n_trials`` trials, one after another, with the engine's ask / freeze / report / should_prune / tell."""
        # the engine's study name: Hyperband assigns brackets by a hash of it, so a random name made reruns differ
        study = optuna.create_study(direction=self.direction, sampler=sampler, pruner=pruner,
                                    study_name=experiment.qualified_name(self.doc))
        epochs_run: list[int] = []
        for _ in range(n_trials):
            current = study.ask(self.distributions)
            if isinstance(pruner, pruners.KatibMedianStopPruner):
                pruner.freeze(study, current)  # Katib freezes the rule when it creates the trial
            reports = 0

            def report(record: dict[str, float]) -> None:
                nonlocal reports
                current.report(record["val_loss"], reports)  # 0-based report index, as the engine does
                reports += 1
                if current.should_prune():
                    raise optuna.TrialPruned()

            try:
                result = fit_trial(self.args(current.params), self.datasets, report)
            except optuna.TrialPruned:
                state, value = TrialState.PRUNED, None
            except TrainingError:
                state, value = TrialState.FAIL, None
            else:
                state, value = TrialState.COMPLETE, result.best_val_loss
            current.set_user_attr("epochs_run", reports)
            epochs_run.append(reports)
            study.tell(current, value, state=state)
        return StudyResult(study, epochs_run)


@dataclass
class StudyResult:
    study: optuna.Study
    epochs_run: list[int]  # per trial, in trial order

    @property
    def epochs(self) -> int:
        return sum(self.epochs_run)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.study.trials)

    def best_after(self, n: int) -> float:
        """Best objective among the first ``n`` trials that completed (NaN if none did)."""
        values = [t.value for t in self.study.trials[:n] if t.state == TrialState.COMPLETE]
        return min(values) if values else math.nan

    @property
    def best(self) -> float:
        return self.best_after(len(self.study.trials))


def machine() -> str:
    """The machine in words: what a benchmark's numbers depend on."""
    import os
    import platform

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"torch {torch.__version__}, optuna {optuna.__version__}")
