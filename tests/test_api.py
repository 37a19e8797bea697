"""The Python API (hpo_lib.tune, load_results, run_trial, run_pipeline) against the scripted stand-in trial: results
as objects, bad input as the command's one-line errors raised as HpoError; the version and the -v flag of `hpo`."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tomllib

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

import hpo_lib
from hpo_lib import cli
from hpo_lib.errors import ConfigError, HpoError
from hpo_lib.katib import manifests
from tests.conftest import BASE, ROOT, manifest, multi_manifest


def _tune(tmp_path, doc=None, **kwargs):
    """hpo_lib.tune on the scripted Experiment (3 trials, one at a time), state in tmp_path/state, no MLflow."""
    kwargs.setdefault("overrides", {"curves": "0.5,0.3,0.9"})
    return hpo_lib.tune(doc if doc is not None else copy.deepcopy(BASE), state_dir=tmp_path / "state",
                        tracking=False, **kwargs)


# ----------------------------------------------------------------------------------------------- tune
def test_tune_a_dict_returns_the_study_its_best_trial_and_a_katib_shaped_frame(tmp_path):
    heard = []
    result = _tune(tmp_path, on_progress=heard.append)
    # the caller hears of the run's progress (the face draws its bar from the same calls)
    assert heard
    # the whole budget ran: levels 0.5 and 0.3 succeed, 0.9 is worse than their mean at start_step and is stopped
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    # the best trial is the one at level 0.3, and it is the only best trial of a single objective
    assert result.best_trial is not None and result.best_trial.number == 1 and result.best_trial.value == 0.3
    assert result.best_trials == [result.best_trial]
    frame = result.trials_frame()
    # one row per trial in Katib's words: Trial name, condition, parameters and each metric's min/max/latest
    assert list(frame.index) == [0, 1, 2]
    assert list(frame["name"]) == ["scripted-0000", "scripted-0001", "scripted-0002"]
    assert list(frame["condition"]) == ["Succeeded", "Succeeded", "EarlyStopped"]
    assert frame.loc[1, "val_loss_min"] == 0.3 and frame.loc[1, "val_rmse_latest"] == 0.6
    assert frame["param_x"].between(0, 1).all() and frame["param_x"].dtype == float
    # the early-stopped trial ran 2 of its 4 epochs
    assert list(frame["epochs_run"]) == [4, 4, 2]
    # the export the engine wrote is where the result says, and holds the same trials
    assert json.loads(result.trials_json.read_text())[1]["name"] == "scripted-0001"
    assert pd.read_csv(result.trials_csv)["name"].tolist() == frame["name"].tolist()
    # the dict was written once under the state folder, and that file is the study's manifest
    assert result.manifest.parent == tmp_path / "state" / "manifests" and result.manifest.name.startswith("scripted-")
    assert yaml.safe_load(result.manifest.read_text()) == BASE


def test_yaml_text_of_the_same_experiment_resumes_the_study(tmp_path):
    first = _tune(tmp_path)
    text = yaml.safe_dump(BASE, sort_keys=False)
    again = _tune(tmp_path, text, max_trials=4)
    # same Experiment, same study: the three trials are kept and one more runs up to the new budget
    assert again.study.study_name == first.study.study_name == "local.scripted"
    assert len(again.study.trials) == 4
    # the same text lands in the same file as the dict did (safe_dump of the same document)
    assert again.manifest == first.manifest


def test_load_results_reads_an_earlier_study_without_tuning(tmp_path):
    tuned = _tune(tmp_path)
    loaded = hpo_lib.load_results(tuned.manifest, state_dir=tmp_path / "state")
    # the same trials, the same best trial and the same frame
    assert [t.number for t in loaded.study.trials] == [0, 1, 2]
    assert loaded.best_trial is not None and loaded.best_trial.number == tuned.best_trial.number
    pd.testing.assert_frame_equal(loaded.trials_frame(), tuned.trials_frame())
    # the leaderboard names the study and its counts
    assert loaded.leaderboard().startswith("local.scripted: 2 succeeded, 1 early-stopped, 0 failed")


def test_report_and_export_write_where_asked(tmp_path):
    result = _tune(tmp_path, report=True)
    # tune(report=True) wrote the plots and report.html of `hpo report`
    assert result.report_paths and all(p.exists() for p in result.report_paths)
    assert any(p.name == "report.html" for p in result.report_paths)
    assert result.report_paths[0].parent == result.export_dir / "report"
    # an export to another folder writes both files there
    json_path, csv_path = result.export(tmp_path / "elsewhere")
    assert json_path == tmp_path / "elsewhere" / "trials.json" and csv_path.exists()


def test_a_multi_objective_study_has_a_front_and_no_single_best(tmp_path):
    path = multi_manifest(tmp_path)
    result = hpo_lib.tune(path, overrides={"curves": "0.5,0.3,0.9"}, state_dir=tmp_path / "state", tracking=False)
    # several objectives: no single best trial, the Pareto front instead
    assert result.best_trial is None
    assert result.best_trials and all(t.state == TrialState.COMPLETE for t in result.best_trials)


def test_a_study_where_nothing_succeeded_has_no_best_trial(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["spec"].pop("maxFailedTrialCount")
    with pytest.raises(HpoError):  # every trial failed: the run says so, as `hpo tune` does with its exit code
        _tune(tmp_path, doc, overrides={"mode": "crash"}, max_trials=1)
    loaded = hpo_lib.load_results(_tune_manifest(tmp_path, doc), state_dir=tmp_path / "state")
    # the failed trial is kept, with its reason in the frame, and there is no best trial
    assert loaded.best_trial is None and loaded.best_trials == []
    assert loaded.trials_frame().loc[0, "condition"] == "Failed"
    assert "exited with code 3" in loaded.trials_frame().loc[0, "fail_reason"]
    assert math.isnan(loaded.trials_frame().get("val_loss_min", pd.Series([math.nan]))[0])


def _tune_manifest(tmp_path, doc):
    """The file the API wrote for ``doc`` (the same content gives the same file)."""
    return hpo_lib.api.manifest_file(doc, tmp_path / "state")


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, message", [
    ({"max_trials": 0}, r"^max_trials must be at least 1, got 0$"),
    ({"parallel": "2"}, r"^parallel must be an integer, got '2'$"),
    ({"max_trials": True}, r"^max_trials must be an integer, got True$"),
    ({"pruner": "median"}, r"^pruner must be one of manifest, medianstop, optuna-median, hyperband, none, got 'med"),
    ({"mo_sampler": "nsga3"}, r"^mo_sampler must be one of manifest, nsga2, got 'nsga3'$"),
    ({"trial_timeout_s": 0}, r"^trial_timeout_s must be a positive number of seconds, got 0: every trial would be"),
    ({"trial_timeout_s": float("nan")}, r"^trial_timeout_s must be a positive number of seconds, got nan"),
    ({"overrides": ["data=sample:sp500"]}, r"^overrides must be a dict of trial flag -> value, .* got list$"),
    ({"overrides": {"": "x"}}, r"^overrides expects trial flag names as keys, got ''$"),
    ({"state_dir": 3}, r"^state_dir must be a folder path, got 3$"),
])
def test_bad_arguments_raise_one_clear_config_error(tmp_path, kwargs, message):
    kwargs = {"state_dir": tmp_path / "state", "tracking": False, **kwargs}
    # a ConfigError (never a TypeError) whose message names the argument and the rule
    with pytest.raises(ConfigError, match=message) as caught:
        hpo_lib.tune(manifest(tmp_path), **kwargs)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value, message", [
    (42, r"^manifest must be a path, YAML text or a dict, got int$"),
    ("", r"^manifest must be a path, YAML text or a dict, got an empty string$"),
    ("missing.yaml", r"^manifest missing.yaml does not exist$"),
    (".", r"^manifest \. is a folder: give the Experiment's YAML file$"),
    ("spec: [\nunclosed", r"^manifest text is not valid YAML"),
    ("kind: Job\nmetadata: {}\n", r"^manifest text must hold exactly one Experiment, found 0$"),
    ({"kind": "Job"}, r"^manifest dict must be a Katib Experiment \(kind: Experiment\), got kind 'Job'$"),
    ({**BASE, "spec": {**BASE["spec"], "maxTrialCount": object()}}, r"^manifest dict cannot be written as YAML"),
    ({**BASE, "spec": {**BASE["spec"], "parallelTrialCount": 0}}, r"manifest .*scripted-.*\.yaml is invalid: .*paral"),
])
def test_a_bad_manifest_raises_what_hpo_tune_prints(tmp_path, value, message):
    # every kind of bad manifest is one ConfigError line, whichever form it came in
    with pytest.raises(ConfigError, match=message):
        hpo_lib.tune(value, state_dir=tmp_path / "state", tracking=False)


def test_a_typo_in_an_override_is_refused_before_any_trial_starts(tmp_path):
    # the project's own trial checks the manifest's flags and the overrides with its parser first
    refused = r"^the trial refuses its flags before any trial starts: unknown flag --epoch "
    with pytest.raises(ConfigError, match=refused):
        hpo_lib.tune(ROOT / "manifests" / "mlp-experiment.yaml", overrides={"epoch": 2}, state_dir=tmp_path / "state",
                     tracking=False)
    # and nothing ran
    assert not list((tmp_path / "state").glob("*/trial-*"))


def test_a_missing_manifest_is_refused_before_the_state_folder_is_made(tmp_path):
    with pytest.raises(ConfigError, match=r"^manifest \S+missing.yaml does not exist$"):
        hpo_lib.tune(tmp_path / "missing.yaml", state_dir=tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_a_state_dir_that_is_a_file_is_refused_by_name(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises(ConfigError, match=r"^state_dir .*state is a file, not a folder"):
        hpo_lib.tune(manifest(tmp_path), state_dir=tmp_path / "state", tracking=False)


def test_a_storage_that_fails_mid_study_is_one_line_that_says_how_to_resume():
    import sqlalchemy.exc

    full = sqlalchemy.exc.OperationalError("INSERT INTO trials", {}, Exception("database or disk is full"))
    # SQLAlchemy's page becomes the cause in words, where the finished trials are, and how to go on
    with pytest.raises(HpoError, match=r"^the study storage sqlite:///s/studies.db failed mid-study: the disk is full; "
                                       r"every trial that finished before is kept there and under s/: .* to resume$"):
        with hpo_lib.api.storage_failures("sqlite:///s/studies.db", "s"):
            raise full


def test_load_results_without_a_study_says_how_to_make_one(tmp_path):
    # nothing tuned in this state folder yet
    with pytest.raises(ConfigError, match=r"^no studies under .*: run `hpo tune .*` first$"):
        hpo_lib.load_results(manifest(tmp_path), state_dir=tmp_path / "empty")


def test_a_damaged_study_database_is_one_line(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "studies.db").write_bytes(b"not a database" * 100)
    # a corrupt SQLite file is named, with what to do, instead of SQLAlchemy's traceback
    with pytest.raises(ConfigError, match=r"cannot read study storage sqlite:///.*studies\.db"):
        hpo_lib.load_results(manifest(tmp_path), state_dir=tmp_path / "state")


@pytest.mark.parametrize("flags, message", [
    ({"epoch": 2}, r"^unknown flag --epoch \(see hpo trial --help\)$"),
    ({"lr": 0}, r"^--lr must be greater than 0, got 0.0$"),
    ({"model": "transformer"}, r"^--model must be one of mlp, lstm, gru, cnn-lstm, got 'transformer'$"),
    ("--model=mlp", r"^flags must be a dict of trial flags or a list of '--name=value' strings, got str$"),
    ([1, 2], r"^flags must be a dict .* got list holding non-strings$"),
])
def test_run_trial_refuses_bad_flags_before_training(flags, message):
    # the trial's own parser and ranges, raised instead of printed
    with pytest.raises(ConfigError, match=message):
        hpo_lib.run_trial(flags)


def test_run_trial_trains_in_this_process_and_prints_nothing(tmp_path, capsys):
    result = hpo_lib.run_trial({"model": "mlp", "data": "sample:sp500", "epochs": 2, "seq_len": 10, "split_window": 10,
                                "hidden_size": 8, "num_layers": 1, "threads": 1}, output_dir=tmp_path / "t")
    # nothing reached the terminal: the Katib lines and the summary are in the result
    assert capsys.readouterr() == ("", "")
    # two epoch lines and the final one, in Katib's StdOut format
    assert len(result.lines) == 3 and "epoch=1 " in result.lines[0] and "val_loss=" in result.lines[1]
    # the final record, also written as metrics.json with the model beside it
    assert result.metrics["epochs_run"] == 2 and result.metrics["model"] == "mlp"
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["best_epoch"] == result.metrics["best_epoch"]
    assert (result.output_dir / "model.pt").exists()
    # the human summary compares the model with the best naive baseline
    assert "baseline" in result.log


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, r"^top_k must be at least 1, got 0$"),
    ({"seeds": 0}, r"^seeds must be at least 1, got 0$"),
    ({"max_winners": -1}, r"^max_winners must be at least 0, got -1$"),
    ({}, r"^no trials export at .*trials\.json: run `hpo tune"),
])
def test_run_pipeline_refuses_bad_input_before_kfp_starts(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        hpo_lib.run_pipeline(manifest(tmp_path), state_dir=tmp_path / "state", pipeline_root=tmp_path / "p",
                             **kwargs)


# ----------------------------------------------------------------------------------------------- the package
def test_importing_the_api_loads_neither_torch_nor_optuna_nor_kfp():
    code = "import sys, hpo_lib; print(sorted(m for m in ('torch', 'optuna', 'pandas', 'kfp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # `import hpo_lib` stays fast for `hpo trial --help` and for users: each call imports what it runs
    assert out.strip() == "[]"


def test_the_public_names_are_exported_and_typed():
    # every name in __all__ exists, and the package says it ships types (PEP 561)
    assert all(hasattr(hpo_lib, name) for name in hpo_lib.__all__)
    assert {"tune", "load_results", "run_trial", "run_pipeline", "TuneResult", "HpoError"} <= set(hpo_lib.__all__)
    assert (ROOT / "hpo_lib" / "py.typed").exists()


def test_one_version_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # pyproject.toml reads the version from hpo_lib/version.py and types none of its own
    assert project["project"]["dynamic"] == ["version"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hpo_lib.version.__version__"}
    # the trial image tag of the manifests and of the pipeline is the package's version
    assert manifests.IMAGE_TAG == hpo_lib.__version__
    assert f"ghcr.io/katib-hpo/trial:{hpo_lib.__version__}" in (ROOT / "manifests" / "kustomization.yaml").read_text() \
        .replace("newTag: ", "ghcr.io/katib-hpo/trial:")


def test_hpo_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    # `hpo --version`: the program and its version, exit code 0
    assert caught.value.code == 0 and capsys.readouterr().out == f"hpo {hpo_lib.__version__}\n"


@pytest.mark.parametrize("argv, verbose", [
    (["tune", "m.yaml"], False),
    (["-v", "tune", "m.yaml"], True),
    (["tune", "-v", "m.yaml"], True),
    (["tune", "m.yaml", "--verbose"], True),
    (["pipeline", "run-local", "m.yaml", "-v"], True),
    (["-v", "manifests", "check"], True),
    (["data", "fetch", "-v", "sample:sp500"], True),
])
def test_verbose_works_before_or_after_the_command(argv, verbose):
    # -v anywhere: before the command, after it, after a sub-subcommand
    assert cli._build_parser().parse_args(argv).verbose is verbose


def test_verbose_before_the_trial_is_accepted(capsys):
    # `hpo -v trial --help` reaches the trial's own parser (which has no -v of its own)
    assert cli.main(["-v", "trial", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: hpo trial")
