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
second; the flag choices below are spelled out for that reason, and tests/test_trial.py checks them against
:mod:`hpo_lib.models` and :mod:`hpo_lib.train`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_lib import data, metrics
from hpo_lib.data import FOLD_TRAIN, TARGETS
from hpo_lib.errors import ConfigError, DataError, exit_now, run_main

if TYPE_CHECKING:  # torch and the modules built on it load only when a trial trains (not for --help, --check-flags)
    import numpy as np
    import torch

    from hpo_lib import train
    from hpo_lib.data import baselines

OUTPUT_DIR_ENV = "HPO_OUTPUT_DIR"  # the default of --output-dir: the embedded engine sets it for every trial
# the names of hpo_lib.models.MODELS and hpo_lib.train's choices, spelled out so that parsing never imports torch
MODEL_NAMES = ("mlp", "lstm", "gru", "cnn-lstm")
PACK = ("auto", "on", "off")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step", "exponential")
LOSSES = ("auto", "mse", "mae", "huber", "ce", "focal")


def _flag(default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class TrialArgs:
    # data
    data: str = _flag(
        "sample:sp500",
        "data spec: yahoo:SPY,QQQ?start=2010-01-01&end=2024-12-31, sample:sp500, sample:nasdaq or file:PATH",
    )
    target: str = _flag("return", "what to forecast", choices=TARGETS)
    horizon: int = _flag(1, "forecast horizon in trading days", min=1, max=60)
    seq_len: int = _flag(60, "input window length (trading days)", min=2, max=512)
    split_window: int = _flag(
        90,
        "longest window any trial uses: fixes the splits and purge gap so trials "
        "with different --seq-len are scored on the same days",
        min=2,
        max=512,
    )
    val_frac: float = _flag(0.15, "fraction of rows for validation", gt=0, lt=1)
    test_frac: float = _flag(0.15, "fraction of rows held out for the final test", gt=0, lt=1)
    cache_dir: str = _flag("", "yahoo Parquet cache folder (default $HPO_CACHE_DIR or ~/.cache/katib-hpo)")
    # robust objective: walk-forward folds x seeds, one model each, reported as their mean
    folds: int = _flag(
        1, "walk-forward folds of the tuning period (the last validates on the usual split)", min=1, max=64
    )
    seeds: int = _flag(
        1, "seeds per fold: --seed, --seed+1, ...; val_loss is the mean over folds x seeds", min=1, max=256
    )
    fold_train: str = _flag(
        "expanding",
        "each fold trains from the first row (expanding) or on a fixed length (rolling)",
        choices=FOLD_TRAIN,
    )
    embargo: int = _flag(0, "rows left between one fold's validation block and the next one's", min=0, max=100_000)
    pack: str = _flag(
        "auto",
        "train the replicas as one packed model where the family packs (auto, on) or one by one (off)",
        choices=PACK,
    )
    # model
    model: str = _flag("lstm", "model family", choices=MODEL_NAMES)
    hidden_size: int = _flag(64, "recurrent hidden size (lstm, gru) or first layer width (mlp)", min=1, max=4096)
    num_layers: int = _flag(2, "recurrent layers (lstm, gru) or hidden layers (mlp)", min=1, max=16)
    dropout: float = _flag(0.1, "dropout probability", min=0, lt=1)
    bidirectional: bool = _flag(False, "bidirectional recurrent layers (lstm, gru, cnn-lstm)")
    attention: bool = _flag(False, "attention pooling over time instead of the last step (lstm, gru)")
    width_decay: float = _flag(0.5, "each MLP layer's width as a fraction of the previous one", gt=0, max=1)
    cnn_filters: int = _flag(64, "convolution filters (cnn-lstm)", min=1, max=4096)
    kernel_size: int = _flag(3, "convolution kernel size (cnn-lstm)", min=1, max=64)
    cnn_layers: int = _flag(2, "convolution layers (cnn-lstm)", min=1, max=8)
    max_pool: bool = _flag(False, "halve the time axis after each convolution (cnn-lstm)")
    lstm_hidden: int = _flag(128, "LSTM hidden size after the convolutions (cnn-lstm)", min=1, max=4096)
    lstm_layers: int = _flag(1, "LSTM layers after the convolutions (cnn-lstm)", min=1, max=8)
    attention_heads: int = _flag(0, "self-attention heads over LSTM outputs, 0 = off (cnn-lstm)", min=0, max=64)
    # training
    epochs: int = _flag(30, "maximum epochs", min=1, max=10_000)
    batch_size: int = _flag(64, "training batch size", min=1, max=65_536)
    lr: float = _flag(1e-3, "learning rate", gt=0, max=10)
    weight_decay: float = _flag(1e-5, "weight decay", min=0, max=1)
    optimizer: str = _flag("adamw", "optimizer", choices=OPTIMIZERS)
    scheduler: str = _flag("none", "learning-rate schedule", choices=SCHEDULERS)
    warmup_epochs: int = _flag(0, "linear warmup epochs", min=0, max=1000)
    loss: str = _flag(
        "auto",
        "training loss: mse, mae, huber (regression), ce, focal (direction); auto = mse or ce",
        choices=LOSSES,
    )
    focal_alpha: float = _flag(0.5, "focal loss weight of the up class", gt=0, lt=1)
    focal_gamma: float = _flag(2.0, "focal loss focusing exponent", min=0, max=10)
    grad_clip: float = _flag(1.0, "max gradient norm, 0 = off", min=0)
    patience: int = _flag(10, "early-stopping patience in epochs", min=1, max=10_000)
    seed: int = _flag(0, "random seed", min=0)
    device: str = _flag("auto", "auto, cpu or cuda[:N]")
    threads: int = _flag(0, "CPU threads for torch, 0 = torch's default", min=0, max=1024)
    # outputs
    output_dir: str = _flag(
        "",
        f"folder for metrics.json, model.pt and config.json (default ${OUTPUT_DIR_ENV}, else local_outputs/trials/...)",
    )
    eval_test: bool = _flag(False, "also score the held-out test split (for final retrains; tuning never should)")


# ----------------------------------------------------------------------------------------------- flags
def usage() -> str:
    lines = [
        "usage: hpo trial [--name=value ...] [--check-flags]",
        "",
        "Train one model and print Katib metrics lines. --check-flags validates the flags and exits (0: all valid).",
        "",
    ]
    for f in fields(TrialArgs):
        allowed = _allowed(f.metadata)
        extra = f" [{allowed}]" if allowed else ""
        lines.append(f"  --{f.name.replace('_', '-'):<18} {f.metadata['help']}{extra} (default: {f.default!r})")
    return "\n".join(lines)


def _allowed(meta: Any) -> str:
    """A flag's accepted values in words: ``one of a, b``, ``1 <= x <= 60``, ``0 < x < 1``, ``x >= 0``."""
    if "choices" in meta:
        return "one of " + ", ".join(meta["choices"])
    low = f"{meta['min']} <= " if "min" in meta else f"{meta['gt']} < " if "gt" in meta else ""
    high = f" <= {meta['max']}" if "max" in meta else f" < {meta['lt']}" if "lt" in meta else ""
    if low and high:
        return f"{low}x{high}"
    if low:
        return "x " + (">= " if "min" in meta else "> ") + str(meta.get("min", meta.get("gt")))
    return f"x{high}" if high else ""


def parse_args(argv: Sequence[str]) -> TrialArgs:
    """``--name=value`` / ``--name value`` / ``--flag`` (booleans); ``-`` and ``_`` are the same in names."""
    known = {f.name: f for f in fields(TrialArgs)}
    values: dict[str, Any] = {}
    items = list(argv)
    while items:
        item = items.pop(0)
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}; flags look like --name=value (see hpo trial --help)")
        name, eq, raw = item[2:].partition("=")
        key = name.replace("-", "_")
        if key not in known:
            raise ConfigError(f"unknown flag --{name} (see hpo trial --help)")
        spec = known[key]
        if not eq:
            if spec.type in (bool, "bool"):
                raw = "true"
            elif items and not items[0].startswith("--"):
                raw = items.pop(0)
            else:
                raise ConfigError(f"flag --{name} needs a value")
        values[key] = _convert(name, spec.type, raw)
    args = TrialArgs(**values)
    validate(args)
    return args


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"--{name} expects true or false, got {raw!r}")
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"--{name} expects {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"--{name} must be a finite number, got {raw!r}")
    return value


