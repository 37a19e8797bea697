"""Katib's mutating webhook: the defaults it sets before the validating webhook and the rules see the Experiment."""

from __future__ import annotations

from typing import Any

from hpo_lib.katib import contract

JOB_SUCCESS, JOB_FAILURE = contract.JOB_SUCCESS, contract.JOB_FAILURE
KUBEFLOW_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
KUBEFLOW_JOB_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob")
KUBEFLOW_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
TRAINJOB_POD_LABELS = {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"}


def apply_defaults(spec: dict) -> bool:
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
    # each fileSystemPath field defaulted on its own (katib pkg/apis/controller/experiments/v1beta1/
    # experiment_defaults.go:162-190)
    if collector.get("kind") in ("File", "TensorFlowEvent"):
        path = source.get("fileSystemPath") or {}
        file = collector.get("kind") == "File"
        path["kind"] = path.get("kind") or ("File" if file else "Directory")
        path["path"] = path.get("path") or ("/var/log/katib/metrics.log" if file else "/var/log/katib/tfevent/")
        if file:
            path["format"] = path.get("format") or "TEXT"
        source["fileSystemPath"] = path
    elif collector.get("kind") == "PrometheusMetric" and not source.get("httpGet"):
        source["httpGet"] = {"path": "/metrics", "port": 8080}
    if source:
        collector_spec["source"] = source
    return parallel_defaulted
