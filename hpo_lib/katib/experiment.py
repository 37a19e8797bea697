"""An Experiment read the way Katib reads it: the document, its objectives, and the command of one of its trials.

Everyone who runs or re-runs a trial goes through :func:`trial_command`: the embedded engine (each trial process),
the pipeline (each retrain takes the winner's own flags) and the tests (every shipped manifest's command, run for
real on this machine and inside the image).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpo_lib import fileio
from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract

log = logging.getLogger(__name__)

OBJECTIVES_ANNOTATION = "katib-hpo.io/objectives"  # deprecated: the multi-objective algorithm's setting instead
MULTI_OBJECTIVE_ALGORITHM = contract.MULTI_OBJECTIVE_ALGORITHM  # served on Katib by `hpo katib suggestion-service`
OBJECTIVES_SETTING = "objectives"
DIRECTIONS = ("minimize", "maximize")
STRATEGIES = contract.METRIC_STRATEGIES


# ----------------------------------------------------------------------------------------------- documents
def parse_experiment(text: str, source: str) -> dict[str, Any]:
    """The one Experiment in a YAML text (other kinds are skipped); ``source`` names the text in errors."""
    try:
        docs = [d for d in fileio.load_yaml_all(text, source) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    experiments = [d for d in docs if d.get("kind") == "Experiment"]
    if len(experiments) != 1:
        raise ConfigError(f"{source} must hold exactly one Experiment, found {len(experiments)}")
    return experiments[0]


def load_experiment(path: str | Path) -> dict[str, Any]:
    """Load one Experiment and refuse it, naming every failing rule, if Katib would reject or stall on it."""
    from hpo_lib.katib import lint  # the Kubernetes schemas load in ~1 s: only when a file is really loaded

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"manifest {path} does not exist")
    doc = parse_experiment(fileio.read_manifest(path, f"manifest {path}"), f"manifest {path}")
    spec: dict[str, Any] = doc["spec"] if isinstance(doc.get("spec"), dict) else {}
    if spec.get("nasConfig") is not None:
        algorithm = (spec.get("algorithm") or {}).get("algorithmName")
        raise ConfigError(
            f"manifest {path} is a neural architecture search (spec.nasConfig, algorithm {algorithm!r}); the local "
            "engine runs only hyperparameter experiments (spec.parameters): run it on a Katib cluster, whose "
            "suggestion-enas / suggestion-darts services serve it"
        )
    errors = [f for f in lint.validate_experiment(doc) if f.severity == "error"]
    if errors:
        raise ConfigError(f"manifest {path} is invalid: " + "; ".join(map(str, errors)))
    return doc


def qualified_name(doc: Mapping[str, Any]) -> str:
    """``<namespace>.<name>``: the Experiment's identity off the cluster (the local study's name)."""
    meta = doc.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}.{meta['name']}"


def settings(section: Mapping[str, Any] | None) -> dict[str, str]:
    """``algorithmSettings`` of an ``algorithm`` or ``earlyStopping`` section as ``{name: value}`` (values as text)."""
    return {s["name"]: s["value"] for s in (section or {}).get("algorithmSettings") or []}


# ----------------------------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    """One metric a study optimizes or trades off, and which of a trial's observed values is its value."""

    metric: str
    direction: str = "minimize"  # minimize | maximize
    strategy: str = "min"  # min | max | latest (Katib's metricStrategies)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"direction of {self.metric} must be minimize or maximize, got {self.direction!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy of {self.metric} must be min, max or latest, got {self.strategy!r}")

    def key(self, value: float) -> float:
        """The value turned into one that is better when lower."""
        return value if self.direction == "minimize" else -value


