"""Offline validation of Katib v1beta1 Experiment manifests: what Katib rejects, and what it accepts but stalls on.

There is no cluster here, so the checks replay Katib v0.19's behaviour from its source: the mutating webhook's
defaulter runs first (parallelTrialCount 3, resumePolicy Never, metric strategies, Job success/failure
conditions, ``distribution: uniform``, collector StdOut), then the checks run on the defaulted object, as the
validating webhook does. Findings are returned, never raised, so one run lists every problem; unlike the
webhook, a failed objective check does not hide the checks after it.

Rules (``Finding.rule``); all are errors except S6-S9 and TRIAL-KIND, which are warnings:

- ``TYPE``: a value of the wrong type for Katib's API (the ``kubeflow_katib_api`` models), or a document that
  is not ``kubeflow.org/v1beta1`` ``Experiment``.
- ``W-NS``, ``W-NAME``, ``W-CNT``, ``W-OBJ``, ``W-ALG``, ``W-ES``, ``W-RP``, ``W-TT``, ``W-PAR``, ``W-MC``: the
  validating webhook, against the default ``katib-config``. W-NS runs only when the namespace's labels are given.
  W-UPD (update rules) is skipped: it compares with the stored object, and there is none offline. W-RP cannot
  see leftover FromVolume PVs, and W-TT cannot fetch a ``configMap`` template, so those parts are skipped.
  W-NAME also holds the apiserver's rule: ``metadata.name`` a DNS-1123 subdomain, ``metadata.namespace`` a
  DNS-1123 label (so no name can lead a local path outside its folder).
- ``K8S-SCHEMA``: a ``batch/v1`` Job template, with every ``${trialParameters.*}`` replaced by ``"1"``, checked
  against Kubernetes' strict JSON schema (``K8S_SCHEMA_VERSION``), as Katib's Job round-trip rejects unknown
  fields; also Kubernetes' Job rule that the pod's restartPolicy is OnFailure or Never. The schema package
  reports the first violation only.
- ``R1``-``R6``: runtime failures the webhook misses (a parameter no trialParameter references, algorithm and
  early-stopping settings, bounds, Optuna's distributions, metric strategies, early stopping's collector).
  Settings are checked for the services whose rules are known: Hyperopt ``tpe``/``random``, Optuna
  ``multivariate-tpe``/``grid`` and ``cmaes`` (checked with Optuna's rules, although the default katib-config
  serves it by Goptuna), and ``medianstop``; other algorithms' settings are not checked (this project's
  ``katib-hpo-multiobjective`` is known to W-ALG; its settings are checked when the engine or its service loads it).
- ``S1``-``S9``: extra checks (duplicate parameters, unknown keys, categorical lists, metric names (only under
  Katib's default filter; a custom ``metricsFormat`` decides its own names), a trial
  budget; and as warnings, placeholders in non-string fields, Job retry settings, an explicit command, Istio).
- ``S-SHELL``: Katib runs the primary container as ``sh -c "<command and args joined by spaces>"`` without
  re-quoting, so shell metacharacters or whitespace in an argument (outside ``${trialParameters.*}`` and
  ``"${trialParameters.*}"``, the quoted form Katib's NAS examples use) or in a categorical value substituted
  into one break the trial, and a ``/bin/sh -c`` prefix is wrapped a second time.
- ``PRIMARY``: ``primaryContainerName`` names no container of the trial's pod templates.
- ``TRIAL-KIND`` (warning): the trial kind is not in the default katib-config's ``trialResources``.
- ``METRICS``: with ``printed_metrics``, the objective and each additional metric must be among them.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import yaml
from kubeflow_katib_api import models as katib_models
from kubeflow_katib_api.models import V1beta1Experiment
from kubernetes_validate.utils import VersionNotSupportedError

from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract

if typing.TYPE_CHECKING:
    from pydantic_core import ErrorDetails

# Every rule id a Finding can carry, in the order of the module docstring's rule index (W-UPD is never emitted).
RULE_IDS = (
    "TYPE",
    "W-NS",
    "W-NAME",
    "W-CNT",
    "W-OBJ",
    "W-ALG",
    "W-ES",
    "W-RP",
    "W-TT",
    "W-PAR",
    "W-MC",
    "K8S-SCHEMA",
    "R1",
    "R2",
    "R3",
    "R4",
    "R5",
    "R6",
    "S1",
    "S2",
    "S3",
    "S4",
    "S5",
    "S6",
    "S7",
    "S8",
    "S9",
    "S-SHELL",
    "PRIMARY",
    "TRIAL-KIND",
    "METRICS",
)

K8S_SCHEMA_VERSION = "1.32"  # Kubernetes schema for Job templates; kubernetes-validate 1.37 ships 1.25-1.37

API_VERSION = "kubeflow.org/v1beta1"
NAMESPACE_LABEL = "katib.kubeflow.org/metrics-collector-injection"
ISTIO_LABEL = "sidecar.istio.io/inject"

# Default katib-config (manifests/v1beta1/installs/katib-standalone/katib-config.yaml): algorithm -> service.
SUGGESTION_SERVICES = contract.SUGGESTION_SERVICES
# this project's algorithm, registered by manifests/overlays/katib-hpo-multiobjective (hpo katib suggestion-service)
MULTI_OBJECTIVE = "katib-hpo-multiobjective"  # = experiment.MULTI_OBJECTIVE_ALGORITHM (a test checks)
EARLY_STOPPINGS = ("medianstop",)
COLLECTORS_WITH_IMAGE = ("StdOut", "File", "TensorFlowEvent")
COLLECTOR_KINDS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "Push")
WRAPPING_COLLECTORS = ("StdOut", "File", "TensorFlowEvent")  # kinds whose sidecar wraps the primary container
TRIAL_RESOURCES = {  # default katib-config init.controller.trialResources, as (kind, apiVersion)
    ("Job", "batch/v1"),
    ("TrainJob", "trainer.kubeflow.org/v1alpha1"),
    ("TFJob", "kubeflow.org/v1"),
    ("PyTorchJob", "kubeflow.org/v1"),
    ("MPIJob", "kubeflow.org/v1"),
    ("XGBoostJob", "kubeflow.org/v1"),
}

PARAMETER_TYPES = ("int", "double", "categorical", "discrete", "unknown")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal", "unknown")
OPTUNA_DISTRIBUTIONS = ("uniform", "logUniform", "unknown")  # unknown reaches the service as unspecified
RESUME_POLICIES = ("Never", "LongRunning", "FromVolume")
METRIC_STRATEGIES = ("min", "max", "latest")

JOB_SUCCESS, JOB_FAILURE = contract.JOB_SUCCESS, contract.JOB_FAILURE
KUBEFLOW_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
KUBEFLOW_JOB_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob")
KUBEFLOW_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
TRAINJOB_POD_LABELS = {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"}

NAME_START = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # Katib's name regex; unanchored at the end, as in Katib
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # Kubernetes: namespaces (at most 63 characters)
DNS1123_SUBDOMAIN = re.compile(rf"{DNS1123_LABEL.pattern}(\.{DNS1123_LABEL.pattern})*")  # object names (<= 253)
METRIC_NAME, PLACEHOLDER = contract.METRIC_NAME, contract.PLACEHOLDER
ANY_PLACEHOLDER = re.compile(r"\$\{trial(?:Parameters|Spec)\.[^}]*\}")  # both are substituted before sh runs
QUOTED_PLACEHOLDER = re.compile(rf'"{ANY_PLACEHOLDER.pattern}"')  # Katib's NAS examples: --flag="${trialParameters.x}"
IN_DOUBLE_QUOTES_META = re.compile(r'[$`"\\]')  # what sh still interprets inside "..."
META_REFERENCE = re.compile(r"\$\{trialSpec\.(.+?)\}")
SHELL_META = re.compile(r"[&;|<>$()`'\"\\\s*?]")
FREE_FORM_MAPS = ("labels", "annotations", "nodeSelector", "limits", "requests", "data", "stringData")
TWO_GROUPS = re.compile(r".*\(.*\).*\(.*\).*", re.DOTALL)


@dataclass(frozen=True)
class Finding:
    """One problem in a manifest: the rule it breaks, how bad it is, and what to change.

    Args:
        rule: The rule id, e.g. ``"W-CNT"``, ``"R1"``, ``"S4"`` (see the module docstring).
        severity: ``"error"`` (Katib rejects the Experiment, or it fails or stalls) or ``"warning"``.
        message: Names the offending field and value, and the rule in words.

    Example:
        >>> str(Finding("W-CNT", "error", "parallelTrialCount 5 exceeds maxTrialCount 3"))
        'error W-CNT: parallelTrialCount 5 exceeds maxTrialCount 3'
    """

    rule: str
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity} {self.rule}: {self.message}"


class _Findings(list):
    def error(self, rule: str, message: str) -> None:
        self.append(Finding(rule, "error", message))

    def warning(self, rule: str, message: str) -> None:
        self.append(Finding(rule, "warning", message))


def validate_experiment(
    doc: dict, *, namespace_labels: dict[str, str] | None = None, printed_metrics: set[str] | None = None
) -> list[Finding]:
    """All findings for one Experiment document (an already YAML-loaded dict).

    The document is type-checked and checked for unknown keys as written, then defaulted as Katib's mutating
    webhook does, and every other rule runs on the defaulted copy; ``doc`` itself is left unchanged. Values of
    the wrong type are reported once (``TYPE``) and then ignored by the other rules.

    Args:
        doc: One ``kubeflow.org/v1beta1`` ``Experiment``.
        namespace_labels: The labels of the namespace the Experiment goes to; enables W-NS. None skips it.
        printed_metrics: The metric names the trial prints; enables METRICS. None skips it.

    Returns:
        The findings, errors and warnings, in rule order; an empty list means Katib would run it as written.

    Raises:
        ConfigError: ``doc`` is not a mapping.
    """
    if not isinstance(doc, dict):
        raise ConfigError(f"an Experiment document must be a mapping, got {type(doc).__name__}")
    out = _Findings()
    exp = _check_types(doc, out)
    _unknown_keys(doc, V1beta1Experiment, (), out)
    if not isinstance(exp.get("spec"), dict):
        exp["spec"] = {}
    spec = exp["spec"]
    parallel_defaulted = _apply_defaults(spec)

    if namespace_labels is not None:
        _check_namespace(exp, namespace_labels, out)
    _check_name(exp.get("metadata") or {}, out)
    _check_counts(spec, parallel_defaulted, out)
    _check_objective(spec, out)
    _check_algorithm(spec, out)
    _check_trial_template(spec, out)
    _check_parameters(spec, out)
    _check_metrics_collector(spec, out)
    _check_runtime(spec, out)
    _check_suggested(spec, out)
    _check_trial_pods(spec, out)
    if printed_metrics is not None:
        _check_printed_metrics(spec, printed_metrics, out)
    return list(out)


def validate_file(path, extra: Callable[[dict], list[Finding]] | None = None) -> list[Finding]:
    """All findings for every ``kind: Experiment`` document of a YAML file; other kinds are skipped.

    When the file holds more than one Experiment, each message starts with that Experiment's name.

    Args:
        path: A YAML file with one or more documents.
        extra: more checks of each Experiment, after these rules: the suggestion service's own refusals
            (:func:`hpo_lib.katib.suggestion.lint_findings`), which sits above this module.

    Raises:
        ConfigError: The file cannot be read or parsed, or a document is not a mapping.
    """
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Experiment manifest {path}: {exc}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ConfigError(f"document {index} of {path} must be a mapping, got {type(doc).__name__}")
    experiments = [d for d in docs if d.get("kind") == "Experiment"]
    findings = []
    for doc in experiments:
        name = _get(doc, "metadata", "name")
        for finding in validate_experiment(doc) + (extra(doc) if extra else []):
            findings.append(replace(finding, message=f"{name}: {finding.message}") if len(experiments) > 1 else finding)
    return findings


# --- types and unknown keys (S2), on the document as written -------------------------------------------------


def _path(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _walk(doc: Any, loc: tuple) -> tuple[tuple, Any]:
    """The longest prefix of a pydantic error location that exists in ``doc`` (union tags are not keys)."""
    found: tuple = ()
    for part in loc:
        if isinstance(doc, dict) and isinstance(part, str) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and isinstance(part, int) and 0 <= part < len(doc):
            doc = doc[part]
        else:
            break
        found += (part,)
    return found, doc


def _is_one_of(error: ErrorDetails, value: Any) -> bool:
    """Whether a "model_type" error is for a oneOf wrapper (IntOrString) that does accept the value."""
    cls = getattr(katib_models, (error.get("ctx") or {}).get("class_name", ""), None)
    if cls is None or not _is_one_of_model(cls):
        return False
    try:
        cls(value)
    except (ValueError, TypeError):
        return False
    return True


def _check_types(doc: dict, out: _Findings) -> dict:
    """TYPE findings; returns a deep copy of ``doc`` without the ill-typed values."""
    clean = copy.deepcopy(doc)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "Experiment":
        out.error(
            "TYPE", f"apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r} must be {API_VERSION} Experiment"
        )
    try:
        V1beta1Experiment.model_validate(doc)
        return clean
    except pydantic.ValidationError as exc:
        errors = exc.errors()
    bad: dict[tuple, None] = {}
    for error in errors:
        loc, value = _walk(doc, error["loc"])
        if not loc or loc in bad or (error["type"] == "model_type" and _is_one_of(error, value)):
            continue
        bad[loc] = None
        cls = getattr(katib_models, (error.get("ctx") or {}).get("class_name", ""), None)
        rule = (
            f"must be one of {', '.join(sorted(cls.model_fields['one_of_schemas'].default))}"
            if cls is not None and _is_one_of_model(cls)
            else error["msg"]
        )
        out.error("TYPE", f"{_path(loc)} = {value!r} has the wrong type for Katib's API: {rule}")
    # deepest and last first, so deleting one value leaves the others' locations valid
    for loc in sorted(bad, key=lambda lo: [(0, p) if isinstance(p, int) else (1, p) for p in lo], reverse=True):
        _, parent = _walk(clean, loc[:-1])
        del parent[loc[-1]]
    return clean


def _is_one_of_model(cls: Any) -> bool:
    """The generated oneOf wrappers (IntOrString) hold a bare int or str, not an object with keys."""
    return isinstance(cls, type) and issubclass(cls, pydantic.BaseModel) and "one_of_schemas" in cls.model_fields


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The model inside Optional[...]/List[...]; None for dicts, scalars and oneOf wrappers."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return None if _is_one_of_model(annotation) else annotation
    if typing.get_origin(annotation) in (dict, dict):
        return None
    for arg in typing.get_args(annotation):
        model = _model_in(arg)
        if model is not None:
            return model
    return None


def _unknown_keys(value: Any, model: type[pydantic.BaseModel], loc: tuple, out: _Findings) -> None:
    """S2: keys the model has no alias for; Katib's Go decoder drops them without a word."""
    if not isinstance(value, dict):
        return
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            out.error(
                "S2",
                f"unknown field {_path(loc + (key,))}: Katib ignores it silently"
                + (f"; did you mean {hint[0]}?" if hint else ""),
            )
            continue
        sub = _model_in(field.annotation)
        if sub is None:
            continue
        if isinstance(item, list):
            for index, element in enumerate(item):
                _unknown_keys(element, sub, loc + (key, index), out)
        else:
            _unknown_keys(item, sub, loc + (key,), out)


