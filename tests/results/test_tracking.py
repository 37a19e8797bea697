"""Every MLflow write: runs that end in one place, the engine's study and trial runs, the pipeline's retrains."""

from __future__ import annotations

import contextlib
import subprocess
import warnings

import pytest
import torch

from hpo_lib import engine
from hpo_lib.errors import ConfigError, TrackingError
from hpo_lib.results import retrain_tracking, tracking
from tests.conftest import ROOT, manifest, options


def mlflow_client(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy deprecation noise from MLflow's store
        from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def store(tmp_path):
    """A real local MLflow store (SQLite, artifacts beside it) with one experiment: (client, experiment id)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    return client, tracking.experiment_id(client, uri, "runs", artifact_root=tmp_path / "mlartifacts")


# ------------------------------------------------------------------------------------------------ run()
def test_a_run_whose_block_finishes_ends_finished(store):
    client, experiment = store
    with tracking.run(client, experiment, name="ok", tags={"hpo.kind": "test"}) as run_id:
        # inside the block the run is open, with its name and tags
        opened = client.get_run(run_id)
        assert opened.info.status == "RUNNING" and opened.info.run_name == "ok"
        assert opened.data.tags["hpo.kind"] == "test"
    # the block ended: FINISHED
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("error", [RuntimeError("write failed"), KeyboardInterrupt()])
def test_a_run_whose_block_raises_ends_failed_and_the_error_propagates(store, error):
    client, experiment = store
    opened = []
    # the block's own exception comes out of the with statement unchanged
    with pytest.raises(type(error)) as raised:
        with tracking.run(client, experiment, name="broken", tags={}) as run_id:
            opened.append(run_id)
            raise error
    assert raised.value is error
    # the run is not left RUNNING: FAILED
    assert client.get_run(opened[0]).info.status == "FAILED"


def test_a_failing_status_write_does_not_hide_the_blocks_error(store):
    client, experiment = store

    class Refusing:  # the real client, except that ending a run fails
        def __getattr__(self, name):
            return getattr(client, name)

        def set_terminated(self, run_id, status=None):
            raise OSError("store went away")

    # the block's error reaches the caller, not the failed status write
    with pytest.raises(ValueError, match="the block's error"):
        with tracking.run(Refusing(), experiment, name="r", tags={}):
            raise ValueError("the block's error")


# ------------------------------------------------------------------------------------------------ retrains
def _retrain(run_id: str, artifact) -> dict:
    return {"id": run_id, "tags": {"hpo.kind": "retrain-run"}, "params": {"lr": "0.01"},
            "curves": [("val_loss", 1.0, 1), ("val_loss", 0.5, 2)], "metrics": {"test_rmse": 0.3},
            "dicts": {"evaluation.json": {"rmse": 0.3}}, "artifacts": [artifact], "model": torch.nn.Linear(1, 1),
            "champion": True}


def test_a_failed_retrain_write_leaves_no_run_running_and_is_one_tracking_error(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = {"name": "retrain-x", "tags": {"hpo.kind": "retrain"}, "metrics": {"n_trials": 3.0},
              "texts": {"report.md": "# report"}, "dicts": {"summary.json": {}}}
    missing = tmp_path / "no-such-folder" / "forecasts.csv"  # the write that fails mid-way
    # one TrackingError naming the store, saying the results are kept
    with pytest.raises(TrackingError, match=f"MLflow at {uri} failed") as raised:
        retrain_tracking.log_retrains(uri, experiment_name="x", parent=parent, runs=[_retrain("r-0", missing)],
                              register_as="x-model", model_tags={}, code_path=str(tmp_path), requirements=[])
    assert "the retrain results are still in the pipeline's artifacts" in str(raised.value)
    client = mlflow_client(uri)
    runs = client.search_runs([client.get_experiment_by_name("x").experiment_id])
    by_kind = {r.data.tags["hpo.kind"]: r for r in runs}
    # the parent and the retrain run it had opened both end FAILED: nothing is left RUNNING
    assert sorted(by_kind) == ["retrain", "retrain-run"]
    assert {r.info.status for r in runs} == {"FAILED"}
    # the retrain run is the parent's child, and the parent got none of its end-of-run writes
    assert by_kind["retrain-run"].data.tags["mlflow.parentRunId"] == by_kind["retrain"].info.run_id
    assert "hpo.registered" not in by_kind["retrain"].data.tags


class _FailingWrites:
    """The real client, except that the named writes raise (the run's status writes still work)."""

    def __init__(self, client, *failing: str) -> None:
        self.client, self.failing = client, failing

    def __getattr__(self, name):
        if name in self.failing:
            def refuse(*args, **kwargs):
                raise OSError(f"{name} failed")
            return refuse
        return getattr(self.client, name)


def test_a_failed_write_to_a_study_or_trial_run_leaves_no_run_running(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.StudyTracker(uri, "x", artifact_root=tmp_path / "mlartifacts")
    real = tracker.client
    # the study's parameters cannot be written: the error comes out, and the new parent run ends FAILED
    tracker.client = _FailingWrites(real, "log_batch")
    with pytest.raises(OSError, match="log_batch failed"):
        tracker.open_study("local.x", {}, params={"algorithm": "tpe"})
    assert real.get_run(tracker.parent_run_id).info.status == "FAILED"
    # a trial whose output tail cannot be written: its nested run ends FAILED, not RUNNING
    tracker.client = real
    tracker.open_study("local.x", {}, params={})
    tracker.client = _FailingWrites(real, "log_text")
    with pytest.raises(OSError, match="log_text failed"):
        tracker.log_trial(number=0, name="t0", condition="Succeeded", params={}, curves={"val_loss": [1.0]},
                          tags={}, output_tail="last lines")
    (trial_run,) = [r for r in real.search_runs([tracker.experiment_id]) if r.data.tags.get("hpo.kind") == "trial"]
    assert trial_run.info.status == "FAILED"
    # closing the study when its leaderboard cannot be written: the parent run ends FAILED too
    with pytest.raises(OSError, match="log_text failed"):
        tracker.close_study({"trials_complete": 1.0}, "leaderboard")
    assert real.get_run(tracker.parent_run_id).info.status == "FAILED"
    # nothing this tracker created is left RUNNING
    assert {r.info.status for r in real.search_runs([tracker.experiment_id])} == {"FAILED"}


# ------------------------------------------------------------------------------------------------ local studies
def _runs(tmp_path, kind: str):
    client = mlflow_client(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("scripted").experiment_id])
    return client, sorted((r for r in runs if r.data.tags.get("hpo.kind") == kind),
                          key=lambda r: int(r.data.tags.get("hpo.trial_number", 0)))


def test_study_is_a_parent_run_and_each_trial_a_nested_run(tmp_path):
    opts = options(tmp_path, curves="1,3,5")
    opts.tracking = True
    study = engine.run(manifest(tmp_path), opts)
    client, parents = _runs(tmp_path, "study")
    _, children = _runs(tmp_path, "trial")
    # one finished parent run with the summary, and a nested run per trial
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["trials_complete"] == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    # state, parameters and the per-epoch curve; the early-stopped trial is KILLED after its 2 reports
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "KILLED"]
    assert children[0].data.params["x"] == repr(study.trials[0].params["x"])
    # the trial command's fixed flags are params too (the manifest's --epochs, the override's --curves), and the
    # run carries the git commit of this checkout (MLflow's own provider asks about the git-ignored `hpo` script)
    assert children[0].data.params["epochs"] == "4" and children[0].data.params["curves"] == "1,3,5"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert {r.data.tags.get("mlflow.source.git.commit") for r in [*parents, *children]} == {head.stdout.strip()}
    # optuna-dashboard names the objective by its metric, not "Objective 0"
    assert study.metric_names == ["val_loss"]
    history = client.get_metric_history(children[1].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 3.0), (2, 3.0), (3, 3.0)]
    assert len(client.get_metric_history(children[2].info.run_id, "val_loss")) == 2
    opts.max_trials = 4
    engine.run(manifest(tmp_path), opts)
    # a resumed study keeps its parent run and adds the new trial under it
    assert len(_runs(tmp_path, "study")[1]) == 1
    assert len(_runs(tmp_path, "trial")[1]) == 4


