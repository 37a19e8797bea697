"""Offline Experiment validation: a valid manifest passes clean, each rule fires on a minimal mutation, and
Experiments in the shapes of Katib's shipped examples validate as Katib treats them."""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import pkgutil
import re

import pytest
import yaml

from hpo_lib import cli
from hpo_lib.errors import ConfigError
from hpo_lib.katib import lint
from hpo_lib.katib.lint import Finding, validate_experiment, validate_file

VALID = yaml.safe_load("""
# The smallest Experiment we would ship: Optuna multivariate TPE, medianstop, StdOut, one Job per trial.
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata:
  namespace: hpo
  name: lstm-tpe
spec:
  objective:
    type: minimize
    objectiveMetricName: val_loss
    additionalMetricNames: [val_rmse]
    metricStrategies:
      - {name: val_loss, value: min}
      - {name: val_rmse, value: latest}
  algorithm:
    algorithmName: multivariate-tpe
    algorithmSettings:
      - {name: n_startup_trials, value: "10"}
      - {name: n_ei_candidates, value: "24"}
      - {name: random_state, value: "42"}
  earlyStopping:
    algorithmName: medianstop
    algorithmSettings:
      - {name: min_trials_required, value: "5"}
      - {name: start_step, value: "5"}
  parallelTrialCount: 2
  maxTrialCount: 12
  maxFailedTrialCount: 3
  metricsCollectorSpec:
    collector: {kind: StdOut}
  parameters:
    - {name: lr, parameterType: double, feasibleSpace: {min: "0.0001", max: "0.01", distribution: logUniform}}
    - {name: hidden, parameterType: int, feasibleSpace: {min: "16", max: "128", step: "16"}}
    - {name: model, parameterType: categorical, feasibleSpace: {list: [lstm, gru]}}
  trialTemplate:
    primaryContainerName: trial
    trialParameters:
      - {name: lr, description: Learning rate, reference: lr}
      - {name: hidden, description: Hidden units per layer, reference: hidden}
      - {name: model, description: Model family, reference: model}
    trialSpec:
      apiVersion: batch/v1
      kind: Job
      spec:
        backoffLimit: 0
        activeDeadlineSeconds: 3600
        template:
          metadata:
            labels:
              sidecar.istio.io/inject: "false"
          spec:
            restartPolicy: Never
            containers:
              - name: trial
                image: ghcr.io/example/hpo-trial:0.1.0
                command: [hpo, trial]
                args:
                  - --lr=${trialParameters.lr}
                  - --hidden=${trialParameters.hidden}
                  - --model=${trialParameters.model}
                resources:
                  limits: {nvidia.com/gpu: 1}
""")

# Katib's examples/v1beta1/hp-tuning/tpe.yaml, as shipped (no istio label, no backoffLimit, no deadline)
KATIB_TPE = yaml.safe_load("""
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata:
  namespace: kubeflow
  name: tpe
spec:
  objective:
    type: minimize
    goal: 0.001
    objectiveMetricName: loss
  algorithm:
    algorithmName: tpe
  parallelTrialCount: 3
  maxTrialCount: 12
  maxFailedTrialCount: 3
  parameters:
    - name: lr
      parameterType: double
      feasibleSpace:
        min: "0.01"
        max: "0.05"
    - name: momentum
      parameterType: double
      feasibleSpace:
        min: "0.5"
        max: "0.9"
  trialTemplate:
    primaryContainerName: training-container
    trialParameters:
      - name: learningRate
        description: Learning rate for the training model
        reference: lr
      - name: momentum
        description: Momentum for the training model
        reference: momentum
    trialSpec:
      apiVersion: batch/v1
      kind: Job
      spec:
        template:
          spec:
            containers:
              - name: training-container
                image: ghcr.io/kubeflow/katib/pytorch-mnist-cpu:latest
                command:
                  - "python3"
                  - "/opt/pytorch-mnist/mnist.py"
                  - "--epochs=1"
                  - "--batch-size=16"
                  - "--lr=${trialParameters.learningRate}"
                  - "--momentum=${trialParameters.momentum}"
            restartPolicy: Never
""")

# Katib's examples/v1beta1/early-stopping/median-stop.yaml: the same trial, random search and medianstop
KATIB_MEDIAN_STOP = copy.deepcopy(KATIB_TPE)
KATIB_MEDIAN_STOP["metadata"]["name"] = "median-stop"
KATIB_MEDIAN_STOP["spec"].update({
    "algorithm": {"algorithmName": "random"},
    "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "1"}, {"name": "start_step", "value": "2"}]},
    "parallelTrialCount": 2,
    "maxTrialCount": 15,
})
KATIB_MEDIAN_STOP["spec"]["trialTemplate"]["retain"] = True

DELETE = object()
CONTAINER = "spec.trialTemplate.trialSpec.spec.template.spec.containers[0]"
JOB = "spec.trialTemplate.trialSpec.spec"


