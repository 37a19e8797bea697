"""Every MLflow write of the project: local studies (a parent run per study, a nested run per trial) and the
pipeline's retrains (a parent run, a nested run per retrain with its model, the champion in the registry).

Runs end in one place each: :func:`run` is a context manager whose run ends FAILED when an exception escapes and
FINISHED otherwise, so no run is left RUNNING by a failed write.

The engine calls a :class:`StudyTracker` on its main thread, once per *finished* trial, so logging never sits in a
trial's path: every trial's per-epoch metrics, parameters, state and output tail go to MLflow in a few batched
calls (``log_batch``) after the trial process has exited. Tracking is on a local SQLite store by default
(``sqlite:///<state_dir>/mlflow.db``, artifacts beside it); a tracking URI or ``MLFLOW_TRACKING_URI`` points it
anywhere else (an ``http://`` MLflow server, for example).

A resumed study reuses its parent run (its id is a study user attribute), so one study is one parent run however
many times it was started. A tracking server that fails mid-study costs the tracking, never a trial: the engine
logs one warning and goes on.

An HTTP tracking server is probed before a study starts (a short connect timeout, two attempts), so an
unreachable one costs seconds, not MLflow's minutes of retries; MLflow's own retries and timeout are bounded too
(:data:`HTTP_LIMITS`, unless the environment sets them). Every tag, parameter and text written passes through
:func:`hpo_lib.errors.redact`, so no password in a tracking URI, storage URL or data spec reaches the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo_lib.errors import ConfigError, TrackingError, first_line, redact

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
ALIAS = "champion"  # the registered model's alias that always points at the current champion
STATUS = {"Succeeded": "FINISHED", "EarlyStopped": "KILLED", "Failed": "FAILED"}
_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) make one unreachable call last minutes
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
PROBE_TIMEOUT_S = 2.0  # connect and read timeout of one probe of the server
PROBE_ATTEMPTS = 2


def tracking_uri(uri: str | None = None, *, state_dir: str | Path = ".hpo") -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite store in ``state_dir`` (created)."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(state_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _client(uri: str):
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)  # read by MLflow at each request
        if redact(uri) != uri:  # MLflow prints "View run ... at: <the URI with its password>" on stdout
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy 2.1 deprecation noise from MLflow's store
        from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, uri: str, name: str, artifact_root: Path | None = None) -> str:
    """The id of MLflow experiment ``name``, created (artifacts under ``artifact_root`` for a local store) if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    local = not uri.startswith(("http://", "https://", "databricks"))
    location = Path(artifact_root).resolve().as_uri() if artifact_root is not None and local else None
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def run(client, experiment: str, *, name: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A new run, yielded as its id: FINISHED when the block ends, FAILED when an exception escapes it."""
    run_id = client.create_run(experiment, run_name=name, tags=_clean(tags)).info.run_id
    try:
        yield run_id
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than a failed status write
            client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")


def log_batch(
    client,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Sequence[tuple[str, float, int]] = (),
    timestamp: int | None = None,
) -> None:
    """Params and (name, value, step) metrics in as few calls as MLflow's batch limits allow."""
    from mlflow.entities import Metric, Param

    timestamp = timestamp or _ms(None)
    param_list = [Param(k, redact(str(v))[:6000]) for k, v in (params or {}).items()]
    metric_list = [Metric(k, float(v), timestamp, int(step)) for k, v, step in metrics]
    for start in range(0, len(param_list), 100):  # MLflow: at most 100 params per batch
        client.log_batch(run_id, params=param_list[start : start + 100])
    for start in range(0, len(metric_list), _BATCH):
        client.log_batch(run_id, metrics=metric_list[start : start + _BATCH])


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _clean(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow takes them (strings), with every credential redacted."""
    return {k: redact(str(v)) for k, v in tags.items()}


def unreachable(uri: str, *, timeout_s: float = PROBE_TIMEOUT_S, attempts: int = PROBE_ATTEMPTS) -> str | None:
    """Why the HTTP tracking server at ``uri`` cannot be used (refused, timed out, no such host, HTTP 5xx), or None.

    ``attempts`` GETs of ``/health``, each with ``timeout_s`` to connect and to answer; any answer below 500 counts
    as reachable (authentication is MLflow's business). Other URIs (SQLite, files) are not probed.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    reason = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5)
        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=(timeout_s, timeout_s))
        except requests.RequestException as exc:
            cause = exc.__context__ or exc
            reason = f"{type(exc).__name__}" + (f" ({type(cause).__name__})" if cause is not exc else "")
            continue
        if response.status_code < 500:
            return None
        reason = f"HTTP {response.status_code}"
    return f"{reason} after {attempts} attempts of {timeout_s:g} s"


class StudyTracker:
    """Opens (or reopens) the study's parent run; :meth:`log_trial` adds a nested run per finished trial."""

    def __init__(self, uri: str, experiment_name: str, artifact_root: Path | None = None) -> None:
        self.uri = uri
        why = unreachable(uri)
        if why:
            raise ConfigError(
                f"MLflow tracking at {redact(uri)} is not usable: the server does not answer ({why}); start the "
                "server, point the tracking URI at one that runs, or turn tracking off",
                settings=("tracking_uri", "no_tracking"),
            )
        self.client = _client(uri)
        try:
            self.experiment_id = experiment_id(self.client, uri, experiment_name, artifact_root)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the user needs one line
            raise ConfigError(
                f"MLflow tracking at {redact(uri)} is not usable: {_short(exc)} (point the tracking URI "
                "elsewhere, or turn tracking off)",
                settings=("tracking_uri", "no_tracking"),
            ) from None
        self.parent_run_id: str | None = None

    # ------------------------------------------------------------------------------------------- study
    def open_study(
        self, study_name: str, study_attrs: dict[str, Any], params: dict[str, Any], argv: Sequence[str] | None = None
    ) -> str:
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
        # MLflow's own source tag is the whole command line: recorded with its credentials redacted
        command = redact(" ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv)))
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={
                "hpo.study": study_name,
                "hpo.kind": "study",
                "mlflow.source.name": command,
                "mlflow.source.git.commit": _code_version(),
            },
        )
        self.parent_run_id = run.info.run_id
        self._batch(run.info.run_id, params=params)
        return self.parent_run_id

    def close_study(self, summary: dict[str, float], leaderboard: str, failed: bool = False) -> None:
        """Summary metrics and the leaderboard on the parent run; FINISHED, or FAILED when the run was cut short."""
        if not self.parent_run_id:
            return
        self._batch(self.parent_run_id, metrics=[(k, v, 0) for k, v in summary.items()])
        self.client.log_text(self.parent_run_id, redact(leaderboard), "leaderboard.txt")
        self.client.set_terminated(self.parent_run_id, status="FAILED" if failed else "FINISHED")

    # ------------------------------------------------------------------------------------------- trials
    def log_trial(
        self,
        *,
        number: int,
        name: str,
        condition: str,
        params: dict[str, Any],
        curves: dict[str, list[float]],
        tags: dict[str, str],
        output_tail: str = "",
        started: float | None = None,
    ) -> str:
        """One nested run for a finished trial, written in a handful of batched calls. Returns the run id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            start_time=_ms(started),
            tags=_clean(
                {
                    "mlflow.parentRunId": self.parent_run_id or "",
                    "hpo.kind": "trial",
                    "hpo.trial_number": str(number),
                    "hpo.condition": condition,
                    **tags,
                }
            ),
        )
        run_id = run.info.run_id
        now = _ms(None)
        metrics = [(metric, value, step) for metric, values in curves.items() for step, value in enumerate(values)]
        self._batch(run_id, params=params, metrics=metrics, timestamp=now)
        if output_tail:
            self.client.log_text(run_id, redact(output_tail), "output_tail.txt")
        self.client.set_terminated(run_id, status=STATUS.get(condition, "FAILED"))
        return run_id

    def _batch(
        self,
        run_id: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: list[tuple[str, float, int]] | None = None,
        timestamp: int | None = None,
    ) -> None:
        log_batch(self.client, run_id, params=params, metrics=metrics or [], timestamp=timestamp)


def _ms(seconds: float | None) -> int:
    return int((time.time() if seconds is None else seconds) * 1000)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, default='')}"[:300]  # first_line redacts


# ----------------------------------------------------------------------------------------------- retrains
def check_server(uri: str, *, timeout_s: float = 10.0) -> None:
    """Fail fast, with the URI in the message, when an HTTP tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow at {redact(uri)} is unreachable ({type(exc).__name__}); nothing was logged or "
            f"registered, and the retrain results are still in the pipeline's artifacts"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"MLflow at {redact(uri)} answered its health check with HTTP {response.status_code}; nothing "
            f"was logged or registered, and the retrain results are still in the pipeline's artifacts"
        )


def log_retrains(
    uri: str,
    *,
    experiment_name: str,
    parent: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    register_as: str | None,
    model_tags: Mapping[str, str],
    code_path: str,
    requirements: Sequence[str],
) -> dict[str, Any]:
    """One parent run with a nested run per retrain (and its model); optionally the champion in the registry.

    ``parent``: ``name``, ``tags``, ``metrics`` ({name: value}), ``texts`` ({file: text}), ``dicts`` ({file: obj}).
    Each of ``runs``: ``id``, ``tags``, ``params``, ``curves`` ([(name, value, step)]), ``metrics``, ``dicts``,
    ``artifacts`` (paths), ``model`` (a torch module, logged with ``serialization_format="pickle"``: it loads back
    as the original class), ``champion`` (bool). With ``register_as``, the champion's model becomes a new version
    of that registered model and :data:`ALIAS` moves to it; otherwise the registry is left as it was.

    Raises:
        TrackingError: the tracking server is unreachable or a write fails; every run opened so far ends FAILED.
    """
    check_server(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy deprecation noise from MLflow's SQL store
        import mlflow
        import mlflow.pytorch

    result: dict[str, Any] = {
        "tracking_uri": redact(uri),
        "experiment": experiment_name,
        "model_name": register_as,
        "runs": {},
        "registered_version": None,
    }
    try:
        mlflow.set_tracking_uri(uri)
        client = _client(uri)
        artifacts = None
        if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the working directory
            artifacts = Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
        exp = experiment_id(client, uri, experiment_name, artifacts)
        now = _ms(None)
        with run(client, exp, name=parent["name"], tags=parent["tags"]) as parent_id:
            result["parent_run_id"] = parent_id
            champion_uri = None
            for retrain in runs:
                tags = {"mlflow.parentRunId": parent_id, **retrain["tags"]}
                with run(client, exp, name=retrain["id"], tags=tags) as run_id:
                    log_batch(
                        client,
                        run_id,
                        params=retrain["params"],
                        metrics=[*retrain["curves"], *((k, v, 0) for k, v in retrain["metrics"].items())],
                        timestamp=now,
                    )
                    for file, obj in retrain["dicts"].items():
                        client.log_dict(run_id, obj, file)
                    for path in retrain["artifacts"]:
                        client.log_artifact(run_id, str(path))
                    with mlflow.start_run(run_id=run_id):
                        # explicit requirements skip MLflow's inference (a subprocess that reloads the model: ~5 s
                        # each); the package's code travels with the model, so it loads wherever torch is installed
                        info = mlflow.pytorch.log_model(
                            retrain["model"],
                            name="model",
                            serialization_format="pickle",
                            code_paths=[code_path],
                            pip_requirements=list(requirements),
                        )
                result["runs"][retrain["id"]] = {"run_id": run_id, "model_uri": info.model_uri}
                if retrain["champion"]:
                    champion_uri = info.model_uri
            log_batch(client, parent_id, metrics=[(k, v, 0) for k, v in parent["metrics"].items()], timestamp=now)
            for file, text in parent["texts"].items():
                client.log_text(parent_id, redact(text), file)
            for file, obj in parent["dicts"].items():
                client.log_dict(parent_id, obj, file)
            if register_as and champion_uri:
                version = mlflow.register_model(champion_uri, register_as, tags=dict(model_tags))
                client.set_registered_model_alias(register_as, ALIAS, version.version)
                result["registered_version"] = str(version.version)
                client.set_tag(parent_id, "hpo.registered", f"{register_as}@{ALIAS} = version {version.version}")
            else:
                client.set_tag(parent_id, "hpo.registered", "nothing: the champion does not beat the best baseline")
    except Exception as exc:  # noqa: BLE001 - MLflow and its HTTP stack raise many types; the user needs one line
        raise TrackingError(
            f"MLflow at {redact(uri)} failed: {_short(exc)}"[:500]
            + "; the retrain results are still in the pipeline's artifacts"
        ) from None
    return result
