"""The warm fork server: what it will run warm, that a forked trial behaves as a fresh process of the same command
would, and that the engine replaces a server that dies without losing the trial it ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.engine import warm
from tests.conftest import manifest, options

PROBE = textwrap.dedent(
    """
    import os, sys
    print("argv", sys.argv[1:])
    print("cwd", os.getcwd())
    print("env", os.environ.get("PROBE_VALUE"))
    print("stdin", repr(sys.stdin.read()))
    print("group", os.getpgid(0) == os.getpid())
    print("to stderr", file=sys.stderr)
    if "--signal" in sys.argv:
        os.kill(os.getpid(), 15)
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
    """
)


def test_what_runs_warm(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    ours = tmp_path / "ours"
    ours.write_text(f"#!{sys.executable}\nprint(1)\n")
    theirs = tmp_path / "theirs"
    theirs.write_text("#!/usr/bin/env python3\nprint(1)\n")
    env = dict(os.environ)
    assert warm.runnable([sys.executable, "-m", "hpo_lib.trial", "--epochs=1"], env)
    assert warm.runnable([sys.executable, str(script)], env)
    assert warm.runnable([str(ours)], env)  # a script of this interpreter, as `hpo` is
    assert not warm.runnable([str(theirs)], env)  # another interpreter's script
    assert not warm.runnable(["/usr/bin/python3", "-m", "hpo_lib.trial"], env)  # another interpreter
    assert not warm.runnable([sys.executable, "-c", "print(1)"], env)
    assert not warm.runnable(["bash", "-c", "echo 1"], env)
    # a variable read when an interpreter starts must agree with the server's; one the child honours may differ
    assert not warm.runnable([sys.executable, str(script)], {**env, "PYTHONHASHSEED": "123"})
    assert not warm.runnable([sys.executable, str(script)], {**env, "LD_PRELOAD": "/x.so"})
    assert warm.runnable([sys.executable, str(script)], {**env, "PYTHONUNBUFFERED": "1", "HPO_OUTPUT_DIR": "/o"})


def _run_warm(server: warm.WarmServer, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[str, int]:
    process = server.launch(argv, env, str(cwd))
    assert process is not None
    output = process.stdout.read()
    process.stdout.close()
    return output, process.wait(timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal and /proc")
def test_a_forked_command_runs_as_a_fresh_process_of_it_would(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PROBE_VALUE": "seen", "PROBE_EXIT": "7"}
    argv = [sys.executable, str(script), "--flag=1"]
    cold = subprocess.run(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    server = warm.WarmServer([], tmp_path / "warm.log")
    try:
        output, code = _run_warm(server, argv, env, work)
        # same argv, folder, environment, empty stdin, both streams on one pipe, its own process group, exit code
        assert (output, code) == (cold.stdout, cold.returncode) == (output, 7)
        assert "group True" in output and "env seen" in output
        # a death by signal reads as subprocess reports it: minus the signal's number
        _, code = _run_warm(server, [*argv, "--signal"], env, work)
        assert code == -signal.SIGTERM
        assert server.starts == 1  # one server served every request
    finally:
        server.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the server through /proc")
def test_a_worker_that_dies_is_replaced_and_its_trial_reported(tmp_path):
    killed: list[int] = []

    def kill_the_server(progress: engine.Progress) -> None:
        if progress.running and not killed:
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and os.readlink(proc / "fd" / "2").endswith(engine.process.WARM_LOG):
                        if str(tmp_path) in os.readlink(proc / "fd" / "2"):
                            os.kill(int(proc.name), signal.SIGKILL)
                            killed.append(int(proc.name))
                except OSError:
                    continue

    opts = options(tmp_path, curves="1", sleep="0.5")
    opts.warm_start, opts.on_progress = "python", kill_the_server
    study = engine.run(manifest(tmp_path, maxTrialCount=2, maxFailedTrialCount=1), opts)
    first, rerun, third = study.get_trials()
    assert killed, "the warm server was found and killed while the first trial ran"
    # the trial that lost its server is reported with the reason, not lost, and counted as interrupted: the engine's
    # fault, not the trial's. It is re-run with its parameters on a new server, warm, taking no budget (two trials
    # still complete) and no failure (maxFailedTrialCount 1 is not reached)
    assert first.state == TrialState.FAIL and "warm trial worker died" in first.user_attrs["fail_reason"]
    assert first.user_attrs["interrupted"] is True
    assert rerun.user_attrs["rerun_of"] == first.number and rerun.params == first.params
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs["warm_start"] is True
    assert third.state == TrialState.COMPLETE
    assert engine.tally(study).failed == 0 and engine.tally(study).interrupted == 1


def test_cold_start_runs_every_trial_as_a_fresh_process(tmp_path):
    opts = options(tmp_path, curves="1")
    opts.warm_start = "off"
    study = engine.run(manifest(tmp_path, maxTrialCount=1), opts)
    assert [t.user_attrs["warm_start"] for t in study.get_trials()] == [False]
    (tmp_path / "b").mkdir()
    opts = options(tmp_path / "b", curves="1")  # the stand-in is not the project's trial: cold by default
    study = engine.run(manifest(tmp_path / "b", maxTrialCount=1), opts)
    assert [t.user_attrs["warm_start"] for t in study.get_trials()] == [False]
