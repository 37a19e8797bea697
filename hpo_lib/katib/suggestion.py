"""Multi-objective proposals for a Katib Experiment: its spec and its trials in, the next assignments out.

Katib optimizes one objective; this is the search it lacks, behind Katib's own ``Suggestion`` API
(:mod:`hpo_lib.katib.service` serves it) and inside the local engine (``hpo tune``), through this one function,
:func:`propose`. Both call it with the same trials, so a laptop run and a cluster run of one manifest and seed
propose the same configurations.

The algorithm is ``katib-hpo-multiobjective``; its ``algorithmSettings`` (all strings, as Katib passes them):

* ``objectives`` (required): ``metric:direction`` pairs, Katib's objective first, the others from
  ``additionalMetricNames``, e.g. ``val_loss:minimize, train_time_s:minimize, model_size_mb:minimize``;
* ``sampler``: ``tpe`` (default; Optuna's multi-objective TPE, multivariate, with the constant liar) or ``nsga2``;
* ``random_state``: an integer >= 0; without it the proposals are not reproducible;
* tpe only: ``n_startup_trials`` (>= 0, default 10), ``n_ei_candidates`` (>= 1, default 24);
* nsga2 only: ``population_size`` (>= 2, default 50), ``crossover_prob``, ``mutation_prob`` and
  ``swapping_prob`` (each in [0, 1]).

Stateless, unlike Katib's Optuna service (whose study lives in the pod's memory and is lost on a restart): every
proposal rebuilds the study from the trials it is given. Trials are handled as Katib's Optuna service handles them:
a Succeeded or EarlyStopped trial with a value for every objective is told (COMPLETE); every other trial (Created,
Running, Failed, Killed, Unknown, or without a usable value) stays asked but never told, i.e. RUNNING, which the
constant liar counts as a pessimistic point so parallel proposals spread out. Trials whose assignments lie outside
the feasible space are ignored. The study is rebuilt in one canonical order (by assignments), so a proposal depends
on which trials ran and what they measured, not on the order the cluster or the laptop lists them; its seed is
``random_state`` plus the number of trials given, so the proposals of one request differ from each other and from
those of the request before. A request for n suggestions is n proposals in a row, each seeing the ones before it as
running: the same as n requests of one.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo_lib import limits
from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment, settings, space
from hpo_lib.study_record import CREATED, EARLY_STOPPED, FAILED, KILLED, METRICS_UNAVAILABLE, RUNNING, SUCCEEDED

ALGORITHM = experiment.MULTI_OBJECTIVE_ALGORITHM
SAMPLERS = settings.MULTI_OBJECTIVE_SAMPLERS
TOLD = (SUCCEEDED, EARLY_STOPPED)  # the Katib conditions whose observation is told (Katib's Optuna service)
# in the order of the Suggestion API's TrialStatus.TrialConditionType enum (0 .. 7)
CONDITIONS = (CREATED, RUNNING, SUCCEEDED, KILLED, FAILED, METRICS_UNAVAILABLE, EARLY_STOPPED, "Unknown")
RULES = settings.MULTI_OBJECTIVE  # each setting's parser, rule, sampler and default


@dataclass(frozen=True)
class Sampler:
    """The validated ``algorithmSettings``: which sampler, its seed and its options."""

    name: str = "tpe"
    seed: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # the sampler's keyword arguments (without the seed)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as Katib's suggestion controller sends it: assignments, last condition, objective values."""

    assignments: Mapping[str, str]  # parameter -> value as text (what Katib substitutes into the trial)
    condition: str = SUCCEEDED  # Katib's last condition, one of CONDITIONS
    values: Sequence[float] | None = None  # one per objective, in order; None: no (usable) observation


@dataclass(frozen=True)
class Setup:
    """What a proposal needs from the Experiment: the feasible space, the objectives' directions, the sampler."""

    distributions: Mapping[str, BaseDistribution]
    directions: Sequence[str]
    sampler: Sampler


# ----------------------------------------------------------------------------------------------- validation
def sampler_settings(algorithm: Mapping[str, Any]) -> Sampler:
    """The ``algorithm`` section's settings validated (the first broken rule raises ConfigError)."""
    problems = settings_problems(algorithm)
    if problems:
        raise ConfigError(problems[0])
    values = experiment.settings(algorithm)
    name = values.get("sampler", "tpe")
    options = {
        setting: RULES.settings[setting].value(text)
        for setting, text in values.items()
        if RULES.sampler_of.get(setting) == name
    }
    if name == "tpe":
        options = {**RULES.defaults, **options}
    seed = RULES.settings["random_state"].value(values["random_state"]) if "random_state" in values else None
    return Sampler(name=name, seed=seed, options=options)