def _objective_spec(doc: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    spec = (doc.get("spec") or {}).get("objective") or {}
    name, kind = spec.get("objectiveMetricName"), spec.get("type")
    if not name or kind not in DIRECTIONS:
        raise ConfigError("the experiment has no spec.objective with objectiveMetricName and type minimize/maximize")
    return name, kind, {m["name"]: m["value"] for m in spec.get("metricStrategies") or []}


def primary_objective(doc: Mapping[str, Any]) -> Objective:
    """Katib's objective, with its strategy (Katib's default: min for minimize, max for maximize)."""
    name, kind, strategies = _objective_spec(doc)
    return Objective(name, kind, strategies.get(name, "min" if kind == "minimize" else "max"))


def metric_strategy(doc: Mapping[str, Any], metric: str, default: str) -> str:
    """The strategy the Experiment declares for ``metric``, else ``default``."""
    return _objective_spec(doc)[2].get(metric, default)


def objectives(doc: Mapping[str, Any]) -> list[Objective]:
    """The study's objectives: Katib's one, plus the others the Experiment declares.

    They are declared once, where both the cluster and the laptop read them: the ``objectives`` setting of the
    ``katib-hpo-multiobjective`` algorithm (:data:`MULTI_OBJECTIVE_ALGORITHM`, served on Katib by
    ``hpo katib suggestion-service``), e.g. ``val_loss:minimize, train_time_s:minimize, model_size_mb:minimize``.
    The older ``katib-hpo.io/objectives`` annotation is still read, for any other algorithm, but it is deprecated:
    Katib ignores it, so the cluster optimizes only the first objective while the laptop optimizes all of them.
    The rules (:func:`parse_objectives`): the Katib objective is always first; every other metric must be one of
    ``additionalMetricNames`` so the cluster records it too; each value is taken with the manifest's
    ``metricStrategies`` (Katib's default: min for minimize, max for maximize).
    """
    primary = primary_objective(doc)
    algorithm = (doc.get("spec") or {}).get("algorithm") or {}
    annotation = ((doc.get("metadata") or {}).get("annotations") or {}).get(OBJECTIVES_ANNOTATION)
    additional = doc["spec"]["objective"].get("additionalMetricNames") or []
    strategies = _objective_spec(doc)[2]
    if algorithm.get("algorithmName") == MULTI_OBJECTIVE_ALGORITHM:
        if annotation is not None:
            raise ConfigError(
                f"annotation {OBJECTIVES_ANNOTATION} and algorithm {MULTI_OBJECTIVE_ALGORITHM}'s setting "
                f"{OBJECTIVES_SETTING} both declare objectives: declare them once, in the setting, and drop the "
                "annotation"
            )
        text = settings(algorithm).get(OBJECTIVES_SETTING, "")
        return parse_objectives(text, primary, additional, strategies, source=f"setting {OBJECTIVES_SETTING}")
    if annotation is not None and OBJECTIVES_ANNOTATION not in _deprecation_logged:
        _deprecation_logged.add(OBJECTIVES_ANNOTATION)
        log.warning(
            "annotation %s is deprecated: Katib ignores it, so a cluster optimizes only %s; use algorithm %s "
            "with the setting %s instead",
            OBJECTIVES_ANNOTATION,
            primary.metric,
            MULTI_OBJECTIVE_ALGORITHM,
            OBJECTIVES_SETTING,
        )
    source = f"annotation {OBJECTIVES_ANNOTATION}"
    return parse_objectives(str(annotation or ""), primary, additional, strategies, source=source)


_deprecation_logged: set[str] = set()


def parse_objectives(
    text: str,
    primary: Objective,
    additional: Sequence[str],
    strategies: Mapping[str, str],
    *,
    source: str,
) -> list[Objective]:
    """``metric:direction`` pairs, comma-separated, as the study's objectives, Katib's objective first.

    Listing Katib's objective is optional (it is first either way), but its direction must be the Experiment's
    ``type``. Every other metric must be in ``additional`` and listed once. ``source`` names the text in errors.
    """
    result = [primary]
    default = "min" if primary.direction == "minimize" else "max"
    for item in filter(None, (part.strip() for part in text.split(","))):
        metric, sep, direction = (x.strip() for x in item.partition(":"))
        if not sep or direction not in DIRECTIONS:
            raise ConfigError(f"{source}: {item!r} is not METRIC:minimize or METRIC:maximize")
        if metric == primary.metric:
            if direction != primary.direction:
                raise ConfigError(
                    f"{source}: {metric} is the Katib objective, which the manifest says to "
                    f"{primary.direction}, not {direction}"
                )
            continue
        if metric not in additional:
            raise ConfigError(
                f"{source}: {metric} is not in additionalMetricNames "
                f"({', '.join(sorted(additional)) or 'none'}), so Katib would not record it"
            )
        if any(o.metric == metric for o in result):
            raise ConfigError(f"{source}: {metric} is listed twice")
        result.append(Objective(metric, direction, strategies.get(metric, default)))
    return result


def collected_metrics(doc: Mapping[str, Any]) -> list[str]:
    """The objective first, then ``additionalMetricNames``: every metric Katib's collector keeps."""
    objective = doc["spec"]["objective"]
    return [objective["objectiveMetricName"], *(objective.get("additionalMetricNames") or [])]


def metrics_filters(doc: Mapping[str, Any]) -> list:
    """The collector's compiled ``metricsFormat`` regexes, or Katib's default filter."""
    source = (doc["spec"].get("metricsCollectorSpec") or {}).get("source") or {}
    return contract.compile_filters((source.get("filter") or {}).get("metricsFormat"))


@dataclass(frozen=True)
class Collection:
    """Where Katib's collector reads a trial's metrics: the primary container's output, or a file it writes."""

    kind: str  # StdOut, File, TensorFlowEvent, PrometheusMetric, Custom or Push
    path: str | None = None  # File: the absolute path the trial writes
    json: bool = False  # File: format JSON (one object a line, string values) instead of TEXT


def metrics_collection(doc: Mapping[str, Any]) -> Collection:
    """The manifest's metrics collector as Katib defaults it (StdOut when absent; File's format TEXT by default)."""
    spec = doc["spec"].get("metricsCollectorSpec") or {}
    kind = (spec.get("collector") or {}).get("kind", "StdOut")
    path = ((spec.get("source") or {}).get("fileSystemPath") or {}).get("path")
    fmt = ((spec.get("source") or {}).get("fileSystemPath") or {}).get("format", "TEXT")
    if kind == "File" and not path:
        path = "/var/log/katib/metrics.log"  # Katib's defaulting webhook
    return Collection(kind=kind, path=path if kind == "File" else None, json=kind == "File" and fmt == "JSON")


# ----------------------------------------------------------------------------------------------- trial command
@dataclass
class TrialCommand:
    """What Katib would run for one trial: the primary container's command line, its env and the Job's deadline."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # the container's literal env values
    deadline_s: float | None = None  # the Job's activeDeadlineSeconds

    @property
    def flags(self) -> list[str]:
        """The ``--name=value`` arguments (what a retrain re-parses as the trial's flags)."""
        return [a for a in self.argv if a.startswith("--")]


def primary_container(job: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The container called ``name`` in a Job's pod template (the dict itself, so a caller may edit it)."""
    kind = job.get("kind", "Job")
    if kind != "Job":  # Katib runs any kind its trialResources list; the engine runs a Job's pod as a process
        raise ConfigError(
            f"trial kind {job.get('apiVersion', '')}/{kind}: the local engine runs batch/v1 Job trial templates only "
            "(their primary container as a process); run this Experiment on Katib, or write its trial as a Job"
        )
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        if container.get("name") == name:
            return container
    raise ConfigError(f"no container named {name!r} in the Experiment's trial template")


def _template(doc: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    template = doc["spec"]["trialTemplate"]
    if "trialSpec" not in template:  # Katib reads spec.trialTemplate.configMap from the cluster
        where = template.get("configMap") or {}
        raise ConfigError(
            f"trialTemplate.configMap ({where.get('configMapNamespace')}/{where.get('configMapName')}, "
            f"{where.get('templatePath')}): the trial template lives in a cluster ConfigMap, which the local engine "
            "cannot read; inline it as trialTemplate.trialSpec to run it here"
        )
    return template, template.get("primaryContainerName", "training")


def trial_command(
    doc: Mapping[str, Any], assignments: Mapping[str, str], overrides: Mapping[str, str] | None = None
) -> TrialCommand:
    """The primary container's command + args with Katib's ``${trialParameters.*}`` substitution.

    ``overrides`` (flag name -> value, e.g. ``{"data": "sample:sp500"}``) replace a ``--name=value`` argument of the
    template, or are appended in order when the template has none.
    """
    template, name = _template(doc)
    job = contract.substitute_trial_parameters(
        template["trialSpec"], template.get("trialParameters") or [], assignments
    )
    container = primary_container(job, name)
    argv = with_flags([*container.get("command", []), *container.get("args", [])], overrides or {})
    if not argv:
        raise ConfigError("the primary container has no command: a trial runs the command it declares")
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env", []) if "value" in e}
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    return TrialCommand(argv=argv, env=env, deadline_s=float(deadline) if deadline else None)


def with_flags(argv: list[str], overrides: Mapping[str, str]) -> list[str]:
    """``argv`` with each ``--name=value`` of ``overrides`` replaced in place, or appended when absent."""
    out, seen = list(argv), set()
    for i, arg in enumerate(out):
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") and "=" in arg else None
        if name is not None and name in overrides:
            out[i] = f"--{name}={overrides[name]}"
            seen.add(name)
    return out + [f"--{k}={v}" for k, v in overrides.items() if k not in seen]


def fixed_flag(doc: Mapping[str, Any], name: str) -> str | None:
    """The value of a ``--name=`` argument the template fixes for every trial (None when it has none)."""
    template, container_name = _template(doc)
    container = primary_container(template["trialSpec"], container_name)
    for arg in [*container.get("command", []), *container.get("args", [])]:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def set_fixed_flag(doc: dict[str, Any], name: str, value: str) -> None:
    """Make every trial of ``doc`` run with ``--name=value`` (edits the template's args in place)."""
    template, container_name = _template(doc)
    container = primary_container(template["trialSpec"], container_name)
    container["args"] = with_flags(container.get("args") or [], {name: value})
