"""The sampler Katib's suggestion service would build for an Experiment's ``spec.algorithm``, as an Optuna sampler."""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any

import optuna

from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment

log = logging.getLogger(__name__)
MO_SAMPLERS = ("manifest", "nsga2")


# algorithms of Katib's default katib-config the engine does not run -> the service that runs them
NOT_SERVED = {
    "hyperband": "suggestion-hyperband",
    "bayesianoptimization": "suggestion-skopt (scikit-optimize)",
    "sobol": "suggestion-goptuna",
    "pbt": "suggestion-pbt",
    "enas": "suggestion-enas",
    "darts": "suggestion-darts",
}
HYPEROPT_TPE = {"gamma": 0.25, "prior_weight": 1.0, "n_EI_candidates": 24}  # hyperopt 0.2.5 tpe.suggest defaults
HYPEROPT_LF = 25  # hyperopt's linear_forgetting: the "below" set never exceeds 25 trials


def hyperopt_gamma(gamma: float):
    """Hyperopt's split of the observed trials into "good" and "bad": ``min(ceil(gamma * sqrt(n)), 25)``.

    Optuna's own default is ``min(ceil(0.1 * n), 25)``; Katib's ``tpe`` (served by Hyperopt) means this one.
    """

    def n_below(n: int) -> int:
        return min(math.ceil(gamma * math.sqrt(n)), HYPEROPT_LF)

    return n_below


def make_sampler(
    algorithm: dict[str, Any],
    distributions: dict[str, Any],
    max_trials: int,
    *,
    startup_trials: int = 3,
) -> optuna.samplers.BaseSampler:
    """The sampler Katib's default katib-config serves for ``spec.algorithm``, as an Optuna sampler.

    ``tpe`` and ``random`` are served by Hyperopt on a cluster: the engine runs Optuna's TPE with Hyperopt's
    meaning of ``gamma`` (see :func:`hyperopt_gamma`), ``prior_weight`` and ``n_EI_candidates``, and Hyperopt's
    random start of one batch (``startup_trials``, the parallelTrialCount; Katib's default 3).
    ``multivariate-tpe`` and ``grid`` are Katib's Optuna service as it is. ``cmaes`` honours ``sigma``,
    ``random_state`` and ``restart_strategy: none``; ``ipop`` is refused (Optuna >= 4.4 ignores it). Every other
    algorithm of the default katib-config is refused with the service that would run it.
    """
    name = algorithm.get("algorithmName")
    settings = experiment.settings(algorithm)
    seed = int(settings["random_state"]) if "random_state" in settings else None
    if name in NOT_SERVED:
        raise ConfigError(
            f"algorithm {name!r} is not served by Katib's Optuna service, so not by the local engine; Katib "
            f"serves it with {NOT_SERVED[name]}: "
            "run the experiment on a Katib cluster, or use tpe, multivariate-tpe, random, grid or cmaes"
        )
    if name == "tpe":
        return optuna.samplers.TPESampler(
            gamma=hyperopt_gamma(float(settings.get("gamma", HYPEROPT_TPE["gamma"]))),
            prior_weight=float(settings.get("prior_weight", HYPEROPT_TPE["prior_weight"])),
            n_ei_candidates=int(settings.get("n_EI_candidates", HYPEROPT_TPE["n_EI_candidates"])),
            n_startup_trials=max(1, startup_trials),
            seed=seed,
        )
    if name == "multivariate-tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=int(settings.get("n_startup_trials", 10)),
            n_ei_candidates=int(settings.get("n_ei_candidates", 24)),
            seed=seed,
            multivariate=True,
            constant_liar=True,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        sigma = float(settings["sigma"]) if "sigma" in settings else None
        restart = settings.get("restart_strategy")
        if restart not in (None, "None", "none"):
            raise ConfigError(
                f"algorithm cmaes setting restart_strategy = {restart!r}: Optuna {optuna.__version__} no longer "
                "restarts CMA-ES (removed in 4.4); drop the setting, or run the experiment on a Katib cluster"
            )
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError(
                "algorithm cmaes needs the Python package cmaes, which Optuna's CmaEsSampler runs on "
                "(pip install cmaes), or run the experiment on a Katib cluster (suggestion-goptuna)"
            )
        return optuna.samplers.CmaEsSampler(sigma0=sigma, seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(distributions, max_trials), seed=seed)
    raise ConfigError(
        f"algorithm {name!r} is not in Katib's default katib-config; use tpe, multivariate-tpe, random, grid or cmaes"
    )


def _grid(distributions: dict[str, Any], max_trials: int) -> dict[str, list[Any]]:
    """Katib's grid: every listed value, ``range(min, max + 1, step or 1)`` for ints (logUniform too, as Katib
    builds it), ``min, min + step, ... <= max`` for doubles."""
    grid: dict[str, list[Any]] = {}
    for pname, dist in distributions.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            grid[pname] = list(dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            grid[pname] = list(range(dist.low, dist.high + 1, dist.step))
        elif dist.step is not None and not dist.log:
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[pname] = [dist.low + i * dist.step for i in range(n)]
        else:
            raise ConfigError(
                f"grid search needs a step for double parameter {pname} (and a uniform distribution: "
                "the engine cannot grid a logUniform double)"
            )
    combinations = math.prod(len(values) for values in grid.values())
    if max_trials > combinations:
        raise ConfigError(f"grid: maxTrialCount {max_trials} exceeds the {combinations} grid combinations")
    return grid


def multi_objective_sampler(
    algorithm: dict[str, Any], distributions: dict[str, Any], max_trials: int, choice: str
) -> optuna.samplers.BaseSampler:
    """The manifest's sampler where Optuna's multi-objective support allows it (TPE, random, grid), or NSGA-II."""
    settings = experiment.settings(algorithm)
    if choice == "nsga2":
        seed = int(settings["random_state"]) if "random_state" in settings else None
        return optuna.samplers.NSGAIISampler(seed=seed)
    if choice != "manifest":
        raise ConfigError(
            f"multi-objective sampler must be manifest or nsga2, got {choice!r}", settings=("mo_sampler",)
        )
    if algorithm.get("algorithmName") == "cmaes":
        raise ConfigError(
            "algorithm cmaes cannot run a multi-objective study; use the nsga2 multi-objective sampler, "
            f"or drop the {experiment.OBJECTIVES_ANNOTATION} annotation",
            settings=("mo_sampler",),
        )
    return make_sampler(algorithm, distributions, max_trials)
