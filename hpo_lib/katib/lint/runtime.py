"""``R1``-``R6``: what Katib's webhook lets through but fails or stalls at run time."""

from __future__ import annotations

import math
from typing import Any

from hpo_lib.katib import contract, settings
from hpo_lib.katib.lint.common import Findings

SUGGESTION_SERVICES = contract.SUGGESTION_SERVICES
OPTUNA_DISTRIBUTIONS = ("uniform", "logUniform", "unknown")  # unknown reaches the service as unspecified
METRIC_STRATEGIES = contract.METRIC_STRATEGIES


def _grid_size(parameter: dict) -> int | None:
    """How many values grid search tries for one parameter; None when its bounds are broken (R3 says why)."""
    space = parameter["feasibleSpace"]
    if parameter.get("parameterType") in ("categorical", "discrete"):
        return len(space.get("list") or [])
    low, high = settings.number(space.get("min")), settings.number(space.get("max"))
    step = settings.number(space.get("step") or ("1" if parameter.get("parameterType") == "int" else None))
    if low is None or high is None or not step or step <= 0 or low > high:
        return None
    return settings.grid_size(low, high, step)


def check_runtime(spec: dict, out: Findings) -> None:
    """R1-R6 on the defaulted spec."""
    parameters = spec.get("parameters") or []
    template = spec.get("trialTemplate") or {}
    referenced = {tp.get("reference") for tp in template.get("trialParameters") or []}
    for parameter in parameters:
        if parameter.get("name") not in referenced:
            out.error(
                "R1",
                f"parameter {parameter.get('name')!r} is referenced by no trialParameter; Katib "
                "fails to create its trials and the experiment stalls",
            )

    # R2: settings the algorithm's service rejects, which marks the Experiment Failed
    for section, known in (("algorithm", settings.ALGORITHMS), ("earlyStopping", settings.EARLY_STOPPINGS)):
        for problem in settings.problems(section, spec.get(section), known):
            out.error("R2", problem)

    algorithm: Any = (spec.get("algorithm") or {}).get("algorithmName")  # unvalidated JSON, None when unset
    # Katib's Optuna service clamps a log scale's min to 1 (int) or 1e-10 (double) (katib
    # pkg/suggestion/v1beta1/optuna/base_service.py:124-150), as this project's service does; Goptuna ignores the
    # distribution (goptuna/converter.go:113-164); Hyperopt takes log(min) and fails on min <= 0
    clamps = (
        SUGGESTION_SERVICES.get(algorithm) in ("optuna", "goptuna") or algorithm == contract.MULTI_OBJECTIVE_ALGORITHM
    )
    for parameter in parameters:
        kind, space = parameter.get("parameterType"), parameter["feasibleSpace"]
        if kind not in ("int", "double"):
            continue
        where = f"parameter {parameter.get('name')!r}"
        parse = settings.integer if kind == "int" else settings.number
        bounds = {key: space.get(key) for key in ("min", "max", "step") if space.get(key)}
        values = {key: parse(text) for key, text in bounds.items()}
        expected = "an integer" if kind == "int" else "a finite number"
        for key, value in values.items():
            if value is None:
                out.error(
                    "R3",
                    f"{where} {key} {bounds[key]!r} is not {expected} (the suggestion service fails "
                    "and the experiment stays Running)",
                )
        low, high, step = values.get("min"), values.get("max"), values.get("step")
        if low is not None and high is not None and low > high:
            out.error("R3", f"{where} min {bounds['min']} is greater than max {bounds['max']}")
        if step is not None and step <= 0:
            out.error("R3", f"{where} step {bounds['step']} must be > 0")
        if space["distribution"] in ("logUniform", "logNormal") and low is not None and low <= 0 and not clamps:
            out.error("R3", f"{where} is {space['distribution']} and needs min > 0, got {bounds['min']}")

    if SUGGESTION_SERVICES.get(algorithm) == "optuna":
        for parameter in parameters:
            distribution = parameter["feasibleSpace"]["distribution"]
            if parameter.get("parameterType") in ("int", "double") and distribution not in OPTUNA_DISTRIBUTIONS:
                out.error(
                    "R4",
                    f"parameter {parameter.get('name')!r} distribution {distribution} is not supported by "
                    f"{algorithm} (Optuna supports only uniform and logUniform; Katib v0.19 drops it "
                    "and its trials cannot be created)",
                )
    if algorithm == "cmaes":
        numeric = [p for p in parameters if p.get("parameterType") in ("int", "double")]
        if len(numeric) < 2:
            out.error("R4", f"cmaes needs at least 2 int/double parameters, got {len(numeric)}")
    if algorithm == "grid":
        for parameter in parameters:
            if parameter.get("parameterType") == "double" and not parameter["feasibleSpace"].get("step"):
                out.error("R4", f"grid needs a step on every double parameter; {parameter.get('name')!r} has none")
        sizes = [_grid_size(p) for p in parameters]
        combinations = math.prod(s for s in sizes if s is not None)  # all of sizes where it is used below
        max_trials = spec.get("maxTrialCount")
        if parameters and None not in sizes and max_trials is not None and max_trials > combinations:
            out.error("R4", f"grid has {combinations} combinations, fewer than maxTrialCount {max_trials}")

    for strategy in (spec.get("objective") or {}).get("metricStrategies") or []:
        if strategy.get("value") not in METRIC_STRATEGIES:
            out.error(
                "R5",
                f"metricStrategies {strategy.get('name')!r} value {strategy.get('value')!r} must be min, "
                "max or latest (Katib passes the suggestion an empty value)",
            )

    kind = spec["metricsCollectorSpec"]["collector"].get("kind")
    if spec.get("earlyStopping") and kind not in ("StdOut", "File"):
        out.error("R6", f"early stopping needs the StdOut or File metrics collector, got {kind!r}")
