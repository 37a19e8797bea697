"""Baselines every model must beat: naive forecasts and a linear model on the same features for every target;
GARCH(1,1), GJR-GARCH(1,1), HAR-RV and EWMA for volatility.

Every forecast here is in the units :func:`hpo_lib.data.scoring.score` expects, and every constant or fitted
parameter comes from the training rows only.

Volatility forecasts are of the target's own quantity: the mean of :func:`hpo_lib.data.variance_proxy` (the squared
daily log return) over the next ``h`` days, whose square root is the ``volatility`` target. A forecast for the sample
at row ``t`` uses returns up to and including row ``t`` only.

Refit policy: **fixed parameters**. GARCH(1,1), GJR-GARCH and HAR-RV are fit once, on the training rows
(:attr:`hpo_lib.data.Split.train_rows`) and nothing else; the forecast at each validation or test origin then runs
the GARCH variance recursion, or evaluates the HAR regression, with those frozen parameters on the returns observed
up to that origin, as a forecaster frozen at the end of training would. An expanding-window refit would follow
parameter drift at the cost of one fit per refit date; no fit here ever sees a row after the training split.
The linear baselines (ridge regression for return, L2-penalised logistic regression for direction) see what the
models see on the sample's last input day: the features of row ``t``, scaled with the training rows' statistics;
they are the nested model a deep net must beat (the training mean is their intercept-only special case). The
recursions (GARCH, EWMA) start from the training rows' mean variance, which has no effect after a few hundred days.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from hpo_lib.data.dataset import Dataset, variance_proxy
from hpo_lib.data.scoring import VAR_FLOOR, ranking_metric, score
from hpo_lib.errors import DataError

EWMA_LAMBDA = 0.94  # RiskMetrics (J.P. Morgan 1996) daily decay
HAR_DAYS = (1, 5, 22)  # daily, weekly and monthly averages of the proxy (Corsi 2009)
HAR_MIN_SAMPLES = 50  # regression rows left after the monthly warm-up; 4 coefficients need many more than 4
GARCH_MIN_OBS = 250  # about a trading year of training returns; with fewer, alpha and beta are barely identified
RIDGE_GRID = tuple(10.0**k for k in range(-2, 5))  # ridge penalties tried by generalised cross-validation
LOGISTIC_L2 = 1.0  # penalty on the summed log-loss: a light shrink for the few thousand training rows
ARCH_SCALE = 100.0  # arch's optimizer expects percent returns (variances near 1), not decimals (near 1e-4)


# ----------------------------------------------------------------------------------------------- naive
def naive_forecasts(ds: Dataset, part: str) -> dict[str, np.ndarray]:
    """The naive forecasts for one split, in the units :func:`score` expects. Constants come from train only.

    * return: ``zero`` (random walk), ``train_mean``, ``persistence`` (the last horizon's return repeats).
    * direction: ``train_prior`` (P(up) = train up-share; its hard call is the majority class),
      ``always_up``, ``persistence`` (the last horizon's sign repeats).
    * volatility: ``previous_window`` (the last horizon's realized volatility), ``train_mean``; the fitted ones
      (GARCH, HAR-RV, EWMA) come from :func:`fit_baselines` through :func:`evaluate`.
    """
    n = len(ds.y[part])
    train_mean = float(np.mean(ds.y["train"]))
    if ds.target == "direction":
        # a hard 0/1 call has infinite cross-entropy when wrong: clip it to the most confident finite probability
        sure = 1 - 1e-3
        return {
            "train_prior": np.full(n, train_mean),
            "always_up": np.full(n, sure),
            "persistence": np.where(ds.persistence[part] > 0.5, sure, 1 - sure),
        }
    if ds.target == "volatility":
        return {"previous_window": ds.persistence[part], "train_mean": np.full(n, train_mean)}
    return {"zero": np.zeros(n), "train_mean": np.full(n, train_mean), "persistence": ds.persistence[part]}


@dataclass
class BaselineResults:
    """Every baseline of a dataset: scores, forecasts, the one reports compare with, and what could not run."""

    report: dict[str, dict[str, dict[str, float]]]  # {baseline: {split: metrics}}
    forecasts: dict[str, dict[str, np.ndarray]]  # {baseline: {split: forecast in score() units}}
    best: str  # chosen on validation by ranking_metric, never on test
    fitted: dict[str, dict[str, float]] = field(default_factory=dict)  # parameters fit on training rows only
    skipped: dict[str, str] = field(default_factory=dict)  # baseline -> why it could not be fit


def evaluate(ds: Dataset, parts: tuple[str, ...] = ("val",), *, final: bool = False) -> BaselineResults:
    """Forecast and score every baseline on the requested splits.

    Volatility adds GARCH, HAR-RV and EWMA. ``final`` adds the final evaluation's models: the linear model of return
    and direction (:func:`fit_linear`) and GJR-GARCH for volatility. A trial's bar stays the best of the others
    (and costs no extra fit per trial); the retrain's test bar includes them.

    A fitted baseline that cannot be fit is left out and named in ``skipped`` with the problem (the caller warns);
    the rest still report.
    """
    fitted = fit_baselines(ds, asymmetric=final) if ds.target == "volatility" else None
    linear_fit = fit_linear(ds) if final and ds.target != "volatility" else None  # HAR is volatility's linear model
    forecasts: dict[str, dict[str, np.ndarray]] = {}
    for part in parts:
        for name, forecast in naive_forecasts(ds, part).items():
            forecasts.setdefault(name, {})[part] = forecast
        if fitted:
            for name in fitted.variance:
                forecasts.setdefault(name, {})[part] = fitted.vol(name, getattr(ds.split, part))
        if linear_fit:
            forecasts.setdefault(linear_fit.name, {})[part] = linear_fit.forecast(ds.x[part][:, -1, :])
    report = {name: {part: score(ds, part, f) for part, f in by_part.items()} for name, by_part in forecasts.items()}
    params = dict(fitted.params) if fitted else {}
    if linear_fit:
        params[linear_fit.name] = {
            "penalty": linear_fit.penalty,
            "intercept": linear_fit.intercept,
            "n_features": float(len(linear_fit.coef)),
        }
    return BaselineResults(
        report=report,
        forecasts=forecasts,
        best=best_baseline(report),
        fitted=params,
        skipped=fitted.skipped if fitted else {},
    )


def best_baseline(report: dict[str, dict[str, dict[str, float]]]) -> str:
    """The baseline with the lowest validation :func:`ranking_metric`: chosen on validation, never on test."""
    return min(report, key=lambda name: report[name]["val"][ranking_metric(report[name]["val"])])


# ----------------------------------------------------------------------------------------------- linear
@dataclass(frozen=True)
class Linear:
    """A linear forecast of the target from one day's scaled features: ``intercept + x @ coef``.

    For ``logistic`` the linear score is a log-odds and the forecast its probability.
    """

    name: str  # "ridge" (return) or "logistic" (direction)
    intercept: float
    coef: np.ndarray
    penalty: float

    def forecast(self, x_last: np.ndarray) -> np.ndarray:
        z = self.intercept + np.asarray(x_last, dtype=np.float64) @ self.coef
        return 1.0 / (1.0 + np.exp(-z)) if self.name == "logistic" else z


def fit_ridge(x: np.ndarray, y: np.ndarray, grid: tuple[float, ...] = RIDGE_GRID) -> Linear:
    """Ridge regression with an unpenalised intercept; the penalty from ``grid`` by generalised cross-validation.

    One SVD of the centred features gives every penalty's fit and its GCV score
    ``n * RSS / (n - df)^2`` (Golub, Heath and Wahba 1979), all on the rows given (the training rows).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xm, ym = x.mean(axis=0), float(y.mean())
    u, sv, vt = np.linalg.svd(x - xm, full_matrices=False)
    uty = u.T @ (y - ym)
    best: tuple[float, float, np.ndarray] | None = None
    for lam in grid:
        shrink = sv**2 / (sv**2 + lam)
        rss = float(np.sum((y - ym - u @ (shrink * uty)) ** 2))
        gcv = len(y) * rss / max(len(y) - float(shrink.sum()), 1.0) ** 2
        if best is None or gcv < best[0]:
            best = (gcv, lam, vt.T @ (sv / (sv**2 + lam) * uty))
    assert best is not None  # the grid is never empty
    _, lam, coef = best
    return Linear(name="ridge", intercept=ym - float(xm @ coef), coef=coef, penalty=lam)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = LOGISTIC_L2) -> Linear:
    """L2-penalised logistic regression (unpenalised intercept) by L-BFGS (``scipy.optimize``) on the rows given.

    Raises DataError when the optimizer does not converge or a class is missing.
    """
    from scipy import optimize, special

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if y.min() == y.max():
        raise DataError("the logistic baseline needs both classes among the training labels")
    design = np.column_stack([np.ones(len(x)), x])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        value = float(np.sum(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(w[1:] @ w[1:])
        grad = design.T @ (special.expit(z) - y)
        grad[1:] += l2 * w[1:]
        return value, grad

    res = optimize.minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B")
    if not res.success or not np.isfinite(res.x).all():
        raise DataError(f"the logistic baseline did not converge on {len(y)} training rows ({res.message})")
    return Linear(name="logistic", intercept=float(res.x[0]), coef=res.x[1:], penalty=l2)


def fit_linear(ds: Dataset) -> Linear:
    """The target's linear baseline on the training samples' last-day features (ridge; logistic for direction)."""
    x = ds.x["train"][:, -1, :]
    if ds.is_classification:
        return fit_logistic(x, ds.y["train"])
    return fit_ridge(x, ds.y["train"])


# ----------------------------------------------------------------------------------------------- fitted (volatility)
def _first_order_recursion(x: np.ndarray, coef: float, init: float) -> np.ndarray:
    """``s[t] = x[t] + coef * s[t-1]`` with ``s[-1] = init``.

    One pass in plain Python, once per trial (about 0.3 ms for 5000 rows): cheaper than importing scipy.signal's
    ``lfilter`` (about 0.5 s cold), which trials of every target would otherwise pay.
    """
    out, s = [], float(init)
    for value in x.tolist():
        s = value + coef * s
        out.append(s)
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------------------------- GARCH(1,1), GJR
@dataclass(frozen=True)
class Garch:
    """GARCH(1,1) with zero mean, in decimal returns: ``s2[t+1] = omega + alpha * r[t]^2 + beta * s2[t]``.

    With ``gamma`` it is GJR-GARCH(1,1) (Glosten, Jagannathan and Runkle 1993): a negative return adds
    ``gamma * r[t]^2`` more, the leverage effect.
    """

    omega: float
    alpha: float
    beta: float
    gamma: float = 0.0

    @property
    def persistence(self) -> float:
        """``alpha + gamma / 2 + beta``: with symmetric errors half the shocks are negative."""
        return self.alpha + self.gamma / 2 + self.beta


def fit_garch(train_returns: np.ndarray, *, asymmetric: bool = False) -> Garch:
    """Maximum-likelihood GARCH(1,1) (zero mean, normal errors) with the ``arch`` package, on the returns given.

    ``asymmetric`` fits GJR-GARCH(1,1) (``arch``'s ``o=1`` term) instead. Zero mean because the proxy is the raw
    squared return: the model's conditional variance is then exactly the proxy's expectation. Raises DataError for
    fewer than ``GARCH_MIN_OBS`` returns, an optimizer that does not converge, or parameters that are not finite
    and non-negative (omega positive).
    """
    from arch import arch_model

    name = "GJR-GARCH(1,1)" if asymmetric else "GARCH(1,1)"
    r = np.asarray(train_returns, dtype=np.float64)
    if len(r) < GARCH_MIN_OBS:
        raise DataError(
            f"{name} needs at least {GARCH_MIN_OBS} training returns (about a trading year), "
            f"got {len(r)}; use a longer series"
        )
    model = arch_model(
        ARCH_SCALE * r, mean="Zero", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="normal", rescale=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arch warns on the way to a failure; the checks below name the failure
        try:
            res = model.fit(disp="off", show_warning=False)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise DataError(f"{name} fit on {len(r)} training returns failed: {exc}") from None
    if res.convergence_flag != 0:
        raise DataError(
            f"{name} fit on {len(r)} training returns did not converge (optimizer: {res.optimization_result.message})"
        )
    omega, alpha, beta = (float(res.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
    gamma = float(res.params["gamma[1]"]) if asymmetric else 0.0
    if not (math.isfinite(omega + alpha + beta + gamma) and omega > 0 and min(alpha, beta, gamma) >= 0):
        raise DataError(
            f"{name} fit on {len(r)} training returns gave unusable parameters "
            f"omega={omega:g}, alpha={alpha:g}, beta={beta:g}, gamma={gamma:g}"
        )
    return Garch(omega=omega / ARCH_SCALE**2, alpha=alpha, beta=beta, gamma=gamma)


def garch_forecast(returns: np.ndarray, params: Garch, horizon: int, *, init: float) -> np.ndarray:
    """Per row ``t``: the mean GARCH (or GJR) variance forecast over ``t+1..t+horizon``, from returns up to ``t``.

    The one-step variance ``s2[t+1]`` comes from the recursion over every earlier row; ``k`` steps ahead it is
    ``omega * sum(phi^j, j < k-1) + phi^(k-1) * s2[t+1]`` with ``phi`` the persistence, so the h-day mean is
    ``c0 + c1 * s2[t+1]`` with constants that need no per-row work.
    ``init`` is the variance assumed before the first row.
    """
    r = np.asarray(returns, dtype=np.float64)
    p = variance_proxy(r)
    shock = params.alpha + params.gamma * (r < 0)
    one_step = _first_order_recursion(params.omega + shock * p, params.beta, init)
    phi = params.persistence
    c0 = sum(params.omega * sum(phi**j for j in range(k - 1)) for k in range(1, horizon + 1)) / horizon
    c1 = sum(phi ** (k - 1) for k in range(1, horizon + 1)) / horizon
    return np.maximum(c0 + c1 * one_step, VAR_FLOOR)


# ----------------------------------------------------------------------------------------------- HAR-RV
@dataclass(frozen=True)
class Har:
    """HAR-RV: next-h-day mean variance = intercept + daily * RV_d + weekly * RV_w + monthly * RV_m."""

    intercept: float
    daily: float
    weekly: float
    monthly: float


def har_regressors(returns: np.ndarray) -> np.ndarray:
    """(rows, 4): 1 and the mean proxy over the last 1, 5 and 22 days up to row ``t`` (NaN before 22 days exist)."""
    p = variance_proxy(returns)
    csum = np.concatenate([[0.0], np.cumsum(p)])
    x = np.full((len(p), 4), np.nan)
    x[:, 0] = 1.0
    for col, days in enumerate(HAR_DAYS, start=1):
        x[days - 1 :, col] = (csum[days:] - csum[:-days]) / days
    return x


def _forward_variance(returns: np.ndarray, horizon: int) -> np.ndarray:
    """Per row ``t``: the mean proxy over ``t+1..t+horizon`` (the target squared), NaN where the horizon runs out."""
    p = variance_proxy(returns)
    csum = np.concatenate([[0.0], np.cumsum(p)])
    out = np.full(len(p), np.nan)
    out[: len(p) - horizon] = (csum[horizon + 1 :] - csum[1 : len(p) - horizon + 1]) / horizon
    return out


def fit_har(returns: np.ndarray, train_rows: tuple[int, int], horizon: int) -> Har:
    """OLS of the next-``horizon``-day mean variance on the HAR regressors, on training rows only.

    A regression row ``t`` needs its monthly term (rows ``t-21..t``) and its label (``t+1..t+horizon``) inside
    ``train_rows``. Fit in variance, the scale QLIKE and MSE score, rather than Corsi's volatility scale. Raises
    DataError when fewer than ``HAR_MIN_SAMPLES`` such rows exist.
    """
    start, stop = train_rows
    first, last = start + HAR_DAYS[-1] - 1, stop - horizon  # rows first..last-1 qualify
    n_fit = last - first
    if n_fit < HAR_MIN_SAMPLES:
        raise DataError(
            f"HAR-RV needs at least {HAR_MIN_SAMPLES} training regression rows, but the "
            f"{stop - start} training rows leave {max(n_fit, 0)} after its {HAR_DAYS[-1]}-day monthly "
            f"term and the {horizon}-day label; use a longer series or a shorter horizon"
        )
    x = har_regressors(returns[start:stop])[first - start : last - start]
    y = _forward_variance(returns[start:stop], horizon)[first - start : last - start]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    if not np.isfinite(coef).all():
        raise DataError(f"HAR-RV regression on {n_fit} training rows gave non-finite coefficients")
    return Har(*(float(c) for c in coef))


def har_forecast(returns: np.ndarray, params: Har) -> np.ndarray:
    """Per row ``t``: the HAR forecast from returns up to ``t`` (floored at ``VAR_FLOOR``; NaN in the first 21 rows)."""
    coef = np.array([params.intercept, params.daily, params.weekly, params.monthly])
    return np.maximum(har_regressors(returns) @ coef, VAR_FLOOR)


# ----------------------------------------------------------------------------------------------- EWMA
def ewma_forecast(returns: np.ndarray, *, init: float, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """Per row ``t``: RiskMetrics ``s2[t+1] = lam * s2[t] + (1 - lam) * r[t]^2``; flat for every later day."""
    p = variance_proxy(returns)
    return np.maximum(_first_order_recursion((1.0 - lam) * p, lam, init), VAR_FLOOR)


# ----------------------------------------------------------------------------------------------- all of them
@dataclass
class VolatilityBaselines:
    """Variance forecasts per row of the whole series, the fitted parameters, and the baselines that could not run."""

    variance: dict[str, np.ndarray] = field(default_factory=dict)  # baseline -> variance forecast per row
    params: dict[str, dict[str, float]] = field(default_factory=dict)  # baseline -> fitted parameters
    skipped: dict[str, str] = field(default_factory=dict)  # baseline -> why it could not be fit

    def vol(self, name: str, positions: np.ndarray) -> np.ndarray:
        """The volatility forecast (square root of the variance) at the given sample positions."""
        return np.sqrt(self.variance[name][positions])


def fit_baselines(ds: Dataset, *, asymmetric: bool = False) -> VolatilityBaselines:
    """GARCH(1,1), HAR-RV, EWMA (and with ``asymmetric`` GJR-GARCH(1,1)) for a volatility dataset, each fit on
    ``ds.split.train_rows`` only.

    A baseline that cannot be fit (series too short, no convergence) is left out and its reason kept in ``skipped``:
    the others still report.
    """
    if ds.returns is None:
        raise DataError("the dataset carries no returns; build it with hpo_lib.data.prepare")
    r, (start, stop), h = ds.returns, ds.split.train_rows, ds.horizon
    init = float(np.mean(variance_proxy(r[start:stop])))
    out = VolatilityBaselines()
    for name, leverage in (("garch", False), ("gjr_garch", True))[: 1 + asymmetric]:
        try:
            garch = fit_garch(r[start:stop], asymmetric=leverage)
            out.variance[name] = garch_forecast(r, garch, h, init=init)
            out.params[name] = {**asdict(garch), "persistence": garch.persistence}
        except DataError as exc:
            out.skipped[name] = str(exc)
    try:
        har = fit_har(r, (start, stop), h)
        out.variance["har"] = har_forecast(r, har)
        out.params["har"] = asdict(har)
    except DataError as exc:
        out.skipped["har"] = str(exc)
    out.variance["ewma"] = ewma_forecast(r, init=init)
    out.params["ewma"] = {"lambda": EWMA_LAMBDA}
    return out
