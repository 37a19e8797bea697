"""The training loop. It knows nothing of Katib or Optuna: each epoch's metrics go to a reporter callback.

Pure helpers first (device, learning rate as a function of the epoch, losses, prediction), then the replicas (a
model per walk-forward fold and seed: :class:`_Solo` trains one alone, :class:`_Packed` several of the MLP as one
model), then the loop: :func:`fit_replicas` (one :func:`_train_epoch` of every unit per epoch, a :class:`_Keeper`
for the kept weights) and :func:`fit` for one model. Validation is scored with the data part's
:func:`~hpo_lib.data.scoring.score`, the same function that scores the baselines and the test split.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpo_lib import models
from hpo_lib.data import Dataset
from hpo_lib.data.scoring import score
from hpo_lib.errors import ConfigError, TrainingError
from hpo_lib.metrics import VAL, VAL_SD, VAL_WORST
from hpo_lib.trial_contract import CLASSIFICATION_LOSSES, OPTIMIZERS, PACK, REGRESSION_LOSSES

KEEP = ("mean", "each")  # fit_replicas' kept weights: each replica's at the best mean epoch, or at its own best


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
    device: torch.device  # where the replicas trained: chosen once, by fit_replicas
    best_val: dict[str, float] = field(default_factory=dict)  # validation scores at the best epoch (no val_ prefix)
    history: list[dict[str, float]] = field(default_factory=list)  # the reported (mean over replicas) records
    replicas: list[ReplicaResult] = field(default_factory=list)


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

    return _focal(cfg)


def _focal(cfg: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Focal loss on outputs ``(..., batch, 2)`` and class ids ``(..., batch)``: the mean over the batch axis."""
    alpha = torch.tensor([1 - cfg.focal_alpha, cfg.focal_alpha])

    def focal(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(out, dim=-1).gather(-1, y.long()[..., None])[..., 0]  # log P(true class)
        weight = alpha.to(out.device)[y.long()] * (1 - log_p.exp()) ** cfg.focal_gamma
        return -(weight * log_p).mean(-1)

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


# ----------------------------------------------------------------------------------------------- replicas
@dataclass(frozen=True)
class Replica:
    """One model of a trial: trained on one walk-forward fold's dataset with one seed."""

    fold: int
    seed: int
    ds: Dataset


@dataclass
class ReplicaResult:
    fold: int
    seed: int
    history: list[dict[str, float]]  # this replica's own epoch records
    state_dict: dict[str, torch.Tensor]  # its weights at the kept epoch
    best_epoch: int = 0  # the kept epoch: the trial's best (mean) one, or its own with keep="each"


def _clip_per_replica(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` for each replica of stacked parameters: each replica's own total norm, its own scale."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)  # (R, params)
    total = torch.linalg.vector_norm(norms, dim=1)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def _per_replica_loss(cfg: TrainConfig, classification: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """:func:`make_loss` on ``(R, batch, n_outputs)`` outputs: one mean per replica, shape ``(R,)``."""
    make_loss(cfg, classification)  # the same checks and message
    if cfg.loss == "mse":
        return lambda out, y: ((out[..., 0] - y) ** 2).mean(-1)
    if cfg.loss == "mae":
        return lambda out, y: (out[..., 0] - y).abs().mean(-1)
    if cfg.loss == "huber":
        return lambda out, y: F.huber_loss(out[..., 0], y, delta=1.0, reduction="none").mean(-1)
    if cfg.loss == "ce":
        return lambda out, y: (
            F.cross_entropy(out.flatten(0, 1), y.long().flatten(), reduction="none").view(y.shape).mean(-1)
        )
    return _focal(cfg)


class _Solo:
    """One replica trained alone, as :func:`fit` always did; it keeps its own global-RNG stream (dropout) so that
    replicas trained one after another in one process each see the stream they would see alone."""

    def __init__(self, model: nn.Module, replica: Replica, cfg: TrainConfig, device: torch.device) -> None:
        self.replicas, self.model, self.ds = [replica], model.to(device), replica.ds
        self.criterion = make_loss(cfg, replica.ds.is_classification)
        self.optimizer = make_optimizer(model, cfg)
        self.cfg, self.device = cfg, device
        self.x_train = torch.from_numpy(replica.ds.x["train"]).to(device)
        self.y_train = torch.from_numpy(replica.ds.y_scaled["train"].astype(np.float32)).to(device)
        self.x_val = torch.from_numpy(replica.ds.x["val"]).to(device)
        self.generator = torch.Generator().manual_seed(replica.seed)  # the batch order's own stream
        # dropout draws from the global generator: started from the seed, whatever the model's initialisation drew
        seed_everything(replica.seed)
        self.rng = self._rng_state()

    def _rng_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def epoch(self, lr: float, autocast: Any) -> list[tuple[float, dict[str, float]]]:
        torch.set_rng_state(self.rng[0])
        if self.rng[1] is not None:
            torch.cuda.set_rng_state(self.rng[1], self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n, model = len(self.x_train), self.model
        model.train()
        order = torch.randperm(n, generator=self.generator).to(self.device)
        total = torch.zeros((), device=self.device)
        for i in range(0, n, self.cfg.batch_size):
            idx = order[i : i + self.cfg.batch_size]
            with autocast:
                out = model(self.x_train[idx])
            loss = self.criterion(out.float(), self.y_train[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            total += loss.detach() * len(idx)
        train_loss = (total / n).item()  # host sync: once per epoch
        self.rng = self._rng_state()
        if not math.isfinite(train_loss):
            return [(train_loss, {})]
        with autocast:
            val_out = predict(model, self.x_val)
        return [(train_loss, score(self.ds, "val", to_forecast(self.ds, val_out)))]

    def states(self) -> list[dict[str, torch.Tensor]]:
        return [{k: v.detach().clone() for k, v in self.model.state_dict().items()}]


class _Packed:
    """Replicas of one packable family and equal training length, trained as one packed model (:func:`models.pack`):
    one forward/backward per step for all of them. Each keeps its own seed for initialisation (built by the caller),
    dropout and batch order, its own optimizer state (the optimizers are elementwise, so one optimizer over stacked
    parameters is one per replica), the shared learning-rate schedule, and its own gradient clipping."""

    def __init__(self, packed: nn.Module, replicas: list[Replica], cfg: TrainConfig, device: torch.device) -> None:
        self.replicas, self.model, self.cfg, self.device = replicas, packed.to(device), cfg, device
        self.criterion = _per_replica_loss(cfg, replicas[0].ds.is_classification)
        self.optimizer = make_optimizer(packed, cfg)
        self.x_train = torch.stack([torch.from_numpy(r.ds.x["train"]) for r in replicas]).to(device)
        y = [torch.from_numpy(r.ds.y_scaled["train"].astype(np.float32)) for r in replicas]
        self.y_train = torch.stack(y).to(device)
        self.x_val = torch.stack([torch.from_numpy(r.ds.x["val"]) for r in replicas]).to(device)
        self.orders = [torch.Generator().manual_seed(r.seed) for r in replicas]
        self.dropout = [torch.Generator(device).manual_seed(r.seed) for r in replicas]

    def epoch(self, lr: float, autocast: Any) -> list[tuple[float, dict[str, float]]]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n, model = self.x_train.shape[1], self.model
        model.train()
        orders = torch.stack([torch.randperm(n, generator=g) for g in self.orders]).to(self.device)
        rows = torch.arange(len(self.replicas), device=self.device)[:, None]
        total = torch.zeros(len(self.replicas), device=self.device)
        params = list(model.parameters())
        for i in range(0, n, self.cfg.batch_size):
            idx = orders[:, i : i + self.cfg.batch_size]
            with autocast:
                out = model(self.x_train[rows, idx], self.dropout)
            loss = self.criterion(out.float(), self.y_train[rows, idx])  # (R,)
            self.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # replicas share no parameter: each gradient is that replica's own
            if self.cfg.grad_clip > 0:
                _clip_per_replica(params, self.cfg.grad_clip)
            self.optimizer.step()
            total += loss.detach() * idx.shape[1]
        train_losses = (total / n).tolist()  # host sync: once per epoch
        model.eval()
        with torch.no_grad(), autocast:
            val_out = torch.cat(
                [model(self.x_val[:, j : j + 4096]).float() for j in range(0, self.x_val.shape[1], 4096)], 1
            )
        return [
            (loss, score(r.ds, "val", to_forecast(r.ds, val_out[k])) if math.isfinite(loss) else {})
            for k, (r, loss) in enumerate(zip(self.replicas, train_losses))
        ]

    def states(self) -> list[dict[str, torch.Tensor]]:
        return self.model.unpack()  # type: ignore[operator]  # models.PackedMLP


def pack_groups(trained: Sequence[nn.Module], replicas: Sequence[Replica], pack: str = "auto") -> list[list[int]]:
    """Which replicas train together: groups of equal training length whose family packs (:func:`models.pack`),
    unless ``pack="off"``; every other replica trains alone. ``auto`` packs wherever a packed form exists (the MLP:
    measured faster than one after another on CPU, see ``bench/packing.py``); ``on`` insists and refuses a family
    that has no packed form."""
    if pack not in PACK:
        raise ConfigError(f"pack must be one of {', '.join(PACK)}, got {pack!r}", settings=("pack",))
    packable = models.has_packed_form(trained[0])
    if pack == "on" and not packable and len(replicas) > 1:
        raise ConfigError(
            f"{type(trained[0]).__name__} has no packed form (only the MLP packs); use pack=auto to train its "
            "replicas one after another in this process",
            settings=("pack",),
        )
    if pack == "off" or not packable:
        return [[i] for i in range(len(replicas))]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(replicas):
        groups.setdefault(len(r.ds.split.train), []).append(i)
    return list(groups.values())


def estimate_memory(trained: Sequence[nn.Module], replicas: Sequence[Replica], cfg: TrainConfig) -> int:
    """Bytes a trial's replicas need on their device, a deliberate overestimate: per replica its parameters four
    times over (weights, gradients, two optimizer moments; eight while a best state is kept), its training and
    validation windows, and activations of one batch at 16 floats per input value and hidden unit."""
    total = 0
    for model, r in zip(trained, replicas):
        n_params = sum(p.numel() for p in model.parameters())
        widest = max((p.shape[0] for p in model.parameters() if p.dim() > 1), default=1)
        x = r.ds.x["train"]
        windows = 4 * (x.size + r.ds.x["val"].size)
        activations = 4 * 16 * cfg.batch_size * x.shape[1] * (x.shape[2] + widest)
        total += 4 * 8 * n_params + windows + activations
    return total


def available_memory(device: torch.device) -> int:
    """Free bytes on the device: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def aggregate(
    results: Sequence[tuple[float, dict[str, float]]], replicas: Sequence[Replica]
) -> tuple[float, dict[str, float]]:
    """One epoch's training loss and validation scores from every replica's: means over replicas, and with several
    replicas the spread of the validation loss, ``loss_sd`` (sample standard deviation) and ``loss_worst_fold`` (the
    worst fold's mean over its seeds), which the record reports as ``val_loss_sd`` and ``val_loss_worst_fold``. One
    replica's are its own values, unchanged."""
    if len(results) == 1:
        return results[0]
    train_loss = float(np.mean([loss for loss, _ in results]))
    val = {key: float(np.mean([scores[key] for _, scores in results])) for key in results[0][1]}
    losses = np.array([scores["loss"] for _, scores in results])
    folds = np.array([r.fold for r in replicas])
    val[VAL_SD.removeprefix(VAL)] = float(losses.std(ddof=1))
    val[VAL_WORST.removeprefix(VAL)] = float(max(losses[folds == k].mean() for k in np.unique(folds)))
    return train_loss, val


# ----------------------------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module, ds: Dataset, cfg: TrainConfig, reporter: Callable[[dict[str, float]], Any] = lambda record: None
) -> FitResult:
    """Train on ``ds``'s train split, early-stop on validation ``loss``, keep the best weights.

    ``reporter`` receives one record per epoch: ``epoch`` (1-based), ``train_loss``, ``val_*`` metrics from
    :func:`score`, ``lr`` and cumulative ``train_time_s``. Raises TrainingError if the training loss is not finite.
    """
    result = fit_replicas([model], [Replica(fold=0, seed=cfg.seed, ds=ds)], cfg, reporter)
    model.load_state_dict(result.state_dict)
    return result


def _units(
    trained: Sequence[nn.Module], replicas: Sequence[Replica], cfg: TrainConfig, device: torch.device, pack: str
) -> tuple[list[_Solo | _Packed], list[int]]:
    """The units that train (a lone replica, or a packed group per :func:`pack_groups`) and, for each replica, the
    position of its results among the units' results."""
    units: list[_Solo | _Packed] = []
    order: list[int] = []
    for group in pack_groups(trained, replicas, pack):
        rs = [replicas[i] for i in group]
        if len(group) == 1:
            units.append(_Solo(trained[group[0]], rs[0], replace(cfg, seed=rs[0].seed), device))
        else:
            packed = models.pack([trained[i] for i in group])
            assert packed is not None  # pack_groups() groups only packable replicas
            units.append(_Packed(packed, rs, cfg, device))
        order += group
    return units, [order.index(i) for i in range(len(replicas))]


def _train_epoch(
    units: Sequence[_Solo | _Packed], position: Sequence[int], lr: float, autocast: Any
) -> list[tuple[float, dict[str, float]]]:
    """One epoch of every unit: each replica's training loss and validation scores, in replica order."""
    results = [res for unit in units for res in unit.epoch(lr, autocast)]
    return results if len(results) == 1 else [results[p] for p in position]


class _Keeper:
    """The weights :func:`fit_replicas` keeps: every replica's at the epoch of the best mean validation loss
    (``keep="mean"``), or each replica's at its own lowest validation loss (``keep="each"``). A snapshot copies the
    weights only at an epoch that improves."""

    def __init__(self, units: Sequence[_Solo | _Packed], position: Sequence[int], keep: str) -> None:
        if keep not in KEEP:
            raise ConfigError(f"keep must be mean or each, got {keep!r}")
        self.units, self.position, self.keep = units, position, keep
        self.states: list[dict[str, torch.Tensor]] = [{} for _ in position]
        self.epochs = [0] * len(position)
        self.own_best = [math.inf] * len(position)

    def _snapshot(self) -> list[dict[str, torch.Tensor]]:
        states = [s for unit in self.units for s in unit.states()]
        return [states[p] for p in self.position]

    def update(self, epoch: int, results: Sequence[tuple[float, dict[str, float]]], mean_improved: bool) -> None:
        if self.keep == "mean":
            if mean_improved:
                self.states, self.epochs = self._snapshot(), [epoch] * len(self.position)
            return
        improved = [i for i, (_, val) in enumerate(results) if val["loss"] < self.own_best[i]]
        if improved:
            states = self._snapshot()
            for i in improved:
                self.own_best[i], self.epochs[i], self.states[i] = results[i][1]["loss"], epoch, states[i]


def _check_memory(
    trained: Sequence[nn.Module], replicas: Sequence[Replica], cfg: TrainConfig, device: torch.device
) -> None:
    """Refuse, before any step, replicas that would not fit in the device's memory (:func:`estimate_memory`)."""
    need, free = estimate_memory(trained, replicas, cfg), available_memory(device)
    if need > 0.9 * free:
        raise ConfigError(
            f"{len(replicas)} replicas need an estimated {need / 2**30:.1f} GiB on {device.type} and "
            f"{free / 2**30:.1f} GiB is free; use fewer folds or seeds, a smaller model or batch",
            settings=("folds", "seeds"),
        )


def _check_finite(
    results: Sequence[tuple[float, dict[str, float]]], replicas: Sequence[Replica], epoch: int, cfg: TrainConfig
) -> None:
    """A training loss that is not finite ends the fit, naming the replica when there are several."""
    bad = [(i, loss) for i, (loss, _) in enumerate(results) if not math.isfinite(loss)]
    if bad:
        i, loss = bad[0]
        where = f" (fold {replicas[i].fold + 1}, seed {replicas[i].seed})" if len(replicas) > 1 else ""
        raise TrainingError(
            f"training loss became {loss} at epoch {epoch}{where} with learning rate "
            f"{cfg.lr:g}; lower the learning rate or enable gradient clipping",
            settings=("lr", "grad_clip"),
        )


def fit_replicas(
    trained: Sequence[nn.Module],
    replicas: Sequence[Replica],
    cfg: TrainConfig,
    reporter: Callable[[dict[str, float]], Any] = lambda record: None,
    *,
    pack: str = "auto",
    primary: int = -1,
    keep: str = "mean",
    each: Callable[[dict[str, float], list[dict[str, float]]], Any] | None = None,
) -> FitResult:
    """Train every replica (a model per fold and seed, each built by the caller under its own seed) epoch by epoch.

    Per epoch, every replica trains once over its own fold's shuffled training windows and is scored on its fold's
    validation block; ``reporter`` gets one record: the means over replicas (:func:`aggregate`), ``lr`` and the
    cumulative ``train_time_s``. Early stopping (``patience``) and the best epoch follow the mean validation loss;
    every replica's weights at that epoch are kept (``FitResult.replicas``), and ``FitResult.state_dict`` is replica
    ``primary``'s; with ``keep="each"`` every replica keeps its own lowest-validation-loss epoch instead, the epoch
    it would keep trained alone. Replicas pack where :func:`pack_groups` says so; the numbers are those of each
    replica trained alone. ``each``, if given, gets the epoch's record and every replica's own record (replica
    order) as the epoch ends, before ``reporter``.
    Raises TrainingError if a loss is not finite, ConfigError if the replicas would not fit in the device's memory.
    """
    device = select_device(cfg.device)
    _check_memory(trained, replicas, cfg, device)
    units, position = _units(trained, replicas, cfg, device, pack)
    keeper = _Keeper(units, position, keep)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    history: list[dict[str, float]] = []
    per_replica: list[list[dict[str, float]]] = [[] for _ in replicas]
    best_epoch, best_val_loss, best_val, elapsed, stopped_early = 0, math.inf, {}, 0.0, False
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        lr = lr_at(epoch - 1, cfg)
        results = _train_epoch(units, position, lr, autocast)
        _check_finite(results, replicas, epoch, cfg)
        train_loss, val = aggregate(results, replicas)
        if not math.isfinite(val["loss"]):
            raise TrainingError(
                f"validation loss became {val['loss']} at epoch {epoch} with learning rate {cfg.lr:g}; "
                "lower the learning rate",
                settings=("lr",),
            )
        elapsed = time.perf_counter() - started
        record = {"epoch": epoch, "train_loss": train_loss, **{VAL + k: v for k, v in val.items()}, "lr": lr}
        record["train_time_s"] = elapsed
        history.append(record)
        for i, (loss, scores) in enumerate(results):
            per_replica[i].append({"epoch": epoch, "train_loss": loss, **{VAL + k: v for k, v in scores.items()}})
        if each is not None:
            each(record, [own[-1] for own in per_replica])
        improved = val["loss"] < best_val_loss
        if improved:
            best_epoch, best_val_loss, best_val = epoch, val["loss"], val
        keeper.update(epoch, results, improved)
        reporter(record)
        if epoch - best_epoch >= cfg.patience:
            stopped_early = True
            break
    return FitResult(
        best_epoch=best_epoch,
        best_val_loss=best_val_loss,
        epochs_run=len(history),
        stopped_early=stopped_early,
        train_time_s=elapsed,
        state_dict=keeper.states[primary],
        device=device,
        best_val=best_val,
        history=history,
        replicas=[
            ReplicaResult(fold=r.fold, seed=r.seed, history=h, state_dict=st, best_epoch=e)
            for r, h, st, e in zip(replicas, per_replica, keeper.states, keeper.epochs)
        ],
    )
