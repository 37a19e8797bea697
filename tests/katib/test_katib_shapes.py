"""Experiments of our own in the shapes of Katib's shipped examples: what Katib runs validates; what it rejects
does not; names Kubernetes would refuse are refused."""

from __future__ import annotations

import copy

import pytest
import yaml

from hpo_lib import cli
from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment
from hpo_lib.katib.lint import validate_experiment


def errors(doc) -> list[str]:
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
    assert errors(doc) == []


def test_an_unquoted_space_still_is_a_shell_error():
    doc = copy.deepcopy(DARTS)
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"].append(
        "--note=two words")
    assert any("S-SHELL" in e for e in errors(doc))


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
    assert errors(XGBOOST_LIKE) == []
    doc = copy.deepcopy(XGBOOST_LIKE)
    del doc["spec"]["metricsCollectorSpec"]
    assert any(e.startswith("error S4") for e in errors(doc))


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
    assert any("must not set a filter" in e for e in errors(file_json(filter_value))) is rejected


@pytest.mark.parametrize("key, value", [
    ("name", "a/../../escape"), ("name", "UPPER"), ("name", "trailing-"), ("namespace", "../../x"),
    ("namespace", "a.b"), ("namespace", "n" * 64),
])
def test_names_kubernetes_rejects_are_refused_naming_value_and_rule(key, value):
    doc = copy.deepcopy(XGBOOST_LIKE)
    doc["metadata"][key] = value
    found = [e for e in errors(doc) if f"metadata.{key} {value!r}" in e and "DNS-1123" in e]
    # one finding names the value, the rule and a fix
    assert len(found) == 1


@pytest.mark.parametrize("key, value", [("name", "a.b-1"), ("namespace", "team-1"), ("name", "x" * 40)])
def test_valid_kubernetes_names_pass(key, value):
    doc = copy.deepcopy(XGBOOST_LIKE)
    doc["metadata"][key] = value
    assert errors(doc) == []


def test_the_engine_refuses_an_escaping_name_before_writing_anything(tmp_path, capsys):
    doc = copy.deepcopy(XGBOOST_LIKE)
    doc["metadata"]["name"] = "a/../../escape"
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="DNS-1123"):
        experiment.load_experiment(path)
    state = tmp_path / "state"
    assert cli.main(["tune", str(path), "--state-dir", str(state), "--no-tracking"]) == 2
    # one line, and nothing written outside (or inside) the state folder
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("doc", [DARTS, ENAS, XGBOOST_LIKE], ids=["darts", "enas", "boosted"])
def test_hpo_manifests_validate_accepts_katib_shaped_examples(tmp_path, doc):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["manifests", "validate", str(path)]) == 0