def validate(args: TrialArgs) -> None:
    """Range and choice checks from the flag metadata, then the few rules that involve two flags."""
    for f in fields(TrialArgs):
        value, meta, flag = getattr(args, f.name), f.metadata, "--" + f.name.replace("_", "-")
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"{flag} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"{flag} must be at least {meta['min']}, got {value}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"{flag} must be at most {meta['max']}, got {value}")
        if "gt" in meta and value <= meta["gt"]:
            raise ConfigError(f"{flag} must be greater than {meta['gt']}, got {value}")
        if "lt" in meta and value >= meta["lt"]:
            raise ConfigError(f"{flag} must be less than {meta['lt']}, got {value}")
    if args.seq_len > args.split_window:
        raise ConfigError(f"--seq-len={args.seq_len} exceeds --split-window={args.split_window}")
    if args.val_frac + args.test_frac >= 1:
        raise ConfigError(f"--val-frac + --test-frac must be below 1, got {args.val_frac + args.test_frac}")
    data.parse_spec(args.data)


def train_config(args: TrialArgs) -> train.TrainConfig:
    from hpo_lib import train

    loss = args.loss if args.loss != "auto" else ("ce" if args.target == "direction" else "mse")
    names = {f.name for f in fields(train.TrainConfig)} - {"loss"}
    return train.TrainConfig(loss=loss, **{k: getattr(args, k) for k in names})


