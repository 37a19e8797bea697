"""The sampler each algorithm of Katib's default katib-config gets, and each served one run through `hpo tune`."""

from __future__ import annotations

import copy
import importlib.util
import math

import optuna
import pytest
import yaml

from hpo_lib import cli
from hpo_lib.engine import sampling
from hpo_lib.errors import ConfigError
from hpo_lib.katib import lint, space
from tests.conftest import BASE, manifest

# int, double (log), categorical and discrete parameters, in the shape of Katib's hp-tuning examples
PARAMETERS = [
    {"name": "lr", "parameterType": "double",
     "feasibleSpace": {"min": "0.001", "max": "0.1", "distribution": "logUniform"}},
    {"name": "units", "parameterType": "int", "feasibleSpace": {"min": "8", "max": "12"}},
    {"name": "optimizer", "parameterType": "categorical", "feasibleSpace": {"list": ["adam", "sgd"]}},
    {"name": "batch", "parameterType": "discrete", "feasibleSpace": {"list": ["16", "32"]}},
]
GRID_PARAMETERS = [
    {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0.0", "max": "0.5", "step": "0.25"}},
    {"name": "layers", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "4", "distribution": "logUniform"}},
    {"name": "optimizer", "parameterType": "categorical", "feasibleSpace": {"list": ["adam", "sgd"]}},
]
HAS_CMAES = importlib.util.find_spec("cmaes") is not None
ALGORITHMS = {
    "tpe": [{"name": "gamma", "value": "0.3"}, {"name": "prior_weight", "value": "2.0"},
            {"name": "n_EI_candidates", "value": "12"}, {"name": "random_state", "value": "3"}],
    "multivariate-tpe": [{"name": "n_startup_trials", "value": "2"}, {"name": "n_ei_candidates", "value": "8"},
                         {"name": "random_state", "value": "3"}],
    "random": [{"name": "random_state", "value": "3"}],
    "cmaes": [{"name": "sigma", "value": "0.5"}, {"name": "restart_strategy", "value": "none"},
              {"name": "random_state", "value": "3"}],
    "grid": [{"name": "random_state", "value": "3"}],
}


def distributions(parameters):
    return {p["name"]: space.from_katib_parameter(p) for p in parameters}


def test_tpe_takes_hyperopts_settings_with_hyperopts_meaning():
    sampler = sampling.make_sampler({"algorithmName": "tpe", "algorithmSettings": ALGORITHMS["tpe"]},
                                    distributions(PARAMETERS), 4)
    params = sampler._parzen_estimator_parameters  # read-only look at what the constructor was given
    # prior_weight reaches Optuna as given
    assert params.prior_weight == 2.0
    # n_EI_candidates is Optuna's n_ei_candidates
    assert sampler._n_ei_candidates == 12
    # gamma is Hyperopt's: ceil(gamma * sqrt(n)) capped at 25, not Optuna's 10 % of n
    assert [sampler._gamma(n) for n in (1, 16, 100, 10_000)] == [1, 2, 3, 25]


@pytest.mark.parametrize("n", [1, 4, 9, 50, 400, 100_000])
def test_hyperopt_gamma_is_ceil_gamma_sqrt_n_capped_at_25(n):
    # the "below" set Hyperopt keeps for gamma 0.25
    assert sampling.hyperopt_gamma(0.25)(n) == min(math.ceil(0.25 * math.sqrt(n)), 25)


@pytest.mark.skipif(HAS_CMAES, reason="the cmaes package is installed")
def test_cmaes_without_its_package_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="needs the Python package cmaes"):
        sampling.make_sampler({"algorithmName": "cmaes"}, distributions(PARAMETERS[:2]), 4)


def test_cmaes_restart_strategy_ipop_is_refused_naming_the_setting():
    # Optuna >= 4.4 ignores restart_strategy, so the run stops rather than drop it
    with pytest.raises(ConfigError, match="restart_strategy = 'ipop'"):
        sampling.make_sampler({"algorithmName": "cmaes", "algorithmSettings": [
            {"name": "restart_strategy", "value": "ipop"}]}, distributions(PARAMETERS[:2]), 4)


@pytest.mark.parametrize("name, service", [
    ("hyperband", "suggestion-hyperband"), ("bayesianoptimization", "suggestion-skopt"),
    ("sobol", "suggestion-goptuna"), ("pbt", "suggestion-pbt"), ("enas", "suggestion-enas"),
    ("darts", "suggestion-darts"),
])
def test_unserved_algorithms_are_refused_naming_their_service(name, service):
    # one line naming what would run it
    with pytest.raises(ConfigError, match=service):
        sampling.make_sampler({"algorithmName": name}, distributions(PARAMETERS), 4)


