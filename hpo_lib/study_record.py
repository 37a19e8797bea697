"""The engine's record of a study, in one place: what the engine writes to an Optuna study's user attributes, the
Katib condition names, and how the results read both back.

The engine (:mod:`hpo_lib.engine`) writes each trial's record with the attribute names below; the results
(:mod:`hpo_lib.results.render`, :mod:`hpo_lib.results.plots`) and :func:`hpo_lib.api.trials_frame` read it through
:meth:`TrialRecord.from_frozen`, never by string. The Katib condition names are defined here too (Katib's part,
:mod:`hpo_lib.katib.contract`, orders them), with the one Optuna -> Katib table.

Importing this module does not import Optuna: a trial process (which reads the condition names through
:mod:`hpo_lib.katib.contract`) never pays for it. Optuna states are matched by name.

>>> planned_epochs(["hpo", "trial", "--epochs=12"]), planned_epochs(["python", "t.py", "--epochs", "3"])
(12, 3)
>>> katib_value(0.1), katib_value(3), katib_value("lstm")
('0.1', '3', 'lstm')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

# ----------------------------------------------------------------------------------------------- Katib conditions
# A Katib Trial's conditions (trial_types.go); hpo_lib.katib.contract orders them, the results print them
CREATED = "Created"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
KILLED = "Killed"
FAILED = "Failed"
METRICS_UNAVAILABLE = "MetricsUnavailable"
EARLY_STOPPED = "EarlyStopped"

# An Optuna trial state -> the Katib condition a person reads (exports, leaderboards, MLflow). A WAITING trial is a
# queued re-run that no process runs yet: Created, as a Trial CR is before its Job starts. The sampler's view of the
# study (hpo_lib.engine.sampling) differs on purpose: it sends a WAITING trial as Running, as Katib's controller
# sends a trial whose assignment is already taken, so the suggestion service never proposes it twice.
CONDITIONS = {
    "COMPLETE": SUCCEEDED,
    "PRUNED": EARLY_STOPPED,
    "FAIL": FAILED,
    "RUNNING": RUNNING,
    "WAITING": CREATED,
}
SAMPLER_CONDITIONS = {"COMPLETE": SUCCEEDED, "FAIL": FAILED, "RUNNING": RUNNING, "WAITING": RUNNING}

# ----------------------------------------------------------------------------------------------- attribute names
# the study's user attributes
OBJECTIVE_NAMES = "objective_names"  # the objective metrics, in the manifest's order
INTERRUPTED_TRIALS = "interrupted_trials"  # studies of earlier versions: trials a killed engine left RUNNING

# each trial's user attributes, written by the engine (when, in brackets)
ARGV = "argv"  # its command, as run [launch]
WARM_START = "warm_start"  # forked from the warm worker [launch]
OWNER = "engine"  # {"host", "pid", "started"} of the engine process running it [launch]
HEARTBEAT = "heartbeat"  # the UNIX time its engine last said it was alive [launch, then every few seconds]
OBSERVATION = "observation"  # {metric: {"min", "max", "latest"}}, Katib's observation [finish]
EPOCHS_RUN = "epochs_run"  # objective values it printed [finish]
OUTPUT_DIR = "output_dir"  # its folder [finish]
DURATION_S = "duration_s"  # seconds it ran [finish]
OBJECTIVE_CURVE = "objective_curve"  # multi-objective studies: the first objective's values in order [finish]
FAIL_REASON = "fail_reason"  # why it failed [finish, failed or interrupted]
OUTPUT_TAIL = "output_tail"  # the last lines of its merged output [finish, failed]
INTERRUPTED = "interrupted"  # True when cut short from outside (Ctrl-C, SIGTERM, its engine killed) [finish]
RERUN_OF = "rerun_of"  # the number of the interrupted trial it re-runs with the same assignment [enqueue]
KATIB_TOLD = "katib_told"  # early-stopped: the objective value(s) Katib's service would tell its study [finish]
MLFLOW_RUN_ID = "mlflow_run_id"  # its nested MLflow run [finish, when tracking]
TRIAL_ATTRS: tuple[str, ...] = (ARGV, WARM_START, OWNER, HEARTBEAT, OBSERVATION, EPOCHS_RUN, OUTPUT_DIR, DURATION_S)
TRIAL_ATTRS += (OBJECTIVE_CURVE, FAIL_REASON, OUTPUT_TAIL, INTERRUPTED, RERUN_OF, KATIB_TOLD, MLFLOW_RUN_ID)

KILLED_ENGINE = "interrupted: the engine running it was killed"  # the reason of a trial whose engine is gone


def katib_value(value: Any) -> str:
    """Katib passes every assignment as a string; floats keep full precision."""
    return repr(value) if isinstance(value, float) else str(value)


def trial_name(study_name: str, number: int) -> str:
    """The Katib Trial name of a study's trial: the experiment's name (without the namespace) and the number."""
    return f"{study_name.split('.', 1)[-1]}-{number:04d}"


def planned_epochs(argv: Sequence[str]) -> int | None:
    """The epochs a trial's command plans (``--epochs=N`` or ``--epochs N``; the last one wins, as in argparse)."""
    found = None
    for arg, following in zip(argv, [*argv[1:], ""]):
        if arg.startswith("--epochs=") or arg == "--epochs":
            value = arg.split("=", 1)[1] if "=" in arg else following
            found = int(value) if value.isdigit() else None
    return found


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the engine recorded it, typed: what the results read."""

    number: int
    state: str  # Optuna's state name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: Mapping[str, Any]
    values: tuple[float, ...] | None
    observation: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    epochs_run: int | None = None  # None: never finished by the engine
    argv: tuple[str, ...] = ()
    output_dir: str | None = None
    duration_s: float | None = None
    fail_reason: str = ""
    output_tail: str = ""
    interrupted: bool = False  # marked by the engine (a re-run's origin or a legacy study may say so too)
    rerun_of: int | None = None
    objective_curve: tuple[float, ...] = ()
    katib_told: tuple[float, ...] | None = None
    warm_start: bool | None = None
    mlflow_run_id: str | None = None

    @classmethod
    def from_frozen(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        told = attrs.get(KATIB_TOLD)
        rerun = attrs.get(RERUN_OF)
        return cls(
            number=trial.number,
            state=trial.state.name,
            params=trial.params,
            values=tuple(trial.values) if trial.values is not None else None,
            observation=attrs.get(OBSERVATION, {}),
            epochs_run=attrs.get(EPOCHS_RUN),
            argv=tuple(attrs.get(ARGV, ())),
            output_dir=attrs.get(OUTPUT_DIR),
            duration_s=attrs.get(DURATION_S),
            fail_reason=attrs.get(FAIL_REASON, ""),
            output_tail=str(attrs.get(OUTPUT_TAIL, "")),
            interrupted=bool(attrs.get(INTERRUPTED)),
            rerun_of=None if rerun is None else int(rerun),
            objective_curve=tuple(attrs.get(OBJECTIVE_CURVE, ())),
            katib_told=None if told is None else tuple(told),
            warm_start=attrs.get(WARM_START),
            mlflow_run_id=attrs.get(MLFLOW_RUN_ID),
        )

    @property
    def condition(self) -> str:
        """The Katib condition a person reads (:data:`CONDITIONS`)."""
        return CONDITIONS.get(self.state, f"TrialState.{self.state}")

    @property
    def planned_epochs(self) -> int | None:
        return planned_epochs(self.argv)

    def latest(self, metric: str) -> float | None:
        """The metric's last observed value, None when the trial never printed it."""
        return self.observation.get(metric, {}).get("latest")