# ----------------------------------------------------------------------------------------------- run
def setup(args: TrialArgs) -> train.TrainConfig:
    """Threads, seed and the training config; a loss that does not fit the target is refused before any data load."""
    import torch

    from hpo_lib import train

    if args.threads:
        torch.set_num_threads(args.threads)
    train.seed_everything(args.seed)  # the model's initial weights; fit() reseeds for the loop's own stream
    cfg = train_config(args)
    train.make_loss(cfg, args.target == "direction")
    return cfg


def _prepare_kwargs(args: TrialArgs) -> dict[str, Any]:
    """The trial's flags as :func:`hpo_lib.data.prepare`'s arguments: target, horizon, window and split."""
    return {
        "target": args.target,
        "horizon": args.horizon,
        "window": args.seq_len,
        "split_window": args.split_window,
        "val_frac": args.val_frac,
        "test_frac": args.test_frac,
    }


def _prices(args: TrialArgs, prices: data.Prices | None) -> data.Prices:
    return prices if prices is not None else data.load_prices(args.data, cache_dir=args.cache_dir or None)


def load_dataset(args: TrialArgs, *, prices: data.Prices | None = None, refit: bool = False) -> data.Dataset:
    """The trial's prices (loaded unless given), features, target and chronological splits (``refit``: see
    :func:`hpo_lib.data.prepare`)."""
    return data.prepare(_prices(args, prices), **_prepare_kwargs(args), refit=refit)


def load_datasets(args: TrialArgs, *, prices: data.Prices | None = None) -> list[data.Dataset]:
    """One dataset per walk-forward fold (:func:`hpo_lib.data.prepare_folds`), oldest first; the last is
    :func:`load_dataset`'s. A volatility fold must hold a GARCH fit's training returns."""
    from hpo_lib.data import baselines

    return data.prepare_folds(
        _prices(args, prices),
        folds=args.folds,
        embargo=args.embargo,
        fold_train=args.fold_train,
        min_train_rows=baselines.GARCH_MIN_OBS if args.target == "volatility" else 0,
        **_prepare_kwargs(args),
    )


def build_replicas(
    args: TrialArgs, datasets: Sequence[data.Dataset]
) -> tuple[list[train.Replica], list[torch.nn.Module]]:
    """Fold-major replicas (fold k, seed ``args.seed + s``) and their models, each initialised under its own seed as a
    lone trial with that seed would be."""
    from hpo_lib import train

    replicas = [
        train.Replica(fold=k, seed=args.seed + s, ds=ds) for k, ds in enumerate(datasets) for s in range(args.seeds)
    ]
    built = []
    for r in replicas:
        train.seed_everything(r.seed)
        built.append(build_model(args, r.ds))
    return replicas, built


