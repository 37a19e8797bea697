"""The pipeline's knobs have one definition: PipelineSettings and its two presets, read by the KFP DAG, the steps,
the API and `hpo pipeline run-local`; its check names the first bad setting."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from hpo_lib import api, cli
from hpo_lib.errors import ConfigError
from hpo_lib.pipeline import retrain, steps
from hpo_lib.pipeline.settings import CLUSTER, LAPTOP, PipelineSettings
from tests.conftest import ROOT

NAMES = [f.name for f in dataclasses.fields(PipelineSettings)]
TUNE = ("model_family", "timeout_s", "poll_s")  # the tune step's: a local run takes its trials from an export
RETRAIN = [name for name in NAMES if name not in TUNE]


def _defaults(func) -> dict:
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_the_compiled_pipeline_defaults_to_the_cluster_preset():
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / "katib_hpo_pipeline.yaml").read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    # every setting is a pipeline parameter of the same name, defaulting to the cluster preset (KFP keeps a
    # string default only when it is not empty)
    for name in NAMES:
        assert parameters[name].get("defaultValue", "") == getattr(CLUSTER, name), name


def test_the_steps_default_to_the_cluster_preset():
    # a step called without a setting runs as the pipeline does on a cluster
    defaults = {**_defaults(steps.tune), **_defaults(steps.select_winners), **_defaults(steps.run_retrain)}
    assert {name: defaults[name] for name in NAMES} == dataclasses.asdict(CLUSTER)
    assert _defaults(retrain.retrain)["test_origins"] == _defaults(retrain.retrain_seeds)["test_origins"] == \
        CLUSTER.test_origins


def test_the_api_and_hpo_run_local_default_to_the_laptop_preset():
    defaults = _defaults(api.run_pipeline)
    # the API's retrain_flags default (None) stands for the preset's
    assert {name: defaults[name] for name in RETRAIN if name != "retrain_flags"} == {
        name: getattr(LAPTOP, name) for name in RETRAIN if name != "retrain_flags"}
    assert defaults["retrain_flags"] is None and LAPTOP.retrain_flags.startswith("--threads=")
    args = cli._build_parser().parse_args(["pipeline", "run-local", "m.yaml"])
    # each flag's default is the preset's value
    assert {name: getattr(args, name) for name in RETRAIN} == {name: getattr(LAPTOP, name) for name in RETRAIN}


def test_the_laptop_preset_differs_only_in_what_one_machine_needs():
    differs = {name for name in NAMES if getattr(LAPTOP, name) != getattr(CLUSTER, name)}
    assert differs == {"max_winners", "seeds", "retrain_flags"}


@pytest.mark.parametrize("changes, message", [
    ({"top_k": 0}, r"^top_k must be at least 1, got 0$"),
    ({"seeds": 0}, r"^seeds must be at least 1, got 0$"),
    ({"max_winners": -1}, r"^max_winners must be at least 0, got -1$"),
    ({"epochs": -1}, r"^epochs must be 0 \(the experiment's\) or more, got -1$"),
    ({"test_origins": 2.5}, r"^test_origins must be an integer, got 2\.5$"),
    ({"cost_bps": -1.0}, r"^cost_bps must be a finite number of basis points, 0 or more, got -1\.0$"),
    ({"poll_s": 0}, r"^poll_s must be a positive number of seconds, got 0$"),
])
def test_check_names_the_first_bad_setting(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CLUSTER, **changes).check()


def test_the_presets_pass_their_own_check():
    assert CLUSTER.check() is CLUSTER and LAPTOP.check() is LAPTOP
