"""Generate ``docs/RESULTS.md`` from measurements: tuned models against every naive baseline, and the benchmarks.

For each bundled series (``sample:sp500``, ``sample:nasdaq``) and target (return, direction, volatility):

1. tune: the manifest's study on this machine with the embedded engine (:func:`hpo_lib.engine.run`: its sampler,
   Katib's median stopping rule, trials as processes), a small budget;
2. select: the trial with the best validation objective among the completed ones;
3. retrain: that trial's flags on train + validation with several seeds, then one look at the test split each
   (:func:`hpo_lib.pipeline.retrain.retrain`): test metrics beside every baseline's (naive, linear, GARCH, GJR-GARCH,
   HAR-RV, EWMA), a Diebold-Mariano test against the baseline with the lowest test value of the ranking metric,
   block-bootstrap intervals, Clark-West, out-of-sample R², Pesaran-Timmermann, the probabilistic and deflated
   Sharpe ratio, the rolling-origin test (``--test-origins``), and the val -> test gap;
4. test the seeds knowing the search: SPA, Reality Check and the Model Confidence Set
   (:func:`hpo_lib.pipeline.retrain.search_aware`) on the single window and on the rolling origins; the verdict
   "beats the baselines" needs SPA to reject at 5 % on the rolling-origin forecasts;
5. write the page, with the benchmark outputs ``make bench`` left in ``--bench-dir`` and the machine and date.

Nothing on the page is typed by hand: every number comes from this run (or from the JSON of an earlier run with
``--reuse``) and from the benchmark output files. Run ``python bench/results_page.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("sp500", "nasdaq")
TARGETS = ("return", "direction", "volatility")
BENCHES = (
    "early_stopping", "samplers", "multiobjective", "trial_loop", "engine_overhead", "gpu_throughput", "packing",
)
LN2 = math.log(2.0)
SIGNIFICANCE = 0.05


@dataclass
class Config:
    """What the page measures; the defaults are the committed page's configuration."""

    manifest: str = "manifests/mlp-experiment.yaml"
    datasets: tuple[str, ...] = DATASETS
    targets: tuple[str, ...] = TARGETS
    start: str = ""  # a first date for the samples ("" = the whole 1999-2018 history)
    trials: int = 12
    epochs: int = 8
    seeds: int = 3
    threads: int = 1
    test_origins: int = 0  # rolling-origin refits through the test period (0: one per quarter of test days)
    label: str = ""  # said on the page when the configuration is smaller than intended

    def data_spec(self, dataset: str) -> str:
        return f"sample:{dataset}" + (f",start={self.start}" if self.start else "")


# ----------------------------------------------------------------------------------------------- measuring
def tune(cfg: Config, dataset: str, target: str, state_dir: Path):
    """The manifest's study on one series and target, run by the embedded engine one trial at a time."""
    from hpo_lib import engine

    options = engine.TuneOptions(
        overrides={"data": cfg.data_spec(dataset), "target": target, "epochs": str(cfg.epochs),
                   "threads": str(cfg.threads)},
        state_dir=state_dir, max_trials=cfg.trials, parallel=1, tracking=False)
    return engine.run(ROOT / cfg.manifest if not Path(cfg.manifest).is_absolute() else cfg.manifest, options)


