"""Volatility baselines (GARCH(1,1), HAR-RV, EWMA) and QLIKE: simulated truth, real data, train-only fits, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from arch import arch_model
from arch.univariate import GARCH, Normal, ZeroMean

from tests.conftest import prices_from_returns
from hpo_lib import data
from hpo_lib.data import baselines
from hpo_lib.data import baselines, scoring
from hpo_lib.errors import DataError

TRUE = {"omega": 0.05, "alpha": 0.10, "beta": 0.85}  # percent-return units, as arch simulates


def simulate_garch(nobs: int, seed: int = 1):
    """Zero-mean GARCH(1,1) in decimal returns, and the true variance of each return."""
    model = ZeroMean(volatility=GARCH(), distribution=Normal(seed=np.random.default_rng(seed)))
    sim = model.simulate([TRUE["omega"], TRUE["alpha"], TRUE["beta"]], nobs=nobs, burn=500)
    return sim["data"].to_numpy() / 100, (sim["volatility"].to_numpy() / 100) ** 2


@pytest.fixture(scope="module")
def simulated():
    returns, _ = simulate_garch(6000)
    return data.prepare(prices_from_returns(returns), target="volatility", horizon=5, window=20)


@pytest.fixture(scope="module")
def sp500_vol(sp500):
    return data.prepare(sp500, target="volatility", horizon=5, window=60, split_window=90)


# ----------------------------------------------------------------------------------------------- GARCH
def test_garch_fit_recovers_the_simulated_parameters():
    returns, _ = simulate_garch(6000)
    fit = baselines.fit_garch(returns[:4000])
    # 4000 returns pin alpha and beta to a few hundredths, and omega (in decimal units) to its order
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit.beta == pytest.approx(TRUE["beta"], abs=0.06)
    assert fit.omega == pytest.approx(TRUE["omega"] / 1e4, rel=0.5)
    assert fit.persistence == pytest.approx(TRUE["alpha"] + TRUE["beta"], abs=0.03)


def test_garch_recursion_equals_the_true_and_the_arch_variance():
    returns, true_variance = simulate_garch(1500)
    params = baselines.Garch(omega=TRUE["omega"] / 1e4, alpha=TRUE["alpha"], beta=TRUE["beta"])
    one_step = baselines.garch_forecast(returns, params, 1, init=1e-4)
    # with the true parameters, row t's forecast is the simulated variance of return t+1 (once the start is forgotten)
    np.testing.assert_allclose(one_step[300:-1], true_variance[301:], rtol=1e-9)
    fixed = arch_model(100 * returns, mean="Zero", vol="GARCH").fix(list(TRUE.values()))
    for horizon in (1, 5, 22):
        expected = fixed.forecast(horizon=horizon, start=0, reindex=False).variance.to_numpy().mean(axis=1) / 1e4
        mine = baselines.garch_forecast(returns, params, horizon, init=1e-4)
        # the closed-form h-day mean equals arch's own multi-step forecasts, averaged
        np.testing.assert_allclose(mine[300:], expected[300:], rtol=1e-9)


def test_garch_beats_previous_window_in_qlike_on_held_out_data(simulated):
    results = baselines.evaluate(simulated, ("val", "test"))
    for part in ("val", "test"):
        # on a GARCH process, the fitted GARCH forecast beats last week's realized volatility
        assert results.report["garch"][part]["qlike"] < results.report["previous_window"][part]["qlike"]
    # ... and is the baseline every report compares with
    assert results.best == "garch"


# ----------------------------------------------------------------------------------------------- HAR and EWMA
def test_har_regressors_are_trailing_means_of_the_proxy():
    r = np.arange(1.0, 31.0) / 100
    x = baselines.har_regressors(r)
    p = r**2
    # row 21 is the first with a full 22-day monthly mean; earlier rows have none
    assert np.isnan(x[20, 3]) and not np.isnan(x[21, 3])
    np.testing.assert_allclose(x[25], [1.0, p[25], p[21:26].mean(), p[4:26].mean()])


def test_har_is_ordinary_least_squares_on_training_rows():
    r = simulate_garch(800)[0]
    fit = baselines.fit_har(r, (0, 600), horizon=5)
    x = baselines.har_regressors(r)[21:595]
    y = np.array([np.mean(r[t + 1:t + 6] ** 2) for t in range(21, 595)])
    expected, *_ = np.linalg.lstsq(x, y, rcond=None)
    # the fit is OLS over rows 21..594: monthly term and 5-day label both inside rows 0..599
    np.testing.assert_allclose([fit.intercept, fit.daily, fit.weekly, fit.monthly], expected, rtol=1e-8)


def test_ewma_is_the_riskmetrics_recursion():
    r = np.array([0.01, -0.02, 0.0, 0.03])
    s, expected = 1e-4, []
    for value in r:
        s = 0.94 * s + 0.06 * value**2
        expected.append(s)
    np.testing.assert_allclose(baselines.ewma_forecast(r, init=1e-4), expected)


# ----------------------------------------------------------------------------------------------- real data
@pytest.mark.parametrize("horizon", [1, 5, 22])
def test_every_baseline_is_finite_on_every_sp500_validation_and_test_day(sp500, horizon):
    ds = data.prepare(sp500, target="volatility", horizon=horizon, window=60, split_window=90)
    results = baselines.evaluate(ds, ("val", "test"))
    # all five baselines run on the S&P 500 ...
    assert set(results.report) == {"previous_window", "train_mean", "garch", "har", "ewma"} and not results.skipped
    for name, by_part in results.forecasts.items():
        for part, forecast in by_part.items():
            # ... with a finite, non-negative forecast for every day of the split
            assert len(forecast) == len(ds.y[part])
            assert np.isfinite(forecast).all() and (forecast >= 0).all(), (name, part)
            assert all(np.isfinite(v) for v in results.report[name][part].values())


def test_fitted_baselines_beat_the_naive_ones_on_sp500(sp500_vol):
    report = baselines.evaluate(sp500_vol, ("val",)).report
    naive = min(report[n]["val"]["qlike"] for n in ("previous_window", "train_mean"))
    # volatility clusters and mean-reverts: every fitted baseline beats both naive ones in QLIKE
    assert all(report[n]["val"]["qlike"] < naive for n in ("garch", "har", "ewma"))


def _bump_close(prices: data.Prices, when, factor: float = 1.05) -> data.Prices:
    frame = next(iter(prices.values())).copy()
    frame.loc[when, "Close"] *= factor
    return {next(iter(prices)): frame}


@pytest.mark.parametrize("part", ["val", "test"])
def test_fits_use_training_rows_only(sp500, sp500_vol, part):
    ds = sp500_vol
    when = ds.dates[part][len(ds.dates[part]) // 2]
    changed = data.prepare(_bump_close(sp500, when), target="volatility", horizon=5, window=60, split_window=90)
    before, after = baselines.fit_baselines(ds), baselines.fit_baselines(changed)
    # a price inside the validation or test split leaves every fitted parameter exactly as it was
    assert after.params == before.params
    row = int(getattr(ds.split, part)[len(ds.dates[part]) // 2])
    for name in before.variance:
        # forecasts made before the changed day do not move; the one made on it does (it uses that day's return)
        np.testing.assert_array_equal(after.variance[name][:row], before.variance[name][:row])
        assert after.variance[name][row] != before.variance[name][row]


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


def test_variance_scores_use_the_target_squared(sp500_vol):
    ds = sp500_vol
    forecast = ds.persistence["val"]
    metrics = baselines.score(ds, "val", forecast)
    proxy = np.square(ds.y["val"])
    # the target squared is the mean of squared daily returns over the horizon: one proxy for target and scores
    r = ds.returns
    t = int(ds.split.val[0])
    assert proxy[0] == pytest.approx(np.mean(r[t + 1:t + 6] ** 2))
    assert metrics["var_mse"] == pytest.approx(np.mean((forecast**2 - proxy) ** 2))
    assert metrics["qlike"] == pytest.approx(np.mean(np.log(forecast**2) + proxy / forecast**2))
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((forecast - ds.y["val"]) ** 2)))


# ----------------------------------------------------------------------------------------------- bad input
def test_garch_on_too_short_a_series_names_the_problem():
    with pytest.raises(DataError, match=r"GARCH\(1,1\) needs at least 250 training returns .*got 100"):
        baselines.fit_garch(simulate_garch(100)[0])


def test_garch_that_does_not_converge_names_the_problem():
    flat = np.random.default_rng(0).normal(0, 1e-11, 500)  # a price that barely moves: the optimizer gives up
    with pytest.raises(DataError, match=r"GARCH\(1,1\) fit on 500 training returns did not converge \(optimizer: "):
        baselines.fit_garch(flat)


def test_har_without_room_for_its_monthly_term_names_the_problem():
    message = ("HAR-RV needs at least 50 training regression rows, but the 60 training rows leave 34 after its "
               "22-day monthly term and the 5-day label")
    with pytest.raises(DataError, match=message):
        baselines.fit_har(np.full(100, 0.01), (0, 60), horizon=5)


def test_a_baseline_that_cannot_be_fit_is_skipped_and_the_others_still_report(sp500):
    short = {"sp500": sp500["sp500"].iloc[:380]}  # 231 training rows: HAR fits, GARCH needs 250
    ds = data.prepare(short, target="volatility", horizon=5, window=10, split_window=10)
    results = baselines.evaluate(ds, ("val",))
    # GARCH is left out with its reason ...
    assert set(results.skipped) == {"garch"} and "needs at least 250 training returns" in results.skipped["garch"]
    # ... and the other four report, the best chosen among them
    assert set(results.report) == {"previous_window", "train_mean", "har", "ewma"}
    assert results.best in results.report


def test_non_convergence_is_skipped_not_raised(sp500_vol, monkeypatch):
    def no_convergence(returns):
        raise DataError("GARCH(1,1) fit on 3000 training returns did not converge (optimizer: Iteration limit)")

    monkeypatch.setattr(baselines, "fit_garch", no_convergence)
    results = baselines.evaluate(sp500_vol, ("val",))
    assert "did not converge" in results.skipped["garch"] and {"har", "ewma"} <= set(results.report)