def settings_problems(algorithm: Mapping[str, Any]) -> list[str]:
    """Every setting the service refuses, each in one line naming the setting, its value and the rule."""
    where = f"algorithm {ALGORITHM}"
    problems = []
    values = experiment.settings(algorithm)
    chosen = values.get("sampler", "tpe")
    for name, value in values.items():
        if name not in RULES.settings:
            problems.append(f"unknown setting {name} for {where}; it accepts {', '.join(RULES.settings)}")
            continue
        owner = RULES.sampler_of.get(name)
        if RULES.settings[name].value(value) is None:
            problems.append(f"{where} setting {name} = {value!r} must be {RULES.settings[name].rule}")
        elif owner is not None and chosen in SAMPLERS and owner != chosen:
            problems.append(f"{where} setting {name} is for sampler {owner}, not {chosen}: drop it or set sampler")
    if not values.get(experiment.OBJECTIVES_SETTING, "").strip():
        problems.append(
            f"{where} needs the setting {experiment.OBJECTIVES_SETTING}, e.g. "
            "'val_loss:minimize, train_time_s:minimize': the metrics it trades off"
        )
    return problems


def spec_problems(spec: Mapping[str, Any]) -> list[str]:
    """Everything in an Experiment ``spec`` that the service refuses (settings, objectives, parameters)."""
    if spec.get("nasConfig"):
        return [f"algorithm {ALGORITHM} searches hyperparameters (spec.parameters), not architectures (nasConfig)"]
    problems = settings_problems(spec.get("algorithm") or {})
    if not any(p.startswith(f"algorithm {ALGORITHM} needs") for p in problems):
        try:
            experiment.objectives({"spec": spec})
        except ConfigError as exc:
            problems.append(str(exc))
    parameters = spec.get("parameters") or []
    if not parameters:
        problems.append(f"algorithm {ALGORITHM} needs at least one parameter in spec.parameters")
    names = [str(p.get("name") or "") for p in parameters]
    for name in sorted({n for n, count in Counter(names).items() if count > 1}):
        problems.append(f"parameter name {name!r} is used {names.count(name)} times: each parameter needs its own")
    for parameter in parameters:
        problems.extend(_parameter_problems(parameter))
    return problems


def _parameter_problems(parameter: Mapping[str, Any]) -> list[str]:
    """Why one parameter cannot be searched, each naming it (none when it can)."""
    name, kind = parameter.get("name"), parameter.get("parameterType")
    if not name:
        return [f"a {kind} parameter has no name: each parameter needs one"]
    listed = (parameter.get("feasibleSpace") or {}).get("list") or []
    if kind in ("categorical", "discrete"):
        if not listed:
            return [f"parameter {name}: a {kind} needs a non-empty feasibleSpace.list"]
        if limits.LIST_VALUES.exceeded(len(listed)):
            return [limits.LIST_VALUES.refusal(f"parameter {name}'s feasibleSpace.list", len(listed))]
        repeated = sorted(str(v) for v, count in Counter(str(v) for v in listed).items() if count > 1)
        if repeated:
            return [f"parameter {name}: feasibleSpace.list holds {', '.join(repeated)} more than once"]
    try:
        distribution = space.from_katib_parameter(dict(parameter))
    except ConfigError as exc:
        return [str(exc)]
    except (ValueError, TypeError, OverflowError) as exc:
        return [f"parameter {name}: bad feasibleSpace {dict(parameter.get('feasibleSpace') or {})}: {exc}"]
    if isinstance(distribution, (IntDistribution, FloatDistribution)):
        if not (math.isfinite(distribution.low) and math.isfinite(distribution.high)):
            return [f"parameter {name}: feasibleSpace min and max must be finite numbers"]
    return []


def lint_findings(doc: Mapping[str, Any]) -> list[Any]:
    """``hpo manifests validate``'s findings for an Experiment of this algorithm: each refusal of the service's
    ``ValidateAlgorithmSettings`` as an R2 error (Katib would mark the Experiment Failed); none for other algorithms."""
    from hpo_lib.katib import lint

    spec = doc.get("spec")
    algorithm = spec.get("algorithm") if isinstance(spec, Mapping) else None
    if not isinstance(algorithm, Mapping) or algorithm.get("algorithmName") != ALGORITHM:
        return []
    assert isinstance(spec, Mapping)  # algorithm came from it
    return [
        lint.Finding("R2", "error", f"{problem} (hpo katib suggestion-service refuses it: the Experiment fails)")
        for problem in spec_problems(spec)
    ]


