"""The final retrain of a selected trial and its one look at the held-out test split.

A retrain takes the trial's own flags (the Experiment's trial template with the trial's parameter assignments),
trains on train + validation (``data.prepare(refit=True)``: scalers fit on those rows, the test split untouched
behind its purge gap) for the trial's epochs, then scores the test split once:

* the model's metrics beside every baseline's (the naive ones, the linear model on the same features, and for
  volatility GARCH, GJR-GARCH, HAR-RV, EWMA), on the same days;
* the *bar*: the baseline with the lowest test value of the ranking metric (``loss``; ``qlike`` for volatility),
  so "beats the baseline" means beating every one of them;
* a Diebold-Mariano test (HLN small-sample correction) of the model's per-day losses against the bar's;
* a daily long/short backtest of the forecast's sign with trading costs, beside buy-and-hold;
* :func:`inference_report`: stationary-block-bootstrap 95 % intervals (loss difference against the bar, Sharpe,
  hit rate, max drawdown), Clark-West against the nested baselines, out-of-sample R², Pesaran-Timmermann, and the
  probabilistic / deflated Sharpe ratio with the number of configurations tried;
* with ``test_origins`` R > 1, the rolling-origin test (:func:`rolling_origin`): the same configuration refit at R
  origins through the test period, each refit forecasting only its own block, purge gaps kept;
* the val -> test gap: the trial's tuning objective against the same metric on test.

Which epoch is kept: there is no early stopping (patience = epochs), but ``train.fit`` keeps the weights of the
epoch with the lowest *in-sample* validation loss (validation lies inside the training rows here, so its
per-epoch values are logged as ``insample_val_*`` and never used to judge the model). ``evaluation.json``'s
``run`` records that epoch as ``kept_epoch`` beside ``epochs``, and the pipeline logs it as an MLflow parameter.

The search-aware tests (SPA, Reality Check, Model Confidence Set) need several retrains; they are computed over
the retrains of a pipeline run (:func:`hpo_lib.pipeline.steps.evaluate`) from the per-day losses each
``evaluation.json`` keeps under ``losses``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo_lib import data, fileio, models, train
from hpo_lib.data import baselines, inference, scoring
from hpo_lib.errors import ConfigError, DataError
from hpo_lib.pipeline.settings import CLUSTER
from hpo_lib.trial import assemble
from hpo_lib.trial.flags import TrialArgs, parse_args, validate

SCALERS = "scalers.json"  # the retrain's scalers, target, window and features: what serving needs besides the model
FILES = (
    "model.pt",
    "config.json",
    "history.json",
    "evaluation.json",
    "forecasts.csv",
    "input_example.npy",
    SCALERS,
)
EXAMPLE_WINDOWS = 4  # the model's input example (for its MLflow signature): the last training windows
NESTED = {"return": ("zero", "train_mean"), "direction": ("train_prior",), "volatility": ("train_mean",)}
R2_BENCHMARK = {"return": "train_mean", "direction": "train_prior", "volatility": "train_mean"}
# (phase, epoch record, planned epochs): phase is "fit" for the retrain itself, "origin i/R" for a rolling refit
EpochCallback = Callable[[str, Mapping[str, float], int], None]


def retrain_args(flags: Sequence[str], **overrides: Any) -> TrialArgs:
    """The trial's ``--name=value`` flags as :class:`~hpo_lib.trial.TrialArgs`, then ``overrides`` (field names).

    Arguments that are not ``--`` flags (a template's ``python -m hpo_lib.trial``) are ignored; an unknown flag or a
    bad value is a ConfigError naming it, as in the trial itself.
    """
    args = parse_args([f for f in flags if f.startswith("--")])
    known = {f.name for f in fields(TrialArgs)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown retrain override(s) {unknown}")
    values = {**asdict(args), **overrides}
    result = TrialArgs(**values)
    validate(result)
    return result


# ----------------------------------------------------------------------------------------------- scoring
def evaluate_test(
    ds: data.Dataset,
    forecast: np.ndarray,
    *,
    cost_bps: float = 5.0,
    results: baselines.BaselineResults | None = None,
    n_trials: int = 1,
) -> dict[str, Any]:
    """The test-split report of one forecast (see the module docstring); JSON-ready.

    ``results`` are the dataset's baselines on validation and test, when the caller already has them (by default
    every baseline of the final evaluation). ``n_trials`` is the number of configurations the search tried, for
    the deflated Sharpe ratio.
    """
    results = results or baselines.evaluate(ds, ("val", "test"), final=True)
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
            "equity": {  # growth of 1 after each test day, net of costs: the report's equity curve
                "dates": [str(d.date()) for d in ds.dates["test"]],
                **{
                    name: np.cumprod(1 + scoring.net_returns(p, asset, cost_bps=cost_bps)).round(6).tolist()
                    for name, p in (("model", signal), ("buy_and_hold", np.ones_like(asset)))
                },
            },
        }
    model_losses = scoring.sample_losses(ds, "test", forecast)
    report["losses"] = {
        "model": model_losses.tolist(),
        "baselines": {
            name: scoring.sample_losses(ds, "test", by_part["test"]).tolist()
            for name, by_part in results.forecasts.items()
        },
    }
    report["inference"] = inference_report(ds, forecast, results, bar, cost_bps=cost_bps, n_trials=n_trials)
    return report


def inference_report(
    ds: data.Dataset,
    forecast: np.ndarray,
    results: baselines.BaselineResults,
    bar: str,
    *,
    cost_bps: float = 5.0,
    n_trials: int = 1,
) -> dict[str, Any]:
    """Intervals and nested-model tests of one test forecast; a figure the test split cannot support is named with
    its reason under ``skipped`` and the others are still computed.

    * ``intervals``: 95 % stationary-block-bootstrap percentile intervals (block length by Politis-White) of the
      mean per-day loss difference model minus bar (negative favours the model) and, for return and direction,
      of the strategy's Sharpe ratio, hit rate and max drawdown, and buy-and-hold's Sharpe ratio;
    * ``clark_west``: against each nested baseline (return: zero and the training mean; direction: the training
      prior; volatility: the training mean), on squared errors in the target's units;
    * ``oos_r2``: Campbell-Thompson R² against the training mean (the training prior for direction);
    * ``pesaran_timmermann``: forecast direction against actual direction (above / below the reference);
    * ``psr``, ``dsr``: the strategy's probabilistic Sharpe ratio (against 0) and the deflated one with
      ``n_trials`` (return and direction).
    """
    y, ref, f = ds.y["test"], ds.ref["test"], np.asarray(forecast, dtype=np.float64)
    loss_diff = scoring.sample_losses(ds, "test", f) - scoring.sample_losses(ds, "test", results.forecasts[bar]["test"])
    out: dict[str, Any] = {"intervals": {}, "clark_west": {}, "skipped": {}}

    def put(section: dict[str, Any], key: str, value: dict[str, Any]) -> None:
        if "skipped" in value:
            out["skipped"][key] = value["skipped"]
        else:
            section[key] = value

    put(
        out["intervals"],
        "loss_diff",
        inference.attempt(inference.bootstrap_interval, np.mean, loss_diff, name="the loss-difference interval"),
    )
    if ds.target != "volatility":
        asset = scoring.next_day_returns(ds, "test")
        positions = scoring.positions_from_forecast(f, 0.5 if ds.is_classification else ref)
        net = scoring.net_returns(positions, asset, cost_bps=cost_bps)
        hold = scoring.net_returns(np.ones_like(asset), asset, cost_bps=cost_bps)
        block = inference.block_length(net)
        for key, stat, series in (
            ("sharpe", scoring.sharpe_ratio, (net,)),
            ("hit_rate", inference.hit_rate, (net, positions)),
            ("max_drawdown", scoring.max_drawdown, (net,)),
            ("buy_and_hold_sharpe", scoring.sharpe_ratio, (hold,)),
        ):
            put(
                out["intervals"],
                key,
                inference.attempt(inference.bootstrap_interval, stat, *series, name=f"the {key} interval", block=block),
            )
        put(out, "psr", inference.attempt(inference.probabilistic_sharpe, net))
        put(out, "dsr", inference.attempt(inference.deflated_sharpe, net, n_trials=n_trials))
    for name in NESTED[ds.target]:
        if name in results.forecasts:
            put(
                out["clark_west"],
                name,
                inference.attempt(inference.clark_west, y, results.forecasts[name]["test"], f, horizon=ds.horizon),
            )
    benchmark = R2_BENCHMARK[ds.target]
    put(
        out,
        "oos_r2",
        {**inference.attempt(inference.oos_r2, y, f, results.forecasts[benchmark]["test"]), "against": benchmark},
    )
    put(out, "pesaran_timmermann", inference.attempt(inference.pesaran_timmermann, y > ref, f > ref))
    return out


# ----------------------------------------------------------------------------------------------- over retrains
SIGNIFICANCE = 0.05


def search_aware(
    reports: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    groups: Sequence[str],
    *,
    n_configurations: int,
) -> dict[str, Any]:
    """SPA and Reality Check of the retrains against the bar, and the Model Confidence Set, from their losses.

    ``reports`` are :func:`evaluate_test` reports on the same test days (one per retrain, or their ``rolling``
    reports), ``names`` one label per retrain and ``groups`` the winner each belongs to (its seeds are averaged, per
    day, for the MCS). SPA's models are the retrains, its benchmark the bar (the same for every retrain: the
    baselines do not depend on the model); the MCS at 10 % runs over the winners and every baseline.
    ``n_configurations`` (the trials the search tried) is named beside them.
    """
    if not reports:
        raise DataError("no retrain reports to test")
    bar = reports[0]["bar"]
    base = reports[0]["losses"]["baselines"]
    models = np.column_stack([np.asarray(r["losses"]["model"], dtype=np.float64) for r in reports])
    spa = inference.attempt(
        inference.spa_test, np.asarray(base[bar]), models, n_configurations=n_configurations, names=list(names)
    )
    mean_by_group: dict[str, list[np.ndarray]] = {}
    for group, column in zip(groups, models.T):
        mean_by_group.setdefault(group, []).append(column)
    candidates = {f"winner {g}": np.mean(cols, axis=0) for g, cols in mean_by_group.items()}
    candidates.update({name: np.asarray(v, dtype=np.float64) for name, v in base.items()})
    mcs = inference.attempt(inference.model_confidence_set, candidates)
    return {
        "bar": bar,
        "ranking_metric": reports[0]["ranking_metric"],
        "spa": spa,
        "mcs": mcs,
        "n_configurations": int(n_configurations),
    }


def search_verdict(single: Mapping[str, Any], rolling: Mapping[str, Any] | None) -> tuple[bool, str]:
    """ "Beats the baselines" only when SPA rejects at 5 % on the rolling-origin forecasts; says plainly otherwise."""

    def spa_text(report: Mapping[str, Any]) -> str:
        spa = report["spa"]
        if "skipped" in spa:
            return f"SPA not computed ({spa['skipped']})"
        return (
            f"SPA p = {spa['spa_p']:.3g}, Reality Check p = {spa['reality_check_p']:.3g} over "
            f"{spa['n_models']} retrains against {report['bar']} ({report['n_configurations']} configurations "
            f"tried)"
        )

    if rolling is None:
        return False, (
            f"not established: no rolling-origin test was run (test_origins=1); single test window: {spa_text(single)}"
        )
    p = rolling["spa"].get("spa_p")
    if p is not None and p < SIGNIFICANCE:
        return True, (
            f"yes: on the rolling-origin forecasts {spa_text(rolling)}, below {SIGNIFICANCE}; "
            f"single test window: {spa_text(single)}"
        )
    return False, (
        f"no: on the rolling-origin forecasts {spa_text(rolling)}, which does not reject at "
        f"{SIGNIFICANCE}; single test window: {spa_text(single)}"
    )


def val_test_gap(tuning_metric: str, tuning_value: float | None, test_metrics: dict[str, float]) -> float | None:
    """Test minus tuning value of the objective (``val_loss`` -> test ``loss``); None when test has no such metric."""
    name = tuning_metric.removeprefix("val_")
    if tuning_value is None or name not in test_metrics:
        return None
    return float(test_metrics[name] - tuning_value)


# ----------------------------------------------------------------------------------------------- rolling origin
def rolling_origin(
    args: TrialArgs,
    ds: data.Dataset,
    n_origins: int,
    *,
    prices: data.Prices | None = None,
    first: np.ndarray | None = None,
    cost_bps: float = 5.0,
    n_trials: int = 1,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """The rolling-origin test of ``args`` on the refit dataset ``ds``: a refit at each origin of
    :func:`hpo_lib.data.rolling_origins`, each forecasting only its own block; every baseline is refit at each
    origin too.

    Every test day thus gets a forecast from a model (and baselines) that never saw it. The blocks' forecasts are
    scored together on ``ds``'s test days by :func:`evaluate_test` (one scale for the whole period), and each
    block's mean loss of the model and of the bar is listed under ``origins``, so regime changes show.
    ``first`` is the single-window retrain's test forecast, which is the first block's (not trained again).
    """
    if prices is None:
        prices = data.load_prices(args.data, cache_dir=args.cache_dir or None)
    splits = data.rolling_origins(ds.split, n_origins, window=args.split_window, horizon=ds.horizon)
    rows = data.build_features(prices)[0].index  # the dataset's rows, to date each training span's end
    forecast: list[np.ndarray] = []
    base: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, str] = {}
    origins = []
    for i, split in enumerate(splits):
        block = data.prepare(
            prices,
            target=args.target,
            horizon=args.horizon,
            window=args.seq_len,
            split_window=args.split_window,
            split=split,
        )
        if i == 0 and first is not None:
            f, epochs = np.asarray(first, dtype=np.float64)[: len(split.test)], None
        else:
            _, result, f = _fit(args, block, on_epoch=on_epoch, phase=f"origin {i + 1}/{len(splits)}")
            epochs = result.best_epoch
        results = baselines.evaluate(block, ("val", "test"), final=True)
        forecast.append(f)
        for name, by_part in results.forecasts.items():
            base.setdefault(name, []).append(by_part["test"])
        skipped.update(results.skipped)
        origins.append(
            {
                "origin": str(block.dates["test"][0].date()),
                "last_day": str(block.dates["test"][-1].date()),
                "train_end": str(rows[split.train_rows[1] - 1].date()),
                "n_test": int(len(split.test)),
                "kept_epoch": epochs,
            }
        )
    complete = {name: np.concatenate(parts) for name, parts in base.items() if len(parts) == len(splits)}
    report_base = {name: {"test": scoring.score(ds, "test", f)} for name, f in complete.items()}
    ranking = scoring.ranking_metric(next(iter(report_base.values()))["test"])
    bar = min(report_base, key=lambda name: report_base[name]["test"][ranking])
    rolling = baselines.BaselineResults(
        report=report_base, forecasts={k: {"test": v} for k, v in complete.items()}, best=bar, skipped=skipped
    )
    model_forecast = np.concatenate(forecast)
    report = evaluate_test(ds, model_forecast, cost_bps=cost_bps, results=rolling, n_trials=n_trials)
    model_loss = np.asarray(report["losses"]["model"])
    bar_loss = np.asarray(report["losses"]["baselines"][report["bar"]])
    edges = np.cumsum([0] + [o["n_test"] for o in origins])
    for o, a, b in zip(origins, edges[:-1], edges[1:]):
        o["model_loss"], o["bar_loss"] = float(model_loss[a:b].mean()), float(bar_loss[a:b].mean())
    report["origins"] = origins
    report["n_origins"] = len(origins)
    report["forecast"] = model_forecast.tolist()
    return report


def _fit(
    args: TrialArgs, ds: data.Dataset, *, on_epoch: EpochCallback | None = None, phase: str = "fit"
) -> tuple[torch.nn.Module, train.FitResult, np.ndarray]:
    """Train ``args`` on ``ds``'s training samples (no early stopping) and forecast its test split; each epoch's
    record goes to ``on_epoch`` as it ends."""
    cfg = assemble.seeded_config(args)  # every origin's model starts from the same initial weights
    cfg.patience = cfg.epochs
    model = assemble.build_model(args, ds)
    history: list[dict[str, float]] = []

    def record(epoch: dict[str, float]) -> None:
        history.append({(f"insample_{k}" if k.startswith("val_") else k): v for k, v in epoch.items()})
        if on_epoch is not None:
            on_epoch(phase, history[-1], cfg.epochs)

    result = train.fit(model, ds, cfg, reporter=record)
    result.history = history
    forecast = train.to_forecast(ds, train.predict(model, assemble.inputs_on_device(ds, "test", result.device)))
    return model, result, forecast


# ----------------------------------------------------------------------------------------------- retrain
def retrain(
    args: TrialArgs,
    out_dir: str | Path,
    *,
    cost_bps: float = CLUSTER.cost_bps,
    n_trials: int = 1,
    test_origins: int = CLUSTER.test_origins,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train ``args`` on train + validation, score the test split, write :data:`FILES`.

    Early stopping is off (patience = epochs): with validation inside the training rows there is nothing honest to
    stop on; the weights kept are those of the epoch with the lowest in-sample validation loss, recorded as
    ``run.kept_epoch`` (see the module docstring). ``n_trials`` is the number of configurations the search tried
    (for the deflated Sharpe ratio). ``test_origins`` R > 1 adds the rolling-origin test under ``rolling`` (R - 1
    more fits; 0 = one origin per quarter of test days; 1 = none). ``on_epoch`` gets every epoch's record as it
    ends (of the retrain, then of each rolling refit). Returns the evaluation report, also written to
    ``evaluation.json`` with the run's metadata; ``input_example.npy`` holds the last :data:`EXAMPLE_WINDOWS`
    training windows (the model's input example: never a test row). One seed of :func:`retrain_seeds`.
    """
    callback = None if on_epoch is None else (lambda seed, phase, record, epochs: on_epoch(phase, record, epochs))
    return retrain_seeds(
        args, {args.seed: out_dir}, cost_bps=cost_bps, n_trials=n_trials, test_origins=test_origins, on_epoch=callback
    )[args.seed]


