"""Bad input and faults at the ``hpo`` command: one row a case, each ending in one line that names the problem.

Every row runs ``hpo_lib.cli.main`` in this process and asserts the exit code, that no traceback is printed, that
stderr holds exactly one line, and that the line names the problem (and, where one is in play, that no password
leaks). The rows that need a real process or a real mount are the few ``e2e`` tests at the end.
"""

from __future__ import annotations

import functools
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpo_lib import cli, data
from hpo_lib.data import sources
from tests.conftest import free_port, manifest

LSTM = str(Path(__file__).resolve().parents[1] / "manifests" / "lstm-experiment.yaml")
SECRET = "s3cret"
HELD: list[socket.socket] = []  # sockets a case keeps open while it runs (a taken port)


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv(tmp_path, monkeypatch)`` builds the command; ``says`` must appear in the error line."""

    name: str
    argv: Callable[[Path, pytest.MonkeyPatch], list[str]]
    says: str
    code: int = 2


# ----------------------------------------------------------------------------------------------- inputs
def frame(n: int = 300, *, close: np.ndarray | None = None) -> pd.DataFrame:
    """An OHLCV frame of ``n`` business days, a random walk unless ``close`` is given."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))) if close is None else close
    return pd.DataFrame({"Date": pd.bdate_range("2015-01-01", periods=n), "Open": close, "High": close * 1.01,
                         "Low": close * 0.99, "Close": close, "Volume": 1e6})


def csv(tmp: Path, table: pd.DataFrame | str, name: str = "prices.csv") -> Path:
    path = tmp / name
    path.write_text(table) if isinstance(table, str) else table.to_csv(path, index=False)
    return path


def fetch(path: Path | str) -> list[str]:
    return ["data", "fetch", f"file:{path}"]


def sp500_rows(tmp: Path, rows: int) -> Path:
    long = data.to_long(data.load_prices("sample:sp500"))
    return csv(tmp, long.iloc[:rows].drop(columns="Ticker"), "short.csv")


def a_file(tmp: Path, name: str = "taken") -> Path:
    path = tmp / name
    path.write_text("a file, not a folder\n")
    return path


def corrupt_db(tmp: Path) -> Path:
    state = tmp / "state"
    state.mkdir()
    (state / "studies.db").write_bytes(os.urandom(4096))
    return state


def tuned_state(tmp: Path) -> Path:
    """A real study of the LSTM manifest with no trials, as `hpo results` reads it."""
    import optuna

    from hpo_lib.katib import experiment

    state = tmp / "state"
    state.mkdir()
    name = experiment.qualified_name(experiment.load_experiment(LSTM))
    optuna.create_study(study_name=name, storage=f"sqlite:///{state / 'studies.db'}")
    return state


def yahoo(monkeypatch: pytest.MonkeyPatch, *, online: bool) -> None:
    """Yahoo as the tests see it: no rows for anything; the network up (``online``) or down. No real call, and no
    wait between retries: the loader's download is ``download_yahoo`` with its own seams filled in."""
    monkeypatch.setattr(sources, "download_yahoo", functools.partial(
        sources.download_yahoo, download=lambda *a: pd.DataFrame(), sleep=lambda s: None,
        reach=lambda: None if online else "gaierror: [Errno -3] Temporary failure in name resolution"))


def tune(tmp: Path, *extra: str) -> list[str]:
    return ["tune", str(manifest(tmp)), "--state-dir", str(tmp / "s"), "--no-progress", "--no-tracking", *extra]


def unreadable(path: Path) -> Path:
    """``path`` made unreadable (mode 000); skips the case where this user (root) reads it anyway."""
    path.chmod(0)
    if os.access(path, os.R_OK):
        path.chmod(0o644)
        pytest.skip("this user reads a mode-000 file (root): run as another user to check it")
    return path


