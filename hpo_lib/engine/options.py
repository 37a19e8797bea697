"""What a caller tells the engine and what the engine tells back: :class:`TuneOptions`, :class:`Progress`, and the
choice lists of its options. Importing this module loads neither Optuna nor torch, so a face can check its flags and
draw its progress bar before the engine loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# the choices of TuneOptions' fields, in the order a face lists them (the first is the default)
PRUNERS = ("manifest", "medianstop", "optuna-median", "hyperband", "none")  # `pruner`: "manifest" = spec.earlyStopping
MO_SAMPLERS = ("manifest", "nsga2")  # `mo_sampler`: "manifest" = spec.algorithm
WARM_STARTS = ("own", "python", "off")  # `warm_start`
WarmStart = Literal["own", "python", "off"]


@dataclass
class TuneOptions:
    """How to run a manifest locally (everything else comes from the manifest)."""

    overrides: dict[str, str] = field(default_factory=dict)  # trial flag -> value, e.g. {"data": "sample:sp500"}
    storage: str | None = None  # any Optuna storage URL; default sqlite:///<state_dir>/studies.db
    state_dir: Path = Path(".hpo")
    max_trials: int | None = None  # overrides maxTrialCount
    parallel: int | None = None  # overrides parallelTrialCount
    pruner: str = "manifest"  # manifest (Katib's rule as configured) | medianstop | optuna-median | hyperband | none
    trial_timeout_s: float | None = None  # default: the Job's activeDeadlineSeconds
    on_progress: Callable[[Progress], None] | None = None  # called when the counts change; the face draws them
    tracking: bool = True  # MLflow: a parent run per study, a nested run per trial
    tracking_uri: str | None = None  # default $MLFLOW_TRACKING_URI, else sqlite:///<state_dir>/mlflow.db
    mo_sampler: str = "manifest"  # multi-objective studies: the manifest's algorithm, or nsga2
    new_study: bool = False  # archive the experiment's stored study as <name>.archived-<UTC time> and start afresh
    # which trials fork from a warm worker: own (the project's trial), python (any command of this interpreter:
    # `python -m MOD`, `python FILE.py`, a script of it), off (every trial a fresh process: `hpo tune --cold-start`)
    warm_start: WarmStart = "own"

    @property
    def study_db(self) -> Path:
        """The default SQLite file of the studies (used when ``storage`` is not set)."""
        return self.state_dir / "studies.db"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.study_db}"


@dataclass(frozen=True)
class RunningTrial:
    """A trial that runs now, as a progress bar shows it."""

    number: int
    reports: int  # objective values it printed so far: its epochs, for the project's trial
    argv: tuple[str, ...]  # its command, from which the face reads what it plans (e.g. the trial's --epochs)
    warm: bool  # forked from the warm worker
    params: tuple[tuple[str, Any], ...] = ()  # its sampled parameters (name, value), in the manifest's order


@dataclass(frozen=True)
class EndedTrial:
    """A trial this engine ended in this run, as a progress line tells it."""

    number: int
    condition: str  # Katib's: Succeeded, EarlyStopped or Failed (hpo_lib.study_record)
    value: float | None  # its first objective's value by the manifest's strategy, None if it never reported one
    reports: int  # objective values it printed: its epochs, for the project's trial
    duration_s: float


@dataclass(frozen=True)
class Progress:
    """Where a running study stands: what a progress bar shows (the counts of the study's
    :class:`~hpo_lib.study_record.Tally` when it was made, except ``running``)."""

    total: int  # the trial budget of this run
    running: int  # this engine's running trials
    complete: int
    pruned: int
    failed: int
    best: tuple[float, ...] | None  # the best objective value (single objective), None before any trial succeeds
    front: int | None  # multi-objective studies: trials on the Pareto front
    trials: tuple[RunningTrial, ...] = ()  # this engine's running trials, in trial order
    ended: tuple[EndedTrial, ...] = ()  # the trials this engine ended in this run (not on resume), in end order

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed
