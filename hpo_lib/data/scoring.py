"""Scoring: every forecast, model or baseline, is judged here on the same samples, so the numbers compare directly.

* :func:`score`: a forecast's metrics on one split. ``loss`` is the target's *evaluation* loss, fixed per target
  so that trials trained with different losses compare: MSE on the standardised target for ``return`` and
  ``volatility``, cross-entropy (nats) for ``direction``; volatility is also scored with QLIKE (:func:`qlike`),
  which ranks its forecasts. ``loss`` (and ``qlike``) are the means of :func:`sample_losses`.
* :func:`diebold_mariano`: is one forecast's per-sample loss really lower than another's?
* :func:`backtest`: a daily long/short position on the forecast's sign, with trading costs.

The tests that know about the search, bootstrap intervals and nested-model tests are in :mod:`.inference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hpo_lib.data.dataset import Dataset
from hpo_lib.errors import DataError

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] so cross-entropy stays finite
VAR_FLOOR = 1e-10  # (0.001% a day)^2: variance forecasts are raised to at least this, so QLIKE stays finite


# ----------------------------------------------------------------------------------------------- per-sample losses
def to_variance(vol_forecast: np.ndarray) -> np.ndarray:
    """Volatility forecast -> variance forecast: negative volatility counts as 0, then the floor ``VAR_FLOOR``."""
    return np.maximum(np.square(np.clip(np.asarray(vol_forecast, dtype=np.float64), 0.0, None)), VAR_FLOOR)


def qlike(proxy: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Per-sample QLIKE loss ``log(f) + proxy / f`` of variance forecasts ``f`` against realized-variance proxies.

    Its expectation is smallest at the true conditional variance, and it ranks forecasts consistently when the proxy
    is noisy but unbiased (Patton 2011). Patton's normalised form ``proxy/f - log(proxy/f) - 1`` (0 for a perfect
    forecast) differs from this one by a term in the proxy alone, so differences between forecasts, rankings and
    Diebold-Mariano tests are identical; this form stays finite on a day whose proxy is 0 (an unchanged close).
    Lower is better; values are negative for daily variances (log f is about -9). ``f`` must be positive.
    """
    f = np.asarray(forecast, dtype=np.float64)
    return np.log(f) + np.asarray(proxy, dtype=np.float64) / f


def sample_qlike(y_vol: np.ndarray, vol_forecast: np.ndarray) -> np.ndarray:
    """QLIKE per sample from the volatility target and a volatility forecast (the target squared is the proxy)."""
    return qlike(np.square(np.asarray(y_vol, dtype=np.float64)), to_variance(vol_forecast))


def sample_losses(ds: Dataset, part: str, forecast: np.ndarray) -> np.ndarray:
    """Per-sample values of a split's ranking metric (:func:`ranking_metric`); :func:`score` reports their mean.

    Squared error on the standardised target (return), cross-entropy (direction), QLIKE (volatility).
    """
    y, f = ds.y[part], np.asarray(forecast, dtype=np.float64)
    if ds.target == "volatility":
        return sample_qlike(y, f)
    if ds.is_classification:
        p = np.clip(f, EPS, 1 - EPS)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return _scaled_squared_error(ds, part, f)


def _scaled_squared_error(ds: Dataset, part: str, forecast: np.ndarray) -> np.ndarray:
    """Squared error on the standardised target: ``loss`` of the regression targets, return and volatility."""
    assert ds.target_scaler is not None  # only classification (direction) datasets have no target scaler
    return (ds.target_scaler.transform(forecast) - ds.y_scaled[part]) ** 2


# ----------------------------------------------------------------------------------------------- metrics
def score(ds: Dataset, part: str, forecast: np.ndarray) -> dict[str, float]:
    """Metrics of a forecast on one split.

    ``forecast`` is in original units for regression targets, and P(up) for ``direction``.
    Regression: ``loss`` (MSE, standardised), ``rmse``, ``mae``, ``dir_acc`` (forecast and truth on the same side of
    the reference). Volatility adds ``qlike`` (mean :func:`qlike`) and ``var_mse`` (MSE on
    variance), both against the realized-variance proxy (the target squared); ``rmse`` is then RMSE on volatility.
    Direction: ``loss`` (cross-entropy), ``acc``, ``dir_acc`` (= acc).
    """
    y, ref = ds.y[part], ds.ref[part]
    forecast = np.asarray(forecast, dtype=np.float64)
    if ds.is_classification:
        p = np.clip(forecast, EPS, 1 - EPS)
        acc = float(np.mean((p > 0.5) == (y > 0.5)))
        return {"loss": float(np.mean(sample_losses(ds, part, forecast))), "acc": acc, "dir_acc": acc}
    err = forecast - y
    metrics = {
        "loss": float(np.mean(_scaled_squared_error(ds, part, forecast))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "dir_acc": float(np.mean((forecast > ref) == (y > ref))),
    }
    if ds.target == "volatility":
        metrics["qlike"] = float(np.mean(sample_losses(ds, part, forecast)))
        metrics["var_mse"] = float(np.mean((to_variance(forecast) - np.square(y)) ** 2))
    return metrics


def ranking_metric(metrics: dict[str, float]) -> str:
    """The metric that ranks forecasts of a target: ``qlike`` where scored (volatility), else ``loss``."""
    return "qlike" if "qlike" in metrics else "loss"


# ----------------------------------------------------------------------------------------------- significance
@dataclass(frozen=True)
class DMResult:
    """A Diebold-Mariano test of equal predictive accuracy (see :func:`diebold_mariano`)."""

    statistic: float  # HLN-corrected; > 0 means forecast A has the larger loss (B is better)
    p_value: float  # two-sided, Student t with n - 1 degrees of freedom
    n: int  # number of loss pairs
    mean_diff: float  # mean of loss_a - loss_b

    def as_dict(self) -> dict[str, float | int]:
        return {"statistic": self.statistic, "p_value": self.p_value, "n": self.n, "mean_diff": self.mean_diff}


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int = 1) -> DMResult:
    """Diebold-Mariano test with the Harvey-Leybourne-Newbold small-sample correction.

    The loss differential is ``d_t = loss_a[t] - loss_b[t]``. Forecasts ``horizon`` steps ahead made every day overlap,
    so ``d`` is allowed autocorrelation up to lag ``horizon - 1``: its long-run variance is
    ``gamma_0 + 2 * sum(gamma_k, k = 1..horizon-1)`` (Diebold and Mariano 1995). When that estimate is not positive
    (possible with these equal weights on a short or oddly shaped sample) the Bartlett (Newey-West) weights
    ``1 - k / horizon`` are used instead, which are never negative. The statistic ``mean(d) / sqrt(variance / n)`` is
    multiplied by ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` and compared with Student's t with ``n - 1`` degrees of freedom
    (Harvey, Leybourne and Newbold 1997).

    Identical losses (``d`` all zero) give statistic 0 and p-value 1. A constant non-zero differential has no variance
    to test against and raises :class:`~hpo_lib.errors.DataError`, as do fewer than ``max(3, 2 * horizon)`` pairs,
    arrays of different lengths and non-finite values. Swapping ``loss_a`` and ``loss_b`` flips the statistic's sign
    and keeps the p-value.

    Args:
        loss_a: per-sample losses of forecast A (1-D, finite).
        loss_b: per-sample losses of forecast B on the same samples.
        horizon: forecast horizon ``h`` in samples, at least 1.

    >>> r = diebold_mariano(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 1.0, 2.5, 2.0]))
    >>> round(r.statistic, 4), round(r.p_value, 4), r.n, r.mean_diff
    (1.4412, 0.2452, 4, 0.75)
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise DataError(f"horizon must be an integer of at least 1, got {horizon!r}")
    a, b = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DataError(f"loss arrays must be 1-D and of equal length, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError(
            f"loss arrays contain {int((~np.isfinite(a)).sum() + (~np.isfinite(b)).sum())} "
            f"non-finite value(s); the Diebold-Mariano test needs finite losses"
        )
    n, h = len(a), int(horizon)
    needed = max(3, 2 * h)
    if n < needed:
        raise DataError(
            f"the Diebold-Mariano test needs at least {needed} loss pairs for horizon={h} "
            f"(max(3, 2 * horizon)), got {n}"
        )
    d = a - b
    mean = float(d.mean())
    if not d.any():
        return DMResult(statistic=0.0, p_value=1.0, n=n, mean_diff=0.0)
    centred = d - mean
    gamma = np.array([centred[k:] @ centred[: n - k] / n for k in range(h)])  # autocovariances at lags 0..h-1
    variance = gamma[0] + 2 * gamma[1:].sum()
    if variance <= 0:
        variance = gamma[0] + 2 * (gamma[1:] * (1 - np.arange(1, h) / h)).sum()
    if variance <= 0:
        raise DataError(
            f"the loss differential is constant ({mean:g} on all {n} samples); "
            f"the Diebold-Mariano test has no variance to test it against"
        )
    from scipy import special  # here, not at the top: a cold import costs trials that never test (about 0.1 s)

    correction = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    statistic = correction * mean / math.sqrt(variance / n)
    p_value = float(2 * special.stdtr(n - 1, -abs(statistic)))
    return DMResult(statistic=float(statistic), p_value=min(1.0, p_value), n=n, mean_diff=mean)


# ----------------------------------------------------------------------------------------------- trading backtest
@dataclass(frozen=True)
class BacktestResult:
    """A daily long/short (or long/flat) backtest of a forecast's sign, net of costs (see :func:`backtest`)."""

    sharpe: float  # annualised mean / standard deviation of the daily net returns; 0 when they do not vary
    max_drawdown: float  # largest fall of the equity curve from a previous peak, as a fraction (0.25 = -25%)
    win_rate: float  # share of days in the market with a positive net return; 0 when never in the market
    total_return: float  # compounded net return over the whole period
    annual_return: float  # geometric, from total_return
    annual_volatility: float
    turnover: float  # mean absolute change of the position per day
    exposure: float  # share of days with a non-zero position
    n_days: int
    cost_bps: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def positions_from_forecast(
    forecast: np.ndarray, reference: np.ndarray | float = 0.0, *, long_only: bool = False
) -> np.ndarray:
    """+1 where the forecast is above its reference (up), else -1 (or 0 with ``long_only``).

    The reference is 0 for a return forecast and 0.5 for a probability of "up"; a forecast equal to it counts as
    not up, as in the directional accuracy of :func:`score`.
    """
    up = np.asarray(forecast, dtype=np.float64) > np.asarray(reference, dtype=np.float64)
    return np.where(up, 1.0, 0.0 if long_only else -1.0)


def sharpe_ratio(returns: np.ndarray, periods_per_year: int = 252) -> float:
    """Annualised Sharpe ratio of per-period returns (no risk-free rate); 0 for returns that do not vary."""
    r = np.asarray(returns, dtype=np.float64)
    sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    return float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough fall of the compounded equity curve (starting at 1), as a positive fraction.

    >>> round(max_drawdown(np.array([0.1, -0.5, 0.2])), 4)
    0.5
    """
    equity = np.cumprod(1 + np.asarray(returns, dtype=np.float64))
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return float(np.max(1 - equity / peak)) if len(equity) else 0.0


def backtest(
    positions: np.ndarray, asset_returns: np.ndarray, *, cost_bps: float = 5.0, periods_per_year: int = 252
) -> BacktestResult:
    """Trade a daily position and charge ``cost_bps`` per unit of position change.

    ``positions[t]`` is decided at the close of day t with what is known then and held over the next day, whose
    simple return is ``asset_returns[t]`` (so the caller passes next-day returns aligned with the forecasts). The
    net return of day t is ``positions[t] * asset_returns[t] - cost_bps / 1e4 * |positions[t] - positions[t-1]|``,
    starting flat: entering costs, and a flip from long to short costs twice.

    Args:
        positions: per-day positions, typically -1, 0 or +1.
        asset_returns: simple (not log) returns, same length, finite.
        cost_bps: cost per unit of traded position in basis points, at least 0.
        periods_per_year: 252 for daily bars.

    >>> r = backtest(np.array([1.0, 1.0, -1.0]), np.array([0.01, -0.02, -0.01]), cost_bps=0)
    >>> round(r.total_return, 6), r.win_rate, r.turnover
    (-0.000302, 0.6666666666666666, 1.0)
    """
    p, r = np.asarray(positions, dtype=np.float64), np.asarray(asset_returns, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 1:
        raise DataError(f"positions and returns must be 1-D and of equal length, got shapes {p.shape} and {r.shape}")
    if not (np.isfinite(p).all() and np.isfinite(r).all()):
        raise DataError("positions and returns must be finite")
    if cost_bps < 0:
        raise DataError(f"cost_bps must be at least 0, got {cost_bps}")
    if len(p) == 0:
        raise DataError("a backtest needs at least one day")
    trades = np.abs(np.diff(p, prepend=0.0))
    net = net_returns(p, r, cost_bps=cost_bps)
    total = float(np.prod(1 + net) - 1)
    years = len(net) / periods_per_year
    in_market = p != 0
    return BacktestResult(
        sharpe=sharpe_ratio(net, periods_per_year),
        max_drawdown=max_drawdown(net),
        win_rate=float(np.mean(net[in_market] > 0)) if in_market.any() else 0.0,
        total_return=total,
        annual_return=float((1 + total) ** (1 / years) - 1) if total > -1 else -1.0,
        annual_volatility=float(net.std(ddof=1) * math.sqrt(periods_per_year)) if len(net) > 1 else 0.0,
        turnover=float(trades.mean()),
        exposure=float(in_market.mean()),
        n_days=int(len(net)),
        cost_bps=float(cost_bps),
    )


def net_returns(positions: np.ndarray, asset_returns: np.ndarray, *, cost_bps: float = 5.0) -> np.ndarray:
    """Per-day net return of :func:`backtest`: ``positions[t] * asset_returns[t]`` minus the cost of the change."""
    p = np.asarray(positions, dtype=np.float64)
    return p * np.asarray(asset_returns, dtype=np.float64) - cost_bps / 1e4 * np.abs(np.diff(p, prepend=0.0))


def next_day_returns(ds: Dataset, part: str) -> np.ndarray:
    """Simple return of the day after each sample's last input day: what a position taken at that close earns."""
    if ds.returns is None:
        raise DataError("the dataset carries no daily returns; it cannot be backtested")
    return np.expm1(ds.returns[getattr(ds.split, part) + 1])
