"""Naive baselines on real data: computed on the same splits, chosen on lint."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_lib import data
from hpo_lib.data import baselines


@pytest.fixture(scope="module")
def direction(sp500):
    return data.prepare(sp500, target="direction", window=20)


def test_prior_baseline_is_the_majority_class_and_its_entropy(direction):
    report = baselines.evaluate(direction, ("val", "test")).report
    up_share_train = direction.y["train"].mean()
    up_share_val = direction.y["val"].mean()
    # the train prior predicts the majority class (up on the S&P 500) ...
    assert up_share_train > 0.5
    assert report["train_prior"]["val"]["acc"] == pytest.approx(up_share_val)
    # ... and its cross-entropy is the honest bar (close to ln 2, never below the val entropy)
    entropy = -(up_share_val * np.log(up_share_val) + (1 - up_share_val) * np.log(1 - up_share_val))
    assert entropy <= report["train_prior"]["val"]["loss"] < np.log(2) + 0.01
    assert baselines.best_baseline(report) == "train_prior"


def test_return_baselines_on_sp500(sp500):
    ds = data.prepare(sp500, window=20)
    report = baselines.evaluate(ds, ("val",)).report
    val_up = np.mean(ds.y["val"] > 0)
    # "zero" never calls up, so its directional accuracy is the share of non-up days
    assert report["zero"]["val"]["dir_acc"] == pytest.approx(1 - val_up)
    # persistence of daily returns is worse than the random walk on an index (about twice the MSE)
    assert report["persistence"]["val"]["rmse"] > 1.2 * report["zero"]["val"]["rmse"]
    assert baselines.best_baseline(report) in ("zero", "train_mean")


def test_volatility_baseline_is_previous_window(sp500):
    ds = data.prepare(sp500, target="volatility", horizon=5, window=20)
    report = baselines.evaluate(ds, ("val",)).report
    # volatility clusters: last week's volatility beats the training mean
    assert report["previous_window"]["val"]["loss"] < report["train_mean"]["val"]["loss"]


def test_best_baseline_is_chosen_on_validation_not_test():
    report = {"a": {"val": {"loss": 1.0}, "test": {"loss": 9.0}}, "b": {"val": {"loss": 2.0}, "test": {"loss": 0.1}}}
    assert baselines.best_baseline(report) == "a"


def test_best_volatility_baseline_is_chosen_by_validation_qlike():
    report = {
        "previous_window": {"val": {"loss": 0.2, "qlike": -8.1}, "test": {"loss": 0.2, "qlike": -9.9}},
        "garch": {"val": {"loss": 0.3, "qlike": -8.7}, "test": {"loss": 0.3, "qlike": -8.0}},
    }
    # QLIKE ranks volatility forecasts: garch wins on validation QLIKE although its MSE loss is higher
    assert baselines.ranking_metric(report["garch"]["val"]) == "qlike"
    assert baselines.best_baseline(report) == "garch"


def test_return_target_has_only_naive_baselines(sp500):
    ds = data.prepare(sp500, window=20)
    results = baselines.evaluate(ds, ("val",))
    # nothing is fit for the return target: the zero, train-mean and persistence forecasts only
    assert results.fitted == {} and results.skipped == {}
    assert set(results.report) == {"zero", "train_mean", "persistence"}
    assert "qlike" not in results.report["zero"]["val"]