# --- Katib's defaulter -----------------------------------------------------------------------------------------


def _apply_defaults(spec: dict) -> bool:
    """Katib's ``SetDefault`` on the spec, in place; returns whether parallelTrialCount was defaulted."""
    parallel_defaulted = spec.get("parallelTrialCount") is None
    if parallel_defaulted:
        spec["parallelTrialCount"] = 3
    if not spec.get("resumePolicy"):
        spec["resumePolicy"] = "Never"

    objective = spec.get("objective")
    if isinstance(objective, dict):
        # additional metrics get the objective's min/max, not latest (Katib's code, despite its comment)
        objective_type: Any = objective.get("type")  # unvalidated JSON: any value, or None when unset
        strategy = {"minimize": "min", "maximize": "max"}.get(objective_type, "latest")
        strategies = objective.get("metricStrategies") or []
        named = {s.get("name") for s in strategies}
        for name in [objective.get("objectiveMetricName") or ""] + list(objective.get("additionalMetricNames") or []):
            if name not in named:
                strategies.append({"name": name, "value": strategy})
                named.add(name)
        objective["metricStrategies"] = strategies

    template = spec.get("trialTemplate")
    trial_spec = template.get("trialSpec") if isinstance(template, dict) else None
    kind = trial_spec.get("kind") if isinstance(trial_spec, dict) else None
    if isinstance(template, dict):  # always so when kind is set
        if kind == "Job" or kind == "TrainJob":
            template["successCondition"] = template.get("successCondition") or JOB_SUCCESS
            template["failureCondition"] = template.get("failureCondition") or JOB_FAILURE
        elif kind in KUBEFLOW_JOB_KINDS:
            template["successCondition"] = template.get("successCondition") or KUBEFLOW_SUCCESS
            template["failureCondition"] = template.get("failureCondition") or JOB_FAILURE
        if kind in KUBEFLOW_JOB_KINDS and template.get("primaryPodLabels") is None:
            template["primaryPodLabels"] = dict(KUBEFLOW_POD_LABELS)
        if kind == "TrainJob" and template.get("primaryPodLabels") is None:
            template["primaryPodLabels"] = dict(TRAINJOB_POD_LABELS)

    for parameter in spec.get("parameters") or []:
        space = parameter.get("feasibleSpace")
        if space is None:
            parameter["feasibleSpace"] = space = {}
        if not space.get("distribution"):
            space["distribution"] = "uniform"

    collector_spec = spec.get("metricsCollectorSpec") or {}
    spec["metricsCollectorSpec"] = collector_spec
    collector = collector_spec.get("collector")
    if collector is None:  # only a missing collector is defaulted; `collector: {}` keeps its empty kind
        collector = {"kind": "StdOut"}
    collector_spec["collector"] = collector
    source = collector_spec.get("source") or {}
    if collector.get("kind") == "File":
        path = source.get("fileSystemPath") or {"path": "/var/log/katib/metrics.log", "kind": "File"}
        path["format"] = path.get("format") or "TEXT"
        source["fileSystemPath"] = path
    elif collector.get("kind") == "TensorFlowEvent" and not source.get("fileSystemPath"):
        source["fileSystemPath"] = {"path": "/var/log/katib/tfevent/", "kind": "Directory"}
    elif collector.get("kind") == "PrometheusMetric" and not source.get("httpGet"):
        source["httpGet"] = {"path": "/metrics", "port": 8080}
    if source:
        collector_spec["source"] = source
    return parallel_defaulted


