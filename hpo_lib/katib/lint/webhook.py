"""The validating webhook's checks (``W-*``) and the Job template's schema (``K8S-SCHEMA``), on the defaulted spec."""

from __future__ import annotations

import json
import re

import kubernetes_validate
from kubernetes_validate.utils import VersionNotSupportedError

from hpo_lib.katib import contract, settings
from hpo_lib.katib.lint.common import K8S_SCHEMA_VERSION, Findings, get, path_text

NAMESPACE_LABEL = "katib.kubeflow.org/metrics-collector-injection"
# Default katib-config (manifests/v1beta1/installs/katib-standalone/katib-config.yaml): algorithm -> service.
SUGGESTION_SERVICES = contract.SUGGESTION_SERVICES
# this project's algorithm, registered by manifests/overlays/katib-hpo-multiobjective (hpo katib suggestion-service)
MULTI_OBJECTIVE = contract.MULTI_OBJECTIVE_ALGORITHM
EARLY_STOPPINGS = tuple(settings.EARLY_STOPPINGS)  # Katib ships one early-stopping service
COLLECTORS_WITH_IMAGE = ("StdOut", "File", "TensorFlowEvent")
COLLECTOR_KINDS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "Push")
PARAMETER_TYPES = ("int", "double", "categorical", "discrete", "unknown")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal", "unknown")
RESUME_POLICIES = ("Never", "LongRunning", "FromVolume")
NAME_START = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # Katib's name regex; unanchored at the end, as in Katib
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # Kubernetes: namespaces (at most 63 characters)
DNS1123_SUBDOMAIN = re.compile(rf"{DNS1123_LABEL.pattern}(\.{DNS1123_LABEL.pattern})*")  # object names (<= 253)
PLACEHOLDER = contract.PLACEHOLDER
META_REFERENCE = re.compile(r"\$\{trialSpec\.(.+?)\}")
TWO_GROUPS = re.compile(r".*\(.*\).*\(.*\).*", re.DOTALL)


def check_namespace(exp: dict, labels: dict[str, str], out: Findings) -> None:
    namespace = (exp.get("metadata") or {}).get("namespace") or "default"
    if labels.get(NAMESPACE_LABEL) != "enabled":
        out.error(
            "W-NS",
            f"namespace {namespace!r} lacks label {NAMESPACE_LABEL}=enabled, which Katib's "
            f"webhook requires (got {labels.get(NAMESPACE_LABEL)!r})",
        )


def check_name(metadata: dict, out: Findings) -> None:
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


def check_counts(spec: dict, parallel_defaulted: bool, out: Findings) -> None:
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


def check_objective(spec: dict, out: Findings) -> None:
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


def check_algorithm(spec: dict, out: Findings) -> None:
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


def check_trial_template(spec: dict, out: Findings) -> None:
    template = spec.get("trialTemplate")
    if template is None:
        out.error("W-TT", "spec.trialTemplate is missing")
        return
    if template.get("trialParameters") is None:
        out.error("W-TT", "trialTemplate.trialParameters is missing")
    if not template.get("primaryContainerName"):
        out.error("W-TT", "trialTemplate.primaryContainerName is empty")
    if not template.get("successCondition") or not template.get("failureCondition"):
        kind = get(template, "trialSpec", "kind")
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


def _check_job_schema(job: dict, out: Findings) -> None:
    """K8S-SCHEMA: the substituted Job against Kubernetes' strict schema, and the Job's restartPolicy rule."""
    try:
        kubernetes_validate.validate(job, K8S_SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = path_text(("trialSpec",) + tuple(exc.path))
        out.error("K8S-SCHEMA", f"{where}: {exc.message} (Kubernetes {exc.version} schema for batch/v1 Job)")
    except VersionNotSupportedError:
        out.warning(
            "K8S-SCHEMA",
            f"kubernetes-validate {kubernetes_validate.__version__} has no Kubernetes "
            f"{K8S_SCHEMA_VERSION} schema; the Job template was not checked",
        )
    pod_spec = get(job, "spec", "template", "spec")
    policy = pod_spec.get("restartPolicy") if isinstance(pod_spec, dict) else None
    if policy not in ("Never", "OnFailure"):
        got = "is unset" if policy is None else f"is {policy!r}"
        out.error(
            "K8S-SCHEMA",
            f"trialSpec.spec.template.spec.restartPolicy {got}; a Job needs Never or "
            "OnFailure (Kubernetes rejects the trial's Job)",
        )


def check_parameters(spec: dict, out: Findings) -> None:
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


def check_metrics_collector(spec: dict, out: Findings) -> None:
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
        # any fileSystemPath given, `{}` too, needs both (katib webhook/v1beta1/experiment/validator/validator.go:546)
        given = source.get("fileSystemPath") is not None
        if given and (not str(path.get("path") or "").startswith("/") or path.get("kind") not in ("File", "Directory")):
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
