"""Katib's algorithm and early-stopping settings, defined once: for each algorithm, the ``algorithmSettings`` its
service accepts, how each value's text is parsed and the rule it must hold.

Katib passes every setting as text, and each suggestion service parses and checks it in its
``ValidateAlgorithmSettings`` (the medianstop service in ``ValidateEarlyStoppingSettings``); a refusal marks the
Experiment Failed. Three readers share these tables: the offline lint reports every broken rule
(:mod:`hpo_lib.katib.lint`, rule R2), the engine's sampler and pruner factories read typed values
(:func:`typed_values`, :func:`seed`), and the rendered manifests write their settings through :func:`section`.
Grid search's arithmetic (how many points a numeric range holds) lives here too, for lint and the grid sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract


def integer(text: Any) -> int | None:
    """Python's ``int()``, as the Optuna service parses int bounds and algorithm settings; None when it fails.

    >>> integer("24"), integer("4.0"), integer(None)
    (24, None, None)
    """
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


number = contract.finite_number  # a finite float, None for junk, NaN and inf


@dataclass(frozen=True)
class Setting:
    """One setting: ``parse`` turns Katib's text into a value (None when it does not parse), ``holds`` is the rule
    the service checks on that value, and ``rule`` says it in words."""

    parse: Callable[[Any], Any]
    holds: Callable[[Any], bool]
    rule: str

    def value(self, text: Any) -> Any | None:
        """The typed value of ``text``, or None when it does not parse or breaks the rule.

        >>> SEED.value("42"), SEED.value("-1"), SEED.value("x")
        (42, None, None)
        """
        parsed = self.parse(text)
        return parsed if parsed is not None and self.holds(parsed) else None


COUNT = Setting(integer, lambda v: v >= 0, "an integer >= 0")
POSITIVE = Setting(integer, lambda v: v > 0, "an integer > 0")
SEED = COUNT  # random_state: every service seeds its sampler with it
GAMMA = Setting(number, lambda v: 0 < v < 1, "a number in (0, 1)")
PRIOR_WEIGHT = Setting(number, lambda v: v > 0, "a number > 0")


def go_float(text: Any) -> float | None:
    """Go's ``strconv.ParseFloat`` as far as Python's ``float`` agrees (no surrounding blanks); None when it fails."""
    return None if not isinstance(text, str) or text != text.strip() else _float(text)


def go_int(text: Any) -> int | None:
    """Go's ``strconv.Atoi``: an optional sign and decimal digits, nothing else; None when it fails.

    >>> go_int("-1"), go_int("+3"), go_int(" 3"), go_int("1_0")
    (-1, 3, None, None)
    """
    return int(text) if isinstance(text, str) and text.lstrip("+-").isdigit() and text.isascii() else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# Goptuna's cmaes (katib pkg/suggestion/v1beta1/goptuna/converter.go:40-68): the restart strategies it knows
RESTART_STRATEGY = Setting(str, lambda v: v in ("ipop", "bipop", "none"), "ipop, bipop or none")
# converter.go:207-209 answers a broken value with gRPC Internal, which Katib's controller takes as valid
# (pkg/controller.v1beta1/suggestion/suggestionclient/suggestionclient.go:227-246): no Failed, no trial
GOPTUNA_STALL = (
    "; Goptuna answers it with gRPC Internal, which Katib's controller takes as valid, so the Experiment would stay "
    "Running with no trial (katib suggestion/v1beta1/goptuna/service.go:206-208, suggestionclient.go:228)"
)
AT_LEAST_ONE = Setting(integer, lambda v: v >= 1, "an integer >= 1")
START_STEP = AT_LEAST_ONE


@dataclass(frozen=True)
class Algorithm:
    """What one algorithm's service accepts: its settings in the order it lists them, and the values it uses for
    the settings an Experiment leaves out."""

    service: str  # the service that validates it under the default katib-config, as a message names it
    settings: Mapping[str, Setting]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    sampler_of: Mapping[str, str] = field(default_factory=dict)  # where one algorithm offers several samplers
    ignores_unknown: bool = False  # the service skips settings it does not know instead of refusing them
    outcome: str = ""  # what a refused value does on a cluster, when it is not the Experiment Failed


# spec.algorithm, for the services whose rules are known (other algorithms' settings are not checked)
ALGORITHMS: dict[str, Algorithm] = {
    "tpe": Algorithm(
        "Hyperopt",
        {"gamma": GAMMA, "prior_weight": PRIOR_WEIGHT, "n_EI_candidates": POSITIVE, "random_state": SEED},
        {"gamma": 0.25, "prior_weight": 1.0, "n_EI_candidates": 24},  # hyperopt 0.2.5 tpe.suggest defaults
    ),
    "random": Algorithm("Hyperopt", {"random_state": SEED}),
    "multivariate-tpe": Algorithm(
        "Optuna",
        {"n_startup_trials": COUNT, "n_ei_candidates": COUNT, "random_state": SEED},
        {"n_startup_trials": 10, "n_ei_candidates": 24},  # Optuna's TPESampler defaults
    ),
    "grid": Algorithm("Optuna", {"random_state": SEED}),
    # Goptuna's rules (the default katib-config serves cmaes by Goptuna): a value it cannot parse stalls the
    # Experiment; a sigma <= 0 keeps its default sigma and a name it does not know is skipped (converter.go:41-67)
    "cmaes": Algorithm(
        "Goptuna",
        {
            "restart_strategy": RESTART_STRATEGY,
            "sigma": Setting(go_float, lambda v: True, "a number"),
            "random_state": Setting(go_int, lambda v: True, "an integer"),
        },
        ignores_unknown=True,
        outcome=GOPTUNA_STALL,
    ),
}
MEDIANSTOP = "medianstop"
# spec.earlyStopping: Katib ships one service
EARLY_STOPPINGS: dict[str, Algorithm] = {
    MEDIANSTOP: Algorithm(
        "earlystopping-medianstop",
        {"min_trials_required": POSITIVE, "start_step": START_STEP},
        {"min_trials_required": 3, "start_step": 4},  # MedianStopService.__init__, Katib v0.19
    ),
}

# katib-hpo-multiobjective, this project's algorithm: :mod:`hpo_lib.katib.suggestion` checks these (in its own
# words, as its service refuses them) for lint, the engine and `hpo katib suggestion-service` alike
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2")
FRACTION = Setting(number, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
MULTI_OBJECTIVE = Algorithm(
    "hpo katib suggestion-service",
    {
        "objectives": Setting(str, lambda v: True, "metric:direction pairs"),  # parsed by experiment.objectives
        "sampler": Setting(str, lambda v: v in MULTI_OBJECTIVE_SAMPLERS, "tpe or nsga2"),
        "random_state": SEED,
        "n_startup_trials": COUNT,
        "n_ei_candidates": AT_LEAST_ONE,
        "population_size": Setting(integer, lambda v: v >= 2, "an integer >= 2"),
        "crossover_prob": FRACTION,
        "mutation_prob": FRACTION,
        "swapping_prob": FRACTION,
    },
    {"n_startup_trials": 10, "n_ei_candidates": 24},  # tpe's: Optuna's (and Katib's multivariate-tpe)
    {
        "n_startup_trials": "tpe",
        "n_ei_candidates": "tpe",
        "population_size": "nsga2",
        "crossover_prob": "nsga2",
        "mutation_prob": "nsga2",
        "swapping_prob": "nsga2",
    },
)


def problems(section: str, block: Mapping[str, Any] | None, known: Mapping[str, Algorithm]) -> list[str]:
    """Every setting of ``block`` (an ``algorithm`` or ``earlyStopping`` section) its service refuses, one message
    each in rule order; none for an algorithm ``known`` does not list.

    >>> problems("algorithm", {"algorithmName": "random", "algorithmSettings": [
    ...     {"name": "random_state", "value": "-1"}]}, ALGORITHMS)
    ["algorithm setting random_state = '-1' must be an integer >= 0 for random (Hyperopt)"]
    """
    if not block or block.get("algorithmName") not in known:
        return []
    algorithm = block["algorithmName"]
    rules = known[algorithm]
    found = []
    for setting in block.get("algorithmSettings") or []:
        name, value = setting.get("name"), setting.get("value") or ""  # Go sends an unset value as ""
        if name not in rules.settings and rules.ignores_unknown:
            continue
        if name not in rules.settings:
            hint = " (tpe runs on Hyperopt by default; multivariate-tpe runs on Optuna)" if algorithm == "tpe" else ""
            found.append(
                f"{section} setting {name!r} is unknown to {algorithm} ({rules.service}), which accepts only "
                f"{', '.join(rules.settings)}{hint}"
            )
        elif rules.settings[name].value(value) is None:
            found.append(_broken(section, algorithm, rules, name, value))
    return found


def _broken(section: str, algorithm: str, rules: Algorithm, name: str, value: Any) -> str:
    rule = rules.settings[name].rule
    return f"{section} setting {name} = {value!r} must be {rule} for {algorithm} ({rules.service}){rules.outcome}"


def typed_values(section: str, block: Mapping[str, Any] | None, known: Mapping[str, Algorithm]) -> dict[str, Any]:
    """The settings of ``block`` that its algorithm accepts, as typed values (a repeated setting keeps its last).

    Settings the algorithm does not accept are left out (lint reports them); a value that breaks its rule raises.
    An algorithm ``known`` does not list gives no values.

    Raises:
        ConfigError: the first setting whose value does not parse or breaks its rule, in lint's words.
    """
    if not block or block.get("algorithmName") not in known:
        return {}
    algorithm = block["algorithmName"]
    rules = known[algorithm]
    values = {}
    for setting in block.get("algorithmSettings") or []:
        name, text = setting.get("name"), setting.get("value") or ""
        if name not in rules.settings:
            continue
        values[name] = rules.settings[name].value(text)
        if values[name] is None:
            raise ConfigError(_broken(section, algorithm, rules, name, text))
    return values


def seed(block: Mapping[str, Any] | None) -> int | None:
    """``random_state`` of any ``algorithm`` section as an integer (None when unset), whatever the algorithm.

    Raises:
        ConfigError: it is not an integer >= 0 (any integer for cmaes, as Goptuna takes it).
    """
    text = {s.get("name"): s.get("value") for s in (block or {}).get("algorithmSettings") or []}.get("random_state")
    if text is None:
        return None
    known = ALGORITHMS.get(str((block or {}).get("algorithmName")))
    rule = known.settings.get("random_state", SEED) if known else SEED  # Goptuna's cmaes takes any integer
    value = rule.value(text)
    if value is None:
        raise ConfigError(f"algorithm setting random_state = {text!r} must be {rule.rule}")
    return value


def section(algorithm: str, values: Mapping[str, str]) -> dict[str, Any]:
    """An ``algorithm`` or ``earlyStopping`` section naming ``algorithm`` with ``values`` as its settings, each
    checked against the algorithm's rules when they are known (the manifests render through this, so a shipped
    setting its service would refuse cannot be written).

    >>> section("medianstop", {"start_step": "5"})
    {'algorithmName': 'medianstop', 'algorithmSettings': [{'name': 'start_step', 'value': '5'}]}

    Raises:
        ConfigError: a setting the algorithm does not accept, or a value that breaks its rule.
    """
    block = {"algorithmName": algorithm, "algorithmSettings": [{"name": k, "value": v} for k, v in values.items()]}
    early = algorithm in EARLY_STOPPINGS
    broken = problems("earlyStopping" if early else "algorithm", block, EARLY_STOPPINGS if early else ALGORITHMS)
    if broken:
        raise ConfigError(broken[0])
    return block


# ----------------------------------------------------------------------------------------------- grid search
def grid_size(low: float, high: float, step: float) -> int:
    """How many points ``low, low + step, ... <= high`` holds: Katib's grid over a numeric range (step > 0).

    The ``1e-9`` absorbs float error in ``(high - low) / step``, so a ``high`` on the grid counts (Optuna, which
    first trims a ``high`` that is off the grid to the last point below it, gives the same count).

    >>> grid_size(0.0, 0.5, 0.25), grid_size(0.001, 0.003, 0.001), grid_size(16, 128, 16), grid_size(0.0, 0.6, 0.25)
    (3, 3, 8, 3)
    """
    return int(math.floor((high - low) / step + 1e-9)) + 1