# --- the validating webhook ------------------------------------------------------------------------------------


def _check_namespace(exp: dict, labels: dict[str, str], out: _Findings) -> None:
    namespace = (exp.get("metadata") or {}).get("namespace") or "default"
    if labels.get(NAMESPACE_LABEL) != "enabled":
        out.error(
            "W-NS",
            f"namespace {namespace!r} lacks label {NAMESPACE_LABEL}=enabled, which Katib's "
            f"webhook requires (got {labels.get(NAMESPACE_LABEL)!r})",
        )


def _check_name(metadata: dict, out: _Findings) -> None:
    name, generate = metadata.get("name") or "", metadata.get("generateName") or ""
    if not name and generate:
        name = generate + "xxxxx"  # the apiserver appends 5 random characters
    if not name:
        out.error("W-NAME", "metadata.name is empty (and no generateName is set)")
        return
    if not NAME_START.match(name):
        out.error("W-NAME", f"metadata.name {name!r} must start with a lowercase letter")
    if len(name) > 40:
        out.error("W-NAME", f"metadata.name {name!r} has {len(name)} characters; Katib allows at most 40")
    if not DNS1123_SUBDOMAIN.fullmatch(name):
        out.error(
            "W-NAME",
            f"metadata.name {name!r} is not a valid Kubernetes name (DNS-1123 subdomain: lowercase letters, "
            "digits, '-' and '.', starting and ending with a letter or digit); rename it, e.g. to my-experiment",
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not DNS1123_LABEL.fullmatch(namespace)
    ):
        out.error(
            "W-NAME",
            f"metadata.namespace {namespace!r} is not a valid Kubernetes namespace (DNS-1123 label: at most 63 "
            "lowercase letters, digits and '-', starting and ending with a letter or digit); use e.g. kubeflow",
        )


def _check_counts(spec: dict, parallel_defaulted: bool, out: _Findings) -> None:
    max_trials, parallel = spec.get("maxTrialCount"), spec.get("parallelTrialCount")
    max_failed = spec.get("maxFailedTrialCount")
    if max_failed is not None and max_failed < 0:
        out.error("W-CNT", f"maxFailedTrialCount {max_failed} must be >= 0")
    if max_trials is not None and max_trials <= 0:
        out.error("W-CNT", f"maxTrialCount {max_trials} must be > 0")
    if parallel is not None and parallel <= 0:
        out.error("W-CNT", f"parallelTrialCount {parallel} must be > 0")
    if max_trials is None:
        return
    if max_failed is not None and max_failed > max_trials:
        out.error("W-CNT", f"maxFailedTrialCount {max_failed} exceeds maxTrialCount {max_trials}")
    if parallel is not None and parallel > max_trials:
        note = " (Katib's default when unset; set parallelTrialCount explicitly)" if parallel_defaulted else ""
        out.error("W-CNT", f"parallelTrialCount {parallel}{note} exceeds maxTrialCount {max_trials}")


def _check_objective(spec: dict, out: _Findings) -> None:
    objective = spec.get("objective")
    if objective is None:
        out.error("W-OBJ", "spec.objective is missing")
        return
    if objective.get("type") not in ("minimize", "maximize"):
        out.error("W-OBJ", f"objective.type {objective.get('type')!r} must be minimize or maximize")
    name = objective.get("objectiveMetricName")
    if not name:
        out.error("W-OBJ", "objective.objectiveMetricName is empty")
    elif name in (objective.get("additionalMetricNames") or []):
        out.error("W-OBJ", f"objectiveMetricName {name!r} must not also be in additionalMetricNames")


def _check_algorithm(spec: dict, out: _Findings) -> None:
    algorithm = spec.get("algorithm")
    if algorithm is None:
        out.error("W-ALG", "spec.algorithm is missing")
    elif not algorithm.get("algorithmName"):
        out.error("W-ALG", "algorithm.algorithmName is empty")
    elif algorithm["algorithmName"] not in SUGGESTION_SERVICES and algorithm["algorithmName"] != MULTI_OBJECTIVE:
        out.error(
            "W-ALG",
            f"algorithmName {algorithm['algorithmName']!r} has no suggestion service in the "
            f"default katib-config (known: {', '.join(SUGGESTION_SERVICES)})",
        )
    early = spec.get("earlyStopping")
    if early is None:
        pass
    elif not early.get("algorithmName"):
        out.error("W-ES", "earlyStopping.algorithmName is empty")
    elif early["algorithmName"] not in EARLY_STOPPINGS:
        out.error(
            "W-ES",
            f"earlyStopping algorithmName {early['algorithmName']!r} has no service in the default "
            f"katib-config (known: {', '.join(EARLY_STOPPINGS)})",
        )
    if spec["resumePolicy"] not in RESUME_POLICIES:
        out.error("W-RP", f"resumePolicy {spec['resumePolicy']!r} must be one of {', '.join(RESUME_POLICIES)}")


def _is_meta_reference(reference: str) -> bool:
    """``${trialSpec.Name}``-style references: Name, Namespace, Kind, APIVersion, Labels[k], Annotations[k]."""
    matches = META_REFERENCE.findall(reference)
    if len(matches) != 1:
        return False
    key = matches[0]
    return key in ("Name", "Namespace", "Kind", "APIVersion") or bool(re.fullmatch(r"(Labels|Annotations)\[.+\]", key))


def _check_trial_template(spec: dict, out: _Findings) -> None:
    template = spec.get("trialTemplate")
    if template is None:
        out.error("W-TT", "spec.trialTemplate is missing")
        return
    if template.get("trialParameters") is None:
        out.error("W-TT", "trialTemplate.trialParameters is missing")
    if not template.get("primaryContainerName"):
        out.error("W-TT", "trialTemplate.primaryContainerName is empty")
    if not template.get("successCondition") or not template.get("failureCondition"):
        kind = _get(template, "trialSpec", "kind")
        out.error(
            "W-TT",
            "trialTemplate.successCondition and failureCondition must both be set for "
            f"{f'trial kind {kind!r}' if kind else 'a configMap template'} (Katib defaults them "
            "only for Job, TrainJob and Kubeflow training jobs)",
        )
    trial_spec, config_map = template.get("trialSpec"), template.get("configMap")
    if (trial_spec is None) == (config_map is None):
        out.error(
            "W-TT",
            "trialTemplate needs exactly one of trialSpec and configMap, "
            f"got {'both' if trial_spec is not None else 'neither'}",
        )
    if config_map is not None and not all(
        config_map.get(k) for k in ("configMapName", "configMapNamespace", "templatePath")
    ):
        out.error("W-TT", "trialTemplate.configMap needs configMapName, configMapNamespace and templatePath")
    if trial_spec is None:
        return  # a ConfigMap template cannot be fetched offline

    text = json.dumps(trial_spec, default=str)  # YAML dates and the like are strings to Katib
    parameter_names = {p.get("name") for p in spec.get("parameters") or []}
    names, references = set(), set()
    for index, trial_parameter in enumerate(template.get("trialParameters") or []):
        name, reference = trial_parameter.get("name") or "", trial_parameter.get("reference") or ""
        where = f"trialParameters[{index}]"
        if not name or not reference:
            out.error("W-TT", f"{where} needs both a name and a reference, got name {name!r} reference {reference!r}")
            continue
        if "{" in name or "}" in name:
            out.error("W-TT", f"{where} name {name!r} must not contain {{ or }}")
        if name in names:
            out.error("W-TT", f"{where} name {name!r} is duplicated")
        if reference in references:
            out.error("W-TT", f"{where} reference {reference!r} is duplicated")
        names.add(name)
        references.add(reference)
        if parameter_names and reference not in parameter_names and not _is_meta_reference(reference):
            out.error(
                "W-TT",
                f"{where} reference {reference!r} is neither a spec.parameters name nor a "
                "${trialSpec.<Name|Namespace|Kind|APIVersion|Labels[k]|Annotations[k]>} key",
            )
        placeholder = "${trialParameters." + name + "}"
        if placeholder not in text:
            out.error("W-TT", f"{where} {name!r}: {placeholder} does not occur in trialSpec")
        text = text.replace(placeholder, "1")
    for leftover in sorted(set(PLACEHOLDER.findall(text))):
        out.error("W-TT", f"trialSpec uses ${{trialParameters.{leftover}}} but no trialParameter is named {leftover!r}")

    metadata = trial_spec.get("metadata") if isinstance(trial_spec.get("metadata"), dict) else {}
    for key in ("name", "namespace"):
        if metadata.get(key):
            out.error("W-TT", f"trialSpec.metadata.{key} {metadata[key]!r} must be omitted; Katib sets it per trial")
    if not trial_spec.get("apiVersion") or not trial_spec.get("kind"):
        out.error("W-TT", "trialSpec needs both apiVersion and kind")
    if trial_spec.get("kind") == "Job" and trial_spec.get("apiVersion") == "batch/v1":
        _check_job_schema(json.loads(PLACEHOLDER.sub("1", json.dumps(trial_spec, default=str))), out)


def _check_job_schema(job: dict, out: _Findings) -> None:
    """K8S-SCHEMA: the substituted Job against Kubernetes' strict schema, and the Job's restartPolicy rule."""
    try:
        kubernetes_validate.validate(job, K8S_SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = _path(("trialSpec",) + tuple(exc.path))
        out.error("K8S-SCHEMA", f"{where}: {exc.message} (Kubernetes {exc.version} schema for batch/v1 Job)")
    except VersionNotSupportedError:
        out.warning(
            "K8S-SCHEMA",
            f"kubernetes-validate {kubernetes_validate.__version__} has no Kubernetes "
            f"{K8S_SCHEMA_VERSION} schema; the Job template was not checked",
        )
    pod_spec = _get(job, "spec", "template", "spec")
    policy = pod_spec.get("restartPolicy") if isinstance(pod_spec, dict) else None
    if policy not in ("Never", "OnFailure"):
        got = "is unset" if policy is None else f"is {policy!r}"
        out.error(
            "K8S-SCHEMA",
            f"trialSpec.spec.template.spec.restartPolicy {got}; a Job needs Never or "
            "OnFailure (Kubernetes rejects the trial's Job)",
        )


def _check_parameters(spec: dict, out: _Findings) -> None:
    parameters, nas = spec.get("parameters") or [], spec.get("nasConfig")
    if bool(parameters) == (nas is not None):
        out.error("W-PAR", f"spec needs exactly one of parameters and nasConfig, got {'both' if nas else 'neither'}")
    for index, parameter in enumerate(parameters):
        where = f"parameters[{index}] ({parameter.get('name')})"
        kind, space = parameter.get("parameterType"), parameter["feasibleSpace"]
        if kind not in PARAMETER_TYPES:
            out.error("W-PAR", f"{where} parameterType {kind!r} must be one of {', '.join(PARAMETER_TYPES)}")
        if space["distribution"] not in DISTRIBUTIONS:
            out.error(
                "W-PAR", f"{where} distribution {space['distribution']!r} must be one of {', '.join(DISTRIBUTIONS)}"
            )
        if kind in ("int", "double"):
            if space.get("list"):
                out.error("W-PAR", f"{where} is {kind} and must not have a list, got {space['list']}")
            if not space.get("min") or not space.get("max"):
                out.error(
                    "W-PAR",
                    f"{where} is {kind} and needs both min and max, got min {space.get('min')!r} "
                    f"max {space.get('max')!r}",
                )
        elif kind in ("categorical", "discrete"):
            extra = [k for k in ("min", "max", "step") if space.get(k)]
            if extra:
                out.error("W-PAR", f"{where} is {kind} and must not set {', '.join(extra)}")


def _check_metrics_collector(spec: dict, out: _Findings) -> None:
    collector_spec = spec["metricsCollectorSpec"]
    kind = collector_spec["collector"].get("kind")
    source = collector_spec.get("source") or {}
    path = source.get("fileSystemPath") or {}
    if kind not in COLLECTOR_KINDS:
        out.error(
            "W-MC",
            f"metrics collector kind {kind!r} must be one of {', '.join(COLLECTOR_KINDS)}"
            + (" (None was renamed Push in Katib v0.18)" if kind == "None" else ""),
        )
    elif kind not in COLLECTORS_WITH_IMAGE and kind not in ("Custom", "Push"):
        out.error("W-MC", f"metrics collector kind {kind!r} has no image in the default katib-config")
    if kind == "File":
        if path.get("kind") != "File":
            out.error("W-MC", f"File collector needs fileSystemPath.kind File, got {path.get('kind')!r}")
        if not str(path.get("path") or "").startswith("/"):
            out.error("W-MC", f"File collector path {path.get('path')!r} must be absolute")
        if path.get("format") not in ("TEXT", "JSON"):
            out.error("W-MC", f"File collector format {path.get('format')!r} must be TEXT or JSON")
        if path.get("format") == "JSON" and source.get("filter") is not None:  # Katib rejects even filter: {}
            out.error("W-MC", "File collector with format JSON must not set a filter")
    elif kind == "TensorFlowEvent":
        if path.get("kind") != "Directory" or not str(path.get("path") or "").startswith("/") or path.get("format"):
            out.error(
                "W-MC",
                "TensorFlowEvent collector needs fileSystemPath.kind Directory, an absolute path and "
                f"no format, got {path}",
            )
    elif kind == "PrometheusMetric":
        http_get = source.get("httpGet") or {}
        port = http_get.get("port")
        if not isinstance(port, int) or port <= 0 or not str(http_get.get("path") or "").startswith("/"):
            out.error(
                "W-MC", f"PrometheusMetric collector needs httpGet.port > 0 and a path starting with /, got {http_get}"
            )
    elif kind == "Custom":
        if not collector_spec["collector"].get("customCollector"):
            out.error("W-MC", "Custom collector needs collector.customCollector")
        if path and (not str(path.get("path") or "").startswith("/") or path.get("kind") not in ("File", "Directory")):
            out.error(
                "W-MC", f"Custom collector fileSystemPath needs an absolute path and kind File or Directory, got {path}"
            )
    for pattern in (source.get("filter") or {}).get("metricsFormat") or []:
        try:
            re.compile(pattern)
        except re.error as exc:
            out.error("W-MC", f"metricsFormat {pattern!r} does not compile: {exc}")
            continue
        if not TWO_GROUPS.fullmatch(pattern):
            out.error("W-MC", f"metricsFormat {pattern!r} needs two top subexpressions (name, value)")
        elif re.search(r"\(\?<?[=!]|\\[1-9]", pattern):
            out.error("W-MC", f"metricsFormat {pattern!r} uses lookaround or a backreference, which Go's RE2 lacks")


# --- runtime failures the webhook misses -------------------------------------------------------------------------

_number = contract.finite_number


def _integer(text: Any) -> int | None:
    """Python's ``int()``, as the Optuna service parses int bounds and algorithm settings."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _setting_rule(name: str, value: str) -> str | None:
    """The rule ``value`` breaks for a known setting name, or None when it holds."""
    checks: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {
        "n_startup_trials": (_integer, lambda v: v >= 0, "an integer >= 0"),
        "n_ei_candidates": (_integer, lambda v: v >= 0, "an integer >= 0"),
        "random_state": (_integer, lambda v: v >= 0, "an integer >= 0"),
        "gamma": (_number, lambda v: 0 < v < 1, "a number in (0, 1)"),
        "prior_weight": (_number, lambda v: v > 0, "a number > 0"),
        "n_EI_candidates": (_integer, lambda v: v > 0, "an integer > 0"),
        "sigma": (_number, lambda v: v >= 0, "a number >= 0"),
        "restart_strategy": (str, lambda v: v in ("ipop", "None", "none"), "ipop, None or none"),
        "min_trials_required": (_integer, lambda v: v > 0, "an integer > 0"),
        "start_step": (_integer, lambda v: v >= 1, "an integer >= 1"),
    }
    parse, holds, rule = checks[name]
    parsed = parse(value)
    return None if parsed is not None and holds(parsed) else f"must be {rule}"


# algorithm -> (service that validates under the default katib-config, accepted setting names)
ALGORITHM_SETTINGS = {
    "tpe": ("Hyperopt", ("gamma", "prior_weight", "n_EI_candidates", "random_state")),
    "random": ("Hyperopt", ("random_state",)),
    "multivariate-tpe": ("Optuna", ("n_startup_trials", "n_ei_candidates", "random_state")),
    "grid": ("Optuna", ("random_state",)),
    "cmaes": ("Optuna rules; Goptuna by default", ("restart_strategy", "sigma", "random_state")),
}
EARLY_STOPPING_SETTINGS = {"medianstop": ("earlystopping-medianstop", ("min_trials_required", "start_step"))}


def _check_settings(section: str, block: dict | None, known: dict, out: _Findings) -> None:
    """R2: settings the algorithm's service rejects, which marks the Experiment Failed."""
    if not block or block.get("algorithmName") not in known:
        return
    algorithm = block["algorithmName"]
    service, accepted = known[algorithm]
    for setting in block.get("algorithmSettings") or []:
        name, value = setting.get("name"), setting.get("value") or ""  # Go sends an unset value as ""
        if name not in accepted:
            hint = " (tpe runs on Hyperopt by default; multivariate-tpe runs on Optuna)" if algorithm == "tpe" else ""
            out.error(
                "R2",
                f"{section} setting {name!r} is unknown to {algorithm} ({service}), which accepts only "
                f"{', '.join(accepted)}{hint}",
            )
            continue
        broken = _setting_rule(name, value)
        if broken:
            out.error("R2", f"{section} setting {name} = {value!r} {broken} for {algorithm} ({service})")


def _grid_size(parameter: dict) -> int | None:
    space = parameter["feasibleSpace"]
    if parameter.get("parameterType") in ("categorical", "discrete"):
        return len(space.get("list") or [])
    low, high = _number(space.get("min")), _number(space.get("max"))
    step = _number(space.get("step") or ("1" if parameter.get("parameterType") == "int" else None))
    if low is None or high is None or not step or step <= 0 or low > high:
        return None
    return int(math.floor((high - low) / step + 1e-9)) + 1


def _check_runtime(spec: dict, out: _Findings) -> None:
    parameters = spec.get("parameters") or []
    template = spec.get("trialTemplate") or {}
    referenced = {tp.get("reference") for tp in template.get("trialParameters") or []}
    for parameter in parameters:
        if parameter.get("name") not in referenced:
            out.error(
                "R1",
                f"parameter {parameter.get('name')!r} is referenced by no trialParameter; Katib "
                "fails to create its trials and the experiment stalls",
            )

    _check_settings("algorithm", spec.get("algorithm"), ALGORITHM_SETTINGS, out)
    _check_settings("earlyStopping", spec.get("earlyStopping"), EARLY_STOPPING_SETTINGS, out)

    for parameter in parameters:
        kind, space = parameter.get("parameterType"), parameter["feasibleSpace"]
        if kind not in ("int", "double"):
            continue
        where = f"parameter {parameter.get('name')!r}"
        parse = _integer if kind == "int" else _number
        bounds = {key: space.get(key) for key in ("min", "max", "step") if space.get(key)}
        values = {key: parse(text) for key, text in bounds.items()}
        expected = "an integer" if kind == "int" else "a finite number"
        for key, value in values.items():
            if value is None:
                out.error(
                    "R3",
                    f"{where} {key} {bounds[key]!r} is not {expected} (the suggestion service fails "
                    "and the experiment stays Running)",
                )
        low, high, step = values.get("min"), values.get("max"), values.get("step")
        if low is not None and high is not None and low > high:
            out.error("R3", f"{where} min {bounds['min']} is greater than max {bounds['max']}")
        if step is not None and step <= 0:
            out.error("R3", f"{where} step {bounds['step']} must be > 0")
        if space["distribution"] in ("logUniform", "logNormal") and low is not None and low <= 0:
            out.error("R3", f"{where} is {space['distribution']} and needs min > 0, got {bounds['min']}")

    algorithm: Any = (spec.get("algorithm") or {}).get("algorithmName")  # unvalidated JSON, None when unset
    if SUGGESTION_SERVICES.get(algorithm) == "optuna":
        for parameter in parameters:
            distribution = parameter["feasibleSpace"]["distribution"]
            if parameter.get("parameterType") in ("int", "double") and distribution not in OPTUNA_DISTRIBUTIONS:
                out.error(
                    "R4",
                    f"parameter {parameter.get('name')!r} distribution {distribution} is not supported by "
                    f"{algorithm} (Optuna supports only uniform and logUniform; Katib v0.19 drops it "
                    "and its trials cannot be created)",
                )
    if algorithm == "cmaes":
        numeric = [p for p in parameters if p.get("parameterType") in ("int", "double")]
        if len(numeric) < 2:
            out.error("R4", f"cmaes needs at least 2 int/double parameters, got {len(numeric)}")
    if algorithm == "grid":
        for parameter in parameters:
            if parameter.get("parameterType") == "double" and not parameter["feasibleSpace"].get("step"):
                out.error("R4", f"grid needs a step on every double parameter; {parameter.get('name')!r} has none")
        sizes = [_grid_size(p) for p in parameters]
        combinations = math.prod(s for s in sizes if s is not None)  # all of sizes where it is used below
        max_trials = spec.get("maxTrialCount")
        if parameters and None not in sizes and max_trials is not None and max_trials > combinations:
            out.error("R4", f"grid has {combinations} combinations, fewer than maxTrialCount {max_trials}")

    for strategy in (spec.get("objective") or {}).get("metricStrategies") or []:
        if strategy.get("value") not in METRIC_STRATEGIES:
            out.error(
                "R5",
                f"metricStrategies {strategy.get('name')!r} value {strategy.get('value')!r} must be min, "
                "max or latest (Katib passes the suggestion an empty value)",
            )

    kind = spec["metricsCollectorSpec"]["collector"].get("kind")
    if spec.get("earlyStopping") and kind not in ("StdOut", "File"):
        out.error("R6", f"early stopping needs the StdOut or File metrics collector, got {kind!r}")


# --- suggested checks ------------------------------------------------------------------------------------------


def _check_suggested(spec: dict, out: _Findings) -> None:
    names = [p.get("name") for p in spec.get("parameters") or []]
    for name in sorted({n for n in names if names.count(n) > 1}, key=str):
        out.error("S1", f"parameter name {name!r} is used {names.count(name)} times")

    for parameter in spec.get("parameters") or []:
        if parameter.get("parameterType") in ("categorical", "discrete"):
            values = parameter["feasibleSpace"].get("list") or []
            if not values:
                out.error("S3", f"{parameter['parameterType']} parameter {parameter.get('name')!r} has an empty list")
            duplicated = sorted({v for v in values if values.count(v) > 1})
            if duplicated:
                out.error("S3", f"parameter {parameter.get('name')!r} lists {', '.join(duplicated)} more than once")

    objective = spec.get("objective") or {}
    metrics = [objective.get("objectiveMetricName")] + list(objective.get("additionalMetricNames") or [])
    custom_format = bool(((spec["metricsCollectorSpec"].get("source") or {}).get("filter") or {}).get("metricsFormat"))
    for name in metrics:
        if name and not custom_format and not METRIC_NAME.fullmatch(name):  # a custom regex may allow any name
            out.error("S4", f"metric name {name!r} must match ^[A-Za-z0-9_-]+$ to survive Katib's StdOut filter")
    source = spec["metricsCollectorSpec"].get("source") or {}
    for pattern in (source.get("filter") or {}).get("metricsFormat") or []:
        if ";" in pattern:
            out.error("S4", f"metricsFormat {pattern!r} contains ';', the separator Katib joins regexes with")

    if spec.get("maxTrialCount") is None:
        out.error("S5", "maxTrialCount is unset: the experiment runs until the goal is met, forever for TPE")

    template = spec.get("trialTemplate") or {}
    trial_spec = template.get("trialSpec")
    if isinstance(trial_spec, dict):
        non_string = _non_string_keys()
        for key, text in _strings_with_keys(trial_spec, None):
            if key in non_string and PLACEHOLDER.search(text):
                out.warning(
                    "S6",
                    f"trialSpec field {key}: {text!r} takes a trialParameter, but Katib substitutes "
                    f"inside JSON strings, so {key} becomes a string, not a number or boolean",
                )


@lru_cache(maxsize=1)
def _non_string_keys() -> frozenset[str]:
    """Field names that are integer, number or boolean wherever they occur in Kubernetes' schema."""
    try:
        folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_SCHEMA_VERSION}.0-local"
        definitions = json.loads((folder / "_definitions.json").read_text())["$defs"]
    except (OSError, KeyError, ValueError):
        return frozenset({"replicas", "backoffLimit", "activeDeadlineSeconds", "parallelism", "completions"})
    types: dict[str, set[str]] = {}
    for definition in definitions.values():
        for key, prop in (definition.get("properties") or {}).items():
            kind = prop.get("type")
            names = set(kind if isinstance(kind, list) else [kind]) - {"null"} if kind else {"other"}
            types.setdefault(key, set()).update(names)
    return frozenset(key for key, names in types.items() if names and names <= {"integer", "number", "boolean"})


