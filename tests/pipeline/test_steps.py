"""The KFP pipeline: compiled YAML, each step's logic (refit data, retrain, test evaluation, backtest, tune modes,
winners, summary, MLflow), the bad inputs, and one end-to-end local run against a real MLflow server."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hpo_lib import cli, data
from hpo_lib.data import scoring
from hpo_lib.katib import client as katib_client
from hpo_lib.katib import manifests
from hpo_lib.pipeline import steps
from hpo_lib.pipeline import retrain
from hpo_lib.results import render
from hpo_lib.errors import ConfigError, DataError, TrackingError
from hpo_lib.results import tracking
from tests.conftest import FIXTURES, ROOT, FakeApi, ar1_returns, fixture, free_port, prices_from_returns


def load_definition():
    spec = importlib.util.spec_from_file_location("katib_hpo_under_test", ROOT / "pipelines" / "katib_hpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------- compiled YAML
@pytest.mark.parametrize("caching_env", [None, "true"])
def test_committed_pipeline_yaml_is_fresh(tmp_path, monkeypatch, caching_env):
    # the env var that flips kfp's default caching must not change the output (every task sets caching itself)
    if caching_env is None:
        monkeypatch.delenv("KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT", raising=False)
    else:
        monkeypatch.setenv("KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT", caching_env)
    definition = load_definition()
    fresh = definition.compile_pipeline(tmp_path / "pipeline.yaml").read_text()
    assert fresh == definition.COMPILED.read_text(), "pipelines/katib_hpo_pipeline.yaml is stale: run " \
                                                     "`hpo pipeline compile` and commit it"


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "pipelines" / "katib_hpo_pipeline.yaml").read_text()))


def test_retrains_fan_out_over_the_winners_each_on_a_gpu(compiled):
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    resources = executors["exec-retrain"]["container"]["resources"]
    # one NVIDIA GPU per retrain (type and count: a count alone requests nothing)
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    # tolerate the GPU nodes' taint
    tolerations = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-retrain"]["tolerations"]
    assert tolerations == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    # the retrain runs inside a ParallelFor over the select step's list of items
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--select-winners-Output"
    assert "retrain" in spec["components"]["comp-for-loop-1"]["dag"]["tasks"]


def test_every_component_runs_on_the_trial_image_without_installing_anything(compiled):
    spec, _ = compiled
    # the image is a pipeline parameter whose default is the trial image (point it at your registry's build)
    image = spec["root"]["inputDefinitions"]["parameters"]["image"]
    assert image["defaultValue"] == f"{manifests.IMAGE}:{manifests.IMAGE_TAG}"
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        # every step runs on it; install_kfp_package=False: no pip at run time
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
        assert "pip install" not in " ".join(container["command"]), name
        assert "from hpo_lib.pipeline import steps" in " ".join(container["command"]), name
    # nothing is served from cache: a Katib launch or a retrain must run every time
    tasks = {**spec["root"]["dag"]["tasks"], **spec["components"]["comp-for-loop-1"]["dag"]["tasks"]}
    assert {name: task["cachingOptions"] for name, task in tasks.items() if name != "for-loop-1"} == {
        name: {} for name in ("prepare-data", "tune", "select-winners", "retrain", "evaluate", "register")}


# ----------------------------------------------------------------------------------------------- refit data
def test_refit_trains_on_train_and_validation_and_keeps_the_test_split(sp500):
    tuned = data.prepare(sp500, window=30, split_window=60)
    refit = data.prepare(sp500, window=30, split_window=60, refit=True)
    # the test split is the same days
    np.testing.assert_array_equal(tuned.split.test, refit.split.test)
    # training now runs from the first training sample through the last validation sample
    assert refit.split.train[0] == tuned.split.train[0] and refit.split.train[-1] == tuned.split.val[-1]
    assert len(refit.split.train) == tuned.split.val[-1] - tuned.split.train[0] + 1
    # the rows the scaler sees end a full purge gap before the first test row
    first_test_row = tuned.split.test[0] - 60 + 1
    assert refit.split.train_rows[1] + refit.split.gap == first_test_row


def test_refit_scaler_never_sees_test_rows(sp500):
    ds = data.prepare(sp500, window=30, split_window=60, refit=True)
    frame = sp500["sp500"].copy()
    first_unused = frame.index.get_loc(ds.dates["train"][-1]) + 1 + ds.horizon  # after the last refit label
    frame.iloc[first_unused + 1:, :4] *= np.linspace(0.5, 3.0, len(frame) - first_unused - 1)[:, None]
    changed = data.prepare({"sp500": frame}, window=30, split_window=60, refit=True)
    # changing every row after the training labels leaves both scalers and the training windows unchanged
    np.testing.assert_array_equal(ds.feature_scaler.mean, changed.feature_scaler.mean)
    np.testing.assert_array_equal(ds.target_scaler.std, changed.target_scaler.std)
    np.testing.assert_array_equal(ds.x["train"], changed.x["train"])


# ----------------------------------------------------------------------------------------------- backtest
@pytest.mark.parametrize("positions, returns, cost_bps, total, turnover", [
    ([1, 1, 1], [0.01, 0.02, -0.01], 0, 1.01 * 1.02 * 0.99 - 1, 1 / 3),  # buy and hold: one entry
    ([1, 1, 1], [0.01, 0.02, -0.01], 10, 1.009 * 1.02 * 0.99 - 1, 1 / 3),  # entering costs 10 bp once
    ([1, -1, 1], [0.0, 0.0, 0.0], 5, 0.9995 * 0.999 * 0.999 - 1, 5 / 3),  # each flip trades 2 units
    ([0, 0, 0], [0.01, -0.02, 0.03], 5, 0.0, 0.0),  # never in the market: no return, no cost
])
def test_backtest_charges_costs_per_unit_traded(positions, returns, cost_bps, total, turnover):
    result = scoring.backtest(np.array(positions, float), np.array(returns), cost_bps=cost_bps)
    assert result.total_return == pytest.approx(total) and result.turnover == pytest.approx(turnover)


def test_backtest_risk_numbers():
    r = scoring.backtest(np.ones(4), np.array([0.1, -0.5, 0.2, 0.1]), cost_bps=0)
    # peak 1.1, trough 0.55: a 50% drawdown; 3 of 4 days up
    assert r.max_drawdown == pytest.approx(0.5) and r.win_rate == 0.75 and r.exposure == 1.0
    # returns that do not vary have no Sharpe ratio to speak of: 0, not a division by zero
    assert scoring.sharpe_ratio(np.full(5, 0.01)) == 0.0


def test_positions_follow_the_forecast_sign():
    assert scoring.positions_from_forecast(np.array([0.2, -0.1, 0.0])).tolist() == [1.0, -1.0, -1.0]
    assert scoring.positions_from_forecast(np.array([0.7, 0.3]), 0.5, long_only=True).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("positions, returns, cost, message", [
    ([1.0], [0.1, 0.2], 0, "equal length"), ([1.0], [np.nan], 0, "finite"), ([1.0], [0.1], -1, "cost_bps"),
    ([], [], 0, "at least one day"),
])
def test_backtest_refuses_bad_input(positions, returns, cost, message):
    with pytest.raises(DataError, match=message):
        scoring.backtest(np.array(positions), np.array(returns), cost_bps=cost)


# ----------------------------------------------------------------------------------------------- retrain
AR1_FLAGS = ["--model=mlp", "--hidden-size=16", "--num-layers=1", "--seq-len=5", "--split-window=10",
             "--epochs=60", "--lr=0.003", "--batch-size=128", "--optimizer=adam", "--threads=1"]


@pytest.fixture(scope="module")
def ar1_data(tmp_path_factory) -> Path:
    """Prices with a predictable next return, prepared the way the pipeline's first step does."""
    folder = tmp_path_factory.mktemp("ar1")
    frame = prices_from_returns(ar1_returns(1500, phi=0.5, seed=1))["SYN"]
    frame.rename_axis("Date").reset_index().to_csv(folder / "syn.csv", index=False)
    out = folder / "prepared"
    steps.prepare_data(f"file:{folder / 'syn.csv'}", out)
    return out


