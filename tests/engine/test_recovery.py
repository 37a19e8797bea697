"""What survives an interruption or a fault: trials a killed engine left RUNNING are re-run, a live engine's never
taken; a full disk beside the study storage ends the engine in its own words, never a hang; a SIGTERMed local pipeline
ends its steps' processes; a --set of a searched parameter is recorded as the trials ran."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.engine import process, recovery
from hpo_lib.engine.recovery import GRACE_S
from tests.conftest import manifest, options


@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_resume_keeps_finished_trials_and_reruns_interrupted_ones_without_taking_budget(tmp_path, monkeypatch):
    # the orphan carries no engine stamp (an older version's): it counts as lost once GRACE_S has passed since it
    # started; 1 s here instead of a minute, the rule unchanged
    monkeypatch.setattr(recovery, "GRACE_S", 1.0)
    path = manifest(tmp_path, maxTrialCount=2)
    engine.run(path, options(tmp_path, curves="1"))
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    killed = optuna.load_study(study_name="local.scripted", storage=storage)
    orphan = killed.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # a trial a kill -9 left RUNNING
    resumed = engine.run(manifest(tmp_path, maxTrialCount=4, maxFailedTrialCount=1), options(tmp_path, curves="1"))
    # the two finished trials are still there, the orphan is failed as interrupted and re-run with its parameters;
    # it takes no budget (4 succeed) and does not count as a failure (maxFailedTrialCount 1 is not reached)
    trials = resumed.get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4 and len(trials) == 5
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs["interrupted"] is True
    rerun = [t for t in trials if t.user_attrs.get("rerun_of") == orphan.number]
    assert len(rerun) == 1 and rerun[0].params == orphan.params and rerun[0].state == TrialState.COMPLETE
    assert engine.tally(resumed).failed == 0 and engine.tally(resumed).interrupted == 1


def test_a_running_trial_of_a_live_engine_is_never_taken_over(tmp_path):
    path = manifest(tmp_path, maxTrialCount=2)
    engine.run(path, options(tmp_path, curves="1"))
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    other = optuna.load_study(study_name="local.scripted", storage=storage)
    alive = other.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr("engine", {"host": "another-machine", "pid": 1, "started": 1})
    alive.set_user_attr("heartbeat", __import__("time").time())  # its engine stamped it just now
    # an engine on another machine with a fresh heartbeat: nothing is recovered
    assert engine.recover_orphans(other) == []
    # the same trial with a stale heartbeat has lost its engine: recovered and queued again
    alive.set_user_attr("heartbeat", __import__("time").time() - 2 * GRACE_S)
    assert engine.recover_orphans(other) == [alive.number]
    queued = other.get_trials()[-1]
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == alive.params
    # a second engine racing for the same orphan does not queue it twice
    assert engine.recover_orphans(other) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a file every write to fails (ENOSPC)")
def test_a_full_disk_under_the_trial_log_still_reports_the_trials_lines_and_exit():
    # the trial folder's disk is full: trial.log cannot be written (/dev/full answers every write with ENOSPC)
    child = subprocess.Popen([sys.executable, "-c", "print('epoch=1 val_loss=0.5'); print('done')"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    events: queue.Queue = queue.Queue()
    reader = threading.Thread(target=process._read_lines, args=(7, child, events, Path("/dev/full")))
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive()
    seen = []
    while not events.empty():
        seen.append(events.get())
    # one line says the log is given up and why; the trial's lines still reach the engine, and so does its exit
    lost = [payload for _, kind, payload in seen if kind == "output"]
    assert len(lost) == 1 and "/dev/full is no longer written: No space left on device" in lost[0]
    assert [payload for _, kind, payload in seen if kind == "line"] == ["epoch=1 val_loss=0.5", "done"]
    assert seen[-1] == (7, "exit", 0)


def _small_disk(tmp_path: Path, size: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("this machine does not allow a tmpfs mount")
    return mount


def _fill(mount: Path) -> None:
    with open(mount / "ballast", "wb", buffering=0) as ballast:
        try:
            while True:
                ballast.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.mark.e2e
@pytest.mark.parametrize("full", ["mlflow", "trial folders"])
def test_a_full_disk_beside_the_study_storage_is_one_line_a_failure_and_never_a_hang(tmp_path, full):
    """The disk of MLflow's store, or of the trial folders, fills mid-study while the study storage is elsewhere: the
    engine ends (no hang on a reader thread that could not write trial.log), every line it prints is one of its own
    (no traceback, no SQL statement or parameters), each naming the store or file and the cause."""
    mount = _small_disk(tmp_path, "4m")
    try:
        path = manifest(tmp_path, maxTrialCount=6, parallelTrialCount=1)
        state = mount / "state" if full == "trial folders" else tmp_path / "state"
        argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(state), "--no-progress",
                "--tracking-uri", f"sqlite:///{mount / 'mlflow.db' if full == 'mlflow' else tmp_path / 'mlflow.db'}",
                "--storage", f"sqlite:///{tmp_path / 'studies.db'}", "--set", "sleep=0.3", "--cold-start"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        started = time.monotonic()
        while not (state / "local.scripted" / "trial-0001").exists() and time.monotonic() - started < 120:
            time.sleep(0.1)
        _fill(mount)  # the second trial runs: its folder, or MLflow's store, is now on a full disk
        out, err = proc.communicate(timeout=120)  # a hang fails here
        said = out + err
        assert "Traceback" not in said and "[SQL" not in said and "INSERT" not in said, said[-3000:]
        lines = err.strip().splitlines()
        assert lines and all(line.startswith(("WARNING hpo_lib", "hpo: error: ")) for line in lines), err[-3000:]
        where = "mlflow.db" if full == "mlflow" else str(mount)
        assert any(where in line and ("disk is full" in line or "No space left" in line) for line in lines), err
    finally:
        subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the steps' processes through /proc")
def test_sigterm_during_a_local_pipeline_ends_the_steps_processes_and_names_the_step(tmp_path):
    import signal
    import threading

    from hpo_lib.errors import HpoError
    from hpo_lib.pipeline import local

    before = signal.getsignal(signal.SIGTERM)
    # a step as kfp's local runner starts it: a child process whose command line names the step's function
    step = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "--function_to_execute", "retrain"])
    try:
        with pytest.raises(HpoError) as caught, local._steps_end_with_this_process(tmp_path):
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
            step.wait(timeout=60)  # kfp's runner waits on its step the same way
        # one line naming the signal and the step, exit code 128 + 15; the step's process is gone, not left running
        assert str(caught.value) == (f"stopped by SIGTERM: the step(s) stopped: retrain; the finished steps' "
                                     f"artifacts are under {tmp_path}/")
        assert caught.value.exit_code == 143
        assert step.wait(timeout=10) == -signal.SIGTERM
    finally:
        if step.poll() is None:
            step.kill()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_set_of_a_searched_parameter_warns_once_and_records_the_value_the_trials_ran_with(tmp_path, caplog):
    import json
    import logging

    from hpo_lib import engine
    from tests.conftest import options

    # x is searched (--x=${trialParameters.x}); --set x=0.25 makes every trial run with 0.25
    with caplog.at_level(logging.WARNING, logger="hpo_lib.engine.process"):
        study = engine.run(manifest(tmp_path, maxTrialCount=2), options(tmp_path, x="0.25"))
    warned = [r.getMessage() for r in caplog.records if "searched parameter x" in r.getMessage()]
    assert warned == ["--set x=0.25 replaces the searched parameter x: every trial runs with 0.25, and the study, the "
                      "export and the leaderboard record 0.25"]
    # what the trials ran with is what the study and the export record, not a sampled value they never saw
    assert [t.params["x"] for t in study.get_trials()] == ["0.25", "0.25"]
    assert all("--x=0.25" in t.user_attrs["argv"] for t in study.get_trials())
    export = json.loads((tmp_path / "state" / study.study_name / "trials.json").read_text())
    assert [{p["name"]: p["value"] for p in r["parameterAssignments"]}["x"] for r in export] == ["0.25", "0.25"]


def test_a_trial_the_system_refuses_to_start_is_failed_with_its_reason_never_left_running(tmp_path, monkeypatch):
    import errno

    from hpo_lib.errors import ConfigError

    def refused(*args, **kwargs):
        raise OSError(errno.E2BIG, "Argument list too long")

    monkeypatch.setattr(process.subprocess, "Popen", refused)  # what exec answers an argument over 128 KiB
    opts = options(tmp_path, curves="1")
    opts.warm_start = "off"
    with pytest.raises(ConfigError, match=r"^cannot start trial 0: \[Errno 7\] Argument list too long$"):
        engine.run(manifest(tmp_path, maxTrialCount=2), opts)
    monkeypatch.undo()
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    (trial,) = optuna.load_study(study_name="local.scripted", storage=storage).get_trials()
    assert trial.state == TrialState.FAIL and "Argument list too long" in trial.user_attrs["fail_reason"]


def test_a_store_failure_is_worded_by_its_innermost_cause_not_by_what_was_being_handled():
    from hpo_lib.errors import cause_line

    def wrapped() -> Exception:
        try:
            try:
                raise OSError(28, "No space left on device")
            except OSError as inner:
                raise RuntimeError("(raised as a result of Query-invoked autoflush; ...)\n[SQL: INSERT ...]") from inner
        except RuntimeError as exc:
            return exc

    assert cause_line(wrapped()) == "[Errno 28] No space left on device"  # no wrapper text, no SQL
    try:  # an error raised in a `finally` while a storage error propagated is not caused by it
        try:
            raise ValueError("database or disk is full")
        finally:
            raise KeyError("artifact store")  # noqa: B012
    except KeyError as unrelated:
        assert cause_line(unrelated) == "'artifact store'"
