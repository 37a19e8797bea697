"""Naive forecasts, the metrics every model and baseline is scored with, and the choice of the best baseline.

Every forecast (model or baseline) is scored by :func:`score` on the same samples, so the numbers compare directly.
``loss`` is the target's *evaluation* loss, fixed per target so that trials trained with different losses compare:
MSE on the standardised target for ``return``/``volatility``, cross-entropy (nats) for ``direction``.
"""

from __future__ import annotations

import numpy as np

from hpo_lib.data import Dataset

EPS = 1e-7


def score(ds: Dataset, part: str, forecast: np.ndarray) -> dict[str, float]:
    """Metrics of a forecast on one split.

    ``forecast`` is in original units for regression targets, and P(up) for ``direction``.
    Regression: ``loss`` (MSE, standardised), ``rmse``, ``mae``, ``dir_acc`` (forecast and truth on the same side of
    the reference). Direction: ``loss`` (cross-entropy), ``acc``, ``dir_acc`` (= acc).
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
    return {
        "loss": float(np.mean(scaled**2)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "dir_acc": float(np.mean((forecast > ref) == (y > ref))),
    }


def naive_forecasts(ds: Dataset, part: str) -> dict[str, np.ndarray]:
    """The naive forecasts for one split, in the units :func:`score` expects. Constants come from train only.

    * return: ``zero`` (random walk), ``train_mean``, ``persistence`` (the last horizon's return repeats).
    * direction: ``train_prior`` (P(up) = train up-share; its hard call is the majority class),
      ``always_up``, ``persistence`` (the last horizon's sign repeats).
    * volatility: ``previous_window`` (the last horizon's realized volatility), ``train_mean``.
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


def baseline_report(ds: Dataset, parts: tuple[str, ...] = ("val",)) -> dict[str, dict[str, dict[str, float]]]:
    """``{baseline: {split: metrics}}`` for every naive forecast on the requested splits."""
    report: dict[str, dict[str, dict[str, float]]] = {}
    for part in parts:
        for name, forecast in naive_forecasts(ds, part).items():
            report.setdefault(name, {})[part] = score(ds, part, forecast)
    return report


def best_baseline(report: dict[str, dict[str, dict[str, float]]]) -> str:
    """The baseline with the lowest validation loss: chosen on validation, never on test."""
    return min(report, key=lambda name: report[name]["val"]["loss"])
