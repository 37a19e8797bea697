"""Results as people read them: leaderboards, Katib-shaped exports, and the Markdown/HTML pages of the pipeline.

Nothing here draws a live screen: these functions return text or write files, and the faces print them.
"""

from __future__ import annotations

import csv
import html
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from hpo_lib import fileio, metrics, study_record
from hpo_lib.results.tracking import ALIAS
from hpo_lib.results.winners import Selection
from hpo_lib.study_record import KILLED_ENGINE, TrialRecord, katib_value, tally, trial_name


# ----------------------------------------------------------------------------------------------- local studies
def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial in the shape of a Katib Trial CR (name, parameterAssignments, observation.metrics, condition)."""
    records = []
    legacy = set(study.user_attrs.get(study_record.INTERRUPTED_TRIALS, []))
    for t in study.get_trials(deepcopy=False):
        r = TrialRecord.from_frozen(t)
        records.append(
            {
                "name": trial_name(study.study_name, r.number),
                "condition": r.condition,
                "parameterAssignments": [{"name": k, "value": katib_value(v)} for k, v in r.params.items()],
                "observation": {
                    "metrics": [
                        {"name": k, "min": str(v["min"]), "max": str(v["max"]), "latest": str(v["latest"])}
                        for k, v in r.observation.items()
                    ]
                },
                "epochsRun": r.epochs_run or 0,
                "failReason": r.fail_reason or (KILLED_ENGINE if r.number in legacy else ""),
            }
        )
    return records


def typed_value(value: Any) -> Any:
    """A Katib categorical's text as the number it spells (``"128"`` -> 128, ``"1e-3"`` -> 0.001); anything else
    unchanged.

    >>> typed_value("128"), typed_value("0.5"), typed_value("relu"), typed_value(3)
    (128, 0.5, 'relu', 3)
    """
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def typed_columns(frame: Any, *, prefix: str) -> Any:
    """``frame`` (a pandas DataFrame) with each ``prefix`` column whose values are all numbers as text typed as
    numbers (:func:`typed_value`), so that ``"128"`` sorts after ``"16"``; a column with any other text is kept."""
    from pandas.api.types import is_numeric_dtype

    for column in [c for c in frame.columns if str(c).startswith(prefix) and not is_numeric_dtype(frame[c])]:
        present = frame[column].dropna()
        typed = [typed_value(v) for v in present]
        if typed and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in typed):
            whole = len(typed) == len(frame) and all(isinstance(v, int) for v in typed)  # NaN makes ints floats
            frame[column] = [float("nan") if v is None else typed_value(v) for v in frame[column].tolist()]
            frame[column] = frame[column].astype("int64" if whole else "float64")
    return frame


def export(study: optuna.Study, directory: Path) -> tuple[Path, Path]:
    """``trials.json`` (Katib Trial shape) and ``trials.csv`` (one row per trial, one column per metric)."""
    directory.mkdir(parents=True, exist_ok=True)
    records = trial_records(study)
    json_path, csv_path = directory / "trials.json", directory / "trials.csv"
    fileio.write_text(json_path, json.dumps(records, indent=2))  # atomic: a full disk keeps the old export
    metric_names = sorted({m["name"] for r in records for m in r["observation"]["metrics"]})
    param_names = sorted({p["name"] for r in records for p in r["parameterAssignments"]})
    with fileio.writing(csv_path) as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "name",
                "condition",
                "epochs_run",
                *param_names,
                *(f"{m}_min" for m in metric_names),
                *(f"{m}_latest" for m in metric_names),
            ]
        )
        for r in records:
            params = {p["name"]: p["value"] for p in r["parameterAssignments"]}
            metrics = {m["name"]: m for m in r["observation"]["metrics"]}
            writer.writerow(
                [
                    r["name"],
                    r["condition"],
                    r["epochsRun"],
                    *(params.get(p, "") for p in param_names),
                    *(metrics.get(m, {}).get("min", "") for m in metric_names),
                    *(metrics.get(m, {}).get("latest", "") for m in metric_names),
                ]
            )
    return json_path, csv_path


def compute_summary(study: optuna.Study) -> dict[str, float]:
    """Epochs run, and the epochs early stopping saved: what pruned trials would have run to their --epochs."""
    trials = [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]
    run = sum(t.epochs_run or 0 for t in trials)
    saved = 0
    for t in trials:
        planned = t.planned_epochs
        if t.state == "PRUNED" and planned:
            saved += max(planned - (t.epochs_run or 0), 0)
    return {
        "epochs_run": float(run),
        "epochs_saved": float(saved),
        "compute_saved_pct": 100.0 * saved / (run + saved) if run + saved else 0.0,
    }


# a trial whose objective is this close to the best naive baseline's (relative) scores what a constant forecast
# scores: most often it is one (an "always up" forecast of daily returns), whatever its architecture
NEAR_BASELINE = 0.005


def vs_baseline(value: float | None, baseline: float | None) -> float | None:
    """The objective against the best naive baseline, in percent of the baseline (negative: lower than it)."""
    if value is None or baseline is None or not baseline:
        return None
    return 100.0 * (value - baseline) / abs(baseline)


def percent(value: float | None) -> str:
    """``+1.23%``, never ``-0.00%``; ``n/a`` for None."""
    return "n/a" if value is None else f"{round(value, 2) + 0.0:+.2f}%"


def baseline_flag(value: float | None, baseline: float | None) -> str:
    """``"≈ baseline"`` when the objective is within :data:`NEAR_BASELINE` of the baseline's, else ``""``."""
    pct = vs_baseline(value, baseline)
    return "≈ baseline" if pct is not None and abs(pct) < 100 * NEAR_BASELINE else ""


