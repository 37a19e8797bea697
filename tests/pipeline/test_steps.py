"""The KFP pipeline steps: compiled YAML, the retrain step's item, tune modes, winners, summary, MLflow, the bad
inputs. The retrain itself is in test_retrain.py; the end-to-end local run against a real MLflow server in
test_local_run.py."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from hpo_lib import cli
from hpo_lib.errors import ConfigError, TrackingError
from hpo_lib.katib import client as katib_client
from hpo_lib.katib import manifests
from hpo_lib.pipeline import local, records, retrain, steps
from hpo_lib.pipeline.progress import PROGRESS_ENV, StepProgress, follow_progress
from hpo_lib.results import pipeline_report, render, tracking
from tests.conftest import ROOT, FakeApi, fixture, free_port


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


# ----------------------------------------------------------------------------------------------- retrain step
def test_the_retrain_step_keeps_its_item_with_the_numbers_cast_back(retrained):
    saved = json.loads((retrained[0] / "item.json").read_text())
    # the loop item arrives with floats (KFP's protobuf); the step writes it beside the retrain with ints again
    assert (saved["seed"], saved["rank"], saved["n_trials"], saved["n_eligible"]) == (0, 1, 7, 5)
    assert all(type(saved[k]) is int for k in ("seed", "rank", "n_trials", "n_eligible"))
    # ... beside the retrain's own files
    assert {p.name for p in retrained[0].iterdir()} >= {*retrain.FILES, "item.json"}


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
    # a 404 names the experiment and the namespace that was searched
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
    # each bad argument is a ConfigError naming it, before any cluster call
    with pytest.raises(ConfigError, match=message):
        steps.tune(tmp_path, **{"data": "sample:sp500", **kwargs})


# ----------------------------------------------------------------------------------------------- winners step
@pytest.fixture
def tuned_dir(tmp_path) -> Path:
    api = FakeApi(gets=[fixture("experiment-succeeded.json")], pages=[fixture("trials.json")])
    steps.tune(tmp_path / "tune", mode="existing", data=manifests.DATA_SPEC, api=api)
    return tmp_path / "tune"


def test_select_emits_one_self_contained_item_per_winner_with_its_seeds(tuned_dir, tmp_path):
    items = steps.select_winners(tuned_dir, tmp_path / "sel", top_k=2, seeds=2, epochs=5,
                                    retrain_flags="--threads=2")
    # 3 winners (top-2 + the Pareto-only one), each retrained with its 2 seeds in one task
    assert [(i["trial"].rsplit("-", 1)[1], i["seeds"]) for i in items] == [
        ("7xk2p9qd", [0, 1]), ("c9v1t6wa", [0, 1]), ("b4n8s2lm", [0, 1])]
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
    items = steps.select_winners(tuned_dir, tmp_path / "sel", top_k=10, pareto=False, seeds=1)
    # every usable trial is a winner, and the leaderboard says k was cut
    assert len(items) == 5
    assert "top-k asked for 10 trials but only 5 are usable" in (tmp_path / "sel" / "leaderboard.md").read_text()


@pytest.mark.parametrize("kwargs, message", [
    ({"retrain_flags": "--colour=blue"}, "unknown flag --colour"),
    ({"retrain_flags": "threads=2"}, "retrain_flags must be --name=value flags"),
    ({"seeds": 0}, "seeds must be at least 1"),
    ({"epochs": -1}, "epochs must be 0"),
])
def test_bad_winner_arguments_fail_before_any_retrain(tuned_dir, tmp_path, kwargs, message):
    # each bad argument is a ConfigError naming it, before any retrain starts
    with pytest.raises(ConfigError, match=message):
        steps.select_winners(tuned_dir, tmp_path / "sel", **kwargs)


# ----------------------------------------------------------------------------------------------- summary
def test_the_champion_is_chosen_by_tuning_rank_not_by_test(retrained, tmp_path):
    # make the second-ranked winner look better on test: it must still not be the champion
    dirs = [tmp_path / p.parent.name for p in retrained]
    for src, dst in zip(retrained, dirs):
        shutil.copytree(src, dst)
    report = json.loads((dirs[1] / "evaluation.json").read_text())
    report["model"]["loss"] = 0.01
    (dirs[1] / "evaluation.json").write_text(json.dumps(report))
    summary = steps.evaluate(dirs)
    assert summary["champion"]["item"]["trial"] == "t-best"
    assert summary["beats_bar"] and summary["verdict"].startswith("trial t-best (tuning rank 1, seed 0) beats")
    assert (summary["n_trials"], summary["n_eligible"], summary["n_winners"], summary["n_retrains"]) == (7, 5, 2, 2)
    markdown = render.summary_markdown(summary)
    # the summary renders as Markdown with the counts and the champion, and as HTML
    assert "Selected from 5 usable of 7 trials" in markdown and "| 1 | t-best |" in markdown
    assert "<table>" in render.markdown_to_html(markdown, "x")


def test_the_summary_tests_the_retrains_knowing_the_search(retrained):
    summary = steps.evaluate(retrained)
    single, rolling = summary["search"]["single"], summary["search"]["rolling"]
    # SPA and the Reality Check run over both retrains against the bar, with the 7 configurations tried named
    assert single["spa"]["n_models"] == 2 and single["spa"]["n_configurations"] == 7
    assert single["spa"]["models"] == ["001-t-best-seed0", "002-t-second-seed0"]
    # the signal is real: SPA rejects on the rolling-origin forecasts, so the verdict is yes, and says on what
    assert rolling["spa"]["spa_p"] < 0.05 and summary["beats_baselines"]
    assert summary["search_verdict"].startswith("yes: on the rolling-origin forecasts SPA p = ")
    # the MCS at 10% runs over the winners and every baseline, and the naive ones are out of it
    assert {"winner t-best", "winner t-second", "zero", "ridge"} <= set(single["mcs"]["pvalues"])
    assert "zero" not in single["mcs"]["included"] and "persistence" not in rolling["mcs"]["included"]
    # the champion's intervals and nested tests, and the rolling origins, are in the summary and on the page
    assert summary["inference"]["clark_west"] and len(summary["rolling_origins"]) == 3
    markdown = render.summary_markdown(summary)
    assert "Search-aware verdict" in markdown and "Reality Check p" in markdown and "Clark-West" in markdown


def test_a_near_constant_always_long_winner_is_flagged_beside_its_percentage_of_the_bar(retrained, tmp_path):
    dirs = [tmp_path / p.parent.name for p in retrained]
    for src, dst in zip(retrained, dirs):
        shutil.copytree(src, dst)
    # the second winner forecasts (almost) the same up move every day, so it trades like buy-and-hold
    lines = (dirs[1] / "forecasts.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    (dirs[1] / "forecasts.csv").write_text("\n".join(
        [lines[0]] + [f"{d},{a},{0.001 + 1e-6 * (i % 2)},{b}" for i, (d, a, _, b) in enumerate(rows)]) + "\n")
    report = json.loads((dirs[1] / "evaluation.json").read_text())
    report["backtest"]["model"] = dict(report["backtest"]["buy_and_hold"])
    (dirs[1] / "evaluation.json").write_text(json.dumps(report))
    summary = steps.evaluate(dirs)
    first, second = summary["winners"]
    # only the second is flagged; the first's forecasts spread like a real signal's
    assert not first["near_constant"] and not first["sharpe_is_buy_and_hold"] and first["forecast_sd_ratio"] > 0.1
    assert second["near_constant"] and second["forecast_sd_ratio"] < 0.001 and second["sharpe_is_buy_and_hold"]
    # the percentage against the bar is the test mean's, signed (negative: a lower loss than the bar's)
    assert first["vs_bar_pct"] == pytest.approx(100 * (first["test_mean"] - first["bar_test"]) / first["bar_test"])
    markdown = render.summary_markdown(summary)
    row = next(line for line in markdown.splitlines() if line.startswith("| 2 | t-second |"))
    assert f"| {render.percent(second['vs_bar_pct'])} |" in row
    assert "near-constant forecast (sd 0.0% of the target's); Sharpe = buy-and-hold's (always long) |" in row
    assert "Flags: t-second." in markdown


def _report(retrained, folder: Path) -> tuple[dict, Path]:
    """The evaluate step's summary of the retrains, and its report page written to ``folder``."""
    summary = steps.evaluate(retrained)
    pipeline_report.write(summary, folder / "report.md", folder / "report.html")
    return summary, folder / "report.html"


