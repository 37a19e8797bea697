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
  Settings are checked for the services whose rules are known (:mod:`hpo_lib.katib.settings`): Hyperopt
  ``tpe``/``random``, Optuna ``multivariate-tpe``/``grid``, Goptuna ``cmaes`` (a value Goptuna cannot parse would
  leave the Experiment Running with no trial), and ``medianstop``; other algorithms' settings are not checked (this
  project's ``katib-hpo-multiobjective`` is known to W-ALG; its settings are checked when the engine or its service
  loads it).
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

The rules live by family, in the order they run: :mod:`.api_types` (TYPE, S2), :mod:`.defaults` (the mutating
webhook), :mod:`.webhook` (W-*, K8S-SCHEMA), :mod:`.runtime` (R1-R6), :mod:`.suggested` (S1, S3-S9, S-SHELL,
PRIMARY, TRIAL-KIND, METRICS); :mod:`.common` holds :class:`Finding`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import yaml
from kubeflow_katib_api.models import V1beta1Experiment

from hpo_lib import fileio
from hpo_lib.errors import ConfigError
from hpo_lib.katib.lint import api_types, defaults, runtime, suggested, webhook
from hpo_lib.katib.lint.common import K8S_SCHEMA_VERSION, Finding, Findings, get
from hpo_lib.katib.lint.webhook import MULTI_OBJECTIVE, SUGGESTION_SERVICES

__all__ = [
    "K8S_SCHEMA_VERSION",
    "MULTI_OBJECTIVE",
    "RULE_IDS",
    "SUGGESTION_SERVICES",
    "Finding",
    "validate_experiment",
    "validate_file",
]

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
    out = Findings()
    exp = api_types.check_types(doc, out)
    api_types.unknown_keys(doc, V1beta1Experiment, (), out)
    if not isinstance(exp.get("spec"), dict):
        exp["spec"] = {}
    spec = exp["spec"]
    parallel_defaulted = defaults.apply_defaults(spec)

    if namespace_labels is not None:
        webhook.check_namespace(exp, namespace_labels, out)
    webhook.check_name(exp.get("metadata") or {}, out)
    webhook.check_counts(spec, parallel_defaulted, out)
    webhook.check_objective(spec, out)
    webhook.check_algorithm(spec, out)
    webhook.check_trial_template(spec, out)
    webhook.check_parameters(spec, out)
    webhook.check_metrics_collector(spec, out)
    runtime.check_runtime(spec, out)
    suggested.check_suggested(spec, out)
    suggested.check_trial_pods(spec, out)
    if printed_metrics is not None:
        suggested.check_printed_metrics(spec, printed_metrics, out)
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
        text = fileio.read_manifest(path, f"manifest {path}")
        docs = [d for d in fileio.load_yaml_all(text, f"manifest {path}") if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Experiment manifest {path}: {exc}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ConfigError(f"document {index} of {path} must be a mapping, got {type(doc).__name__}")
    experiments = [d for d in docs if d.get("kind") == "Experiment"]
    findings = []
    for doc in experiments:
        name = get(doc, "metadata", "name")
        for finding in validate_experiment(doc) + (extra(doc) if extra else []):
            findings.append(replace(finding, message=f"{name}: {finding.message}") if len(experiments) > 1 else finding)
    return findings
