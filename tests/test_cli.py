"""The ``hpo`` command on local studies: tune, results, report and dashboard, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from hpo_lib import cli, engine
from tests.conftest import free_port, manifest, multi_manifest, options


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A finished local study of four trials (levels 1, 3, 5, 2; the level-5 one early-stopped): (manifest, state)."""
    folder = tmp_path_factory.mktemp("tuned")
    path = manifest(folder, maxTrialCount=4)
    engine.run(path, options(folder, curves="1,3,5,2"))
    return path, folder / "state"


# ------------------------------------------------------------------------------------------------ tune
def test_tune_command_prints_a_leaderboard(tmp_path, capsys):
    code = cli.main(["tune", str(manifest(tmp_path)), "--set", "curves=1,3,5", "--state-dir", str(tmp_path / "s"),
                     "--no-progress", "--no-tracking"])
    out = capsys.readouterr().out
    # the study ran and its leaderboard and export are printed
    assert code == 0 and "2 succeeded, 1 early-stopped, 0 failed" in out and "#1 trial 0: objective 1" in out
    assert f"trials exported to {tmp_path / 's' / 'local.scripted'}/trials.json" in out


def test_tune_of_a_missing_manifest_is_one_clear_error(tmp_path, capsys):
    # a manifest that is not there: exit 2 and one error line
    assert cli.main(["tune", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[0].startswith("hpo: error: ")


def test_an_engine_error_that_names_settings_ends_with_the_flags_that_fix_it(tmp_path, capsys):
    code = cli.main(["tune", str(multi_manifest(tmp_path)), "--pruner", "hyperband", "--state-dir",
                     str(tmp_path / "s"), "--no-progress", "--no-tracking"])
    err = capsys.readouterr().err.strip().splitlines()
    # exit 2, one line on stderr: the engine's reason, then the setting as this command's flag
    assert code == 2 and len(err) == 1
    assert err[0].startswith("hpo: error: pruner hyperband: Optuna cannot prune multi-objective studies")
    assert err[0].endswith("; set with --pruner")


# ------------------------------------------------------------------------------------------------ results, report
def test_results_prints_the_top_k_and_exports_every_trial(tuned, tmp_path, capsys):
    path, state = tuned
    assert cli.main(["results", str(path), "--state-dir", str(state), "--output", str(tmp_path / "out"),
                     "--top", "2"]) == 0
    out = capsys.readouterr().out
    # the top 2 of the three succeeded trials, and the epochs early stopping saved
    assert "top 2 by the objective" in out and "#3" not in out and "early stopping saved 2 epochs (" in out
    # every trial exported where --output says, in Katib Trial shape
    records = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [r["condition"] for r in records] == ["Succeeded", "Succeeded", "EarlyStopped", "Succeeded"]


def test_results_refuses_a_top_below_one(tuned, capsys):
    path, state = tuned
    # exit 2 with the flag and the value
    assert cli.main(["results", str(path), "--state-dir", str(state), "--top", "0"]) == 2
    assert "--top must be at least 1, got 0" in capsys.readouterr().err


def test_report_writes_the_plots_and_the_page(tuned, capsys):
    path, state = tuned
    assert cli.main(["report", str(path), "--state-dir", str(state)]) == 0
    written = capsys.readouterr().out.split()
    # one line per file written: the plots and the page, none empty
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"history.png", "learning_curves.png", "importances.png", "slice.png", "report.html"} <= names
    assert all(os.path.getsize(p) > 1000 for p in written)
    # the page sits in the study's folder by default, titled with the study
    assert "<h1>local.scripted</h1>" in (state / "local.scripted" / "report" / "report.html").read_text()


@pytest.mark.parametrize("command", ["results", "report"])
def test_results_and_report_without_a_study_are_one_clear_error(tmp_path, capsys, command):
    # no study stored: exit 2, telling the user to tune first
    assert cli.main([command, str(manifest(tmp_path)), "--state-dir", str(tmp_path / "none")]) == 2
    assert "run `hpo tune" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ dashboard
def test_dashboard_without_studies_is_one_clear_error(tmp_path, capsys):
    # nothing tuned in the state folder: exit 2 before any server starts
    assert cli.main(["dashboard", "--state-dir", str(tmp_path / "none"), "--port", str(free_port())]) == 2
    assert "no studies under" in capsys.readouterr().err


def test_dashboard_serves_the_local_studies(tuned):
    _, state = tuned
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpo_lib.cli", "dashboard", "--state-dir", str(state),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(process.stdout.read().decode() if process.poll() is not None else
                                         "dashboard did not answer within 60 s") from None
                time.sleep(0.5)
        # the dashboard's API lists the study `hpo tune` stored
        assert [s["study_name"] for s in body["study_summaries"]] == ["local.scripted"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_bar_reads_each_running_trials_planned_epochs_from_its_flags():
    from hpo_lib.study_record import planned_epochs

    assert planned_epochs(["python", "-m", "hpo_lib.trial", "--model=lstm", "--epochs=60"]) == 60
    assert planned_epochs(["hpo", "trial", "--epochs", "12", "--lr=0.1"]) == 12
    assert planned_epochs(["hpo", "trial", "--lr=0.1"]) is None  # a command without it shows "?"
    assert planned_epochs(["hpo", "trial", "--epochs=${trialParameters.epochs}"]) is None
