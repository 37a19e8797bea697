"""Baseline forecasts, the metrics every model and baseline is scored with, and the choice of the best baseline.

Every forecast (model or baseline) is scored by :func:`score` on the same samples, so the numbers compare directly.
``loss`` is the target's *evaluation* loss, fixed per target so that trials trained with different losses compare:
MSE on the standardised target for ``return``/``volatility``, cross-entropy (nats) for ``direction``. The volatility
target is also scored with QLIKE, which picks its best baseline (see :mod:`hpo_lib.volatility`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hpo_lib import volatility
from hpo_lib.data import Dataset

EPS = 1e-7


def score(ds: Dataset, part: str, forecast: np.ndarray) -> dict[str, float]:
    """Metrics of a forecast on one split.

    ``forecast`` is in original units for regression targets, and P(up) for ``direction``.
    Regression: ``loss`` (MSE, standardised), ``rmse``, ``mae``, ``dir_acc`` (forecast and truth on the same side of
    the reference). Volatility adds ``qlike`` (mean :func:`hpo_lib.volatility.qlike`) and ``var_mse`` (MSE on
    variance), both against the realized-variance proxy (the target squared); ``rmse`` is then RMSE on volatility.
    Direction: ``loss`` (cross-entropy), ``acc``, ``dir_acc`` (= acc).
    """
    y, ref = ds.y[part], ds.ref[part]
    forecast = np.asarray(forecast, dtype=np.float64)
    if ds.is_classification:
        p = np.clip(forecast, EPS, 1 - EPS)
        loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        acc = float(np.mean((p > 0.5) == (y > 0.5)))
        return {"loss": float(loss), "acc": acc, "dir_acc": acc}
    err = forecast - y
    scaled = ds.target_scaler.transform(forecast) - ds.y_scaled[part]
    metrics = {
        "loss": float(np.mean(scaled**2)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "dir_acc": float(np.mean((forecast > ref) == (y > ref))),
    }
    if ds.target == "volatility":
        metrics["qlike"] = float(np.mean(volatility.sample_qlike(y, forecast)))
        metrics["var_mse"] = float(np.mean((volatility.to_variance(forecast) - np.square(y)) ** 2))
    return metrics


def naive_forecasts(ds: Dataset, part: str) -> dict[str, np.ndarray]:
    """The naive forecasts for one split, in the units :func:`score` expects. Constants come from train only.

    * return: ``zero`` (random walk), ``train_mean``, ``persistence`` (the last horizon's return repeats).
    * direction: ``train_prior`` (P(up) = train up-share; its hard call is the majority class),
      ``always_up``, ``persistence`` (the last horizon's sign repeats).
    * volatility: ``previous_window`` (the last horizon's realized volatility), ``train_mean``; the fitted ones
      (GARCH, HAR-RV, EWMA) come from :func:`hpo_lib.volatility.fit_baselines` through :func:`evaluate`.
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


def evaluate(ds: Dataset, parts: tuple[str, ...] = ("val",)) -> BaselineResults:
    """Forecast and score every baseline on the requested splits; the volatility target adds GARCH, HAR-RV and EWMA.

    A fitted baseline that cannot be fit is left out and named in ``skipped`` with the problem (the caller warns);
    the rest still report.
    """
    fitted = volatility.fit_baselines(ds) if ds.target == "volatility" else None
    forecasts: dict[str, dict[str, np.ndarray]] = {}
    for part in parts:
        for name, forecast in naive_forecasts(ds, part).items():
            forecasts.setdefault(name, {})[part] = forecast
        for name in fitted.variance if fitted else ():
            forecasts.setdefault(name, {})[part] = fitted.vol(name, getattr(ds.split, part))
    report = {name: {part: score(ds, part, f) for part, f in by_part.items()} for name, by_part in forecasts.items()}
    return BaselineResults(report=report, forecasts=forecasts, best=best_baseline(report),
                           fitted=fitted.params if fitted else {}, skipped=fitted.skipped if fitted else {})


def baseline_report(ds: Dataset, parts: tuple[str, ...] = ("val",)) -> dict[str, dict[str, dict[str, float]]]:
    """``{baseline: {split: metrics}}`` for every baseline on the requested splits; :func:`evaluate` says which
    baselines could not be fit and why."""
    return evaluate(ds, parts).report


def ranking_metric(metrics: dict[str, float]) -> str:
    """The metric that ranks forecasts of a target: ``qlike`` where scored (volatility), else ``loss``."""
    return "qlike" if "qlike" in metrics else "loss"


def best_baseline(report: dict[str, dict[str, dict[str, float]]]) -> str:
    """The baseline with the lowest validation :func:`ranking_metric`: chosen on validation, never on test."""
    return min(report, key=lambda name: report[name]["val"][ranking_metric(report[name]["val"])])