def test_the_report_is_markdown_and_a_page_with_the_equity_curve_and_the_forecasts(retrained, tmp_path):
    summary, page_path = _report(retrained, tmp_path)
    equity = summary["backtest"]["equity"]
    # the champion's equity curve covers every test day, for the model and buy-and-hold alike
    assert len(equity["dates"]) == len(equity["model"]) == len(equity["buy_and_hold"]) == summary["n_test"]
    # buy-and-hold's curve ends where its total return says (growth of 1, net of the entry cost)
    assert equity["buy_and_hold"][-1] == pytest.approx(1 + summary["backtest"]["buy_and_hold"]["total_return"],
                                                       rel=1e-5)
    page = page_path.read_text()
    # rendered by a Markdown library: emphasis, lists and tables are HTML, no Markdown marks are left
    assert "<strong>" in page and "<li>" in page and "<table>" in page and "**" not in page
    assert "- 95% stationary-block-bootstrap" not in page
    # the two figures are embedded PNGs, so the page is one file
    assert page.count("<img src='data:image/png;base64,") == 2
    assert "Equity of the champion" in page and "test forecasts against the realised target" in page


@pytest.mark.e2e
def test_the_report_page_shows_both_figures_in_a_browser(retrained, tmp_path):
    from tests.e2e.test_browser import browse

    _, page = _report(retrained, tmp_path)
    dom = browse(page.as_uri(), screenshot=tmp_path / "report.png", wait_ms=3000, size="1400,2600")
    # the browser built both figures and the tables from the one file
    assert dom.count("<img src=\"data:image/png;base64,") == 2 and "<table>" in dom
    assert (tmp_path / "report.png").stat().st_size > 50_000  # the figures were drawn, not just text