# (seed, phase, epoch record, planned epochs): :data:`EpochCallback` with the seed whose epoch ended
SeedEpochCallback = Callable[[int, str, Mapping[str, float], int], None]


def retrain_seeds(
    args: TrialArgs,
    out_dirs: Mapping[int, str | Path],
    *,
    cost_bps: float = CLUSTER.cost_bps,
    n_trials: int = 1,
    test_origins: int = CLUSTER.test_origins,
    on_epoch: SeedEpochCallback | None = None,
) -> dict[int, dict[str, Any]]:
    """:func:`retrain` of ``args`` once per seed of ``out_dirs`` (seed -> its folder), all in this process: one data
    load, and the seeds trained together as replicas (:func:`hpo_lib.train.fit_replicas`, packed where
    :func:`hpo_lib.train.pack_groups` says so under ``args.pack``, else one after another).

    Each seed gets exactly the updates, kept epoch, files and report a lone :func:`retrain` with that seed would
    (``run.seed`` is its seed; ``run.train_time_s`` is the shared fit's). The rolling-origin refits run per seed,
    one after another. Returns each seed's report.
    """
    seeds = list(out_dirs)
    started = time.perf_counter()
    prices = data.load_prices(args.data, cache_dir=args.cache_dir or None)
    ds = assemble.load_dataset(args, prices=prices, refit=True)
    cfg = assemble.configure(args)
    cfg.patience = cfg.epochs
    replicas, built = assemble.build_replicas(replace(args, seeds=1, seed=seeds[0]), [ds])
    for seed in seeds[1:]:
        more, more_built = assemble.build_replicas(replace(args, seeds=1, seed=seed), [ds])
        replicas, built = replicas + more, built + more_built

    def live(mean: dict[str, float], own: list[dict[str, float]]) -> None:
        # every seed's own record (its replica's, with the shared lr and time) as the shared epoch ends
        for seed, record in zip(seeds, own):
            shared = {"lr": mean["lr"], "train_time_s": mean["train_time_s"]}
            if on_epoch is not None:
                on_epoch(seed, "fit", _insample({**record, **shared}), cfg.epochs)

    result = train.fit_replicas(built, replicas, cfg, pack=args.pack, keep="each", each=live)
    base = baselines.evaluate(ds, ("val", "test"), final=True)
    reports = {}
    for seed, model, kept in zip(seeds, built, result.replicas):
        model.load_state_dict(kept.state_dict)
        extra = [{"lr": m["lr"], "train_time_s": m["train_time_s"]} for m in result.history]
        history = [_insample({**own, **ex}) for own, ex in zip(kept.history, extra)]
        seed_args = replace(args, seed=seed)
        forecast = train.to_forecast(ds, train.predict(model, assemble.inputs_on_device(ds, "test", result.device)))
        report = evaluate_test(ds, forecast, cost_bps=cost_bps, results=base, n_trials=n_trials)
        report["run"] = {
            "model": args.model,
            "seed": seed,
            "epochs": result.epochs_run,
            "kept_epoch": kept.best_epoch,
            "kept_epoch_rule": "lowest in-sample validation loss (validation lies inside the training rows)",
            "train_time_s": result.train_time_s,
            "n_params": models.count_params(model),
            "model_size_mb": models.model_size_mb(model),
            "n_features": ds.n_features,
            "n_outputs": assemble.n_outputs(ds),
            "window": args.seq_len,
            "device": str(result.device),
            "train_samples": int(len(ds.split.train)),
            "train_period": [str(d.date()) for d in _period(ds, "train")],
            "n_trials": int(n_trials),
            "test_origins": int(test_origins),
            "packed_seeds": seeds,
        }
        if test_origins != 1:
            refit = None if on_epoch is None else (lambda p, r, e, s=seed: on_epoch(s, p, r, e))
            report["rolling"] = rolling_origin(
                seed_args,
                ds,
                test_origins,
                prices=prices,
                first=forecast,
                cost_bps=cost_bps,
                n_trials=n_trials,
                on_epoch=refit,
            )
        report["run"]["wall_time_s"] = time.perf_counter() - started
        _write_retrain(Path(out_dirs[seed]), seed_args, ds, model, history, report, forecast, base)
        reports[seed] = report
    return reports


