"""The engine's MLflow calls (:mod:`hpo_lib.results.tracking` does the writing): a parent run per study, a nested
run per finished trial. A tracking failure after the study opened costs the tracking, never a trial.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_lib import study_record
from hpo_lib.engine.options import TuneOptions
from hpo_lib.engine.process import Running
from hpo_lib.errors import TrackingError, cause_line, redact
from hpo_lib.katib.experiment import Objective
from hpo_lib.results import render
from hpo_lib.study_record import tally

log = logging.getLogger(__name__)


def connect(doc: dict[str, Any], options: TuneOptions):
    """The MLflow tracker, or None; an unusable server is one line here, before any study exists."""
    if not options.tracking:
        return None
    from hpo_lib.results import tracking

    uri = tracking.tracking_uri(options.tracking_uri, state_dir=options.state_dir)
    return tracking.StudyTracker(uri, doc["metadata"]["name"], artifact_root=options.state_dir / "mlartifacts")


def open_parent(
    tracker, doc: dict[str, Any], study: optuna.Study, options: TuneOptions, goals: list[Objective], path: str | Path
):
    """The study's parent run, opened (or reopened: its id is a study attribute), with the run's settings."""
    if tracker is None:
        return None
    from hpo_lib.results import tracking

    spec = doc["spec"]
    params = {
        "manifest": str(path),
        "algorithm": spec["algorithm"]["algorithmName"],
        "early_stopping": (spec.get("earlyStopping") or {}).get("algorithmName", "none"),
        "pruner": options.pruner,
        "objectives": ",".join(f"{o.metric}:{o.direction}" for o in goals),
        "max_trials": options.max_trials or spec.get("maxTrialCount"),
        "parallel": options.parallel or spec.get("parallelTrialCount"),
        **{f"set.{k}": v for k, v in options.overrides.items()},
    }
    try:
        run_id = tracker.open_study(study.study_name, study.user_attrs, params=params)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types (its SQL among them); the user reads one line
        raise TrackingError(
            f"MLflow tracking at {redact(tracker.uri)} cannot record the study: {cause_line(exc)}; free space, point "
            "the tracking URI elsewhere, or turn tracking off",
            settings=("tracking_uri", "no_tracking"),
        ) from None
    study.set_user_attr(tracking.PARENT_ATTR, run_id)
    return tracker


def close_parent(tracker, study: optuna.Study, completed: bool) -> None:
    """The parent run closed with the study's counts, compute and leaderboard; FAILED when the loop did not end."""
    if tracker is None:
        return
    counts = tally(study)
    summary = {
        "trials_complete": float(counts.complete),
        "trials_pruned": float(counts.pruned),
        "trials_fail": float(counts.failed),
        "trials_interrupted": float(counts.interrupted),
    }
    summary.update(render.compute_summary(study))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete and len(study.directions) == 1:
        summary["best_value"] = float(study.best_value)
    try:
        tracker.close_study(summary, render.leaderboard(study), failed=not completed)
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the study
        log.warning("MLflow at %s: could not close the study run: %s", redact(tracker.uri), cause_line(exc))


def log_trial(tracker, study: optuna.Study, state: Running, condition: str, tail: str) -> None:
    """One nested MLflow run for the trial; a tracking failure costs the tracking, never the trial."""
    if tracker is None:
        return
    trial = state.trial
    try:
        run_id = tracker.log_trial(
            number=trial.number,
            name=study_record.trial_name(study.study_name, trial.number),
            condition=condition,
            params={k: study_record.katib_value(v) for k, v in trial.params.items()},
            curves=state.observations,
            tags={"hpo.output_dir": str(state.output_dir)},
            output_tail=tail,
            started=state.started_wall,
            flags=state.argv,  # the fixed flags (model, epochs, data, folds...) beside the searched ones
        )
        trial.set_user_attr(study_record.MLFLOW_RUN_ID, run_id)
    except Exception as exc:  # noqa: BLE001
        log.warning(
            "MLflow at %s: could not log trial %d (%s); the study goes on",
            redact(tracker.uri),
            trial.number,
            cause_line(exc),
        )
