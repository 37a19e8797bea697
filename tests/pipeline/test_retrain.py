"""The final retrain: every epoch on train + validation, the one look at test (bar, DM, backtest), the saved model,
and the trial's own flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpo_lib import data
from hpo_lib.data import inference
from hpo_lib.errors import ConfigError
from hpo_lib.pipeline import retrain, steps
from tests.conftest import ar1_returns, prices_from_returns
from tests.pipeline.conftest import SIGNAL_FLAGS


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
def assert_purged(split: data.Split, window: int, horizon: int) -> None:
    """Every training sample's footprint ends a purge gap before the first test sample's window starts."""
    last_label_row = int(split.train[-1]) + horizon
    first_input_row = int(split.test[0]) - window + 1
    assert first_input_row - last_label_row - 1 >= data.purge_gap(window, horizon)
    assert split.train_rows[1] == first_input_row - data.purge_gap(window, horizon)


@pytest.mark.parametrize("n_origins, sizes", [(1, [12]), (2, [6, 6]), (3, [4, 4, 4]), (5, [3, 3, 2, 2, 2])])
def test_origin_splits_cut_the_test_days_into_purged_blocks(n_origins, sizes):
    refit = data.refit_split(data.chronological_split(60, window=3, horizon=1, val_frac=0.2, test_frac=0.3,
                                                      min_samples=1), window=3, horizon=1)
    splits = retrain.origin_splits(refit, n_origins, window=3, horizon=1)
    # the blocks partition the test days, in order, each forecast by a model trained up to its own origin
    assert [len(s.test) for s in splits] == sizes
    assert np.concatenate([s.test for s in splits]).tolist() == refit.test.tolist()
    for s in splits:
        assert_purged(s, window=3, horizon=1)
    # the first origin's split is the refit itself; later origins train on more rows
    assert splits[0].train.tolist() == refit.train.tolist() and splits[0].train_rows == refit.train_rows
    assert all(a.train_rows[1] < b.train_rows[1] for a, b in zip(splits, splits[1:]))


def test_origin_splits_default_to_quarters_and_refuse_more_origins_than_days():
    refit = data.refit_split(data.chronological_split(2000, window=10, horizon=1), window=10, horizon=1)
    # 0 means one origin per 63 test days
    assert len(retrain.origin_splits(refit, 0, window=10, horizon=1)) == round(len(refit.test) / 63)
    with pytest.raises(ConfigError, match="test_origins must be 0 \\(quarterly\\) or 1.."):
        retrain.origin_splits(refit, len(refit.test) + 1, window=10, horizon=1)


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
    args = retrain.retrain_args(SIGNAL_FLAGS, data=steps.data_spec(signal_data))
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
