"""An Experiment read the way Katib reads it (hpo_lib.katib.experiment): loading, objectives, the trial command."""

from __future__ import annotations

import copy

import pytest
import yaml

from hpo_lib import cli
from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract, experiment
from tests.conftest import BASE, OBJECTIVES_ANNOTATION, manifest
from tests.katib.test_lint import XGBOOST_LIKE
from tests.katib.test_suggestion import spec as multi_objective_spec


# ------------------------------------------------------------------------------------------------ documents
def test_parse_experiment_skips_other_kinds_and_names_the_source():
    text = yaml.safe_dump_all([{"apiVersion": "v1", "kind": "ConfigMap"}, BASE])
    # the one Experiment of a multi-document text, other kinds skipped
    assert experiment.parse_experiment(text, "manifest x.yaml")["metadata"]["name"] == "scripted"
    # none or two: refused, naming the source and the count
    with pytest.raises(ConfigError, match="manifest x.yaml must hold exactly one Experiment, found 2"):
        experiment.parse_experiment(yaml.safe_dump_all([BASE, BASE]), "manifest x.yaml")
    with pytest.raises(ConfigError, match="manifest x.yaml is not valid YAML"):
        experiment.parse_experiment("a: [", "manifest x.yaml")


def test_load_experiment_refuses_a_missing_file_nas_and_what_lint_rejects(tmp_path):
    # a missing file is named
    with pytest.raises(ConfigError, match="does not exist"):
        experiment.load_experiment(tmp_path / "absent.yaml")
    # architecture search: the services that would run it are named
    path = manifest(tmp_path, nasConfig={"graphConfig": {"numLayers": 1}})
    with pytest.raises(ConfigError, match="neural architecture search .* suggestion-enas / suggestion-darts"):
        experiment.load_experiment(path)
    # what Katib would reject: every error finding, with its rule
    path = manifest(tmp_path, parallelTrialCount=9)
    with pytest.raises(ConfigError, match="is invalid: error W-CNT: parallelTrialCount 9 exceeds maxTrialCount 3"):
        experiment.load_experiment(path)
    # a valid manifest loads as written
    assert experiment.load_experiment(manifest(tmp_path)) == BASE


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


def test_qualified_name_and_settings_read_the_document_as_katib_does():
    # <namespace>.<name>, Katib's default namespace when unset
    assert experiment.qualified_name(BASE) == "local.scripted"
    assert experiment.qualified_name({"metadata": {"name": "x"}}) == "default.x"
    # algorithmSettings as {name: text}; a repeated setting keeps its last value; no section, no settings
    section = {"algorithmSettings": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}
    assert experiment.settings(section) == {"a": "2"}
    assert experiment.settings(None) == {}


# ------------------------------------------------------------------------------------------------ objectives
def test_objective_checks_direction_and_strategy_and_keys_lower_is_better():
    # a maximized value is negated, so lower is better for both directions
    assert experiment.Objective("acc", "maximize", "max").key(0.9) == -0.9
    assert experiment.Objective("val_loss").key(0.5) == 0.5
    with pytest.raises(ConfigError, match="direction of acc must be minimize or maximize, got 'up'"):
        experiment.Objective("acc", "up")
    with pytest.raises(ConfigError, match="strategy of acc must be min, max or latest, got 'last'"):
        experiment.Objective("acc", "maximize", "last")


def test_the_strategies_are_katibs_metric_strategies():
    # one list: what the Objective accepts is what lint's R5 accepts
    assert experiment.STRATEGIES == contract.METRIC_STRATEGIES == ("min", "max", "latest")


def test_primary_objective_takes_katibs_default_strategy_when_none_is_declared():
    doc = copy.deepcopy(BASE)
    # the declared strategy
    assert experiment.primary_objective(doc) == experiment.Objective("val_loss", "minimize", "min")
    doc["spec"]["objective"].update(type="maximize", metricStrategies=[])
    # none declared: max for maximize (min for minimize)
    assert experiment.primary_objective(doc).strategy == "max"
    assert experiment.metric_strategy(BASE, "val_rmse", "latest") == "min"
    assert experiment.metric_strategy(BASE, "other", "latest") == "latest"
    doc["spec"]["objective"]["type"] = "best"
    with pytest.raises(ConfigError, match="no spec.objective with objectiveMetricName and type minimize/maximize"):
        experiment.primary_objective(doc)


def test_the_engine_reads_objectives_from_the_setting_and_refuses_a_second_declaration():
    doc = {"metadata": {}, "spec": multi_objective_spec()}
    # the setting declares the study's objectives, strategies from metricStrategies (Katib's default otherwise)
    assert [(o.metric, o.direction) for o in experiment.objectives(doc)] == [
        ("val_loss", "minimize"), ("train_time_s", "minimize"), ("val_dir_acc", "maximize")]
    doc["metadata"]["annotations"] = {experiment.OBJECTIVES_ANNOTATION: "val_loss:minimize"}
    # declared twice (setting and the deprecated annotation): refused, naming both
    with pytest.raises(ConfigError, match="both declare objectives"):
        experiment.objectives(doc)


def test_the_multi_objective_algorithm_has_one_name():
    # the engine, lint and the rendered manifests read the same name
    assert experiment.MULTI_OBJECTIVE_ALGORITHM == contract.MULTI_OBJECTIVE_ALGORITHM == "katib-hpo-multiobjective"


