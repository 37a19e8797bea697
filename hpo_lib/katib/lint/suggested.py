"""Suggested checks (``S1``-``S9``, ``S-SHELL``) and the trial's pods (``PRIMARY``, ``TRIAL-KIND``, ``METRICS``)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

from hpo_lib.katib import contract
from hpo_lib.katib.lint.common import K8S_SCHEMA_VERSION, Findings, as_dict, as_list, get, pod_templates

ISTIO_LABEL = "sidecar.istio.io/inject"
WRAPPING_COLLECTORS = ("StdOut", "File", "TensorFlowEvent")  # kinds whose sidecar wraps the primary container
TRIAL_RESOURCES = {  # default katib-config init.controller.trialResources, as (kind, apiVersion)
    ("Job", "batch/v1"),
    ("TrainJob", "trainer.kubeflow.org/v1alpha1"),
    ("TFJob", "kubeflow.org/v1"),
    ("PyTorchJob", "kubeflow.org/v1"),
    ("MPIJob", "kubeflow.org/v1"),
    ("XGBoostJob", "kubeflow.org/v1"),
}
METRIC_NAME, PLACEHOLDER = contract.METRIC_NAME, contract.PLACEHOLDER
ANY_PLACEHOLDER = re.compile(r"\$\{trial(?:Parameters|Spec)\.[^}]*\}")  # both are substituted before sh runs
QUOTED_PLACEHOLDER = re.compile(rf'"{ANY_PLACEHOLDER.pattern}"')  # Katib's NAS examples: --flag="${trialParameters.x}"
IN_DOUBLE_QUOTES_META = re.compile(r'[$`"\\]')  # what sh still interprets inside "..."
SHELL_META = contract.SHELL_META
FREE_FORM_MAPS = ("labels", "annotations", "nodeSelector", "limits", "requests", "data", "stringData")


def check_suggested(spec: dict, out: Findings) -> None:
    names = [p.get("name") for p in spec.get("parameters") or []]
    for name in sorted({n for n in names if names.count(n) > 1}, key=str):
        out.error("S1", f"parameter name {name!r} is used {names.count(name)} times")

    for parameter in spec.get("parameters") or []:
        if parameter.get("parameterType") in ("categorical", "discrete"):
            values = parameter["feasibleSpace"].get("list") or []
            if not values:
                out.error("S3", f"{parameter['parameterType']} parameter {parameter.get('name')!r} has an empty list")
            duplicated = sorted(str(v) for v, n in Counter(values).items() if n > 1)  # linear: lists are long
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


def check_trial_pods(spec: dict, out: Findings) -> None:
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
        job_spec = as_dict(trial_spec.get("spec"))
        pod_spec = as_dict(get(job_spec, "template", "spec"))
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
    pods = list(pod_templates(trial_spec))
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
        as_dict(get(pod, "metadata", "labels")).get(ISTIO_LABEL) == "false"
        or as_dict(get(pod, "metadata", "annotations")).get(ISTIO_LABEL) == "false"
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
        argv = [str(a) for a in as_list(container.get("command")) + as_list(container.get("args"))]
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


def _check_shell(argv: list[str], parameters: dict, references: dict, out: Findings) -> None:
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


def check_printed_metrics(spec: dict, printed: set[str], out: Findings) -> None:
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
