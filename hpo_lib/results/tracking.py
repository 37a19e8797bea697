"""Every MLflow write of the project: local studies (a parent run per study, a nested run per trial) here, and the
writing helpers :mod:`hpo_lib.results.retrain_tracking` logs the pipeline's retrains with (a parent run, a nested
run per retrain with its model, the champion in the registry).

Every run this module creates ends FINISHED (or its Katib status), or FAILED when one of its writes raises: each
write to a new or reopened run happens inside :func:`ends_failed_on_error`, so no run is left RUNNING by a failed
write. :func:`run` is the context manager for a run whose block the caller writes.

The engine calls a :class:`StudyTracker` on its main thread, once per *finished* trial, so logging never sits in a
trial's path: every trial's per-epoch metrics, parameters, state and output tail go to MLflow in a few batched
calls (``log_batch``) after the trial process has exited.

Every experiment carries MLflow 3's type tag (``mlflow.experimentKind`` = ``custom_model_development``); MLflow
3.17's UI opens an experiment on its runs only with the link of :func:`runs_url`, though (:data:`UI_WORKFLOW`).
Every run carries MLflow's own source tags (``mlflow.source.*``, from MLflow's run context providers; the git ones
from this package's checkout, :func:`git_tags`) beside the redacted command line (``hpo.command``), the trial's
flags under their Katib names as parameters (fixed flags included, in tuning and retrain runs alike) and its data
set as a run input (``log_inputs``, context ``training``).

Tracking is on a local SQLite store by default
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
import functools
import hashlib
import json
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo_lib.errors import ConfigError, first_line, redact, redact_value
from hpo_lib.study_record import EARLY_STOPPED, FAILED, SUCCEEDED

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
ALIAS = "champion"  # the registered model's alias that always points at the current champion
STATUS = {SUCCEEDED: "FINISHED", EARLY_STOPPED: "KILLED", FAILED: "FAILED"}  # Katib condition -> MLflow run status
_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) make one unreachable call last minutes
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
PROBE_TIMEOUT_S = 2.0  # connect and read timeout of one probe of the server
PROBE_ATTEMPTS = 2
# MLflow 3's experiment type: without it the UI opens an experiment on a type picker, not on its runs
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# MLflow 3.17's UI opens an experiment on GenAI's overview unless the browser chose "machine learning" once (it keeps
# the choice in localStorage) or the link says so: the experiment tag above no longer decides (3.17 reads the
# workflow type, URL first, for every experiment); a link from runs_url opens on the runs in any browser
UI_WORKFLOW = ("workflowType", "machine_learning")
RUN_FLAGS_SKIPPED = ("output-dir",)  # a per-run path, not a setting: it is the hpo.output_dir tag instead
DATASET_SOURCE_TYPE = "katib-hpo"  # the data spec (yahoo:..., sample:..., file:...) that hpo_lib.data loads


def tracking_uri(uri: str | None = None, *, state_dir: str | Path = ".hpo") -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite store in ``state_dir`` (created)."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(state_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def client_for(uri: str):
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)  # read by MLflow at each request
        if redact(uri) != uri:  # MLflow prints "View run ... at: <the URI with its password>" on stdout
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy 2.1 deprecation noise from MLflow's store
        from mlflow.tracking import MlflowClient
    # its SQL store logs each failed statement, parameters and traceback before raising: the raise is worded instead
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    return MlflowClient(tracking_uri=uri)


def runs_url(uri: str, experiment: str) -> str | None:
    """The MLflow UI's page of an experiment's runs, for an ``http(s)://`` tracking server (None for a local store,
    or when the server does not know ``experiment``, a name): the link opens on the runs in a fresh browser too."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        found = client_for(uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a link is a convenience: a server gone since the study ended gives none
        return None
    if found is None:
        return None
    key, value = UI_WORKFLOW
    return f"{redact(uri.rstrip('/'))}/#/experiments/{found.experiment_id}/runs?{key}={value}"