def measure_cell(cfg: Config, dataset: str, target: str, work: Path) -> dict[str, Any]:
    """Tune, select, retrain with ``cfg.seeds`` seeds and score on test; a JSON-ready record of what was measured."""
    from optuna.trial import TrialState

    from hpo_lib.pipeline import retrain

    started = time.perf_counter()
    study = tune(cfg, dataset, target, work / "tune")
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    cell: dict[str, Any] = {
        "dataset": dataset, "target": target, "data": cfg.data_spec(dataset), "trials": len(study.trials),
        "completed": len(complete), "pruned": states.count(TrialState.PRUNED), "failed": states.count(TrialState.FAIL),
        "epochs_run": sum(t.user_attrs.get("epochs_run", 0) for t in study.trials),
    }
    if not complete:
        cell["error"] = "no trial completed"
        return cell
    winner = min(complete, key=lambda t: t.value)
    cell["winner"] = {"number": winner.number, "val_loss": winner.value, "params": winner.params}
    runs = []
    for seed in range(cfg.seeds):
        args = retrain.retrain_args(winner.user_attrs["argv"], seed=seed, output_dir="", threads=cfg.threads)
        report = retrain.retrain(args, work / f"retrain-{seed}", n_trials=len(study.trials),
                                 test_origins=cfg.test_origins)
        report["val_test_gap"] = retrain.val_test_gap("val_loss", winner.value, report["model"])
        runs.append(report)
    cell["runs"] = runs
    cell["search"] = search(cell)
    cell["wall_s"] = time.perf_counter() - started
    return cell


def search(cell: dict[str, Any]) -> dict[str, Any]:
    """SPA, Reality Check and the MCS over the cell's seeds, on the single test window and the rolling origins."""
    from hpo_lib.pipeline import retrain

    runs = cell["runs"]
    names = [f"seed {r['run']['seed']}" for r in runs]
    groups = [f"trial {cell['winner']['number']}"] * len(runs)
    out = {"single": retrain.search_aware(runs, names, groups, n_configurations=cell["trials"]), "rolling": None}
    if all("rolling" in r for r in runs):
        out["rolling"] = retrain.search_aware([r["rolling"] for r in runs], names, groups,
                                              n_configurations=cell["trials"])
    out["beats"], out["verdict"] = retrain.search_verdict(out["single"], out["rolling"])
    return out


def measure(cfg: Config, log_to=sys.stderr) -> list[dict[str, Any]]:
    cells = []
    for dataset in cfg.datasets:
        for target in cfg.targets:
            with tempfile.TemporaryDirectory(prefix=f"results-{dataset}-{target}-") as tmp:
                cell = measure_cell(cfg, dataset, target, Path(tmp))
            print(f"results_page: {dataset} {target}: {cell.get('completed')} trials completed, "
                  f"{cell.get('wall_s', 0):.0f} s", file=log_to, flush=True)
            cells.append(cell)
    return cells


# ----------------------------------------------------------------------------------------------- summarising
def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(cell: dict[str, Any]) -> dict[str, Any]:
    """Seed statistics of one cell: model test metrics (mean, sd, min, max), the bar, DM p-values, the verdict."""
    runs = cell["runs"]
    ranking = runs[0]["ranking_metric"]
    metrics = {name: [r["model"][name] for r in runs] for name in runs[0]["model"]}
    baselines = runs[0]["baselines"]  # deterministic: the same for every seed
    bar = runs[0]["bar"]  # chosen by the retrain (lowest test value of the ranking metric), not picked again here
    p_values = [r["dm"].get("p_value") for r in runs]
    model_mean = statistics.mean(metrics[ranking])
    beats_mean = model_mean < baselines[bar][ranking]
    significant = sum(1 for r in runs if r["beats_bar"] and r["dm"].get("p_value", 1.0) < SIGNIFICANCE)
    found = cell.get("search") or search(cell)
    verdict = found["verdict"]
    if not found["beats"] and not beats_mean:
        verdict = f"no: the tuned model does not beat the best baseline ({bar}) on test {ranking}; {verdict[4:]}" \
            if verdict.startswith("no: ") else f"no: the tuned model does not beat {bar} on test {ranking}; {verdict}"
    gaps = [r["val_test_gap"] for r in runs if r.get("val_test_gap") is not None]
    return {"ranking": ranking, "metrics": {k: {"mean": statistics.mean(v), "sd": _mean_sd(v)[1], "min": min(v),
                                                "max": max(v)} for k, v in metrics.items()},
            "baselines": baselines, "bar": bar, "p_values": p_values, "beats_mean": beats_mean,
            "significant": significant, "verdict": verdict, "gap": _mean_sd(gaps) if gaps else None,
            "beats": sum(r["beats_bar"] for r in runs), "search": found, "beats_baselines": found["beats"]}