def setup_from_spec(spec: Mapping[str, Any]) -> tuple[Setup, list[experiment.Objective]]:
    """The proposal setup of an Experiment ``spec`` and its objectives, or ConfigError naming every problem."""
    problems = spec_problems(spec)
    if problems:
        raise ConfigError("; ".join(problems))
    goals = experiment.objectives({"spec": spec})
    distributions = {p["name"]: space.from_katib_parameter(p) for p in spec["parameters"]}
    sampler = sampler_settings(spec["algorithm"])
    return Setup(distributions, [g.direction for g in goals], sampler), goals


def observed_values(metrics: Mapping[str, str], goals: Sequence[experiment.Objective]) -> list[float] | None:
    """The objectives' values from a trial's observation (metric -> text), or None unless each is a finite number."""
    values = []
    for goal in goals:
        try:
            value = float(metrics[goal.metric])
        except (KeyError, ValueError):
            return None
        if not math.isfinite(value):
            return None
        values.append(value)
    return values


# ----------------------------------------------------------------------------------------------- proposals
def propose(
    setup: Setup,
    trials: Sequence[TrialRecord],
    count: int,
    before_each: Callable[[int], None] | None = None,
) -> list[dict[str, str]]:
    """``count`` new assignments (parameter -> value as text), each inside the feasible space (see the module).
    ``before_each(i)`` runs before the i-th proposal: the service's clock, which raises to stop a request."""
    if count < 0:
        raise ConfigError(f"the number of suggestions must be at least 0, got {count}")
    proposals: list[dict[str, str]] = []
    for i in range(count):
        if before_each is not None:
            before_each(i)
        pending = [TrialRecord(p, condition=RUNNING) for p in proposals]
        proposals.append(_propose_one(setup, [*trials, *pending]))
    return proposals


def as_text(value: Any) -> str:
    """A parameter value as Katib carries it (Katib's own services send ``str(value)``)."""
    return str(value)


def parse_assignments(setup: Setup, assignments: Mapping[str, str]) -> dict[str, Any] | None:
    """Assignments as the distributions' typed values, or None if one is missing or outside the feasible space."""
    params: dict[str, Any] = {}
    for name, distribution in setup.distributions.items():
        text = assignments.get(name)
        if text is None:
            return None
        value = _typed(distribution, text)
        if value is None:
            return None
        params[name] = value
    return params


def _typed(distribution: BaseDistribution, text: str) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return text if text in distribution.choices else None
    try:
        number: float = int(text) if isinstance(distribution, IntDistribution) else float(text)
    except ValueError:
        return None
    assert isinstance(distribution, (IntDistribution, FloatDistribution))  # the three kinds from_katib_parameter makes
    if not distribution.low <= number <= distribution.high:
        return None
    if isinstance(distribution, IntDistribution) and (number - distribution.low) % distribution.step:
        return None
    return number


def _propose_one(setup: Setup, trials: Sequence[TrialRecord]) -> dict[str, str]:
    told: list[tuple[str, dict[str, Any], list[float]]] = []
    pending: list[tuple[str, dict[str, Any]]] = []
    for record in trials:
        params = parse_assignments(setup, record.assignments)
        if params is None:
            continue  # another space's trial (an edited manifest): nothing Katib's service could tell either
        key = ",".join(f"{name}:{params[name]}" for name in sorted(params))
        values = list(record.values) if record.values is not None else None
        if record.condition in TOLD and values is not None and len(values) == len(setup.directions):
            told.append((key, params, values))
        else:
            pending.append((key, params))
    told.sort(key=lambda item: (item[0], item[2]))
    pending.sort(key=lambda item: item[0])
    seed = None if setup.sampler.seed is None else (setup.sampler.seed + len(trials)) % 2**32
    # cast: Setup.directions holds only minimize/maximize (Objective and StudyDirection names, lower-cased)
    directions = cast(list[Literal["minimize", "maximize"]], list(setup.directions))
    study = optuna.create_study(directions=directions, sampler=_sampler(setup.sampler, seed))
    distributions = dict(setup.distributions)
    if setup.sampler.name == "nsga2":
        # NSGA-II keeps each trial's generation in the study: replay the history through its own ask/tell
        for _, params, values in told:
            study.enqueue_trial(params)
            study.tell(study.ask(distributions), values)
        for _, params in pending:
            study.enqueue_trial(params)
            study.ask(distributions)
    else:
        for _, params, values in told:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, values=values))
        for _, params in pending:
            study.add_trial(
                optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=distributions)
            )
    trial = study.ask(distributions)
    return {name: as_text(trial.params[name]) for name in setup.distributions}


def _sampler(sampler: Sampler, seed: int | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # multivariate and the constant liar are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **sampler.options)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, **sampler.options)