def test_without_a_rolling_origin_test_the_verdict_is_not_established(retrained):
    single = steps.evaluate(retrained)["search"]["single"]
    beats, text = retrain.search_verdict(single, None)
    # the rule asks for the rolling-origin test; without it the answer is not yes
    assert not beats and text.startswith("not established: no rolling-origin test was run (test_origins=1)")


def test_a_champion_that_loses_to_the_baseline_is_said_plainly(retrained, tmp_path):
    dirs = [tmp_path / p.parent.name for p in retrained]
    for src, dst in zip(retrained, dirs):
        shutil.copytree(src, dst)
    report = json.loads((dirs[0] / "evaluation.json").read_text())
    report["beats_bar"], report["model"]["loss"] = False, 9.0
    (dirs[0] / "evaluation.json").write_text(json.dumps(report))
    summary = steps.evaluate(dirs)
    # no champion, and the verdict says so and that nothing is registered
    assert not summary["beats_bar"]
    assert summary["verdict"].startswith("No champion: trial t-best") and "Nothing is registered." in summary["verdict"]


# ----------------------------------------------------------------------------------------------- MLflow
def test_register_logs_every_retrain_and_aliases_a_winning_champion(retrained, tmp_path):
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = steps.evaluate(retrained)
    result = steps.register(retrained, summary, uri=uri, model_name="syn-model", run_name="run-1")
    client = MlflowClient(uri)
    # one parent run and one nested run per retrain, with params, per-epoch curves and test metrics
    children = client.search_runs([client.get_experiment_by_name("syn-exp").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert len(children) == 2
    run = next(r for r in children if r.data.tags["hpo.trial"] == "t-best")
    # the t-best run carries its params and one train_loss point per epoch
    assert run.data.params["model"] == "mlp" and run.data.params["seed"] == "0"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(1, 21))
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


def test_a_retrain_run_is_open_and_nested_while_it_trains_and_register_ends_the_parent(signal_data, tmp_path):
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    from tests.pipeline.conftest import SIGNAL_FLAGS, item

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    seen: list[StepProgress] = []
    during: dict[str, object] = {}

    def on_progress(progress: StepProgress) -> None:
        seen.append(progress)
        if progress.epoch == 3:  # mid-training: what a user opening the MLflow UI now would see
            (run,) = client.search_runs([client.get_experiment_by_name("syn-exp").experiment_id],
                                        filter_string="tags.`hpo.kind` = 'retrain-run'")
            during["status"] = run.info.status
            during["steps"] = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
            during["parent"] = run.data.tags.get("mlflow.parentRunId")

    # the winners step opens the pipeline's parent run before any retrain, and the item names it
    parent = steps.pipeline_parent(uri, "", "run-7", "syn-exp")
    assert parent == {"run_id": parent["run_id"], "tracking_uri": uri, "experiment": "syn-exp"}
    assert client.get_run(parent["run_id"]).info.status == "RUNNING"
    folder = tmp_path / "retrain"
    steps.run_retrain(item("t-live", 1, 0, 0.6, SIGNAL_FLAGS + ["--epochs=5"]) | {"mlflow_parent": parent},
                      signal_data, folder, test_origins=1, tracking_uri=uri, on_progress=on_progress)
    # the step says it started, then reports every epoch of the fit as it ends
    assert seen[0] == StepProgress("retrain", item="001-t-live")
    assert [(p.phase, p.epoch, p.epochs) for p in seen[1:]] == [("fit", e, 5) for e in range(1, 6)]
    # while it trained, its MLflow run was already RUNNING with the epochs so far, nested under the parent
    assert during == {"status": "RUNNING", "steps": [1, 2, 3], "parent": parent["run_id"]}
    logged = json.loads((folder / "seed0" / "item.json").read_text())
    run = client.get_run(logged["mlflow_run_id"])
    # it ends FINISHED with the test metrics; params under the trial's flag (Katib) names, data as the spec
    assert run.info.status == "FINISHED" and "test_loss" in run.data.metrics
    assert run.data.params["batch-size"] == "128" and run.data.params["hidden-size"] == "16"
    assert "batch_size" not in run.data.params and "output-dir" not in run.data.params
    assert run.data.params["data"].startswith("file:") and run.data.params["data"].endswith("syn.csv")
    # the data set is the run's training input; MLflow's own source tags are set
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == run.data.params["data"] and len(data_input.dataset.digest) == 8
    assert run.data.tags["mlflow.source.type"] == "LOCAL"
    # the git commit of this checkout, which MLflow's own provider misses (the `hpo` script is git-ignored)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert run.data.tags["mlflow.source.git.commit"] == head.stdout.strip()
    # the model has a signature (batch free, window x features fixed) and an input example
    info = get_model_info(logged["mlflow_model_uri"])
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 5, 8)
    assert info.saved_input_example_info is not None
    # beside it, the forecaster: the model with its features and scalers, which takes raw daily bars
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(uri)
    models = mlflow.search_logged_models(experiment_ids=[client.get_experiment_by_name("syn-exp").experiment_id],
                                         output_format="list")
    (forecaster,) = [m for m in models if m.source_run_id == logged["mlflow_run_id"] and m.name == "forecaster"]
    bars = pd.read_csv(signal_data.parent / "syn.csv").tail(60)
    served = mlflow.pyfunc.load_model(forecaster.model_uri).predict(bars)
    assert list(served.columns) == ["date", "forecast"] and len(served) == 60 - 21 - 5 + 1

    # register keeps the live run under the parent the winners step opened, and ends that parent FINISHED
    summary = steps.evaluate([folder])
    result = steps.register([folder], summary, uri=uri, model_name="syn-live")
    assert result["runs"]["001-t-live-seed0"]["run_id"] == logged["mlflow_run_id"]
    assert result["parent_run_id"] == parent["run_id"]
    assert client.get_run(logged["mlflow_run_id"]).data.tags["mlflow.parentRunId"] == parent["run_id"]
    ended = client.get_run(parent["run_id"])
    assert ended.info.status == "FINISHED" and ended.info.run_name == "run-7" and "hpo.verdict" in ended.data.tags
    assert len(client.search_runs([client.get_experiment_by_name("syn-exp").experiment_id])) == 2
    # the experiment opens on its runs in MLflow's UI: it is typed
    assert client.get_experiment_by_name("syn-exp").tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_steps_report_across_processes_through_the_progress_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_ENV, str(path))
    seen: list[StepProgress] = []
    script = ("from hpo_lib.pipeline import progress; r = progress.reporter(None); "
              "[r(progress.StepProgress('retrain', item='a', phase='fit', epoch=e, epochs=3)) for e in (1, 2, 3)]")
    with follow_progress(path, seen.append, interval_s=0.1):
        # another process (as kfp's local runner starts each step) reports through the file the environment names
        subprocess.run([sys.executable, "-c", script], check=True, env=os.environ)
        steps.prepare_data("sample:sp500", tmp_path / "data")
    # every report reaches the callback in this process, in order, the last ones too
    assert [(p.step, p.epoch) for p in seen] == [("retrain", 1), ("retrain", 2), ("retrain", 3), ("prepare data", 0)]


