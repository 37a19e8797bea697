"""katib-hpo-multiobjective: settings validated as its service refuses them, proposals rebuilt from the trials."""

from __future__ import annotations

import copy
import random

import pytest

from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment, manifests, suggestion

# int with a step, int log, double log, double with a step, categorical and discrete: every kind Katib sends
PARAMETERS = [
    {"name": "units", "parameterType": "int", "feasibleSpace": {"min": "16", "max": "64", "step": "16"}},
    {"name": "layers", "parameterType": "int",
     "feasibleSpace": {"min": "1", "max": "8", "distribution": "logUniform"}},
    {"name": "lr", "parameterType": "double",
     "feasibleSpace": {"min": "0.0001", "max": "0.1", "distribution": "logUniform"}},
    {"name": "dropout", "parameterType": "double", "feasibleSpace": {"min": "0.0", "max": "0.5", "step": "0.1"}},
    {"name": "optimizer", "parameterType": "categorical", "feasibleSpace": {"list": ["adam", "sgd"]}},
    {"name": "batch", "parameterType": "discrete", "feasibleSpace": {"list": ["16", "32", "64"]}},
]
OBJECTIVES = "val_loss:minimize, train_time_s:minimize, val_dir_acc:maximize"


def spec(**settings: str) -> dict:
    values = {"objectives": OBJECTIVES, "random_state": "3", **settings}
    return {
        "objective": {"type": "minimize", "objectiveMetricName": "val_loss",
                      "additionalMetricNames": ["train_time_s", "val_dir_acc", "model_size_mb"]},
        "algorithm": {"algorithmName": suggestion.ALGORITHM,
                      "algorithmSettings": [{"name": k, "value": v} for k, v in values.items() if v is not None]},
        "parameters": copy.deepcopy(PARAMETERS),
    }


def finished(setup: suggestion.Setup, n: int, seed: int = 0) -> list[suggestion.TrialRecord]:
    """``n`` Succeeded trials proposed one after another, with made-up values for the three objectives."""
    rng = random.Random(seed)
    trials: list[suggestion.TrialRecord] = []
    for _ in range(n):
        assignment = suggestion.propose(setup, trials, 1)[0]
        trials.append(suggestion.TrialRecord(assignment, "Succeeded", [rng.random(), rng.random(), rng.random()]))
    return trials


def assert_feasible(assignment: dict[str, str]) -> None:
    """Every value parses as its type and lies in its feasible space, on its step or in its list."""
    assert set(assignment) == {p["name"] for p in PARAMETERS}
    assert int(assignment["units"]) in (16, 32, 48, 64)
    assert 1 <= int(assignment["layers"]) <= 8
    assert 0.0001 <= float(assignment["lr"]) <= 0.1
    assert round(float(assignment["dropout"]) * 10, 9) in (0, 1, 2, 3, 4, 5)
    assert assignment["optimizer"] in ("adam", "sgd") and assignment["batch"] in ("16", "32", "64")


@pytest.mark.parametrize("sampler", suggestion.SAMPLERS)
def test_proposals_lie_in_the_feasible_space_and_respect_types_steps_and_lists(sampler):
    setup, _ = suggestion.setup_from_spec(spec(sampler=sampler))
    trials = finished(setup, 14)
    # the random start and the model-based proposals after it (14 > n_startup_trials 10) are all feasible
    for trial in trials:
        assert_feasible(dict(trial.assignments))
    for assignment in suggestion.propose(setup, trials, 3):
        assert_feasible(assignment)


@pytest.mark.parametrize("sampler", suggestion.SAMPLERS)
def test_a_batch_equals_requests_of_one_and_a_rebuild_answers_the_same(sampler):
    setup, _ = suggestion.setup_from_spec(spec(sampler=sampler))
    trials = finished(setup, 12)
    batch = suggestion.propose(setup, trials, 3)
    one_by_one: list[dict[str, str]] = []
    for _ in range(3):
        pending = [suggestion.TrialRecord(a, "Running") for a in one_by_one]
        one_by_one += suggestion.propose(setup, [*trials, *pending], 1)
    # three at once are three requests of one, each seeing the ones before as running
    assert batch == one_by_one
    # parallel proposals differ from each other
    assert len({tuple(sorted(a.items())) for a in batch}) == 3
    # nothing is kept between calls: the same trials, in another order, give the same proposals
    assert suggestion.propose(setup, list(reversed(trials)), 3) == batch