# ----------------------------------------------------------------------------------------------- counting
def interrupted_numbers(study: optuna.Study) -> set[int]:
    """The failed trials that were cut short from outside (and re-queued) rather than failing on their own."""
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get(RERUN_OF) for t in trials} - {None}
    legacy = set(study.user_attrs.get(INTERRUPTED_TRIALS, []))
    return {
        t.number
        for t in trials
        if t.state.name == "FAIL" and (t.user_attrs.get(INTERRUPTED) or t.number in rerun or t.number in legacy)
    }


@dataclass(frozen=True)
class Tally:
    """A study's trials by state, across every engine sharing it: what the budget and the summaries count."""

    complete: int
    pruned: int
    failed: int  # failed on their own: what maxFailedTrialCount counts
    interrupted: int  # cut short from outside and re-queued: no budget taken
    running: int  # by any engine
    waiting: int  # queued (re-runs), not yet started

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def used(self) -> int:
        """Budget taken: finished trials plus the ones running anywhere."""
        return self.finished + self.running

    def line(self, study_name: str) -> str:
        """The counts as the leaderboard's first line."""
        return f"{study_name}: {self.complete} succeeded, {self.pruned} early-stopped, {self.failed} failed" + (
            f", {self.interrupted} interrupted and re-run" if self.interrupted else ""
        )


def tally(study: optuna.Study) -> Tally:
    interrupted = interrupted_numbers(study)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return Tally(
        complete=states.count("COMPLETE"),
        pruned=states.count("PRUNED"),
        failed=states.count("FAIL") - len(interrupted),
        interrupted=len(interrupted),
        running=states.count("RUNNING"),
        waiting=states.count("WAITING"),
    )