def set_path(doc: dict, path: str, value) -> None:
    """Set (or with DELETE remove) the value at a dotted path such as ``spec.parameters[0].name``."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    parent = doc
    for part in parts[:-1]:
        parent = parent[part]
    if value is DELETE:
        del parent[parts[-1]]
    elif isinstance(parent, list) and parts[-1] == len(parent):
        parent.append(value)
    else:
        parent[parts[-1]] = value


def mutated(*changes: tuple[str, object]) -> dict:
    doc = copy.deepcopy(VALID)
    for path, value in changes:
        set_path(doc, path, value)
    return doc


def errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


def test_valid_experiment_has_no_findings():
    findings = validate_experiment(copy.deepcopy(VALID), namespace_labels={
        "katib.kubeflow.org/metrics-collector-injection": "enabled"}, printed_metrics={"val_loss", "val_rmse", "epoch"})
    # neither errors nor warnings: this is the shape our manifests follow
    assert [str(f) for f in findings] == []


@pytest.mark.parametrize("doc", [KATIB_TPE, KATIB_MEDIAN_STOP], ids=["tpe", "median-stop"])
def test_katib_examples_have_no_errors(doc):
    findings = validate_experiment(copy.deepcopy(doc))
    # Katib runs its own examples, so no error may fire (no false positives)
    assert errors(findings) == []
    # only the suggested trial-pod habits (S7, S9) warn
    assert {f.rule for f in findings} <= {"S7", "S9"}


def test_input_document_is_not_modified():
    doc = mutated(("spec.parallelTrialCount", DELETE), ("spec.parallelTrialCount_", 1))
    before = copy.deepcopy(doc)
    validate_experiment(doc)
    # defaults and type clean-up happen on a copy
    assert doc == before


RULES = [
    # id, changes to VALID, keyword arguments, rule, message fragment
    ("type-int-as-string", [("spec.parallelTrialCount", "2")], {}, "TYPE", "spec.parallelTrialCount = '2'"),
    ("type-bound-as-number", [("spec.parameters[1].feasibleSpace.min", 16)], {}, "TYPE",
     "spec.parameters[1].feasibleSpace.min = 16"),
    ("type-api-version", [("apiVersion", "kubeflow.org/v1")], {}, "TYPE", "must be kubeflow.org/v1beta1"),
    ("S2-typo", [("spec.parallelTrialcount", 2)], {}, "S2", "spec.parallelTrialcount: Katib ignores it silently; "
                                                            "did you mean parallelTrialCount?"),
    ("S2-nested-typo", [("spec.parameters[0].feasibleSpace.distrbution", "uniform")], {}, "S2",
     "spec.parameters[0].feasibleSpace.distrbution"),
    ("S2-custom-collector", [("spec.earlyStopping", DELETE), ("spec.metricsCollectorSpec.collector", {
        "kind": "Custom", "customCollector": {"name": "c", "image": "c:1", "imagePullPolicyy": "Always",
                                              "livenessProbe": {"httpGet": {"port": 8080, "path": "/"}}}})], {}, "S2",
     "spec.metricsCollectorSpec.collector.customCollector.imagePullPolicyy"),
    ("S2-snake-case", [("spec.trialTemplate.primary_container_name", "trial")], {}, "S2",
     "spec.trialTemplate.primary_container_name"),
    ("W-NS", [], {"namespace_labels": {}}, "W-NS", "namespace 'hpo' lacks label"),
    ("W-NAME-start", [("metadata.name", "Lstm")], {}, "W-NAME", "'Lstm' must start with a lowercase letter"),
    ("W-NAME-length", [("metadata.name", "a" * 41)], {}, "W-NAME", "has 41 characters; Katib allows at most 40"),
    ("W-NAME-generate", [("metadata.name", DELETE), ("metadata.generateName", "a" * 36)], {}, "W-NAME",
     "has 41 characters"),
    ("W-CNT-parallel", [("spec.parallelTrialCount", 5), ("spec.maxTrialCount", 3)], {}, "W-CNT",
     "parallelTrialCount 5 exceeds maxTrialCount 3"),
    ("W-CNT-default-parallel", [("spec.parallelTrialCount", DELETE), ("spec.maxTrialCount", 2),
                                ("spec.maxFailedTrialCount", 1)], {}, "W-CNT",
     "parallelTrialCount 3 (Katib's default when unset"),
    ("W-CNT-failed", [("spec.maxFailedTrialCount", 20)], {}, "W-CNT",
     "maxFailedTrialCount 20 exceeds maxTrialCount 12"),
    ("W-CNT-negative", [("spec.maxFailedTrialCount", -1)], {}, "W-CNT", "maxFailedTrialCount -1 must be >= 0"),
    ("W-CNT-zero", [("spec.parallelTrialCount", 0)], {}, "W-CNT", "parallelTrialCount 0 must be > 0"),
    ("W-OBJ-missing", [("spec.objective", DELETE)], {}, "W-OBJ", "spec.objective is missing"),
    ("W-OBJ-type", [("spec.objective.type", "minimise")], {}, "W-OBJ", "'minimise' must be minimize or maximize"),
    ("W-OBJ-name", [("spec.objective.objectiveMetricName", "")], {}, "W-OBJ", "objectiveMetricName is empty"),
    ("W-OBJ-additional", [("spec.objective.additionalMetricNames", ["val_loss"])], {}, "W-OBJ",
     "'val_loss' must not also be in additionalMetricNames"),
    ("W-ALG-unknown", [("spec.algorithm.algorithmName", "tpee")], {}, "W-ALG", "'tpee' has no suggestion service"),
    ("W-ALG-missing", [("spec.algorithm", DELETE)], {}, "W-ALG", "spec.algorithm is missing"),
    ("W-ES", [("spec.earlyStopping.algorithmName", "median")], {}, "W-ES", "'median' has no service"),
    ("W-RP", [("spec.resumePolicy", "Always")], {}, "W-RP", "resumePolicy 'Always' must be one of"),
    ("W-TT-primary", [("spec.trialTemplate.primaryContainerName", DELETE)], {}, "W-TT",
     "primaryContainerName is empty"),
    ("W-TT-trial-parameters", [("spec.trialTemplate.trialParameters", DELETE)], {}, "W-TT",
     "trialParameters is missing"),
    ("W-TT-duplicate-name", [("spec.trialTemplate.trialParameters[2].name", "lr")], {}, "W-TT",
     "name 'lr' is duplicated"),
    ("W-TT-duplicate-reference", [("spec.trialTemplate.trialParameters[2].reference", "lr")], {}, "W-TT",
     "reference 'lr' is duplicated"),
    ("W-TT-brace", [("spec.trialTemplate.trialParameters[0].name", "l{r")], {}, "W-TT", "must not contain { or }"),
    ("W-TT-reference", [("spec.trialTemplate.trialParameters[0].reference", "learning_rate")], {}, "W-TT",
     "reference 'learning_rate' is neither a spec.parameters name"),
    ("W-TT-unused", [(f"{CONTAINER}.args[0]", "--lr=0.001")], {}, "W-TT",
     "${trialParameters.lr} does not occur in trialSpec"),
    ("W-TT-undefined", [(f"{CONTAINER}.args[3]", "--epochs=${trialParameters.epochs}")], {}, "W-TT",
     "no trialParameter is named 'epochs'"),
    ("W-TT-metadata-name", [("spec.trialTemplate.trialSpec.metadata", {"name": "job"})], {}, "W-TT",
     "trialSpec.metadata.name 'job' must be omitted"),
    ("W-TT-source", [("spec.trialTemplate.configMap", {"configMapName": "t", "configMapNamespace": "hpo",
                                                         "templatePath": "job.yaml"})], {}, "W-TT",
     "exactly one of trialSpec and configMap, got both"),
    ("W-TT-conditions", [("spec.trialTemplate.trialSpec.kind", "Workflow"),
                         ("spec.trialTemplate.trialSpec.apiVersion", "argoproj.io/v1alpha1")], {}, "W-TT",
     "successCondition and failureCondition must both be set for trial kind 'Workflow'"),
    ("W-PAR-type", [("spec.parameters[0].parameterType", "float")], {}, "W-PAR", "parameterType 'float' must be"),
    ("W-PAR-distribution", [("spec.parameters[0].feasibleSpace.distribution", "loguniform")], {}, "W-PAR",
     "distribution 'loguniform' must be one of"),
    ("W-PAR-int-list", [("spec.parameters[1].feasibleSpace.list", ["16", "32"])], {}, "W-PAR",
     "is int and must not have a list"),
    ("W-PAR-int-max", [("spec.parameters[1].feasibleSpace.max", DELETE)], {}, "W-PAR", "needs both min and max"),
    ("W-PAR-categorical-min", [("spec.parameters[2].feasibleSpace.min", "1")], {}, "W-PAR",
     "is categorical and must not set min"),
    ("W-PAR-nas", [("spec.nasConfig", {"graphConfig": {"numLayers": 2}})], {}, "W-PAR",
     "exactly one of parameters and nasConfig, got both"),
    ("W-MC-none", [("spec.metricsCollectorSpec.collector.kind", "None")], {}, "W-MC", "None was renamed Push"),
    ("W-MC-prometheus", [("spec.metricsCollectorSpec.collector.kind", "PrometheusMetric")], {}, "W-MC",
     "'PrometheusMetric' has no image"),
    ("W-MC-file-path", [("spec.metricsCollectorSpec", {"collector": {"kind": "File"}, "source": {
        "fileSystemPath": {"path": "metrics.log", "kind": "File"}}})], {}, "W-MC",
     "path 'metrics.log' must be absolute"),
    ("W-MC-file-json-filter", [("spec.metricsCollectorSpec", {"collector": {"kind": "File"}, "source": {
        "fileSystemPath": {"path": "/m.json", "kind": "File", "format": "JSON"},
        "filter": {"metricsFormat": [r"(\w+)=(\d+)"]}}})], {}, "W-MC", "format JSON must not set a filter"),
    ("W-MC-custom", [("spec.metricsCollectorSpec.collector.kind", "Custom")], {}, "W-MC",
     "Custom collector needs collector.customCollector"),
    ("W-MC-filter-groups", [("spec.metricsCollectorSpec.source", {"filter": {"metricsFormat": [r"loss=(\d+)"]}})],
     {}, "W-MC", "needs two top subexpressions"),
    ("K8S-SCHEMA-unknown-field", [(f"{CONTAINER}.imagePullPolicyy", "Always")], {}, "K8S-SCHEMA",
     "('imagePullPolicyy' was unexpected)"),
    ("K8S-SCHEMA-type", [(f"{JOB}.activeDeadlineSeconds", "${trialParameters.hidden}")], {}, "K8S-SCHEMA",
     "trialSpec.spec.activeDeadlineSeconds: '1' is not of type 'integer'"),
    ("K8S-SCHEMA-restart-policy", [(f"{JOB}.template.spec.restartPolicy", DELETE)], {}, "K8S-SCHEMA",
     "restartPolicy is unset; a Job needs Never or OnFailure"),
    ("R1", [("spec.parameters[3]", {"name": "dropout", "parameterType": "double",
                                    "feasibleSpace": {"min": "0.0", "max": "0.5"}})], {}, "R1",
     "parameter 'dropout' is referenced by no trialParameter"),
    ("R2-optuna-value", [("spec.algorithm.algorithmSettings[0].value", "-1")], {}, "R2",
     "n_startup_trials = '-1' must be an integer >= 0 for multivariate-tpe (Optuna)"),
    ("R2-optuna-name", [("spec.algorithm.algorithmSettings[2].name", "seed")], {}, "R2",
     "'seed' is unknown to multivariate-tpe (Optuna)"),
    ("R2-hyperopt-tpe", [("spec.algorithm.algorithmName", "tpe")], {}, "R2",
     "'n_startup_trials' is unknown to tpe (Hyperopt), which accepts only gamma, prior_weight, n_EI_candidates"),
    ("R2-hyperopt-gamma", [("spec.algorithm", {"algorithmName": "tpe", "algorithmSettings": [
        {"name": "gamma", "value": "1.5"}]})], {}, "R2", "gamma = '1.5' must be a number in (0, 1)"),
    ("R2-random", [("spec.algorithm", {"algorithmName": "random", "algorithmSettings": [
        {"name": "random_state", "value": "forty-two"}]})], {}, "R2", "random_state = 'forty-two' must be an integer"),
    ("R2-medianstop-value", [("spec.earlyStopping.algorithmSettings[1].value", "0")], {}, "R2",
     "start_step = '0' must be an integer >= 1 for medianstop"),
    ("R2-medianstop-name", [("spec.earlyStopping.algorithmSettings[0].name", "min_trials")], {}, "R2",
     "'min_trials' is unknown to medianstop"),
    ("R3-not-a-number", [("spec.parameters[0].feasibleSpace.min", "small")], {}, "R3",
     "parameter 'lr' min 'small' is not a finite number"),
    ("R3-int-bound", [("spec.parameters[1].feasibleSpace.min", "1e1")], {}, "R3",
     "parameter 'hidden' min '1e1' is not an integer"),
    ("R3-min-above-max", [("spec.parameters[1].feasibleSpace.min", "256")], {}, "R3",
     "min 256 is greater than max 128"),
    ("R3-step", [("spec.parameters[1].feasibleSpace.step", "0")], {}, "R3", "step 0 must be > 0"),
    ("R3-log-min", [("spec.algorithm", {"algorithmName": "tpe"}), ("spec.parameters[0].feasibleSpace.min", "0")], {},
     "R3", "logUniform and needs min > 0"),
    ("R4-normal-on-optuna", [("spec.parameters[0].feasibleSpace.distribution", "normal")], {}, "R4",
     "distribution normal is not supported by multivariate-tpe"),
    ("R4-cmaes", [("spec.algorithm", {"algorithmName": "cmaes"}), ("spec.parameters[1]", {
        "name": "hidden", "parameterType": "discrete", "feasibleSpace": {"list": ["16", "32"]}})], {}, "R4",
     "cmaes needs at least 2 int/double parameters, got 1"),
    ("R4-grid-step", [("spec.algorithm", {"algorithmName": "grid"})], {}, "R4",
     "grid needs a step on every double parameter; 'lr' has none"),
    ("R4-grid-size", [("spec.algorithm", {"algorithmName": "grid"}), ("spec.maxTrialCount", 100),
                      ("spec.parameters[0].feasibleSpace", {"min": "0.001", "max": "0.003", "step": "0.001"})],
     {}, "R4", "grid has 48 combinations, fewer than maxTrialCount 100"),
    ("R5", [("spec.objective.metricStrategies[1].value", "last")], {}, "R5", "'val_rmse' value 'last' must be"),
    ("R6", [("spec.metricsCollectorSpec.collector.kind", "Push")], {}, "R6",
     "early stopping needs the StdOut or File metrics collector, got 'Push'"),
    ("S1", [("spec.parameters[3]", copy.deepcopy(VALID["spec"]["parameters"][0]))], {}, "S1",
     "parameter name 'lr' is used 2 times"),
    ("S3-empty", [("spec.parameters[2].feasibleSpace.list", [])], {}, "S3", "has an empty list"),
    ("S3-duplicate", [("spec.parameters[2].feasibleSpace.list", ["lstm", "lstm"])], {}, "S3",
     "lists lstm more than once"),
    ("S4-name", [("spec.objective.objectiveMetricName", "val/loss")], {}, "S4",
     "metric name 'val/loss' must match ^[A-Za-z0-9_-]+$"),
    ("S4-regex", [("spec.metricsCollectorSpec.source", {"filter": {"metricsFormat": [r"(\w+);(\d+)"]}})], {}, "S4",
     "contains ';'"),
    ("S5", [("spec.maxTrialCount", DELETE)], {}, "S5", "maxTrialCount is unset"),
    ("S6", [(f"{JOB}.activeDeadlineSeconds", "${trialParameters.hidden}")], {}, "S6",
     "field activeDeadlineSeconds: '${trialParameters.hidden}' takes a trialParameter"),
    ("S6-kubeflow-replicas", [("spec.trialTemplate.trialSpec", {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {"Worker": {
            "replicas": "${trialParameters.hidden}", "template": VALID["spec"]["trialTemplate"]["trialSpec"]["spec"][
                "template"]}}}})], {}, "S6", "field replicas"),
    ("S7-restart", [(f"{JOB}.template.spec.restartPolicy", "OnFailure")], {}, "S7", "restartPolicy OnFailure"),
    ("S7-backoff", [(f"{JOB}.backoffLimit", DELETE)], {}, "S7", "backoffLimit 6 (default)"),
    ("S7-deadline", [(f"{JOB}.activeDeadlineSeconds", DELETE)], {}, "S7", "no activeDeadlineSeconds"),
    ("S8", [(f"{CONTAINER}.command", DELETE)], {}, "S8", "primary container 'trial' has no explicit command"),
    ("S9", [(f"{JOB}.template.metadata", DELETE)], {}, "S9", 'lacks label sidecar.istio.io/inject: "false"'),
    ("S-SHELL-space", [(f"{CONTAINER}.args[0]", "--lr=${trialParameters.lr} --verbose")], {}, "S-SHELL",
     "contains ' '"),
    ("S-SHELL-chain", [(f"{CONTAINER}.args[2]", "--model=${trialParameters.model}&&true")], {}, "S-SHELL",
     "contains '&'"),
    ("S-SHELL-quote", [(f"{CONTAINER}.args[1]", "--hidden='${trialParameters.hidden}'")], {}, "S-SHELL",
     "contains \"'\""),
    ("S-SHELL-bin-bash", [(f"{CONTAINER}.command", ["/bin/bash", "-c"]),
                          (f"{CONTAINER}.args", ["hpo trial --lr=${trialParameters.lr} --hidden=${trialParameters."
                                                 "hidden} --model=${trialParameters.model}"])], {}, "S-SHELL",
     "command starts with /bin/bash -c"),
    ("S-SHELL-value", [("spec.parameters[2].feasibleSpace.list", ["lstm", "cnn lstm"])], {}, "S-SHELL",
     "value 'cnn lstm' is substituted into argument '--model=${trialParameters.model}'"),
    ("METRICS", [], {"printed_metrics": {"val_loss"}}, "METRICS", "additional metric 'val_rmse' is never printed"),
    ("PRIMARY", [("spec.trialTemplate.primaryContainerName", "training")], {}, "PRIMARY",
     "primaryContainerName 'training' names no container of the trial pods (trial)"),
    ("TRIAL-KIND", [("spec.trialTemplate.trialSpec.apiVersion", "batch/v2")], {}, "TRIAL-KIND",
     "trial kind Job (batch/v2) is not in the default katib-config trialResources"),
]
WARNINGS = {"S6", "S7", "S8", "S9", "TRIAL-KIND"}


@pytest.mark.parametrize("changes, kwargs, rule, fragment", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_fires_on_a_minimal_mutation(changes, kwargs, rule, fragment):
    findings = validate_experiment(mutated(*changes), **kwargs)
    hits = [f for f in findings if f.rule == rule and fragment in f.message]
    # the mutation is reported under its rule, with a message naming the offending value
    assert hits, [str(f) for f in findings]
    # S6-S9 and TRIAL-KIND warn; everything else is an error
    assert {f.severity for f in hits} == {"warning" if rule in WARNINGS else "error"}


def test_every_rule_has_a_row():
    rules = {r[3] for r in RULES}
    # the table covers exactly the rules lint can emit, each listed once (W-UPD cannot be checked offline)
    assert len(set(lint.RULE_IDS)) == len(lint.RULE_IDS)
    assert rules == set(lint.RULE_IDS)


def _emitted_rule_ids() -> dict[str, set[str]]:
    """Rule id -> severities, read from the source of every module of the lint package: the first argument of every
    ``out.error``/``out.warning``."""
    names = [f"{lint.__name__}.{m.name}" for m in pkgutil.iter_modules(lint.__path__)]
    modules = [lint, *map(importlib.import_module, names)]
    emitted: dict[str, set[str]] = {}
    for node in (n for module in modules for n in ast.walk(ast.parse(inspect.getsource(module)))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("error", "warning") and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "out"):
            first = node.args[0]
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.unparse(node)
            emitted.setdefault(first.value, set()).add(node.func.attr)
    return emitted


def test_rule_ids_are_every_rule_the_module_emits():
    emitted = _emitted_rule_ids()
    # RULE_IDS lists each id some check reports under, and no id that nothing reports
    assert set(emitted) == set(lint.RULE_IDS)


def test_every_rule_id_is_in_the_docstring_rule_index():
    index = lint.__doc__.split("Rules (``Finding.rule``)", 1)[1]
    documented: set[str] = set()
    for line in index.splitlines():
        if not line.startswith("- "):
            continue
        head = line[2:].split(":", 1)[0]
        for prefix, low, high in re.findall(r"``([A-Z]+)(\d+)``-``\1(\d+)``", head):
            documented |= {f"{prefix}{n}" for n in range(int(low), int(high) + 1)}  # ``R1``-``R6``: R1 .. R6
        documented |= set(re.findall(r"``([A-Z][A-Z0-9-]*)``", head))
    # every id lint can emit has a line in the index a reader of a finding can look it up in
    assert set(lint.RULE_IDS) <= documented, sorted(set(lint.RULE_IDS) - documented)


@pytest.mark.parametrize("changes", [
    [(f"{CONTAINER}.command", ["sh", "-c"]),
     (f"{CONTAINER}.args", ["cd /app && hpo trial --lr=${trialParameters.lr} --hidden=${trialParameters.hidden} "
                            "--model=${trialParameters.model}"])],
    [(f"{CONTAINER}.env", [{"name": "RUN", "value": "${trialSpec.Name}"}]),
     (f"{CONTAINER}.args[0]", "--run=${trialSpec.Name}"), (f"{CONTAINER}.args[3]", "--lr=${trialParameters.lr}")],
    [(f"{JOB}.template.metadata.labels.count", "${trialParameters.hidden}"),
     (f"{CONTAINER}.env", [{"name": "HIDDEN", "value": "${trialParameters.hidden}"}])],
], ids=["literal-sh-c", "trial-spec-placeholders", "placeholders-in-string-fields"])
def test_forms_katib_accepts_are_not_flagged(changes):
    findings = validate_experiment(mutated(*changes))
    # a literal `sh -c` script is kept by Katib, ${trialSpec.*} is substituted before the shell runs, and label
    # and env values are strings, so a placeholder there is fine
    assert [str(f) for f in findings] == []


@pytest.mark.parametrize("doc", [
    {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "spec": "oops"},
    {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": "x"},
     "spec": {"parameters": ["lr"], "objective": {"additionalMetricNames": [1, "a"]}, "trialTemplate": {
         "primaryContainerName": "t", "trialParameters": [],
         "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
             "containers": [{"name": "t", "command": "python train.py", "args": 3}]}}}}}}},
], ids=["spec-not-a-mapping", "ill-typed-everywhere"])
def test_ill_typed_documents_give_findings_not_exceptions(doc):
    findings = validate_experiment(doc)
    # wrong types are TYPE/K8S-SCHEMA errors, and the other checks still run on what is left
    assert any(f.rule == "TYPE" for f in findings)
    assert any(f.rule == "W-OBJ" for f in findings)


@pytest.mark.parametrize("doc", [None, ["spec"], "kind: Experiment"])
def test_non_mapping_document_raises(doc):
    # only input that is not a mapping at all raises, naming what it got
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate_experiment(doc)


def test_validate_file_checks_each_experiment_and_skips_other_kinds(tmp_path):
    broken = mutated(("metadata.name", "broken"), ("spec.maxTrialCount", DELETE))
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump_all([VALID, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
                                        broken]))
    findings = validate_file(path)
    # only the broken Experiment reports, and its messages name it
    assert [str(f) for f in findings] == ["error S5: broken: maxTrialCount is unset: the experiment runs until the "
                                          "goal is met, forever for TPE"]


def test_validate_file_rejects_a_non_mapping_document(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    # a YAML list where an Experiment belongs is malformed input
    with pytest.raises(ConfigError, match="document 0 of .* must be a mapping, got list"):
        validate_file(path)



def test_the_multi_objective_algorithm_is_known():
    from hpo_lib.katib import experiment

    doc = copy.deepcopy(VALID)
    doc["spec"]["algorithm"] = {"algorithmName": experiment.MULTI_OBJECTIVE_ALGORITHM, "algorithmSettings": [
        {"name": "objectives", "value": "val_loss:minimize, val_rmse:minimize"}]}
    # registered by the project's overlay: no W-ALG finding, and the name is the engine's
    assert lint.MULTI_OBJECTIVE == experiment.MULTI_OBJECTIVE_ALGORITHM
    assert validate_experiment(doc) == []


@pytest.mark.parametrize("settings", [
    [{"name": "sampler", "value": "cmaes"}], [{"name": "random_state", "value": "-1"}],
    [{"name": "sampler", "value": "nsga2"}, {"name": "n_ei_candidates", "value": "8"}],
    [{"name": "population_size", "value": "1"}], [{"name": "seed", "value": "1"}],
])
def test_settings_the_suggestion_service_refuses_are_errors_before_the_cluster(settings):
    from hpo_lib.katib import experiment, suggestion

    doc = copy.deepcopy(VALID)
    doc["spec"]["algorithm"] = {"algorithmName": experiment.MULTI_OBJECTIVE_ALGORITHM, "algorithmSettings": [
        {"name": "objectives", "value": "val_loss:minimize, val_rmse:minimize"}, *settings]}
    found = errors(suggestion.lint_findings(doc))
    # each refusal of the service's ValidateAlgorithmSettings, in its words, as one R2 error
    problems = suggestion.spec_problems(doc["spec"])
    assert problems and len(found) == len(problems)
    assert all("R2" in line and problem in line for line, problem in zip(found, problems))


def test_hpo_manifests_validate_reports_what_the_suggestion_service_refuses(tmp_path, capsys):
    from hpo_lib import cli

    path = tmp_path / "experiment.yaml"
    text = (lint_root() / "cnn-lstm-pareto-experiment.yaml").read_text()
    path.write_text(re.sub(r"(name: sampler\n\s+value: )\S+", r"\1cmaes", text))
    assert cli.main(["manifests", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    # the line a user reads before applying it, and the verdict
    assert "error R2: algorithm katib-hpo-multiobjective setting sampler = 'cmaes' must be tpe or nsga2" in out
    assert out.rstrip().endswith("INVALID (1 finding(s))")
    # the committed manifest itself is clean
    assert cli.main(["manifests", "validate", str(lint_root() / "cnn-lstm-pareto-experiment.yaml")]) == 0


# ------------------------------------------------------------------------------------------------ Katib's shapes
# Experiments of our own in the shapes of Katib's shipped examples: what Katib runs validates; what it rejects
# does not; names Kubernetes would refuse are refused.


def doc_errors(doc) -> list[str]:
    return [str(f) for f in validate_experiment(copy.deepcopy(doc)) if f.severity == "error"]


def job(container: dict) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "containers": [container], "restartPolicy": "Never"}}}}


def nas(algorithm: str, args: list[str], references: list[str]) -> dict:
    """A NAS Experiment shaped like Katib's nas/darts-*.yaml and nas/enas-*.yaml: quoted placeholders."""
    placeholders = [f"${{trialParameters.p{i}}}" for i in range(len(references))]
    return {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
        "metadata": {"namespace": "kubeflow", "name": f"{algorithm}-shape"},
        "spec": {
            "parallelTrialCount": 1, "maxTrialCount": 2, "maxFailedTrialCount": 1,
            "objective": {"type": "maximize", "objectiveMetricName": "Validation-Accuracy"},
            "algorithm": {"algorithmName": algorithm},
            "nasConfig": {"graphConfig": {"numLayers": 2}, "operations": [
                {"operationType": "separable_convolution", "parameters": [
                    {"name": "filter_size", "parameterType": "categorical", "feasibleSpace": {"list": ["3", "5"]}}]}]},
            "trialTemplate": {
                "primaryContainerName": "trainer",
                "trialParameters": [{"name": f"p{i}", "description": f"NAS input {ref}", "reference": ref}
                                    for i, ref in enumerate(references)],
                "trialSpec": job({"name": "trainer", "image": "example.org/nas-trial:1",
                                  "command": ["python3", "-u", "train_nas.py",
                                              *(a.format(*placeholders) for a in args)]}),
            },
        },
    }


