"""Inference a quant signs: search-aware tests, block-bootstrap intervals, nested-model tests, deflated Sharpe.

Every function takes per-day arrays of one test period (losses, forecasts, strategy returns) and returns a
JSON-ready dict. A statistic the input cannot support (too few days, a constant series, too few forecasts) raises
:class:`~hpo_lib.errors.DataError` naming the statistic and the reason; :func:`attempt` turns that into
``{"skipped": reason}`` so one missing figure never hides the others.

* :func:`spa_test`: Hansen's SPA and White's Reality Check (``arch.bootstrap.SPA``) of several models against one
  benchmark, with the number of configurations the search tried named beside them.
* :func:`model_confidence_set`: Hansen, Lunde and Nason's MCS (``arch.bootstrap.MCS``) at 10 %.
* :func:`bootstrap_interval`: a stationary-block-bootstrap percentile interval (``arch.bootstrap.StationaryBootstrap``)
  with Politis-White's optimal block length (``arch.bootstrap.optimal_block_length``).
* :func:`clark_west`: Clark and West (2007) for a model against a nested one (written here: no library has it).
* :func:`oos_r2`: Campbell and Thompson's (2008) out-of-sample R² against a benchmark forecast.
* :func:`pesaran_timmermann`: Pesaran and Timmermann's (1992) test of directional accuracy (written here: no
  library has it; its 2x2 special case agrees with the chi-square test of independence, which the tests check).
* :func:`probabilistic_sharpe`, :func:`deflated_sharpe`: Bailey and López de Prado (2012, 2014), written here from the
  papers' formulas with ``scipy.stats`` for the moments and the normal law.

Every bootstrap uses a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hpo_lib.errors import DataError

MIN_DAYS = 30  # fewer test days than this give no usable bootstrap or asymptotic test
REPS = 1000  # bootstrap replications
LEVEL = 0.95  # interval coverage
MCS_SIZE = 0.10  # the MCS keeps every forecast whose MCS p-value is at least this
SEED = 0
EULER_GAMMA = 0.5772156649015329


def attempt(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``fn(*args, **kwargs)``, or ``{"skipped": reason}`` when the input cannot support it (a DataError)."""
    try:
        return fn(*args, **kwargs)
    except DataError as exc:
        return {"skipped": str(exc)}


def _series(x: np.ndarray | list[float], name: str, *, min_days: int = MIN_DAYS) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name} needs a 1-D series, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{name} needs finite values; got {int((~np.isfinite(a)).sum())} non-finite")
    if len(a) < min_days:
        raise DataError(f"{name} needs at least {min_days} test days, got {len(a)}")
    return a


# ----------------------------------------------------------------------------------------------- block bootstrap
def block_length(x: np.ndarray) -> float:
    """Politis and White's (2004, corrected 2009) optimal mean block length for the stationary bootstrap.

    At least 1 (an i.i.d. bootstrap); a constant series, which has no dependence to estimate, gets 1.
    """
    a = np.asarray(x, dtype=np.float64)
    if len(a) < 2 or float(np.ptp(a)) == 0.0:
        return 1.0
    from arch.bootstrap import optimal_block_length

    value = float(optimal_block_length(a)["stationary"].iloc[0])
    return max(1.0, value) if math.isfinite(value) else 1.0


