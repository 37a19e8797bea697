"""Shared fixtures: the real S&P 500 sample (from the arch package) and synthetic series with a known signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpo_lib import data


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