def test_collected_metrics_and_the_collection_as_katib_defaults_them():
    # the objective first, then additionalMetricNames
    assert experiment.collected_metrics(BASE) == ["val_loss", "val_rmse"]
    # StdOut; a File collector's path defaults to Katib's, and its format to TEXT
    assert experiment.metrics_collection(BASE) == experiment.Collection("StdOut")
    doc = copy.deepcopy(BASE)
    doc["spec"]["metricsCollectorSpec"] = {"collector": {"kind": "File"}}
    assert experiment.metrics_collection(doc) == experiment.Collection("File", "/var/log/katib/metrics.log")
    doc["spec"]["metricsCollectorSpec"]["source"] = {"fileSystemPath": {"path": "/m.json", "format": "JSON"}}
    assert experiment.metrics_collection(doc) == experiment.Collection("File", "/m.json", json=True)
    # no metricsFormat: Katib's default filter
    assert [f.pattern for f in experiment.metrics_filters(BASE)] == [contract.DEFAULT_FILTER]


def test_objectives_annotation_adds_objectives_after_katibs():
    doc = {"metadata": {"annotations": {OBJECTIVES_ANNOTATION: "val_loss:minimize, val_rmse:maximize"}},
           "spec": BASE["spec"]}
    # Katib's objective first, with its strategy; the annotation's extra objective after it
    assert [(o.metric, o.direction, o.strategy) for o in experiment.objectives(doc)] == [
        ("val_loss", "minimize", "min"), ("val_rmse", "maximize", "min")]
    # without the annotation, Katib's one objective
    assert len(experiment.objectives({"metadata": {}, "spec": BASE["spec"]})) == 1


@pytest.mark.parametrize("annotation, message", [
    ("train_time_s:minimize", "not in additionalMetricNames"),
    ("val_loss:maximize", "which the manifest says to minimize"),
    ("val_rmse", "is not METRIC:minimize"),
    ("val_rmse:minimize,val_rmse:maximize", "listed twice"),
])
def test_bad_objectives_annotation_is_refused(annotation, message):
    doc = {"metadata": {"annotations": {OBJECTIVES_ANNOTATION: annotation}}, "spec": BASE["spec"]}
    # an annotation Katib's metrics collector could not serve is refused with the reason
    with pytest.raises(ConfigError, match=message):
        experiment.objectives(doc)


# ------------------------------------------------------------------------------------------------ trial command
def test_trial_command_substitutes_and_overrides_flags():
    command = experiment.trial_command(BASE, {"x": "0.5"}, {"epochs": "2", "data": "sample:sp500"})
    # the placeholder filled, --epochs replaced in place, --data appended
    assert command.argv[2:] == ["--x=0.5", "--epochs=2", "--data=sample:sp500"]
    assert command.flags == ["--x=0.5", "--epochs=2", "--data=sample:sp500"]
    # the Job's deadline, in seconds
    assert command.deadline_s == 600.0
    # a parameter without a value is named
    with pytest.raises(ConfigError, match="references 'x', which has no value"):
        experiment.trial_command(BASE, {})


def test_fixed_flags_are_read_and_set_in_the_template():
    doc = copy.deepcopy(BASE)
    assert experiment.fixed_flag(doc, "epochs") == "4"
    assert experiment.fixed_flag(doc, "data") is None
    experiment.set_fixed_flag(doc, "data", "sample:sp500")
    # every trial now runs with the flag
    assert experiment.trial_command(doc, {"x": "1"}).argv[-1] == "--data=sample:sp500"
    with pytest.raises(ConfigError, match="no container named 'other'"):
        experiment.primary_container(doc["spec"]["trialTemplate"]["trialSpec"], "other")


def test_a_configmap_template_is_one_line_naming_where_it_lives(tmp_path, capsys):
    # Katib fetches spec.trialTemplate.configMap from the cluster (katib pkg/controller.v1beta1/experiment/manifest/
    # generator.go:200-221); the engine cannot: one line, not a KeyError: 'trialSpec' traceback
    doc = copy.deepcopy(BASE)
    template = doc["spec"]["trialTemplate"]
    template.pop("trialSpec")
    template["configMap"] = {"configMapName": "trial-templates", "configMapNamespace": "kubeflow",
                             "templatePath": "job.yaml"}
    template.update(successCondition="status.succeeded > 0", failureCondition="status.failed > 0")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["tune", str(path), "--state-dir", str(tmp_path / "state"), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kubeflow/trial-templates" in err and "inline it" in err, err


@pytest.mark.parametrize("api_version, kind", [
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"), ("kubeflow.org/v1", "PyTorchJob"), ("kubeflow.org/v1", "MPIJob"),
    ("argoproj.io/v1alpha1", "Workflow"),
])
def test_a_trial_kind_other_than_job_is_refused_for_what_it_is(api_version, kind):
    # Katib runs the kinds of its trialResources (katib pkg/controller.v1beta1/trial/trial_controller.go:103-106); the
    # engine runs a Job's container: the reason is the kind, not a missing container
    doc = copy.deepcopy(BASE)
    doc["spec"]["trialTemplate"]["trialSpec"].update(apiVersion=api_version, kind=kind)
    with pytest.raises(ConfigError, match=f"trial kind {api_version}/{kind}: the local engine runs batch/v1 Job"):
        experiment.trial_command(doc, {"x": "0.5"})