DARTS = nas("darts", ['--algorithm-settings="{0}"', '--search-space="{1}"', '--num-layers="{2}"'],
            ["algorithm-settings", "search-space", "num-layers"])
ENAS = nas("enas", ['--architecture="{0}"', '--nn_config="{1}"'], ["architecture", "nn_config"])


@pytest.mark.parametrize("doc", [DARTS, ENAS], ids=["darts", "enas"])
def test_nas_examples_quoted_arguments_are_not_shell_errors(doc):
    # "${trialParameters.x}" in double quotes is what sh -c should see: no S-SHELL, no error at all
    assert doc_errors(doc) == []


def test_an_unquoted_space_still_is_a_shell_error():
    doc = copy.deepcopy(DARTS)
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"].append(
        "--note=two words")
    assert any("S-SHELL" in e for e in doc_errors(doc))


XGBOOST_LIKE = yaml.safe_load("""
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {namespace: kubeflow, name: boosted-shape}
spec:
  objective:
    type: maximize
    objectiveMetricName: valid_1 auc
    additionalMetricNames: [training auc]
  metricsCollectorSpec:
    source:
      filter:
        metricsFormat: ['(\\w+\\s\\w+)\\s:\\s((-?\\d+)(\\.\\d+)?)']
  algorithm: {algorithmName: random}
  parallelTrialCount: 1
  maxTrialCount: 2
  maxFailedTrialCount: 1
  parameters:
    - {name: lr, parameterType: double, feasibleSpace: {min: "0.01", max: "0.1"}}
  trialTemplate:
    primaryContainerName: trainer
    trialParameters:
      - {name: learningRate, description: Learning rate, reference: lr}
    trialSpec:
      apiVersion: batch/v1
      kind: Job
      spec:
        template:
          spec:
            restartPolicy: Never
            containers:
              - name: trainer
                image: example.org/boost:1
                command: [python3, boost.py, "--learning_rate=${trialParameters.learningRate}"]
""")


