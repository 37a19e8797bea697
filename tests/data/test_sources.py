"""Sources: data specs, the sample and file loaders and their contract, validate_prices, the cache, and the
yfinance path at its boundary: recorded frames in yfinance 1.7's layouts, no network.

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


# ----------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("spec, expected", [
    ("sample:sp500", data.DataSpec(kind="sample", tickers=("sp500",))),
    ("file:/tmp/x.csv", data.DataSpec(kind="file", path="/tmp/x.csv")),
    ("yahoo:spy", data.DataSpec(kind="yahoo", tickers=("SPY",))),
    ("yahoo:SPY,QQQ?start=2010-01-01&end=2024-12-31&interval=1d",
     data.DataSpec(kind="yahoo", tickers=("SPY", "QQQ"), start="2010-01-01", end="2024-12-31", interval="1d")),
    ("yahoo:SPY,QQQ,start=2010-01-01,end=2024-12-31",
     data.DataSpec(kind="yahoo", tickers=("SPY", "QQQ"), start="2010-01-01", end="2024-12-31", interval="1d")),
])
def test_parse_spec_accepts_each_source(spec, expected):
    # each documented form parses to its fields
    assert data.parse_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("sp500", "must look like"),
    ("sample:dax", "unknown sample 'dax'"),
    ("ftp:SPY", "unknown data source 'ftp'"),
    ("yahoo:?start=2020-01-01", "names no ticker"),
    ("yahoo:SPY?begin=2020-01-01", "unknown yahoo option"),
    ("yahoo:SPY,begin=2020-01-01", "unknown yahoo option"),
    ("yahoo:SPY?start=yesterday", "is not a date"),
])
def test_parse_spec_rejects_bad_specs_by_name(spec, message):
    # the error names the offending part
    with pytest.raises(DataError, match=message):
        data.parse_spec(spec)


def test_cache_key_changes_with_every_request_field():
    base = data.parse_spec("yahoo:SPY?start=2010-01-01&end=2020-01-01")
    others = ["yahoo:QQQ?start=2010-01-01&end=2020-01-01", "yahoo:SPY?start=2011-01-01&end=2020-01-01",
              "yahoo:SPY?start=2010-01-01&end=2021-01-01", "yahoo:SPY?start=2010-01-01&end=2020-01-01&interval=1wk"]
    # a different request never hits another request's cache file
    assert len({base.cache_key(), *(data.parse_spec(s).cache_key() for s in others)}) == 5


# ----------------------------------------------------------------------------------------------- sources
def test_file_source_reads_csv_and_parquet(tmp_path, sp500):
    frame = sp500["sp500"].iloc[:300].reset_index()
    frame.to_csv(tmp_path / "spx.csv", index=False)
    frame.to_parquet(tmp_path / "spx.parquet")
    for name in ("spx.csv", "spx.parquet"):
        loaded = data.load_prices(f"file:{tmp_path / name}")
        # the file's stem names the series and values survive the round trip
        np.testing.assert_allclose(loaded["spx"]["Close"].to_numpy(), frame["Close"].to_numpy())


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["Volume"]), r"lacks column\(s\) \['Volume'\]"),
    (lambda f: f.assign(Close=f["Close"].where(f.index != 10)), r"1 row\(s\) with NaN prices, first on 1999-01-19"),
    (lambda f: f.iloc[:0], "has no rows"),
    (lambda f: f.assign(Low=-1.0), "non-positive price"),
])
def test_file_source_rejects_bad_files(tmp_path, sp500, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(sp500["sp500"].iloc[:100].reset_index()).to_csv(path, index=False)
    # the message names what is wrong with the file
    with pytest.raises(DataError, match=message):
        data.load_prices(f"file:{path}")


def test_missing_file_is_a_data_error(tmp_path):
    # a missing file is a DataError, not a pandas traceback
    with pytest.raises(DataError, match="does not exist"):
        data.load_prices(f"file:{tmp_path / 'nope.csv'}")


def test_sample_spec_keeps_a_date_range():
    prices = data.load_prices("sample:sp500,start=2012-01-01,end=2012-12-31")
    frame = next(iter(prices.values()))
    # only the asked-for year, inclusive bounds
    assert frame.index[0] >= pd.Timestamp("2012-01-01") and frame.index[-1] <= pd.Timestamp("2012-12-31")
    assert 240 < len(frame) < 260  # one year of trading days
    # an unknown option or a bad date is refused by name
    for bad, message in (("sample:sp500,foo=1", "unknown sample option"), ("sample:sp500,start=x", "not a date")):
        with pytest.raises(DataError, match=message):
            data.parse_spec(bad)


@pytest.mark.parametrize("name", sorted(data.SAMPLES))
def test_sample_read_directly_equals_archs_own_loader(name):
    import importlib

    ours = sources._load_sample(name)
    theirs = importlib.import_module(data.SAMPLES[name]).load()[list(data.FIELDS)].astype("float64")
    # reading the CSV without importing arch gives arch's own frame, to the last value
    pd.testing.assert_frame_equal(ours, theirs, check_freq=False)

def check_loader_contract(frame: pd.DataFrame) -> None:
    """What every loaded series is: a sorted, unique DatetimeIndex and the five OHLCV float columns, no NaN."""
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.tz is None
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert list(frame.columns) == list(data.FIELDS) and (frame.dtypes == "float64").all()
    assert not frame.isna().any().any() and len(frame) > 0


@pytest.mark.parametrize("name", sorted(data.SAMPLES))
def test_every_sample_keeps_the_loader_contract_and_its_date_bounds(name):
    full = data.load_prices(f"sample:{name}")[name]
    # the whole sample: sorted unique dates, OHLCV floats, no NaN
    check_loader_contract(full)
    start, end = full.index[100], full.index[400]
    cut = data.load_prices(f"sample:{name},start={start.date()},end={end.date()}")[name]
    # start and end are inclusive, and every trading day between them is kept
    check_loader_contract(cut)
    assert cut.index[0] == start and cut.index[-1] == end
    pd.testing.assert_frame_equal(cut, full.iloc[100:401])
    # bounds that fall on no trading day (the day after a Friday) keep the trading days inside them
    k = next(k for k in range(100, len(full) - 1) if (full.index[k + 1] - full.index[k]).days > 1)
    gap = (full.index[k] + pd.Timedelta(days=1)).date()
    assert data.load_prices(f"sample:{name},start={gap}")[name].index[0] == full.index[k + 1]
    assert data.load_prices(f"sample:{name},end={gap}")[name].index[-1] == full.index[k]


def test_a_file_in_any_row_order_keeps_the_loader_contract(tmp_path, sp500):
    frame = sp500["sp500"].iloc[:300].reset_index().sample(frac=1.0, random_state=0)
    no_volume = frame["Date"].iloc[:5]
    frame.loc[frame.index[:5], "Volume"] = np.nan  # a missing volume is a day without trades, not a bad price
    frame.to_csv(tmp_path / "shuffled.csv", index=False)
    loaded = data.load_prices(f"file:{tmp_path / 'shuffled.csv'}")["shuffled"]
    # shuffled rows come back sorted, as OHLCV floats without NaN
    check_loader_contract(loaded)
    # the missing volumes are 0 and every price is the original one
    assert (loaded.loc[no_volume, "Volume"] == 0.0).all()
    pd.testing.assert_frame_equal(loaded[["Open", "High", "Low", "Close"]],
                                  sp500["sp500"].iloc[:300][["Open", "High", "Low", "Close"]], check_freq=False)


# ----------------------------------------------------------------------------------------------- validate_prices
def test_validate_prices_aligns_every_ticker_on_the_common_dates(sp500):
    full = sp500["sp500"].iloc[:200]
    other = full.iloc[::2] * 1.1  # every other day only
    prices = data.validate_prices({"sp500": full, "half": other})
    # both series keep only the days they share, in the order given
    assert list(prices) == ["sp500", "half"]
    assert prices["sp500"].index.equals(other.index) and prices["half"].index.equals(other.index)
    pd.testing.assert_frame_equal(prices["sp500"], full.loc[other.index])


@pytest.mark.parametrize("prices, message", [
    ({}, "no price series loaded"),
    ({"a": pd.DataFrame(columns=list(data.FIELDS), dtype=float)}, "a: no rows"),
    ({"a": pd.DataFrame(1.0, index=pd.DatetimeIndex(["2020-01-02", "2020-01-02"]), columns=list(data.FIELDS))},
     "a: duplicate dates, first 2020-01-02"),
    ({"a": pd.DataFrame(1.0, index=pd.bdate_range("2020-01-01", periods=3), columns=list(data.FIELDS)),
      "b": pd.DataFrame(1.0, index=pd.bdate_range("2021-01-01", periods=3), columns=list(data.FIELDS))},
     r"tickers \['a', 'b'\] share no trading day"),
])
def test_validate_prices_names_the_first_problem(prices, message):
    # each problem is a DataError naming the ticker and what is wrong
    with pytest.raises(DataError, match=message):
        data.validate_prices(prices)


# ----------------------------------------------------------------------------------------------- yahoo
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
    # a timezone-aware index (yfinance's exchange time) becomes naive dates
    assert data.split_yahoo_frame(raw, ("SPY",))["SPY"].index.tz is None


def test_download_retries_with_backoff_then_succeeds():
    fake, sleeps = FakeYahoo(ConnectionError("reset"), pd.DataFrame(), recorded({"SPY": SPY})), []
    prices = data.download_yahoo(data.parse_spec("yahoo:SPY"), download=fake, sleep=sleeps.append, reach=ONLINE)
    # two failed attempts (an exception, an empty frame), waits doubling, then the data
    assert fake.calls == 3 and sleeps == [2.0, 4.0]
    assert len(prices["SPY"]) == 300


def test_unknown_ticker_is_named_after_retries():
    fake = FakeYahoo(recorded({"SPY": SPY, "NOPE": None}))
    # a ticker Yahoo never answers for is named, with the number of attempts
    with pytest.raises(DataError, match=r"no data for NOPE .* after 3 attempts while Yahoo was reachable: unknown"):
        data.download_yahoo(
            data.parse_spec("yahoo:SPY,NOPE"), download=fake, sleep=lambda s: None, retries=3, reach=ONLINE
        )


def test_empty_download_is_a_data_error():
    # an empty download is a DataError naming the ticker
    with pytest.raises(DataError, match="no data for ZZZZ"):
        data.download_yahoo(
            data.parse_spec("yahoo:ZZZZ"), download=FakeYahoo(pd.DataFrame()), sleep=lambda s: None, reach=ONLINE
        )


def ONLINE() -> None:  # noqa: N802 - a stand-in for yahoo_unreachable: Yahoo answers
    return None


def test_no_network_is_named_once_without_retries():
    fake, sleeps = FakeYahoo(pd.DataFrame(), pd.DataFrame()), []
    offline = lambda: "gaierror: Temporary failure in name resolution"  # noqa: E731
    with pytest.raises(DataError) as caught:
        data.download_yahoo(data.parse_spec("yahoo:SPY"), download=fake, sleep=sleeps.append, reach=offline)
    # a network failure is called one, with the host and the reason, not an unknown ticker
    message = str(caught.value)
    assert message.startswith("network failure: cannot reach Yahoo Finance (query2.finance.yahoo.com:443, gaierror")
    assert "unknown ticker" not in message
    # one attempt, no backoff: nothing to retry while there is no network
    assert fake.calls == 1 and sleeps == []


def test_the_real_download_is_silent(monkeypatch, capsys, caplog):
    import logging
    import warnings

    import yfinance

    def noisy(*args, **kwargs):
        logging.getLogger("yfinance").error("1 Failed download: ['SPY']: ConnectionError(...)")
        logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=2)) after connection broken")
        warnings.warn("a pandas FutureWarning", FutureWarning, stacklevel=1)
        print("yfinance chatter")
        return pd.DataFrame()

    monkeypatch.setattr(yfinance, "download", noisy)
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        frame = sources._yf_download(["SPY"], None, None, "1d")
    # the frame comes back; no log record, warning or printed line of the libraries escapes
    assert frame.empty and caplog.records == [] and seen == []
    assert capsys.readouterr() == ("", "")
    # and the loggers' levels are as they were
    assert logging.getLogger("yfinance").level == logging.NOTSET


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


def _ohlcv(close: np.ndarray) -> data.Prices:
    index = pd.bdate_range("2020-01-01", periods=len(close), name="Date")
    return {"c": pd.DataFrame({"Open": close, "High": close, "Low": close, "Close": close, "Volume": 1.0}, index=index)}


@pytest.mark.parametrize("close, message", [
    (np.full(100, 7.0), r"c: the close is constant \(7 on all 100 days"),
    (7.0 * np.exp(np.arange(100) * 1e-9), r"c: the close is constant .* daily return sd"),
    (np.repeat(100 * np.exp(np.cumsum(np.full(34, 0.01))), 3)[:100], r"c: the close is unchanged on 67% of 99 days"),
])
def test_constant_or_near_constant_prices_are_refused(close, message):
    # a series with nothing to forecast is refused by name, with the rule
    with pytest.raises(DataError, match=message):
        data.validate_prices(_ohlcv(close))


def test_a_series_flat_on_half_its_days_is_still_a_market():
    close = np.repeat(100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 50))), 2)
    close = np.append(close, close[-1] * 1.01)  # 100 days of returns, 50 of them flat
    # 50 % flat days is the most allowed: accepted
    assert len(data.validate_prices(_ohlcv(close))["c"]) == 101


@pytest.mark.parametrize(("text", "rows"), [
    ("Date,Close\n", 0), ("Date,Close\n2020-01-02,1\n", 1), ("Date,Close\n2020-01-02,1\n2020-01-03,2", 1),
])
def test_a_csv_is_counted_by_its_line_ends_without_parsing(tmp_path, text, rows):
    path = tmp_path / "p.csv"
    path.write_text(text)
    # a last line without its line end is not counted: the bound errs by one row, never by a block
    assert sources._csv_lines(path, block=4) == rows


def test_an_infinite_price_is_named_as_such_not_as_a_nan_after_warm_up():
    frame = pd.DataFrame({"Open": 1.0, "High": 1.0, "Low": 1.0, "Close": [1.0, np.inf, 1.0], "Volume": 1.0},
                         index=pd.bdate_range("2020-01-01", periods=3))
    with pytest.raises(DataError, match=r"^X: 1 row\(s\) with an infinite price, first on 2020-01-02; clean"):
        sources.validate_prices({"X": frame})
