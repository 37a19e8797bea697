"""The yfinance path at its boundary: recorded frames in yfinance 1.7's layouts, no network.

``yf.download(..., group_by="column", multi_level_index=True)`` returns columns ``(Price, Ticker)``; for one ticker
with ``multi_level_index=False`` the columns are flat; an unknown or throttled ticker yields an empty frame or
all-NaN columns (yfinance logs instead of raising). The frames below are built the way yfinance's
``_download_impl`` assembles them (concat keyed by ticker, swap levels, sort).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpo_lib import data
from hpo_lib.data import sources
from hpo_lib.errors import DataError


def recorded(tickers: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """yfinance 1.7 multi-ticker frame: union of dates, NaN where a ticker did not trade or failed."""
    index = None
    for frame in tickers.values():
        if frame is not None:
            index = frame.index if index is None else index.union(frame.index)
    parts = {t: (f if f is not None else pd.DataFrame(columns=["Close", "High", "Low", "Open", "Volume"]))
             .reindex(index) for t, f in tickers.items()}
    raw = pd.concat(parts.values(), axis=1, keys=parts.keys(), names=["Ticker", "Price"])
    raw.columns = raw.columns.swaplevel(0, 1)
    return raw.sort_index(level=0, axis=1)


def ohlcv(start: str, n: int, base: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = base * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"Close": close, "High": close * 1.01, "Low": close * 0.99, "Open": close,
                         "Volume": rng.integers(1e6, 2e6, n).astype(float)},
                        index=pd.DatetimeIndex(pd.bdate_range(start, periods=n), name="Date"))


class FakeYahoo:
    """Stands in for yfinance.download: replays recorded frames and counts calls."""

    def __init__(self, *frames: pd.DataFrame | Exception):
        self.frames, self.calls = list(frames), 0

    def __call__(self, tickers, start, end, interval):
        self.calls += 1
        frame = self.frames[min(self.calls, len(self.frames)) - 1]
        if isinstance(frame, Exception):
            raise frame
        return frame


SPY, QQQ = ohlcv("2020-01-01", 300, 300.0, 1), ohlcv("2020-01-01", 300, 200.0, 2)


def test_multi_ticker_multiindex_frame_splits_per_ticker():
    qqq_holiday = QQQ.drop(QQQ.index[5])  # a day one ticker did not trade: NaN row in the union
    prices = data.split_yahoo_frame(recorded({"QQQ": qqq_holiday, "SPY": SPY}), ("SPY", "QQQ"))
    # each ticker keeps its own trading days and the requested order
    assert list(prices) == ["SPY", "QQQ"]
    assert len(prices["SPY"]) == 300 and len(prices["QQQ"]) == 299
    np.testing.assert_allclose(prices["SPY"]["Close"], SPY["Close"])
    assert list(prices["QQQ"].columns) == list(data.FIELDS)


def test_single_ticker_multiindex_and_flat_frames():
    multi = recorded({"SPY": SPY})
    flat = multi.droplevel(1, axis=1)
    for raw in (multi, flat):
        prices = data.split_yahoo_frame(raw, ("SPY",))
        # both of yfinance's single-ticker layouts give the same frame
        np.testing.assert_allclose(prices["SPY"]["Open"], SPY["Open"])


def test_timezone_aware_index_becomes_naive():
    raw = recorded({"SPY": SPY})
    raw.index = raw.index.tz_localize("America/New_York")
    assert data.split_yahoo_frame(raw, ("SPY",))["SPY"].index.tz is None


def test_download_retries_with_backoff_then_succeeds():
    fake, sleeps = FakeYahoo(ConnectionError("reset"), pd.DataFrame(), recorded({"SPY": SPY})), []
    prices = data.download_yahoo(data.parse_spec("yahoo:SPY"), download=fake, sleep=sleeps.append)
    # two failed attempts (an exception, an empty frame), waits doubling, then the data
    assert fake.calls == 3 and sleeps == [2.0, 4.0]
    assert len(prices["SPY"]) == 300


def test_unknown_ticker_is_named_after_retries():
    fake = FakeYahoo(recorded({"SPY": SPY, "NOPE": None}))
    with pytest.raises(DataError, match=r"no data for NOPE .* after 3 attempts: unknown ticker"):
        data.download_yahoo(data.parse_spec("yahoo:SPY,NOPE"), download=fake, sleep=lambda s: None, retries=3)


def test_empty_download_is_a_data_error():
    with pytest.raises(DataError, match="no data for ZZZZ"):
        data.download_yahoo(data.parse_spec("yahoo:ZZZZ"), download=FakeYahoo(pd.DataFrame()), sleep=lambda s: None)


def test_cache_serves_repeat_requests_without_calling_yahoo(tmp_path, monkeypatch):
    fake = FakeYahoo(recorded({"QQQ": QQQ, "SPY": SPY}))
    monkeypatch.setattr(sources, "_yf_download", fake)
    spec = "yahoo:SPY,QQQ?start=2020-01-01&end=2021-03-01"
    path, first = data.fetch(spec, cache_dir=tmp_path)
    again = data.load_prices(spec, cache_dir=tmp_path)
    # one download; the second load reads the Parquet file and returns identical frames
    assert fake.calls == 1 and path.exists() and path.suffix == ".parquet"
    for ticker in ("SPY", "QQQ"):
        pd.testing.assert_frame_equal(first[ticker], again[ticker], check_freq=False)
    data.fetch(spec, cache_dir=tmp_path, refresh=True)
    # --refresh downloads again
    assert fake.calls == 2


def test_offline_mode_refuses_to_download(tmp_path, monkeypatch):
    fake = FakeYahoo(recorded({"SPY": SPY}))
    monkeypatch.setattr(sources, "_yf_download", fake)
    monkeypatch.setenv("HPO_OFFLINE", "1")
    # trial pods run offline: a cache miss names the fix instead of calling Yahoo
    with pytest.raises(DataError, match="no cached data for SPY .* run `hpo data fetch` first"):
        data.load_prices("yahoo:SPY,start=2020-01-01", cache_dir=tmp_path)
    assert fake.calls == 0
    monkeypatch.delenv("HPO_OFFLINE")
    data.fetch("yahoo:SPY,start=2020-01-01", cache_dir=tmp_path)
    monkeypatch.setenv("HPO_OFFLINE", "1")
    # the shell-safe and URL forms hit the same cache entry
    assert len(data.load_prices("yahoo:SPY?start=2020-01-01", cache_dir=tmp_path)["SPY"]) == 300