def test_metric_names_with_spaces_pass_under_their_own_metrics_format():
    # the collector's own regex captures "valid_1 auc": S4 applies only to Katib's default filter
    assert doc_errors(XGBOOST_LIKE) == []
    doc = copy.deepcopy(XGBOOST_LIKE)
    del doc["spec"]["metricsCollectorSpec"]
    assert any(e.startswith("error S4") for e in doc_errors(doc))


def file_json(filter_value) -> dict:
    doc = copy.deepcopy(XGBOOST_LIKE)
    doc["spec"]["objective"] = {"type": "maximize", "objectiveMetricName": "accuracy"}
    source = {"fileSystemPath": {"kind": "File", "path": "/var/log/metrics.json", "format": "JSON"}}
    if filter_value is not None:
        source["filter"] = filter_value
    doc["spec"]["metricsCollectorSpec"] = {"collector": {"kind": "File"}, "source": source}
    return doc


@pytest.mark.parametrize("filter_value, rejected", [(None, False), ({}, True), ({"metricsFormat": ["(a)(b)"]}, True)])
def test_a_json_file_collector_rejects_any_filter_as_katib_does(filter_value, rejected):
    # Katib's webhook rejects a JSON File collector with a filter, even an empty one
    assert any("must not set a filter" in e for e in doc_errors(file_json(filter_value))) is rejected


