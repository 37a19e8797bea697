"""Forecasting networks (MLP, LSTM, GRU, CNN-LSTM) and the registry that maps a name to a model.

Every model maps a window ``(batch, window, features)`` to ``(batch, n_outputs)``: one value for regression
targets, two logits for the direction target. Each family has a small config dataclass; :func:`build_model`
picks the fields it needs out of a flat hyperparameter dict (the trial's flags).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from hpo_lib.errors import ConfigError


# ----------------------------------------------------------------------------------------------- building blocks
class AttentionPooling(nn.Module):
    """Learned softmax weights over time steps; a weighted sum replaces "take the last step"."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (batch, time, dim) -> (batch, dim)
        weights = torch.softmax(self.score(h), dim=1)  # (batch, time, 1)
        return (weights * h).sum(dim=1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers, in MB (10^6 bytes): the Pareto "size" axis."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


# ----------------------------------------------------------------------------------------------- MLP
@dataclass
class MLPConfig:
    n_features: int
    window: int
    n_outputs: int = 1
    num_layers: int = 2  # hidden layers
    hidden_size: int = 64  # width of the first hidden layer (the trial flag's default; a test ties them)
    width_decay: float = 0.5  # each next layer is this fraction of the previous width (at least 8 units)
    dropout: float = 0.1


class MLP(nn.Module):
    """Flattened window -> hidden layers of shrinking width -> head."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width_in, width = cfg.n_features * cfg.window, float(cfg.hidden_size)
        for _ in range(cfg.num_layers):
            units = max(8, int(round(width)))
            layers += [nn.Linear(width_in, units), nn.GELU(), nn.Dropout(cfg.dropout)]
            width_in, width = units, width * cfg.width_decay
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, cfg.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))  # (batch, window*features) -> (batch, n_outputs)


class PackedMLP(nn.Module):
    """R MLPs of one architecture as one module: ``(R, batch, window, features) -> (R, batch, n_outputs)``.

    Each layer's weights are stacked along a leading replica axis and applied with one batched matmul (``baddbmm``),
    so a forward and a backward pass serve every replica at once; the replicas never mix (every op is per replica
    along that axis). Dropout draws each replica's mask from that replica's own generator, in the order a lone
    ``MLP`` draws from the global one, so replica ``r`` sees exactly the masks it would see trained alone.
    """

    def __init__(self, replicas: list[MLP]):
        super().__init__()
        if not replicas:
            raise ConfigError("PackedMLP needs at least one replica")
        self.n_replicas = len(replicas)
        linears = [[m for m in r.modules() if isinstance(m, nn.Linear)] for r in replicas]
        self.dropout = [m.p for m in replicas[0].body if isinstance(m, nn.Dropout)]
        self.weight = nn.ParameterList(
            torch.stack([r[i].weight.detach() for r in linears]) for i in range(len(linears[0]))
        )
        self.bias = nn.ParameterList(torch.stack([r[i].bias.detach() for r in linears]) for i in range(len(linears[0])))
        self.names = [n.removesuffix(".weight") for n, m in replicas[0].named_parameters() if n.endswith(".weight")]

    def forward(self, x: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        h = x.flatten(2)  # (R, batch, window*features)
        for i, (w, b) in enumerate(zip(self.weight, self.bias)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i == len(self.weight) - 1:
                return h
            h = nn.functional.gelu(h)
            p = self.dropout[i]
            if self.training and p > 0:  # F.dropout's CPU path: a Bernoulli(1 - p) mask scaled by 1 / (1 - p)
                if generators is None:
                    raise ConfigError("a training PackedMLP needs one dropout generator per replica")
                mask = torch.stack(
                    [
                        torch.empty(h.shape[1:], dtype=h.dtype, device=h.device).bernoulli_(1 - p, generator=g)
                        for g in generators
                    ]
                )
                h = h * mask.div_(1 - p)
        return h

    def unpack(self) -> list[dict[str, torch.Tensor]]:
        """Each replica's weights as the state dict of its own ``MLP``."""
        return [
            {
                **{f"{n}.weight": w[r].detach().clone() for n, w in zip(self.names, self.weight)},
                **{f"{n}.bias": b[r].detach().clone() for n, b in zip(self.names, self.bias)},
            }
            for r in range(self.n_replicas)
        ]


def has_packed_form(model: nn.Module) -> bool:
    """Whether a model's family has a packed form (:func:`pack`)."""
    return type(model) is MLP


def pack(replicas: list[nn.Module]) -> nn.Module | None:
    """The packed form of same-architecture replicas, or None where a family has none (they then train one after
    another in the same process). Only the MLP packs: a replica-batched recurrent layer (a ``bmm`` per time step)
    measured 5x slower than sequential oneDNN LSTMs on CPU, and ``vmap`` has no batching rule for ``aten::lstm``."""
    if all(has_packed_form(r) for r in replicas):
        return PackedMLP([r for r in replicas if isinstance(r, MLP)])
    return None


# ----------------------------------------------------------------------------------------------- LSTM / GRU
@dataclass
class RecurrentConfig:
    n_features: int
    window: int
    n_outputs: int = 1
    cell: str = "lstm"  # lstm | gru
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.1  # between stacked layers (PyTorch ignores it for one layer) and before the head
    bidirectional: bool = False
    attention: bool = False  # attention pooling over all steps instead of the last step's state


class RecurrentNet(nn.Module):
    """LSTM or GRU over the window, pooled by the last step or by attention, then a linear head."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
        self.rnn = rnn(
            cfg.n_features,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        dim = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.pool = AttentionPooling(dim) if cfg.attention else None
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(dim, cfg.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)  # (batch, window, dim)
        pooled = self.pool(h) if self.pool is not None else h[:, -1]
        return self.head(self.drop(pooled))


# ----------------------------------------------------------------------------------------------- CNN-LSTM
@dataclass
class CNNLSTMConfig:
    n_features: int
    window: int
    n_outputs: int = 1
    cnn_filters: int = 64
    kernel_size: int = 3
    cnn_layers: int = 2
    max_pool: bool = False  # halve the time axis after each conv layer (while more than 2 steps remain)
    lstm_hidden: int = 128
    lstm_layers: int = 1
    bidirectional: bool = False
    attention_heads: int = 0  # 0 = off; else multi-head self-attention over the LSTM outputs before pooling
    dropout: float = 0.1


def _same_length_conv(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """A convolution that keeps the time axis, as ``padding="same"`` does, for odd and even kernels alike.

    For an even kernel torch's "same" pads unevenly by copying the input on every call (and warns each time);
    padding explicitly the same way (the extra zero on the right) gives the same output without the warning.
    """
    if kernel_size % 2:
        return [nn.Conv1d(in_channels, out_channels, kernel_size, padding="same")]
    left = (kernel_size - 1) // 2
    return [nn.ConstantPad1d((left, kernel_size - 1 - left), 0.0), nn.Conv1d(in_channels, out_channels, kernel_size)]


class CNNLSTM(nn.Module):
    """1-D convolution stack over time (local patterns) -> LSTM (longer memory) -> optional self-attention."""

    def __init__(self, cfg: CNNLSTMConfig):
        super().__init__()
        convs: list[nn.Module] = []
        channels, steps = cfg.n_features, cfg.window
        for _ in range(cfg.cnn_layers):
            convs += [*_same_length_conv(channels, cfg.cnn_filters, cfg.kernel_size), nn.GELU()]
            channels = cfg.cnn_filters
            if cfg.max_pool and steps > 2:
                convs.append(nn.MaxPool1d(2))
                steps //= 2
        self.convs = nn.Sequential(*convs)
        self.lstm = nn.LSTM(
            channels,
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        dim = cfg.lstm_hidden * (2 if cfg.bidirectional else 1)
        if cfg.attention_heads and dim % cfg.attention_heads:
            raise ConfigError(f"attention_heads={cfg.attention_heads} must divide the LSTM output width {dim}")
        self.attn = (
            nn.MultiheadAttention(dim, cfg.attention_heads, dropout=cfg.dropout, batch_first=True)
            if cfg.attention_heads
            else None
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(dim, cfg.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.convs(x.transpose(1, 2)).transpose(1, 2)  # (batch, features, window) conv -> (batch, steps, filters)
        h, _ = self.lstm(z)  # (batch, steps, dim)
        if self.attn is not None:
            attended, _ = self.attn(h, h, h, need_weights=False)
            h = h + attended  # residual keeps the LSTM state when attention adds little
        return self.head(self.drop(h[:, -1]))


# ----------------------------------------------------------------------------------------------- registry
# name -> (config, model, fixed config values); the names are hpo_lib.trial_contract.MODEL_NAMES (a test ties them)
MODELS: dict[str, tuple[type, type[nn.Module], dict[str, Any]]] = {
    "mlp": (MLPConfig, MLP, {}),
    "lstm": (RecurrentConfig, RecurrentNet, {"cell": "lstm"}),
    "gru": (RecurrentConfig, RecurrentNet, {"cell": "gru"}),
    "cnn-lstm": (CNNLSTMConfig, CNNLSTM, {}),
}


def config_fields(name: str) -> list[str]:
    """The hyperparameters a model family reads (beyond the data shape)."""
    config_cls, _, fixed = _lookup(name)
    return [f.name for f in fields(config_cls) if f.name not in ("n_features", "window", "n_outputs", *fixed)]


def build_model(name: str, *, n_features: int, window: int, n_outputs: int, params: dict[str, Any]) -> nn.Module:
    """Build a registered model; ``params`` may hold more keys than the family reads (the others are ignored)."""
    config_cls, model_cls, fixed = _lookup(name)
    chosen = {k: params[k] for k in config_fields(name) if k in params}
    return model_cls(config_cls(n_features=n_features, window=window, n_outputs=n_outputs, **chosen, **fixed))


def _lookup(name: str) -> tuple[type, type[nn.Module], dict[str, Any]]:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]
