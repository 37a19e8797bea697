"""Shared fixtures: the real S&P 500 sample (from the arch package) and synthetic series with a known signal."""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
import sys
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


collect_ignore_glob = ["fixtures/*"]  # helper programs the tests run as processes, not test modules