@pytest.mark.parametrize("key, value", [
    ("name", "a/../../escape"), ("name", "UPPER"), ("name", "trailing-"), ("namespace", "../../x"),
    ("namespace", "a.b"), ("namespace", "n" * 64),
])
def test_names_kubernetes_rejects_are_refused_naming_value_and_rule(key, value):
    doc = copy.deepcopy(XGBOOST_LIKE)
    doc["metadata"][key] = value
    found = [e for e in doc_errors(doc) if f"metadata.{key} {value!r}" in e and "DNS-1123" in e]
    # one finding names the value, the rule and a fix
    assert len(found) == 1


@pytest.mark.parametrize("key, value", [("name", "a.b-1"), ("namespace", "team-1"), ("name", "x" * 40)])
def test_valid_kubernetes_names_pass(key, value):
    doc = copy.deepcopy(XGBOOST_LIKE)
    doc["metadata"][key] = value
    assert doc_errors(doc) == []


@pytest.mark.parametrize("doc", [DARTS, ENAS, XGBOOST_LIKE], ids=["darts", "enas", "boosted"])
def test_hpo_manifests_validate_accepts_katib_shaped_examples(tmp_path, doc):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["manifests", "validate", str(path)]) == 0


def lint_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "manifests"


def test_cmaes_settings_are_checked_as_goptuna_reads_them():
    # Goptuna (Katib's default service for cmaes, katib pkg/suggestion/v1beta1/goptuna/converter.go:40-68) runs
    # bipop, any integer seed, sigma <= 0 (its default then) and unknown names (skipped): no finding
    doc = copy.deepcopy(VALID)
    doc["spec"]["parameters"] = [
        {"name": n, "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.9"}} for n in ("a", "b")]
    doc["spec"]["trialTemplate"]["trialParameters"] = [
        {"name": n, "description": n, "reference": n} for n in ("a", "b")]
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["--a=${trialParameters.a}", "--b=${trialParameters.b}"]
    accepted = [{"name": "restart_strategy", "value": "bipop"}, {"name": "random_state", "value": "-1"},
                {"name": "sigma", "value": "-1"}, {"name": "popsize", "value": "8"}]
    doc["spec"]["algorithm"] = {"algorithmName": "cmaes", "algorithmSettings": accepted}
    assert [f for f in errors(validate_experiment(doc)) if "R2" in f] == []
    # what Goptuna cannot parse answers gRPC Internal, which the controller takes as valid (katib
    # pkg/controller.v1beta1/suggestion/suggestionclient/suggestionclient.go:228-246): the Experiment would stay
    # Running with no trial, so it is an error here, naming that stall
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "restart_strategy", "value": "None"}]
    (found,) = [f for f in errors(validate_experiment(doc)) if "R2" in f]
    assert "restart_strategy = 'None' must be ipop, bipop or none" in found and "no trial" in found


