"""Scoring: per-sample losses and the scores they average to, QLIKE, Diebold-Mariano with the
Harvey-Leybourne-Newbold correction (known values, edge cases, size under the null), and the trading backtest."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_lib import data
from hpo_lib.data import baselines, scoring
from hpo_lib.data.scoring import diebold_mariano
from hpo_lib.errors import DataError
from tests.conftest import ar1_returns, prices_from_returns


@pytest.fixture(scope="module")
def sp500_vol(sp500):
    return data.prepare(sp500, target="volatility", horizon=5, window=60, split_window=90)


# ----------------------------------------------------------------------------------------------- scores and losses
@pytest.mark.parametrize("target", ["return", "direction", "volatility"])
def test_per_day_losses_average_exactly_to_the_ranking_metric(target):
    ds = data.prepare(prices_from_returns(ar1_returns(900, seed=3)), target=target, window=5, split_window=5)
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.05, 0.95, len(ds.y["test"])) if target == "direction" else rng.normal(
        0, np.std(ds.y["test"]), len(ds.y["test"]))
    for name, forecast in {**baselines.naive_forecasts(ds, "test"), "noise": noise}.items():
        scores = scoring.score(ds, "test", forecast)
        # the Diebold-Mariano test compares exactly the losses the verdict ranks by: their mean is the score itself
        assert scores[scoring.ranking_metric(scores)] == np.mean(scoring.sample_losses(ds, "test", forecast)), name


def _ma_losses(h: int, n: int = 120, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Loss pairs whose differential is autocorrelated up to lag h-1, as overlapping h-step forecasts make it."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n + h)
    loss_a = np.convolve(e, np.ones(h), "valid")[:n] ** 2 + 0.3
    loss_b = rng.normal(size=n) ** 2 + 0.1 * loss_a
    return loss_a, loss_b


# reference values from the independent `dieboldmariano` 1.1.0 package (dm_test, acf variance, Harvey correction)
@pytest.mark.parametrize("horizon, statistic, p_value", [
    (1, 2.4761074904705556, 0.014688698130747028),
    (3, 4.701188187462346, 7.0180975618221926e-06),
    (5, 2.6726382738620873, 0.008581655907951171),
])
def test_dm_matches_an_independent_implementation(horizon, statistic, p_value):
    rng = np.random.default_rng(3)
    for h in (1, 3, 5):  # the reference drew the three cases from one generator, in this order
        e = rng.normal(size=120 + h)
        loss_a = np.convolve(e, np.ones(h), "valid")[:120] ** 2 + 0.3
        loss_b = rng.normal(size=120) ** 2 + 0.1 * loss_a
        if h == horizon:
            break
    result = diebold_mariano(loss_a, loss_b, horizon)
    # same statistic and two-sided Student-t p-value as the reference
    assert result.statistic == pytest.approx(statistic, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-6)
    assert result.n == 120 and result.mean_diff == pytest.approx(np.mean(loss_a - loss_b))


def test_dm_hln_formula_by_hand_for_one_step():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 1.0, 2.5, 2.0])
    d = a - b
    # h = 1: variance is gamma_0, correction sqrt((n - 1) / n)
    expected = d.mean() / np.sqrt(d.var() / 4) * np.sqrt(3 / 4)
    assert diebold_mariano(a, b, 1).statistic == pytest.approx(expected)


def test_identical_losses_give_p_value_one():
    loss = np.random.default_rng(0).random(50)
    result = diebold_mariano(loss, loss.copy(), 2)
    # no differential at all: nothing to reject
    assert (result.statistic, result.p_value, result.mean_diff, result.n) == (0.0, 1.0, 0.0, 50)


def test_clearly_better_forecast_has_a_small_p_value_and_the_sign_says_which():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=300)
    good = (truth - (truth + rng.normal(0, 0.3, 300))) ** 2
    bad = (truth - (truth + rng.normal(0, 1.0, 300))) ** 2
    result = diebold_mariano(bad, good, 1)
    # A (bad) has the larger loss: positive statistic, tiny p-value
    assert result.statistic > 5 and result.p_value < 1e-6 and result.mean_diff > 0


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_swapping_the_forecasts_flips_the_sign_and_keeps_the_p_value(horizon):
    a, b = _ma_losses(horizon)
    ab, ba = diebold_mariano(a, b, horizon), diebold_mariano(b, a, horizon)
    # swapping A and B flips the statistic and the mean difference, and keeps the p-value
    assert ba.statistic == pytest.approx(-ab.statistic)
    assert ba.p_value == pytest.approx(ab.p_value)
    assert ba.mean_diff == pytest.approx(-ab.mean_diff)


@pytest.mark.parametrize("horizon, low, high", [(1, 0.03, 0.07), (3, 0.03, 0.09)])
def test_rejection_rate_under_equal_accuracy_is_near_the_nominal_level(horizon, low, high):
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(400):
        e = rng.normal(size=(2, 150 + horizon))
        a = np.convolve(e[0], np.ones(horizon), "valid")[:150] ** 2
        b = np.convolve(e[1], np.ones(horizon), "valid")[:150] ** 2
        rejected += diebold_mariano(a, b, horizon).p_value < 0.05
    # about 5% of equally accurate pairs are rejected at the 5% level
    assert low <= rejected / 400 <= high


@pytest.mark.parametrize("a, b, horizon, message", [
    (np.ones(5), np.zeros(5), 3, "needs at least 6 loss pairs for horizon=3 (max(3, 2 * horizon)), got 5"),
    (np.ones(2), np.zeros(2), 1, "needs at least 3 loss pairs for horizon=1"),
    (np.ones(10), np.zeros(9), 1, "must be 1-D and of equal length, got shapes (10,) and (9,)"),
    (np.ones((5, 2)), np.ones((5, 2)), 1, "must be 1-D and of equal length"),
    (np.r_[np.ones(9), np.nan], np.zeros(10), 1, "contain 1 non-finite value(s)"),
    (np.ones(10), np.zeros(10), 0, "horizon must be an integer of at least 1, got 0"),
    (np.ones(10), np.zeros(10), 1.5, "horizon must be an integer of at least 1, got 1.5"),
    (np.full(10, 2.0), np.ones(10), 1, "the loss differential is constant (1 on all 10 samples)"),
])
def test_bad_input_names_the_problem(a, b, horizon, message):
    # each bad input is a DataError whose message names the problem
    with pytest.raises(DataError) as info:
        diebold_mariano(a, b, horizon)
    assert message in str(info.value)


# ----------------------------------------------------------------------------------------------- QLIKE
@pytest.mark.parametrize("seed", range(5))
def test_qlike_is_minimised_by_the_true_variance(seed):
    rng = np.random.default_rng(seed)
    true_variance = rng.lognormal(np.log(1e-4), 0.8, 20_000)
    proxy = true_variance * rng.standard_normal(20_000) ** 2  # squared return: noisy but unbiased
    best = scoring.qlike(proxy, true_variance).mean()
    for distortion in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
        # scaling the true variance up or down costs QLIKE ...
        assert scoring.qlike(proxy, distortion * true_variance).mean() > best
    noisy = true_variance * rng.lognormal(0, 0.3, 20_000)
    # ... and so does adding noise to it, even noise with the right mean level
    assert scoring.qlike(proxy, noisy).mean() > best


def test_qlike_is_finite_on_a_zero_proxy_and_forecasts_are_floored():
    # an unchanged close (proxy 0) still has a finite loss: log f
    assert scoring.qlike(np.array([0.0]), np.array([1e-4]))[0] == pytest.approx(np.log(1e-4))
    # a negative or zero volatility forecast becomes the variance floor, never a NaN
    np.testing.assert_array_equal(scoring.to_variance(np.array([-0.01, 0.0, 0.01])),
                                  [scoring.VAR_FLOOR, scoring.VAR_FLOOR, 1e-4])


def test_sample_qlike_squares_the_target_and_the_floored_forecast():
    y, vol = np.array([0.01, 0.0, 0.02]), np.array([0.02, 0.01, -0.5])
    expected = [np.log(4e-4) + 1e-4 / 4e-4, np.log(1e-4), np.log(scoring.VAR_FLOOR) + 4e-4 / scoring.VAR_FLOOR]
    # per day: log of the forecast variance plus the squared target over it; a negative forecast is floored first
    np.testing.assert_allclose(scoring.sample_qlike(y, vol), expected, rtol=1e-12)


def test_variance_scores_use_the_target_squared(sp500_vol):
    ds = sp500_vol
    forecast = ds.persistence["val"]
    metrics = scoring.score(ds, "val", forecast)
    proxy = np.square(ds.y["val"])
    # the target squared is the mean of squared daily returns over the horizon: one proxy for target and scores
    r = ds.returns
    t = int(ds.split.val[0])
    assert proxy[0] == pytest.approx(np.mean(r[t + 1:t + 6] ** 2))
    assert metrics["var_mse"] == pytest.approx(np.mean((forecast**2 - proxy) ** 2))
    assert metrics["qlike"] == pytest.approx(np.mean(np.log(forecast**2) + proxy / forecast**2))
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((forecast - ds.y["val"]) ** 2)))


# ----------------------------------------------------------------------------------------------- backtest
@pytest.mark.parametrize("positions, returns, cost_bps, total, turnover", [
    ([1, 1, 1], [0.01, 0.02, -0.01], 0, 1.01 * 1.02 * 0.99 - 1, 1 / 3),  # buy and hold: one entry
    ([1, 1, 1], [0.01, 0.02, -0.01], 10, 1.009 * 1.02 * 0.99 - 1, 1 / 3),  # entering costs 10 bp once
    ([1, -1, 1], [0.0, 0.0, 0.0], 5, 0.9995 * 0.999 * 0.999 - 1, 5 / 3),  # each flip trades 2 units
    ([0, 0, 0], [0.01, -0.02, 0.03], 5, 0.0, 0.0),  # never in the market: no return, no cost
])
def test_backtest_charges_costs_per_unit_traded(positions, returns, cost_bps, total, turnover):
    result = scoring.backtest(np.array(positions, float), np.array(returns), cost_bps=cost_bps)
    # the compounded net return and the mean position change per day
    assert result.total_return == pytest.approx(total) and result.turnover == pytest.approx(turnover)


def test_backtest_risk_numbers():
    r = scoring.backtest(np.ones(4), np.array([0.1, -0.5, 0.2, 0.1]), cost_bps=0)
    # peak 1.1, trough 0.55: a 50% drawdown; 3 of 4 days up
    assert r.max_drawdown == pytest.approx(0.5) and r.win_rate == 0.75 and r.exposure == 1.0
    # returns that do not vary have no Sharpe ratio to speak of: 0, not a division by zero
    assert scoring.sharpe_ratio(np.full(5, 0.01)) == 0.0


def test_sharpe_ratio_is_the_annualised_mean_over_the_sample_deviation():
    r = np.array([0.01, -0.02, 0.03, 0.0])
    # mean / sd (ddof 1) * sqrt(periods per year)
    assert scoring.sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252))
    assert scoring.sharpe_ratio(r, periods_per_year=12) == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(12))


def test_max_drawdown_measures_from_the_starting_equity():
    # a loss on the first day is a drawdown from the starting equity of 1, not from the first close
    assert scoring.max_drawdown(np.array([-0.2, 0.1])) == pytest.approx(0.2)
    # a curve that only rises has none, and no days have none
    assert scoring.max_drawdown(np.array([0.01, 0.02])) == 0.0 and scoring.max_drawdown(np.array([])) == 0.0


def test_positions_follow_the_forecast_sign():
    # above the reference is long, at or below it short
    assert scoring.positions_from_forecast(np.array([0.2, -0.1, 0.0])).tolist() == [1.0, -1.0, -1.0]
    # long-only stays flat instead of short; a probability is compared with 0.5
    assert scoring.positions_from_forecast(np.array([0.7, 0.3]), 0.5, long_only=True).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("positions, returns, cost, message", [
    ([1.0], [0.1, 0.2], 0, "equal length"), ([1.0], [np.nan], 0, "finite"), ([1.0], [0.1], -1, "cost_bps"),
    ([], [], 0, "at least one day"),
])
def test_backtest_refuses_bad_input(positions, returns, cost, message):
    # each bad input is a DataError that names it
    with pytest.raises(DataError, match=message):
        scoring.backtest(np.array(positions), np.array(returns), cost_bps=cost)


def test_net_returns_are_the_backtests_daily_returns():
    positions, asset = np.array([1.0, 1.0, -1.0, 0.0]), np.array([0.01, -0.02, -0.01, 0.03])
    net = scoring.net_returns(positions, asset, cost_bps=10)
    # entering costs 10 bp, a flip 20 bp, going flat 10 bp; compounded they are the backtest's total return
    np.testing.assert_allclose(net, [0.01 - 0.001, -0.02, 0.01 - 0.002, -0.001])
    assert scoring.backtest(positions, asset, cost_bps=10).total_return == pytest.approx(np.prod(1 + net) - 1)
