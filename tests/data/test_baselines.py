"""Baselines: the naive ones on real data, chosen on validation; the linear ones; GARCH(1,1), GJR-GARCH, HAR-RV and
EWMA against simulated truth and real data, fit on training rows only, and what happens when one cannot be fit."""

from __future__ import annotations

import numpy as np
import pytest
from arch import arch_model
from arch.univariate import GARCH, Normal, ZeroMean

from hpo_lib import data
from hpo_lib.data import baselines
from hpo_lib.errors import DataError
from tests.conftest import prices_from_returns

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


# ----------------------------------------------------------------------------------------------- naive
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
    # the lowest validation loss wins, whatever the test split says
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
    # GJR-GARCH, added for the final evaluation, nests GARCH and finds no leverage on a symmetric process
    final = baselines.evaluate(simulated, ("val", "test"), final=True)
    assert final.fitted["gjr_garch"]["gamma"] < 0.05


# ----------------------------------------------------------------------------------------------- GJR-GARCH
GJR = {"omega": 0.05, "alpha": 0.03, "gamma": 0.12, "beta": 0.85}  # percent units, in arch's order


def simulate_gjr(nobs: int, seed: int = 3):
    model = ZeroMean(volatility=GARCH(p=1, o=1, q=1), distribution=Normal(seed=np.random.default_rng(seed)))
    sim = model.simulate(list(GJR.values()), nobs=nobs, burn=500)
    return sim["data"].to_numpy() / 100


def test_gjr_fit_recovers_the_leverage_term():
    fit = baselines.fit_garch(simulate_gjr(6000)[:5000], asymmetric=True)
    # 5000 returns pin the asymmetric term: negative returns raise next-day variance by gamma * r^2 more
    assert fit.gamma == pytest.approx(GJR["gamma"], abs=0.05)
    assert fit.persistence == pytest.approx(GJR["alpha"] + GJR["gamma"] / 2 + GJR["beta"], abs=0.03)


def test_gjr_recursion_equals_the_arch_forecast():
    returns = simulate_gjr(1500)
    params = baselines.Garch(omega=GJR["omega"] / 1e4, alpha=GJR["alpha"], beta=GJR["beta"], gamma=GJR["gamma"])
    fixed = arch_model(100 * returns, mean="Zero", vol="GARCH", p=1, o=1, q=1).fix(list(GJR.values()))
    for horizon in (1, 5):
        expected = fixed.forecast(horizon=horizon, start=0, reindex=False).variance.to_numpy().mean(axis=1) / 1e4
        mine = baselines.garch_forecast(returns, params, horizon, init=1e-4)
        # the one-step recursion and the h-day closed form agree with arch's own GJR forecasts
        np.testing.assert_allclose(mine[300:], expected[300:], rtol=1e-9)


def test_gjr_is_fit_on_training_rows_and_reported_beside_garch(sp500_vol):
    results = baselines.evaluate(sp500_vol, ("val", "test"), final=True)
    # both GARCH models are fit and scored; on the S&P 500 the leverage effect is real (gamma clearly above 0)
    assert {"garch", "gjr_garch"} <= set(results.report) and results.fitted["gjr_garch"]["gamma"] > 0.05
    assert results.report["gjr_garch"]["test"]["qlike"] < results.report["previous_window"]["test"]["qlike"]


# ----------------------------------------------------------------------------------------------- linear
def test_ridge_recovers_a_linear_signal_and_picks_a_small_penalty():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 4))
    y = 0.5 + x @ np.array([1.0, -2.0, 0.0, 0.5]) + 0.1 * rng.standard_normal(2000)
    fit = baselines.fit_ridge(x, y)
    # strong signal, little noise: GCV picks the smallest penalty and the coefficients come back
    assert fit.penalty == min(baselines.RIDGE_GRID)
    np.testing.assert_allclose(fit.coef, [1.0, -2.0, 0.0, 0.5], atol=0.02)
    assert fit.intercept == pytest.approx(0.5, abs=0.02)


def test_ridge_on_noise_shrinks_towards_the_training_mean():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 8)), rng.standard_normal(300)
    fit = baselines.fit_ridge(x, y)
    # no signal: GCV picks a large penalty, so the forecast stays near the mean (the nested model)
    assert fit.penalty >= 100 and np.abs(fit.coef).max() < 0.1


