"""A trial's building blocks from its flags: the training config, the datasets, the replicas and their models, the
saved files. The trial (:func:`hpo_lib.trial.run`), the final retrain and the benchmarks all build from these.

torch loads inside the functions, not at import: ``hpo trial --help`` and ``--check-flags`` import this package and
must answer without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_lib import data, fileio
from hpo_lib.errors import redact_value
from hpo_lib.trial.flags import TrialArgs

if TYPE_CHECKING:
    import torch

    from hpo_lib import train


# ----------------------------------------------------------------------------------------------- training config
def train_config(args: TrialArgs) -> train.TrainConfig:
    """The loop's settings from the flags, ``--loss=auto`` resolved for the target (ce for direction, else mse)."""
    from hpo_lib import train

    loss = args.loss if args.loss != "auto" else ("ce" if args.target == "direction" else "mse")
    names = {f.name for f in fields(train.TrainConfig)} - {"loss"}
    return train.TrainConfig(loss=loss, **{k: getattr(args, k) for k in names})


def configure(args: TrialArgs) -> train.TrainConfig:
    """``--threads`` applied and :func:`train_config`; a loss that does not fit the target is refused here, before
    any data load."""
    import torch

    from hpo_lib import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = train_config(args)
    train.make_loss(cfg, args.target == "direction")
    return cfg


def seeded_config(args: TrialArgs) -> train.TrainConfig:
    """:func:`configure`, then torch and NumPy seeded with ``--seed``: the initial weights of the one model built
    next with :func:`build_model` (the retrain and the benchmarks build that way; the trial builds its replicas with
    :func:`build_replicas`, which seeds each one)."""
    from hpo_lib import train

    cfg = configure(args)
    train.seed_everything(args.seed)
    return cfg


# ----------------------------------------------------------------------------------------------- data
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


def inputs_on_device(ds: data.Dataset, part: str, device: torch.device) -> torch.Tensor:
    """A split's input windows as a tensor on ``device`` (:attr:`hpo_lib.train.FitResult.device`)."""
    import torch

    return torch.from_numpy(ds.x[part]).to(device)


# ----------------------------------------------------------------------------------------------- models
def n_outputs(ds: data.Dataset) -> int:
    """Two logits for the direction target, one value for the others."""
    return 2 if ds.is_classification else 1


def build_model(args: TrialArgs, ds: data.Dataset) -> torch.nn.Module:
    """The ``--model`` family with the flags it reads, shaped for ``ds``; its weights come from the global RNG."""
    from hpo_lib import models

    return models.build_model(
        args.model, n_features=ds.n_features, window=args.seq_len, n_outputs=n_outputs(ds), params=asdict(args)
    )


def build_replicas(
    args: TrialArgs, datasets: Sequence[data.Dataset]
) -> tuple[list[train.Replica], list[torch.nn.Module]]:
    """Fold-major replicas (fold k, seed ``args.seed + s``) and their models, each initialised under its own seed, as
    a lone trial with that seed would be: the one place a trial's weights are seeded."""
    from hpo_lib import train

    replicas = [
        train.Replica(fold=k, seed=args.seed + s, ds=ds) for k, ds in enumerate(datasets) for s in range(args.seeds)
    ]
    built = []
    for r in replicas:
        train.seed_everything(r.seed)
        built.append(build_model(args, r.ds))
    return replicas, built


def save_model(model: torch.nn.Module, directory: Path, args: TrialArgs) -> None:
    """``model.pt`` (a CPU state dict: load it with ``torch.load(..., weights_only=True)``) and ``config.json``."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    stored = {k: redact_value(k, v) if isinstance(v, str) else v for k, v in asdict(args).items()}  # no secret
    fileio.write_text(directory / "config.json", json.dumps(stored, indent=2))
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, directory / "model.pt")
