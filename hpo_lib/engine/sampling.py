"""The sampler Katib's suggestion service would build for an Experiment's ``spec.algorithm``, as an Optuna sampler."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo_lib import study_record
from hpo_lib.engine import options, optuna_compat
from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment, settings, suggestion

log = logging.getLogger(__name__)
MO_SAMPLERS = options.MO_SAMPLERS


# algorithms of Katib's default katib-config the engine does not run -> the service that runs them
NOT_SERVED = {
    "hyperband": "suggestion-hyperband",
    "bayesianoptimization": "suggestion-skopt (scikit-optimize)",
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
) -> optuna.samplers.BaseSampler:
    """The sampler Katib's default katib-config serves for ``spec.algorithm``, as an Optuna sampler.

    ``tpe`` and ``random`` are served by Hyperopt on a cluster. ``tpe`` is Optuna's TPE as Hyperopt runs it:
    univariate, no constant liar, Hyperopt's meaning of ``gamma`` (see :func:`hyperopt_gamma`), ``prior_weight`` and
    ``n_EI_candidates``, and random draws only until a trial has finished (Katib passes the request size as
    Hyperopt's ``n_startup_jobs``, so after the first batch every request is TPE's: katib
    pkg/suggestion/v1beta1/hyperopt/base_service.py:286-313). ``multivariate-tpe`` and ``grid`` are Katib's Optuna
    service as it is. ``cmaes`` takes Goptuna's settings (``sigma`` > 0, else the default; ``random_state``;
    ``restart_strategy`` ipop/bipop/none, run without restarts: Optuna >= 4.4 has none). Every other algorithm of
    the default katib-config is refused with the service that would run it. The settings are read, typed, from
    :mod:`hpo_lib.katib.settings` (a value its service would refuse raises there, in lint's words).
    """
    name = algorithm.get("algorithmName")
    if name == suggestion.ALGORITHM:
        return KatibSuggestions(algorithm, distributions)
    if name in NOT_SERVED:
        raise ConfigError(
            f"algorithm {name!r} is not served by the local engine; Katib serves it with {NOT_SERVED[name]}: "
            "run the experiment on a Katib cluster, or use tpe, multivariate-tpe, random, grid, cmaes or sobol"
        )
    values = {**_defaults(name), **settings.typed_values("algorithm", algorithm, settings.ALGORITHMS)}
    seed = values.get("random_state")
    seed = None if seed is None else seed % 2**32  # Goptuna takes any int64 (-1 too); numpy wants [0, 2**32)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            gamma=hyperopt_gamma(values["gamma"]),
            prior_weight=values["prior_weight"],
            n_ei_candidates=values["n_EI_candidates"],
            n_startup_trials=1,
            seed=seed,
            multivariate=False,
            constant_liar=False,
        )
    if name == "multivariate-tpe":
        return FailedStayRunning(
            optuna.samplers.TPESampler(
                n_startup_trials=values["n_startup_trials"],
                n_ei_candidates=values["n_ei_candidates"],
                seed=seed,
                multivariate=True,
                constant_liar=True,
            )
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError(
                "algorithm cmaes needs the Python package cmaes, which Optuna's CmaEsSampler runs on "
                "(pip install cmaes), or run the experiment on a Katib cluster (suggestion-goptuna)"
            )
        sigma = values.get("sigma")  # Goptuna keeps its default, min((max - min) / 6), for sigma <= 0, as Optuna does
        cma = optuna.samplers.CmaEsSampler(sigma0=sigma if sigma is not None and sigma > 0 else None, seed=seed)
        return EarlyStoppedPruned(cma)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(distributions, max_trials), seed=seed)
    if name == "sobol":  # Goptuna's sobol.NewSampler(), which reads no setting (katib goptuna/converter.go:93-94)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=False, warn_independent_sampling=False)
    raise ConfigError(
        f"algorithm {name!r} is not in Katib's default katib-config; use tpe, multivariate-tpe, random, grid, cmaes "
        "or sobol"
        f" (or {suggestion.ALGORITHM}, this project's multi-objective suggestion service)"
    )


def study_sampler(
    algorithm: dict[str, Any],
    distributions: dict[str, Any],
    max_trials: int,
    *,
    multi: bool = False,
    choice: str = "manifest",
) -> optuna.samplers.BaseSampler:
    """The engine's sampler for a study: :func:`make_sampler`'s (:func:`multi_objective_sampler`'s when ``multi``),
    whose seeded draws never replay in a resumed, extended or shared study (see :class:`FreshDraws`)."""

    def build(algorithm: dict[str, Any]) -> optuna.samplers.BaseSampler:
        if multi:
            return multi_objective_sampler(algorithm, distributions, max_trials, choice)
        return make_sampler(algorithm, distributions, max_trials)

    first = build(algorithm)
    if algorithm.get("algorithmName") == "cmaes":
        restart = settings.typed_values("algorithm", algorithm, settings.ALGORITHMS).get("restart_strategy")
        if restart in ("ipop", "bipop"):
            log.warning(
                "algorithm cmaes restart_strategy %s: Goptuna restarts CMA-ES with a larger population when it "
                "converges; Optuna %s has no restarts, so the engine runs it without them",
                restart,
                optuna.__version__,
            )
    seed = settings.seed(algorithm)
    if seed is None or isinstance(first, KatibSuggestions):  # the service seeds by the trials it is given
        return first
    return FreshDraws(first, lambda derived: build(_with_seed(algorithm, derived)), seed)


def trial_seed(random_state: int, number: int) -> int:
    """The seed of trial ``number``'s draws once a study is resumed, extended or shared: a hash of both, so every
    trial number gets its own stream, the same on every engine and every resume.

    >>> trial_seed(7, 6) == trial_seed(7, 6) != trial_seed(7, 7)
    True
    """
    digest = hashlib.sha256(f"{random_state}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _with_seed(algorithm: dict[str, Any], seed: int) -> dict[str, Any]:
    """``algorithm`` with its ``random_state`` replaced by ``seed``."""
    kept = [s for s in algorithm.get("algorithmSettings") or [] if s.get("name") != "random_state"]
    return {**algorithm, "algorithmSettings": [*kept, {"name": "random_state", "value": str(seed)}]}


class FreshDraws(optuna.samplers.BaseSampler):
    """The manifest's seeded sampler, whose draws never replay within one study.

    A sampler seeded with ``random_state`` draws the same stream at every engine start: on a resumed or extended
    study, or a second engine on a shared one, its random start-up would propose the assignments already run. This
    one keeps the seeded stream while it alone has asked every trial of the study from trial 0 on (one
    uninterrupted run: the sequence ``random_state`` always gave); from the first trial it did not ask in order (a
    resume, a budget raised, another engine's trial in between) each trial draws from its own stream, seeded by
    :func:`trial_seed` of ``random_state`` and the trial's number, which no other trial or engine shares.
    """

    def __init__(
        self,
        first: optuna.samplers.BaseSampler,
        build: Callable[[int], optuna.samplers.BaseSampler],
        seed: int,
    ) -> None:
        self.seeded, self.build, self.seed = first, build, seed
        self.current = first
        self.asked = 0
        self.in_order = True  # every trial of the study so far was asked here, in order

    def __str__(self) -> str:
        return f"FreshDraws({self.seeded})"

    def before_trial(self, study, trial) -> None:
        self.in_order = self.in_order and trial.number == self.asked
        self.asked += 1
        self.current = self.seeded if self.in_order else self.build(trial_seed(self.seed, trial.number))
        self.current.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.seeded.after_trial(study, trial, state, values)  # no sampler here keeps per-trial state for it

    def reseed_rng(self) -> None:
        self.seeded.reseed_rng()


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


class _Viewed(optuna.samplers.BaseSampler):
    """A sampler shown the study through :meth:`view` (a subclass says how Katib's service sees it)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.inner = sampler

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.inner})"

    def view(self, study: optuna.Study) -> optuna.Study:
        raise NotImplementedError

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(self.view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(self.view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(self.view(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(self.view(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(self.view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class FailedStayRunning(_Viewed):
    """Katib's Optuna service as it sees a failed trial: still RUNNING, for good.

    The service tells its study only trials that report the objective (katib pkg/suggestion/v1beta1/internal/
    trial.py:41-52, optuna/base_service.py:85-98), so a failed trial's Optuna trial is never finished, and
    ``multivariate-tpe``'s constant liar keeps counting it as a running trial. The sampler here sees each failed
    trial as running too (a trial cut short by an interruption is the engine's, not Katib's: it stays hidden).
    """

    def view(self, study: optuna.Study) -> optuna.Study:
        return _failed_running(study)


class EarlyStoppedPruned(_Viewed):
    """Goptuna as it sees an early-stopped trial: pruned (katib pkg/suggestion/v1beta1/goptuna/converter.go:
    195-196), so its CMA-ES, which learns from complete trials only, never sees it. :class:`KatibTells` shows
    such a trial as complete with the value Katib's other services tell; here it goes back to pruned."""

    def view(self, study: optuna.Study) -> optuna.Study:
        return optuna_compat.study_view(study, _stopped_pruned, also_fetch=(TrialState.COMPLETE,))


def _stopped_pruned(trials: list[FrozenTrial], wanted: frozenset[TrialState] | None) -> list[FrozenTrial]:
    shown = []
    for t in trials:
        if t.state != TrialState.COMPLETE or study_record.KATIB_TOLD not in t.user_attrs:
            shown.append(t)  # a trial the caller did not ask for is never fetched: only the COMPLETE extra
        elif wanted is None or TrialState.PRUNED in wanted:
            shown.append(optuna_compat.with_state(t, TrialState.PRUNED, None))
    return [t for t in shown if wanted is None or t.state in wanted]


def _failed_running(study: optuna.Study) -> optuna.Study:
    return optuna_compat.study_view(study, _shown_running, also_fetch=(TrialState.FAIL,))


def _shown_running(trials: list[FrozenTrial], wanted: frozenset[TrialState] | None) -> list[FrozenTrial]:
    shown = []
    for t in trials:
        if t.state != TrialState.FAIL:
            shown.append(t)
        elif not t.user_attrs.get(study_record.INTERRUPTED) and (wanted is None or TrialState.RUNNING in wanted):
            shown.append(optuna_compat.with_state(t, TrialState.RUNNING, None))
    return shown


def _record(trial: optuna.trial.FrozenTrial) -> suggestion.TrialRecord | None:
    """A study's trial as Katib's controller sends it (None: one Katib would not send, e.g. early-stopped unseen)."""
    condition = study_record.SAMPLER_CONDITIONS.get(trial.state.name)
    if condition is None or not trial.params:
        return None
    values = list(trial.values) if condition == "Succeeded" and trial.values is not None else None
    assignments = {name: suggestion.as_text(value) for name, value in trial.params.items()}
    return suggestion.TrialRecord(assignments, condition, values)
