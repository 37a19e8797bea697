"""What the evaluate step concludes from the retrains: seeds summarised per winner, the champion (chosen by the
tuning objective, never by test) and its verdict against the bar, and the search-aware tests (SPA, Reality Check,
the Model Confidence Set) over every retrain, on the single test window and on the rolling origins.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo_lib.errors import HpoError
from hpo_lib.pipeline import records, retrain

# a forecast whose spread is below this fraction of the realised target's is near-constant: an "always up" (or
# always-the-mean) forecast that scores like a naive baseline whatever the network behind it
NEAR_CONSTANT = 0.05
FORECASTS = "forecasts.csv"  # a retrain's test forecasts (date, actual, forecast, bar_forecast)


def forecast_spread(folder: str | Path) -> float | None:
    """The standard deviation of a retrain's test forecasts over that of the realised target (None without its
    forecasts file, or a constant target)."""
    path = Path(folder) / FORECASTS
    if not path.exists():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) < 2:
        return None
    actual = statistics.stdev(float(r["actual"]) for r in rows)
    return statistics.stdev(float(r["forecast"]) for r in rows) / actual if actual > 0 else None


def same_as_buy_and_hold(scalars: Mapping[str, float | None]) -> bool:
    """The strategy's Sharpe ratio is buy-and-hold's to the last digit: the forecast never left the long side."""
    model, hold = scalars.get("backtest_sharpe"), scalars.get("buy_and_hold_sharpe")
    return model is not None and hold is not None and math.isclose(model, hold, rel_tol=1e-9, abs_tol=1e-12)


def retrain_dirs(dirs: Sequence[str | Path]) -> list[Path]:
    """The seed folders of :func:`hpo_lib.pipeline.steps.run_retrain`'s outputs: a folder with an ``item.json`` is
    one, any other stands for the seed folders in it (``seed<s>/``, in seed order)."""
    found = []
    for d in dirs:
        folder = Path(d)
        if (folder / "item.json").exists():
            found.append(folder)
        else:
            seeds = sorted(folder.glob("seed*/item.json"), key=lambda p: int(p.parent.name.removeprefix("seed")))
            found += [p.parent for p in seeds]
    return found


def load_retrains(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each retrained seed's folder, ``item.json`` and ``evaluation.json``, from winner or seed folders."""
    runs = []
    for folder in retrain_dirs(dirs):
        runs.append(
            {
                "dir": str(folder),
                "item": records.read_json(folder / "item.json"),
                "evaluation": records.read_json(folder / "evaluation.json"),
            }
        )
    return runs


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per winner: seed means and spreads on test; the champion; the verdict against the bar (``runs``: what
    :func:`load_retrains` reads).

    The champion is the retrained winner with the best *tuning* objective: the test split is not used to choose
    it, so its test score is an honest estimate. Its first seed's run is the model that may be registered, and only
    if that run beats the bar (the best baseline on test).
    """
    if not runs:
        raise HpoError("no retrain results to summarize")
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: (r["item"]["rank"], r["item"]["seed"])):
        by_trial.setdefault(run["item"]["trial"], []).append(run)
    rows = []
    for trial_name, group in by_trial.items():
        item, ranking = group[0]["item"], group[0]["evaluation"]["ranking_metric"]
        tests = [r["evaluation"]["model"][ranking] for r in group]
        scalars = [records.scalar_results(r["item"], r["evaluation"]) for r in group]
        spread = _mean([forecast_spread(r["dir"]) for r in group])
        bar_test = group[0]["evaluation"]["baselines"][group[0]["evaluation"]["bar"]][ranking]
        rows.append(
            {
                "trial": trial_name,
                "rank": item["rank"],
                "top_k": item["top_k"],
                "pareto": item["pareto"],
                "tuning_objective": item["objective"],
                "seeds": [r["item"]["seed"] for r in group],
                "test_mean": statistics.fmean(tests),
                "test_sd": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "test_min": min(tests),
                "test_max": max(tests),
                "beats_bar": sum(r["evaluation"]["beats_bar"] for r in group),
                "bar": group[0]["evaluation"]["bar"],
                "bar_test": bar_test,
                "vs_bar_pct": 100.0 * (statistics.fmean(tests) - bar_test) / abs(bar_test) if bar_test else None,
                "forecast_sd_ratio": spread,
                "near_constant": spread is not None and spread < NEAR_CONSTANT,
                "sharpe_is_buy_and_hold": all(same_as_buy_and_hold(s) for s in scalars),
                "dm_p_values": [s.get("dm_p_value") for s in scalars],
                "sharpe_mean": _mean([s.get("backtest_sharpe") for s in scalars]),
                "max_drawdown_mean": _mean([s.get("backtest_max_drawdown") for s in scalars]),
                "win_rate_mean": _mean([s.get("backtest_win_rate") for s in scalars]),
                "val_test_gap_mean": _mean([s.get("val_test_gap") for s in scalars]),
                "train_time_s_mean": _mean([s.get("train_time_s") for s in scalars]),
                "model_size_mb": group[0]["evaluation"]["run"]["model_size_mb"],
            }
        )
    ordered = [r for group in by_trial.values() for r in group]
    names = [r["item"]["id"] for r in ordered]
    groups = [r["item"]["trial"] for r in ordered]
    n_configurations = int(ordered[0]["item"]["n_trials"])
    single = retrain.search_aware([r["evaluation"] for r in ordered], names, groups, n_configurations=n_configurations)
    rolled = [r["evaluation"].get("rolling") for r in ordered]
    rolling = (
        retrain.search_aware([r for r in rolled if r], names, groups, n_configurations=n_configurations)
        if all(rolled)
        else None
    )
    beats_baselines, search_text = retrain.search_verdict(single, rolling)
    champion_row = min(rows, key=lambda r: r["rank"])
    champion_run = by_trial[champion_row["trial"]][0]
    evaluation = champion_run["evaluation"]
    ranking, bar = evaluation["ranking_metric"], evaluation["bar"]
    model_value, bar_value = evaluation["model"][ranking], evaluation["baselines"][bar][ranking]
    dm = evaluation["dm"]
    item = champion_run["item"]
    who = f"trial {item['trial']} (tuning rank {item['rank']}, seed {item['seed']})"
    if "p_value" in dm:
        significance = "significant" if dm["p_value"] < 0.05 else "not significant"
        evidence = f"Diebold-Mariano p = {dm['p_value']:.3g} ({significance} at 5%, {dm['n']} test days)"
    else:
        evidence = f"no Diebold-Mariano test: {dm['error']}"
    if evaluation["beats_bar"]:
        verdict = (
            f"{who} beats the best baseline ({bar}) on the test split: {ranking} {model_value:.5g} vs "
            f"{bar_value:.5g} ({-evaluation['improvement']:+.2%}); {evidence}."
        )
    else:
        verdict = (
            f"No champion: {who}, the winner with the best tuning objective, does not beat the best baseline "
            f"({bar}) on the test split ({ranking} {model_value:.5g} vs {bar_value:.5g}); {evidence}. "
            f"Nothing is registered."
        )
    return {
        "experiment": item["experiment"],
        "objective_metric": item["objective_metric"],
        "ranking_metric": ranking,
        "n_trials": item["n_trials"],
        "n_eligible": item["n_eligible"],
        "n_winners": len(rows),
        "n_retrains": len(runs),
        "winners": rows,
        "champion": {"dir": champion_run["dir"], "item": item},
        "beats_bar": bool(evaluation["beats_bar"]),
        "verdict": verdict,
        "champion_scalars": records.scalar_results(item, evaluation),
        "test_period": evaluation["test_period"],
        "n_test": evaluation["n_test"],
        "backtest": evaluation.get("backtest"),
        "search": {"single": single, "rolling": rolling},
        "beats_baselines": beats_baselines,
        "search_verdict": search_text,
        "inference": evaluation.get("inference"),
        "rolling_origins": (evaluation.get("rolling") or {}).get("origins"),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None
