"""Search spaces, defined once per model family and rendered to Optuna and to Katib.

Each knob has one name, used as the Katib parameter, the ``trialParameters`` entry and the trial flag
(``--name=value``). Only what Katib's Optuna suggestion service supports is used: ``int``/``double`` with
``uniform`` or ``logUniform``, and ``categorical`` lists of strings.

Why these ranges (daily bars, a few thousand training windows, a noisy target):

* learning rate 1e-5..1e-2 (log): above 1e-2 recurrent nets on standardised returns diverge or collapse to the
  mean within an epoch; below 1e-5 nothing moves inside the epoch budget.
* dropout 0..0.5 and weight decay 1e-6..1e-3 (log): the signal is weak, so regularisation matters, but past 0.5
  dropout the models predict the mean.
* sequence length {20, 40, 60, 90}: one trading month to one quarter; 90 is also ``--split-window``'s default, so
  every trial is scored on the same validation days.
* hidden sizes stay small (LSTM/GRU 32..256, CNN-LSTM 64..512): with ~3,500 training windows larger nets only
  memorise; 16-unit steps keep attention heads and cuDNN kernels aligned.
* patience 5..20 epochs: shorter stops on noise, longer wastes the budget that median stopping saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna.distributions as od

from hpo_lib.errors import ConfigError

FAMILIES = ("lstm", "gru", "cnn-lstm", "mlp")


@dataclass(frozen=True)
class Param:
    """One searched knob. ``kind`` is Katib's parameterType: ``double``, ``int`` or ``categorical``."""

    name: str
    kind: str
    description: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None  # int only; Katib's Optuna service ignores a step on log scales
    choices: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind == "categorical":
            if not self.choices or len(set(self.choices)) != len(self.choices):
                raise ValueError(f"{self.name}: categorical needs unique choices")
        elif self.kind in ("int", "double"):
            if self.low is None or self.high is None or self.low >= self.high:
                raise ValueError(f"{self.name}: needs low < high, got {self.low}, {self.high}")
            if self.log and (self.low <= 0 or self.step):
                raise ValueError(f"{self.name}: a log scale needs low > 0 and no step")
        else:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")


def _bools(name: str, description: str) -> Param:
    return Param(name, "categorical", description, choices=("true", "false"))


COMMON = (
    Param("lr", "double", "Learning rate", 1e-5, 1e-2, log=True),
    Param("weight-decay", "double", "Weight decay", 1e-6, 1e-3, log=True),
    Param("dropout", "double", "Dropout probability", 0.0, 0.5),
    Param("batch-size", "categorical", "Training batch size", choices=("16", "32", "64", "128")),
    Param("optimizer", "categorical", "Optimizer", choices=("adam", "adamw", "sgd")),
    Param("scheduler", "categorical", "Learning-rate schedule", choices=("none", "cosine", "step", "exponential")),
    Param("seq-len", "categorical", "Input window length in trading days", choices=("20", "40", "60", "90")),
    Param("patience", "int", "Early-stopping patience in epochs", 5, 20),
)
RECURRENT = (
    Param("hidden-size", "int", "Recurrent hidden size", 32, 256, step=16),
    Param("num-layers", "int", "Recurrent layers", 1, 4),
    _bools("bidirectional", "Bidirectional recurrent layers"),
    _bools("attention", "Attention pooling over time steps"),
)
FAMILY_PARAMS: dict[str, tuple[Param, ...]] = {
    "lstm": RECURRENT,
    "gru": RECURRENT,
    "cnn-lstm": (
        Param("cnn-filters", "categorical", "Convolution filters", choices=("32", "64", "128", "256")),
        Param("kernel-size", "int", "Convolution kernel size", 2, 7),
        Param("cnn-layers", "int", "Convolution layers", 1, 3),
        _bools("max-pool", "Max pooling after each convolution"),
        Param("lstm-hidden", "int", "LSTM hidden size after the convolutions", 64, 512, step=16),
        Param("lstm-layers", "int", "LSTM layers after the convolutions", 1, 3),
        _bools("bidirectional", "Bidirectional LSTM"),
        Param("attention-heads", "categorical", "Self-attention heads, 0 = off", choices=("0", "4", "8")),
    ),
    "mlp": (
        Param("num-layers", "int", "Hidden layers", 2, 4),
        Param("hidden-size", "int", "Width of the first hidden layer", 64, 512, step=16),
        Param("width-decay", "double", "Each layer's width as a fraction of the previous one", 0.25, 1.0),
    ),
}
CLASSIFICATION = (
    Param("focal-alpha", "double", "Focal loss weight of the up class", 0.25, 0.9),
    Param("focal-gamma", "double", "Focal loss focusing exponent", 0.5, 3.0),
)


