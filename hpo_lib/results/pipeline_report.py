"""The pipeline's report, as the evaluate step writes it: ``report.md``
(:func:`hpo_lib.results.render.summary_markdown`) and ``report.html``, the same text rendered by Python-Markdown
with two figures of the champion (its first seed):

* its equity curve on the test days (growth of 1, net of costs) against buy-and-hold over the same days;
* its forecasts against what was realised, over time beside the bar's forecasts, and as a scatter.

The figures are matplotlib PNGs embedded in the page (``data:`` URIs), so the page is one self-contained file that
the KFP UI shows as it is. A figure the run cannot support (no backtest for a volatility target, no forecasts file)
is left out with the reason on the page, never drawn empty.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo_lib import fileio
from hpo_lib.results import render

FORECASTS = "forecasts.csv"  # a retrain's test forecasts: date, actual, forecast, bar_forecast


def write(summary: Mapping[str, Any], markdown_path: str | Path, html_path: str | Path) -> None:
    """``report.md`` and ``report.html`` of :func:`hpo_lib.pipeline.summary.summarize`'s ``summary``."""
    text = render.summary_markdown(summary)
    fileio.write_text(Path(markdown_path), text)
    shown, skipped = figures(summary)
    page = render.markdown_to_html(
        text,
        f"Retrained winners of {summary['experiment']}",
        figures=shown,
        notes=[f"No {k}: {v}." for k, v in skipped],
    )
    fileio.write_text(Path(html_path), page)


def figures(summary: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The figures of the page as (caption, PNG as a ``data:`` URI), and the ones left out as (name, reason)."""
    shown, skipped = [], []
    equity = (summary.get("backtest") or {}).get("equity")
    if equity and equity.get("model"):
        cost = summary["backtest"]["buy_and_hold"]["cost_bps"]
        shown.append(
            (
                f"Equity of the champion's long/short position on the test days against buy-and-hold (growth of 1, "
                f"{cost:g} bp per unit traded)",
                _data_uri(equity_png(equity)),
            )
        )
    else:
        skipped.append(("equity curve", (summary.get("backtest") or {}).get("error", "no backtest in the evaluation")))
    path = Path(summary["champion"]["dir"]) / FORECASTS
    if path.exists():
        shown.append(
            (
                f"The champion's test forecasts against the realised target, and the bar "
                f"({summary['winners'][0]['bar']})",
                _data_uri(forecast_png(read_forecasts(path), summary["winners"][0]["bar"])),
            )
        )
    else:
        skipped.append(("forecast plot", f"the champion's {FORECASTS} is missing"))
    return shown, skipped


def read_forecasts(path: Path) -> dict[str, list[Any]]:
    """The columns of a retrain's ``forecasts.csv``: dates as text, the rest as floats."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[Any]] = {"date": [r["date"] for r in rows]}
    for name in ("actual", "forecast", "bar_forecast"):
        columns[name] = [float(r[name]) for r in rows]
    return columns


def equity_png(equity: Mapping[str, list[Any]]) -> bytes:
    """The equity curves of :func:`hpo_lib.pipeline.retrain.evaluate_test` (``dates``, ``model``, ``buy_and_hold``)."""
    figure, axes = _figure(1)
    dates = _dates(equity["dates"])
    axes[0].plot(dates, equity["model"], color="#1f77b4", label="champion (long/short on the forecast's sign)")
    axes[0].plot(dates, equity["buy_and_hold"], color="#7f7f7f", linestyle="--", label="buy-and-hold")
    axes[0].axhline(1.0, color="black", linewidth=0.5)
    _date_axis(axes[0])
    axes[0].set_xlabel("test day")
    axes[0].set_ylabel("growth of 1, net of costs")
    axes[0].legend(loc="best")
    return _png(figure)


def forecast_png(columns: Mapping[str, list[Any]], bar: str) -> bytes:
    """Forecasts against the realised target over time (with the bar's forecasts), and as a scatter."""
    figure, axes = _figure(2)
    dates = _dates(columns["date"])
    axes[0].plot(dates, columns["actual"], color="#bbbbbb", linewidth=0.8, label="realised")
    axes[0].plot(dates, columns["forecast"], color="#1f77b4", label="champion")
    axes[0].plot(dates, columns["bar_forecast"], color="#d62728", linestyle="--", label=f"bar ({bar})")
    axes[0].set_xlabel("test day")
    axes[0].set_ylabel("target")
    _date_axis(axes[0])
    axes[0].legend(loc="best")
    axes[1].scatter(columns["forecast"], columns["actual"], s=6, alpha=0.5, color="#1f77b4")
    axes[1].axhline(0.0, color="black", linewidth=0.5)
    axes[1].axvline(0.0, color="black", linewidth=0.5)
    axes[1].set_xlabel("champion's forecast")
    axes[1].set_ylabel("realised")
    return _png(figure)


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")  # no display in a pipeline step
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels if panels > 1 else 10, 4.2), squeeze=False)
    return figure, list(axes[0])


def _date_axis(axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _dates(values: list[str]) -> list[Any]:
    import numpy as np

    return list(np.array(values, dtype="datetime64[D]"))


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
