"""The trial entrypoint: ``--name=value`` flags -> data -> model -> training -> Katib metrics lines -> files.

This is what every trial runs, as a Katib pod or as a local process of the embedded engine::

    hpo trial --model=lstm --lr=0.001 --hidden-size=64 --data=sample:sp500 --epochs=20 --output-dir=out/t1
    python -m hpo_lib.trial --model=gru ...

stdout carries only Katib StdOut lines, one per epoch (``<RFC3339> epoch=3 val_loss=... ...``) and a final one,
named in :mod:`hpo_lib.metrics`; the human summary goes to stderr. Bad input ends as one line on stderr and exit
code 2, as for every ``hpo`` command. ``--output-dir`` (default ``$HPO_OUTPUT_DIR``, which the embedded engine sets,
else ``local_outputs/trials/<model>-<trial>``) receives ``metrics.json``, ``model.pt`` (a state dict, load it with
``torch.load(..., weights_only=True)``) and ``config.json``; it is checked writable before any data is loaded.

``--check-flags`` parses and validates every flag exactly as a run would, then exits 0 without output (or 2 with
the usual line): the engine's preflight. It and ``--help`` never import torch, so they answer in a fraction of a
second.

The path from the flags to the Katib line, in six files: :mod:`hpo_lib.trial.flags` (the flags),
:func:`run` here (the steps in order), :mod:`hpo_lib.trial.assemble` (config, datasets, replicas, models),
:mod:`hpo_lib.train` (the loop; each epoch's record comes back through ``print_epoch_line``), :mod:`hpo_lib.models`
(the networks) and :mod:`hpo_lib.katib.contract` (the line's format). The data part is entered twice, through
:func:`~hpo_lib.trial.assemble.load_datasets` and :func:`hpo_lib.data.baselines.evaluate`. ``__main__.py`` is
``python -m hpo_lib.trial``. The final retrain and the benchmarks build from ``flags`` and ``assemble``, not from
:func:`run`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_lib import data, fileio, metrics
from hpo_lib.errors import DataError, run_main
from hpo_lib.trial.assemble import (
    build_model,
    build_replicas,
    configure,
    inputs_on_device,
    load_dataset,
    load_datasets,
    n_outputs,
    save_model,
    seeded_config,
    train_config,
)
from hpo_lib.trial.flags import (
    CHECK_FLAGS,
    OUTPUT_DIR_ENV,
    TrialArgs,
    check_output_dir,
    output_dir_of,
    parse_args,
    usage,
    validate,
)

if TYPE_CHECKING:  # torch and the modules built on it load only when a trial trains (not for --help, --check-flags)
    import numpy as np
    import torch

    from hpo_lib import train
    from hpo_lib.data import baselines

__all__ = [
    "CHECK_FLAGS",
    "OUTPUT_DIR_ENV",
    "TrialArgs",
    "build_model",
    "build_replicas",
    "check_output_dir",
    "configure",
    "inputs_on_device",
    "load_dataset",
    "load_datasets",
    "main",
    "n_outputs",
    "output_dir_of",
    "parse_args",
    "run",
    "save_model",
    "seeded_config",
    "train_config",
    "usage",
    "validate",
    "warm_up",
]


def run(args: TrialArgs, *, out=None, err=None) -> dict[str, Any]:
    """Run one trial; returns the final metrics record (also written to ``metrics.json``).

    With ``--folds``/``--seeds`` above 1 the trial trains one replica per fold and seed and reports their mean;
    the saved model and the test and Diebold-Mariano figures are the last fold's first seed (the usual split).
    """
    import numpy as np

    from hpo_lib import models, train
    from hpo_lib.data import baselines, scoring
    from hpo_lib.katib import contract

    out, err = out or sys.stdout, err or sys.stderr
    output_dir = check_output_dir(output_dir_of(args))  # a folder it cannot write fails now, not after training
    cfg = configure(args)
    datasets = load_datasets(args)
    parts = ("val", "test") if args.eval_test else ("val",)
    fold_results = [baselines.evaluate(ds, parts) for ds in datasets]
    warn_skipped_baselines(fold_results, err)
    ds, results = datasets[-1], fold_results[-1]
    base, best_base = results.report, results.best
    # the bar: each fold's best naive baseline (chosen on that fold's validation block), averaged over folds
    bar_val = {
        key: float(np.mean([r.report[r.best]["val"][key] for r in fold_results])) for key in base[best_base]["val"]
    }

    replicas, built = build_replicas(args, datasets)
    primary = (args.folds - 1) * args.seeds  # the last fold's first seed: the usual split and --seed
    model = built[primary]
    static = {"n_params": models.count_params(model), "model_size_mb": models.model_size_mb(model)}
    static.update({metrics.BASELINE_VAL + k: v for k, v in bar_val.items()})

    def print_epoch_line(record: dict[str, float]) -> None:
        print(contract.format_metrics_line({**record, **static}), file=out, flush=True)

    result = train.fit_replicas(built, replicas, cfg, reporter=print_epoch_line, pack=args.pack, primary=primary)
    model.load_state_dict(result.state_dict)

    final: dict[str, Any] = {
        "model": args.model,
        "data": args.data,
        "target": args.target,
        "horizon": args.horizon,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_time_s": result.train_time_s,
        **static,
        "val": result.best_val,
        "best_baseline": best_base,
        "baselines": base,
        "baseline_params": results.fitted,
        "baseline_warnings": results.skipped,
        "splits": {k: [str(v[0].date()), str(v[-1].date()), len(v)] for k, v in ds.dates.items()},
        "device": str(result.device),
        "params": asdict(args),
    }
    if len(replicas) > 1:
        final["robust"] = robust_summary(args, datasets, fold_results, result, bar_val)
    forecasts = {
        part: train.to_forecast(ds, train.predict(model, inputs_on_device(ds, part, result.device)))
        for part in parts
        if part == "test" or ds.target == "volatility"
    }
    if args.eval_test:
        final["test"] = scoring.score(ds, "test", forecasts["test"])
    if ds.target == "volatility":
        final["dm"] = {
            part: dm_against_baseline(ds, part, forecasts[part], results.forecasts[best_base][part]) for part in parts
        }
    values = (result.best_epoch, final["val"]["loss"], bar_val["loss"], result.epochs_run, result.train_time_s)
    summary: dict[str, Any] = dict(zip(metrics.FINAL, values))
    if len(replicas) > 1:  # each replica's validation loss at the best (mean) epoch
        for r in result.replicas:
            summary[f"val_loss_fold{r.fold + 1}_seed{r.seed}"] = r.history[result.best_epoch - 1][metrics.OBJECTIVE]
    print(contract.format_metrics_line(summary, prefix=metrics.FINAL_PREFIX), file=out, flush=True)
    print(comparison(final), file=err, flush=True)
    write_outputs(output_dir, final, model, args)
    return final


def warn_skipped_baselines(fold_results: Sequence[baselines.BaselineResults], err: Any) -> None:
    """One warning line on ``err`` per baseline that could not be fitted, and why (each reason once)."""
    warned = set()
    for k, res in enumerate(fold_results):
        for name, reason in res.skipped.items():
            if (name, reason) not in warned:
                where = f" (fold {k + 1})" if len(fold_results) > 1 else ""
                print(f"hpo: warning: baseline {name} skipped{where}: {reason}", file=err, flush=True)
                warned.add((name, reason))


def robust_summary(
    args: TrialArgs,
    datasets: Sequence[data.Dataset],
    fold_results: Sequence[baselines.BaselineResults],
    result: train.FitResult,
    bar_val: dict[str, float],
) -> dict[str, Any]:
    """``metrics.json``'s record of a several-replica trial: the folds, their bars and every replica's curve."""
    return {
        "folds": args.folds,
        "seeds": args.seeds,
        "fold_train": args.fold_train,
        "embargo": args.embargo,
        "baseline_val": bar_val,
        "fold_splits": [
            {
                "fold": k + 1,
                "train": [str(ds.dates["train"][0].date()), str(ds.dates["train"][-1].date()), len(ds.dates["train"])],
                "val": [str(ds.dates["val"][0].date()), str(ds.dates["val"][-1].date()), len(ds.dates["val"])],
                "best_baseline": res.best,
                "baseline_val_loss": res.report[res.best]["val"]["loss"],
            }
            for k, (ds, res) in enumerate(zip(datasets, fold_results))
        ],
        "replicas": [{"fold": r.fold + 1, "seed": r.seed, "history": r.history} for r in result.replicas],
    }


def dm_against_baseline(
    ds: data.Dataset, part: str, model_forecast: np.ndarray, baseline_forecast: np.ndarray
) -> dict[str, Any]:
    """Diebold-Mariano on per-day QLIKE, model minus baseline (a negative statistic favours the model).

    A split too short for the test gives ``{"error": reason}`` instead: the trial still reports everything else.
    """
    from hpo_lib.data import scoring

    try:
        result = scoring.diebold_mariano(
            scoring.sample_losses(ds, part, model_forecast),
            scoring.sample_losses(ds, part, baseline_forecast),
            ds.horizon,
        )
    except DataError as exc:
        return {"loss": "qlike", "error": str(exc)}
    return {"loss": "qlike", **result.as_dict()}


def comparison(final: dict[str, Any]) -> str:
    """One human line: the model against its best baseline, on validation (and test when scored).

    The ranking metric is ``loss``, or ``qlike`` for volatility (with the Diebold-Mariano p-value on its daily values).
    """
    from hpo_lib.data import scoring

    name = final["best_baseline"]
    ranking = scoring.ranking_metric(final["val"])
    robust = final.get("robust")
    chunks = []
    for part in ("val", "test"):
        if part not in final:
            continue
        mine, theirs = final[part], final["baselines"][name][part]
        if part == "val" and robust:  # means over folds x seeds against the mean of each fold's best baseline
            theirs = robust["baseline_val"]
        shown = [f"loss {mine['loss']:.4f} vs {theirs['loss']:.4f} ({_pct(mine['loss'], theirs['loss'])})"]
        if ranking == "qlike":
            dm = final.get("dm", {}).get(part, {})
            p_value = f", DM p={dm['p_value']:.3g}" if "p_value" in dm else ""
            shown.insert(0, f"qlike {mine['qlike']:.4f} vs {theirs['qlike']:.4f}{p_value}")
            shown.append(f"var_mse {mine['var_mse']:.3e} vs {theirs['var_mse']:.3e}")
        for metric in ("rmse", "mae"):
            if metric in mine:
                shown.append(f"{metric} {mine[metric]:.5f} vs {theirs[metric]:.5f}")
        for metric in ("acc", "dir_acc"):
            if metric in mine:
                shown.append(f"{metric} {mine[metric]:.1%} vs {theirs[metric]:.1%}")
        chunks.append(f"{'validation' if part == 'val' else 'test'}: " + ", ".join(shown))
    bar = robust["baseline_val"] if robust else final["baselines"][name]["val"]
    verdict = "beats" if final["val"][ranking] < bar[ranking] else "does not beat"
    kind, measure = ("volatility", "QLIKE") if ranking == "qlike" else ("naive", "loss")
    if robust:
        k, n = robust["folds"], robust["seeds"]
        where = f"{k} fold{'s' * (k > 1)} x {n} seed{'s' * (n > 1)}, mean"
        return (
            f"{final['model']} {verdict} each fold's best {kind} baseline on validation {measure} ({where}); "
            + "; ".join(chunks)
        )
    return f"{final['model']} {verdict} the best {kind} baseline ({name}) on validation {measure}; " + "; ".join(chunks)


def _pct(mine: float, theirs: float) -> str:
    return f"{(mine - theirs) / theirs:+.2%}" if theirs else "n/a"


def write_outputs(directory: Path, final: dict[str, Any], model: torch.nn.Module, args: TrialArgs) -> None:
    save_model(model, directory, args)
    fileio.write_text(directory / "metrics.json", json.dumps(final, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    """``hpo trial`` and ``python -m hpo_lib.trial``: bad input is one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main(lambda: _main(argv))


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    check_only = CHECK_FLAGS in argv
    args = parse_args([a for a in argv if a != CHECK_FLAGS])
    if check_only:
        return 0
    run(args)
    return 0


def warm_up() -> None:
    """What a warm trial worker (:mod:`hpo_lib.engine.warm`) imports once, before it forks trials: everything this
    module imports lazily, and ``torch._dynamo``, which the first optimizer would import (about a second). Importing
    starts neither CUDA nor torch's thread pools; both start in the trial, after ``--threads`` is set."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401

    from hpo_lib import models, train  # noqa: F401
    from hpo_lib.data import baselines, scoring  # noqa: F401
    from hpo_lib.katib import contract  # noqa: F401

    del torch
