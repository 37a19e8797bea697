"""The engine's laptop features: MLflow tracking, multi-objective studies, results, reports, dashboard, faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from hpo_lib import cli
from hpo_lib import engine
from hpo_lib.engine import pruners
from hpo_lib.katib import experiment as katib_experiment
from hpo_lib.results import render
from hpo_lib.errors import ConfigError
from tests.conftest import free_port
from tests.engine.test_study import BASE, manifest, options, states

MULTI = {"katib-hpo.io/objectives": "val_loss:minimize, val_rmse:maximize"}


def multi_manifest(tmp_path, annotation=MULTI["katib-hpo.io/objectives"], **spec):
    path = manifest(tmp_path, **spec)
    doc = __import__("yaml").safe_load(path.read_text())
    doc["metadata"]["annotations"] = {"katib-hpo.io/objectives": annotation}
    path.write_text(__import__("yaml").safe_dump(doc))
    return path


# ------------------------------------------------------------------------------------------------ tracking
def _client(uri):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def test_study_is_a_parent_run_and_each_trial_a_nested_run(tmp_path):
    opts = options(tmp_path, curves="1,3,5")
    opts.tracking = True
    study = engine.run(manifest(tmp_path), opts)
    client = _client(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("scripted")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("hpo.kind") == "study"]
    children = sorted((r for r in runs if r.data.tags.get("hpo.kind") == "trial"),
                      key=lambda r: int(r.data.tags["hpo.trial_number"]))
    assert len(parent) == 1 and len(children) == 3
    assert parent[0].info.status == "FINISHED" and parent[0].data.metrics["trials_complete"] == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent[0].info.run_id}
    # state, parameters and the per-epoch curve; the early-stopped trial is KILLED after its 2 reports
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "KILLED"]
    assert children[0].data.params["x"] == repr(study.trials[0].params["x"])
    history = client.get_metric_history(children[1].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 3.0), (2, 3.0), (3, 3.0)]
    assert len(client.get_metric_history(children[2].info.run_id, "val_loss")) == 2
    # a resumed study keeps its parent run
    opts.max_trials = 4
    engine.run(manifest(tmp_path), opts)
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get("hpo.kind") == "study"]) == 1
    assert len([r for r in runs if r.data.tags.get("hpo.kind") == "trial"]) == 4


def test_failed_trial_run_keeps_its_output_tail(tmp_path):
    opts = options(tmp_path, mode="crash")
    opts.tracking = True
    engine.run(manifest(tmp_path, maxTrialCount=1), opts)
    client = _client(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    run = [r for r in client.search_runs([client.get_experiment_by_name("scripted").experiment_id])
           if r.data.tags.get("hpo.kind") == "trial"][0]
    assert run.info.status == "FAILED"
    tail = client.download_artifacts(run.info.run_id, "output_tail.txt", str(tmp_path))
    assert "simulated crash" in open(tail).read()


def test_unreachable_tracking_server_is_one_clear_error_before_any_trial(tmp_path):
    opts = options(tmp_path)
    opts.tracking, opts.tracking_uri = True, "http://127.0.0.1:9"  # discard port: nothing listens
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        with pytest.raises(ConfigError, match="MLflow tracking at http://127.0.0.1:9 is not usable"):
            engine.run(manifest(tmp_path), opts)
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


# ------------------------------------------------------------------------------------------------ objectives
def test_objectives_annotation_adds_objectives_after_katibs():
    doc = {"metadata": {"annotations": MULTI}, "spec": BASE["spec"]}
    assert [(o.metric, o.direction, o.strategy) for o in katib_experiment.objectives(doc)] == [
        ("val_loss", "minimize", "min"), ("val_rmse", "maximize", "min")]
    assert len(katib_experiment.objectives({"metadata": {}, "spec": BASE["spec"]})) == 1


@pytest.mark.parametrize("annotation, message", [
    ("train_time_s:minimize", "not in additionalMetricNames"),
    ("val_loss:maximize", "which the manifest says to minimize"),
    ("val_rmse", "is not METRIC:minimize"),
    ("val_rmse:minimize,val_rmse:maximize", "listed twice"),
])
def test_bad_objectives_annotation_is_refused(annotation, message):
    doc = {"metadata": {"annotations": {"katib-hpo.io/objectives": annotation}}, "spec": BASE["spec"]}
    with pytest.raises(ConfigError, match=message):
        katib_experiment.objectives(doc)


def test_multi_objective_study_reports_the_pareto_front_and_keeps_katibs_medianstop(tmp_path, capsys):
    study = engine.run(multi_manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    assert len(study.directions) == 2
    # Katib's rule still applies to the first objective: threshold mean(1, 3) = 2, the level-5 trial stops
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[2].user_attrs["epochs_run"] == 2
    # (val_loss min, val_rmse max): level 1 = (1, 2) and level 3 = (3, 6) trade off, so both are on the front
    assert sorted(t.values for t in study.best_trials) == [[1.0, 2.0], [3.0, 6.0]]
    board = render.leaderboard(study)
    assert "Pareto front (2 trials)" in board and "objective (1, 2)" in board


def test_multi_objective_refuses_a_pruner_optuna_cannot_apply(tmp_path):
    opts = options(tmp_path)
    opts.pruner = "hyperband"
    with pytest.raises(ConfigError, match="cannot prune multi-objective"):
        engine.run(multi_manifest(tmp_path), opts)


def test_nsga2_runs_a_multi_objective_study(tmp_path):
    opts = options(tmp_path, curves="1,2")
    opts.mo_sampler = "nsga2"
    study = engine.run(multi_manifest(tmp_path, maxTrialCount=2), opts)
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)
    assert states(study) == [TrialState.COMPLETE] * 2


def test_medianstop_curve_rule_matches_the_pruner():
    curves = [[1.0, 1.0, 0.5], [3.0, 3.0]]
    assert pruners.medianstop_threshold(curves, 2, 2) == 2.0
    assert pruners.medianstop_threshold(curves, 3, 2) is None
    minimize = optuna.study.StudyDirection.MINIMIZE
    assert pruners.medianstop_stops([5.0, 2.5], 2.0, 2, minimize)
    assert not pruners.medianstop_stops([5.0, 2.0], 2.0, 2, minimize)  # equal does not stop
    assert not pruners.medianstop_stops([5.0], 2.0, 2, minimize)


# ------------------------------------------------------------------------------------------------ commands
def test_results_report_commands(tmp_path, capsys):
    path = manifest(tmp_path, maxTrialCount=4)
    state = str(tmp_path / "state")
    engine.run(path, options(tmp_path, curves="1,3,5,2"))
    capsys.readouterr()
    assert cli.main(["results", str(path), "--state-dir", state, "--output", str(tmp_path / "out"), "--top",
                     "2"]) == 0
    out = capsys.readouterr().out
    assert "top 2 by the objective" in out and "early stopping saved 2 epochs (" in out
    records = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [r["condition"] for r in records] == ["Succeeded", "Succeeded", "EarlyStopped", "Succeeded"]
    assert cli.main(["report", str(path), "--state-dir", state]) == 0
    written = capsys.readouterr().out.split()
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"history.png", "learning_curves.png", "importances.png", "slice.png", "report.html"} <= names
    assert all(os.path.getsize(p) > 1000 for p in written)
    assert "<h1>local.scripted</h1>" in (tmp_path / "state" / "local.scripted" / "report" / "report.html").read_text()


def test_results_without_a_study_is_one_clear_error(tmp_path, capsys):
    assert cli.main(["results", str(manifest(tmp_path)), "--state-dir", str(tmp_path / "none")]) == 2
    assert "run `hpo tune" in capsys.readouterr().err


def test_report_of_a_multi_objective_study_has_a_pareto_front(tmp_path):
    from hpo_lib.results import plots

    study = engine.run(multi_manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    written = plots.write_report(study, tmp_path / "r", objective_name="val_loss", html_page=False)
    assert "pareto_front.png" in {p.name for p in written}


def test_dashboard_serves_the_local_studies(tmp_path):
    engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path))
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpo_lib.cli", "dashboard", "--state-dir",
                                str(tmp_path / "state"), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(process.stdout.read().decode() if process.poll() is not None else
                                         "dashboard did not answer within 60 s")
                time.sleep(0.5)
        assert [s["study_name"] for s in body["study_summaries"]] == ["local.scripted"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ faults
def test_unwritable_storage_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    opts = options(tmp_path)
    opts.storage = f"sqlite:///{blocker / 'studies.db'}"
    with pytest.raises(ConfigError, match="cannot open study storage"):
        engine.run(manifest(tmp_path), opts)


def test_locked_storage_is_one_clear_error(tmp_path):
    path = manifest(tmp_path)
    engine.run(path, options(tmp_path, curves="1"))  # the database exists with the study in it
    holder = sqlite3.connect(tmp_path / "state" / "studies.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        opts = options(tmp_path)
        opts.max_trials = 5
        with pytest.raises(ConfigError, match="locked"):
            engine.run(path, opts)
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.e2e
def test_kill_9_of_the_engine_loses_no_finished_trial(tmp_path):
    path = manifest(tmp_path, maxTrialCount=6)
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(state), "--no-progress",
            "--no-tracking", "--set", "curves=1", "--set", "sleep=0.4"]
    engine_process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = f"sqlite:///{state / 'studies.db'}"
    deadline = time.monotonic() + 120
    while True:  # wait until two trials finished and a third is running
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
        except (KeyError, Exception):  # noqa: BLE001 - the study may not exist yet
            trials = []
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and any(
                t.state == TrialState.RUNNING for t in trials):
            break
        assert time.monotonic() < deadline, "the engine did not get two trials done in 120 s"
    engine_process.send_signal(signal.SIGKILL)
    engine_process.wait()
    done_before = [t.number for t in optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
                   if t.state == TrialState.COMPLETE]
    resumed = engine.run(path, options(tmp_path, curves="1"))
    after = resumed.get_trials()
    # every finished trial is still there, the one the kill cut short is failed, and the budget is filled up
    assert all(after[n].state == TrialState.COMPLETE for n in done_before)
    assert [t.state for t in after].count(TrialState.FAIL) == 1
    records = render.trial_records(resumed)
    assert [r["failReason"] for r in records if r["condition"] == "Failed"] == [
        "interrupted: the engine running it was killed"]
    assert sum(t.state == TrialState.COMPLETE for t in after) == 5 and len(after) == 6


@pytest.mark.e2e
def test_ctrl_c_terminates_running_trials_and_keeps_the_study(tmp_path):
    path = manifest(tmp_path, maxTrialCount=4)
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(state), "--no-progress",
            "--no-tracking", "--set", "curves=1", "--set", "sleep=0.4"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{state / 'studies.db'}"
    deadline = time.monotonic() + 120
    while True:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
        except Exception:  # noqa: BLE001 - not created yet
            trials = []
        if any(t.state == TrialState.COMPLETE for t in trials) and any(t.state == TrialState.RUNNING for t in trials):
            break
        assert time.monotonic() < deadline, "no trial finished in 120 s"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err
    after = optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
    # nothing is left RUNNING: the trial that was cut short is failed with the reason, finished ones stay
    assert TrialState.RUNNING not in [t.state for t in after]
    assert [t.user_attrs.get("fail_reason") for t in after if t.state == TrialState.FAIL] == [
        "interrupted (Ctrl-C)"]
    assert json.loads((state / "local.scripted" / "trials.json").read_text())  # the export was written too
