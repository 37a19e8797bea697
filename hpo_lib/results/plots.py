"""Plots of a finished (or running) study: what a user would rather look at than read.

``write_report(study, folder)`` writes one PNG per plot and one self-contained ``report.html`` (plotly, script
embedded once, so it opens offline) with the leaderboard table on top:

* optimization history (objective per trial and the best so far), with the best naive baseline as a dashed line;
* learning curves (the objective per epoch of every trial, one legend entry per trial; early-stopped trials end
  early), with the same baseline;
* parameter importances (fANOVA, Optuna's default, titled with the trials they rest on) once
  :data:`MIN_IMPORTANCE_TRIALS` succeeded (before that, a note on the page says why there are none);
* slice plots (objective against each parameter);
* the Pareto front for a multi-objective study.

A plot that the study cannot support yet (too few succeeded trials, parameters that never varied) is skipped with
the reason, never drawn empty. Axes and legends use the metric's own name (``val_loss``, ``epoch``), not Optuna's
generic "Objective Value" / "Intermediate Value" / "Step". The baseline is the one the trials printed beside the
objective (``baseline_<metric>`` for a ``val_<metric>`` objective, see :mod:`hpo_lib.metrics`): that of the best
trial, on the same validation rows.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_lib import fileio, metrics, study_record
from hpo_lib.results import render
from hpo_lib.study_record import TrialRecord

log = logging.getLogger(__name__)
SLICE_PARAMS = 6  # slice plots of the most important parameters only: a dozen panels in a row are unreadable
SLICE_COLUMNS = 3  # slice panels per row on the PNG, so that each stays readable
BASELINE_NAME = "best naive baseline"
BASELINE_STYLE = {"color": "#d62728", "dash": "dash"}
# fANOVA's importances need trials to spread over the space: below this many succeeded ones they rank noise (with
# 7 trials and 5 parameters any ranking fits), so no chart is drawn, only a note saying why
MIN_IMPORTANCE_TRIALS = 10


def baseline_value(study: optuna.Study, objective_name: str) -> float | None:
    """The best naive baseline's value of the objective, as the best succeeded trial printed it; None when the
    trials printed none (a multi-objective study, or an objective with no baseline)."""
    if len(study.directions) > 1 or not objective_name.startswith(metrics.VAL):
        return None
    name = metrics.BASELINE_VAL + objective_name.removeprefix(metrics.VAL)
    try:
        best = study.best_trial
    except ValueError:
        return None
    value = TrialRecord.from_frozen(best).latest(name)
    return float(value) if value is not None else None


def _plotly_baseline(fig, value: float, x_range: tuple[float, float]) -> None:
    """The baseline as a dashed trace across the plot (a trace, so that it has a legend entry)."""
    import plotly.graph_objects as go

    fig.add_trace(
        go.Scatter(
            x=list(x_range),
            y=[value, value],
            mode="lines",
            name=f"{BASELINE_NAME} ({value:.4g})",
            line=BASELINE_STYLE,
            hovertemplate=f"{BASELINE_NAME}: %{{y:.5g}}<extra></extra>",
        )
    )


def _mpl_baseline(axes, value: float) -> None:
    axes.axhline(value, color=BASELINE_STYLE["color"], linestyle="--", label=f"{BASELINE_NAME} ({value:.4g})")


def _plots(study: optuna.Study, objective_name: str) -> list[tuple[str, str, Callable, Callable]]:
    """(file stem, title, plotly builder, matplotlib builder) for every plot this study supports."""
    from optuna import visualization as pv
    from optuna.visualization import matplotlib as pm

    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = [
        name
        for name in {p for t in complete for p in t.params}
        if len({repr(t.params.get(name)) for t in complete}) > 1
    ]
    kw: dict[str, Any] = {"target": target, "target_name": objective_name}
    top = _most_important(study, varied, target) if len(complete) >= 2 else []
    plots: list[tuple[str, str, Callable, Callable]] = [
        (
            "history",
            "Optimization history",
            lambda: pv.plot_optimization_history(study, **kw),
            lambda: pm.plot_optimization_history(study, **kw),
        )
    ]
    if not multi and any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append(
            (
                "learning_curves",
                f"{objective_name} per epoch (early-stopped trials end early)",
                lambda: _epochs_plotly(pv.plot_intermediate_values(study), objective_name),
                lambda: _epochs_mpl(pm.plot_intermediate_values(study), objective_name),
            )
        )
    if len(complete) >= MIN_IMPORTANCE_TRIALS and varied:
        plots.append(
            (
                "importances",
                f"Parameter importances (fANOVA, {len(complete)} trials)",
                lambda: pv.plot_param_importances(study, **kw),
                lambda: pm.plot_param_importances(study, **kw),
            )
        )
    if len(complete) >= 2 and varied:
        plots.append(
            (
                "slice",
                f"{objective_name} against the {len(top)} most important parameters",
                lambda: pv.plot_slice(study, params=top, **kw),
                lambda: pm.plot_slice(study, params=top, **kw),
            )
        )
    if multi and complete:
        names = [objective_name, *study.user_attrs.get(study_record.OBJECTIVE_NAMES, [])[1:]]
        target_names = names if len(names) == len(study.directions) else None
        plots.append(
            (
                "pareto_front",
                "Pareto front",
                lambda: pv.plot_pareto_front(study, target_names=target_names),
                lambda: pm.plot_pareto_front(study, target_names=target_names),
            )
        )
    return plots


def skipped(study: optuna.Study) -> list[str]:
    """Why a plot of :func:`_plots` is not drawn for this study, one sentence each (shown on the page)."""
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if 2 <= complete < MIN_IMPORTANCE_TRIALS:
        return [
            f"No parameter importances: {complete} succeeded trials, and fANOVA needs at least "
            f"{MIN_IMPORTANCE_TRIALS} before its ranking means more than noise."
        ]
    return []


def _epochs_plotly(fig, objective_name: str):
    """Learning curves with epochs on the x axis (a trial reports epoch e at step e - 1) and named axes."""
    for trace in fig.data:
        trace.x = [x + 1 for x in trace.x]
        trace.name = (trace.name or "").replace("Trial", "trial ")
    fig.update_layout(showlegend=True, xaxis_title="epoch", yaxis_title=objective_name, legend_title_text="")
    return fig


def _epochs_mpl(axes, objective_name: str):
    for line in axes.get_lines():
        line.set_xdata([x + 1 for x in line.get_xdata()])
        line.set_label(line.get_label().replace("Trial", "trial "))
    axes.relim()
    axes.autoscale_view()
    axes.set_title(f"{objective_name} per epoch")
    axes.set_xlabel("epoch")
    axes.set_ylabel(objective_name)
    return axes


def _most_important(study: optuna.Study, varied: list[str], target, k: int = SLICE_PARAMS) -> list[str]:
    """The ``k`` parameters with the highest fANOVA importance (all varied ones, sorted, if that fails)."""
    try:
        ranked = list(optuna.importance.get_param_importances(study, params=sorted(varied), target=target))
    except (ValueError, RuntimeError) as exc:
        log.info("importances unavailable (%s): slicing every parameter", exc)
        ranked = sorted(varied)
    return ranked[:k]


def write_report(
    study: optuna.Study,
    folder: Path,
    *,
    objective_name: str = "objective",
    png: bool = True,
    html_page: bool = True,
    top: int = 10,
) -> list[Path]:
    """Write the study's plots under ``folder``; returns the files written (PNGs, then report.html).

    The page opens with the leaderboard as a table (the ``top`` trials, or the Pareto front; see
    :func:`hpo_lib.results.render.leaderboard_html`), then one section per plot, each as wide as the page.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ValueError(f"study {study.study_name} has no succeeded trial yet: nothing to plot")
    baseline = baseline_value(study, objective_name)
    written: list[Path] = []
    sections: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning on the matplotlib backend
        for stem, title, plotly_fig, mpl_fig in _plots(study, objective_name):
            if png:
                path = folder / f"{stem}.png"
                _save_png(mpl_fig(), stem, path, baseline, objective_name)
                plt.close("all")
                written.append(path)
            if html_page:
                fig = plotly_fig()
                for trace in fig.data if stem == "history" else ():
                    trace.name = f"best {objective_name} so far" if trace.name == "Best Value" else trace.name
                if baseline is not None and stem in ("history", "learning_curves"):
                    xs = [x for trace in fig.data for x in (trace.x or ()) if isinstance(x, (int, float))]
                    _plotly_baseline(fig, baseline, (min(xs, default=0), max(xs, default=1)))
                # Optuna fixes a slice figure's width at 300 px per panel: wider than the page beyond four
                fig.update_layout(title=title, width=None, autosize=True, margin={"r": 40})
                if stem == "slice":  # narrow panels: taller, and few enough ticks that their labels do not collide
                    fig.update_layout(height=460)
                    fig.update_xaxes(nticks=4, tickangle=-30)
                html_fig = fig.to_html(
                    full_html=False, include_plotlyjs=not sections, config={"responsive": True}, div_id=f"plot-{stem}"
                )
                sections.append(f"<section class='plot' id='{stem}'>{html_fig}</section>")
    if html_page:
        page = folder / "report.html"
        name = html.escape(study.study_name)
        fileio.write_text(
            page,
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{name}</title><style>{PAGE_STYLE}</style></head><body>"
            f"<h1>{name}</h1>{render.leaderboard_html(study, k=top)}"
            + "".join(sections)
            + "".join(f"<p class='note'>{html.escape(note)}</p>" for note in skipped(study))
            + "</body></html>\n",
        )
        written.append(page)
    return written


PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
    "th{background:#f3f3f3}td.params{text-align:left;white-space:normal}"
    ".table-wrap{overflow-x:auto}section.plot{margin:1em 0;width:100%}"
)


def _save_png(axes, stem: str, path: Path, baseline: float | None, objective_name: str) -> None:
    """One plot as a PNG: a size for its panels, the baseline and a legend where they belong, nothing overlapping."""
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    figure = flat[0].get_figure()
    if baseline is not None and stem in ("history", "learning_curves"):
        _mpl_baseline(flat[0], baseline)
    if stem == "history":
        flat[0].set_title(f"{objective_name} per trial")
        for line in flat[0].get_lines():
            if line.get_label() == "Best Value":
                line.set_label(f"best {objective_name} so far")
    if stem in ("history", "learning_curves"):
        flat[0].legend(fontsize="small", loc="best")
    if stem == "slice":
        figure = _slice_grid(flat)
    else:
        panels = len(flat)
        figure.set_size_inches(max(3.2 * panels, 8), 5 if panels == 1 else 3.8)
        figure.tight_layout()
    with fileio.writing(path, "wb", None) as handle:  # atomic: a full disk keeps the previous PNG
        figure.savefig(handle, dpi=110, format="png")


def _slice_grid(flat: list) -> Any:
    """Optuna's slice panels (one row, a colour bar laid over the last one once resized) redrawn on a grid of
    :data:`SLICE_COLUMNS` columns with one colour bar of its own, by constrained layout: nothing overlaps."""
    import math

    import matplotlib.pyplot as plt

    source = flat[0].get_figure()
    panels = [ax for ax in flat if ax.collections]
    rows = math.ceil(len(panels) / SLICE_COLUMNS)
    columns = min(len(panels), SLICE_COLUMNS)
    figure, grid = plt.subplots(
        rows, columns, figsize=(4.2 * columns + 1.2, 3.4 * rows), squeeze=False, layout="constrained", sharey=True
    )
    arrays = [points.get_array() for ax in panels for points in ax.collections]
    numbers = [float(v) for a in arrays if a is not None for v in a]
    scale = {"vmin": min(numbers, default=0), "vmax": max(numbers, default=1)}  # one colour per trial, every panel
    mappable = None
    for ax, old in zip(grid.flat, panels):
        for points in old.collections:
            offsets = points.get_offsets()
            colours = points.get_array()
            drawn = ax.scatter(
                offsets[:, 0],
                offsets[:, 1],
                c=points.get_facecolors() if colours is None else colours,
                cmap=None if colours is None else points.get_cmap(),
                s=20,
                edgecolors="grey",
                **({} if colours is None else scale),
            )
            mappable = mappable if colours is None else drawn
        ax.set_xscale(old.get_xscale())
        ax.set_xlabel(old.get_xlabel())
        ax.set_xticks(old.get_xticks(), [t.get_text() for t in old.get_xticklabels()])
        ax.set_xlim(old.get_xlim())
    for ax in grid.flat[len(panels) :]:
        ax.set_visible(False)
    for row in grid:
        row[0].set_ylabel(flat[0].get_ylabel())
    if mappable is not None:
        figure.colorbar(mappable, ax=grid, label="trial", shrink=0.9)
    figure.suptitle(source.get_suptitle() or "Slice plot")
    plt.close(source)
    return figure
