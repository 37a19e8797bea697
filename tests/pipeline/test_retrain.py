"""The final retrain: every epoch on train + validation, the one look at test (bar, DM, backtest), the saved model,
and the trial's own flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo_lib import data
from hpo_lib.errors import ConfigError
from hpo_lib.pipeline import retrain, steps
from tests.conftest import ar1_returns, prices_from_returns
from tests.pipeline.conftest import AR1_FLAGS


# ----------------------------------------------------------------------------------------------- retrain
def test_retrain_runs_every_epoch_on_train_and_validation(retrained):
    folder = retrained[0]
    # the retrain writes every one of its files
    assert {p.name for p in folder.iterdir()} >= set(retrain.FILES)
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


# ----------------------------------------------------------------------------------------------- load_model
def test_the_saved_model_reproduces_the_evaluated_forecasts(retrained, ar1_data):
    import torch

    folder = retrained[0]
    model = retrain.load_model(folder)
    args = retrain.retrain_args(AR1_FLAGS, data=steps.data_spec(ar1_data))
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
