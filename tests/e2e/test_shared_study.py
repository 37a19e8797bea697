"""Several `hpo tune` processes on one study: the budget holds for the whole study, no live worker's trial is taken
over, and a killed worker's trials are re-run by the others. SQLite with two engines on one machine (started
together on a fresh state folder, and one after the other), and a real PostgreSQL server (Debian's package, started
here on a local port) with three engines, one killed mid-study. Each engine runs the scripted trial (~1.6 s)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo_lib import engine
from tests.conftest import manifest, wait_for_trials

pytestmark = pytest.mark.e2e


def tune(path: Path, state: Path, storage: str | None = None, parallel: int | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(state), "--no-progress",
            "--no-tracking", "--set", "curves=1", "--set", "sleep=0.4"]
    if storage:
        argv += ["--storage", storage]
    if parallel:  # how many trials this engine runs at once (one GPU per machine, say)
        argv += ["--parallel", str(parallel)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen], timeout_s: float = 180) -> list[tuple[int, str]]:
    out = []
    for process in processes:
        _, err = process.communicate(timeout=timeout_s)
        out.append((process.returncode, err))
    return out


def max_overlap(trials) -> int:
    """The most trials that ran at the same moment, from their start and end times."""
    events = sorted([(t.datetime_start, 1) for t in trials if t.datetime_start]
                    + [(t.datetime_complete, -1) for t in trials if t.datetime_complete], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def assert_budget_held(study: optuna.Study, budget: int, parallel: int) -> None:
    trials = study.get_trials()
    tally = engine.tally(study)
    # exactly the budget succeeded, nothing failed on its own, nothing is left running or queued
    assert tally.complete == budget and tally.failed == 0 and tally.running == 0 and tally.waiting == 0, tally
    # every trial beyond the budget is a re-run of an interrupted one, never an extra
    assert len(trials) == budget + tally.interrupted
    # never more trials at once than parallelTrialCount, across all engines
    assert max_overlap(trials) <= parallel
    # no engine proposed an assignment another had run or was running (issue 30: with one random_state, each
    # engine's sampler replayed the same start-up draws); only a re-run repeats its interrupted trial's
    drawn = [t.params["x"] for t in trials if "rerun_of" not in t.user_attrs]
    assert len(set(drawn)) == len(drawn), drawn


@pytest.mark.parametrize("stagger_s", [0.0, None], ids=["started-together-on-a-fresh-folder", "one-after-the-other"])
def test_two_engines_share_one_sqlite_study_within_its_budget(tmp_path, stagger_s):
    path, state = manifest(tmp_path, maxTrialCount=6, parallelTrialCount=2), tmp_path / "state"
    first = tune(path, state)
    if stagger_s is None:  # the second starts while the first has finished a trial and runs others
        wait_for_trials(state / "studies.db", "local.scripted", complete=1, process=first)
    second = tune(path, state)
    results = finish([first, second])
    # both end cleanly; neither marked the other's running trials failed
    assert [code for code, _ in results] == [0, 0], results
    assert all("interrupted by" not in err and "lost its engine" not in err for _, err in results)
    study = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{state / 'studies.db'}")
    assert_budget_held(study, budget=6, parallel=2)
    assert engine.tally(study).interrupted == 0


# ------------------------------------------------------------------------------------------------ PostgreSQL
def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own on 127.0.0.1, as a non-root user (the server refuses to run as root)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install postgresql; .ci/run installs them)")
    pytest.importorskip("psycopg", reason="the postgres extra: pip install -e '.[postgres]'")
    home = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
    data, port = home / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chmod(home, 0o755)
        shutil.chown(home, "nobody", "nogroup")
        as_user = ["runuser", "-u", "nobody", "--"]
    run = lambda *argv: subprocess.run([*as_user, *argv], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "hpo", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w", "-o",
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={home}", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "hpo", "studies")
        yield f"postgresql+psycopg://hpo@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _running_of(study_name: str, storage: str) -> list:
    try:
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(states=(TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return []


def test_three_engines_share_a_postgresql_study_and_recover_a_killed_one(tmp_path, postgres_url):
    path = manifest(tmp_path, maxTrialCount=9, parallelTrialCount=3)
    states = [tmp_path / f"state-{i}" for i in range(3)]  # three workers, as on three machines: nothing shared
    engines = [tune(path, state, postgres_url, parallel=1) for state in states]
    victim = engines[1]
    deadline = time.monotonic() + 120
    while True:  # kill the second engine once it runs a trial of its own
        mine = [t for t in _running_of("local.scripted", postgres_url)
                if (t.user_attrs.get("engine") or {}).get("pid") == victim.pid]
        if mine:
            break
        assert victim.poll() is None and time.monotonic() < deadline, "the second engine never ran a trial"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    results = finish([engines[0], engines[2]])
    assert [code for code, _ in results] == [0, 0], results
    study = optuna.load_study(study_name="local.scripted", storage=postgres_url)
    # the survivors re-ran the killed engine's trials with their parameters, and the budget held for the study
    assert_budget_held(study, budget=9, parallel=3)
    trials = study.get_trials()
    # the work was shared: each surviving engine ran trials of its own
    owners = {(t.user_attrs.get("engine") or {}).get("pid") for t in trials if t.state == TrialState.COMPLETE}
    assert {engines[0].pid, engines[2].pid} <= owners
    cut = {t.number: t.params for t in trials if t.user_attrs.get("interrupted")}
    assert cut and {t.user_attrs["rerun_of"]: t.params for t in trials if "rerun_of" in t.user_attrs} == cut
    assert {t.user_attrs["fail_reason"] for t in trials if t.user_attrs.get("interrupted")} == {
        "interrupted: the engine running it was killed"}