def experiment_id(client, uri: str, name: str, artifact_root: Path | None = None) -> str:
    """The id of MLflow experiment ``name``, created (artifacts under ``artifact_root`` for a local store) if new."""
    key, kind = EXPERIMENT_KIND
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if key not in experiment.tags:  # created by an earlier version, or by hand: typed once, never retyped
            client.set_experiment_tag(experiment.experiment_id, key, kind)
        return experiment.experiment_id
    local = not uri.startswith(("http://", "https://", "databricks"))
    location = Path(artifact_root).resolve().as_uri() if artifact_root is not None and local else None
    try:
        return client.create_experiment(name, artifact_location=location, tags={key: kind})
    except Exception as exc:  # a parallel retrain created it between the lookup and here: use that one
        experiment = client.get_experiment_by_name(name) if _duplicate(exc) else None
        if experiment is None:
            raise
        return experiment.experiment_id


#: How a store says a row another writer just inserted is already there (SQLite, PostgreSQL, MySQL, MLflow).
DUPLICATE_MARKS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry", "RESOURCE_ALREADY_EXISTS")


def _duplicate(exc: BaseException) -> bool:
    return any(mark in str(exc) for mark in DUPLICATE_MARKS)


def log_inputs(client, run_id: str, datasets: Sequence[Any], *, attempts: int = 3) -> None:
    """``client.log_inputs`` that survives parallel writers: MLflow inserts a data set once per experiment, so
    two runs logging the same new data set at the same moment make one of them fail on the unique key; the data
    set is then stored, and the next attempt only links it to this run."""
    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=list(datasets))
            return
        except Exception as exc:
            if not _duplicate(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def source_tags(argv: Sequence[str] | None = None) -> dict[str, str]:
    """MLflow's own run context tags (``mlflow.user``, ``mlflow.source.name``/``type``, ``mlflow.source.git.*``
    where the program runs from a git checkout), plus ``hpo.command``: the whole command line, redacted."""
    from mlflow.tracking.context.registry import resolve_tags

    command = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv))
    return clean_tags({**git_tags(), **resolve_tags(), "hpo.command": command})


@functools.cache
def git_tags() -> dict[str, str]:
    """``mlflow.source.git.commit``, ``.branch`` and ``.repoURL`` of the git checkout this package runs from; none
    when it is installed from a wheel. MLflow's own provider asks about the main script, which is
    ``.venv/bin/hpo`` (ignored by git, so MLflow finds no commit): the package's folder is asked instead."""
    from mlflow.utils import git_utils
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL

    folder = str(Path(__file__).resolve().parents[1])  # hpo_lib/
    found = {
        MLFLOW_GIT_COMMIT: git_utils.get_git_commit(folder),
        MLFLOW_GIT_BRANCH: git_utils.get_git_branch(folder),
        MLFLOW_GIT_REPO_URL: git_utils.get_git_repo_url(folder),
    }
    return {k: v for k, v in found.items() if v} if found[MLFLOW_GIT_COMMIT] else {}


def flag_params(flags: Sequence[str]) -> dict[str, str]:
    """A trial's ``--name=value`` flags as MLflow params under their Katib names (``batch-size``); a bare
    ``--name`` is ``true``; the last of a repeated flag wins, as in the trial's parser; the output folder is left
    out (:data:`RUN_FLAGS_SKIPPED`)."""
    params: dict[str, str] = {}
    for flag in flags:
        if not flag.startswith("--"):
            continue
        name, sep, value = flag[2:].partition("=")
        if name and name not in RUN_FLAGS_SKIPPED:
            params[name] = value if sep else "true"
    return params


