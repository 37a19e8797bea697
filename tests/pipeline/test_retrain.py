"""The final retrain: every epoch on train + validation, the one look at test (bar, DM, backtest), the saved model,
the trial's own flags, and seeds retrained together in one process (per seed, a lone retrain's numbers)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpo_lib import data
from hpo_lib.data import inference
from hpo_lib.errors import ConfigError
from hpo_lib.pipeline import records, retrain, steps
from tests.conftest import ar1_returns, prices_from_returns
from tests.pipeline.conftest import SIGNAL_FLAGS, item


# ----------------------------------------------------------------------------------------------- retrain
def test_retrain_runs_every_epoch_on_train_and_validation(retrained):
    folder = retrained[0]
    # the retrain writes every one of its files
    assert {p.name for p in folder.iterdir()} >= set(retrain.FILES)
    history = json.loads((folder / "history.json").read_text())
    # no early stopping: all 20 epochs ran; validation is inside the training rows and is named in-sample
    assert [h["epoch"] for h in history] == list(range(1, 21)) and "insample_val_loss" in history[0]
    assert not any(k.startswith("val_") for k in history[0])


def test_retrain_records_which_epoch_it_keeps(retrained):
    report = json.loads((retrained[0] / "evaluation.json").read_text())
    history = json.loads((retrained[0] / "history.json").read_text())
    best = min(history, key=lambda h: h["insample_val_loss"])["epoch"]
    # every epoch runs, and the kept weights are those of the lowest in-sample validation loss, said so
    assert report["run"]["epochs"] == 20 and report["run"]["kept_epoch"] == best
    assert "in-sample validation" in report["run"]["kept_epoch_rule"]


def test_retrain_beats_every_baseline_on_predictable_data(retrained):
    report = json.loads((retrained[0] / "evaluation.json").read_text())
    # the signal is nonlinear: the model beats every baseline, the linear model on the same features included,
    # and DM says it is no accident
    assert report["beats_bar"] and report["bar"] in report["baselines"] and "ridge" in report["baselines"]
    assert report["model"]["loss"] < min(b["loss"] for b in report["baselines"].values())
    assert report["dm"]["statistic"] < 0 and report["dm"]["p_value"] < 0.01 and report["dm"]["against"] == report["bar"]
    losses = report["losses"]
    # the per-day losses kept for the search-aware tests are the scored ones
    assert np.mean(losses["model"]) == pytest.approx(report["model"]["loss"])
    assert np.mean(losses["baselines"]["ridge"]) == pytest.approx(report["baselines"]["ridge"]["loss"])
    # the forecast's sign is worth trading here, costs included, and beats buy-and-hold
    backtest = report["backtest"]
    assert backtest["model"]["sharpe"] > backtest["buy_and_hold"]["sharpe"] and backtest["model"]["cost_bps"] == 5.0
    assert 0 <= backtest["model"]["max_drawdown"] < 1 and 0.5 < backtest["model"]["win_rate"] < 1


def test_nested_tests_and_intervals_see_the_predictable_signal(retrained):
    inference = json.loads((retrained[0] / "evaluation.json").read_text())["inference"]
    # Clark-West rejects both nested baselines, the out-of-sample R² is positive, the directions are no accident
    assert all(cw["p_value"] < 0.01 for cw in inference["clark_west"].values())
    assert set(inference["clark_west"]) == {"zero", "train_mean"}
    assert inference["oos_r2"]["r2"] > 0.05 and inference["oos_r2"]["against"] == "train_mean"
    assert inference["pesaran_timmermann"]["p_value"] < 0.01
    # the Sharpe ratio's interval excludes 0 and survives the 7 configurations tried
    sharpe = inference["intervals"]["sharpe"]
    assert 0 < sharpe["low"] <= sharpe["estimate"] <= sharpe["high"] and sharpe["level"] == 0.95
    assert inference["dsr"]["n_trials"] == 7 and inference["dsr"]["dsr"] > 0.95 and inference["psr"]["psr"] > 0.95
    # the loss-difference interval (model minus bar) lies below 0: the model's loss is lower on resampled days too
    assert inference["intervals"]["loss_diff"]["high"] < 0 and not inference["skipped"]


# ----------------------------------------------------------------------------------------------- rolling origin
def test_rolling_origin_forecasts_every_test_day_from_a_model_that_never_saw_it(retrained):
    report = json.loads((retrained[0] / "evaluation.json").read_text())
    rolling = report["rolling"]
    single = np.loadtxt(retrained[0] / "forecasts.csv", delimiter=",", skiprows=1, usecols=2)
    origins = rolling["origins"]
    # three origins, their blocks cover the test period once, each refit's training ends before its block
    assert rolling["n_origins"] == 3 and sum(o["n_test"] for o in origins) == report["n_test"] == len(single)
    assert origins[0]["origin"] == report["test_period"][0] and all(o["train_end"] < o["origin"] for o in origins)
    # the first block is the single-window model's; the later ones come from refits, which differ
    first = origins[0]["n_test"]
    np.testing.assert_allclose(rolling["forecast"][:first], single[:first], rtol=1e-6)
    assert not np.allclose(rolling["forecast"][first:], single[first:])
    # the rolling forecasts are judged like the single window: bar, DM, intervals, per-block losses
    assert rolling["bar"] in rolling["baselines"] and "p_value" in rolling["dm"]
    assert "loss_diff" in rolling["inference"]["intervals"]
    assert all(o["model_loss"] > 0 and o["bar_loss"] > 0 for o in origins)
    assert report["run"]["test_origins"] == 3


# ----------------------------------------------------------------------------------------------- load_model
def test_the_saved_model_reproduces_the_evaluated_forecasts(retrained, signal_data):
    import torch

    folder = retrained[0]
    model = retrain.load_model(folder)
    args = retrain.retrain_args(SIGNAL_FLAGS, data=records.data_spec(signal_data))
    ds = data.prepare(data.load_prices(args.data), window=args.seq_len, split_window=args.split_window, refit=True)
    with torch.no_grad():
        forecast = ds.target_scaler.inverse(model(torch.from_numpy(ds.x["test"])).numpy()[:, 0])
    saved = np.loadtxt(folder / "forecasts.csv", delimiter=",", skiprows=1, usecols=2)
    # the model rebuilt from its folder predicts the test forecasts the retrain wrote
    np.testing.assert_allclose(forecast, saved, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- evaluate_test
def test_a_test_split_too_short_for_dm_is_reported_not_fatal():
    prices = prices_from_returns(ar1_returns(400, seed=2))
    # horizon 20 needs 40 loss pairs; this test split has fewer
    ds = data.prepare(prices, window=5, split_window=5, horizon=20, val_frac=0.2, test_frac=0.18)
    assert len(ds.y["test"]) < 40
    report = retrain.evaluate_test(ds, ds.persistence["test"])
    # the DM test is replaced by the reason it could not run
    assert "needs at least 40 loss pairs for horizon=20" in report["dm"]["error"]
    # everything else is still there
    assert "loss" in report["model"] and "sharpe" in report["backtest"]["model"]


def test_a_test_split_too_short_for_the_intervals_names_them_and_computes_the_rest():
    prices = prices_from_returns(ar1_returns(300, seed=3))
    # a split of our own (prepare's refuses fewer than 30 samples per split): 21 test days
    split = data.chronological_split(280, window=5, horizon=1, val_frac=0.2, test_frac=0.1, min_samples=1)
    ds = data.prepare(prices, window=5, split_window=5, split=split)
    assert len(ds.y["test"]) < inference.MIN_DAYS
    report = retrain.evaluate_test(ds, ds.persistence["test"])
    # every bootstrap interval and the Sharpe tests are skipped, each by name with its reason
    skipped = report["inference"]["skipped"]
    assert {"loss_diff", "sharpe", "hit_rate", "max_drawdown", "psr", "dsr"} <= set(skipped)
    assert skipped["sharpe"].startswith("the sharpe interval needs at least 30 test days")
    # the figures that need fewer days are still there
    assert "oos_r2" in report["inference"] and "loss" in report["model"] and "p_value" in report["dm"]


def test_a_constant_forecast_is_reported_without_division_by_zero(sp500):
    ds = data.prepare(sp500, window=20, refit=True)
    flat = np.full(len(ds.y["test"]), float(np.mean(ds.y["train"])))
    report = retrain.evaluate_test(ds, flat)
    inference_report = report["inference"]
    # a constant forecast has no timing: Pesaran-Timmermann is skipped and says why
    assert "never changes" in inference_report["skipped"]["pesaran_timmermann"]
    # the rest is finite: it trades always long, like buy-and-hold; Clark-West against zero runs
    assert math.isfinite(inference_report["intervals"]["sharpe"]["estimate"])
    assert "p_value" in inference_report["clark_west"]["zero"] and math.isfinite(inference_report["oos_r2"]["r2"])


def test_val_test_gap_is_test_minus_the_tuning_value():
    # val_loss -> test loss, test minus tuning
    assert retrain.val_test_gap("val_loss", 0.5, {"loss": 0.75}) == 0.25
    # no tuning value, or a metric test does not have: no gap
    assert retrain.val_test_gap("val_loss", None, {"loss": 0.75}) is None
    assert retrain.val_test_gap("val_qlike", 0.5, {"loss": 0.75}) is None


# ----------------------------------------------------------------------------------------------- retrain_args
def test_retrain_flags_are_checked_like_trial_flags():
    # an unknown flag, and an unknown override, are refused by name
    with pytest.raises(ConfigError, match="unknown flag --colour"):
        retrain.retrain_args(["--colour=blue"])
    with pytest.raises(ConfigError, match="unknown retrain override"):
        retrain.retrain_args([], colour="blue")


def test_retrain_args_apply_overrides_after_the_flags_and_validate_the_result():
    args = retrain.retrain_args(["python", "-m", "hpo_lib.trial", "--model=mlp", "--seq-len=20"], seq_len=30)
    # words that are not flags are skipped; an override wins over the flag
    assert (args.model, args.seq_len) == ("mlp", 30)
    # the merged arguments are checked like a trial's: --seq-len may not exceed --split-window
    with pytest.raises(ConfigError, match="--seq-len=120 exceeds --split-window=90"):
        retrain.retrain_args(["--seq-len=20"], seq_len=120)


# ----------------------------------------------------------------------------------------------- seeds together
SEED_FLAGS = ["--hidden-size=8", "--num-layers=1", "--seq-len=5", "--split-window=10", "--epochs=2", "--lr=0.003",
              "--batch-size=128", "--optimizer=adam", "--threads=1", "--dropout=0.1"]
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("family", ["mlp", "lstm", "gru", "cnn-lstm"])
def test_seeds_retrained_together_match_lone_retrains(family, signal_data, tmp_path):
    # seeds retrained together in one process: per seed the same numbers as a lone retrain with that seed
    args = retrain.retrain_args([f"--model={family}", *SEED_FLAGS], data=records.data_spec(signal_data),
                                eval_test=True)
    together = retrain.retrain_seeds(args, {s: tmp_path / "together" / f"seed{s}" for s in SEEDS}, test_origins=1)
    for seed in SEEDS:
        alone = retrain.retrain(retrain.retrain_args([f"--model={family}", *SEED_FLAGS, f"--seed={seed}"],
                                                     data=records.data_spec(signal_data), eval_test=True),
                                tmp_path / "alone" / f"seed{seed}", test_origins=1)
        mine, lone = together[seed], alone
        # each seed's report is its own: its seed, its kept epoch, its test metrics and per-day losses
        assert mine["run"]["seed"] == seed and mine["run"]["kept_epoch"] == lone["run"]["kept_epoch"]
        assert mine["model"] == pytest.approx(lone["model"], rel=1e-4, abs=1e-7)
        np.testing.assert_allclose(mine["losses"]["model"], lone["losses"]["model"], rtol=1e-4, atol=1e-9)
        # the written history has today's keys and, timing aside, the lone retrain's values
        ours, theirs = (json.loads((tmp_path / side / f"seed{seed}" / "history.json").read_text())
                        for side in ("together", "alone"))
        assert [set(h) for h in ours] == [set(h) for h in theirs]
        for a, b in zip(ours, theirs):
            assert {k: v for k, v in a.items() if k != "train_time_s"} == pytest.approx(
                {k: v for k, v in b.items() if k != "train_time_s"}, rel=1e-4, abs=1e-7)
        # every seed's folder holds the files a lone retrain writes
        assert {p.name for p in (tmp_path / "together" / f"seed{seed}").iterdir()} >= set(retrain.FILES)


def test_the_retrain_step_writes_one_folder_per_seed_that_the_summary_reads(signal_data, tmp_path):
    by_seed = steps.run_retrain(item("t-two", 1, [0, 1], 0.6, SIGNAL_FLAGS + ["--epochs=2"]), signal_data,
                                tmp_path / "winner", test_origins=1)
    # one task, two seeds: each has its scalars, its folder and its own item (seed, id)
    assert sorted(by_seed) == [0, 1] and all("test_loss" in v for v in by_seed.values())
    saved = [json.loads((tmp_path / "winner" / f"seed{s}" / "item.json").read_text()) for s in (0, 1)]
    assert [(i["seed"], i["id"]) for i in saved] == [(0, "001-t-two-seed0"), (1, "001-t-two-seed1")]
    # the evaluate step takes the winner's folder and sees its two seeds
    summary = steps.evaluate([tmp_path / "winner"])
    assert summary["n_retrains"] == 2 and summary["winners"][0]["seeds"] == [0, 1]


# ----------------------------------------------------------------------------------------------- serving
@pytest.mark.e2e
def test_the_served_model_forecasts_from_raw_prices_what_the_retrain_evaluated(retrained, signal_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import mlflow.pyfunc
    import pandas as pd
    import requests

    from hpo_lib.pipeline import serving
    from tests.conftest import free_port, wait_for_http

    folder = retrained[0]
    path = serving.save(folder, tmp_path / "forecaster", code_path=records.package_copy(),
                        requirements=records.model_requirements())
    expected = pd.read_csv(folder / "forecasts.csv")
    bars = pd.read_csv(signal_data.parent / "syn.csv")
    # raw daily bars up to the last test day, far fewer than the retrain saw: the scalers travel with the model
    request = bars[bars["Date"] <= expected["date"].iloc[-1]].tail(120)
    got = mlflow.pyfunc.load_model(str(path)).predict(request)
    # one forecast per date with a full window behind it (21 bars of warm-up, then the 5-day sequence)
    assert len(got) == 120 - 21 - 5 + 1 and got["date"].iloc[-1] == expected["date"].iloc[-1]
    # on the test days they are the forecasts the retrain evaluated
    both = expected.merge(got, on="date", suffixes=("", "_served"))
    assert len(both) > 50
    np.testing.assert_allclose(both["forecast_served"], both["forecast"], rtol=1e-4, atol=1e-7)

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", str(path), "--env-manager",
             "local", "-h", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # the serving process runs `uvicorn` from the PATH: this venv's, as activated
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, log=log)
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                               json={"dataframe_split": request.to_dict(orient="split")})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # `mlflow models serve` answers one request of raw bars with the same forecasts
    assert answer.status_code == 200, answer.text[-2000:]
    served = pd.DataFrame(answer.json()["predictions"])
    np.testing.assert_allclose(served["forecast"], got["forecast"], rtol=1e-6)
    assert served["date"].tolist() == got["date"].tolist()