def n_outputs(ds: data.Dataset) -> int:
    """Two logits for the direction target, one value for the others."""
    return 2 if ds.is_classification else 1


def build_model(args: TrialArgs, ds: data.Dataset) -> torch.nn.Module:
    from hpo_lib import models

    return models.build_model(
        args.model, n_features=ds.n_features, window=args.seq_len, n_outputs=n_outputs(ds), params=asdict(args)
    )


def save_model(model: torch.nn.Module, directory: Path, args: TrialArgs) -> None:
    """``model.pt`` (a CPU state dict: load it with ``torch.load(..., weights_only=True)``) and ``config.json``."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(asdict(args), indent=2))
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, directory / "model.pt")


def split_x(ds: data.Dataset, model: torch.nn.Module, part: str) -> torch.Tensor:
    """A split's input windows on the model's device."""
    import torch

    return torch.from_numpy(ds.x[part]).to(next(model.parameters()).device)


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
    cfg = setup(args)
    datasets = load_datasets(args)
    parts = ("val", "test") if args.eval_test else ("val",)
    fold_results = [baselines.evaluate(ds, parts) for ds in datasets]
    warned = set()
    for k, res in enumerate(fold_results):
        for name, reason in res.skipped.items():
            if (name, reason) not in warned:
                where = f" (fold {k + 1})" if args.folds > 1 else ""
                print(f"hpo: warning: baseline {name} skipped{where}: {reason}", file=err, flush=True)
                warned.add((name, reason))
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

    def report(record: dict[str, float]) -> None:
        print(contract.format_metrics_line({**record, **static}), file=out, flush=True)

    result = train.fit_replicas(built, replicas, cfg, reporter=report, pack=args.pack, primary=primary)
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
        "val": {
            k.removeprefix(metrics.VAL): v
            for k, v in result.history[result.best_epoch - 1].items()
            if k.startswith(metrics.VAL)
        },
        "best_baseline": best_base,
        "baselines": base,
        "baseline_params": results.fitted,
        "baseline_warnings": results.skipped,
        "splits": {k: [str(v[0].date()), str(v[-1].date()), len(v)] for k, v in ds.dates.items()},
        "device": str(train.select_device(cfg.device)),
        "params": asdict(args),
    }
    if len(replicas) > 1:
        final["robust"] = robust_summary(args, datasets, fold_results, result, bar_val)
    forecasts = {
        part: train.to_forecast(ds, train.predict(model, split_x(ds, model, part)))
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


def _default_output_dir(args: TrialArgs) -> str:
    trial = os.environ.get("KATIB_TRIAL_NAME") or time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("local_outputs", "trials", f"{args.model}-{trial}")


def output_dir_of(args: TrialArgs) -> Path:
    """``--output-dir``, else ``$HPO_OUTPUT_DIR``, else ``local_outputs/trials/<model>-<trial>``."""
    return Path(args.output_dir or os.environ.get(OUTPUT_DIR_ENV) or _default_output_dir(args))


def check_output_dir(directory: Path) -> Path:
    """Refuse, before any data is loaded, an output folder the trial could not create or write; creates nothing.

    The folder must be a folder (or not exist yet), and it, or the nearest folder above it that exists, must be
    writable and searchable by this user (``os.access``: a read-only file system counts as unwritable).
    """
    where = f"output folder {directory}"
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{where} is a file, not a folder: give a folder", settings=("output_dir",))
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{where} cannot be created: {existing} is a file", settings=("output_dir",))
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "cannot be written" if existing == directory.absolute() else f"cannot be created in {existing}"
        raise ConfigError(
            f"{where} {what} (permission denied or a read-only file system): give a folder this user may write",
            settings=("output_dir",),
        )
    return directory


def write_outputs(directory: Path, final: dict[str, Any], model: torch.nn.Module, args: TrialArgs) -> None:
    save_model(model, directory, args)
    (directory / "metrics.json").write_text(json.dumps(final, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    """``hpo trial`` and ``python -m hpo_lib.trial``: bad input is one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main(lambda: _main(argv))


CHECK_FLAGS = "--check-flags"  # parse and validate every flag, then exit: the engine's preflight


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


if __name__ == "__main__":
    exit_now(main())  # no interpreter teardown: the engine frees the trial's slot as soon as its last line is out