def dataset_input(spec: str, *, digest: str | None = None, profile: Mapping[str, Any] | None = None):
    """The data set of a run as an MLflow run input (context ``training``): named by its data spec, redacted.

    ``digest`` identifies the rows when the caller has them (a hash of the prepared file); otherwise it is the
    first 8 hex digits of the spec's SHA-256, which names the request, not the rows (a ``yahoo:`` spec without
    an end date fetches more rows each day).
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    name = redact(spec)
    return DatasetInput(
        Dataset(
            name=name[:500],
            digest=digest or hashlib.sha256(name.encode()).hexdigest()[:8],
            source_type=DATASET_SOURCE_TYPE,
            source=json.dumps({"spec": name}),
            profile=json.dumps(dict(profile)) if profile else None,
        ),
        tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")],
    )


@contextlib.contextmanager
def run(client, experiment: str, *, name: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A new run, yielded as its id: FINISHED when the block ends, FAILED when an exception escapes it."""
    run_id = client.create_run(experiment, run_name=name, tags=clean_tags(tags)).info.run_id
    with ends_failed_on_error(client, run_id):
        yield run_id
    client.set_terminated(run_id, status="FINISHED")


@contextlib.contextmanager
def ends_failed_on_error(client, run_id: str) -> Iterator[None]:
    """Writes to a RUNNING run: when one raises, the run is ended FAILED and the error goes on."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than a failed status write
            client.set_terminated(run_id, status="FAILED")
        raise


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

    timestamp = timestamp or millis(None)
    param_list = [Param(k, redact_value(k, str(v))[:6000]) for k, v in (params or {}).items()]
    metric_list = [Metric(k, float(v), timestamp, int(step)) for k, v, step in metrics]
    for start in range(0, len(param_list), 100):  # MLflow: at most 100 params per batch
        client.log_batch(run_id, params=param_list[start : start + 100])
    for start in range(0, len(metric_list), _BATCH):
        client.log_batch(run_id, metrics=metric_list[start : start + _BATCH])


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow takes them (strings), with every credential redacted."""
    return {k: redact_value(k, str(v)) for k, v in tags.items()}


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
        try:
            self.client = client_for(uri)  # a SQLite store is created (migrated) here: a full disk fails here
            self.experiment_id = experiment_id(self.client, uri, experiment_name, artifact_root)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the user needs one line
            raise ConfigError(
                f"MLflow tracking at {redact(uri)} is not usable: {short_error(exc)} (point the tracking URI "
                "elsewhere, or turn tracking off)",
                settings=("tracking_uri", "no_tracking"),
            ) from None
        self.parent_run_id: str | None = None
        self._source: dict[str, str] = {}

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
        self._source = source_tags(argv)
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={"hpo.study": study_name, "hpo.kind": "study", **self._source},
        )
        self.parent_run_id = run.info.run_id
        with ends_failed_on_error(self.client, self.parent_run_id):
            self._batch(self.parent_run_id, params=params)
        return self.parent_run_id

    def close_study(self, summary: dict[str, float], leaderboard: str, failed: bool = False) -> None:
        """Summary metrics and the leaderboard on the parent run; FINISHED, or FAILED when the run was cut short."""
        if not self.parent_run_id:
            return
        with ends_failed_on_error(self.client, self.parent_run_id):
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
        flags: Sequence[str] = (),
    ) -> str:
        """One nested run for a finished trial, written in a handful of batched calls. Returns the run id.

        ``flags`` are the trial's command-line flags: logged as params under their Katib names (the assigned
        ``params`` win over them), and their ``--data`` as the run's data set.
        """
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            start_time=millis(started),
            tags=clean_tags(
                {
                    "mlflow.parentRunId": self.parent_run_id or "",
                    "hpo.kind": "trial",
                    "hpo.trial_number": str(number),
                    "hpo.condition": condition,
                    **(self._source or source_tags()),
                    **tags,
                }
            ),
        )
        run_id = run.info.run_id
        now = millis(None)
        metrics = [(metric, value, step) for metric, values in curves.items() for step, value in enumerate(values)]
        with ends_failed_on_error(self.client, run_id):
            fixed = flag_params(flags)
            self._batch(run_id, params={**fixed, **params}, metrics=metrics, timestamp=now)
            if fixed.get("data"):
                log_inputs(self.client, run_id, [dataset_input(fixed["data"])])
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


def millis(seconds: float | None) -> int:
    return int((time.time() if seconds is None else seconds) * 1000)


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, default='')}"[:300]  # first_line redacts
