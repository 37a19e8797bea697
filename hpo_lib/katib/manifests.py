"""Kubernetes manifests rendered from code: one Katib Experiment per model family plus the cluster resources.

``hpo manifests render`` writes them under ``manifests/``; ``hpo manifests check`` fails when a committed file
differs from what this module renders, so the YAML can never drift from ``space.py`` or the trial flags.

Layout (kustomize, one concern per folder, one resource per file)::

    manifests/
      kustomization.yaml            the cluster resources only (cluster/); pins the trial image under images:
      cluster/                      namespace, RBAC for the pipeline, market-data PVC, data-prep Job
      experiments/<name>/           one Experiment per folder, each its own kustomization (image pinned):
                                    lstm, gru, cnn-lstm, mlp, and cnn-lstm-pareto (three objectives)
      <name>-experiment.yaml        a link to experiments/<name>/experiment.yaml (kubectl apply -f, hpo tune)
      overlays/optuna-tpe/          optional: Katib's `tpe` served by Optuna, more memory for suggestions
      overlays/katib-hpo-multiobjective/  registers this project's multi-objective suggestion service
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from hpo_lib import fileio, metrics
from hpo_lib.katib import contract, settings, space

NAMESPACE = "katib-hpo"
IMAGE = "ghcr.io/katib-hpo/trial"
IMAGE_TAG = "0.1.0"
# the suggestion service's image (trial_image/suggestion.Dockerfile, `make suggestion-image`): no torch; same tag
SUGGESTION_IMAGE = "ghcr.io/katib-hpo/suggestion"
KATIB_VERSION = "v0.19.0"
DATA_SPEC = "yahoo:SPY,start=2010-01-01,end=2024-12-31"  # shell-safe form: Katib runs args through `sh -c`
DATA_PVC = "market-data"
DATA_MOUNT = "/data"
PIPELINE_SA = "hpo-pipeline"
UID = 10001  # the trial image's non-root user
DATA_PREP_LABELS = {"app.kubernetes.io/name": "market-data-prep"}

EPOCHS = 60
# the robust objective: every trial is scored on 4 walk-forward folds x 2 seeds (the setting bench/packing.py's
# selection-reliability table compares with one fold and one seed); fixed arguments, never searched
FOLDS, SEEDS = 4, 2
BUDGET = {"parallelTrialCount": 2, "maxTrialCount": 40, "maxFailedTrialCount": 8}
TPE_SETTINGS = {"n_startup_trials": "10", "n_ei_candidates": "24", "random_state": "42"}
ALGORITHM = contract.MULTI_OBJECTIVE_ALGORITHM  # what the Pareto Experiment runs on
PARETO = "cnn-lstm-pareto"  # the seed use case: accuracy, training time and model size at once
PARETO_SETTINGS = {
    "objectives": f"{metrics.OBJECTIVE}:minimize, train_time_s:minimize, model_size_mb:minimize",
    "sampler": "tpe",
    "random_state": "42",
    "n_startup_trials": "10",
}
SUGGESTION_COMMAND = ["hpo", "katib", "suggestion-service", "--port=6789"]
MEDIANSTOP_SETTINGS = {"min_trials_required": "5", "start_step": "5"}


def _container_security() -> dict[str, Any]:
    """The securityContext of every container we run: no privilege escalation, read-only root, no capabilities."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    """The pod securityContext of every pod we run: the image's non-root user, the runtime's seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# ----------------------------------------------------------------------------------------------- experiment
def trial_command(family: str, params: tuple[space.Param, ...]) -> tuple[list[str], list[str]]:
    """The trial container's command and args: one ``hpo trial`` process, every knob a ``--name=`` flag."""
    fixed = [
        f"--model={family}",
        f"--data={DATA_SPEC}",
        f"--cache-dir={DATA_MOUNT}",
        "--target=return",
        "--horizon=1",
        f"--epochs={EPOCHS}",
        f"--folds={FOLDS}",
        f"--seeds={SEEDS}",
    ]
    return ["hpo", "trial"], fixed + space.trial_flags(params)


