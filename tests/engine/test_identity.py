"""A study is tied to its experiment: another search space or objective is refused on resume, a budget is not."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml

from hpo_lib import cli, engine
from hpo_lib.engine import identity
from hpo_lib.errors import ConfigError
from tests.conftest import BASE, manifest, options

STUDY = "local.scripted"


def write(tmp_path, doc):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def changed(**spec) -> dict:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(copy.deepcopy(spec))
    doc["spec"]["maxFailedTrialCount"] = 1
    return doc


def categorical(choices):
    return [{"name": "x", "parameterType": "categorical", "feasibleSpace": {"list": list(choices)}}]


@pytest.mark.parametrize("spec, fragment", [
    ({"parameters": [{"name": "x", "parameterType": "double",
                      "feasibleSpace": {"min": "0.1", "max": "1.0", "distribution": "uniform"}}]},
     "parameter x: feasible space min 0 → 0.1"),
    ({"parameters": [{"name": "x", "parameterType": "double",
                      "feasibleSpace": {"min": "0.0", "max": "1.0", "step": "0.25"}}]},
     "parameter x: feasible space step unset → 0.25"),
    ({"parameters": [{"name": "x", "parameterType": "int", "feasibleSpace": {"min": "0", "max": "1"}}]},
     "parameter x: parameterType double → int"),
    ({"objective": {"type": "maximize", "objectiveMetricName": "val_loss"}},
     "objectives val_loss minimize → val_loss maximize"),
])
def test_resume_with_another_experiment_is_refused_naming_the_difference(tmp_path, spec, fragment):
    engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path))
    doc = changed(**spec)
    doc["spec"]["maxTrialCount"] = 2
    # one line: the difference, and how to start a new study
    with pytest.raises(ConfigError, match="--new-study") as info:
        engine.run(write(tmp_path, doc), options(tmp_path))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_raising_the_budget_resumes_the_study(tmp_path):
    engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path))
    study = engine.run(manifest(tmp_path, maxTrialCount=2, parallelTrialCount=2), options(tmp_path))
    # the first trial is kept and one more runs
    assert len(study.get_trials()) == 2


def test_a_study_without_a_fingerprint_is_checked_against_its_trials_categorical_choices(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    old = optuna.create_study(study_name=STUDY, storage=storage)
    old.add_trial(optuna.trial.create_trial(
        params={"x": "a"}, distributions={"x": optuna.distributions.CategoricalDistribution(["a", "b"])}, value=1.0))
    # Optuna would raise "CategoricalDistribution does not support dynamic value space" at the first ask
    with pytest.raises(ConfigError, match=r"parameter x: feasible space list \[a, b\] → \[a, c\]"):
        identity.check_or_record(optuna.load_study(study_name=STUDY, storage=storage),
                                 changed(parameters=categorical("ac")))


def test_new_study_archives_the_old_one_and_starts_afresh(tmp_path, capsys):
    state = tmp_path / "state"
    engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path))
    doc = changed(parameters=categorical("ab"))
    path = write(tmp_path, doc)
    args = ["tune", str(path), "--state-dir", str(state), "--no-tracking", "--no-progress", "--max-trials", "1"]
    # without --new-study the other experiment is refused
    assert cli.main(args) == 2
    assert cli.main([*args, "--new-study"]) == 0
    storage = f"sqlite:///{state}/studies.db"
    names = optuna.get_all_study_names(storage)
    archived = [n for n in names if n.startswith(f"{STUDY}.archived-")]
    # the old trials stay reachable under the archive name; the new study has only its own trial
    assert len(archived) == 1
    assert optuna.load_study(study_name=archived[0], storage=storage).trials[0].params.keys() == {"x"}
    fresh = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(fresh.trials) == 1 and fresh.trials[0].params["x"] in ("a", "b")


def test_a_study_without_a_fingerprint_is_checked_against_its_directions(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    # BASE minimizes val_loss
    with pytest.raises(ConfigError, match="directions maximize → minimize"):
        identity.check_or_record(optuna.load_study(study_name=STUDY, storage=storage), changed())


def test_the_same_manifest_resumes_and_keeps_one_fingerprint(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name=STUDY, storage=storage)
    identity.check_or_record(study, changed())
    # a second engine (or a resume) with the same experiment passes and leaves the record as it was
    identity.check_or_record(optuna.load_study(study_name=STUDY, storage=storage), changed(maxTrialCount=9))
    assert optuna.load_study(study_name=STUDY, storage=storage).user_attrs[identity.ATTR] == study.user_attrs[
        identity.ATTR]
