"""The training loop. It knows nothing of Katib or Optuna: each epoch's metrics go to a reporter callback.

Pure helpers first (device, learning rate as a function of the epoch, losses, prediction), then :func:`fit`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpo_lib.data import Dataset
from hpo_lib.data.scoring import score
from hpo_lib.errors import ConfigError, TrainingError
from hpo_lib.metrics import VAL

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step", "exponential")
REGRESSION_LOSSES = ("mse", "mae", "huber")
CLASSIFICATION_LOSSES = ("ce", "focal")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"
    scheduler: str = "none"
    warmup_epochs: int = 0  # linear warmup from lr/10 before the schedule starts
    loss: str = "mse"
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    patience: int = 10  # epochs without a better val_loss before stopping
    seed: int = 0
    device: str = "auto"
    focal_alpha: float = 0.5  # weight of the "up" class in focal loss
    focal_gamma: float = 2.0


@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    train_time_s: float
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- helpers
def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is visible")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch's and NumPy's global generators (the loop's shuffling has its own generator)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate for a 0-based epoch: linear warmup, then the schedule over the remaining epochs.

    cosine decays to 1% of ``lr`` at the last epoch; step halves every quarter of the run; exponential decays
    geometrically to 1% at the last epoch.
    """
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (0.1 + 0.9 * epoch / cfg.warmup_epochs)
    span = max(1, cfg.epochs - cfg.warmup_epochs - 1)
    progress = min(1.0, (epoch - cfg.warmup_epochs) / span)
    if cfg.scheduler == "cosine":
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
    if cfg.scheduler == "step":
        return cfg.lr * 0.5 ** min(3, int(progress * 4))
    if cfg.scheduler == "exponential":
        return cfg.lr * 0.01**progress
    return cfg.lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9, nesterov=True)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_loss(cfg: TrainConfig, classification: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Training criterion on model outputs ``(batch, n_outputs)`` and model-space targets ``(batch,)``."""
    allowed = CLASSIFICATION_LOSSES if classification else REGRESSION_LOSSES
    if cfg.loss not in allowed:
        kind = "the direction target" if classification else "regression targets"
        raise ConfigError(f"loss {cfg.loss!r} does not fit {kind}; choose one of {', '.join(allowed)}")
    if cfg.loss == "mse":
        return lambda out, y: F.mse_loss(out[:, 0], y)
    if cfg.loss == "mae":
        return lambda out, y: F.l1_loss(out[:, 0], y)
    if cfg.loss == "huber":
        return lambda out, y: F.huber_loss(out[:, 0], y, delta=1.0)  # targets are standardised: delta = 1 sd
    if cfg.loss == "ce":
        return lambda out, y: F.cross_entropy(out, y.long())

    alpha = torch.tensor([1 - cfg.focal_alpha, cfg.focal_alpha])

    def focal(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(out, dim=1).gather(1, y.long()[:, None])[:, 0]  # log P(true class)
        weight = alpha.to(out.device)[y.long()] * (1 - log_p.exp()) ** cfg.focal_gamma
        return -(weight * log_p).mean()

    return focal


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Raw outputs for every row of ``x``, in eval mode (the previous mode is restored)."""
    was_training = model.training
    model.eval()
    outputs = [model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(outputs)


def to_forecast(ds: Dataset, outputs: torch.Tensor) -> np.ndarray:
    """Model outputs -> the forecast :func:`hpo_lib.data.scoring.score` expects (original units, or P(up))."""
    out = outputs.cpu().numpy()  # host sync: once per evaluation
    if ds.is_classification:
        return torch.softmax(torch.from_numpy(out), dim=1)[:, 1].numpy()
    assert ds.target_scaler is not None  # only classification (direction) datasets have no target scaler
    return ds.target_scaler.inverse(out[:, 0])


# ----------------------------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module, ds: Dataset, cfg: TrainConfig, reporter: Callable[[dict[str, float]], Any] = lambda record: None
) -> FitResult:
    """Train on ``ds``'s train split, early-stop on validation ``loss``, keep the best weights.

    ``reporter`` receives one record per epoch: ``epoch`` (1-based), ``train_loss``, ``val_*`` metrics from
    :func:`score`, ``lr`` and cumulative ``train_time_s``. Raises TrainingError if the training loss is not finite.
    """
    seed_everything(cfg.seed)  # the loop's shuffling and dropout start from the seed whatever the model's init drew
    device = select_device(cfg.device)
    model.to(device)
    criterion = make_loss(cfg, ds.is_classification)
    optimizer = make_optimizer(model, cfg)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    # tensors move to the device once; batches are index slices, never a DataLoader
    x_train = torch.from_numpy(ds.x["train"]).to(device)
    y_train = torch.from_numpy(ds.y_scaled["train"].astype(np.float32)).to(device)
    x_val = torch.from_numpy(ds.x["val"]).to(device)
    n = len(x_train)
    generator = torch.Generator().manual_seed(cfg.seed)

    best = FitResult(
        best_epoch=0, best_val_loss=math.inf, epochs_run=0, stopped_early=False, train_time_s=0.0, state_dict={}
    )
    started = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        # phase 1: schedule
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # phase 2: one pass over the shuffled training windows (shuffling stays inside the train split)
        order = torch.randperm(n, generator=generator).to(device)
        total = torch.zeros((), device=device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            with autocast:
                out = model(x_train[idx])
            loss = criterion(out.float(), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.detach() * len(idx)
        train_loss = (total / n).item()  # host sync: once per epoch
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training loss became {train_loss} at epoch {epoch + 1} with learning rate "
                f"{cfg.lr:g}; lower the learning rate or enable gradient clipping",
                settings=("lr", "grad_clip"),
            )
        # phase 3: evaluate on validation
        with autocast:
            val_out = predict(model, x_val)
        val = score(ds, "val", to_forecast(ds, val_out))
        if not math.isfinite(val["loss"]):
            raise TrainingError(
                f"validation loss became {val['loss']} at epoch {epoch + 1} with learning rate "
                f"{cfg.lr:g}; lower the learning rate",
                settings=("lr",),
            )
        elapsed = time.perf_counter() - started
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{VAL + k: v for k, v in val.items()},
            "lr": lr,
            "train_time_s": elapsed,
        }
        best.history.append(record)
        # phase 4: keep the best weights, report, early-stop
        if val["loss"] < best.best_val_loss:
            best.best_val_loss, best.best_epoch = val["loss"], epoch + 1
            best.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best.epochs_run, best.train_time_s = epoch + 1, elapsed
        reporter(record)
        if epoch + 1 - best.best_epoch >= cfg.patience:
            best.stopped_early = True
            break
    model.load_state_dict(best.state_dict)
    return best
