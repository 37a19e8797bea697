"""The trial's flags: one typed dataclass, its parser and its checks; importable without torch.

``TrialArgs`` is the one place a knob of ``hpo trial`` is defined: its default, its help line and its accepted range
or choices (the lists shared with the loop and the registry live in :mod:`hpo_lib.trial_contract`). ``--help``
(:func:`usage`) and ``--check-flags`` (:func:`parse_args`) need nothing else, so they answer without importing
torch. :func:`output_dir_of` and :func:`check_output_dir` say where the trial writes, and refuse an unusable folder
before any data is loaded.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hpo_lib import data
from hpo_lib.data import FOLD_TRAIN, TARGETS
from hpo_lib.errors import ConfigError
from hpo_lib.trial_contract import CHECK_FLAGS, LOSSES, MODEL_NAMES, OPTIMIZERS, OUTPUT_DIR_ENV, PACK, SCHEDULERS

__all__ = [
    "CHECK_FLAGS",
    "OUTPUT_DIR_ENV",
    "TrialArgs",
    "check_output_dir",
    "output_dir_of",
    "parse_args",
    "usage",
    "validate",
]


def _flag(default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class TrialArgs:
    """Every flag of ``hpo trial`` (``--seq-len`` is ``seq_len``): its default, help line and accepted values."""

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


# ----------------------------------------------------------------------------------------------- parsing
def usage() -> str:
    lines = [
        f"usage: hpo trial [--name=value ...] [{CHECK_FLAGS}]",
        "",
        f"Train one model and print Katib metrics lines. {CHECK_FLAGS} validates the flags and exits (0: all valid).",
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


# ----------------------------------------------------------------------------------------------- output folder
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