def bootstrap_interval(
    stat: Callable[..., float],
    *series: np.ndarray,
    name: str = "the interval",
    block: float | None = None,
    reps: int = REPS,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, Any]:
    """A percentile interval for ``stat(*series)`` under the stationary block bootstrap (Politis and Romano 1994).

    The series are resampled together (same blocks), so a statistic of strategy returns and positions keeps them
    aligned. ``block`` is the mean block length; by default the optimal one of the first series. A constant
    statistic gives an interval of zero width, never a division by zero.

    Returns ``estimate``, ``low``, ``high``, ``level``, ``block_length``, ``reps``.
    """
    if not series:
        raise DataError(f"{name} needs at least one series")
    arrays = [_series(s, name) for s in series]
    if len({len(a) for a in arrays}) != 1:
        raise DataError(f"{name} needs series of equal length, got {[len(a) for a in arrays]}")
    from arch.bootstrap import StationaryBootstrap

    b = block_length(arrays[0]) if block is None else float(block)
    bs = StationaryBootstrap(max(1, round(b)), *arrays, seed=seed)
    with np.errstate(all="ignore"):
        values = np.array([stat(*pos) for pos, _ in bs.bootstrap(reps)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < reps // 2:
        raise DataError(f"{name}: the statistic was not finite on most bootstrap samples")
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return {
        "estimate": float(stat(*arrays)),
        "low": float(low),
        "high": float(high),
        "level": level,
        "block_length": b,
        "reps": reps,
    }


# ----------------------------------------------------------------------------------------------- search-aware tests
def spa_test(
    benchmark: np.ndarray,
    models: np.ndarray,
    *,
    n_configurations: int,
    names: list[str] | None = None,
    reps: int = REPS,
    seed: int = SEED,
) -> dict[str, Any]:
    """Is any model's expected loss below the benchmark's? Hansen's SPA and White's Reality Check.

    ``benchmark`` holds the bar's per-day losses (n,), ``models`` the candidates' (n, k); lower is better. The null
    is that no model beats the benchmark; the p-values account for all k models at once. ``spa_p`` is Hansen's
    (2005) studentized, consistent p-value; ``spa_p_lower``/``spa_p_upper`` its bounds; ``reality_check_p`` White's
    (2000) Reality Check (not studentized, no recentring: the upper bound). The bootstrap is the stationary one with
    the optimal block length of the best model's loss differential. ``n_configurations`` is the number of
    configurations the search tried, reported beside the p-values: the models here are the ones it selected.
    """
    from arch.bootstrap import SPA

    b = _series(benchmark, "SPA")
    m = np.asarray(models, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.shape[0] != len(b) or m.shape[1] < 1 or not np.isfinite(m).all():
        raise DataError(f"SPA needs finite model losses of shape ({len(b)}, k >= 1), got {m.shape}")
    diff = b[:, None] - m  # > 0 where a model does better than the benchmark
    best = int(np.argmax(diff.mean(axis=0)))
    block = block_length(diff[:, best])
    if np.allclose(diff, diff[:1], rtol=0.0, atol=1e-12 * (1.0 + float(np.abs(diff).max()))):
        # every differential is constant: SPA has no variance to studentize by
        raise DataError("SPA: every model's loss differential against the benchmark is constant")
    pvalues = {}
    for studentize in (True, False):
        spa = SPA(
            b, m, block_size=max(1, round(block)), reps=reps, bootstrap="stationary", studentize=studentize, seed=seed
        )
        spa.compute()
        pvalues[studentize] = spa.pvalues
    return {
        "spa_p": float(pvalues[True]["consistent"]),
        "spa_p_lower": float(pvalues[True]["lower"]),
        "spa_p_upper": float(pvalues[True]["upper"]),
        "reality_check_p": float(pvalues[False]["upper"]),
        "n_models": int(m.shape[1]),
        "models": names or [f"model{i}" for i in range(m.shape[1])],
        "best_model": (names or [f"model{i}" for i in range(m.shape[1])])[best],
        "n_configurations": int(n_configurations),
        "n": int(len(b)),
        "block_length": block,
        "reps": reps,
    }


def model_confidence_set(
    losses: Mapping[str, np.ndarray], *, size: float = MCS_SIZE, reps: int = REPS, seed: int = SEED
) -> dict[str, Any]:
    """The forecasts that cannot be told apart from the best at ``size`` (Hansen, Lunde and Nason 2011).

    ``losses`` maps each forecast (winners and baselines) to its per-day losses on the same days. The MCS drops
    forecasts one at a time with the range statistic until equal accuracy is no longer rejected; ``included`` are
    the survivors (the set holds the best forecast with probability at least ``1 - size``), ``pvalues`` each
    forecast's MCS p-value. Needs at least two forecasts.
    """
    from arch.bootstrap import MCS

    names = list(losses)
    if len(names) < 2:
        raise DataError(f"the Model Confidence Set needs at least 2 forecasts to compare, got {len(names)}")
    columns = [_series(losses[n], "the Model Confidence Set") for n in names]
    if len({len(c) for c in columns}) != 1:
        raise DataError("the Model Confidence Set needs every forecast's losses on the same days")
    matrix = np.column_stack(columns)
    # forecasts with identical losses are one forecast to the MCS: keep the first, name the others with it
    unique: list[int] = []
    alias: dict[str, str] = {}
    for i, name in enumerate(names):
        twin = next((j for j in unique if np.array_equal(matrix[:, j], matrix[:, i])), None)
        if twin is None:
            unique.append(i)
        else:
            alias[name] = names[twin]
    if len(unique) < 2:
        raise DataError("the Model Confidence Set needs at least 2 forecasts with different losses")
    sub = matrix[:, unique]
    block = block_length(sub.mean(axis=1) - sub[:, 0])
    mcs = MCS(sub, size=size, reps=reps, block_size=max(1, round(block)), bootstrap="stationary", seed=seed)
    with np.errstate(all="ignore"):
        mcs.compute()
    p = {names[unique[int(i)]]: float(v) for i, v in mcs.pvalues["Pvalue"].items()}
    p.update({name: p[twin] for name, twin in alias.items()})
    included = [n for n in names if p[n] >= size]
    return {
        "size": size,
        "included": included,
        "pvalues": p,
        "n": int(len(matrix)),
        "block_length": block,
        "reps": reps,
    }


# ----------------------------------------------------------------------------------------------- nested models
def _hac_variance(x: np.ndarray, lags: int) -> float:
    """Newey-West long-run variance of ``x`` with Bartlett weights up to ``lags`` (0: the sample variance)."""
    c = x - x.mean()
    n = len(c)
    v = float(c @ c / n)
    for k in range(1, lags + 1):
        v += 2 * (1 - k / (lags + 1)) * float(c[k:] @ c[:-k] / n)
    return v


def clark_west(y: np.ndarray, nested: np.ndarray, model: np.ndarray, *, horizon: int = 1) -> dict[str, Any]:
    """Clark and West's (2007) test that ``model`` forecasts better than the ``nested`` model it extends.

    Under the null that the nested model is the truth, the larger model's MSPE is biased upwards by its estimation
    noise, so a plain Diebold-Mariano test is undersized. The adjusted differential
    ``f_t = (y - nested)^2 - [(y - model)^2 - (nested - model)^2]`` corrects it; its mean is tested against zero,
    one-sided (the model better), with a Newey-West variance up to lag ``horizon - 1`` and the normal law.
    Identical forecasts give statistic 0 and p-value 0.5; a constant non-zero differential has no variance and is
    refused.
    """
    from scipy import stats

    yy = _series(y, "Clark-West")
    f1, f2 = _series(nested, "Clark-West"), _series(model, "Clark-West")
    if not (len(yy) == len(f1) == len(f2)):
        raise DataError("Clark-West needs the actuals and both forecasts on the same days")
    adj = (yy - f1) ** 2 - ((yy - f2) ** 2 - (f1 - f2) ** 2)
    mean = float(adj.mean())
    if np.array_equal(f1, f2):
        return {"statistic": 0.0, "p_value": 0.5, "n": int(len(yy)), "mean_adjusted_diff": 0.0}
    var = _hac_variance(adj, max(0, horizon - 1))
    if not var > 0:
        raise DataError("Clark-West: the adjusted loss differential is constant; there is no variance to test it")
    statistic = mean / math.sqrt(var / len(adj))
    return {
        "statistic": float(statistic),
        "p_value": float(stats.norm.sf(statistic)),
        "n": int(len(yy)),
        "mean_adjusted_diff": mean,
    }


def oos_r2(y: np.ndarray, forecast: np.ndarray, benchmark: np.ndarray) -> dict[str, Any]:
    """Campbell and Thompson's out-of-sample R²: ``1 - SSE(forecast) / SSE(benchmark)``.

    Positive when the forecast's squared errors are smaller than the benchmark's (the training mean for returns).
    A benchmark with no error at all leaves nothing to explain and is refused.
    """
    yy, f, b = (_series(a, "out-of-sample R²", min_days=2) for a in (y, forecast, benchmark))
    sse_b = float(np.sum((yy - b) ** 2))
    if sse_b == 0:
        raise DataError("out-of-sample R²: the benchmark forecast has no error to improve on")
    return {"r2": 1.0 - float(np.sum((yy - f) ** 2)) / sse_b, "n": int(len(yy))}


def pesaran_timmermann(actual_up: np.ndarray, forecast_up: np.ndarray) -> dict[str, Any]:
    """Pesaran and Timmermann's (1992) test that forecast directions predict actual ones better than chance.

    ``P`` is the hit rate; under independence its expectation is ``P* = py * px + (1 - py)(1 - px)`` (``py``,
    ``px`` the up-shares of the actuals and forecasts). ``(P - P*) / sqrt(V(P) - V(P*))`` is standard normal under
    the null; the p-value is one-sided (better than chance). A forecast (or actual) that never changes direction
    has no variance and is refused: there is no timing to test.
    """
    from scipy import stats

    a = _series(actual_up, "Pesaran-Timmermann") > 0.5
    f = _series(forecast_up, "Pesaran-Timmermann") > 0.5
    if len(a) != len(f):
        raise DataError("Pesaran-Timmermann needs actuals and forecasts on the same days")
    n = len(a)
    p, py, px = float(np.mean(a == f)), float(a.mean()), float(f.mean())
    if px in (0.0, 1.0) or py in (0.0, 1.0):
        side = "forecast" if px in (0.0, 1.0) else "actual"
        raise DataError(f"Pesaran-Timmermann: the {side} direction never changes; there is no timing to test")
    p_star = py * px + (1 - py) * (1 - px)
    v_p = p_star * (1 - p_star) / n
    v_star = ((2 * py - 1) ** 2 * px * (1 - px) + (2 * px - 1) ** 2 * py * (1 - py)) / n + 4 * py * px * (1 - py) * (
        1 - px
    ) / n**2
    var = v_p - v_star
    if not var > 0:
        raise DataError("Pesaran-Timmermann: the variance under independence is not positive")
    statistic = (p - p_star) / math.sqrt(var)
    return {
        "statistic": float(statistic),
        "p_value": float(stats.norm.sf(statistic)),
        "hit_rate": p,
        "expected_hit_rate": p_star,
        "n": n,
    }


# ----------------------------------------------------------------------------------------------- Sharpe ratios
def _sharpe_moments(returns: np.ndarray) -> tuple[float, int, float, float]:
    """Per-period Sharpe ratio, number of periods, skewness and (non-excess) kurtosis of ``returns``."""
    from scipy import stats

    r = _series(returns, "the probabilistic Sharpe ratio")
    sd = float(r.std(ddof=1))
    if float(np.ptp(r)) == 0 or sd == 0:
        raise DataError("the probabilistic Sharpe ratio: the strategy's returns do not vary")
    return float(r.mean() / sd), len(r), float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))


def psr_from_moments(sr: float, n: int, skew: float, kurtosis: float, benchmark_sr: float = 0.0) -> float:
    """``Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))``, SR per period."""
    from scipy import stats

    denom = 1 - skew * sr + (kurtosis - 1) / 4 * sr**2
    if not denom > 0:
        raise DataError("the probabilistic Sharpe ratio: the Sharpe ratio's variance estimate is not positive")
    return float(stats.norm.cdf((sr - benchmark_sr) * math.sqrt(n - 1) / math.sqrt(denom)))


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """The expected largest of ``n_trials`` Sharpe estimates whose true value is 0 (Bailey and López de Prado 2014).

    ``sqrt(V) * ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))``, gamma the Euler-Mascheroni constant;
    0 for one trial.
    """
    from scipy import stats

    if n_trials < 1:
        raise DataError(f"the deflated Sharpe ratio needs at least 1 trial, got {n_trials}")
    if n_trials == 1:
        return 0.0
    z1 = stats.norm.ppf(1 - 1 / n_trials)
    z2 = stats.norm.ppf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(variance) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def probabilistic_sharpe(returns: np.ndarray, *, benchmark_sr: float = 0.0, periods: int = 252) -> dict[str, Any]:
    """The probability that the true Sharpe ratio exceeds ``benchmark_sr`` (per period), given the sample's
    length, skewness and kurtosis (Bailey and López de Prado 2012). ``sharpe`` is reported annualised."""
    sr, n, skew, kurt = _sharpe_moments(returns)
    return {
        "psr": psr_from_moments(sr, n, skew, kurt, benchmark_sr),
        "sharpe": sr * math.sqrt(periods),
        "benchmark_sharpe": benchmark_sr * math.sqrt(periods),
        "n": n,
        "skew": skew,
        "kurtosis": kurt,
    }


def deflated_sharpe(
    returns: np.ndarray, *, n_trials: int, sr_variance: float | None = None, periods: int = 252
) -> dict[str, Any]:
    """The probabilistic Sharpe ratio against the best Sharpe that ``n_trials`` worthless strategies would show.

    The benchmark is :func:`expected_max_sharpe` with ``sr_variance``, the variance of the trials' per-period
    Sharpe estimates. The trials here are scored on a loss, not backtested, so by default the variance is the
    Sharpe estimator's own under the null of no skill, ``1 / (n - 1)``: what N strategies with true Sharpe 0 would
    scatter by. ``dsr`` near 1 means the Sharpe survives the search; below 0.95 it does not at 5 %.
    """
    sr, n, skew, kurt = _sharpe_moments(returns)
    variance = 1.0 / (n - 1) if sr_variance is None else float(sr_variance)
    threshold = expected_max_sharpe(int(n_trials), variance)
    return {
        "dsr": psr_from_moments(sr, n, skew, kurt, threshold),
        "sharpe": sr * math.sqrt(periods),
        "expected_max_sharpe": threshold * math.sqrt(periods),
        "n_trials": int(n_trials),
        "n": n,
        "sr_variance": variance,
    }


# ----------------------------------------------------------------------------------------------- strategy figures
def hit_rate(net: np.ndarray, positions: np.ndarray) -> float:
    """Share of days in the market with a positive net return (0 when never in the market)."""
    in_market = positions != 0
    return float(np.mean(net[in_market] > 0)) if in_market.any() else 0.0
