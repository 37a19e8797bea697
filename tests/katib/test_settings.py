"""Katib's algorithm settings (hpo_lib.katib.settings): one table that lint, the samplers, the pruners and the
rendered manifests all read."""

from __future__ import annotations

import optuna
import pytest

from hpo_lib.engine import pruners, sampling
from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract, manifests, settings, space


def block(algorithm: str, **values: str) -> dict:
    return {"algorithmName": algorithm, "algorithmSettings": [{"name": k, "value": v} for k, v in values.items()]}


@pytest.mark.parametrize("algorithm, values, expected", [
    ("tpe", {"gamma": "0.3", "prior_weight": "2", "n_EI_candidates": "12", "random_state": "3"},
     {"gamma": 0.3, "prior_weight": 2.0, "n_EI_candidates": 12, "random_state": 3}),
    ("multivariate-tpe", {"n_startup_trials": "0", "n_ei_candidates": "8"},
     {"n_startup_trials": 0, "n_ei_candidates": 8}),
    ("cmaes", {"sigma": "0.5", "restart_strategy": "none"}, {"sigma": 0.5, "restart_strategy": "none"}),
    # what Goptuna runs (katib pkg/suggestion/v1beta1/goptuna/converter.go:44-66): bipop, any int seed, sigma <= 0
    # (its default sigma then), and a name it does not know (skipped)
    ("cmaes", {"restart_strategy": "bipop", "random_state": "-1", "sigma": "-0.5", "popsize": "8"},
     {"restart_strategy": "bipop", "random_state": -1, "sigma": -0.5}),
    ("medianstop", {"min_trials_required": "5", "start_step": "1"}, {"min_trials_required": 5, "start_step": 1}),
])
def test_typed_values_parse_each_accepted_setting(algorithm, values, expected):
    known = settings.EARLY_STOPPINGS if algorithm == "medianstop" else settings.ALGORITHMS
    # each value as the type its service parses it to
    assert settings.typed_values("algorithm", block(algorithm, **values), known) == expected
    # and lint finds nothing to report about them
    assert settings.problems("algorithm", block(algorithm, **values), known) == []


@pytest.mark.parametrize("algorithm, name, value, rule", [
    ("tpe", "gamma", "1", "a number in (0, 1)"),
    ("tpe", "prior_weight", "0", "a number > 0"),
    ("tpe", "n_EI_candidates", "0", "an integer > 0"),
    ("multivariate-tpe", "n_startup_trials", "-1", "an integer >= 0"),
    ("multivariate-tpe", "random_state", "4.0", "an integer >= 0"),
    # Goptuna cannot parse these (converter.go:44-65): gRPC Internal, which Katib's controller takes as valid
    # (suggestionclient.go:228-246), so the Experiment stays Running with no trial: refused, naming the stall
    ("cmaes", "sigma", "x", "a number"),
    ("cmaes", "random_state", "4.0", "an integer"),
    ("cmaes", "restart_strategy", "None", "ipop, bipop or none"),
    ("cmaes", "restart_strategy", "IPOP", "ipop, bipop or none"),
])
def test_a_value_that_breaks_its_rule_is_one_message_for_lint_and_the_factories(algorithm, name, value, rule):
    service = settings.ALGORITHMS[algorithm].service
    message = f"algorithm setting {name} = {value!r} must be {rule} for {algorithm} ({service})"
    if algorithm == "cmaes":
        message += settings.GOPTUNA_STALL
        assert "stay Running with no trial" in message
    # lint reports it ...
    assert settings.problems("algorithm", block(algorithm, **{name: value}), settings.ALGORITHMS) == [message]
    # ... and a factory reading typed values refuses it in the same words
    with pytest.raises(ConfigError) as info:
        settings.typed_values("algorithm", block(algorithm, **{name: value}), settings.ALGORITHMS)
    assert str(info.value) == message


def test_unknown_settings_are_reported_but_not_read():
    tpe = block("tpe", n_startup_trials="5", random_state="1")
    # the service refuses a setting it does not know, naming what it accepts (and the Hyperopt/Optuna confusion)
    assert settings.problems("algorithm", tpe, settings.ALGORITHMS) == [
        "algorithm setting 'n_startup_trials' is unknown to tpe (Hyperopt), which accepts only gamma, prior_weight, "
        "n_EI_candidates, random_state (tpe runs on Hyperopt by default; multivariate-tpe runs on Optuna)"]
    # the factories read only the accepted ones
    assert settings.typed_values("algorithm", tpe, settings.ALGORITHMS) == {"random_state": 1}
    # an algorithm whose rules are not known is neither checked nor read
    assert settings.problems("algorithm", block("hyperband", x="y"), settings.ALGORITHMS) == []
    assert settings.typed_values("algorithm", block("hyperband", x="y"), settings.ALGORITHMS) == {}


