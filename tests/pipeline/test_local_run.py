"""One `hpo tune` + `hpo pipeline run-local` of a tiny manifest against a real MLflow server, shared by the tests
below: the steps and epochs a person sees, the MLflow runs, the registry and the served champion. Its own module so
that `make test`'s workers run it once (tests/conftest.py's XDIST_GROUPS): a module fixture is set up once per
worker that runs one of its tests."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hpo_lib import cli, data
from hpo_lib.pipeline import retrain, steps
from tests.conftest import start_mlflow_server, stop_server, wait_for_http
from tests.pipeline.test_steps import tiny_manifest


# ----------------------------------------------------------------------------------------------- end to end
@dataclass(frozen=True)
class LocalRun:
    """One `hpo tune` + `hpo pipeline run-local` of the tiny manifest against a real MLflow server."""

    url: str  # the MLflow server
    root: Path  # the pipeline root
    out: str  # what the two commands printed
    summary: dict


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Iterator[LocalRun]:
    """A real `mlflow server` (SQLite backend, local artifacts) and one local pipeline run against it, shared by the
    end-to-end tests below: tune the tiny manifest, then run the pipeline on its export (2 winners x 2 seeds)."""
    tmp_path = tmp_path_factory.mktemp("local-run")
    server, url, log_path = start_mlflow_server(tmp_path)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            # a loaded CI machine may answer one model upload slower than the product's 20 s default: a live run
            # given up there is logged again by register (the fallback), which is not what these tests are about
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
            manifest = tiny_manifest(tmp_path / "tiny.yaml")
            state, printed = tmp_path / "state", io.StringIO()
            with contextlib.redirect_stdout(printed):
                # the embedded engine tunes while the server starts; its export is what the pipeline reads
                assert cli.main(["tune", str(manifest), "--set", "data=sample:sp500", "--set", "epochs=2", "--set",
                                 "threads=1", "--state-dir", str(state), "--no-progress", "--no-tracking"]) == 0
                wait_for_http(f"{url}/health", server, log=log_path)
                printed.seek(0)
                printed.truncate()
                # the pipeline runs locally against the server from that export
                assert cli.main(["pipeline", "run-local", str(manifest), "--state-dir", str(state), "--top-k", "2",
                                 "--no-pareto", "--seeds", "2", "--tracking-uri", url, "--model-name", "lstm-tiny",
                                 "--pipeline-root", str(tmp_path / "root")]) == 0
            summary_path = next((tmp_path / "root").glob("katib-hpo-*/evaluate/summary/summary.json"))
            yield LocalRun(url, tmp_path / "root", printed.getvalue(), json.loads(summary_path.read_text()))
    finally:
        stop_server(server)


def _retrain_runs(run: LocalRun):
    """The pipeline's parent retrain run and its child runs, in MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(run.url)
    experiment = client.get_experiment_by_name("lstm-tiny")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.kind` = 'retrain'")
    children = [] if len(parents) != 1 else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    return client, parents, children


@pytest.mark.e2e
def test_a_local_run_shows_each_step_and_every_retrains_epochs(local_run):
    # 2 winners x 2 seeds, 2 epochs each (the trials' --epochs), selected from the 3 local trials
    summary = local_run.summary
    assert (summary["n_winners"], summary["n_retrains"], summary["n_trials"]) == (2, 4, 3)
    assert summary["verdict"] in local_run.out
    # the terminal showed each step as it started and every retrain's epochs, not one line and then silence
    for step in ("prepare data", "tune", "select winners", "retrain", "evaluate", "register"):
        assert f"step: {step}" in local_run.out
    # (the rolling-origin refits report their own epochs, with "(origin i/R)" after them)
    assert len(re.findall(r"retrain \S+-seed\d: epoch 2/2$", local_run.out, flags=re.M)) == 4
    # the Markdown and HTML artifacts are named with their extensions, so that they open as what they are
    written = {f"{p.parent.name}/{p.name}" for p in local_run.root.rglob("*") if p.is_file()}
    assert {"evaluate/report.md", "evaluate/report.html", "register/registry.md"} <= written
    assert "select-winners/leaderboard.md" in written
    assert re.search(r"^report: \S+/report\.md$", local_run.out, flags=re.M)
    assert re.search(r"retrain \S+-seed\d: epoch 2/2 \(origin 2/\d+\)$", local_run.out, flags=re.M)


@pytest.mark.e2e
def test_a_local_run_logs_a_finished_run_per_retrain_under_one_parent(local_run):
    client, parents, children = _retrain_runs(local_run)
    # one parent retrain run, with one finished child run per winner and seed
    assert len(parents) == 1
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    # the winners step opened the parent before any retrain, so each child was nested from its start (it was
    # created with the parent's tag: a child logged afresh by register would start after the retrains' end)
    log = (local_run.root / "run-local.log").read_text()
    assert parents[0].info.status == "FINISHED"
    assert all(r.info.start_time > parents[0].info.start_time for r in children)
    assert all(r.info.run_id == json.loads(p.read_text()).get("mlflow_run_id")
               for r in children for p in local_run.root.rglob("seed*/item.json")
               if json.loads(p.read_text())["id"] == r.info.run_name), \
        [line for line in log.splitlines() if "MLflow:" in line]
    for run in children:
        # params, per-epoch curves, test metrics beside the bar, and the evaluation report as an artifact
        assert run.data.params["model"] == "lstm" and run.data.params["epochs"] == "2"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "insample_val_loss")] == [1, 2]
        assert {"test_loss", "bar_test_loss", "dm_p_value", "backtest_sharpe", "val_test_gap"} <= set(run.data.metrics)
        assert "evaluation.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.e2e
def test_the_local_champion_is_registered_only_if_it_beats_the_bar(local_run):
    client, parents, children = _retrain_runs(local_run)
    champion = next(r for r in children if r.data.tags["hpo.champion"] == "True")
    beats = local_run.summary["beats_bar"]
    # the registry follows the verdict: a version aliased to the champion's run exactly when it beats the bar
    versions = client.search_model_versions("name = 'lstm-tiny'")
    assert [v.run_id for v in versions] == ([champion.info.run_id] if beats else [])
    # and the parent run and the verdict say which it was
    assert parents[0].data.tags["hpo.registered"].startswith("nothing") is not beats
    assert ("Nothing is registered" in local_run.summary["verdict"]) is not beats


@pytest.mark.e2e
def test_the_local_champion_loads_back_over_http_and_predicts_what_it_evaluated(local_run):
    import mlflow.pytorch
    import torch

    _, _, children = _retrain_runs(local_run)
    champion = next(r for r in children if r.data.tags["hpo.champion"] == "True")
    mlflow.set_tracking_uri(local_run.url)
    model = mlflow.pytorch.load_model(f"runs:/{champion.info.run_id}/model")
    # the model loads back over HTTP as the original class and predicts what the retrain evaluated
    folder = Path(local_run.summary["champion"]["dir"])
    ds = data.prepare(data.load_prices("sample:sp500"), window=20, split_window=90, refit=True)
    with torch.no_grad():
        forecast = ds.target_scaler.inverse(model(torch.from_numpy(ds.x["test"])).numpy()[:, 0])
    saved = np.loadtxt(folder / "forecasts.csv", delimiter=",", skiprows=1, usecols=2)
    np.testing.assert_allclose(forecast, saved, rtol=1e-4, atol=1e-9)


@pytest.mark.e2e
def test_a_winning_champion_is_registered_and_loads_by_its_alias_over_http(local_run, retrained):
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    # a tiny model on daily index returns rarely beats the best naive baseline, so the alias is exercised over HTTP
    # with retrains that do (the AR(1) ones): the same register step, the same server
    result = steps.register(retrained, steps.evaluate(retrained), uri=local_run.url, model_name="syn-model")
    version = MlflowClient(local_run.url).get_model_version_by_alias("syn-model", "champion")
    assert str(version.version) == result["registered_version"]
    x = torch.randn(3, 5, 8)
    # the registered model loads back over HTTP and predicts what the retrain's own model does
    mlflow.set_tracking_uri(local_run.url)
    torch.testing.assert_close(mlflow.pytorch.load_model("models:/syn-model@champion")(x),
                               retrain.load_model(retrained[0])(x))