def _metric_text(observation: Mapping[str, Mapping[str, float]], names: list[str]) -> str:
    parts = []
    for name in names:
        if name in observation:
            parts.append(f"{name}={observation[name]['latest']:.4g}")
    return " ".join(parts)


def _counts_line(study: optuna.Study) -> str:
    return tally(study).line(study.study_name)


def _ranked(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The leaderboard's trials: the Pareto front (by the first objective) or the top ``k`` by the objective."""
    if len(study.directions) > 1:
        return sorted(
            study.best_trials,
            key=lambda t: t.values[0],
            reverse=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE,
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(  # cast: a complete single-objective trial always has a value
        complete,
        key=lambda t: cast(float, t.value),
        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE,
    )[:k]


def _compute_line(study: optuna.Study) -> str:
    compute = compute_summary(study)
    return (
        f"epochs run: {compute['epochs_run']:.0f}; early stopping saved {compute['epochs_saved']:.0f} "
        f"epochs ({compute['compute_saved_pct']:.0f}% of the planned compute)"
    )


def leaderboard_html(study: optuna.Study, k: int = 10) -> str:
    """The leaderboard as an HTML table (what :func:`leaderboard` prints): rank, trial, objective, the best naive
    baseline, epochs, the :data:`hpo_lib.metrics.LEADERBOARD` metrics the trials printed and one column per
    parameter; the state counts above, the compute early stopping saved below."""
    multi = len(study.directions) > 1
    ranked = _ranked(study, k)
    records = [TrialRecord.from_frozen(t) for t in ranked]
    extra = [m for m in metrics.LEADERBOARD if any(m in r.observation for r in records)]
    params = sorted({name for t in ranked for name in t.params})
    names = study.metric_names or study.user_attrs.get(study_record.OBJECTIVE_NAMES) or []  # set by the engine
    objectives = names if len(names) == len(study.directions) else ["objective"] * len(study.directions)
    head = ["rank", "trial", *objectives, "best naive baseline", "vs baseline %", "", "epochs", *extra, *params]
    rows = []
    for rank, (t, r) in enumerate(zip(ranked, records), start=1):
        cells = [str(rank), str(t.number), *(_fmt(v) for v in t.values)]
        base = r.latest(metrics.BASELINE_OBJECTIVE)
        pct = vs_baseline(t.values[0], base)
        cells += [_fmt(base), percent(pct), baseline_flag(t.values[0], base)]
        cells.append("?" if r.epochs_run is None else str(r.epochs_run))
        cells += [_fmt(r.latest(m), 4) for m in extra]
        cells += [_fmt(t.params[p], 4) if p in t.params else "" for p in params]  # the exports keep every digit
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    caption = f"Pareto front ({len(ranked)} trials)" if multi else f"top {len(ranked)} by the objective"
    flagged = sum(
        bool(baseline_flag(t.values[0], r.latest(metrics.BASELINE_OBJECTIVE))) for t, r in zip(ranked, records)
    )
    note = (
        f"<p>≈ baseline: {flagged} of these trials score within {NEAR_BASELINE:.1%} of the best naive baseline, "
        f"what a constant forecast scores; most often they are one.</p>"
        if flagged
        else ""
    )
    table = (
        f"<div class='table-wrap'><table class='leaderboard'><caption>{html.escape(caption)}</caption><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table></div>"
        if ranked
        else "<p>no trial succeeded yet</p>"
    )
    return f"<p>{html.escape(_counts_line(study))}</p>{table}{note}<p>{html.escape(_compute_line(study))}</p>"


def leaderboard(study: optuna.Study, k: int = 5) -> str:
    """Top-k succeeded trials (or the Pareto front) with objective, metrics, epochs, the baseline and compute."""
    multi = len(study.directions) > 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    lines = [_counts_line(study)]
    ranked = _ranked(study, k)
    if multi:
        lines.append(f"  Pareto front ({len(ranked)} trials):")
    elif ranked:
        lines.append(f"  top {len(ranked)} by the objective:")
    extra = list(metrics.LEADERBOARD)
    for rank, t in enumerate(ranked, start=1):
        r = TrialRecord.from_frozen(t)
        base = r.latest(metrics.BASELINE_OBJECTIVE)
        pct = vs_baseline(t.values[0], base)
        flag = baseline_flag(t.values[0], base)
        flag_text = f"; {flag}" if flag else ""
        base_text = f" vs best naive baseline {base:.5g} ({percent(pct)}{flag_text})" if pct is not None else ""
        value = "(" + ", ".join(f"{v:.5g}" for v in t.values) + ")" if multi else f"{t.value:.5g}"
        params = " ".join(f"{name}={_fmt(v, 4)}" for name, v in t.params.items())
        lines.append(
            f"  #{rank} trial {t.number}: objective {value}{base_text}, "
            f"{'?' if r.epochs_run is None else r.epochs_run} epochs"
        )
        # its metrics, then its parameters at 4 significant digits (the export keeps them exact), wrapped at 80
        # columns, a terminal's width, so that a long space never wraps mid-word
        for text in (_metric_text(r.observation, extra), params):
            if text:
                lines += textwrap.wrap(
                    text,
                    80,
                    initial_indent=" " * 6,
                    subsequent_indent=" " * 6,
                    break_on_hyphens=False,
                    break_long_words=False,
                )
    if not complete:
        lines.append("  no trial succeeded yet")
    lines.append(f"  {_compute_line(study)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- pipeline pages
def selection_markdown(selection: Selection, tuned: Mapping[str, Any]) -> str:
    axes = [a.metric for a in selection.axes]
    lines = [
        f"# Winners of {tuned['namespace']}/{tuned['experiment']}",
        "",
        f"{selection.n_eligible} usable of {selection.n_trials} trials ({tuned['progress']}); "
        f"ranked by {selection.objective.metric} ({selection.objective.direction}, "
        f"{selection.objective.strategy}).",
        "",
    ]
    for reason, names in selection.skipped.items():
        lines.append(f"* skipped, {reason}: {len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    lines += [f"* note: {n}" for n in [*selection.notes, *tuned.get("notes", [])]]
    lines += [
        "",
        f"| rank | trial | {selection.objective.metric} | {' | '.join(axes)} | top-k | Pareto | parameters |",
        "|---:|---|---:|" + "---:|" * len(axes) + "---|---|---|",
    ]
    for w in selection.winners:
        params = ", ".join(f"{k}={v}" for k, v in w.trial.params.items())
        values = " | ".join(_fmt(w.axes.get(a)) for a in axes)
        lines.append(
            f"| {w.rank} | {w.trial.name} | {_fmt(w.objective)} | {values} | {'yes' if w.top_k else ''} | "
            f"{'yes' if w.pareto else ''} | {params} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: Any, digits: int = 5) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    ranking = summary["ranking_metric"]
    lines = [
        f"# Retrained winners of {summary['experiment']}",
        "",
        f"**{summary['verdict']}**",
        "",
        f"Selected from {summary['n_eligible']} usable of {summary['n_trials']} trials; {summary['n_winners']} "
        f"winners x seeds = {summary['n_retrains']} retrains on train + validation; test split "
        f"{summary['test_period'][0]} .. {summary['test_period'][1]} ({summary['n_test']} days). The champion "
        f"is chosen by the tuning objective, never by test.",
        "",
        f"| rank | trial | top-k | Pareto | tuning {summary['objective_metric']} | test {ranking} mean ± sd "
        f"(seeds) | best baseline (test) | vs baseline % | beats it | DM p | Sharpe | max drawdown | win rate | "
        f"val→test gap | flags |",
        "|---:|---|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in summary["winners"]:
        p_values = ", ".join(_fmt(p, 2) for p in r["dm_p_values"])
        pct = r.get("vs_bar_pct")
        lines.append(
            f"| {r['rank']} | {r['trial']} | {'yes' if r['top_k'] else ''} | {'yes' if r['pareto'] else ''} | "
            f"{_fmt(r['tuning_objective'])} | {_fmt(r['test_mean'])} ± {_fmt(r['test_sd'], 2)} ({len(r['seeds'])}) | "
            f"{r['bar']} {_fmt(r['bar_test'])} | {percent(pct)} | "
            f"{r['beats_bar']}/{len(r['seeds'])} | {p_values} | "
            f"{_fmt(r['sharpe_mean'], 3)} | {_fmt(r['max_drawdown_mean'], 3)} | {_fmt(r['win_rate_mean'], 3)} | "
            f"{_fmt(r['val_test_gap_mean'], 3)} | {'; '.join(winner_flags(r))} |"
        )
    flagged = [r["trial"] for r in summary["winners"] if winner_flags(r)]
    if flagged:
        lines += [
            "",
            f"Flags: {', '.join(flagged)}. A near-constant forecast (its spread a small fraction of the target's) "
            f"scores like a naive baseline whatever the network behind it; a Sharpe ratio equal to buy-and-hold's "
            f"means the strategy never left the long side. Neither is skill.",
        ]
    backtest = summary.get("backtest") or {}
    if "buy_and_hold" in backtest:
        bh, cost = backtest["buy_and_hold"], backtest["buy_and_hold"]["cost_bps"]
        lines += [
            "",
            f"Backtest: long/short on the forecast's sign, {cost:g} bp per unit traded; buy-and-hold over "
            f"the same days: Sharpe {bh['sharpe']:.3f}, max drawdown {bh['max_drawdown']:.3f}.",
        ]
    if "search_verdict" in summary:
        lines += ["", f"Search-aware verdict (beats the baselines?): **{summary['search_verdict']}**", ""]
        for label, search in (
            ("single test window", summary["search"]["single"]),
            ("rolling origins", summary["search"]["rolling"]),
        ):
            if search:
                lines.append(f"- {label}: {search_line(search)}")
    inference = summary.get("inference")
    if inference:
        lines += ["", "Champion (first seed), single test window:", "", *inference_lines(inference)]
    return "\n".join(lines) + "\n"


def winner_flags(row: Mapping[str, Any]) -> list[str]:
    """What a quant would question in a retrained winner's row (:func:`hpo_lib.pipeline.summary.summarize`)."""
    flags = []
    if row.get("near_constant"):
        flags.append(f"near-constant forecast (sd {row['forecast_sd_ratio']:.1%} of the target's)")
    if row.get("sharpe_is_buy_and_hold"):
        flags.append("Sharpe = buy-and-hold's (always long)")
    return flags


def search_line(search: Mapping[str, Any]) -> str:
    """SPA, Reality Check and the Model Confidence Set of :func:`hpo_lib.pipeline.retrain.search_aware`, one line."""
    spa, mcs = search["spa"], search["mcs"]
    if "skipped" in spa:
        spa_text = f"SPA skipped ({spa['skipped']})"
    else:
        spa_text = (
            f"SPA p {_fmt(spa['spa_p'], 3)} (bounds {_fmt(spa['spa_p_lower'], 3)}..{_fmt(spa['spa_p_upper'], 3)}),"
            f" Reality Check p {_fmt(spa['reality_check_p'], 3)}: {spa['n_models']} retrains against "
            f"{search['bar']}, {search['n_configurations']} configurations tried"
        )
    if "skipped" in mcs:
        mcs_text = f"MCS skipped ({mcs['skipped']})"
    else:
        mcs_text = f"MCS at {mcs['size']:.0%}: {', '.join(mcs['included'])}"
    return f"{spa_text}; {mcs_text}"


def interval_text(interval: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``estimate [low, high]`` of a bootstrap interval, or n/a."""
    if not interval:
        return "n/a"
    return f"{_fmt(interval['estimate'], digits)} [{_fmt(interval['low'], digits)}, {_fmt(interval['high'], digits)}]"


def inference_lines(inference: Mapping[str, Any]) -> list[str]:
    """The figures of :func:`hpo_lib.pipeline.retrain.inference_report` as Markdown list items."""
    iv: Mapping[str, Any] = inference.get("intervals", {})
    blocks = ", ".join(f"{_fmt(iv[k]['block_length'], 3)} ({k})" for k in ("loss_diff", "sharpe") if k in iv)
    lines = [
        f"- 95% stationary-block-bootstrap intervals (mean block length in days: {blocks or 'n/a'}): loss "
        f"difference vs the bar {interval_text(iv.get('loss_diff'))}"
        + (
            f"; Sharpe {interval_text(iv.get('sharpe'))}, hit rate {interval_text(iv.get('hit_rate'))}, max "
            f"drawdown {interval_text(iv.get('max_drawdown'))}; buy-and-hold Sharpe "
            f"{interval_text(iv.get('buy_and_hold_sharpe'))}"
            if "sharpe" in iv
            else ""
        )
    ]
    cw = ", ".join(f"{name} p {_fmt(v['p_value'], 3)}" for name, v in inference.get("clark_west", {}).items())
    r2 = inference.get("oos_r2")
    pt = inference.get("pesaran_timmermann")
    lines.append(
        f"- Clark-West against nested baselines: {cw or 'n/a'}; out-of-sample R² vs "
        f"{r2['against'] if r2 else 'n/a'}: {_fmt(r2['r2'], 3) if r2 else 'n/a'}; Pesaran-Timmermann p "
        f"{_fmt(pt['p_value'], 3) if pt else 'n/a'}"
    )
    if "psr" in inference or "dsr" in inference:
        psr, dsr = inference.get("psr") or {}, inference.get("dsr") or {}
        lines.append(
            f"- Probabilistic Sharpe ratio {_fmt(psr.get('psr'), 3)}; deflated Sharpe ratio "
            f"{_fmt(dsr.get('dsr'), 3)} ({dsr.get('n_trials', 'n/a')} trials, expected best Sharpe of "
            f"worthless strategies {_fmt(dsr.get('expected_max_sharpe'), 3)})"
        )
    for name, reason in inference.get("skipped", {}).items():
        lines.append(f"- {name} skipped: {reason}")
    return lines


PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px}th{background:#f3f3f3}figure{margin:1.5em 0}"
    "figure img{max-width:100%}figcaption{color:#444}"
)


def markdown_to_html(
    text: str, title: str, *, figures: Sequence[tuple[str, str]] = (), notes: Sequence[str] = ()
) -> str:
    """A self-contained HTML page for the KFP UI: our Markdown rendered by Python-Markdown (tables, emphasis,
    lists), then ``figures`` ((caption, image URI), a ``data:`` URI keeps the page one file) and ``notes``."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    shown = "".join(
        f"<figure><img src='{html.escape(uri)}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, uri in figures
    )
    told = "".join(f"<p class='note'>{html.escape(note)}</p>" for note in notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>{body}{shown}{told}</body></html>\n"
    )


def registry_markdown(result: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    name = result["model_name"]
    if result.get("registered_version"):
        head = f"Registered **{name}@{ALIAS}** = version {result['registered_version']}."
    else:
        head = f"Nothing registered: {summary['verdict']}"
    lines = [
        f"# MLflow: {result['experiment']}",
        "",
        head,
        "",
        f"Tracking URI: `{result['tracking_uri']}`; parent run `{result.get('parent_run_id', 'n/a')}`.",
        "",
        "| retrain | run id | model |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['run_id']} | {v['model_uri']} |" for k, v in result["runs"].items()]
    return "\n".join(lines) + "\n"
