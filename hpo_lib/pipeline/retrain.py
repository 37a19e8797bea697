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
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo_lib import data, models, train, trial
from hpo_lib.data import baselines, scoring
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
def evaluate_test(
    ds: data.Dataset, forecast: np.ndarray, *, cost_bps: float = 5.0, results: baselines.BaselineResults | None = None
) -> dict[str, Any]:
    """The test-split report of one forecast (see the module docstring); JSON-ready.

    ``results`` are the dataset's baselines on validation and test, when the caller already has them.
    """
    results = results or baselines.evaluate(ds, ("val", "test"))
    model = scoring.score(ds, "test", forecast)
    ranking = scoring.ranking_metric(model)
    base = {name: by_part["test"] for name, by_part in results.report.items()}
    bar = min(base, key=lambda name: base[name][ranking])
    report: dict[str, Any] = {
        "target": ds.target,
        "horizon": ds.horizon,
        "n_test": int(len(ds.y["test"])),
        "test_period": [str(ds.dates["test"][0].date()), str(ds.dates["test"][-1].date())],
        "ranking_metric": ranking,
        "model": model,
        "baselines": base,
        "bar": bar,
        "beats_bar": bool(model[ranking] < base[bar][ranking]),
        "improvement": float((base[bar][ranking] - model[ranking]) / abs(base[bar][ranking]))
        if base[bar][ranking]
        else 0.0,
        "baseline_warnings": results.skipped,
    }
    try:  # model minus bar: a negative statistic favours the model
        dm = scoring.diebold_mariano(
            scoring.sample_losses(ds, "test", forecast),
            scoring.sample_losses(ds, "test", results.forecasts[bar]["test"]),
            ds.horizon,
        )
        report["dm"] = {"against": bar, "loss": ranking, **dm.as_dict()}
    except DataError as exc:
        report["dm"] = {"against": bar, "loss": ranking, "error": str(exc)}
    if ds.target == "volatility":
        report["backtest"] = {"error": "a volatility forecast has no direction to trade"}
    else:
        asset = scoring.next_day_returns(ds, "test")
        reference = 0.5 if ds.is_classification else ds.ref["test"]
        signal = scoring.positions_from_forecast(forecast, reference)
        report["backtest"] = {
            "model": scoring.backtest(signal, asset, cost_bps=cost_bps).as_dict(),
            "buy_and_hold": scoring.backtest(np.ones_like(asset), asset, cost_bps=cost_bps).as_dict(),
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
    forecast = train.to_forecast(ds, train.predict(model, trial.split_x(ds, model, "test")))
    base = baselines.evaluate(ds, ("val", "test"))
    report = evaluate_test(ds, forecast, cost_bps=cost_bps, results=base)
    report["run"] = {
        "model": args.model,
        "seed": args.seed,
        "epochs": result.epochs_run,
        "train_time_s": result.train_time_s,
        "wall_time_s": time.perf_counter() - started,
        "n_params": models.count_params(model),
        "model_size_mb": models.model_size_mb(model),
        "n_features": ds.n_features,
        "n_outputs": trial.n_outputs(ds),
        "window": args.seq_len,
        "device": str(train.select_device(cfg.device)),
        "train_samples": int(len(ds.split.train)),
        "train_period": [str(d.date()) for d in _period(ds, "train")],
    }

    trial.save_model(model, out, args)
    (out / "history.json").write_text(json.dumps(history, indent=2))
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    bar_forecast = base.forecasts[report["bar"]]["test"]
    rows = ["date,actual,forecast,bar_forecast"] + [
        f"{d.date()},{y:.8g},{f:.8g},{b:.8g}"
        for d, y, f, b in zip(ds.dates["test"], ds.y["test"], forecast, bar_forecast)
    ]
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
    model = models.build_model(
        config["model"], n_features=run["n_features"], window=run["window"], n_outputs=run["n_outputs"], params=config
    )
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    return model.eval()
