"""The engine as `hpo tune` runs it, cut short for real: kill -9 and Ctrl-C of the engine process while trials run.

Each run starts `hpo tune` as a process on the scripted trial (about 1.6 s a trial) and waits on its SQLite study
until trials have finished and another is running, so these take several seconds each: marked e2e.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.results import render
from tests.conftest import manifest, options, wait_for_trials

pytestmark = pytest.mark.e2e


def tune_argv(path, state) -> list[str]:
    return [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(state), "--no-progress",
            "--no-tracking", "--set", "curves=1", "--set", "sleep=0.4"]


def test_kill_9_of_the_engine_loses_no_finished_trial(tmp_path):
    path, state = manifest(tmp_path, maxTrialCount=6), tmp_path / "state"
    process = subprocess.Popen(tune_argv(path, state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_trials(state / "studies.db", "local.scripted", complete=2, process=process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    storage = f"sqlite:///{state / 'studies.db'}"
    done_before = [t.number for t in optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
                   if t.state == TrialState.COMPLETE]
    resumed = engine.run(path, options(tmp_path, curves="1"))
    after = resumed.get_trials()
    # every finished trial is still there, the one the kill cut short is failed, and the budget is filled up
    assert all(after[n].state == TrialState.COMPLETE for n in done_before)
    assert [t.state for t in after].count(TrialState.FAIL) == 1
    assert sum(t.state == TrialState.COMPLETE for t in after) == 5 and len(after) == 6
    # the export says why the cut-short trial failed
    records = render.trial_records(resumed)
    assert [r["failReason"] for r in records if r["condition"] == "Failed"] == [
        "interrupted: the engine running it was killed"]


def test_ctrl_c_terminates_running_trials_and_keeps_the_study(tmp_path):
    path, state = manifest(tmp_path, maxTrialCount=4), tmp_path / "state"
    process = subprocess.Popen(tune_argv(path, state), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_trials(state / "studies.db", "local.scripted", complete=1, process=process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # the engine stops with the shell's Ctrl-C code and says so
    assert process.returncode == 130 and "interrupted" in err
    after = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{state / 'studies.db'}").get_trials()
    # nothing is left RUNNING: the trial that was cut short is failed with the reason, finished ones stay
    assert TrialState.RUNNING not in [t.state for t in after]
    assert TrialState.COMPLETE in [t.state for t in after]
    assert [t.user_attrs.get("fail_reason") for t in after if t.state == TrialState.FAIL] == [
        "interrupted (Ctrl-C)"]
    # the export was written on the way out
    assert json.loads((state / "local.scripted" / "trials.json").read_text())