def item(trial: str, rank: int, seed: int, objective: float, flags=AR1_FLAGS) -> dict:
    return {"id": f"{rank:03d}-{trial}-seed{seed}", "experiment": "syn-exp", "trial": trial, "seed": float(seed),
            "rank": float(rank), "objective_metric": "val_loss", "objective": objective, "top_k": True,
            "pareto": False, "axes": {}, "flags": list(flags), "n_trials": 7.0, "n_eligible": 5.0}


@pytest.fixture(scope="module")
def retrained(ar1_data, tmp_path_factory) -> list[Path]:
    """Two winners x one seed, 3 epochs each, on the AR(1) data."""
    root = tmp_path_factory.mktemp("retrains")
    dirs = []
    for rank, (name, extra) in enumerate([("t-best", []), ("t-second", ["--hidden-size=8"])], start=1):
        folder = root / name
        steps.run_retrain(item(name, rank, 0, 0.5 + rank / 10, AR1_FLAGS + extra + ["--epochs=3"]), ar1_data,
                             folder)
        dirs.append(folder)
    return dirs


def test_retrain_runs_every_epoch_on_train_and_validation(retrained):
    folder = retrained[0]
    # the retrain's files, and the loop item with its numbers cast back from floats
    assert {p.name for p in folder.iterdir()} >= {*retrain.FILES, "item.json"}
    assert json.loads((folder / "item.json").read_text())["seed"] == 0
    history = json.loads((folder / "history.json").read_text())
    # no early stopping: all 3 epochs ran; validation is inside the training rows and is named in-sample
    assert [h["epoch"] for h in history] == [1, 2, 3] and "insample_val_loss" in history[0]
    assert not any(k.startswith("val_") for k in history[0])


