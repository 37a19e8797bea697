"""Shared fixtures: the real S&P 500 sample (from the arch package) and synthetic series with a known signal."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from hpo_lib import data

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def bench_module(name: str) -> ModuleType:
    """A ``bench/`` script imported as a module (the scripts run as files, with ``bench/`` on their path)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(folder: Path) -> tuple[subprocess.Popen, str, Path]:
    """A real ``mlflow server`` (SQLite store and artifacts under ``folder``) starting on a free local port in a
    session of its own: the process, its URL and its log. Wait for ``<url>/health`` before using it (a caller can
    do other work meanwhile); end it with :func:`stop_server`."""
    port = free_port()
    log_path = folder / "mlflow-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "server-artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return server, f"http://127.0.0.1:{port}", log_path


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's session, SIGKILL 3 s later: a graceful uvicorn shutdown can take 10 s, and the
    store is thrown away anyway."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_for_http(url: str, process: subprocess.Popen | None = None, *, log: Path | None = None,
                  timeout_s: float = 180.0) -> str:
    """The body of ``url`` once it answers with a 2xx status; fails the test when ``process`` (the server) exits
    first or after ``timeout_s``, with the end of the server's ``log``."""
    def said() -> str:
        return log.read_text(errors="replace")[-2000:] if log is not None else ""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server of {url} exited with code {process.returncode} first: {said()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode(errors="replace")
        except OSError:  # refused while it starts, or an error status; TimeoutError and HTTPError are OSErrors
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s: {said()}")


# ----------------------------------------------------------------------------------------------- Katib API double
def fixture(name: str) -> dict:
    """A recorded Katib object from ``tests/fixtures/katib/``."""
    return json.loads((FIXTURES / "katib" / name).read_text())


class FakeApi:
    """The four CustomObjectsApi calls the launcher makes; ``gets`` are answered in order (the last one repeats).

    An entry that is an exception is raised instead of returned, the way the Kubernetes client raises ApiException.
    """

    def __init__(self, *, gets=(), create=None, pages=None):
        self.gets, self.create_answer, self.pages = list(gets), create, list(pages or [])
        self.calls: list[tuple] = []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", group, version, namespace, plural, body["metadata"]["name"]))
        if isinstance(self.create_answer, Exception):
            raise self.create_answer
        return self.create_answer or body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, version, namespace, plural, name))
        answer = self.gets.pop(0) if len(self.gets) > 1 else self.gets[0]
        if isinstance(answer, Exception):
            raise answer
        return copy.deepcopy(answer)

    def list_namespaced_custom_object(self, group, version, namespace, plural, **kwargs):
        self.calls.append(("list", group, version, namespace, plural, kwargs))
        answer = self.pages.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


# ----------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def sp500() -> data.Prices:
    return data.load_prices("sample:sp500")


def prices_from_returns(returns: np.ndarray, *, start: str = "2000-01-03", ticker: str = "SYN") -> data.Prices:
    """OHLCV frame whose close-to-close log returns are exactly ``returns`` (first return is dropped by diff)."""
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    opens = np.concatenate([[close[0]], close[:-1]])
    frame = pd.DataFrame({
        "Open": opens,
        "High": np.maximum(opens, close) * 1.002,
        "Low": np.minimum(opens, close) * 0.998,
        "Close": close,
        "Volume": np.linspace(1e6, 2e6, len(close)),
    }, index=pd.bdate_range(start, periods=len(close), name="Date"))
    return {ticker: frame}


