"""The sampler Katib's suggestion service would build for an Experiment's ``spec.algorithm``, as an Optuna sampler."""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any

import optuna

from hpo_lib import study_record
from hpo_lib.engine import options
from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment, settings, suggestion

log = logging.getLogger(__name__)
MO_SAMPLERS = options.MO_SAMPLERS


# algorithms of Katib's default katib-config the engine does not run -> the service that runs them
NOT_SERVED = {
    "hyperband": "suggestion-hyperband",
    "bayesianoptimization": "suggestion-skopt (scikit-optimize)",
    "sobol": "suggestion-goptuna",
    "pbt": "suggestion-pbt",
    "enas": "suggestion-enas",
    "darts": "suggestion-darts",
}
HYPEROPT_TPE = settings.ALGORITHMS["tpe"].defaults  # hyperopt 0.2.5 tpe.suggest defaults
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
    algorithm of the default katib-config is refused with the service that would run it. The settings are read,
    typed, from :mod:`hpo_lib.katib.settings` (a value its service would refuse raises there, in lint's words).
    """
    name = algorithm.get("algorithmName")
    if name == suggestion.ALGORITHM:
        return KatibSuggestions(algorithm, distributions)
    if name in NOT_SERVED:
        raise ConfigError(
            f"algorithm {name!r} is not served by Katib's Optuna service, so not by the local engine; Katib "
            f"serves it with {NOT_SERVED[name]}: "
            "run the experiment on a Katib cluster, or use tpe, multivariate-tpe, random, grid or cmaes"
        )
    values = {**_defaults(name), **settings.typed_values("algorithm", algorithm, settings.ALGORITHMS)}
    seed = values.get("random_state")
    if name == "tpe":
        return optuna.samplers.TPESampler(
            gamma=hyperopt_gamma(values["gamma"]),
            prior_weight=values["prior_weight"],
            n_ei_candidates=values["n_EI_candidates"],
            n_startup_trials=max(1, startup_trials),
            seed=seed,
        )
    if name == "multivariate-tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=values["n_startup_trials"],
            n_ei_candidates=values["n_ei_candidates"],
            seed=seed,
            multivariate=True,
            constant_liar=True,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        sigma = values.get("sigma")
        restart = values.get("restart_strategy")
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
        f" (or {suggestion.ALGORITHM}, this project's multi-objective suggestion service)"
    )


def _defaults(name: Any) -> dict[str, Any]:
    """The values ``name``'s service uses for the settings an Experiment leaves out (none for unknown names)."""
    known = settings.ALGORITHMS.get(name)
    return dict(known.defaults) if known else {}


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
            # Optuna has trimmed an off-grid high to the last point below it, as Katib's range stops there
            grid[pname] = [dist.low + i * dist.step for i in range(settings.grid_size(dist.low, dist.high, dist.step))]
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
    if algorithm.get("algorithmName") == suggestion.ALGORITHM:
        if choice != "manifest":
            raise ConfigError(
                f"algorithm {suggestion.ALGORITHM} picks its sampler with its setting sampler (tpe or nsga2), "
                f"so the cluster runs the same one: drop the multi-objective sampler {choice!r}",
                settings=("mo_sampler",),
            )
        return KatibSuggestions(algorithm, distributions)
    if choice == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=settings.seed(algorithm))
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


class KatibSuggestions(optuna.samplers.BaseSampler):
    """``katib-hpo-multiobjective`` on the laptop: each trial's parameters from :func:`suggestion.propose`.

    The very function ``hpo katib suggestion-service`` answers Katib with, given the study's other trials as Katib
    would send them: COMPLETE as Succeeded with their values (the engine's early-stopped trials arrive here as
    COMPLETE with the value Katib tells, see ``KatibTells``), FAIL as Failed, RUNNING and WAITING as Running.
    """

    def __init__(self, algorithm: dict[str, Any], distributions: dict[str, Any]) -> None:
        self.sampler = suggestion.sampler_settings(algorithm)  # a refused setting fails before any trial
        self.distributions = dict(distributions)

    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return dict(self.distributions)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        setup = suggestion.Setup(self.distributions, [d.name.lower() for d in study.directions], self.sampler)
        records = [_record(t) for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        proposal = suggestion.propose(setup, [r for r in records if r is not None], 1)[0]
        params = suggestion.parse_assignments(setup, proposal)
        assert params is not None  # propose only returns assignments inside the feasible space
        return {name: params[name] for name in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise ConfigError(
            f"parameter {param_name} is not in the manifest's spec.parameters, so {suggestion.ALGORITHM} "
            "cannot propose it"
        )


def _record(trial: optuna.trial.FrozenTrial) -> suggestion.TrialRecord | None:
    """A study's trial as Katib's controller sends it (None: one Katib would not send, e.g. early-stopped unseen)."""
    condition = study_record.SAMPLER_CONDITIONS.get(trial.state.name)
    if condition is None or not trial.params:
        return None
    values = list(trial.values) if condition == "Succeeded" and trial.values is not None else None
    assignments = {name: suggestion.as_text(value) for name, value in trial.params.items()}
    return suggestion.TrialRecord(assignments, condition, values)
