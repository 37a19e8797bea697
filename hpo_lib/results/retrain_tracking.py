"""The pipeline's retrains in MLflow: a retrain's run opened before it trains (:class:`RetrainRun`), nested under
the pipeline's parent run from its start when the winners step opened one (:func:`open_pipeline_run`), its model
(:func:`log_model`), and :func:`log_retrains`: the parent run with every retrain nested, the champion registered.
The writing helpers, the run states and the redaction rules are :mod:`hpo_lib.results.tracking`'s.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo_lib.errors import TrackingError, redact
from hpo_lib.results.tracking import (
    ALIAS,
    clean_tags,
    client_for,
    ends_failed_on_error,
    experiment_id,
    log_batch,
    log_inputs,
    millis,
    run,
    short_error,
    source_tags,
)


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


def open_pipeline_run(uri: str, *, experiment_name: str, name: str, tags: Mapping[str, str]) -> str:
    """The pipeline's parent run, opened RUNNING before any retrain (by the winners step), so that each retrain's
    run is nested under it from its start; :func:`log_retrains` writes its results and ends it. Returns its id."""
    check_server(uri)
    client = client_for(uri)
    exp = experiment_id(client, uri, experiment_name, _artifact_root(uri))
    return str(client.create_run(exp, run_name=name, tags=clean_tags({**source_tags(), **tags})).info.run_id)


def _artifact_root(uri: str) -> Path | None:
    """Where a local SQLite store keeps its artifacts: beside the database, not in the working directory."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"


@contextlib.contextmanager
def _parent_run(client, experiment: str, parent: Mapping[str, Any]) -> Iterator[str]:
    """The pipeline's parent run: the one :func:`open_pipeline_run` opened (``parent["run_id"]``), its tags added,
    or a new one; FINISHED when the block ends, FAILED when it raises."""
    if not parent.get("run_id"):
        with run(client, experiment, name=parent["name"], tags={**source_tags(), **parent["tags"]}) as run_id:
            yield run_id
        return
    run_id = str(parent["run_id"])
    with ends_failed_on_error(client, run_id):
        for key, value in parent["tags"].items():
            client.set_tag(run_id, key, redact(str(value)))
        yield run_id
    client.set_terminated(run_id, status="FINISHED")


class RetrainRun:
    """One retrain's MLflow run, opened before its training starts (:meth:`open`) so that MLflow shows it RUNNING
    with its per-epoch curves as they happen (:meth:`log_epoch`); :meth:`finish` adds the test metrics, files and
    the model and ends it FINISHED, :meth:`fail` ends it FAILED. The run is nested under the pipeline's parent run
    from its start when ``tags`` name it (``mlflow.parentRunId``), else later, by :func:`log_retrains`.
    """

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def open(
        cls,
        uri: str,
        *,
        experiment_name: str,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        dataset: Any = None,
        artifact_root: Path | None = None,
    ) -> RetrainRun:
        """Create the run (its experiment too when new); ``dataset`` is a :func:`dataset_input`."""
        client = client_for(uri)
        exp = experiment_id(client, uri, experiment_name, artifact_root or _artifact_root(uri))
        run_id = client.create_run(exp, run_name=name, tags=clean_tags({**source_tags(), **tags})).info.run_id
        with ends_failed_on_error(client, run_id):
            log_batch(client, run_id, params=params)
            if dataset is not None:
                log_inputs(client, run_id, [dataset])
        return cls(client, run_id)

    def log_epoch(self, record: Mapping[str, float], step: int) -> None:
        """One epoch's metrics at ``step``, in one call."""
        log_batch(self.client, self.run_id, metrics=[(k, v, step) for k, v in record.items()])

    def finish(
        self,
        *,
        metrics: Mapping[str, float],
        dicts: Mapping[str, Any],
        artifacts: Sequence[Path],
        model: Any,
        input_example: Any,
        code_path: str,
        requirements: Sequence[str],
        forecaster: tuple[Any, Mapping[str, str]] | None = None,
    ) -> str:
        """Metrics (at step 0), JSON files, artifacts and the model (and ``forecaster``, see :func:`log_model`);
        FINISHED (FAILED when a write raises). Returns the model's URI."""
        with ends_failed_on_error(self.client, self.run_id):
            log_batch(self.client, self.run_id, metrics=[(k, v, 0) for k, v in metrics.items()])
            for file, obj in dicts.items():
                self.client.log_dict(self.run_id, obj, file)
            for path in artifacts:
                self.client.log_artifact(self.run_id, str(path))
            model_uri = log_model(
                self.client, self.run_id, model, input_example, code_path, requirements, forecaster=forecaster
            )
        self.client.set_terminated(self.run_id, status="FINISHED")
        return model_uri

    def fail(self) -> None:
        with contextlib.suppress(Exception):  # the error that made the run fail matters more than this write
            self.client.set_terminated(self.run_id, status="FAILED")