def _strings_with_keys(value: Any, key: str | None) -> Iterator[tuple[str | None, str]]:
    """Every string in a JSON-like value with the nearest enclosing field name (None inside free-form maps)."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for sub_key, item in value.items():
            yield from _strings_with_keys(item, None if key in FREE_FORM_MAPS else sub_key)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_with_keys(item, key)


def _dict(value: Any) -> dict:
    """``value`` if it is a mapping, else an empty one: the trial spec is free-form, so nothing is assumed."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _pod_templates(value: Any) -> Iterator[dict]:
    """Every pod template (a mapping whose ``spec.containers`` is a list) inside a trial spec."""
    if isinstance(value, dict):
        if isinstance(_get(value, "spec", "containers"), list):
            yield value
        for item in value.values():
            yield from _pod_templates(item)
    elif isinstance(value, list):
        for item in value:
            yield from _pod_templates(item)


def _check_trial_pods(spec: dict, out: _Findings) -> None:
    """PRIMARY, S-SHELL, S7-S9 and TRIAL-KIND: the trial's Job and its primary container."""
    template = spec.get("trialTemplate") or {}
    trial_spec = template.get("trialSpec")
    if not isinstance(trial_spec, dict):
        return
    kind, api_version = trial_spec.get("kind"), trial_spec.get("apiVersion")
    if kind and api_version and (kind, api_version) not in TRIAL_RESOURCES:
        out.warning(
            "TRIAL-KIND",
            f"trial kind {kind} ({api_version}) is not in the default katib-config "
            "trialResources; the cluster's config must list it",
        )
    if kind == "Job":
        job_spec = _dict(trial_spec.get("spec"))
        pod_spec = _dict(_get(job_spec, "template", "spec"))
        if pod_spec.get("restartPolicy") == "OnFailure":
            out.warning("S7", "Job restartPolicy OnFailure retries a failing trial in place; use Never")
        if job_spec.get("backoffLimit") != 0:
            out.warning(
                "S7",
                f"Job backoffLimit {job_spec.get('backoffLimit', '6 (default)')} retries failing "
                "trials, which stay Running meanwhile; use 0",
            )
        if job_spec.get("activeDeadlineSeconds") is None and pod_spec.get("activeDeadlineSeconds") is None:
            out.warning("S7", "Job sets no activeDeadlineSeconds, so a hung trial runs forever")

    primary = template.get("primaryContainerName")
    pods = list(_pod_templates(trial_spec))
    containers = [(pod, c) for pod in pods for c in pod["spec"]["containers"] if isinstance(c, dict)]
    primaries = [(pod, c) for pod, c in containers if c.get("name") == primary]
    if not primary or not containers:
        return
    if not primaries:
        names = ", ".join(str(c.get("name")) for _, c in containers)
        out.error(
            "PRIMARY",
            f"primaryContainerName {primary!r} names no container of the trial pods ({names}); "
            "Katib cannot inject its metrics collector",
        )
        return

    wraps = spec["metricsCollectorSpec"]["collector"].get("kind") in WRAPPING_COLLECTORS
    parameters = {p.get("name"): p for p in spec.get("parameters") or []}
    references = {tp.get("name"): tp.get("reference") for tp in template.get("trialParameters") or []}
    istio_off = all(
        _dict(_get(pod, "metadata", "labels")).get(ISTIO_LABEL) == "false"
        or _dict(_get(pod, "metadata", "annotations")).get(ISTIO_LABEL) == "false"
        for pod, _ in primaries
    )
    if not istio_off:
        out.warning(
            "S9",
            f'pod template of {primary!r} lacks label {ISTIO_LABEL}: "false"; on Istio clusters '
            "the sidecar keeps trials Running after training ends",
        )
    checked = set()
    for _pod, container in primaries:
        argv = [str(a) for a in _list(container.get("command")) + _list(container.get("args"))]
        if not wraps or tuple(argv) in checked:
            continue
        checked.add(tuple(argv))
        if not container.get("command"):
            out.warning(
                "S8",
                f"primary container {primary!r} has no explicit command; Katib then looks up the "
                "image's entrypoint in its registry",
            )
        _check_shell(argv, parameters, references, out)