def test_trials_are_told_as_katibs_optuna_service_tells_them():
    setup, goals = suggestion.setup_from_spec(spec())
    trials = finished(setup, 11)
    base = suggestion.propose(setup, trials, 1)
    stopped = [suggestion.TrialRecord(t.assignments, "EarlyStopped", t.values) for t in trials]
    # an EarlyStopped trial with its observation is told like a Succeeded one
    assert suggestion.propose(setup, stopped, 1) == base
    failed = [*trials[:-1], suggestion.TrialRecord(trials[-1].assignments, "Failed", None)]
    running = [*trials[:-1], suggestion.TrialRecord(trials[-1].assignments, "Running", None)]
    # a Failed trial stays asked but untold, exactly like a Running one (Katib's service never tells it)
    assert suggestion.propose(setup, failed, 1) == suggestion.propose(setup, running, 1)
    # an observation without every objective is no observation: the trial counts as untold
    assert suggestion.observed_values({"val_loss": "0.5", "train_time_s": "3"}, goals) is None
    assert suggestion.observed_values({"val_loss": "0.5", "train_time_s": "3", "val_dir_acc": "nan"}, goals) is None
    assert suggestion.observed_values({"val_loss": "0.5", "train_time_s": "3", "val_dir_acc": "0.6"}, goals) == [
        0.5, 3.0, 0.6]
    outside = suggestion.TrialRecord({**trials[0].assignments, "units": "24"}, "Succeeded", [0.0, 0.0, 1.0])
    # a trial outside the feasible space (an edited manifest) is ignored, apart from the count that seeds the call
    assert suggestion.parse_assignments(setup, outside.assignments) is None
    assert_feasible(suggestion.propose(setup, [*trials, outside], 1)[0])


def test_without_random_state_proposals_still_lie_in_the_space():
    setup, _ = suggestion.setup_from_spec(spec(random_state=None))
    # no seed: not reproducible, but every proposal is feasible
    assert setup.sampler.seed is None
    for assignment in suggestion.propose(setup, [], 2):
        assert_feasible(assignment)


@pytest.mark.parametrize(("settings", "message"), [
    ({"sampler": "cmaes"}, "setting sampler = 'cmaes' must be tpe or nsga2"),
    ({"random_state": "-1"}, "setting random_state = '-1' must be an integer >= 0"),
    ({"random_state": "seven"}, "setting random_state = 'seven' must be an integer >= 0"),
    ({"n_startup_trials": "-2"}, "setting n_startup_trials = '-2' must be an integer >= 0"),
    ({"n_ei_candidates": "0"}, "setting n_ei_candidates = '0' must be an integer >= 1"),
    ({"sampler": "nsga2", "population_size": "1"}, "setting population_size = '1' must be an integer >= 2"),
    ({"sampler": "nsga2", "crossover_prob": "1.5"}, "setting crossover_prob = '1.5' must be a number in [0, 1]"),
    ({"sampler": "nsga2", "mutation_prob": "x"}, "setting mutation_prob = 'x' must be a number in [0, 1]"),
    ({"sampler": "nsga2", "swapping_prob": "-0.1"}, "setting swapping_prob = '-0.1' must be a number in [0, 1]"),
    ({"population_size": "10"}, "setting population_size is for sampler nsga2, not tpe"),
    ({"sampler": "nsga2", "n_ei_candidates": "8"}, "setting n_ei_candidates is for sampler tpe, not nsga2"),
    ({"seed": "3"}, "unknown setting seed for algorithm katib-hpo-multiobjective"),
    ({"objectives": ""}, "needs the setting objectives"),
    ({"objectives": "val_loss:minimize, n_params:minimize"}, "n_params is not in additionalMetricNames"),
    ({"objectives": "val_loss:maximize"}, "val_loss is the Katib objective, which the manifest says to minimize"),
    ({"objectives": "val_loss:minimize, train_time_s"}, "'train_time_s' is not METRIC:minimize or METRIC:maximize"),
    ({"objectives": "train_time_s:minimize, train_time_s:maximize"}, "train_time_s is listed twice"),
])
def test_every_invalid_setting_is_refused_in_one_line(settings, message):
    problems = suggestion.spec_problems(spec(**settings))
    # exactly one problem, naming the setting, its value and the rule
    assert len(problems) == 1 and message in problems[0], problems
    with pytest.raises(ConfigError, match="katib-hpo-multiobjective|objectives"):
        suggestion.setup_from_spec(spec(**settings))


