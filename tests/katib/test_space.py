"""Search spaces: one definition, two renderings (Optuna and Katib) that cannot disagree."""

from __future__ import annotations

import optuna.distributions as od
import pytest

from hpo_lib import trial
from hpo_lib.errors import ConfigError
from hpo_lib.katib import manifests, space

TARGETS = ["return", "direction"]


def sample_values(param: space.Param) -> list[str]:
    """Edge values Katib could assign, as strings (Katib always substitutes strings)."""
    if param.kind == "categorical":
        return list(param.choices)
    kind = int if param.kind == "int" else float
    return [str(kind(param.low)), str(kind(param.high))]


@pytest.mark.parametrize("family", space.FAMILIES)
@pytest.mark.parametrize("target", TARGETS)
def test_both_renderings_hold_the_same_parameters(family, target):
    params = space.search_space(family, target=target)
    names = [p.name for p in params]
    katib_names = [p["name"] for p in map(space.to_katib_parameter, params)]
    trial_params = [t["name"] for t in space.katib_trial_parameters(params)]
    flags = [f.split("=", 1)[0].removeprefix("--") for f in space.trial_flags(params)]
    # one name per knob, in every rendering, no duplicates
    assert len(set(names)) == len(names)
    assert names == katib_names == trial_params == flags == list(space.optuna_distributions(params))


@pytest.mark.parametrize("family", space.FAMILIES)
def test_katib_rendering_converts_back_to_the_declared_distribution(family):
    for param in space.search_space(family, target="direction"):
        # what Katib's Optuna service builds from our YAML is the knob as declared: bounds, scale, step, choices
        dist = space.to_optuna(param)
        if param.kind == "categorical":
            assert dist == od.CategoricalDistribution(list(param.choices))
        elif param.kind == "int":
            assert dist == od.IntDistribution(param.low, param.high, log=param.log,
                                              step=1 if param.log else (param.step or 1))
        else:
            assert dist == od.FloatDistribution(param.low, param.high, log=param.log)


@pytest.mark.parametrize("family", space.FAMILIES)
@pytest.mark.parametrize("target", TARGETS)
def test_every_searched_value_is_accepted_by_the_trial(family, target):
    for param in space.search_space(family, target=target):
        for value in sample_values(param):
            # the trial entrypoint accepts every value the search can propose, at both ends of each range
            args = trial.parse_args([f"--model={family}", f"--target={target}", f"--{param.name}={value}"])
            parsed = getattr(args, param.name.replace("-", "_"))
            if isinstance(parsed, str):
                assert parsed == value
            else:
                assert float(parsed) == (value == "true" if value in ("true", "false") else float(value))


def test_only_distributions_katibs_optuna_service_supports():
    for family in space.FAMILIES:
        for rendered in map(space.to_katib_parameter, space.search_space(family, target="direction")):
            feasible = rendered["feasibleSpace"]
            # uniform/logUniform only; int bounds are integer strings; every bound is a string
            assert feasible.get("distribution", "uniform") in ("uniform", "logUniform")
            if rendered["parameterType"] == "int":
                assert all(feasible[k] == str(int(feasible[k])) for k in ("min", "max")), rendered
            assert all(isinstance(v, str) for k, v in feasible.items() if k != "list")


@pytest.mark.parametrize("spec, message", [
    # Katib runs normal/logNormal under Hyperopt (katib pkg/suggestion/v1beta1/hyperopt/base_service.py:106-139),
    # not under its Optuna service: the reason is Optuna's missing normal distribution, with Hyperopt's mean/sigma
    ({"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1", "distribution": "normal"}},
     r"'normal' runs on Katib only under tpe and random, whose Hyperopt draws it with mean \(min \+ max\) / 2"),
    ({"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "9",
                                                                 "distribution": "logNormal"}},
     "Optuna, which the local engine samples with, has no normal distribution"),
    ({"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "9", "distribution": "gauss"}},
     "'gauss' is not one of Katib's"),
    ({"name": "x", "parameterType": "int", "feasibleSpace": {"min": "1.5", "max": "3"}}, "bad feasibleSpace"),
    ({"name": "x", "parameterType": "complex", "feasibleSpace": {"min": "1", "max": "3"}}, "unknown parameterType"),
])
def test_unsupported_katib_parameters_are_named(spec, message):
    # each unsupported parameter is a ConfigError that names what is unsupported
    with pytest.raises(ConfigError, match=message):
        space.from_katib_parameter(spec)


def test_log_int_ignores_step_like_katib():
    spec = {"name": "h", "parameterType": "int", "feasibleSpace": {"min": "0", "max": "64", "step": "8",
                                                                     "distribution": "logUniform"}}
    # Katib's Optuna service clamps the low end to 1 and drops the step on log scales
    assert space.from_katib_parameter(spec) == od.IntDistribution(1, 64, log=True)


def test_direction_target_adds_focal_loss_knobs():
    names = {p.name for p in space.search_space("gru", target="direction")}
    # the focal-loss knobs are searched for the direction target only
    assert {"focal-alpha", "focal-gamma"} <= names
    assert "focal-alpha" not in {p.name for p in space.search_space("gru")}


def test_manifest_arguments_are_the_rendered_flags():
    for family in space.FAMILIES:
        container = manifests.experiment(family)["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
            "containers"][0]
        # every searched knob reaches the trial as --name=${trialParameters.name}
        assert set(space.trial_flags(space.search_space(family))) <= set(container["args"])


def test_goptunas_conversion_ignores_the_distribution():
    # Goptuna (cmaes, sobol) builds a uniform distribution for every double and int, whatever `distribution`
    # says (katib pkg/suggestion/v1beta1/goptuna/converter.go:113-164)
    log_double = {"name": "lr", "parameterType": "double",
                  "feasibleSpace": {"min": "0.001", "max": "0.1", "distribution": "logUniform"}}
    log_int = {"name": "h", "parameterType": "int",
               "feasibleSpace": {"min": "0", "max": "64", "step": "8", "distribution": "logUniform"}}
    normal = {"name": "x", "parameterType": "double",
              "feasibleSpace": {"min": "0", "max": "1", "distribution": "normal"}}
    assert space.from_katib_parameter(log_double, linear=True) == od.FloatDistribution(0.001, 0.1)
    assert space.from_katib_parameter(log_int, linear=True) == od.IntDistribution(0, 64, step=8)
    assert space.from_katib_parameter(normal, linear=True) == od.FloatDistribution(0.0, 1.0)