# ----------------------------------------------------------------------------------------------- rendering
def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value != 0 and (abs(value) < 10 ** -(digits - 1) or abs(value) >= 10**5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _columns(target: str) -> list[str]:
    if target == "direction":
        return ["loss", "acc"]
    if target == "volatility":
        return ["qlike", "loss", "rmse", "var_mse", "dir_acc"]
    return ["loss", "rmse", "mae", "dir_acc"]


COLUMN_TITLES = {"loss": "loss", "acc": "accuracy", "dir_acc": "dir. acc.", "rmse": "RMSE", "mae": "MAE",
                 "qlike": "QLIKE", "var_mse": "MSE (variance)"}
LOSS_NAMES = {"return": "MSE on the standardised return", "direction": "cross-entropy (nats)",
              "volatility": "MSE on the standardised volatility"}


def _dm_text(dm: dict[str, Any]) -> str:
    """A p-value and which side it favours: the statistic is model minus bar, so positive means the model is worse."""
    if "p_value" not in dm:
        return f"n/a ({dm.get('error', 'not computed')})"
    side = "model better" if dm["statistic"] < 0 else "model worse" if dm["statistic"] > 0 else "equal"
    return f"{_num(dm['p_value'], 3)} ({side})"


def render_cell(cell: dict[str, Any]) -> list[str]:
    """One series x target: the table of test metrics and the lines that judge it."""
    title = f"### {cell['data']} · {cell['target']}"
    if "error" in cell:
        return [title, "", f"Not measured: {cell['error']} ({cell['trials']} trials).", ""]
    s = summarise(cell)
    cols = _columns(cell["target"])
    n = len(cell["runs"])
    lines = [title, "",
             f"Tuned: {cell['trials']} trials ({cell['completed']} completed, {cell['pruned']} stopped by medianstop, "
             f"{cell['failed']} failed); winner trial {cell['winner']['number']} with val_loss "
             f"{_num(cell['winner']['val_loss'])}, retrained on train + validation with {n} seeds. Test period "
             f"{cell['runs'][0]['test_period'][0]} .. {cell['runs'][0]['test_period'][1]} "
             f"({cell['runs'][0]['n_test']} days); loss is {LOSS_NAMES[cell['target']]}.", "",
             "| forecast | " + " | ".join(COLUMN_TITLES[c] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    cells = []
    for c in cols:
        m = s["metrics"].get(c)
        cells.append("n/a" if m is None else f"{_num(m['mean'])} ± {_num(m['sd'], 2 if c.endswith('acc') else 4)}")
    family = cell["runs"][0].get("run", {}).get("model", "model").upper()
    lines.append(f"| **tuned {family}** (mean ± sd, {n} seeds) | " + " | ".join(cells) + " |")
    for name, metrics in sorted(s["baselines"].items(), key=lambda kv: kv[1][s["ranking"]]):
        mark = " (bar)" if name == s["bar"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(_num(metrics.get(c)) for c in cols) + " |")
    p_text = ", ".join(_dm_text(r["dm"]) for r in cell["runs"])
    rank = s["metrics"][s["ranking"]]
    lines += ["",
              f"- Beats the baselines? **{s['verdict']}**. Seed spread of test {s['ranking']}: "
              f"{_num(rank['min'])} .. {_num(rank['max'])}; beats the bar in {s['beats']} of {n} seeds.",
              f"- Diebold-Mariano (HLN) p-value against {s['bar']} on per-day {s['ranking']}, per seed: {p_text}."]
    lines += inference_table(cell, s)
    if s["gap"] is not None:
        lines.append(f"- Val -> test gap of the loss (test minus the winner's val_loss): {_num(s['gap'][0])} "
                     f"± {_num(s['gap'][1])} (different periods and, after the refit, different scalers: a change of "
                     f"regime shows here as much as overfitting).")
    if cell["target"] == "direction":
        ce = s["metrics"]["loss"]["mean"]
        prior = s["baselines"].get("train_prior", {}).get("loss")
        lines.append(f"- Cross-entropy sanity: test {_num(ce)} nats against ln 2 = {_num(LN2)} (chance for two "
                     f"classes; {'below' if ce < LN2 else 'not below'} it) and {_num(prior)} for the constant "
                     f"train-prior forecast.")
    lines.append("")
    return lines


def _interval(section: dict[str, Any], key: str) -> str:
    from hpo_lib.results import render as page

    if key in section.get("intervals", {}):
        return page.interval_text(section["intervals"][key])
    return f"skipped ({section['skipped'][key]})" if key in section.get("skipped", {}) else "n/a"


def _p(section: dict[str, Any], key: str, field: str = "p_value") -> str:
    value = section.get(key)
    if isinstance(value, dict) and field in value:
        return _num(value[field], 3)
    return f"skipped ({section['skipped'][key]})" if key in section.get("skipped", {}) else "n/a"


def _search_cells(found: dict[str, Any] | None) -> tuple[str, str]:
    if not found:
        return "not run", "not run"
    spa, mcs = found["spa"], found["mcs"]
    spa_text = (f"skipped ({spa['skipped']})" if "skipped" in spa else
                f"SPA {_num(spa['spa_p'], 3)} / RC {_num(spa['reality_check_p'], 3)} ({spa['n_models']} seeds vs "
                f"{found['bar']}; {found['n_configurations']} configurations tried)")
    mcs_text = f"skipped ({mcs['skipped']})" if "skipped" in mcs else ", ".join(mcs["included"])
    return spa_text, mcs_text


def inference_table(cell: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """Every figure of the final evaluation, single test window beside the rolling origins (seed 0's run)."""
    run = cell["runs"][0]
    single, rolling = run["inference"], (run.get("rolling") or {}).get("inference")
    n_origins = (run.get("rolling") or {}).get("n_origins")
    rows: list[tuple[str, str, str]] = []
    both = (single, rolling or {"skipped": {}})
    rows.append((f"loss difference vs the bar ({run['bar']} / {(run.get('rolling') or {}).get('bar', 'n/a')}), "
                 "mean per day", *(_interval(x, "loss_diff") for x in both)))
    if cell["target"] != "volatility":
        rows += [("Sharpe ratio (long/short, 5 bp)", *(_interval(x, "sharpe") for x in both)),
                 ("hit rate (days in the market)", *(_interval(x, "hit_rate") for x in both)),
                 ("max drawdown", *(_interval(x, "max_drawdown") for x in both)),
                 ("buy-and-hold Sharpe ratio", *(_interval(x, "buy_and_hold_sharpe") for x in both)),
                 ("probabilistic Sharpe ratio (vs 0)", *(_p(x, "psr", "psr") for x in both)),
                 (f"deflated Sharpe ratio ({cell['trials']} trials)", *(_p(x, "dsr", "dsr") for x in both))]
    for name in single.get("clark_west", {}) | single.get("skipped", {}):
        if name in ("zero", "train_mean", "train_prior"):
            rows.append((f"Clark-West p vs {name} (nested)",
                         *(_p(x.get("clark_west", {}) | {"skipped": x.get("skipped", {})}, name) for x in both)))
    against = single.get("oos_r2", {}).get("against", "train_mean")
    rows.append((f"out-of-sample R² vs {against}", *(_p(x, "oos_r2", "r2") for x in both)))
    rows.append(("Pesaran-Timmermann p (direction)", *(_p(x, "pesaran_timmermann") for x in both)))
    spa_single, mcs_single = _search_cells(s["search"]["single"])
    spa_rolling, mcs_rolling = _search_cells(s["search"]["rolling"])
    rows.append(("SPA / Reality Check p over the seeds", spa_single, spa_rolling))
    rows.append(("Model Confidence Set at 10 % (winner ∪ baselines)", mcs_single, mcs_rolling))
    block = single.get("intervals", {}).get("loss_diff", {}).get("block_length")
    lines = ["", f"Final-evaluation figures (seed 0; intervals are 95 % stationary-block-bootstrap percentile "
                 f"intervals, estimate [low, high], 1000 resamples, mean block length by Politis-White, e.g. "
                 f"{_num(block, 3)} days for the loss difference; SPA and MCS use every seed):", "",
             f"| figure | single test window | rolling origins ({n_origins or 'not run'}) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    origins = (run.get("rolling") or {}).get("origins") or []
    if origins:
        lines += ["", "Rolling origins (seed 0), mean per-day " + s["ranking"] + " of the model vs the bar per block: "
                  + "; ".join(f"{o['origin']} ({o['n_test']} d) {_num(o['model_loss'])} vs {_num(o['bar_loss'])}"
                              for o in origins) + "."]
    kept = [str(r["run"].get("kept_epoch")) for r in cell["runs"]]
    lines.append(f"- Epoch kept by each seed's retrain (lowest in-sample validation loss, of "
                 f"{cell['runs'][0]['run']['epochs']} run): {', '.join(kept)}.")
    return lines


def render(cells: list[dict[str, Any]], cfg: Config, benches: list[tuple[str, str, str]], meta: dict[str, str]) -> str:
    lines = ["# Results", "",
             "<!-- generated by `python bench/results_page.py` (`make results`); do not edit by hand -->", "",
             f"Generated {meta['date']} on {meta['machine']} in {meta['wall']}. Every number below was measured by "
             "that run or read from the benchmark outputs it names; rerun `make bench results` to refresh them.", ""]
    if cfg.label:
        lines += [f"**Configuration note:** {cfg.label}", ""]
    lines += ["## Tuned models against naive baselines", "",
              f"Manifest `{cfg.manifest}` tuned by the embedded engine (its multivariate TPE sampler and Katib "
              f"median stopping rule), {cfg.trials} trials x {cfg.epochs} epochs per series and target, one trial at a "
              f"time with {cfg.threads} thread(s); the best completed trial by validation loss is retrained on train + "
              f"validation with {cfg.seeds} seeds and scored once on the untouched test split. The bar is the "
              "baseline with the lowest test value of the ranking metric (loss; QLIKE for volatility), so beating "
              "it means beating every baseline; baselines (naive, a ridge / logistic model on the same features, "
              "GARCH(1,1), GJR-GARCH, HAR-RV, EWMA) are fit on training rows only. The rolling-origin test refits "
              f"the winner's configuration ({'one origin per quarter' if not cfg.test_origins else cfg.test_origins})"
              " through the test period, each refit forecasting only its own block with the purge gap kept, and "
              "refits every baseline at each origin. Verdict rule: **beats the baselines** only if SPA (Hansen "
              "2005, studentized, stationary bootstrap) rejects at 5 % on the rolling-origin forecasts of the "
              "seeds against the best baseline; the number of configurations the search tried is named beside it "
              "and enters the deflated Sharpe ratio.", ""]
    measured = [c for c in cells if "error" not in c]
    if measured:
        lines += ["| series | target | ranking metric | tuned (mean of seeds) | best baseline | its value | "
                  "DM p (per seed) | SPA p, single window | SPA p, rolling origins | beats the baselines? |",
                  "|---|---|---|---:|---|---:|---|---:|---:|---|"]
        for cell in measured:
            s = summarise(cell)
            ps = ", ".join(_num(p, 3) for p in s["p_values"])
            spa = [(s["search"].get(k) or {}).get("spa", {}).get("spa_p") for k in ("single", "rolling")]
            lines.append(f"| {cell['data']} | {cell['target']} | {s['ranking']} | "
                         f"{_num(s['metrics'][s['ranking']]['mean'])} | {s['bar']} | "
                         f"{_num(s['baselines'][s['bar']][s['ranking']])} | {ps} | {_num(spa[0], 3)} | "
                         f"{_num(spa[1], 3)} | {s['verdict'].split(':')[0]} |")
        lines.append("")
        losers = [f"{c['data']} {c['target']}" for c in measured if not summarise(c)["beats_baselines"]]
        if losers:
            lines += [f"**Plainly: no tuned model beats the baselines on {', '.join(losers)}** by the rule above: "
                      "Hansen's SPA test of the retrained seeds against the best baseline does not reject at 5 % "
                      "on the rolling-origin forecasts. Its universe is the winner's seeds, not every configuration "
                      "the search tried (only the winner is retrained and scored on the test split); the number "
                      "tried enters the deflated Sharpe ratio.", ""]
    for cell in cells:
        lines += render_cell(cell)
    lines += ["## Benchmarks", "",
              "Outputs of `make bench` (each script's own table and headline), read from the files it wrote.", ""]
    if not benches:
        lines += ["No benchmark outputs were found: run `make bench` first.", ""]
    for name, text, when in benches:
        lines += [f"### bench/{name}.py", "", f"Output written {when}.", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def read_benches(bench_dir: Path) -> list[tuple[str, str, str]]:
    """``(name, output, when written)`` for each benchmark output ``make bench`` left in ``bench_dir``."""
    found = []
    for name in BENCHES:
        path = bench_dir / f"{name}.txt"
        text = path.read_text() if path.exists() else ""
        if text.strip():
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
            found.append((name, text, when))
    return found


def machine() -> str:
    return f"{platform.system()} {platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} cores"


# ----------------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="bench/results_page.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "RESULTS.md"), help="the page (default docs/RESULTS.md)")
    parser.add_argument("--bench-dir", default=str(ROOT / "local_outputs" / "bench"),
                        help="where `make bench` wrote its outputs (default local_outputs/bench)")
    parser.add_argument("--json", default=str(ROOT / "local_outputs" / "results" / "results.json"),
                        help="where the measurements are saved (default local_outputs/results/results.json)")
    parser.add_argument("--reuse", action="store_true", help="render from --json instead of measuring again")
    parser.add_argument("--manifest", default=defaults.manifest)
    parser.add_argument("--datasets", default=",".join(defaults.datasets))
    parser.add_argument("--targets", default=",".join(defaults.targets))
    parser.add_argument("--start", default=defaults.start, help="first date of the samples (default: all)")
    parser.add_argument("--trials", type=int, default=defaults.trials)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seeds", type=int, default=defaults.seeds)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--test-origins", type=int, default=defaults.test_origins,
                        help="rolling-origin refits through the test period (0: quarterly, 1: none)")
    parser.add_argument("--label", default="", help="a note shown on the page (say so when the run is reduced)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    started = time.perf_counter()
    json_path = Path(args.json)
    if args.reuse:
        saved = json.loads(json_path.read_text())
        cfg, cells, meta = Config(**{**saved["config"], "label": args.label or saved["config"]["label"]}), \
            saved["cells"], saved["meta"]
    else:
        cfg = Config(manifest=args.manifest, datasets=tuple(args.datasets.split(",")),
                     targets=tuple(args.targets.split(",")), start=args.start, trials=args.trials,
                     epochs=args.epochs, seeds=args.seeds, threads=args.threads, test_origins=args.test_origins,
                     label=args.label)
        cells = measure(cfg)
        meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                "wall": f"{time.perf_counter() - started:.0f} s"}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"config": asdict(cfg), "cells": cells, "meta": meta}, indent=1,
                                        default=str))
    page = render(cells, cfg, read_benches(Path(args.bench_dir)), meta)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    print(f"results_page: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
