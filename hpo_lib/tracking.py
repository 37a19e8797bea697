"""MLflow tracking for local studies: one parent run per study, one nested run per trial.

The engine calls a :class:`StudyTracker` on its main thread, once per *finished* trial, so logging never sits in a
trial's path: every trial's per-epoch metrics, parameters, state and output tail go to MLflow in a few batched
calls (``log_batch``) after the trial process has exited. Tracking is on a local SQLite store by default
(``sqlite:///<state_dir>/mlflow.db``, artifacts beside it); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` points it
anywhere else (an ``http://`` MLflow server, for example).

A resumed study reuses its parent run (its id is a study user attribute), so one study is one parent run however
many times it was started. A tracking server that fails mid-study costs the tracking, never a trial: the engine
logs one warning and goes on.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from hpo_lib.errors import ConfigError

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
STATUS = {"Succeeded": "FINISHED", "EarlyStopped": "KILLED", "Failed": "FAILED"}
_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call


def default_uri(state_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store in the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(state_dir).resolve() / 'mlflow.db'}"


def _code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class StudyTracker:
    """Opens (or reopens) the study's parent run; :meth:`log_trial` adds a nested run per finished trial."""

    def __init__(self, uri: str, experiment_name: str, artifact_root: Path | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy 2.1 deprecation noise from MLflow's store
            from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            experiment = self.client.get_experiment_by_name(experiment_name)
            if experiment is None:
                location = None
                if artifact_root is not None and not uri.startswith(("http://", "https://", "databricks")):
                    location = (Path(artifact_root).resolve()).as_uri()
                self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=location)
            else:
                self.experiment_id = experiment.experiment_id
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the user needs one line
            raise ConfigError(f"MLflow tracking at {uri} is not usable: {_short(exc)} "
                              "(use --tracking-uri, or --no-tracking to run without MLflow)") from None
        self.parent_run_id: str | None = None

    # ------------------------------------------------------------------------------------------- study
    def open_study(self, study_name: str, study_attrs: dict[str, Any], params: dict[str, Any],
                   argv: Sequence[str] | None = None) -> str:
        """Resume the study's parent run if it has one in this experiment, else start it. Returns its id."""
        from mlflow.exceptions import MlflowException

        run_id = study_attrs.get(PARENT_ATTR)
        if run_id:
            try:
                run = self.client.get_run(run_id)
                if run.info.experiment_id == self.experiment_id:
                    self.client.update_run(run_id, status="RUNNING")
                    self.parent_run_id = run_id
                    return run_id
            except MlflowException:
                pass  # a different tracking store than last time: start a new parent run
        command = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv))
        run = self.client.create_run(self.experiment_id, run_name=study_name, tags={
            "hpo.study": study_name, "hpo.kind": "study", "mlflow.source.name": command,
            "mlflow.source.git.commit": _code_version()})
        self.parent_run_id = run.info.run_id
        self._batch(run.info.run_id, params=params)
        return self.parent_run_id

    def close_study(self, summary: dict[str, float], leaderboard: str, failed: bool = False) -> None:
        """Summary metrics and the leaderboard on the parent run; FINISHED, or FAILED when the run was cut short."""
        if not self.parent_run_id:
            return
        self._batch(self.parent_run_id, metrics=[(k, v, 0) for k, v in summary.items()])
        self.client.log_text(self.parent_run_id, leaderboard, "leaderboard.txt")
        self.client.set_terminated(self.parent_run_id, status="FAILED" if failed else "FINISHED")

    # ------------------------------------------------------------------------------------------- trials
    def log_trial(self, *, number: int, name: str, condition: str, params: dict[str, Any],
                  curves: dict[str, list[float]], tags: dict[str, str], output_tail: str = "",
                  started: float | None = None) -> str:
        """One nested run for a finished trial, written in a handful of batched calls. Returns the run id."""
        run = self.client.create_run(self.experiment_id, run_name=name, start_time=_ms(started), tags={
            "mlflow.parentRunId": self.parent_run_id or "", "hpo.kind": "trial", "hpo.trial_number": str(number),
            "hpo.condition": condition, **tags})
        run_id = run.info.run_id
        now = _ms(None)
        metrics = [(metric, value, step) for metric, values in curves.items() for step, value in enumerate(values)]
        self._batch(run_id, params=params, metrics=metrics, timestamp=now)
        if output_tail:
            self.client.log_text(run_id, output_tail, "output_tail.txt")
        self.client.set_terminated(run_id, status=STATUS.get(condition, "FAILED"))
        return run_id

    def _batch(self, run_id: str, *, params: dict[str, Any] | None = None,
               metrics: list[tuple[str, float, int]] | None = None, timestamp: int | None = None) -> None:
        from mlflow.entities import Metric, Param

        timestamp = timestamp or _ms(None)
        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        metric_list = [Metric(k, float(v), timestamp, int(step)) for k, v, step in metrics or []]
        for start in range(0, len(param_list), 100):  # MLflow: at most 100 params per batch
            self.client.log_batch(run_id, params=param_list[start:start + 100])
        for start in range(0, len(metric_list), _BATCH):
            self.client.log_batch(run_id, metrics=metric_list[start:start + _BATCH])


def _ms(seconds: float | None) -> int:
    return int((time.time() if seconds is None else seconds) * 1000)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