def test_grid_over_an_int_log_uniform_without_step_runs_as_katib_builds_it():
    sampler = sampling.make_sampler({"algorithmName": "grid"}, distributions(GRID_PARAMETERS), 24)
    # Katib: range(min, max + 1, step or 1) whatever the distribution; doubles min, min + step, ... <= max
    assert sampler._search_space == {"layers": [1, 2, 3, 4], "optimizer": ["adam", "sgd"], "x": [0.0, 0.25, 0.5]}


def test_grid_with_more_trials_than_combinations_is_refused():
    with pytest.raises(ConfigError, match="exceeds the 24 grid combinations"):
        sampling.make_sampler({"algorithmName": "grid"}, distributions(GRID_PARAMETERS), 25)


def experiment_doc(algorithm: str) -> dict:
    parameters = GRID_PARAMETERS if algorithm == "grid" else PARAMETERS
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = f"algo-{algorithm}"
    doc["spec"].update(
        algorithm={"algorithmName": algorithm, "algorithmSettings": ALGORITHMS[algorithm]},
        parameters=copy.deepcopy(parameters), maxTrialCount=3, parallelTrialCount=1,
    )
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [container["args"][0], *(f"--{p['name']}=${{trialParameters.{p['name']}}}"
                                                  for p in parameters), "--epochs=3"]
    doc["spec"]["trialTemplate"]["trialParameters"] = [
        {"name": p["name"], "description": f"the {p['name']} knob", "reference": p["name"]} for p in parameters]
    return doc


@pytest.mark.parametrize("algorithm", [
    a if a != "cmaes" else pytest.param(a, marks=pytest.mark.skipif(not HAS_CMAES, reason="no cmaes package"))
    for a in sorted(ALGORITHMS)
])
def test_each_served_algorithm_validates_and_runs_through_hpo_tune(tmp_path, algorithm, capsys):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment_doc(algorithm)))
    # the manifest is one Katib would run: no validation error
    assert [str(f) for f in lint.validate_file(path) if f.severity == "error"] == []
    assert cli.main(["manifests", "validate", str(path)]) == 0
    state = tmp_path / "state"
    code = cli.main(["tune", str(path), "--state-dir", str(state), "--no-tracking", "--no-progress"])
    # the whole budget runs and every trial succeeds
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name=f"local.algo-{algorithm}", storage=f"sqlite:///{state}/studies.db")
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 3


def test_a_nas_experiment_is_refused_by_hpo_tune_in_one_line(tmp_path, capsys):
    doc = copy.deepcopy(BASE)
    doc["spec"].pop("parameters")
    doc["spec"]["algorithm"] = {"algorithmName": "darts"}
    doc["spec"]["nasConfig"] = {"graphConfig": {"numLayers": 1}, "operations": [
        {"operationType": "max_pooling", "parameters": [
            {"name": "filter_size", "parameterType": "categorical", "feasibleSpace": {"list": ["3"]}}]}]}
    path = manifest(tmp_path)
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["tune", str(path), "--state-dir", str(tmp_path / "s"), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    # one line, naming NAS and what would run it; no KeyError traceback
    assert len(err.splitlines()) == 1 and "neural architecture search" in err and "suggestion-darts" in err


MULTI_OBJECTIVE = {"algorithmName": "katib-hpo-multiobjective", "algorithmSettings": [
    {"name": "objectives", "value": "val_loss:minimize, val_rmse:maximize"}, {"name": "random_state", "value": "3"}]}


def test_the_multi_objective_algorithm_gets_the_suggestion_services_proposals():
    # the one sampler for katib-hpo-multiobjective, single- or multi-objective, is the service's code path
    assert isinstance(sampling.make_sampler(MULTI_OBJECTIVE, distributions(PARAMETERS), 4), sampling.KatibSuggestions)
    chosen = sampling.multi_objective_sampler(MULTI_OBJECTIVE, distributions(PARAMETERS), 4, "manifest")
    assert isinstance(chosen, sampling.KatibSuggestions)
    # --mo-sampler would make the laptop run another sampler than the cluster: refused, naming the setting
    with pytest.raises(ConfigError, match="picks its sampler with its setting sampler") as info:
        sampling.multi_objective_sampler(MULTI_OBJECTIVE, distributions(PARAMETERS), 4, "nsga2")
    assert info.value.settings == ("mo_sampler",)
    bad = copy.deepcopy(MULTI_OBJECTIVE)
    bad["algorithmSettings"].append({"name": "n_ei_candidates", "value": "0"})
    # a setting the service refuses fails before any trial, in the service's words
    with pytest.raises(ConfigError, match="setting n_ei_candidates = '0' must be an integer >= 1"):
        sampling.make_sampler(bad, distributions(PARAMETERS), 4)
