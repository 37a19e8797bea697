"""The engine as `hpo tune` runs it, cut short for real: kill -9 and Ctrl-C of the engine process while trials run.

Each run starts `hpo tune` as a process on the scripted trial (about 1.6 s a trial) and waits on its SQLite study
until trials have finished and another is running, so these take several seconds each: marked e2e.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.results import render
from tests.conftest import manifest, options, wait_for_trials

pytestmark = pytest.mark.e2e


def tune_argv(path, state, start: str = "off") -> list[str]:
    return [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(state), "--no-progress",
            "--no-tracking", "--set", "curves=1", "--set", "sleep=0.4", "--warm-start", start]


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except OSError:
        return False


def trial_pids(state) -> list[int]:
    """The live trial processes of ``state``: those whose HPO_OUTPUT_DIR (set by the engine for a cold trial) lies
    under it, and those a trial said it was (the scripted trial writes its pid: a warm-forked trial's /proc environ
    is its server's)."""
    found = [pid for pid in (int(p.read_text()) for p in Path(state).glob("*/trial-*/pid")) if _alive(pid)]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:  # a zombie has ended; only its exit status waits to be read
            continue
        if any(e.startswith(b"HPO_OUTPUT_DIR=" + str(state).encode()) for e in environ):
            found.append(int(proc.name))
    return sorted(set(found))


def wait_until(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the trial processes")
@pytest.mark.parametrize("start", ["python", "off"], ids=["warm", "cold"])
def test_kill_9_of_the_engine_leaves_no_trial_behind_and_loses_no_budget(tmp_path, start):
    path, state = manifest(tmp_path, maxTrialCount=6, parallelTrialCount=2), tmp_path / "state"
    process = subprocess.Popen(tune_argv(path, state, start), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_trials(state / "studies.db", "local.scripted", complete=2, process=process)
        assert trial_pids(state), "the running trial processes are visible before the kill"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # the kernel ends the trials with their engine (parent-death signal): no process is left running
    assert wait_until(lambda: not trial_pids(state)), f"trial processes outlived the engine: {trial_pids(state)}"
    storage = f"sqlite:///{state / 'studies.db'}"
    before = optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
    done_before = [t.number for t in before if t.state == TrialState.COMPLETE]
    cut = {t.number: t.params for t in before if t.state == TrialState.RUNNING}
    resumed = engine.run(path, options(tmp_path, curves="1"))
    after = resumed.get_trials()
    # every finished trial is still there; the ones the kill cut short are failed as interrupted, re-run with the
    # same parameters, and take no budget: six trials succeed, no failure counts
    assert all(after[n].state == TrialState.COMPLETE for n in done_before)
    assert {n for n in cut if after[n].state == TrialState.FAIL and after[n].user_attrs["interrupted"]} == set(cut)
    reruns = {t.user_attrs["rerun_of"]: t.params for t in after if "rerun_of" in t.user_attrs}
    assert reruns == cut
    assert sum(t.state == TrialState.COMPLETE for t in after) == 6 and engine.tally(resumed).failed == 0
    # the export says why the cut-short trials failed
    records = render.trial_records(resumed)
    assert {r["failReason"] for r in records if r["condition"] == "Failed"} == {
        "interrupted: the engine running it was killed"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the trial processes")
@pytest.mark.parametrize("signum, label", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"),
                                           (signal.SIGHUP, "SIGHUP")])
@pytest.mark.parametrize("start", ["python", "off"], ids=["warm", "cold"])
def test_ctrl_c_sigterm_and_sighup_end_running_trials_and_keep_the_study(tmp_path, signum, label, start):
    path, state = manifest(tmp_path, maxTrialCount=4, maxFailedTrialCount=1), tmp_path / "state"
    process = subprocess.Popen(tune_argv(path, state, start), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_for_trials(state / "studies.db", "local.scripted", complete=1, process=process)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # the engine stops with the shell's code for the signal (130 for Ctrl-C, 143 SIGTERM, 129 SIGHUP), in one line
    assert process.returncode == 128 + signum and "interrupted" in err and "Traceback" not in err, err
    assert not trial_pids(state)
    storage = f"sqlite:///{state / 'studies.db'}"
    after = optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
    # nothing is left RUNNING: the trial that was cut short is failed with the reason, finished ones stay
    assert TrialState.RUNNING not in [t.state for t in after]
    assert TrialState.COMPLETE in [t.state for t in after]
    assert [t.user_attrs.get("fail_reason") for t in after if t.state == TrialState.FAIL] == [f"interrupted ({label})"]
    # the export was written on the way out
    assert json.loads((state / "local.scripted" / "trials.json").read_text())
    # a resume re-runs the cut-short trial and fills the budget: the interruption cost no budget and is no failure
    # (maxFailedTrialCount is 1 here, and the resume does not fail the Experiment)
    resumed = engine.run(path, options(tmp_path, curves="1"))
    assert sum(t.state == TrialState.COMPLETE for t in resumed.get_trials()) == 4