def log_model(
    client,
    run_id: str,
    model: Any,
    input_example: Any,
    code_path: str,
    requirements: Sequence[str],
    *,
    forecaster: tuple[Any, Mapping[str, str]] | None = None,
) -> str:
    """``model`` (a torch module) on run ``run_id`` with its signature and an input example; returns its URI.

    ``forecaster`` (a pyfunc ``PythonModel`` and its artifacts) is logged beside it as ``forecaster``: the model
    with its features and scalers, which takes raw prices and serves with ``mlflow models serve``.

    The signature is inferred from the example and the model's output on it (a batch of windows, shape
    (batch, window, features) -> (batch, outputs), the batch size free). The model is pickled (it loads back as its
    own class, whatever the window length); explicit requirements skip MLflow's inference (a subprocess that
    reloads the model: ~5 s each), and the package's code travels with the model, so it loads wherever torch is.
    """
    import mlflow
    import mlflow.pyfunc
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    example = np.asarray(input_example, dtype=np.float32)
    model.eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pickle",
            signature=infer_signature(example, output),
            input_example=example,
            code_paths=[code_path],
            pip_requirements=list(requirements),
        )
        if forecaster is not None:
            python_model, files = forecaster
            mlflow.pyfunc.log_model(
                name="forecaster",
                python_model=python_model,
                artifacts=dict(files),
                code_paths=[code_path],
                pip_requirements=list(requirements),
            )
    return info.model_uri


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

    ``parent``: ``name``, ``tags``, ``metrics`` ({name: value}), ``texts`` ({file: text}), ``dicts`` ({file: obj}),
    and ``run_id`` when :func:`open_pipeline_run` opened it already (in this store and experiment).
    Each of ``runs`` is either a retrain its own step already logged (``run_id`` and ``model_uri`` of its
    :class:`RetrainRun`, and ``tags`` to add: it is nested under the parent) or one to log now: ``id``, ``tags``,
    ``params``, ``dataset`` (a :func:`dataset_input` or None), ``curves`` ([(name, value, step)]), ``metrics``,
    ``dicts``, ``artifacts`` (paths), ``model`` (a torch module), ``input_example`` and ``forecaster`` (see
    :func:`log_model`, or None). Each has ``champion``
    (bool). With ``register_as``, the champion's model becomes a new version of that registered model and
    :data:`ALIAS` moves to it; otherwise the registry is left as it was.

    Raises:
        TrackingError: the tracking server is unreachable or a write fails; every run opened so far ends FAILED.
    """
    check_server(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy deprecation noise from MLflow's SQL store
        import mlflow

    result: dict[str, Any] = {
        "tracking_uri": redact(uri),
        "experiment": experiment_name,
        "model_name": register_as,
        "runs": {},
        "registered_version": None,
    }
    try:
        mlflow.set_tracking_uri(uri)
        client = client_for(uri)
        exp = experiment_id(client, uri, experiment_name, _artifact_root(uri))
        now = millis(None)
        with _parent_run(client, exp, parent) as parent_id:
            result["parent_run_id"] = parent_id
            champion_uri = None
            for retrain in runs:
                if retrain.get("run_id"):  # logged live by its retrain step: nest it under this parent
                    run_id, model_uri = retrain["run_id"], retrain["model_uri"]
                    for key, value in {"mlflow.parentRunId": parent_id, **retrain.get("tags", {})}.items():
                        client.set_tag(run_id, key, redact(str(value)))
                else:
                    tags = {"mlflow.parentRunId": parent_id, **retrain["tags"]}
                    with run(client, exp, name=retrain["id"], tags={**source_tags(), **tags}) as run_id:
                        log_batch(client, run_id, params=retrain["params"], metrics=retrain["curves"], timestamp=now)
                        if retrain.get("dataset") is not None:
                            log_inputs(client, run_id, [retrain["dataset"]])
                        model_uri = RetrainRun(client, run_id).finish(
                            metrics=retrain["metrics"],
                            dicts=retrain["dicts"],
                            artifacts=retrain["artifacts"],
                            model=retrain["model"],
                            input_example=retrain["input_example"],
                            code_path=code_path,
                            requirements=requirements,
                            forecaster=retrain.get("forecaster"),
                        )
                result["runs"][retrain["id"]] = {"run_id": run_id, "model_uri": model_uri}
                if retrain["champion"]:
                    champion_uri = model_uri
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
            f"MLflow at {redact(uri)} failed: {short_error(exc)}"[:500]
            + "; the retrain results are still in the pipeline's artifacts"
        ) from None
    return result