def test_logistic_recovers_the_log_odds():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5000, 2))
    p = 1 / (1 + np.exp(-(0.3 + 1.5 * x[:, 0])))
    y = (rng.random(5000) < p).astype(float)
    fit = baselines.fit_logistic(x, y)
    # maximum likelihood with a light penalty: the simulated log-odds come back
    assert fit.intercept == pytest.approx(0.3, abs=0.1) and fit.coef[0] == pytest.approx(1.5, abs=0.12)
    assert abs(fit.coef[1]) < 0.1 and 0 < fit.forecast(x).min() < fit.forecast(x).max() < 1
    with pytest.raises(DataError, match="needs both classes"):
        baselines.fit_logistic(x, np.ones(5000))


def test_linear_baselines_join_the_final_evaluation_only(sp500):
    for target, name in (("return", "ridge"), ("direction", "logistic")):
        ds = data.prepare(sp500, target=target, window=20)
        # a trial's bar is the best naive baseline; the final evaluation adds the linear model, fit on train only
        assert name not in baselines.evaluate(ds, ("val",)).report
        results = baselines.evaluate(ds, ("val", "test"), final=True)
        assert name in results.report and results.fitted[name]["n_features"] == ds.n_features
        assert np.isfinite(results.forecasts[name]["test"]).all()


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
    # each day's variance is lambda times yesterday's plus (1 - lambda) times today's squared return
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


# ----------------------------------------------------------------------------------------------- bad input
def test_garch_on_too_short_a_series_names_the_problem():
    # a series under a trading year is refused, naming the minimum and what it got
    with pytest.raises(DataError, match=r"GARCH\(1,1\) needs at least 250 training returns .*got 100"):
        baselines.fit_garch(simulate_garch(100)[0])


def test_garch_that_does_not_converge_names_the_problem():
    flat = np.random.default_rng(0).normal(0, 1e-11, 500)  # a price that barely moves: the optimizer gives up
    # a fit whose optimizer gives up is refused, with the optimizer's message
    with pytest.raises(DataError, match=r"GARCH\(1,1\) fit on 500 training returns did not converge \(optimizer: "):
        baselines.fit_garch(flat)


def test_har_without_room_for_its_monthly_term_names_the_problem():
    message = ("HAR-RV needs at least 50 training regression rows, but the 60 training rows leave 34 after its "
               "22-day monthly term and the 5-day label")
    # too few rows after the monthly warm-up and the label is refused, with the counts that fell short
    with pytest.raises(DataError, match=message):
        baselines.fit_har(np.full(100, 0.01), (0, 60), horizon=5)


def test_a_baseline_that_cannot_be_fit_is_skipped_and_the_others_still_report(sp500):
    short = {"sp500": sp500["sp500"].iloc[:380]}  # 231 training rows: HAR fits, GARCH needs 250
    ds = data.prepare(short, target="volatility", horizon=5, window=10, split_window=10)
    # GJR-GARCH, in the final evaluation, is refused with its own name
    final = baselines.evaluate(ds, ("val",), final=True)
    assert final.skipped["gjr_garch"].startswith("GJR-GARCH(1,1) needs at least 250")
    results = baselines.evaluate(ds, ("val",))
    # GARCH is left out with its reason ...
    assert set(results.skipped) == {"garch"} and "needs at least 250 training returns" in results.skipped["garch"]
    # ... and the other four report, the best chosen among them
    assert set(results.report) == {"previous_window", "train_mean", "har", "ewma"}
    assert results.best in results.report


def test_non_convergence_is_skipped_not_raised(sp500_vol, monkeypatch):
    def no_convergence(returns, *, asymmetric=False):
        raise DataError("GARCH(1,1) fit on 3000 training returns did not converge (optimizer: Iteration limit)")

    monkeypatch.setattr(baselines, "fit_garch", no_convergence)
    results = baselines.evaluate(sp500_vol, ("val",))
    # GARCH is skipped with its reason, and HAR-RV and EWMA still report
    assert "did not converge" in results.skipped["garch"] and {"har", "ewma"} <= set(results.report)