def _insample(record: Mapping[str, float]) -> dict[str, float]:
    """An epoch record with its validation metrics renamed ``insample_val_*`` (validation lies in the training rows)."""
    return {(f"insample_{k}" if k.startswith("val_") else k): v for k, v in record.items()}


def _write_retrain(
    out: Path,
    args: TrialArgs,
    ds: data.Dataset,
    model: torch.nn.Module,
    history: list[dict[str, float]],
    report: dict[str, Any],
    forecast: np.ndarray,
    base: baselines.BaselineResults,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    assemble.save_model(model, out, args)
    fileio.write_text(out / "history.json", json.dumps(history, indent=2))
    np.save(out / "input_example.npy", ds.x["train"][-EXAMPLE_WINDOWS:].astype(np.float32))
    fileio.write_text(out / "evaluation.json", json.dumps(report, indent=2))
    fileio.write_text(out / SCALERS, json.dumps(_scalers(ds)))
    bar_forecast = base.forecasts[report["bar"]]["test"]
    rows = ["date,actual,forecast,bar_forecast"] + [
        f"{d.date()},{y:.8g},{f:.8g},{b:.8g}"
        for d, y, f, b in zip(ds.dates["test"], ds.y["test"], forecast, bar_forecast)
    ]
    fileio.write_text(out / "forecasts.csv", "\n".join(rows) + "\n")


def _scalers(ds: data.Dataset) -> dict[str, Any]:
    """The retrain's feature and target scalers, target, window and feature names: with ``model.pt``, what
    :mod:`hpo_lib.pipeline.serving` turns raw prices into forecasts with."""
    target = ds.target_scaler
    return {
        "target": ds.target,
        "window": ds.window,
        "feature_names": list(ds.feature_names),
        "feature_mean": ds.feature_scaler.mean.tolist(),
        "feature_std": ds.feature_scaler.std.tolist(),
        "target_mean": None if target is None else np.asarray(target.mean).tolist(),
        "target_std": None if target is None else np.asarray(target.std).tolist(),
    }


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