def trial_job(family: str, params: tuple[space.Param, ...]) -> dict[str, Any]:
    command, args = trial_command(family, params)
    container = {
        "name": "training",
        "image": f"{IMAGE}:{IMAGE_TAG}",
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},  # the sidecar tails the log for early stopping
            {"name": "HPO_OFFLINE", "value": "1"},  # trials read the data-prep Job's cache, never Yahoo
            {"name": "HOME", "value": "/tmp"},
            {"name": "HPO_OUTPUT_DIR", "value": "/tmp/outputs"},  # the trial's files (the embedded engine sets its own)
        ],
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "market-data", "mountPath": DATA_MOUNT, "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "backoffLimit": 0,  # a failed trial is Katib's to count, not the Job's to retry
            "activeDeadlineSeconds": 7200,
            "template": {
                "metadata": {"labels": {"sidecar.istio.io/inject": "false"}},  # else the pod never completes
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                    "volumes": [
                        {"name": "market-data", "persistentVolumeClaim": {"claimName": DATA_PVC, "readOnly": True}},
                        {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}},
                    ],
                },
            },
        },
    }


def experiment(family: str) -> dict[str, Any]:
    """The Katib Experiment for one model family, in Katib's field order."""
    params = space.search_space(family)
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {
            "name": f"{family}-spy-return",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "katib-hpo", "katib-hpo/model": family},
        },
        "spec": {
            "objective": {
                "type": "minimize",
                "objectiveMetricName": metrics.OBJECTIVE,
                "additionalMetricNames": list(metrics.COLLECTED),
                "metricStrategies": [
                    {"name": metrics.OBJECTIVE, "value": "min"},
                    *({"name": k, "value": v} for k, v in metrics.COLLECTED.items()),
                ],
            },
            "algorithm": settings.section("multivariate-tpe", TPE_SETTINGS),
            "earlyStopping": settings.section(settings.MEDIANSTOP, MEDIANSTOP_SETTINGS),
            **BUDGET,
            "resumePolicy": "LongRunning",
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [space.to_katib_parameter(p) for p in params],
            "trialTemplate": {
                # keep each finished trial's Job and pods, so a failed trial's log can still be read
                # (Katib deletes them with retain: false); see EXPERIMENT_COMMENT
                "retain": True,
                "primaryContainerName": "training",
                "successCondition": contract.JOB_SUCCESS,
                "failureCondition": contract.JOB_FAILURE,
                "trialParameters": space.katib_trial_parameters(params),
                "trialSpec": trial_job(family, params),
            },
        },
    }


def pareto_experiment() -> dict[str, Any]:
    """The CNN-LSTM Experiment traded off on validation loss, training time and model size.

    Served by ``katib-hpo-multiobjective`` (``hpo katib suggestion-service``, registered by the overlay). No
    early stopping: a trial stopped early reports the training time of a few epochs, which would put it on the
    time axis of the front for a reason that is not its configuration.
    """
    doc = experiment("cnn-lstm")
    doc["metadata"]["name"] = "cnn-lstm-spy-pareto"
    doc["metadata"]["labels"]["katib-hpo/search"] = "pareto"
    doc["spec"]["algorithm"] = settings.section(ALGORITHM, PARETO_SETTINGS)  # its service checks them
    del doc["spec"]["earlyStopping"]
    return doc


def experiments() -> dict[str, dict[str, Any]]:
    """Every shipped Experiment by folder name: one per model family, then the multi-objective one."""
    return {**{family: experiment(family) for family in space.FAMILIES}, PARETO: pareto_experiment()}


READ_A_FAILED_TRIAL = """\
# retain: true keeps each trial's Job and pods after it ends; read a failed trial's output (Katib's StdOut
# collector moves it to the sidecar's log) with:
#   kubectl -n {namespace} logs -l katib.kubeflow.org/trial=<trial> -c metrics-logger-and-collector
# and delete the pods of a finished experiment with kubectl -n {namespace} delete experiment <name>.
"""
EXPERIMENT_COMMENT = """\
# Katib Experiment: tune the {family} forecaster of next-day SPY log returns.
# Optuna multivariate TPE (Katib's suggestion-optuna, no katib-config change needed) proposes
# {parallel} trials at a time; the median stopping rule stops weak trials at their 5th epoch.
# Each trial is a GPU pod running `hpo trial` from the trial image on the data-prep Job's cache.
# Generated by `hpo manifests render` from hpo_lib/katib/space.py: edit the code, not this file.
# Apply after `kubectl apply -k manifests/` (namespace, RBAC, data):
#   kubectl apply -k manifests/experiments/{name}
"""
PARETO_COMMENT = """\
# Katib Experiment: the CNN-LSTM forecaster of next-day SPY log returns traded off on three objectives at once,
# validation loss, training time and model size (the Pareto front is what the pipeline retrains).
# Katib optimizes one objective; algorithm katib-hpo-multiobjective (`hpo katib suggestion-service`) proposes
# {parallel} trials at a time with Optuna's multi-objective TPE, the same proposals `hpo tune` makes on a laptop.
# No early stopping: a trial stopped early would report a short training time that is not its configuration's.
# Generated by `hpo manifests render` from hpo_lib/katib/manifests.py: edit the code, not this file.
# Apply after `kubectl apply -k manifests/` (namespace, RBAC, data) and, once per cluster, the overlay that
# registers the algorithm: kubectl apply -k manifests/overlays/katib-hpo-multiobjective
#   kubectl apply -k manifests/experiments/{name}
"""