def test_parameters_and_nas_the_service_cannot_search_are_refused():
    normal = spec()
    normal["parameters"][2]["feasibleSpace"]["distribution"] = "normal"
    # Optuna's distributions are uniform and logUniform only (the same rule as Katib's Optuna service)
    (problem,) = suggestion.spec_problems(normal)
    assert problem.startswith("parameter lr: distribution 'normal'") and "use uniform or logUniform" in problem
    nas = spec()
    nas["nasConfig"] = {"graphConfig": {"numLayers": 3}}
    # architecture search is not this algorithm's
    assert "not architectures" in suggestion.spec_problems(nas)[0]
    empty = spec()
    empty["parameters"] = []
    assert "needs at least one parameter" in suggestion.spec_problems(empty)[0]


@pytest.mark.parametrize(("parameter", "problem"), [
    ({"name": "opt", "parameterType": "categorical", "feasibleSpace": {"list": []}},
     "parameter opt: a categorical needs a non-empty feasibleSpace.list"),
    ({"name": "rate", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.01"}},
     "parameter rate: bad feasibleSpace"),
    ({"name": "u", "parameterType": "unknown", "feasibleSpace": {"min": "1", "max": "2"}},
     "parameter u: unknown parameterType 'unknown'"),
    ({"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "inf"}},
     "parameter x: feasibleSpace min and max must be finite numbers"),
    ({"name": "units", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}},
     "parameter name 'units' is used 2 times"),
    ({"name": "c", "parameterType": "categorical", "feasibleSpace": {"list": ["a", "b", "a"]}},
     "parameter c: feasibleSpace.list holds a more than once"),
])
def test_every_malformed_parameter_is_one_problem_naming_it(parameter, problem):
    doc = spec()
    doc["parameters"].append(parameter)
    problems = suggestion.spec_problems(doc)
    assert len(problems) == 1 and problems[0].startswith(problem)
    with pytest.raises(ConfigError):  # never a ValueError or OverflowError from Optuna, which gRPC would call UNKNOWN
        suggestion.setup_from_spec(doc)


def test_a_request_stops_when_its_clock_says_so():
    setup, _ = suggestion.setup_from_spec(spec())
    seen: list[int] = []

    def clock(done: int) -> None:
        seen.append(done)
        if done == 2:
            raise TimeoutError("budget spent")

    with pytest.raises(TimeoutError):
        suggestion.propose(setup, [], 10, clock)
    assert seen == [0, 1, 2]  # checked before each proposal; nothing computed after the clock stopped it


def test_the_shipped_pareto_experiment_is_the_seed_use_case():
    doc = manifests.pareto_experiment()
    # the rendered manifest uses this module's algorithm name and three objectives, as the engine reads them
    assert manifests.ALGORITHM == suggestion.ALGORITHM
    assert [o.metric for o in experiment.objectives(doc)] == ["val_loss", "train_time_s", "model_size_mb"]
    # the service accepts it as it is, and leaves early stopping out (a stopped trial's time is not its own)
    assert suggestion.spec_problems(doc["spec"]) == []
    assert "earlyStopping" not in doc["spec"]