def test_retrain_params_use_the_trials_flag_names(signal_data):
    config = {"model": "mlp", "batch_size": 64, "bidirectional": False, "output_dir": "/x", "cache_dir": "",
              "data": "file:/prepared/prices.parquet"}
    # the trial's flag names (Katib's); booleans as the flags spell them; the data spec it was prepared from
    assert records.run_params(config, signal_data) == {
        "model": "mlp", "batch-size": "64", "bidirectional": "false",
        "data": json.loads((signal_data / "data.json").read_text())["spec"]}


def test_a_losing_champion_registers_nothing(retrained, tmp_path):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = {**steps.evaluate(retrained), "beats_bar": False, "verdict": "No champion: test says so."}
    result = steps.register(retrained, summary, uri=uri, model_name="syn-loser")
    client = MlflowClient(uri)
    # no version is registered, and no champion alias exists
    assert result["registered_version"] is None
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("syn-loser", "champion")
    parent = client.get_run(result["parent_run_id"])
    # the parent run is tagged with what happened and the registry page says it
    assert parent.data.tags["hpo.registered"].startswith("nothing") and "No champion" in parent.data.tags["hpo.verdict"]
    assert "Nothing registered: No champion" in render.registry_markdown(result, summary)


def test_unreachable_mlflow_is_a_clear_error_and_keeps_the_results(retrained):
    uri = f"http://127.0.0.1:{free_port()}"
    before = {p.name for p in retrained[0].iterdir()}
    started = time.monotonic()
    # an unreachable server is one clear error that says where the results still are
    with pytest.raises(TrackingError, match=f"MLflow at {uri} is unreachable.*retrain results are still "
                                                     f"in the pipeline's artifacts"):
        steps.register(retrained, steps.evaluate(retrained), uri=uri)
    assert time.monotonic() - started < 15 and {p.name for p in retrained[0].iterdir()} == before


