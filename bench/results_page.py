"""Generate ``docs/RESULTS.md`` from measurements: tuned models against every naive baseline, and the benchmarks.

For each bundled series (``sample:sp500``, ``sample:nasdaq``) and target (return, direction, volatility):

1. tune: the manifest's study on this machine with the embedded engine (:func:`hpo_lib.engine.run`: its sampler,
   Katib's median stopping rule, trials as processes), a small budget;
2. select: the trial with the best validation objective among the completed ones;
3. retrain: that trial's flags on train + validation with several seeds, then one look at the test split each
   (:func:`hpo_lib.pipeline.retrain.retrain`): test metrics beside every baseline's, a Diebold-Mariano test against the
   baseline with the lowest test value of the ranking metric, and the val -> test gap;
4. write the page, with the benchmark outputs ``make bench`` left in ``--bench-dir`` and the machine and date.

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
BENCHES = ("early_stopping", "samplers", "trial_loop", "engine_overhead", "gpu_throughput")
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
        report = retrain.retrain(args, work / f"retrain-{seed}")
        report["val_test_gap"] = retrain.val_test_gap("val_loss", winner.value, report["model"])
        runs.append(report)
    cell["runs"] = runs
    cell["wall_s"] = time.perf_counter() - started
    return cell


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
    if not beats_mean:
        verdict = f"no: the tuned model does not beat the best baseline ({bar}) on test {ranking}"
    elif significant == 0:
        verdict = f"no: lower mean test {ranking} than {bar}, but not significantly (DM p >= {SIGNIFICANCE} every seed)"
    else:
        verdict = (f"yes in {significant} of {len(runs)} seeds: lower test {ranking} than {bar} "
                   f"with DM p < {SIGNIFICANCE}")
    gaps = [r["val_test_gap"] for r in runs if r.get("val_test_gap") is not None]
    return {"ranking": ranking, "metrics": {k: {"mean": statistics.mean(v), "sd": _mean_sd(v)[1], "min": min(v),
                                                "max": max(v)} for k, v in metrics.items()},
            "baselines": baselines, "bar": bar, "p_values": p_values, "beats_mean": beats_mean,
            "significant": significant, "verdict": verdict, "gap": _mean_sd(gaps) if gaps else None,
            "beats": sum(r["beats_bar"] for r in runs)}


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
              "it means beating every baseline; baselines use training-window constants only.", ""]
    measured = [c for c in cells if "error" not in c]
    if measured:
        lines += ["| series | target | ranking metric | tuned (mean of seeds) | best baseline | its value | "
                  "DM p (per seed) | beats the baselines? |", "|---|---|---|---:|---|---:|---|---|"]
        for cell in measured:
            s = summarise(cell)
            ps = ", ".join(_num(p, 3) for p in s["p_values"])
            lines.append(f"| {cell['data']} | {cell['target']} | {s['ranking']} | "
                         f"{_num(s['metrics'][s['ranking']]['mean'])} | {s['bar']} | "
                         f"{_num(s['baselines'][s['bar']][s['ranking']])} | {ps} | {s['verdict'].split(':')[0]} |")
        lines.append("")
        losers = [f"{c['data']} {c['target']}" for c in measured if not summarise(c)["significant"]]
        if losers:
            lines += [f"**Plainly: no tuned model significantly beats the naive baselines on {', '.join(losers)}.** "
                      "Where the mean is lower but the Diebold-Mariano test does not reject equal accuracy, the "
                      "difference is within what the test days' noise produces.", ""]
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
                     epochs=args.epochs, seeds=args.seeds, threads=args.threads, label=args.label)
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
