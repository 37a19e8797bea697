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
    "sobol": [],  # Goptuna's sobol reads no setting (katib pkg/suggestion/v1beta1/goptuna/converter.go:93-94)
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
    # Hyperopt's tpe.suggest models each parameter on its own and sees only finished trials: univariate, no
    # constant liar (Optuna 5's TPESampler defaults to both), whatever the study's direction count
    study = optuna.create_study()
    assert sampler._is_multivariate(study) is False and sampler._constant_liar is False
    # Katib passes the request size as n_startup_jobs (katib pkg/suggestion/v1beta1/hyperopt/base_service.py:
    # 287-313): the first request is random, every later one TPE once a trial finished
    assert sampler._n_startup_trials == 1


def test_tpe_draws_at_random_until_a_trial_finished_then_models_the_history(monkeypatch):
    sampler = sampling.make_sampler({"algorithmName": "tpe", "algorithmSettings": ALGORITHMS["tpe"]},
                                    {"x": optuna.distributions.FloatDistribution(0, 1)}, 40)
    random_draws = []
    draw = sampler._random_sampler.sample_independent
    monkeypatch.setattr(sampler._random_sampler, "sample_independent",
                        lambda *args: random_draws.append(args[1].number) or draw(*args))
    study = optuna.create_study(sampler=sampler)
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    first_batch = [study.ask(x) for _ in range(3)]  # Katib's first request: nothing has finished
    study.tell(first_batch[0], 0.5)
    later = study.ask(x)  # the next request, after one trial finished
    # the first batch is random, the next trial is TPE's (Hyperopt's n_startup_jobs = that request's size, 1)
    assert random_draws == [0, 1, 2] and later.number == 3


@pytest.mark.parametrize("n", [1, 4, 9, 50, 400, 100_000])
def test_hyperopt_gamma_is_ceil_gamma_sqrt_n_capped_at_25(n):
    # the "below" set Hyperopt keeps for gamma 0.25
    assert sampling.hyperopt_gamma(0.25)(n) == min(math.ceil(0.25 * math.sqrt(n)), 25)


@pytest.mark.skipif(HAS_CMAES, reason="the cmaes package is installed")
def test_cmaes_without_its_package_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="needs the Python package cmaes"):
        sampling.make_sampler({"algorithmName": "cmaes"}, distributions(PARAMETERS[:2]), 4)


@pytest.mark.skipif(not HAS_CMAES, reason="no cmaes package")
@pytest.mark.parametrize("restart", ["ipop", "bipop"])
def test_cmaes_runs_what_goptuna_runs_and_says_what_it_cannot(restart, caplog):
    # Goptuna restarts with ipop/bipop (katib pkg/suggestion/v1beta1/goptuna/converter.go:56-62); Optuna >= 4.4 has
    # no restarts: the engine runs it without them and says so once
    algorithm = {"algorithmName": "cmaes", "algorithmSettings": [
        {"name": "restart_strategy", "value": restart}, {"name": "sigma", "value": "-1"},
        {"name": "random_state", "value": "-1"}, {"name": "popsize", "value": "8"}]}
    sampler = sampling.study_sampler(algorithm, distributions(PARAMETERS[:2]), 4)
    assert f"restart_strategy {restart}" in caplog.text and "without them" in caplog.text
    cmaes = sampler.seeded.inner
    # sigma <= 0 keeps the default sigma, as Goptuna's initOptimizer does (only s.sigma0 > 0 replaces it)
    assert cmaes._sigma0 is None


def test_cmaes_restart_strategy_goptuna_cannot_parse_is_refused_naming_the_stall():
    # "None" passes Optuna's rules but not Goptuna's: on a cluster the Experiment would stay Running, no trial
    with pytest.raises(ConfigError, match="restart_strategy = 'None' must be ipop, bipop or none.*no trial"):
        sampling.make_sampler({"algorithmName": "cmaes", "algorithmSettings": [
            {"name": "restart_strategy", "value": "None"}]}, distributions(PARAMETERS[:2]), 4)