def test_failed_trial_run_keeps_its_output_tail(tmp_path):
    opts = options(tmp_path, mode="crash")
    opts.tracking = True
    from hpo_lib.errors import ExperimentFailed

    with contextlib.suppress(ExperimentFailed):  # a study whose every trial failed ends non-zero, tracked first
        engine.run(manifest(tmp_path, maxTrialCount=1, maxFailedTrialCount=None), opts)
    client, (run,) = _runs(tmp_path, "trial")
    # the failed trial's run is FAILED and carries the trial's output tail
    assert run.info.status == "FAILED"
    tail = client.download_artifacts(run.info.run_id, "output_tail.txt", str(tmp_path))
    assert "simulated crash" in open(tail).read()


def test_unreachable_tracking_server_is_one_clear_error_before_any_trial(tmp_path, monkeypatch):
    opts = options(tmp_path)
    opts.tracking, opts.tracking_uri = True, "http://127.0.0.1:9"  # discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # one ConfigError naming the URI, raised before any trial started
    with pytest.raises(ConfigError, match="MLflow tracking at http://127.0.0.1:9 is not usable"):
        engine.run(manifest(tmp_path), opts)
    assert not (tmp_path / "state" / "local.scripted").exists()


def test_an_unreachable_server_is_named_within_seconds_without_touching_mlflow_retries(tmp_path, monkeypatch):
    import time

    from tests.conftest import free_port

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # MLflow's own minutes of retries
    uri = f"http://ana:s3cret@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        tracking.StudyTracker(uri, "x")
    # the probe answers in seconds (two attempts of 2 s at most), not MLflow's 255 s
    assert time.monotonic() - started < 6
    message = str(caught.value)
    # the line names the URI with its password redacted, and the fix
    assert "MLflow tracking at http://ana:***@127.0.0.1:" in message and "s3cret" not in message
    assert "the server does not answer (ConnectionError" in message and "start the server" in message
    assert caught.value.settings == ("tracking_uri", "no_tracking")


