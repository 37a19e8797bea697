"""Katib through the plain Kubernetes API: create an Experiment, wait for it, list its Trials.

Katib's CRDs are ``experiments.kubeflow.org`` and ``trials.kubeflow.org`` (v1beta1); each Trial carries the label
``katib.kubeflow.org/experiment=<name>``. Every function takes the API object (a ``CustomObjectsApi`` from
:func:`connect`, or a test double with the same four methods), so the launcher logic runs without a cluster.

The service account that runs these calls needs, in the experiment's namespace: ``experiments`` create and get
(launching), get (waiting), and ``trials`` list (reading); ``manifests/cluster/role.yaml`` grants them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from hpo_lib.errors import ConfigError, ExperimentError
from hpo_lib.katib import contract
from hpo_lib.study_record import FAILED, SUCCEEDED

log = logging.getLogger(__name__)

GROUP, VERSION = "kubeflow.org", "v1beta1"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
TRANSIENT_STATUSES = (0, 429, 500, 502, 503, 504)  # 0: no HTTP response at all (connection refused, reset)


def connect():
    """A ``CustomObjectsApi`` from the pod's service account, else from the kubeconfig (``$KUBECONFIG``)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(f"no Kubernetes access: not in a pod and no usable kubeconfig ({exc})") from None
    return client.CustomObjectsApi()


def _status(exc: Exception) -> int | None:
    """The HTTP status of a Kubernetes API error (0 for a connection failure), None for anything else."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    if type(exc).__module__.startswith("urllib3") or isinstance(exc, (ConnectionError, TimeoutError)):
        return 0
    return None


def _explain(exc: Exception, action: str, kind: str, name: str, namespace: str) -> ExperimentError:
    status = _status(exc)
    if status == 404:
        return ExperimentError(
            f"{kind} {name!r} not found in namespace {namespace!r} while trying to {action} "
            f"(is the name right, does the namespace exist, is Katib installed?)"
        )
    if status in (401, 403):
        return ExperimentError(
            f"not allowed to {action} {kind} {name!r} in namespace {namespace!r} "
            f"(HTTP {status}): the pipeline's service account needs the Role in "
            f"manifests/cluster/role.yaml bound in that namespace"
        )
    if status == 422:
        return ExperimentError(f"Katib rejected {kind} {name!r}: {getattr(exc, 'body', exc)}")
    return ExperimentError(
        f"could not {action} {kind} {name!r} in namespace {namespace!r}: {getattr(exc, 'reason', '') or exc}"
    )


# ----------------------------------------------------------------------------------------------- experiments
def experiment_state(experiment: Mapping[str, Any]) -> tuple[str, str]:
    """(state, reason + message) from ``status.conditions``: Failed, Succeeded, Restarting, Running, Created or "".

    The terminal conditions win over Running.
    """
    conditions = (experiment.get("status") or {}).get("conditions") or []
    return contract.condition(conditions, contract.EXPERIMENT_STATES) or ("", "")


def progress(experiment: Mapping[str, Any]) -> str:
    """Katib's trial counters as one phrase, e.g. ``12 trials: 9 succeeded, 1 failed, 2 running``."""
    status = experiment.get("status") or {}
    counts = [
        (status.get(key) or 0, label)
        for key, label in (
            ("trialsSucceeded", "succeeded"),
            ("trialsEarlyStopped", "early stopped"),
            ("trialsFailed", "failed"),
            ("trialMetricsUnavailable", "metrics unavailable"),
            ("trialsKilled", "killed"),
            ("trialsRunning", "running"),
            ("trialsPending", "pending"),
        )
    ]
    shown = ", ".join(f"{n} {label}" for n, label in counts if n)
    return f"{status.get('trials') or 0} trials" + (f": {shown}" if shown else "")


def create_experiment(api, experiment: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the Experiment; if one with its name already exists, use that one. Returns (experiment, created).

    An existing experiment is reused as it is (resubmitting a pipeline run must not start a second search), even
    if its spec differs from ``experiment``: a warning says so.
    """
    meta = experiment.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name or not namespace:
        raise ConfigError("the Experiment needs metadata.name and metadata.namespace")
    try:
        created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", dict(experiment))
        log.info("created experiment %s/%s", namespace, name)
        return created, True
    except Exception as exc:  # noqa: BLE001 - the Kubernetes client raises ApiException; status decides
        if _status(exc) != 409:
            raise _explain(exc, "create", "experiment", name, namespace) from None
    existing = get_experiment(api, name, namespace)
    if (existing.get("spec") or {}).get("parameters") != (experiment.get("spec") or {}).get("parameters"):
        log.warning(
            "experiment %s/%s already exists with a different search space: using the existing one", namespace, name
        )
    else:
        log.warning("experiment %s/%s already exists: using it instead of starting another", namespace, name)
    return existing, False


def get_experiment(api, name: str, namespace: str) -> dict[str, Any]:
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", name)
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, "read", "experiment", name, namespace) from None


def wait_for_experiment(
    api,
    name: str,
    namespace: str,
    *,
    timeout_s: float,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll until the Experiment Succeeded or Failed; returns it either way (the caller judges a failure).

    Polling (not a watch) survives API-server watch timeouts. Connection errors and 5xx/429 answers are retried
    until the deadline; 401/403/404 end the wait at once.

    Raises:
        ExperimentError: not found, not allowed, or not finished after ``timeout_s`` seconds (the experiment keeps
            running; read it later with the pipeline's ``existing`` mode).
    """
    if timeout_s <= 0 or poll_s <= 0:
        raise ConfigError(f"timeout_s and poll_s must be positive, got {timeout_s} and {poll_s}")
    deadline = clock() + timeout_s
    last, last_error = None, ""
    while True:
        try:
            last = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", name)
            last_error = ""
        except Exception as exc:  # noqa: BLE001
            if _status(exc) not in TRANSIENT_STATUSES:
                raise _explain(exc, "read", "experiment", name, namespace) from None
            last_error = f"{getattr(exc, 'reason', '') or exc}"
            log.warning("reading experiment %s/%s failed (%s); retrying", namespace, name, last_error)
        if last is not None:
            state, _ = experiment_state(last)
            if state in (SUCCEEDED, FAILED):
                return last
        remaining = deadline - clock()
        if remaining <= 0:
            state, detail = experiment_state(last) if last is not None else ("unknown", last_error)
            counts = f", {progress(last)}" if last is not None else ""
            raise ExperimentError(
                f"experiment {namespace}/{name} did not finish within {timeout_s:g} s (last state "
                f"{state or 'none'}{': ' + detail if detail else ''}{counts}); it keeps running, "
                f"so run the pipeline again with tune_mode=existing to use it when it is done"
            )
        sleep(min(poll_s, remaining))


def list_trials(api, name: str, namespace: str, *, page_size: int = 500) -> list[dict[str, Any]]:
    """Every Trial CR of the experiment (label ``katib.kubeflow.org/experiment=<name>``), following pagination."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        kwargs = {"label_selector": f"{EXPERIMENT_LABEL}={name}", "limit": page_size}
        if token:
            kwargs["_continue"] = token
        try:
            page = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "trials", **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, "list the trials of", "experiment", name, namespace) from None
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
