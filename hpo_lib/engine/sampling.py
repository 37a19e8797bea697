"""The sampler Katib's suggestion service would build for an Experiment's ``spec.algorithm``, as an Optuna sampler."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment

log = logging.getLogger(__name__)
MO_SAMPLERS = ("manifest", "nsga2")


def make_sampler(
    algorithm: dict[str, Any], distributions: dict[str, Any], max_trials: int
) -> optuna.samplers.BaseSampler:
    """The sampler Katib's Optuna suggestion service builds for ``spec.algorithm``."""
    name = algorithm.get("algorithmName")
    settings = experiment.settings(algorithm)
    seed = int(settings["random_state"]) if "random_state" in settings else None
    if name in ("tpe", "multivariate-tpe"):
        if name == "tpe":
            log.warning(
                "algorithm tpe: Katib's default katib-config serves it with Hyperopt, not Optuna; "
                "this local run uses Optuna's TPE (use multivariate-tpe for the same sampler on both)"
            )
        return optuna.samplers.TPESampler(
            n_startup_trials=int(settings.get("n_startup_trials", 10)),
            n_ei_candidates=int(settings.get("n_ei_candidates", 24)),
            seed=seed,
            multivariate=name == "multivariate-tpe",
            constant_liar=True,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        sigma = float(settings["sigma"]) if "sigma" in settings else None
        restart = settings.get("restart_strategy")
        return optuna.samplers.CmaEsSampler(
            sigma0=sigma, seed=seed, restart_strategy=None if restart in (None, "None", "none") else restart
        )
    if name == "grid":
        grid = {}
        for pname, dist in distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                grid[pname] = list(dist.choices)
            elif dist.step is not None and not dist.log:
                n = int(round((dist.high - dist.low) / dist.step)) + 1
                grid[pname] = [dist.low + i * dist.step for i in range(n)]
            else:
                raise ConfigError(f"grid search needs a step for parameter {pname}")
        combinations = 1
        for values in grid.values():
            combinations *= len(values)
        if max_trials > combinations:
            raise ConfigError(f"grid: maxTrialCount {max_trials} exceeds the {combinations} grid combinations")
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ConfigError(
        f"algorithm {name!r} is not served by Katib's Optuna service; use tpe, multivariate-tpe, random, grid or cmaes"
    )


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