def test_the_source_tag_and_params_carry_no_password(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.StudyTracker(uri, "x", artifact_root=tmp_path / "mlartifacts")
    argv = ["hpo", "tune", "m.yaml", "--storage", "postgresql://ana:s3cret@db/optuna", "--set",
            "data=yahoo:SPY,token=abc123"]
    run_id = tracker.open_study("local.x", {}, params={"storage": "postgresql://ana:s3cret@db/optuna"}, argv=argv)
    run = tracker.client.get_run(run_id)
    # the command line is recorded, redacted, beside MLflow's own source tags; the parameter is redacted too
    assert run.data.tags["hpo.command"] == (
        "hpo tune m.yaml --storage postgresql://ana:***@db/optuna --set data=yahoo:SPY,token=***"
    )
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and "mlflow.user" in run.data.tags
    assert run.data.params["storage"] == "postgresql://ana:***@db/optuna"
    tracker.log_trial(number=0, name="t0", condition="Failed", params={}, curves={},
                      tags={"hpo.argv": "--tracking-uri=http://u:pw@h"}, output_tail="at http://u:pw@h")
    (child,) = [r for r in tracker.client.search_runs([tracker.experiment_id]) if r.info.run_id != run_id]
    # a trial's tags are redacted as well
    assert child.data.tags["hpo.argv"] == "--tracking-uri=http://u:***@h"


def test_an_experiment_carries_mlflows_type_tag_new_or_old(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    old = client.create_experiment("made-by-an-earlier-version")
    # a new experiment is typed at creation, one made before this version when it is first used
    for name in ("new", "made-by-an-earlier-version"):
        exp = client.get_experiment(tracking.experiment_id(client, uri, name, artifact_root=tmp_path / "a"))
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_trial_run_has_every_flag_under_its_katib_name_and_its_data_set(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.StudyTracker(uri, "x", artifact_root=tmp_path / "mlartifacts")
    tracker.open_study("local.x", {}, params={})
    flags = ["python", "-m", "hpo_lib.trial", "--model=lstm", "--data=sample:sp500", "--epochs=5",
             "--batch-size=64", "--output-dir=/tmp/t0", "--lr=0.1"]
    run_id = tracker.log_trial(number=0, name="t0", condition="Succeeded", params={"lr": "0.001"},
                               curves={"val_loss": [1.0]}, tags={}, flags=flags)
    run = tracker.client.get_run(run_id)
    # fixed flags and assignments under the flag (Katib) names; the assignment wins; no per-run output folder
    assert run.data.params == {"model": "lstm", "data": "sample:sp500", "epochs": "5", "batch-size": "64",
                               "lr": "0.001"}
    # the data set is the run's training input, named by its spec
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == "sample:sp500" and data_input.dataset.source_type == "katib-hpo"
    assert [(t.key, t.value) for t in data_input.tags] == [("mlflow.data.context", "training")]


def test_flag_params_reads_katib_style_flags():
    # --name=value pairs by name; a bare flag is true; the last repeat wins; positional words are not flags
    assert tracking.flag_params(["python", "--a=1", "--b", "--a=2", "x", "--output-dir=o"]) == {"a": "2", "b": "true"}


class RacingClient:
    """A real client whose first ``log_inputs``/``create_experiment`` loses a race: another writer stores the same
    row first (for real, through the real client) and this call then fails on the store's unique key, as parallel
    retrains logging one data set to one experiment do."""

    def __init__(self, client, other_run_id: str | None = None) -> None:
        self.client, self.other_run_id, self.calls = client, other_run_id, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def log_inputs(self, run_id, datasets):
        self.calls += 1
        if self.calls == 1:
            self.client.log_inputs(self.other_run_id, datasets=datasets)
            raise RuntimeError("UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest")
        self.client.log_inputs(run_id, datasets=datasets)

    def get_experiment_by_name(self, name):
        self.calls += 1
        return None if self.calls == 1 else self.client.get_experiment_by_name(name)  # not there yet, then there

    def create_experiment(self, name, **kwargs):
        self.client.create_experiment(name, **kwargs)
        raise RuntimeError(f"RESOURCE_ALREADY_EXISTS: Experiment '{name}' already exists.")


def test_two_runs_logging_one_new_data_set_at_once_both_get_it(store):
    client, exp = store
    first, second = (client.create_run(exp, run_name=name).info.run_id for name in ("first", "second"))
    racing = RacingClient(client, other_run_id=first)
    tracking.log_inputs(racing, second, [tracking.dataset_input("sample:sp500")])
    assert racing.calls == 2  # lost the race once, then linked the stored data set
    for run_id in (first, second):
        (data_input,) = client.get_run(run_id).inputs.dataset_inputs
        assert data_input.dataset.name == "sample:sp500"


def test_an_input_error_that_is_no_race_is_raised_at_once(store):
    client, exp = store
    run_id = client.create_run(exp, run_name="r").info.run_id

    class Broken(RacingClient):
        def log_inputs(self, run_id, datasets):
            self.calls += 1
            raise RuntimeError("INVALID_PARAMETER_VALUE: dataset too large")

    broken = Broken(client)
    with pytest.raises(RuntimeError, match="too large"):
        tracking.log_inputs(broken, run_id, [tracking.dataset_input("sample:sp500")])
    assert broken.calls == 1


def test_an_experiment_another_writer_creates_at_the_same_moment_is_used_not_an_error(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = tracking.experiment_id(RacingClient(client), uri, "raced", artifact_root=tmp_path / "a")
    assert client.get_experiment(exp).name == "raced"