def test_retrain_beats_the_baselines_on_predictable_data(retrained):
    report = json.loads((retrained[0] / "evaluation.json").read_text())
    # an AR(1) series is predictable: the model beats every naive baseline, and DM says it is no accident
    assert report["beats_bar"] and report["bar"] in report["baselines"]
    assert report["model"]["loss"] < min(b["loss"] for b in report["baselines"].values())
    assert report["dm"]["statistic"] < 0 and report["dm"]["p_value"] < 0.01 and report["dm"]["against"] == report["bar"]
    # the forecast's sign is worth trading here, costs included, and beats buy-and-hold
    backtest = report["backtest"]
    assert backtest["model"]["sharpe"] > backtest["buy_and_hold"]["sharpe"] and backtest["model"]["cost_bps"] == 5.0
    assert 0 <= backtest["model"]["max_drawdown"] < 1 and 0.5 < backtest["model"]["win_rate"] < 1


def test_the_saved_model_reproduces_the_evaluated_forecasts(retrained, ar1_data):
    import torch

    folder = retrained[0]
    model = retrain.load_model(folder)
    args = retrain.retrain_args(AR1_FLAGS, data=steps.data_spec(ar1_data))
    ds = data.prepare(data.load_prices(args.data), window=args.seq_len, split_window=args.split_window, refit=True)
    with torch.no_grad():
        forecast = ds.target_scaler.inverse(model(torch.from_numpy(ds.x["test"])).numpy()[:, 0])
    saved = np.loadtxt(folder / "forecasts.csv", delimiter=",", skiprows=1, usecols=2)
    np.testing.assert_allclose(forecast, saved, rtol=1e-5)


@pytest.mark.parametrize("target", ["return", "direction", "volatility"])
def test_per_day_losses_average_to_the_ranking_metric(target):
    from hpo_lib.data import baselines

    ds = data.prepare(prices_from_returns(ar1_returns(900, seed=3)), target=target, window=5, split_window=5)
    forecast = next(iter(baselines.naive_forecasts(ds, "test").values()))
    scores = baselines.score(ds, "test", forecast)
    # the Diebold-Mariano test compares exactly the losses the verdict ranks by
    assert np.mean(scoring.sample_losses(ds, "test", forecast)) == pytest.approx(
        scores[baselines.ranking_metric(scores)])


def test_a_test_split_too_short_for_dm_is_reported_not_fatal(tmp_path):
    prices = prices_from_returns(ar1_returns(400, seed=2))
    # horizon 20 needs 40 loss pairs; this test split has fewer
    ds = data.prepare(prices, window=5, split_window=5, horizon=20, val_frac=0.2, test_frac=0.18)
    assert len(ds.y["test"]) < 40
    report = retrain.evaluate_test(ds, ds.persistence["test"])
    assert "needs at least 40 loss pairs for horizon=20" in report["dm"]["error"]
    # everything else is still there
    assert "loss" in report["model"] and "sharpe" in report["backtest"]["model"]