def test_seed_reads_random_state_of_any_algorithm():
    assert settings.seed(block("bayesianoptimization", random_state="9")) == 9
    assert settings.seed(block("random")) is None
    assert settings.seed(None) is None
    with pytest.raises(ConfigError, match="random_state = '-2' must be an integer >= 0"):
        settings.seed(block("random", random_state="-2"))
    # Goptuna's cmaes seeds with any integer (strconv.Atoi, katib goptuna/converter.go:44-49)
    assert settings.seed(block("cmaes", random_state="-1")) == -1


def test_the_factories_use_the_tables_defaults():
    # a medianstop section without settings gets Katib's defaults from the table
    pruner = pruners.from_katib_settings(block("medianstop"))
    assert (pruner.min_trials_required, pruner.start_step) == (3, 4) == tuple(
        settings.EARLY_STOPPINGS["medianstop"].defaults.values())
    # tpe without settings: Hyperopt's defaults
    sampler = sampling.make_sampler(block("tpe"), {"x": optuna.distributions.FloatDistribution(0, 1)}, 4)
    assert sampler._n_ei_candidates == settings.ALGORITHMS["tpe"].defaults["n_EI_candidates"] == 24
    # a setting the service refuses stops the sampler before any trial, in lint's words
    with pytest.raises(ConfigError, match="algorithm setting gamma = '2' must be a number in \\(0, 1\\) for tpe"):
        sampling.make_sampler(block("tpe", gamma="2"), {"x": optuna.distributions.FloatDistribution(0, 1)}, 4)


def test_the_shipped_manifests_write_settings_their_services_accept():
    doc = manifests.experiment("lstm")
    # what the manifests render passes the table, so it passes lint's R2 and the services
    assert settings.problems("algorithm", doc["spec"]["algorithm"], settings.ALGORITHMS) == []
    assert settings.problems("earlyStopping", doc["spec"]["earlyStopping"], settings.EARLY_STOPPINGS) == []
    # a setting the algorithm does not accept cannot be rendered
    with pytest.raises(ConfigError, match="'seed' is unknown to multivariate-tpe"):
        settings.section("multivariate-tpe", {"seed": "1"})
    with pytest.raises(ConfigError, match="earlyStopping setting start_step = '0' must be an integer >= 1"):
        settings.section("medianstop", {"start_step": "0"})
    # the multi-objective algorithm's settings are its service's to check (hpo_lib.katib.suggestion)
    assert settings.section(contract.MULTI_OBJECTIVE_ALGORITHM, {"sampler": "tpe"})["algorithmSettings"] == [
        {"name": "sampler", "value": "tpe"}]


@pytest.mark.filterwarnings("ignore:The distribution is specified by")  # Optuna trims an off-grid high, as expected
@pytest.mark.parametrize("low, high, step", [
    (0.0, 0.5, 0.25), (0.001, 0.003, 0.001), (0.0, 0.6, 0.25), (0.1, 0.7, 0.1), (0.0, 1.0, 0.3), (1e-4, 1e-3, 1e-4),
])
def test_grid_size_counts_the_points_optunas_grid_sampler_gets(low, high, step):
    parameter = {"name": "x", "parameterType": "double",
                 "feasibleSpace": {"min": str(low), "max": str(high), "step": str(step)}}
    sampler = sampling.make_sampler({"algorithmName": "grid"}, {"x": space.from_katib_parameter(parameter)}, 1)
    points = sampler._search_space["x"]  # read-only look at the grid the engine runs
    # lint counts the combinations on the manifest's text; the engine on Optuna's (trimmed) distribution
    assert settings.grid_size(low, high, step) == len(points)
    # every point lies within the range
    assert points[0] == low and points[-1] <= high + 1e-12


def test_the_multi_objective_algorithm_keeps_its_settings_in_the_table():
    rules = settings.MULTI_OBJECTIVE
    # each sampler-specific setting belongs to one of the algorithm's samplers, and only tpe's have defaults
    assert set(rules.sampler_of.values()) == set(settings.MULTI_OBJECTIVE_SAMPLERS)
    assert {rules.sampler_of[name] for name in rules.defaults} == {"tpe"}
    # its service reads the table: an nsga2 setting, typed, and tpe's defaults when it is chosen
    from hpo_lib.katib import suggestion

    nsga2 = suggestion.sampler_settings(block(contract.MULTI_OBJECTIVE_ALGORITHM, objectives="a:minimize",
                                              sampler="nsga2", population_size="8", random_state="1"))
    assert (nsga2.name, nsga2.seed, dict(nsga2.options)) == ("nsga2", 1, {"population_size": 8})
    tpe = suggestion.sampler_settings(block(contract.MULTI_OBJECTIVE_ALGORITHM, objectives="a:minimize"))
    assert dict(tpe.options) == dict(rules.defaults)


def test_the_engines_choice_lists_are_defined_once():
    from hpo_lib.engine import options

    # the pruner factory's names are the face's choices without "manifest" (the Experiment's own rule)
    assert pruners.PRUNERS == tuple(p for p in options.PRUNERS if p != "manifest")
    assert sampling.MO_SAMPLERS is options.MO_SAMPLERS