def unwritable(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    path.chmod(0o555)
    if os.access(path, os.W_OK):
        path.chmod(0o755)
        pytest.skip("this user writes a mode-555 folder (root): run as another user to check it")
    return path


# ----------------------------------------------------------------------------------------------- the table
CASES = [
    # data files (`file:` specs)
    Case("empty csv", lambda t, m: fetch(csv(t, "")), "is empty: it needs a header (Date, Open"),
    Case("header-only csv", lambda t, m: fetch(csv(t, "Date,Open,High,Low,Close,Volume\n")), "has no rows"),
    Case("a folder as file:", lambda t, m: fetch(t), "is a folder: give file:PATH"),
    Case("a folder named .csv", lambda t, m: fetch((t / "d.csv").mkdir() or t / "d.csv"), "is a folder"),
    Case("unreadable file", lambda t, m: fetch(unreadable(csv(t, frame()))), "cannot be read (permission denied)"),
    Case("corrupt parquet", lambda t, m: fetch(csv(t, "not parquet at all", "p.parquet")),
         "is not a valid Parquet file (ArrowInvalid"),
    Case("truncated parquet", lambda t, m: fetch(_truncated_parquet(t)), "is not a valid Parquet file"),
    Case("malformed csv", lambda t, m: fetch(csv(t, 'Date,Open\n"2020-01-01,1\n')), "is not valid CSV"),
    Case("missing file", lambda t, m: fetch(t / "nope.csv"), "nope.csv does not exist"),
    Case("wrong suffix", lambda t, m: fetch(csv(t, "x", "prices.xlsx")), "must be .csv or .parquet"),
    Case("missing columns", lambda t, m: fetch(csv(t, frame().drop(columns="Volume"))), "lacks column(s) ['Volume']"),
    Case("dates that are not dates", lambda t, m: fetch(csv(t, frame().assign(Date="soon"))),
         "Date column does not parse as dates"),
    # the series itself
    Case("constant prices", lambda t, m: fetch(csv(t, frame(close=np.full(300, 50.0)))), "the close is constant (50"),
    Case("near-constant prices", lambda t, m: fetch(csv(t, frame(close=_mostly_flat(300)))),
         "the close is unchanged on 80% of 299 days (at most 50%"),
    Case("nan prices", lambda t, m: fetch(csv(t, frame().assign(Close=lambda f: f.Close.where(f.index != 7)))),
         "1 row(s) with NaN prices"),
    Case("non-positive price", lambda t, m: fetch(csv(t, frame().assign(Low=lambda f: f.Low.where(f.index != 9, 0)))),
         "non-positive price on"),
    Case("duplicate dates", lambda t, m: fetch(csv(t, frame().assign(Date=lambda f: f.Date.where(f.index != 5,
                                                                                                  f.Date[4])))),
         "duplicate dates"),
    Case("too short for the defaults", lambda t, m: ["trial", "--epochs=1", f"--data=file:{sp500_rows(t, 733)}"],
         "series too short: short has 733 rows and needs at least 1003: 21 of feature warm-up, two purge gaps of 91"),
    Case("too short for a short window", lambda t, m: ["trial", "--epochs=1", "--seq-len=10", "--split-window=10",
                                                        f"--data=file:{sp500_rows(t, 300)}"],
         "has 300 rows and needs at least 310"),
    # data specs
    Case("unknown source", lambda t, m: ["data", "fetch", "ftp:SPY"], "unknown data source 'ftp'"),
    Case("unknown sample", lambda t, m: ["data", "fetch", "sample:dow"], "unknown sample 'dow'"),
    Case("a date that is not one", lambda t, m: ["data", "fetch", "yahoo:SPY?start=yesterday"],
         "yahoo start='yesterday' is not a date"),
    Case("offline yahoo", lambda t, m: yahoo(m, online=False) or ["data", "fetch", "yahoo:SPY",
                                                                   "--cache-dir", str(t)],
         "network failure: cannot reach Yahoo Finance (query2.finance.yahoo.com:443, gaierror"),
    Case("unknown ticker", lambda t, m: yahoo(m, online=True) or ["data", "fetch", "yahoo:NOPE",
                                                                   "--cache-dir", str(t)],
         "no data for NOPE between the first day and today after 4 attempts while Yahoo was reachable: unknown ticker"),
    Case("offline mode, nothing cached", lambda t, m: m.setenv("HPO_OFFLINE", "1") or ["data", "fetch", "yahoo:SPY",
                                                                                        "--cache-dir", str(t)],
         "no cached data for SPY"),
    Case("corrupt cache file", lambda t, m: _corrupt_cache(t), "is not a valid Parquet file"),
    Case("cache folder is a file", lambda t, m: _cache_in_a_file(t, m), "cannot be written (Not a directory)"),
    # trial flags, checked without training (--check-flags) and on a real run
    Case("unknown trial flag", lambda t, m: ["trial", "--frobnicate=1", "--check-flags"], "unknown flag --frobnicate"),
    Case("trial flag of the wrong type", lambda t, m: ["trial", "--epochs=ten", "--check-flags"],
         "--epochs expects an integer, got 'ten'"),
    Case("trial flag out of range", lambda t, m: ["trial", "--horizon=61", "--check-flags"],
         "--horizon must be at most 60, got 61"),
    Case("trial choice not offered", lambda t, m: ["trial", "--model=transformer", "--check-flags"],
         "--model must be one of mlp, lstm, gru, cnn-lstm, got 'transformer'"),
    Case("trial data spec checked too", lambda t, m: ["trial", "--data=sample:dow", "--check-flags"],
         "unknown sample 'dow'"),
    Case("trial output folder is a file", lambda t, m: ["trial", "--epochs=1", f"--output-dir={a_file(t)}"],
         "is a file, not a folder"),
    Case("trial output folder under a file", lambda t, m: ["trial", "--epochs=1", f"--output-dir={a_file(t)}/out"],
         "cannot be created: "),
    Case("trial output folder from HPO_OUTPUT_DIR", lambda t, m: m.setenv("HPO_OUTPUT_DIR", str(a_file(t))) or
         ["trial", "--epochs=1"], "is a file, not a folder"),
    Case("trial output folder unwritable", lambda t, m: ["trial", "--epochs=1", f"--output-dir={unwritable(t / 'ro')}"],
         "cannot be written (permission denied"),
    # hpo tune
    Case("negative trial timeout", lambda t, m: tune(t, "--trial-timeout", "-1"),
         "--trial-timeout must be a positive number of seconds, got -1"),
    Case("zero trial timeout", lambda t, m: tune(t, "--trial-timeout", "0"), "--trial-timeout must be a positive"),
    Case("nan trial timeout", lambda t, m: tune(t, "--trial-timeout", "nan"), "--trial-timeout must be a positive"),
    Case("state folder is a file", lambda t, m: tune(t, "--state-dir", str(a_file(t))), "is a file, not a folder"),
    Case("state folder under a file", lambda t, m: tune(t, "--state-dir", f"{a_file(t)}/s"),
         "cannot be written (Not a directory)"),
    Case("state folder unwritable", lambda t, m: tune(t, "--state-dir", str(unwritable(t / "ro"))),
         "cannot be written (Permission denied)"),
    Case("unknown trial flag through --set", lambda t, m: ["tune", LSTM, "--state-dir", str(t / "s"), "--no-progress",
                                                            "--no-tracking", "--set", "frobnicate=1"],
         "the trial refuses its flags before any trial starts: unknown flag --frobnicate"),
    Case("out-of-range trial flag through --set", lambda t, m: ["tune", LSTM, "--state-dir", str(t / "s"),
                                                                 "--no-progress", "--no-tracking", "--set", "epochs=0"],
         "--epochs must be at least 1, got 0"),
    Case("zero max trials", lambda t, m: tune(t, "--max-trials", "0"), "--max-trials must be at least 1, got 0"),
    Case("--set without a value", lambda t, m: tune(t, "--set", "epochs"), "--set expects FLAG=VALUE, got 'epochs'"),
    Case("unreachable MLflow, with a password", lambda t, m: [
        "tune", str(manifest(t)), "--state-dir", str(t / "s"), "--no-progress",
        "--tracking-uri", f"http://ana:{SECRET}@127.0.0.1:{free_port()}"],
        "MLflow tracking at http://ana:***@127.0.0.1:"),
    Case("storage URL with a password", lambda t, m: tune(t, "--storage", f"postgresql://ana:{SECRET}@127.0.0.1:1/x"),
         "cannot open study storage postgresql://ana:***@127.0.0.1:1/x"),
    Case("full disk during tune", lambda t, m: _full_disk(m) or tune(t),
         "failed mid-study: the disk is full; every trial that finished before is kept"),
    # results, report, dashboard
    Case("results on a corrupt database", lambda t, m: ["results", LSTM, "--state-dir", str(corrupt_db(t))],
         "cannot read study storage sqlite:///"),
    Case("report on a corrupt database", lambda t, m: ["report", LSTM, "--state-dir", str(corrupt_db(t))],
         "file is not a database"),
    Case("results with nothing tuned", lambda t, m: ["results", LSTM, "--state-dir", str(t / "none")],
         "no studies under"),
    Case("results --output is a file", lambda t, m: ["results", LSTM, "--state-dir", str(tuned_state(t)),
                                                      "--output", str(a_file(t))],
         "--output " + "{tmp}/taken is a file, not a folder"),
    Case("report --output is a file", lambda t, m: ["report", LSTM, "--state-dir", str(tuned_state(t)),
                                                     "--output", str(a_file(t))], "is a file, not a folder"),
    Case("results --top 0", lambda t, m: ["results", LSTM, "--top", "0"], "--top must be at least 1, got 0"),
    Case("dashboard on a taken port", lambda t, m: _taken_port(t, m), "cannot listen on 127.0.0.1:"),
    Case("dashboard on an impossible port", lambda t, m: ["dashboard", "--port", "70000"],
         "--port must be between 1 and 65535, got 70000"),
    # the pipeline
    Case("pipeline on a study whose trials all failed", lambda t, m: _all_failed(t),
         "no trial succeeded: 2 trial(s) in"),
    Case("pipeline --top-k 0", lambda t, m: ["pipeline", "run-local", LSTM, "--top-k", "0"],
         "--top-k must be at least 1, got 0"),
    # inputs past their bounds (hpo_lib/limits.py): one line naming the limit and the variable that raises it
    Case("yaml alias bomb", lambda t, m: tune_file(t, _bomb(t)), "with its aliases expanded is 490,329,"),
    Case("manifest over the size limit", lambda t, m: m.setenv("HPO_LIMIT_MANIFEST_BYTES", "1000") or tune(t),
         "bytes, over the limit of 1,000 bytes (etcd stores a Kubernetes object of at most 1.5 MiB"),
    Case("a categorical list over the limit", lambda t, m: tune_file(t, _long_list(t)),
         "is 10,001 values, over the limit of 10,000 values"),
    Case("a --set value over 128 KiB", lambda t, m: tune(t, "--set", "data=sample:sp500?x=" + "a" * 140_000),
         "bytes, over the limit of 131,072 bytes (Linux refuses to start a process with one argument"),
    Case("a data file over the row limit",
         lambda t, m: m.setenv("HPO_LIMIT_DATA_ROWS", "100") or fetch(csv(t, frame())),
         "is 300 rows, over the limit of 100 rows"),
    Case("an infinite price", lambda t, m: fetch(csv(t, frame().assign(Close=lambda f: f.Close.where(f.index != 7,
                                                                                                  np.inf)))),
         "1 row(s) with an infinite price, first on"),
    Case("a one-row csv", lambda t, m: ["trial", "--epochs=1", f"--data=file:{sp500_rows(t, 1)}"],
         "series too short: short has 1 rows and needs at least"),
    Case("a state folder linked outside", lambda t, m: _linked_state(t), "is a symbolic link to"),
    # credentials in a data spec
    Case("a token in a data spec", lambda t, m: ["data", "fetch", f"nosuch:SPY?token={SECRET}"],
         "'nosuch:SPY?token=***'"),
]


def tune_file(tmp: Path, path: Path) -> list[str]:
    return ["tune", str(path), "--state-dir", str(tmp / "s"), "--no-progress", "--no-tracking"]


def _bomb(tmp: Path) -> Path:
    from tests.test_fileio import bomb

    path = tmp / "bomb.yaml"
    path.write_text(manifest(tmp).read_text() + bomb())
    return path


def _long_list(tmp: Path) -> Path:
    import yaml

    doc = yaml.safe_load(manifest(tmp).read_text())
    doc["spec"]["parameters"].append({"name": "choice", "parameterType": "categorical",
                                      "feasibleSpace": {"list": [f"v{i}" for i in range(10_001)]}})
    path = tmp / "long.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _linked_state(tmp: Path) -> list[str]:
    from hpo_lib.katib import experiment

    outside = tmp / "outside"
    outside.mkdir()
    (tmp / "s").mkdir()
    (tmp / "s" / experiment.qualified_name(experiment.load_experiment(manifest(tmp)))).symlink_to(outside)
    return tune(tmp)


def _truncated_parquet(tmp: Path) -> Path:
    whole = tmp / "whole.parquet"
    frame().to_parquet(whole)
    cut = tmp / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def _mostly_flat(n: int) -> np.ndarray:
    """A close that moves on one day in five: a stale feed."""
    steps = np.where(np.arange(n) % 5 == 0, 0.01, 0.0)
    steps[0] = 0.0
    return 100 * np.exp(np.cumsum(steps))


def _corrupt_cache(tmp: Path) -> list[str]:
    key = data.parse_spec("yahoo:SPY").cache_key()
    (tmp / f"{key}.parquet").write_bytes(b"PAR1 and then garbage")
    return ["data", "fetch", "yahoo:SPY", "--cache-dir", str(tmp)]


def _cache_in_a_file(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    spy = frame().set_index("Date")
    monkeypatch.setattr(sources, "_yf_download", lambda *a: pd.concat({"SPY": spy}, axis=1).swaplevel(axis=1))
    return ["data", "fetch", "yahoo:SPY", "--cache-dir", f"{a_file(tmp)}/cache"]


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage's first trial write after the study opened fails as SQLite does on a full disk."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    def full(*args, **kwargs):
        try:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database or disk is full"))
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", full)


def _taken_port(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    HELD.append(holder)  # held until the case ends
    return ["dashboard", "--state-dir", str(tuned_state(tmp)), "--port", str(holder.getsockname()[1])]


def _all_failed(tmp: Path) -> list[str]:
    import json

    from hpo_lib.katib import experiment

    folder = tmp / "state" / experiment.qualified_name(experiment.load_experiment(LSTM))
    folder.mkdir(parents=True)
    records = [{"name": f"t{i}", "condition": "Failed", "failReason": "exited with code 2"} for i in range(2)]
    (folder / "trials.json").write_text(json.dumps(records))
    return ["pipeline", "run-local", LSTM, "--state-dir", str(tmp / "state")]


def _run(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:
    argv = case.argv(tmp_path, monkeypatch)
    capsys.readouterr()  # what setting the case up printed (Optuna's "a new study" line) is not the command's
    try:
        code = cli.main(argv)
    finally:
        while HELD:
            HELD.pop().close()
        for path in (tmp_path / "ro", tmp_path / "prices.csv"):
            if path.exists():
                path.chmod(0o755)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_naming_the_problem(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default folder (local_outputs/, .hpo/) lands in the test's own folder
    code, out, err = _run(case, tmp_path, monkeypatch, capsys)
    # the exit code of bad input
    assert code == case.code, err
    # no traceback anywhere
    assert "Traceback" not in out + err and 'File "' not in out + err
    # exactly one line on stderr, the face's error line, which names the problem
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), err
    assert case.says.replace("{tmp}", str(tmp_path)) in lines[0]
    # and no password leaks, on either stream
    assert SECRET not in out + err


def test_the_suite_covers_every_case_of_the_issue():
    # 40+ rows, every one named once
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_an_unreachable_tracking_server_is_refused_within_seconds(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # MLflow's own retries as shipped
    started = time.monotonic()
    code = cli.main(["tune", str(manifest(tmp_path)), "--state-dir", str(tmp_path / "s"), "--no-progress",
                     "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    # one line within seconds (the issue saw 255 s), naming the fix, before any trial ran
    assert code == 2 and elapsed < 10, (elapsed, err)
    assert "start the server" in err and "--no-tracking" in err
    assert not list((tmp_path / "s").glob("*/trial-*"))


def test_a_full_disk_keeps_what_finished(tmp_path, capsys, monkeypatch):
    import optuna
    from optuna.storages import RDBStorage

    real = RDBStorage.set_trial_state_values
    calls = {"n": 0}

    def full_after_one(self, trial_id, state, values=None):  # the second trial's end cannot be written
        if state.is_finished():
            calls["n"] += 1
            if calls["n"] == 2:
                import sqlalchemy.exc

                try:
                    raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database or disk is full"))
                except sqlalchemy.exc.OperationalError as exc:
                    raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
        return real(self, trial_id, state, values)

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", full_after_one)
    code = cli.main(tune(tmp_path, "--set", "curves=1,2,3"))
    err = capsys.readouterr().err
    # one line, and the first trial, finished before the disk filled, is still in the study
    assert code == 2 and "the disk is full" in err and err.count("\n") == 1
    monkeypatch.setattr(RDBStorage, "set_trial_state_values", real)
    study = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{tmp_path / 's' / 'studies.db'}")
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_the_dashboard_prints_nothing_before_refusing_a_taken_port(tmp_path, capsys, monkeypatch):
    code, out, err = _run(Case("port", _taken_port, ""), tmp_path, monkeypatch, capsys)
    # nothing on stdout: no "optuna-dashboard on http://..." line before the error (blank padding a progress bar
    # of an earlier test's thread may leave is no line)
    assert code == 2 and out.strip() == "" and "http://" not in out and "pick another with --port" in err


def test_log_lines_are_redacted_too(tmp_path, capsys, monkeypatch):
    import logging

    from hpo_lib.errors import RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logging.getLogger("any.library").addHandler(handler)
    try:
        logging.getLogger("any.library").warning("retrying %s", f"postgresql://ana:{SECRET}@db/x")
    finally:
        logging.getLogger("any.library").removeHandler(handler)
    # a library's log line, formatted with its arguments, reaches the handler redacted
    assert stream.getvalue() == "retrying postgresql://ana:***@db/x\n"


# ----------------------------------------------------------------------------------------------- e2e
@pytest.mark.e2e
def test_a_bad_input_in_a_real_process_prints_no_traceback(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    proc = subprocess.run([sys.executable, "-m", "hpo_lib.cli", "trial", f"--data=file:{tmp_path / 'empty.csv'}",
                           "--epochs=1", f"--output-dir={tmp_path / 'out'}"], capture_output=True, text=True,
                          timeout=120)
    # exit 2, one stderr line, no traceback, nothing on stdout
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "is empty" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_a_real_full_disk_is_one_line_and_a_resume_keeps_the_finished_trials(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("this machine does not allow a tmpfs mount")
    try:
        path = manifest(tmp_path, maxTrialCount=40, parallelTrialCount=1)
        argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(path), "--state-dir", str(mount), "--no-progress",
                "--no-tracking", "--set", "curves=" + ",".join(["1"] * 4)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        ballast = mount / "ballast"
        # fill the disk but for a little room: the study opens, trials run, and a write then fails
        subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1k", "count=700"], capture_output=True)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        said = proc.stderr + proc.stdout
        # whether the disk filled at the study, a trial or the export: one line, no traceback
        assert proc.returncode != 0 and "Traceback" not in said, said[-3000:]
        assert "disk is full" in proc.stderr or "No space left" in proc.stderr, said[-3000:]
        import optuna

        storage = f"sqlite:///{mount / 'studies.db'}"
        done = [t for t in optuna.load_study(study_name="local.scripted", storage=storage).trials
                if t.state == optuna.trial.TrialState.COMPLETE]
        ballast.unlink()
        resumed = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        trials = optuna.load_study(study_name="local.scripted", storage=storage).trials
        # freed, the same command resumes: every trial finished before is still there, and the budget fills
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert {t.number for t in done} <= {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert sum(t.state.is_finished() for t in trials) >= 40
    finally:
        subprocess.run(["umount", "-l", str(mount)])


NOBODY = 65534


@pytest.fixture
def nobody_folder():
    """A folder another user (nobody) can reach, for the permission cases root cannot check as itself."""
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as another user")
    folder = Path(tempfile.mkdtemp(prefix="hpo-bad-input-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
@pytest.mark.parametrize("setup, says", [
    ("unreadable", "cannot be read (permission denied): make it readable to this user"),
    ("trial-output", "cannot be created in {folder}/ro (permission denied or a read-only file system)"),
    ("state-dir", "--state-dir {folder}/ro cannot be written (Permission denied)"),
], ids=["unreadable data file", "unwritable trial output folder", "unwritable state folder"])
def test_permission_cases_as_another_user(nobody_folder, setup, says):
    folder = nobody_folder
    (folder / "ro").mkdir(mode=0o555)
    (folder / "ro").chmod(0o555)
    if setup == "unreadable":
        secret = csv(folder, frame(), "secret.csv")
        secret.chmod(0)
        argv = fetch(secret)
    elif setup == "trial-output":
        argv = ["trial", "--epochs=1", f"--output-dir={folder / 'ro' / 'out'}"]
    else:
        path = manifest(folder)
        path.chmod(0o644)
        argv = ["tune", str(path), "--state-dir", str(folder / "ro"), "--no-progress", "--no-tracking"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m", "hpo_lib.cli",
         *argv], capture_output=True, text=True, timeout=120, cwd=folder,
        env={**os.environ, "PYTHONPATH": str(root), "HOME": str(folder), "MPLCONFIGDIR": str(folder)})
    # exit 2, one line naming the folder or file and why, no traceback
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert says.format(folder=folder) in proc.stderr


def test_no_secret_is_stored_in_any_file_a_run_writes(tmp_path, monkeypatch):
    """`--set api-key=...` and a token in a data spec: the study database, MLflow's database and artifacts, the
    export and the trial folders hold neither secret (each stored copy of the command line and the flags is redacted
    as printed output is)."""
    from hpo_lib import engine
    from tests.conftest import options

    monkeypatch.chdir(tmp_path)  # MLflow's artifacts land under the test's folder too
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    opts = options(tmp_path, **{"api-key": SECRET, "data": f"yahoo:SPY?start=2020-01-01&token={SECRET}"})
    opts.tracking = True  # MLflow in sqlite:///<state>/mlflow.db: params, tags and the flags logged as params
    study = engine.run(manifest(tmp_path, maxTrialCount=1), opts)
    stored = study.get_trials()[0].user_attrs["argv"]
    assert stored[-2:] == ["--api-key=***", "--data=yahoo:SPY?start=2020-01-01&token=***"]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "trials.json" for p in written)
    (mlflow_db,) = [p for p in written if p.name == "mlflow.db"]
    assert b"api-key" in mlflow_db.read_bytes() and b"set.api-key" in mlflow_db.read_bytes()  # the flags were logged
    assert [p for p in written if SECRET.encode() in p.read_bytes()] == []


def test_a_trials_config_json_keeps_no_secret(tmp_path):
    import dataclasses
    import json

    import torch

    from hpo_lib.trial import assemble
    from hpo_lib.trial.flags import parse_args

    args = dataclasses.replace(parse_args(["--epochs=1"]), data=f"file:/data/prices.csv?token={SECRET}")
    assemble.save_model(torch.nn.Linear(1, 1), tmp_path, args)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data"] == "file:/data/prices.csv?token=***" and config["epochs"] == 1
    assert SECRET not in (tmp_path / "config.json").read_text()


def test_a_stored_command_line_hides_each_form_of_a_secret():
    from hpo_lib.errors import redact_argv, redact_value

    assert redact_argv(["hpo", "trial", f"--api-key={SECRET}", "--password", SECRET, "--lr", "0.1"]) == [
        "hpo", "trial", "--api-key=***", "--password", "***", "--lr", "0.1"]
    assert (redact_value("set.api-key", SECRET), redact_value("lr", "0.1")) == ("***", "0.1")