def _check_shell(argv: list[str], parameters: dict, references: dict, out: _Findings) -> None:
    """S-SHELL: Katib runs ``sh -c "<argv joined by spaces>"`` without re-quoting."""
    if len(argv) > 2 and argv[1] == "-c" and argv[0] in ("sh", "bash"):
        return  # Katib keeps a literal sh/bash -c prefix; the script is the user's shell code
    if len(argv) > 1 and argv[1] == "-c" and re.fullmatch(r"/\S*/(sh|bash|dash|ash|zsh)", argv[0]):
        out.error(
            "S-SHELL",
            f"command starts with {argv[0]} -c; Katib keeps only a literal 'sh -c' or "
            "'bash -c' prefix, so the script is wrapped again in sh -c and split at spaces",
        )
        return
    for arg in argv:
        bare = ANY_PLACEHOLDER.sub("", QUOTED_PLACEHOLDER.sub("", arg))
        found = SHELL_META.search(bare)
        if found:
            out.error(
                "S-SHELL",
                f"argument {arg!r} contains {found.group(0)!r}; Katib joins the command into "
                "sh -c without quoting, so the shell re-parses it",
            )
        for name in PLACEHOLDER.findall(arg):
            parameter = parameters.get(references.get(name))
            if parameter and parameter.get("parameterType") in ("categorical", "discrete"):
                quoted = f'"${{trialParameters.{name}}}"' in arg
                for value in parameter["feasibleSpace"].get("list") or []:
                    if (IN_DOUBLE_QUOTES_META if quoted else SHELL_META).search(str(value)):
                        out.error(
                            "S-SHELL",
                            f"parameter {parameter.get('name')!r} value {value!r} is substituted "
                            f"into argument {arg!r}; sh -c would re-parse it",
                        )


def _check_printed_metrics(spec: dict, printed: set[str], out: _Findings) -> None:
    objective = spec.get("objective") or {}
    names = [("objective metric", objective.get("objectiveMetricName"))]
    names += [("additional metric", n) for n in objective.get("additionalMetricNames") or []]
    for role, name in names:
        if name and name not in printed:
            out.error(
                "METRICS",
                f"{role} {name!r} is never printed by the trial (it prints "
                f"{', '.join(sorted(printed)) or 'nothing'}); its trials end MetricsUnavailable",
            )