@pytest.mark.parametrize("name, service", [
    ("hyperband", "suggestion-hyperband"), ("bayesianoptimization", "suggestion-skopt"),
    ("pbt", "suggestion-pbt"), ("enas", "suggestion-enas"),
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


def test_multivariate_tpe_sees_a_failed_trial_as_running_as_katibs_optuna_service_does():
    # Katib's Optuna service tells only trials that report the objective (katib pkg/suggestion/v1beta1/internal/
    # trial.py:41-52, optuna/base_service.py:85-98): a failed trial stays RUNNING there, and the constant liar
    # keeps counting it
    sampler = sampling.make_sampler({"algorithmName": "multivariate-tpe"}, distributions(PARAMETERS[:1]), 4)
    assert isinstance(sampler, sampling.FailedStayRunning) and sampler.inner._constant_liar is True
    study = optuna.create_study(sampler=sampler)
    lr = distributions(PARAMETERS[:1])
    study.tell(study.ask(lr), 0.5)
    study.tell(study.ask(lr), state=optuna.trial.TrialState.FAIL)
    cut = study.ask(lr)  # a trial an interruption cut short: the engine's, never Katib's
    cut.set_user_attr("interrupted", True)
    study.tell(cut, state=optuna.trial.TrialState.FAIL)
    seen = sampling._failed_running(study)
    assert [t.state.name for t in seen.get_trials()] == ["COMPLETE", "RUNNING"]
    running = seen._get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    assert [t.number for t in running] == [1]
    assert [t.number for t in seen._get_trials(states=(optuna.trial.TrialState.COMPLETE,))] == [0]
    study.optimize(lambda t: t.suggest_float("lr", 0.001, 0.1, log=True), n_trials=2)  # it samples with the view


def test_sobol_runs_an_unscrambled_sobol_sequence_that_a_resume_continues():
    # Katib serves sobol with Goptuna's sobol sampler (converter.go:93-94); the engine with Optuna's QMCSampler,
    # whose position in the sequence is kept in the study, so a second sampler (a resume, another engine) goes on
    space_ = {"a": optuna.distributions.FloatDistribution(0, 1), "b": optuna.distributions.FloatDistribution(0, 1)}
    storage = optuna.storages.InMemoryStorage()
    for _ in range(2):
        sampler = sampling.study_sampler({"algorithmName": "sobol"}, space_, 8)
        study = optuna.create_study(study_name="s", storage=storage, sampler=sampler, load_if_exists=True)
        for _ in range(3):
            study.tell(study.ask(space_), 1.0)
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert isinstance(sampler, optuna.samplers.QMCSampler) and len(set(points)) == 6


@pytest.mark.skipif(not HAS_CMAES, reason="no cmaes package")
def test_cmaes_searches_as_goptuna_linear_spaces_and_early_stopped_trials_pruned(tmp_path):
    # Goptuna ignores a parameter's distribution (katib pkg/suggestion/v1beta1/goptuna/converter.go:113-164): a
    # logUniform double is searched linearly on the cluster, so here too
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment_doc("cmaes")))
    assert cli.main(["tune", str(path), "--state-dir", str(tmp_path / "s"), "--no-tracking", "--no-progress"]) == 0
    study = optuna.load_study(study_name="local.algo-cmaes", storage=f"sqlite:///{tmp_path}/s/studies.db")
    assert study.trials[0].distributions["lr"] == optuna.distributions.FloatDistribution(0.001, 0.1)
    # Goptuna takes an EarlyStopped trial as pruned (converter.go:195-196) and its CMA-ES learns from complete ones
    # only; the engine shows Katib's other services an early-stopped trial as complete with its observation
    sampler = sampling.make_sampler({"algorithmName": "cmaes"}, distributions(PARAMETERS[:2]), 4)
    assert isinstance(sampler, sampling.EarlyStoppedPruned)
    lr = distributions(PARAMETERS[:1])
    history = optuna.create_study()
    history.tell(history.ask(lr), 0.5)
    stopped = history.ask(lr)
    stopped.set_user_attr("katib_told", [0.4])
    history.tell(stopped, 0.4)  # what KatibTells shows: complete, with the value Katib's services tell
    seen = sampler.view(history)
    assert [t.state.name for t in seen.get_trials()] == ["COMPLETE", "PRUNED"]
    assert [t.number for t in seen._get_trials(states=(optuna.trial.TrialState.COMPLETE,))] == [0]
    assert [t.number for t in seen._get_trials(states=(optuna.trial.TrialState.PRUNED,))] == [1]