def search_space(family: str, *, target: str = "return") -> tuple[Param, ...]:
    """The parameters searched for a model family (and target: the direction target adds focal loss knobs)."""
    if family not in FAMILY_PARAMS:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return COMMON + FAMILY_PARAMS[family] + (CLASSIFICATION if target == "direction" else ())


# ----------------------------------------------------------------------------------------------- Optuna
def to_optuna(param: Param) -> od.BaseDistribution:
    """The distribution Katib's Optuna service builds for this parameter: our Katib rendering, converted back."""
    return from_katib_parameter(to_katib_parameter(param))


def optuna_distributions(params: tuple[Param, ...] | list[Param]) -> dict[str, od.BaseDistribution]:
    return {p.name: to_optuna(p) for p in params}


# ----------------------------------------------------------------------------------------------- Katib
def _bound(param: Param, value: float | int) -> str:
    return str(int(value)) if param.kind == "int" else repr(float(value))


def to_katib_parameter(param: Param) -> dict[str, Any]:
    """A Katib ``spec.parameters`` entry; bounds are strings, int bounds integer strings."""
    if param.kind == "categorical":
        space: dict[str, Any] = {"list": list(param.choices)}
    else:
        assert param.low is not None and param.high is not None  # Param.__post_init__ requires both for int, double
        space = {"min": _bound(param, param.low), "max": _bound(param, param.high)}
        if param.step:
            space["step"] = str(param.step)
        space["distribution"] = "logUniform" if param.log else "uniform"
    return {"name": param.name, "parameterType": param.kind, "feasibleSpace": space}


def from_katib_parameter(spec: dict[str, Any], *, linear: bool = False) -> od.BaseDistribution:
    """Katib parameter -> Optuna distribution, as Katib's Optuna service converts it (for any manifest).

    ``linear``: as Goptuna (``cmaes``, ``sobol``) converts it, which ignores ``distribution`` and searches every int
    and double between min and max linearly (katib pkg/suggestion/v1beta1/goptuna/converter.go:113-164).
    """
    name, kind = spec.get("name", "?"), spec.get("parameterType")
    space = spec.get("feasibleSpace") or {}
    if kind in ("categorical", "discrete"):
        return od.CategoricalDistribution([str(v) for v in space.get("list") or []])
    distribution = "uniform" if linear else space.get("distribution") or "uniform"
    if distribution in ("normal", "logNormal"):  # Hyperopt's (tpe, random): katib hyperopt/base_service.py:106-139
        raise ConfigError(
            f"parameter {name}: distribution {distribution!r} runs on Katib only under tpe and random, whose Hyperopt "
            "draws it with mean (min + max) / 2 and sigma (max - min) / 6 (of the logs for logNormal); Optuna, which "
            "the local engine samples with, has no normal distribution: use uniform or logUniform here"
        )
    if distribution not in ("uniform", "logUniform"):
        raise ConfigError(
            f"parameter {name}: distribution {distribution!r} is not one of Katib's (uniform, logUniform, normal, "
            "logNormal)"
        )
    log = distribution == "logUniform"
    try:
        if kind == "int":
            low, high = int(space["min"]), int(space["max"])
            if log:
                return od.IntDistribution(max(1, low), high, log=True)
            return od.IntDistribution(low, high, step=int(space.get("step") or 1))
        if kind == "double":
            float_low, float_high = float(space["min"]), float(space["max"])
            if log:
                return od.FloatDistribution(max(1e-10, float_low), float_high, log=True)
            step = float(space["step"]) if space.get("step") else None
            return od.FloatDistribution(float_low, float_high, step=step)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"parameter {name}: bad feasibleSpace {space}: {exc}") from None
    raise ConfigError(f"parameter {name}: unknown parameterType {kind!r}")


def katib_trial_parameters(params: tuple[Param, ...] | list[Param]) -> list[dict[str, str]]:
    """``trialParameters``: same name as the parameter, with its description."""
    return [{"name": p.name, "description": p.description, "reference": p.name} for p in params]


def trial_flags(params: tuple[Param, ...] | list[Param]) -> list[str]:
    """The trial container's arguments: ``--name=${trialParameters.name}`` for every parameter."""
    return [f"--{p.name}=${{trialParameters.{p.name}}}" for p in params]
