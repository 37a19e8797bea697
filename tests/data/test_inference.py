"""Inference: each statistic against a known answer (a published example or a simulated series whose answer is
known), and bad input (too short, constant, too few forecasts) named and skipped."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hpo_lib.data import inference
from hpo_lib.errors import DataError


def ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


# ----------------------------------------------------------------------------------------------- Sharpe ratios
def test_deflated_sharpe_matches_the_papers_worked_example():
    # Bailey and Lopez de Prado (2014), section 4: SR 2.5 a year over 1250 days (250 a year), skew -3, kurtosis 10,
    # 100 trials whose Sharpe ratios vary by 0.5 a year: the expected maximum is about 0.1132 a day, DSR 0.9004
    sr, variance = 2.5 / math.sqrt(250), 0.5 / 250
    threshold = inference.expected_max_sharpe(100, variance)
    assert threshold == pytest.approx(0.1132, abs=5e-4)
    assert inference.psr_from_moments(sr, 1250, -3.0, 10.0, threshold) == pytest.approx(0.9004, abs=5e-4)


def test_probabilistic_sharpe_is_one_half_at_its_benchmark_and_one_trial_is_not_deflated():
    rng = np.random.default_rng(0)
    r = 0.01 * rng.standard_normal(500) + 0.001
    psr = inference.probabilistic_sharpe(r)
    # against its own Sharpe ratio the probability is exactly one half
    assert inference.psr_from_moments(0.2, 500, 0.0, 3.0, 0.2) == pytest.approx(0.5)
    # one trial: nothing to deflate, the DSR is the PSR against 0; more trials only lower it
    assert inference.deflated_sharpe(r, n_trials=1)["dsr"] == pytest.approx(psr["psr"])
    assert inference.deflated_sharpe(r, n_trials=50)["dsr"] < inference.deflated_sharpe(r, n_trials=5)["dsr"]
    # normal returns: skewness near 0 and kurtosis near 3
    assert abs(psr["skew"]) < 0.3 and psr["kurtosis"] == pytest.approx(3.0, abs=0.5)


def test_constant_strategy_returns_are_refused_not_divided_by():
    # a strategy that never moves has no Sharpe ratio to test
    with pytest.raises(DataError, match="returns do not vary"):
        inference.probabilistic_sharpe(np.zeros(100))
    assert "do not vary" in inference.attempt(inference.deflated_sharpe, np.full(100, 0.001), n_trials=3)["skipped"]


# ----------------------------------------------------------------------------------------------- Pesaran-Timmermann
def test_pesaran_timmermann_squared_is_the_chi_square_of_independence():
    rng = np.random.default_rng(1)
    actual = rng.random(20000) < 0.55
    forecast = np.where(rng.random(20000) < 0.6, actual, rng.random(20000) < 0.5)
    pt = inference.pesaran_timmermann(actual, forecast)
    table = np.array([[np.sum(actual & forecast), np.sum(actual & ~forecast)],
                      [np.sum(~actual & forecast), np.sum(~actual & ~forecast)]])
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    # for a 2x2 table the PT statistic is asymptotically the signed root of Pearson's chi-square (PT 1992, section 3)
    assert pt["statistic"] ** 2 == pytest.approx(chi2, rel=0.01) and pt["p_value"] < 1e-10


def test_pesaran_timmermann_on_independent_directions_is_not_significant_and_hand_checked():
    actual = np.array([1, 1, 0, 1, 0, 0, 1, 1, 0, 1] * 10, dtype=float)
    forecast = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 1] * 10, dtype=float)
    pt = inference.pesaran_timmermann(actual, forecast)
    # hit rate 0.7; py = 0.6, px = 0.5: P* = 0.5; V(P) = 0.25/100, V(P*) = 0.04*0.25/100 + 0 + 4*0.6*0.5*0.4*0.5/1e4
    var = 0.25 / 100 - (0.04 * 0.25 / 100 + 4 * 0.6 * 0.5 * 0.4 * 0.5 / 1e4)
    assert pt["hit_rate"] == pytest.approx(0.7) and pt["expected_hit_rate"] == pytest.approx(0.5)
    assert pt["statistic"] == pytest.approx(0.2 / math.sqrt(var))
    rng = np.random.default_rng(2)
    # independent directions: no timing, a large p-value
    assert inference.pesaran_timmermann(rng.random(500) < 0.5, rng.random(500) < 0.5)["p_value"] > 0.05


def test_pesaran_timmermann_refuses_a_forecast_that_never_changes_direction():
    # always "up": no timing to test, and no division by zero
    with pytest.raises(DataError, match="forecast direction never changes"):
        inference.pesaran_timmermann(np.arange(100) % 2, np.ones(100))


# ----------------------------------------------------------------------------------------------- Clark-West, R²
def test_clark_west_rejects_a_true_signal_and_keeps_its_size_under_the_null():
    rng = np.random.default_rng(3)
    n = 400
    x = rng.standard_normal(n)
    y = 0.3 * x + rng.standard_normal(n)
    # the larger model holds the true signal: Clark-West rejects the nested zero forecast
    assert inference.clark_west(y, np.zeros(n), 0.3 * x)["p_value"] < 1e-4
    # under the null (the nested model is true) a larger model with estimation noise rejects about 10% of the time
    rejections = 0
    for _ in range(300):
        y0 = rng.standard_normal(n)
        noisy = rng.normal(0, 0.05) * rng.standard_normal(n)  # a fitted coefficient on an irrelevant predictor
        rejections += inference.clark_west(y0, np.zeros(n), noisy)["p_value"] < 0.10
    assert 0.03 < rejections / 300 < 0.18


def test_clark_west_is_a_t_statistic_of_the_adjusted_differential():
    rng = np.random.default_rng(4)
    y, f1, f2 = rng.standard_normal((3, 200))
    adj = (y - f1) ** 2 - ((y - f2) ** 2 - (f1 - f2) ** 2)
    t = stats.ttest_1samp(adj, 0.0).statistic * math.sqrt(200 / 199)  # scipy divides by n - 1, Newey-West by n
    cw = inference.clark_west(y, f1, f2)
    # horizon 1: the statistic is the adjusted differential's t-statistic, the p-value one-sided normal
    assert cw["statistic"] == pytest.approx(t) and cw["p_value"] == pytest.approx(stats.norm.sf(t))
    # identical forecasts: nothing to test, no division by zero
    assert inference.clark_west(y, f1, f1) == {"statistic": 0.0, "p_value": 0.5, "n": 200, "mean_adjusted_diff": 0.0}


def test_oos_r2_is_one_minus_the_ratio_of_squared_errors():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    # a perfect forecast explains everything, the benchmark itself nothing, a worse one is negative
    assert inference.oos_r2(y, y, np.full(4, 2.5))["r2"] == 1.0
    assert inference.oos_r2(y, np.full(4, 2.5), np.full(4, 2.5))["r2"] == 0.0
    assert inference.oos_r2(y, np.full(4, 0.0), np.full(4, 2.5))["r2"] == pytest.approx(1 - 30 / 5)
    # a benchmark without error leaves nothing to explain
    with pytest.raises(DataError, match="no error to improve on"):
        inference.oos_r2(y, y, y)


# ----------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_interval_of_a_mean_matches_the_normal_interval_on_iid_data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(2000)
    ci = inference.bootstrap_interval(np.mean, x)
    half = 1.96 / math.sqrt(2000)
    # i.i.d. data: the optimal block is short and the interval is the textbook one, mean +- 1.96 sd / sqrt(n)
    assert ci["block_length"] < 3
    assert ci["low"] == pytest.approx(x.mean() - half, abs=0.25 * half)
    assert ci["high"] == pytest.approx(x.mean() + half, abs=0.25 * half)


def test_dependent_data_get_longer_blocks_and_wider_intervals():
    x = ar1(2000, 0.8, seed=6)
    ci = inference.bootstrap_interval(np.mean, x)
    naive = 1.96 * x.std() / math.sqrt(2000)
    # AR(1) with phi 0.8: the long-run sd is 3x the sd; the blocks grow and so does the interval
    assert ci["block_length"] > 5 and (ci["high"] - ci["low"]) / 2 > 2 * naive


def test_bootstrap_of_a_constant_has_zero_width_and_a_short_series_is_named():
    # constant input: a zero-width interval, never a division by zero
    ci = inference.bootstrap_interval(np.mean, np.zeros(100))
    assert ci["low"] == ci["high"] == 0.0 and ci["block_length"] == 1.0
    # too few test days: the statistic is named in the reason
    skipped = inference.attempt(inference.bootstrap_interval, np.mean, np.zeros(10), name="the Sharpe interval")
    assert skipped == {"skipped": "the Sharpe interval needs at least 30 test days, got 10"}


# ----------------------------------------------------------------------------------------------- SPA, MCS
def test_spa_rejects_when_one_model_is_better_and_not_when_all_are_worse():
    rng = np.random.default_rng(7)
    n = 500
    bench = rng.standard_normal(n) ** 2
    worse = bench[:, None] + 0.3 + 0.5 * rng.standard_normal((n, 4))
    better = np.column_stack([worse, bench - 0.4 + 0.5 * rng.standard_normal(n)])
    none = inference.spa_test(bench, worse, n_configurations=40)
    one = inference.spa_test(bench, better, n_configurations=40, names=["a", "b", "c", "d", "e"])
    # no model beats the benchmark: nothing rejects; one does: SPA and the Reality Check reject and name it
    assert none["spa_p"] > 0.5 and none["reality_check_p"] > 0.5
    assert one["spa_p"] < 0.01 and one["best_model"] == "e" and one["n_configurations"] == 40
    # the consistent p-value lies between its bounds; the Reality Check (no recentring) is never below SPA's lower
    assert one["spa_p_lower"] <= one["spa_p"] <= one["spa_p_upper"]
    assert none["reality_check_p"] >= none["spa_p_lower"]


def test_spa_refuses_a_constant_differential_and_a_short_split():
    bench = np.linspace(1, 2, 100)
    with pytest.raises(DataError, match="constant"):
        inference.spa_test(bench, bench[:, None] + 0.1, n_configurations=3)
    assert "needs at least 30 test days" in inference.attempt(
        inference.spa_test, bench[:10], bench[:10, None], n_configurations=3)["skipped"]


def test_mcs_keeps_the_best_and_its_equals_and_drops_the_clearly_worse():
    rng = np.random.default_rng(8)
    n = 600
    base = rng.standard_normal(n) ** 2
    tie = rng.standard_normal(n) ** 2  # the same expected loss, other days' luck
    losses = {"best": base, "tie": tie, "bad": base + 1.0 + rng.standard_normal(n), "copy": base.copy()}
    mcs = inference.model_confidence_set(losses)
    # the clearly worse forecast leaves the 90% set; the best, its equal in expectation and its exact copy stay
    assert set(mcs["included"]) == {"best", "tie", "copy"} and mcs["pvalues"]["bad"] < 0.1
    assert mcs["pvalues"]["copy"] == mcs["pvalues"]["best"] and mcs["size"] == 0.1


def test_mcs_needs_two_different_forecasts():
    x = np.ones(50)
    # fewer forecasts than the MCS compares: a clear skip, not an arch error
    assert inference.attempt(inference.model_confidence_set, {"only": x}) == {
        "skipped": "the Model Confidence Set needs at least 2 forecasts to compare, got 1"}
    with pytest.raises(DataError, match="at least 2 forecasts with different losses"):
        inference.model_confidence_set({"a": x, "b": x.copy()})