def ar1_returns(n: int, *, phi: float = 0.6, sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    """AR(1) returns: the next return is predictable from the last one (R^2 = phi^2)."""
    rng = np.random.default_rng(seed)
    eps = rng.normal(0, sigma, n)
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + eps[t]
    return r


@pytest.fixture
def ar1_prices() -> data.Prices:
    return prices_from_returns(ar1_returns(3000))


@pytest.fixture(autouse=True)
def no_yahoo(monkeypatch):
    """Tests never reach Yahoo: a real download attempt fails the test at once."""
    import yfinance

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download from Yahoo")

    monkeypatch.setattr(yfinance, "download", refuse)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # tracking in tests stays in their tmp folders


def _drop_dead_handlers() -> None:
    """Remove root handlers left by code run under an earlier test that write to a stream closed since (a capsys
    capture): ``hpo``'s ``logging.basicConfig`` and KFP's local runner bind a handler to the sys.stderr/stdout of the
    moment, and a later test's warnings would end in "--- Logging error ---" on its stderr."""
    for handler in list(logging.root.handlers):
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
            logging.root.removeHandler(handler)


@pytest.fixture(autouse=True)
def logging_enabled():
    """Each test starts and ends with sane global logging: the bench scripts' main() calls logging.disable(WARNING)
    for their own runs, and handlers added by the code under test never outlive it."""
    before, level = list(logging.root.handlers), logging.root.level
    _drop_dead_handlers()
    yield
    logging.disable(logging.NOTSET)
    for handler in list(logging.root.handlers):
        if handler not in before and not type(handler).__module__.startswith("_pytest"):
            logging.root.removeHandler(handler)
    logging.root.setLevel(level)
    _drop_dead_handlers()


collect_ignore_glob = ["fixtures/*"]  # helper programs the tests run as processes, not test modules


# ----------------------------------------------------------------------------------------------- pytest-xdist
# modules whose tests share one xdist worker under `--dist loadgroup` (what `make test` runs), by group: the buildah
# builds, since build.sh builds one image at a time per store and a second worker would only wait on its lock. A
# table, not xdist_group marks: pytest-xdist 3.8 tags a marked test by renaming item._nodeid, which pytest 9.2 no
# longer reads, so its own grouping silently does nothing here.
XDIST_GROUPS = {
    "tests/e2e/test_image_build.py": "buildah",
    "tests/e2e/test_image_versions.py": "buildah",
    "tests/e2e/test_suggestion_image.py": "buildah",
    # modules whose module-scoped fixture is minutes of work (a local pipeline run, the packing benchmark): one
    # worker runs all their tests, so that it is set up once, not once per worker
    "tests/pipeline/test_local_run.py": "local-run",
    "tests/bench/test_packing.py": "packing",
}


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: each test is a unit of work for whichever worker is free, except the modules of
    ``XDIST_GROUPS``, one unit per group (the biggest units start first)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return XDIST_GROUPS.get(nodeid.split("::", 1)[0], nodeid)

    return ModuleGroups(config, log)


# ----------------------------------------------------------------------------------------------- engine doubles
SCRIPT = FIXTURES / "scripted_trial.py"  # the stand-in trial: prints the Katib lines a test decides (--curves, --mode)
OBJECTIVES_ANNOTATION = "katib-hpo.io/objectives"

BASE = {  # an Experiment whose trial is the scripted stand-in: 3 trials, one at a time, medianstop after 2 reports
    "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
    "metadata": {"name": "scripted", "namespace": "local"},
    "spec": {
        "objective": {"type": "minimize", "objectiveMetricName": "val_loss", "additionalMetricNames": ["val_rmse"],
                      "metricStrategies": [{"name": "val_loss", "value": "min"}, {"name": "val_rmse", "value": "min"}]},
        "algorithm": {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "7"}]},
        "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "2"}]},
        "parallelTrialCount": 1, "maxTrialCount": 3, "maxFailedTrialCount": 3,
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "parameters": [{"name": "x", "parameterType": "double",
                        "feasibleSpace": {"min": "0.0", "max": "1.0", "distribution": "uniform"}}],
        "trialTemplate": {
            "primaryContainerName": "training",
            "trialParameters": [{"name": "x", "description": "a knob", "reference": "x"}],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {
                "backoffLimit": 0, "activeDeadlineSeconds": 600,
                "template": {"metadata": {"labels": {"sidecar.istio.io/inject": "false"}}, "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "training", "image": "local/scripted:1", "command": ["python"],
                                    "args": [str(SCRIPT), "--x=${trialParameters.x}", "--epochs=4"]}]}}}},
        },
    },
}


def manifest(tmp_path: Path, *, annotations: dict | None = None, **spec_changes) -> Path:
    """``BASE`` with ``spec`` keys replaced (and metadata annotations), written as ``tmp_path/experiment.yaml``."""
    import yaml

    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec_changes)
    if doc["spec"].get("maxFailedTrialCount") is None:  # maxFailedTrialCount=None: the Experiment never fails
        doc["spec"].pop("maxFailedTrialCount", None)
    else:
        doc["spec"]["maxFailedTrialCount"] = min(doc["spec"]["maxFailedTrialCount"], doc["spec"]["maxTrialCount"])
    if annotations:
        doc["metadata"]["annotations"] = dict(annotations)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def multi_manifest(tmp_path: Path, objectives: str = "val_loss:minimize, val_rmse:maximize", **spec_changes) -> Path:
    """``BASE`` as a multi-objective study: the objectives annotation over Katib's one objective."""
    return manifest(tmp_path, annotations={OBJECTIVES_ANNOTATION: objectives}, **spec_changes)


WARM_START = {"mode": "own"}  # how options() starts trials; the `start` fixture switches it per test


def options(tmp_path: Path, **overrides):
    """Engine options for a test: trial flag ``overrides`` (curves=..., mode=...), state in ``tmp_path/state``, no
    MLflow; trials start as the `start` fixture says (default: warm only for the project's own trial)."""
    from hpo_lib import engine

    return engine.TuneOptions(
        overrides=overrides, state_dir=tmp_path / "state", tracking=False, warm_start=WARM_START["mode"]
    )


@pytest.fixture(params=["python", "off"], ids=["warm", "cold"])
def start(request):
    """Run the test twice: its scripted trials forked from the engine's warm worker, then as fresh processes."""
    WARM_START["mode"] = request.param
    yield request.param
    WARM_START["mode"] = "own"


def states(study) -> list:
    """The study's trial states in trial order."""
    return [t.state for t in study.get_trials()]


def wait_for_trials(database: Path, study_name: str, *, complete: int, process=None, timeout_s: float = 120.0):
    """Poll the SQLite study an engine in another process writes until at least ``complete`` trials succeeded and
    another is running; returns those trials. Fails the test after ``timeout_s``, or at once if ``process`` exits."""
    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{database}"
    deadline = time.monotonic() + timeout_s
    while True:
        time.sleep(0.3)
        trials = []
        if database.exists():  # loading a missing database would create it under the engine's feet
            try:
                trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
            except Exception:  # noqa: BLE001 - the study may not exist yet, or the writer holds the lock
                trials = []
        found = [t.state for t in trials]
        if found.count(TrialState.COMPLETE) >= complete and TrialState.RUNNING in found:
            return trials
        if process is not None and process.poll() is not None:
            said = process.stderr.read() if process.stderr is not None else ""
            raise AssertionError(f"the engine exited with code {process.returncode} first: {said[-2000:]}")
        assert time.monotonic() < deadline, f"no {complete} succeeded trials and a running one in {timeout_s:.0f} s"
