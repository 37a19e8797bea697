"""Plots of a finished (or running) study: what a user would rather look at than read.

``write_report(study, folder)`` writes one PNG per plot and one self-contained ``report.html`` (plotly, script
embedded once, so it opens offline) with the leaderboard on top:

* optimization history (objective per trial and the best so far);
* learning curves (the objective per epoch of every trial; early-stopped trials end early);
* parameter importances (fANOVA, Optuna's default) once enough trials succeeded;
* slice plots (objective against each parameter);
* the Pareto front for a multi-objective study.

A plot that the study cannot support yet (too few succeeded trials, parameters that never varied) is skipped with
the reason, never drawn empty.
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

log = logging.getLogger(__name__)
SLICE_PARAMS = 6  # slice plots of the most important parameters only: a dozen panels in a row are unreadable


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
                lambda: pv.plot_intermediate_values(study),
                lambda: pm.plot_intermediate_values(study),
            )
        )
    if len(complete) >= 2 and varied:
        plots.append(
            (
                "importances",
                "Parameter importances (fANOVA)",
                lambda: pv.plot_param_importances(study, **kw),
                lambda: pm.plot_param_importances(study, **kw),
            )
        )
        plots.append(
            (
                "slice",
                f"{objective_name} against the {len(top)} most important parameters",
                lambda: pv.plot_slice(study, params=top, **kw),
                lambda: pm.plot_slice(study, params=top, **kw),
            )
        )
    if multi and complete:
        names = [objective_name, *study.user_attrs.get("objective_names", [])[1:]]
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
    summary: str = "",
    png: bool = True,
    html_page: bool = True,
) -> list[Path]:
    """Write the study's plots under ``folder``; returns the files written (PNGs, then report.html)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ValueError(f"study {study.study_name} has no succeeded trial yet: nothing to plot")
    written: list[Path] = []
    sections: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning on the matplotlib backend
        for stem, title, plotly_fig, mpl_fig in _plots(study, objective_name):
            if png:
                axes = mpl_fig()
                if stem == "learning_curves":
                    axes.set_xlabel("report (epoch - 1)")
                    axes.set_ylabel(objective_name)
                figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
                panels = len(axes.flat) if hasattr(axes, "flat") else 1
                figure.set_size_inches(max(3.2 * panels, 8), 5 if panels == 1 else 3.8)
                figure.tight_layout()
                path = folder / f"{stem}.png"
                figure.savefig(path, dpi=110)
                plt.close(figure)
                written.append(path)
            if html_page:
                fig = plotly_fig()
                fig.update_layout(title=title)
                sections.append(fig.to_html(full_html=False, include_plotlyjs=not sections))
    if html_page:
        page = folder / "report.html"
        page.write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(study.study_name)}</title></head><body style='font-family:sans-serif'>"
            f"<h1>{html.escape(study.study_name)}</h1><pre>{html.escape(summary)}</pre>"
            + "".join(f"<div>{s}</div>" for s in sections)
            + "</body></html>"
        )
        written.append(page)
    return written