# ----------------------------------------------------------------------------------------------- cluster
def namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "katib.kubeflow.org/metrics-collector-injection": "enabled",  # Katib injects the metrics sidecar
                "app.kubernetes.io/part-of": "katib-hpo",
            },
        },
    }


def rbac() -> dict[str, dict[str, Any]]:
    meta = {"namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "katib-hpo"}}
    return {
        "serviceaccount.yaml": {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": PIPELINE_SA, **meta},
            "automountServiceAccountToken": True,
        },
        "role.yaml": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "hpo-experiments", **meta},
            "rules": [
                {
                    "apiGroups": ["kubeflow.org"],
                    "resources": ["experiments"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {"apiGroups": ["kubeflow.org"], "resources": ["trials"], "verbs": ["get", "list", "watch"]},
            ],
        },
        "rolebinding.yaml": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "hpo-pipeline-experiments", **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hpo-experiments"},
            "subjects": [{"kind": "ServiceAccount", "name": PIPELINE_SA, "namespace": NAMESPACE}],
        },
    }


def data_pvc() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": DATA_PVC, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "katib-hpo"}},
        # ReadWriteOnce works on any storage class; trial pods on several GPU nodes need ReadWriteMany
        # (or ReadOnlyMany after the data-prep Job): patch accessModes in an overlay
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def data_prep_job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "market-data-prep",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "katib-hpo"},
            "annotations": {
                "checkov.io/skip1": "CKV_K8S_43=the tag is pinned here and replaced by "
                "kustomize images:, where a digest can be set"
            },
        },
        "spec": {
            "backoffLimit": 3,  # Yahoo throttles: retry the whole download a few times
            "activeDeadlineSeconds": 1800,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": {"sidecar.istio.io/inject": "false", **DATA_PREP_LABELS}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "containers": [
                        {
                            "name": "fetch",
                            "image": f"{IMAGE}:{IMAGE_TAG}",
                            "imagePullPolicy": "Always",
                            "command": ["hpo", "data", "fetch", DATA_SPEC, f"--cache-dir={DATA_MOUNT}"],
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"cpu": "1", "memory": "1Gi"},
                            },
                            "securityContext": _container_security(),
                            "volumeMounts": [
                                {"name": "market-data", "mountPath": DATA_MOUNT},
                                {"name": "scratch", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "market-data", "persistentVolumeClaim": {"claimName": DATA_PVC}},
                        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


def data_prep_network_policy() -> dict[str, Any]:
    """The data-prep pod may resolve names and reach HTTPS (Yahoo), nothing else; nothing may reach it.

    Trial pods are left out on purpose: Katib's metrics sidecar in them must reach Katib's DB manager and the
    early-stopping service, whose addresses depend on the install.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "market-data-prep",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "katib-hpo"},
        },
        "spec": {
            "podSelector": {"matchLabels": DATA_PREP_LABELS},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"ports": [{"protocol": "TCP", "port": 443}]},
            ],
        },
    }


# ----------------------------------------------------------------------------------------------- overlay
def suggestion_service_entry() -> dict[str, Any]:
    """The katib-config entry that registers ``katib-hpo-multiobjective``: the suggestion image, its command.

    Katib's composer adds the port (6789) and gRPC readiness/liveness probes on ``manager.v1beta1.Suggestion``,
    which the service's health endpoint answers; the container runs as the image's non-root user with a
    read-only root file system (the service writes nothing: every study is rebuilt in memory per request).
    """
    return {
        "algorithmName": ALGORITHM,
        "image": f"{SUGGESTION_IMAGE}:{IMAGE_TAG}",
        "imagePullPolicy": "IfNotPresent",
        "command": SUGGESTION_COMMAND,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},  # Optuna + numpy; rebuilding a 3-objective TPE study
        },
        "securityContext": {**_container_security(), "runAsUser": UID, "seccompProfile": {"type": "RuntimeDefault"}},
    }


def katib_config(*, tpe_on_optuna: bool = True, multi_objective: bool = False) -> dict[str, Any]:
    """Katib v0.19's default katib-config, with more memory for suggestions/collectors, and optionally `tpe`
    served by Optuna (overlays/optuna-tpe) or this project's multi-objective service registered. Katib reads the
    `runtime` section live, so no controller restart is needed. This replaces the whole ConfigMap: compare with
    your cluster's (`kubectl -n kubeflow get cm katib-config -o yaml`) before applying.
    """
    registry = "ghcr.io/kubeflow/katib"
    # corev1.Container's (katib pkg/apis/config/v1beta1/types.go:103); no runAsNonRoot: Katib's images run as root
    container_security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    more_memory = {"limits": {"memory": "512Mi"}}  # the default 100Mi is too little for optuna + numpy
    services = {**contract.SUGGESTION_SERVICES, **({"tpe": "optuna"} if tpe_on_optuna else {})}
    memory = {"optuna": more_memory, "enas": {"limits": {"memory": "400Mi"}}}
    suggestions = [
        (name, f"suggestion-{service}", memory.get(service)) for name, service in services.items() if name != "pbt"
    ]  # pbt needs a volume: below
    config = {
        "apiVersion": "config.kubeflow.org/v1beta1",
        "kind": "KatibConfig",
        "init": {
            "certGenerator": {"enable": True},
            "controller": {
                "webhookPort": 8443,
                "trialResources": [
                    "TrainJob.v1alpha1.trainer.kubeflow.org",
                    "Job.v1.batch",
                    "TFJob.v1.kubeflow.org",
                    "PyTorchJob.v1.kubeflow.org",
                    "MPIJob.v1.kubeflow.org",
                    "XGBoostJob.v1.kubeflow.org",
                ],
            },
        },
        "runtime": {
            "metricsCollectors": [
                {
                    "kind": kind,
                    "image": f"{registry}/{image}:{KATIB_VERSION}",
                    "resources": {"limits": {"memory": memory}},
                }
                for kind, image, memory in [
                    ("StdOut", "file-metrics-collector", "256Mi"),
                    ("File", "file-metrics-collector", "256Mi"),
                    ("TensorFlowEvent", "tfevent-metrics-collector", "1Gi"),
                ]
            ],
            "suggestions": [
                {
                    "algorithmName": name,
                    "image": f"{registry}/{image}:{KATIB_VERSION}",
                    **({"resources": resources} if resources else {}),
                    "securityContext": container_security,
                }
                for name, image, resources in suggestions
            ]
            + [
                {
                    "algorithmName": "pbt",
                    "image": f"{registry}/suggestion-pbt:{KATIB_VERSION}",
                    "persistentVolumeClaimSpec": {
                        "accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "5Gi"}},
                    },
                    "securityContext": container_security,
                }
            ]
            + ([suggestion_service_entry()] if multi_objective else []),
            "earlyStoppings": [
                {
                    "algorithmName": "medianstop",
                    "image": f"{registry}/earlystopping-medianstop:{KATIB_VERSION}",
                }
            ],
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "katib-config", "namespace": "kubeflow"},
        "data": {"katib-config.yaml": yaml.safe_dump(config, sort_keys=False)},
    }


# ----------------------------------------------------------------------------------------------- files
def _kustomization(resources: list[str], comment: str = "", **extra: Any) -> str:
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources, **extra}
    return comment + _dump(body)


class _Dumper(yaml.SafeDumper):
    """Quotes every string that a YAML 1.2 parser (kubectl's) could read as a number, e.g. ``1e-05``."""


_NUMBERISH = re.compile(r"[-+]?(\.?\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'" if _NUMBERISH.fullmatch(value) else None)


_Dumper.add_representer(str, _represent_str)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False)


def render() -> dict[str, str]:
    """Every file under ``manifests/``, path (relative) -> text."""
    files: dict[str, str] = {}
    parallel = BUDGET["parallelTrialCount"]
    for name, doc in experiments().items():
        comment = PARETO_COMMENT if name == PARETO else EXPERIMENT_COMMENT
        header = comment.format(family=name, name=name, parallel=parallel)
        retain = READ_A_FAILED_TRIAL.format(namespace=NAMESPACE)
        files[f"experiments/{name}/experiment.yaml"] = header + retain + _dump(doc)
        files[f"experiments/{name}/kustomization.yaml"] = _kustomization(
            ["experiment.yaml"],
            comment=f"# kubectl apply -k manifests/experiments/{name}: starts this experiment only.\n"
            f"# Point its trials at your registry: kustomize edit set image {IMAGE}=<registry>/<name>:<tag>\n",
            images=[{"name": IMAGE, "newTag": IMAGE_TAG}],
        )
    files["cluster/namespace.yaml"] = _dump(namespace())
    for name, doc in rbac().items():
        files[f"cluster/{name}"] = _dump(doc)
    files["cluster/data-pvc.yaml"] = _dump(data_pvc())
    files["cluster/data-prep-job.yaml"] = (
        "# Downloads the market data once into the PVC; the only place that calls Yahoo.\n" + _dump(data_prep_job())
    )
    files["cluster/data-prep-networkpolicy.yaml"] = _dump(data_prep_network_policy())
    files["cluster/kustomization.yaml"] = _kustomization(
        [
            "namespace.yaml",
            "serviceaccount.yaml",
            "role.yaml",
            "rolebinding.yaml",
            "data-pvc.yaml",
            "data-prep-job.yaml",
            "data-prep-networkpolicy.yaml",
        ]
    )
    files["kustomization.yaml"] = _kustomization(
        ["cluster"],
        comment="# The cluster resources: `kubectl apply -k manifests/` starts no experiment.\n"
        "# cluster/: namespace, RBAC for the pipeline, market-data PVC and data-prep Job.\n"
        "# Each experiment is its own kustomization: kubectl apply -k manifests/experiments/<name>\n"
        f"# ({', '.join(experiments())}).\n"
        "# Point the data-prep Job at your registry: kustomize edit set image "
        f"{IMAGE}=<registry>/<name>:<tag>\n",
        images=[{"name": IMAGE, "newTag": IMAGE_TAG}],
    )
    unhardened = (  # KatibConfig has no securityContext for these (katib pkg/apis/config/v1beta1/types.go:112-126)
        "# Katib v0.19 cannot harden metrics collectors or early stopping here: their config types have no\n"
        "# securityContext (the sidecar copies the trial container's with init.controller.injectSecurityContext).\n"
    )
    files["overlays/optuna-tpe/katib-config.yaml"] = (
        "# Optional, cluster-wide: Katib's `tpe` served by suggestion-optuna instead of Hyperopt, and more memory\n"
        "# for the Optuna suggestion pods and metrics collectors. Replaces the whole katib-config ConfigMap.\n"
        + unhardened
        + "#   kubectl apply -k manifests/overlays/optuna-tpe\n"
        + _dump(katib_config())
    )
    files["overlays/optuna-tpe/kustomization.yaml"] = _kustomization(["katib-config.yaml"])
    files["overlays/katib-hpo-multiobjective/katib-config.yaml"] = (
        "# Optional, cluster-wide: registers algorithm katib-hpo-multiobjective (`hpo katib suggestion-service` in\n"
        f"# the suggestion image {SUGGESTION_IMAGE}:{IMAGE_TAG}, `make suggestion-image`; edit the image here to\n"
        "# point at your registry), with more memory for Katib's Optuna suggestion pods and metrics collectors.\n"
        "# Replaces the whole katib-config ConfigMap, like overlays/optuna-tpe: apply one of the two.\n"
        + unhardened
        + "#   kubectl apply -k manifests/overlays/katib-hpo-multiobjective\n"
        + _dump(katib_config(tpe_on_optuna=False, multi_objective=True))
    )
    files["overlays/katib-hpo-multiobjective/kustomization.yaml"] = _kustomization(["katib-config.yaml"])
    return files


def links() -> dict[str, str]:
    """``<name>-experiment.yaml`` -> the experiment file it links to (for ``kubectl apply -f`` and ``hpo tune``)."""
    return {f"{name}-experiment.yaml": f"experiments/{name}/experiment.yaml" for name in experiments()}


def write(root: Path) -> list[Path]:
    """Write every file that differs, and make each link; returns what changed."""
    written = []
    files = render()
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            fileio.write_text(path, text)
            written.append(path)
    for rel, target in links().items():
        path = root / rel
        if path.is_symlink() and Path(os.readlink(path)) == Path(target):
            continue
        if path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(target)
        written.append(path)
    return written


def drift(root: Path) -> list[str]:
    """Files under ``root`` that are missing or differ from what the code renders (a link: its target's text)."""
    files = render()
    expected = {**files, **{rel: files[target] for rel, target in links().items()}}
    return [rel for rel, text in expected.items() if not (root / rel).exists() or (root / rel).read_text() != text]
