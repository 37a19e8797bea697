"""The embedded engine against scripted trial processes whose outcomes are known in advance."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo_lib import cli
from hpo_lib import engine
from hpo_lib.results import render
from hpo_lib.errors import ConfigError

SCRIPT = Path(__file__).parents[1] / "fixtures" / "scripted_trial.py"

BASE = {
    "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
    "metadata": {"name": "scripted", "namespace": "local"},
    "spec": {
        "objective": {"type": "minimize", "objectiveMetricName": "val_loss", "additionalMetricNames": ["val_rmse"],
                      "metricStrategies": [{"name": "val_loss", "value": "min"}, {"name": "val_rmse", "value": "min"}]},
        "algorithm": {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "7"}]},
        "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "2"}]},
        "parallelTrialCount": 1, "maxTrialCount": 3, "maxFailedTrialCount": 3,
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "parameters": [{"name": "x", "parameterType": "double",
                        "feasibleSpace": {"min": "0.0", "max": "1.0", "distribution": "uniform"}}],
        "trialTemplate": {
            "primaryContainerName": "training",
            "trialParameters": [{"name": "x", "description": "a knob", "reference": "x"}],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {
                "backoffLimit": 0, "activeDeadlineSeconds": 600,
                "template": {"metadata": {"labels": {"sidecar.istio.io/inject": "false"}}, "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "training", "image": "local/scripted:1", "command": ["python"],
                                    "args": [str(SCRIPT), "--x=${trialParameters.x}", "--epochs=4"]}]}}}},
        },
    },
}


def manifest(tmp_path: Path, **spec_changes) -> Path:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec_changes)
    doc["spec"]["maxFailedTrialCount"] = min(doc["spec"]["maxFailedTrialCount"], doc["spec"]["maxTrialCount"])
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def options(tmp_path: Path, **overrides) -> engine.TuneOptions:
    return engine.TuneOptions(overrides=overrides, state_dir=tmp_path / "state", tracking=False)


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials()]


def test_medianstop_stops_a_trial_worse_than_the_mean_at_start_step(tmp_path):
    # levels 1 and 3 succeed (threshold = mean 2.0); the third at 5 is stopped at its 2nd report
    study = engine.run(manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[2].user_attrs["epochs_run"] == 2
    # the objective is extracted with the manifest's strategy (min), additional metrics kept as Katib does
    assert study.trials[1].value == 3.0
    assert study.trials[1].user_attrs["observation"]["val_rmse"] == {"min": 6.0, "max": 6.0, "latest": 6.0}


def test_mean_not_median_decides(tmp_path):
    # completed levels 1, 1, 7: median 1 would stop a trial at 2.5, Katib's mean 3 lets it finish
    path = manifest(tmp_path, maxTrialCount=4, earlyStopping={"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "2"}]})
    study = engine.run(path, options(tmp_path, curves="1,1,7,2.5"))
    assert states(study)[3] == TrialState.COMPLETE


@pytest.mark.parametrize("mode, reason", [
    ("crash", "exited with code 3"),
    ("nometric", "never printed the objective val_loss"),
    ("nan", "printed as ''"),
])
def test_failed_trials_keep_their_output_and_the_study_goes_on(tmp_path, mode, reason):
    study = engine.run(manifest(tmp_path, maxTrialCount=2), options(tmp_path, mode=mode))
    # each trial fails with its reason and output tail; the budget still runs to the end
    assert states(study) == [TrialState.FAIL, TrialState.FAIL]
    assert reason in study.trials[0].user_attrs["fail_reason"]
    if mode == "crash":
        assert "simulated crash" in study.trials[0].user_attrs["output_tail"]


def test_max_failed_trial_count_stops_the_study(tmp_path):
    study = engine.run(manifest(tmp_path, maxTrialCount=5, maxFailedTrialCount=2), options(tmp_path, mode="crash"))
    assert states(study) == [TrialState.FAIL, TrialState.FAIL]


def test_hanging_trial_is_ended_at_its_deadline(tmp_path):
    opts = options(tmp_path, mode="hang")
    opts.trial_timeout_s = 1.5
    study = engine.run(manifest(tmp_path, maxTrialCount=1), opts)
    assert states(study) == [TrialState.FAIL]
    assert "deadline" in study.trials[0].user_attrs["fail_reason"]


def test_resume_keeps_finished_trials_and_fails_interrupted_ones(tmp_path):
    path = manifest(tmp_path, maxTrialCount=2)
    engine.run(path, options(tmp_path, curves="1"))
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    killed = optuna.load_study(study_name="local.scripted", storage=storage)
    killed.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # a trial a kill -9 left RUNNING
    resumed = engine.run(manifest(tmp_path, maxTrialCount=4), options(tmp_path, curves="1"))
    # the two finished trials are still there, the orphan is failed, the budget is filled up
    assert states(resumed) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


def test_two_parallel_trials_on_sqlite(tmp_path):
    study = engine.run(manifest(tmp_path, maxTrialCount=4, parallelTrialCount=2), options(tmp_path, curves="1"))
    assert states(study) == [TrialState.COMPLETE] * 4


def test_export_has_katib_trial_shape(tmp_path):
    study = engine.run(manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    json_path, csv_path = render.export(study, tmp_path / "export")
    records = json.loads(json_path.read_text())
    # like Trial CRs: parameterAssignments and observation.metrics with string min/max/latest
    assert [r["condition"] for r in records] == ["Succeeded", "Succeeded", "EarlyStopped"]
    assert records[1]["observation"]["metrics"][0] == {"name": "val_loss", "min": "3.0", "max": "3.0",
                                                       "latest": "3.0"}
    assert records[0]["parameterAssignments"][0]["name"] == "x"
    assert csv_path.read_text().splitlines()[0].startswith("name,condition,epochs_run,x,")


@pytest.mark.parametrize("change, message", [
    ({"algorithm": {"algorithmName": "bayesianoptimization"}}, "not served by Katib's Optuna service"),
    ({"parallelTrialCount": 9}, "W-CNT"),
    ({"algorithm": {"algorithmName": "multivariate-tpe", "algorithmSettings": [{"name": "foo", "value": "1"}]}},
     "setting 'foo' is unknown to multivariate-tpe"),
])
def test_invalid_manifests_are_refused_with_the_rule(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        engine.run(manifest(tmp_path, **change), options(tmp_path))


def test_tune_command_prints_a_leaderboard(tmp_path, capsys):
    code = cli.main(["tune", str(manifest(tmp_path)), "--set", "curves=1,3,5", "--state-dir", str(tmp_path / "s"),
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "2 succeeded, 1 early-stopped, 0 failed" in out and "#1 trial 0: objective 1" in out
    assert cli.main(["tune", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("pruner, kind", [("hyperband", optuna.pruners.HyperbandPruner),
                                          ("optuna-median", optuna.pruners.MedianPruner),
                                          ("none", optuna.pruners.NopPruner)])
def test_local_pruners_run_on_a_manifest_with_medianstop_settings(tmp_path, pruner, kind):
    opts = options(tmp_path, curves="1,3,5")
    opts.pruner = pruner
    study = engine.run(manifest(tmp_path), opts)
    assert isinstance(study.pruner, kind) and len(study.trials) == 3