def test_retrain_flags_are_checked_like_trial_flags():
    with pytest.raises(ConfigError, match="unknown flag --colour"):
        retrain.retrain_args(["--colour=blue"])
    with pytest.raises(ConfigError, match="unknown retrain override"):
        retrain.retrain_args([], colour="blue")


# ----------------------------------------------------------------------------------------------- tune
class RecordingApi(FakeApi):
    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created_body = copy.deepcopy(body)
        return super().create_namespaced_custom_object(group, version, namespace, plural, body)


def test_launch_creates_waits_and_saves_every_trial(tmp_path):
    trials = fixture("trials.json")
    api = RecordingApi(gets=[fixture("experiment-running.json"), fixture("experiment-succeeded.json")],
                       pages=[trials])
    summary = steps.tune(tmp_path, mode="launch", data="yahoo:SPY,start=2015-01-01", api=api, poll_s=0.01)
    # our lstm manifest was created, its trials pointed at the pipeline's data
    args = api.created_body["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--data=yahoo:SPY,start=2015-01-01" in args and api.created_body["metadata"]["name"] == "lstm-spy-return"
    # polled until Succeeded, then every Trial CR was written untouched
    assert summary["state"] == "Succeeded" and summary["created"] and summary["n_trials"] == 9
    assert json.loads((tmp_path / "trials.json").read_text()) == trials["items"]
    assert json.loads((tmp_path / "experiment.json").read_text())["status"]["trials"] == 9


def test_a_failed_experiment_is_saved_then_refused(tmp_path):
    api = FakeApi(gets=[fixture("experiment-failed.json")], pages=[fixture("trials.json")])
    summary = steps.tune(tmp_path / "tune", mode="existing", data=manifests.DATA_SPEC, api=api)
    # the trials are saved before anyone judges the experiment...
    assert summary["state"] == "Failed" and (tmp_path / "tune" / "trials.json").exists()
    # ...and the winners step refuses it, saying why and where the trials are
    with pytest.raises(katib_client.ExperimentError,
                       match="failed \\(ExperimentFailed: Experiment has failed because max failed count has reached;"
                             " 12 trials.*saved in the tune step's artifact"):
        steps.select_winners(tmp_path / "tune", tmp_path / "sel")


def test_an_unknown_experiment_or_namespace_is_a_clear_error(tmp_path):
    from kubernetes.client import ApiException

    api = FakeApi(gets=[ApiException(status=404, reason="Not Found")])
    with pytest.raises(katib_client.ExperimentError, match="experiment 'nope' not found in namespace 'team-x'"):
        steps.tune(tmp_path, mode="existing", data="sample:sp500", experiment_name="nope", namespace="team-x",
                      api=api)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "guess"}, "tune_mode must be one of launch, existing, export"),
    ({"mode": "export", "trials_export": "/nowhere/trials.json"}, "needs trials_export.*does not exist"),
    ({"mode": "export", "model_family": "transformer"}, "unknown model family 'transformer'"),
    ({"mode": "export", "experiment_yaml": "kind: Job"}, "must hold exactly one Experiment, found 0"),
    ({"mode": "launch", "data": "yahoo:SPY?start=2010-01-01&end=2024-12-31"}, "use the shell-safe form"),
])
def test_bad_tune_arguments(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        steps.tune(tmp_path, **{"data": "sample:sp500", **kwargs})


# ----------------------------------------------------------------------------------------------- winners step
@pytest.fixture
def tuned_dir(tmp_path) -> Path:
    api = FakeApi(gets=[fixture("experiment-succeeded.json")], pages=[fixture("trials.json")])
    steps.tune(tmp_path / "tune", mode="existing", data=manifests.DATA_SPEC, api=api)
    return tmp_path / "tune"


def test_select_emits_one_self_contained_item_per_winner_and_seed(tuned_dir, tmp_path):
    items = steps.select_winners(tuned_dir, tmp_path / "sel", top_k=2, n_seeds=2, epochs=5,
                                    retrain_flags="--threads=2")
    # 3 winners (top-2 + the Pareto-only one) x 2 seeds
    assert [(i["trial"].rsplit("-", 1)[1], i["seed"]) for i in items] == [
        ("7xk2p9qd", 0), ("7xk2p9qd", 1), ("c9v1t6wa", 0), ("c9v1t6wa", 1), ("b4n8s2lm", 0), ("b4n8s2lm", 1)]
    first = items[0]
    # the trial's own flags from the Experiment's template, then the overrides, last one wins
    assert "--hidden-size=128" in first["flags"] and "--model=lstm" in first["flags"]
    assert first["flags"][-2:] == ["--epochs=5", "--threads=2"]
    assert (first["n_trials"], first["n_eligible"], first["objective"]) == (9, 5, 0.3512)
    # the selection and a Markdown leaderboard are kept as the step's artifacts
    selection = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert selection["n_eligible"] == 5 and len(selection["winners"]) == 3
    assert "| 1 | lstm-spy-return-7xk2p9qd |" in (tmp_path / "sel" / "leaderboard.md").read_text()


def test_k_beyond_the_usable_trials_is_noted_in_the_leaderboard(tuned_dir, tmp_path):
    items = steps.select_winners(tuned_dir, tmp_path / "sel", top_k=10, pareto=False, n_seeds=1)
    assert len(items) == 5
    assert "top-k asked for 10 trials but only 5 are usable" in (tmp_path / "sel" / "leaderboard.md").read_text()


@pytest.mark.parametrize("kwargs, message", [
    ({"retrain_flags": "--colour=blue"}, "unknown flag --colour"),
    ({"retrain_flags": "threads=2"}, "retrain_flags must be --name=value flags"),
    ({"n_seeds": 0}, "n_seeds must be at least 1"),
    ({"epochs": -1}, "epochs must be 0"),
])
def test_bad_winner_arguments_fail_before_any_retrain(tuned_dir, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        steps.select_winners(tuned_dir, tmp_path / "sel", **kwargs)


# ----------------------------------------------------------------------------------------------- summary
def test_the_champion_is_chosen_by_tuning_rank_not_by_test(retrained, tmp_path):
    # make the second-ranked winner look better on test: it must still not be the champion
    dirs = [tmp_path / p.name for p in retrained]
    for src, dst in zip(retrained, dirs):
        shutil.copytree(src, dst)
    report = json.loads((dirs[1] / "evaluation.json").read_text())
    report["model"]["loss"] = 0.01
    (dirs[1] / "evaluation.json").write_text(json.dumps(report))
    summary = steps.summarize(dirs)
    assert summary["champion"]["item"]["trial"] == "t-best"
    assert summary["beats_bar"] and summary["verdict"].startswith("trial t-best (tuning rank 1, seed 0) beats")
    assert (summary["n_trials"], summary["n_eligible"], summary["n_winners"], summary["n_retrains"]) == (7, 5, 2, 2)
    markdown = render.summary_markdown(summary)
    assert "Selected from 5 usable of 7 trials" in markdown and "| 1 | t-best |" in markdown
    assert "<table>" in render.markdown_to_html(markdown, "x")


def test_a_champion_that_loses_to_the_baseline_is_said_plainly(retrained, tmp_path):
    dirs = [tmp_path / p.name for p in retrained]
    for src, dst in zip(retrained, dirs):
        shutil.copytree(src, dst)
    report = json.loads((dirs[0] / "evaluation.json").read_text())
    report["beats_bar"], report["model"]["loss"] = False, 9.0
    (dirs[0] / "evaluation.json").write_text(json.dumps(report))
    summary = steps.summarize(dirs)
    assert not summary["beats_bar"]
    assert summary["verdict"].startswith("No champion: trial t-best") and "Nothing is registered." in summary["verdict"]


# ----------------------------------------------------------------------------------------------- MLflow
def test_register_logs_every_retrain_and_aliases_a_winning_champion(retrained, tmp_path):
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = steps.summarize(retrained)
    result = steps.register(retrained, summary, uri=uri, model_name="syn-model", run_name="run-1")
    client = MlflowClient(uri)
    # one parent run and one nested run per retrain, with params, per-epoch curves and test metrics
    children = client.search_runs([client.get_experiment_by_name("syn-exp").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert len(children) == 2
    run = next(r for r in children if r.data.tags["hpo.trial"] == "t-best")
    assert run.data.params["model"] == "mlp" and run.data.params["seed"] == "0"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert run.data.metrics["beats_bar"] == 1.0 and "dm_p_value" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"evaluation.json", "forecasts.csv"}
    # the champion beats the bar: registered, and the alias points at it
    version = client.get_model_version_by_alias("syn-model", "champion")
    assert str(version.version) == result["registered_version"] == "1"
    # it loads back as the original class and predicts what the retrain evaluated
    model = mlflow.pytorch.load_model("models:/syn-model@champion")
    reference = retrain.load_model(retrained[0])
    x = torch.randn(4, 5, 8)
    torch.testing.assert_close(model(x), reference(x))


def test_a_losing_champion_registers_nothing(retrained, tmp_path):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = {**steps.summarize(retrained), "beats_bar": False, "verdict": "No champion: test says so."}
    result = steps.register(retrained, summary, uri=uri, model_name="syn-loser")
    client = MlflowClient(uri)
    assert result["registered_version"] is None
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("syn-loser", "champion")
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["hpo.registered"].startswith("nothing") and "No champion" in parent.data.tags["hpo.verdict"]
    assert "Nothing registered: No champion" in render.registry_markdown(result, summary)


def test_unreachable_mlflow_is_a_clear_error_and_keeps_the_results(retrained):
    uri = f"http://127.0.0.1:{free_port()}"
    before = {p.name for p in retrained[0].iterdir()}
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"MLflow at {uri} is unreachable.*retrain results are still "
                                                     f"in the pipeline's artifacts"):
        steps.register(retrained, steps.summarize(retrained), uri=uri)
    assert time.monotonic() - started < 15 and {p.name for p in retrained[0].iterdir()} == before


def test_tracking_defaults_to_a_local_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri("", state_dir=tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking.tracking_uri("", state_dir=tmp_path) == "http://mlflow:5000"
    assert tracking.tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


# ----------------------------------------------------------------------------------------------- CLI
def tiny_manifest(path: Path, name: str = "lstm-tiny") -> Path:
    """Our LSTM manifest with a search space small enough for CPU tests (same trial command and metrics)."""
    doc = manifests.experiment("lstm")
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    fixed = {"seq-len": ["20"], "batch-size": ["256"], "bidirectional": ["false"], "attention": ["false"],
             "optimizer": ["adam"]}
    for p in spec["parameters"]:
        if p["name"] in fixed:
            p["feasibleSpace"] = {"list": fixed[p["name"]]}
        elif p["name"] == "hidden-size":
            p["feasibleSpace"] = {"min": "8", "max": "16", "step": "8", "distribution": "uniform"}
        elif p["name"] == "num-layers":
            p["feasibleSpace"] = {"min": "1", "max": "1", "distribution": "uniform"}
        elif p["name"] == "lr":
            p["feasibleSpace"] = {"min": "0.001", "max": "0.01", "distribution": "logUniform"}
    spec.update(maxTrialCount=3, parallelTrialCount=2, maxFailedTrialCount=3,
                algorithm={"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "7"}]})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_run_local_without_an_export_says_to_tune_first(tmp_path, capsys):
    manifest = tiny_manifest(tmp_path / "tiny.yaml")
    assert cli.main(["pipeline", "run-local", str(manifest), "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert "no trials export at" in err and f"run `hpo tune {manifest}" in err


def test_local_arguments_take_data_and_epochs_from_the_local_trials(tmp_path):
    manifest = tiny_manifest(tmp_path / "tiny.yaml")
    folder = tmp_path / "state" / "katib-hpo.lstm-tiny"
    (folder / "trial-0000").mkdir(parents=True)
    (folder / "trials.json").write_text("[]")
    (folder / "trial-0000" / "config.json").write_text(json.dumps({"data": "sample:nasdaq", "epochs": 4}))
    arguments = steps.local_arguments(manifest, state_dir=tmp_path / "state")
    # `hpo tune --set data=... --set epochs=...` is not in the export: the trials' own config tells
    assert (arguments["data"], arguments["epochs"], arguments["tune_mode"]) == ("sample:nasdaq", 4, "export")
    assert steps.local_arguments(manifest, state_dir=tmp_path / "state", data="sample:sp500",
                                    epochs=9)["epochs"] == 9


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend and a local artifact root."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "server-artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield server, url
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=3)  # a graceful uvicorn shutdown can take 10 s; the store is thrown away anyway
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()


def wait_healthy(server: subprocess.Popen, url: str, timeout_s: float = 180) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited early"
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server at {url} not healthy after {timeout_s} s")


@pytest.mark.e2e
def test_local_pipeline_against_a_real_mlflow_server(tmp_path, mlflow_server, retrained, capsys):
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    server, url = mlflow_server
    manifest = tiny_manifest(tmp_path / "tiny.yaml")
    state = tmp_path / "state"
    # the embedded engine tunes while the server starts; its export is what the pipeline reads
    assert cli.main(["tune", str(manifest), "--set", "data=sample:sp500", "--set", "epochs=2", "--set", "threads=1",
                     "--state-dir", str(state), "--no-progress", "--no-tracking"]) == 0
    wait_healthy(server, url)
    capsys.readouterr()
    assert cli.main(["pipeline", "run-local", str(manifest), "--state-dir", str(state), "--top-k", "2",
                     "--no-pareto", "--seeds", "2", "--tracking-uri", url, "--model-name", "lstm-tiny",
                     "--pipeline-root", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    summary_path = next((tmp_path / "root").glob("katib-hpo-*/evaluate/summary/summary.json"))
    summary = json.loads(summary_path.read_text())
    # 2 winners x 2 seeds, 2 epochs each (the trials' --epochs), selected from the 3 local trials
    assert (summary["n_winners"], summary["n_retrains"], summary["n_trials"]) == (2, 4, 3)
    assert summary["verdict"] in out

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("lstm-tiny")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.kind` = 'retrain'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    for run in children:
        # params, per-epoch curves, test metrics beside the bar, and the evaluation report as an artifact
        assert run.data.params["model"] == "lstm" and run.data.params["epochs"] == "2"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "insample_val_loss")] == [1, 2]
        assert {"test_loss", "bar_test_loss", "dm_p_value", "backtest_sharpe", "val_test_gap"} <= set(run.data.metrics)
        assert "evaluation.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    champion = next(r for r in children if r.data.tags["hpo.champion"] == "True")
    mlflow.set_tracking_uri(url)
    if summary["beats_bar"]:
        # registered and aliased only because it beats the best baseline on test
        version = client.get_model_version_by_alias("lstm-tiny", "champion")
        assert version.run_id == champion.info.run_id
        model = mlflow.pytorch.load_model("models:/lstm-tiny@champion")
    else:
        # said plainly, and nothing registered
        assert "No champion" in summary["verdict"] and "Nothing is registered" in summary["verdict"]
        assert parent.data.tags["hpo.registered"].startswith("nothing")
        assert not client.search_registered_models(filter_string="name = 'lstm-tiny'")
        model = mlflow.pytorch.load_model(f"runs:/{champion.info.run_id}/model")
    # the model loads back over HTTP as the original class and predicts what the retrain evaluated
    folder = Path(summary["champion"]["dir"])
    ds = data.prepare(data.load_prices("sample:sp500"), window=20, split_window=90, refit=True)
    with torch.no_grad():
        forecast = ds.target_scaler.inverse(model(torch.from_numpy(ds.x["test"])).numpy()[:, 0])
    saved = np.loadtxt(folder / "forecasts.csv", delimiter=",", skiprows=1, usecols=2)
    np.testing.assert_allclose(forecast, saved, rtol=1e-4, atol=1e-9)

    # a tiny model on daily index returns rarely beats the best naive baseline, so the alias is also exercised over
    # HTTP with retrains that do (the AR(1) ones): the same register step, the same server
    result = steps.register(retrained, steps.summarize(retrained), uri=url, model_name="syn-model")
    version = client.get_model_version_by_alias("syn-model", "champion")
    assert str(version.version) == result["registered_version"]
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(mlflow.pytorch.load_model("models:/syn-model@champion")(x),
                               retrain.load_model(retrained[0])(x))