def test_tracking_defaults_to_a_local_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # without a URI or $MLFLOW_TRACKING_URI: a SQLite file in the state folder
    assert tracking.tracking_uri("", state_dir=tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    # $MLFLOW_TRACKING_URI wins over the default, and an explicit URI over both
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
    # exit code 2, and the message says which export is missing and the command that makes it
    assert cli.main(["pipeline", "run-local", str(manifest), "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert "no trials export at" in err and f"run `hpo tune {manifest}" in err


def test_local_arguments_take_data_and_epochs_from_the_local_trials(tmp_path):
    manifest = tiny_manifest(tmp_path / "tiny.yaml")
    folder = tmp_path / "state" / "katib-hpo.lstm-tiny"
    (folder / "trial-0000").mkdir(parents=True)
    (folder / "trials.json").write_text(json.dumps([{"name": "lstm-tiny-0000", "condition": "Succeeded"}]))
    (folder / "trial-0000" / "config.json").write_text(json.dumps(
        {"data": "sample:nasdaq", "epochs": 4, "target": "volatility", "val_frac": 0.3, "test_frac": 0.3, "lr": 0.1}))
    arguments = local.local_arguments(manifest, state_dir=tmp_path / "state")
    # `hpo tune --set data=... --set epochs=...` is not in the export: the trials' own config tells
    assert (arguments["data"], arguments["epochs"], arguments["tune_mode"]) == ("sample:nasdaq", 4, "export")
    assert local.local_arguments(manifest, state_dir=tmp_path / "state", data="sample:sp500",
                                    epochs=9)["epochs"] == 9
    # so do the target and the splits the trials were tuned on (`--set target=volatility`), before the caller's
    # retrain flags, which win; searched parameters (lr) stay each winner's own
    from hpo_lib.pipeline.settings import LAPTOP

    full = local.pipeline_arguments(manifest, replace(LAPTOP, retrain_flags="--threads=1 --test-frac=0.2"),
                                    state_dir=tmp_path / "state", trials=None, data=None, tracking_uri="file:/x",
                                    mlflow_experiment="", model_name="m")
    assert full["retrain_flags"] == "--target=volatility --val-frac=0.3 --test-frac=0.3 --threads=1 --test-frac=0.2"
    assert "problem_flags" not in full



def test_run_local_on_a_study_whose_trials_all_failed_says_no_trial_succeeded(tmp_path, capsys):
    manifest = tiny_manifest(tmp_path / "tiny.yaml")
    folder = tmp_path / "state" / "katib-hpo.lstm-tiny"
    folder.mkdir(parents=True)
    records = [{"name": f"lstm-tiny-000{i}", "condition": "Failed", "failReason": "exited with code 2"}
               for i in range(3)]
    (folder / "trials.json").write_text(json.dumps(records))
    code = cli.main(["pipeline", "run-local", str(manifest), "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    # exit code 2 and the words that say what happened: the count, the first reason, where to look
    assert code == 2 and err.count("\n") == 1
    assert "no trial succeeded: 3 trial(s)" in err and "(3 failed)" in err and "exited with code 2" in err
    assert f"{folder}/trial-*/trial.log" in err
    # not the old, wrong words
    assert "cannot tell which data" not in err
