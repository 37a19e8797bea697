"""The final retrain of a selected trial and its one look at the held-out test split.

A retrain takes the trial's own flags (the Experiment's trial template with the trial's parameter assignments),
trains on train + validation (``data.prepare(refit=True)``: scalers fit on those rows, the test split untouched
behind its purge gap) for every epoch, then scores the test split once:

* the model's metrics beside every baseline's, on the same days;
* the *bar*: the baseline with the lowest test value of the ranking metric (``loss``; ``qlike`` for volatility),
  so "beats the baseline" means beating every one of them;
* a Diebold-Mariano test (HLN small-sample correction) of the model's per-day losses against the bar's;
* a daily long/short backtest of the forecast's sign with trading costs, beside buy-and-hold;
* the val -> test gap: the trial's tuning objective against the same metric on test.

The validation split lies inside the training rows here, so its per-epoch values are logged as ``insample_val_*``
and never used to judge the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from hpo_lib import baselines, data, evaluation, models, train, trial
from hpo_lib.errors import ConfigError, DataError

FILES = ("model.pt", "config.json", "history.json", "evaluation.json", "forecasts.csv")


def retrain_args(flags: Sequence[str], **overrides: Any) -> trial.TrialArgs:
    """The trial's ``--name=value`` flags as :class:`~hpo_lib.trial.TrialArgs`, then ``overrides`` (field names).

    Arguments that are not ``--`` flags (a template's ``python -m hpo_lib.trial``) are ignored; an unknown flag or a
    bad value is a ConfigError naming it, as in the trial itself.
    """
    args = trial.parse_args([f for f in flags if f.startswith("--")])
    known = {f.name for f in fields(trial.TrialArgs)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown retrain override(s) {unknown}")
    values = {**asdict(args), **overrides}
    result = trial.TrialArgs(**values)
    trial.validate(result)
    return result


# ----------------------------------------------------------------------------------------------- scoring
def sample_losses(ds: data.Dataset, part: str, forecast: np.ndarray) -> np.ndarray:
    """Per-sample values whose mean is :func:`hpo_lib.baselines.score`'s ranking metric on that split.

    Squared error on the standardised target (return), cross-entropy (direction), QLIKE (volatility).
    """
    from hpo_lib import volatility

    y, f = ds.y[part], np.asarray(forecast, dtype=np.float64)
    if ds.target == "volatility":
        return volatility.sample_qlike(y, f)
    if ds.is_classification:
        p = np.clip(f, baselines.EPS, 1 - baselines.EPS)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return (ds.target_scaler.transform(f) - ds.y_scaled[part]) ** 2


def next_day_returns(ds: data.Dataset, part: str) -> np.ndarray:
    """Simple return of the day after each sample's last input day: what a position taken at that close earns."""
    if ds.returns is None:
        raise DataError("the dataset carries no daily returns; it cannot be backtested")
    return np.expm1(ds.returns[getattr(ds.split, part) + 1])


def evaluate_test(ds: data.Dataset, forecast: np.ndarray, *, cost_bps: float = 5.0,
                  results: baselines.BaselineResults | None = None) -> dict[str, Any]:
    """The test-split report of one forecast (see the module docstring); JSON-ready.

    ``results`` are the dataset's baselines on validation and test, when the caller already has them.
    """
    results = results or baselines.evaluate(ds, ("val", "test"))
    model = baselines.score(ds, "test", forecast)
    ranking = baselines.ranking_metric(model)
    base = {name: by_part["test"] for name, by_part in results.report.items()}
    bar = min(base, key=lambda name: base[name][ranking])
    report: dict[str, Any] = {
        "target": ds.target, "horizon": ds.horizon, "n_test": int(len(ds.y["test"])),
        "test_period": [str(ds.dates["test"][0].date()), str(ds.dates["test"][-1].date())],
        "ranking_metric": ranking, "model": model, "baselines": base, "bar": bar,
        "beats_bar": bool(model[ranking] < base[bar][ranking]),
        "improvement": float((base[bar][ranking] - model[ranking]) / abs(base[bar][ranking]))
        if base[bar][ranking] else 0.0,
        "baseline_warnings": results.skipped,
    }
    try:  # model minus bar: a negative statistic favours the model
        dm = evaluation.diebold_mariano(sample_losses(ds, "test", forecast),
                                        sample_losses(ds, "test", results.forecasts[bar]["test"]), ds.horizon)
        report["dm"] = {"against": bar, "loss": ranking, **dm.as_dict()}
    except DataError as exc:
        report["dm"] = {"against": bar, "loss": ranking, "error": str(exc)}
    if ds.target == "volatility":
        report["backtest"] = {"error": "a volatility forecast has no direction to trade"}
    else:
        asset = next_day_returns(ds, "test")
        reference = 0.5 if ds.is_classification else ds.ref["test"]
        signal = evaluation.positions_from_forecast(forecast, reference)
        report["backtest"] = {
            "model": evaluation.backtest(signal, asset, cost_bps=cost_bps).as_dict(),
            "buy_and_hold": evaluation.backtest(np.ones_like(asset), asset, cost_bps=cost_bps).as_dict(),
        }
    return report


def val_test_gap(tuning_metric: str, tuning_value: float | None, test_metrics: dict[str, float]) -> float | None:
    """Test minus tuning value of the objective (``val_loss`` -> test ``loss``); None when test has no such metric."""
    name = tuning_metric.removeprefix("val_")
    if tuning_value is None or name not in test_metrics:
        return None
    return float(test_metrics[name] - tuning_value)


# ----------------------------------------------------------------------------------------------- retrain
def retrain(args: trial.TrialArgs, out_dir: str | Path, *, cost_bps: float = 5.0) -> dict[str, Any]:
    """Train ``args`` on train + validation for every epoch, score the test split, write :data:`FILES`.

    Early stopping is off (patience = epochs): with validation inside the training rows there is nothing honest to
    stop on. Returns the evaluation report, also written to ``evaluation.json`` with the run's metadata.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = trial.setup(args)
    cfg.patience = cfg.epochs
    started = time.perf_counter()
    ds = trial.load_dataset(args, refit=True)
    model = trial.build_model(args, ds)
    history: list[dict[str, float]] = []

    def record(epoch: dict[str, float]) -> None:
        renamed = {(f"insample_{k}" if k.startswith("val_") else k): v for k, v in epoch.items()}
        history.append(renamed)

    result = train.fit(model, ds, cfg, reporter=record)
    x_test = torch.from_numpy(ds.x["test"]).to(next(model.parameters()).device)
    forecast = train.to_forecast(ds, train.predict(model, x_test))
    base = baselines.evaluate(ds, ("val", "test"))
    report = evaluate_test(ds, forecast, cost_bps=cost_bps, results=base)
    report["run"] = {
        "model": args.model, "seed": args.seed, "epochs": result.epochs_run, "train_time_s": result.train_time_s,
        "wall_time_s": time.perf_counter() - started, "n_params": models.count_params(model),
        "model_size_mb": models.model_size_mb(model), "n_features": ds.n_features, "n_outputs": 2 if ds.is_classification else 1,
        "window": args.seq_len, "device": str(train.select_device(cfg.device)),
        "train_samples": int(len(ds.split.train)), "train_period": [str(d.date()) for d in _period(ds, "train")],
    }

    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    (out / "config.json").write_text(json.dumps(asdict(args), indent=2))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    bar_forecast = base.forecasts[report["bar"]]["test"]
    rows = ["date,actual,forecast,bar_forecast"] + [
        f"{d.date()},{y:.8g},{f:.8g},{b:.8g}"
        for d, y, f, b in zip(ds.dates["test"], ds.y["test"], forecast, bar_forecast)]
    (out / "forecasts.csv").write_text("\n".join(rows) + "\n")
    return report


def _period(ds: data.Dataset, part: str):
    dates = ds.dates[part]
    return dates[0], dates[-1]


def load_model(directory: str | Path) -> torch.nn.Module:
    """Rebuild a retrained model from its folder (``config.json``, ``evaluation.json``, ``model.pt``), in eval mode."""
    folder = Path(directory)
    config = json.loads((folder / "config.json").read_text())
    run = json.loads((folder / "evaluation.json").read_text())["run"]
    model = models.build_model(config["model"], n_features=run["n_features"], window=run["window"],
                               n_outputs=run["n_outputs"], params=config)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    return model.eval()