@pytest.mark.parametrize("collector, source, error", [
    # Katib defaults each fileSystemPath field on its own (katib pkg/apis/controller/experiments/v1beta1/
    # experiment_defaults.go:162-190): a path without kind or format is a valid File / TensorFlowEvent collector
    ({"kind": "File"}, {"fileSystemPath": {"path": "/var/log/m.log"}}, None),
    ({"kind": "File"}, {"fileSystemPath": {}}, None),
    ({"kind": "TensorFlowEvent"}, {"fileSystemPath": {"path": "/var/log/tf/"}}, None),
    # a Custom collector's fileSystemPath, `{}` too, needs an absolute path and a kind (katib
    # pkg/webhook/v1beta1/experiment/validator/validator.go:546-552)
    ({"kind": "Custom", "customCollector": {"name": "c", "image": "x"}}, {"fileSystemPath": {}},
     "Custom collector fileSystemPath needs an absolute path and kind File or Directory"),
])
def test_collector_paths_are_defaulted_and_checked_as_katibs_webhooks_do(collector, source, error):
    doc = copy.deepcopy(VALID)
    doc["spec"].pop("earlyStopping", None)  # early stopping needs StdOut or File (R6): not what is tested here
    doc["spec"]["metricsCollectorSpec"] = {"collector": collector, "source": source}
    found = [f for f in errors(validate_experiment(doc)) if "W-MC" in f]
    assert found == ([] if error is None else [f"error W-MC: {error}, got {{}}"]), found


@pytest.mark.parametrize("algorithm", ["multivariate-tpe", "grid", "cmaes"])
def test_a_log_scale_from_zero_is_no_error_where_katibs_service_clamps_or_ignores_it(algorithm):
    # Katib's Optuna service clamps min to 1e-10 / 1 (katib pkg/suggestion/v1beta1/optuna/base_service.py:124-150),
    # Goptuna ignores the distribution (goptuna/converter.go:113-164); only Hyperopt's log(0) fails
    doc = copy.deepcopy(VALID)
    doc["spec"]["algorithm"] = {"algorithmName": algorithm}
    doc["spec"]["parameters"][0]["feasibleSpace"]["min"] = "0"
    assert not [f for f in errors(validate_experiment(doc)) if "needs min > 0" in f]
