"""Market data: sources, caching, features, targets, chronological splits and windows.

Data flows one way::

    load_prices(spec) -> build_features(prices) -> make_target(returns)
        -> chronological_split -> Scaler.fit(train rows) -> windows

A data spec is one string:

* ``yahoo:SPY,QQQ?start=2010-01-01&end=2024-12-31&interval=1d`` downloads with yfinance (auto-adjusted prices),
  with retries, and caches the result as Parquet keyed by the request; the first ticker is the one forecast,
  the others add features. ``yahoo:SPY,QQQ,start=2010-01-01,end=2024-12-31`` is the same request in a form with
  no shell metacharacters, for Katib trial arguments (Katib runs them through ``sh -c`` unquoted). With
  ``HPO_OFFLINE=1`` (set in the trial pods) a cache miss is an error instead of a download.
* ``sample:sp500`` / ``sample:nasdaq``: real daily index data (1999-2018) that ships inside the ``arch`` package;
  ``sample:sp500,start=2012-01-01,end=2018-12-31`` keeps a date range.
* ``file:PATH``: a CSV or Parquet file with a Date column (or index) and Open, High, Low, Close, Volume columns;
  an optional Ticker column holds several series in long form.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd

from hpo_lib.errors import DataError

log = logging.getLogger(__name__)

FIELDS = ("Open", "High", "Low", "Close", "Volume")
SAMPLES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}
TARGETS = ("return", "direction", "volatility")
Prices = dict[str, pd.DataFrame]  # ticker -> OHLCV frame on a DatetimeIndex; the first ticker is forecast


# ----------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec string (see the module docstring)."""

    kind: str  # yahoo | sample | file
    tickers: tuple[str, ...] = ()
    start: str | None = None
    end: str | None = None
    interval: str = "1d"
    path: str | None = None

    def cache_key(self) -> str:
        """Stable file stem for a yahoo request: readable prefix + hash of every field that changes the data."""
        request = {"tickers": list(self.tickers), "start": self.start, "end": self.end, "interval": self.interval,
                   "auto_adjust": True}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
        return f"yahoo-{'_'.join(self.tickers)}-{self.interval}-{digest}"


def parse_spec(spec: str) -> DataSpec:
    """Parse ``yahoo:T1,T2?start=..&end=..&interval=..``, ``sample:NAME`` or ``file:PATH``."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise DataError(f"data spec {spec!r} must look like yahoo:SPY?start=2010-01-01, sample:sp500 or file:PATH")
    if kind == "sample":  # sample:sp500 or, for a shorter history, sample:sp500,start=2012-01-01,end=...
        name, *extra = rest.split(",")
        if name not in SAMPLES:
            raise DataError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
        options = dict(t.split("=", 1) if "=" in t else (t, "") for t in extra)
        unknown = set(options) - {"start", "end"}
        if unknown:
            raise DataError(f"unknown sample option(s) {sorted(unknown)}; use start, end")
        _check_dates(options, "sample")
        return DataSpec(kind="sample", tickers=(name,), start=options.get("start") or None,
                        end=options.get("end") or None)
    if kind == "file":
        return DataSpec(kind="file", path=rest)
    if kind == "yahoo":
        if "?" in rest:  # URL form: yahoo:SPY,QQQ?start=...&end=...
            symbols, _, query = rest.partition("?")
            tokens = symbols.split(",")
            options = dict(parse_qsl(query, keep_blank_values=True))
        else:  # shell-safe form for Katib args (no ? or &): yahoo:SPY,QQQ,start=...,end=...
            tokens = [t for t in rest.split(",") if "=" not in t]
            options = dict(t.split("=", 1) for t in rest.split(",") if "=" in t)
        tickers = tuple(t.strip().upper() for t in tokens if t.strip())
        if not tickers:
            raise DataError(f"data spec {spec!r} names no ticker")
        unknown = set(options) - {"start", "end", "interval"}
        if unknown:
            raise DataError(f"unknown yahoo option(s) {sorted(unknown)}; use start, end, interval")
        _check_dates(options, "yahoo")
        return DataSpec(kind="yahoo", tickers=tickers, start=options.get("start") or None,
                        end=options.get("end") or None, interval=options.get("interval") or "1d")
    raise DataError(f"unknown data source {kind!r} in {spec!r}; use yahoo:, sample: or file:")


def _check_dates(options: dict[str, str], source: str) -> None:
    for key in ("start", "end"):
        if options.get(key):
            try:
                pd.Timestamp(options[key])
            except ValueError:
                raise DataError(f"{source} {key}={options[key]!r} is not a date (use YYYY-MM-DD)") from None


def default_cache_dir() -> Path:
    """``$HPO_CACHE_DIR`` if set, else ``~/.cache/katib-hpo``."""
    return Path(os.environ.get("HPO_CACHE_DIR") or Path.home() / ".cache" / "katib-hpo")


# ----------------------------------------------------------------------------------------------- sources
def load_prices(spec: str | DataSpec, *, cache_dir: str | Path | None = None, refresh: bool = False) -> Prices:
    """Load validated OHLCV prices for a data spec; yahoo requests are served from the Parquet cache when present."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "sample":
        frame = _load_sample(spec.tickers[0])
        frame = frame.loc[spec.start:spec.end] if spec.start or spec.end else frame  # inclusive date bounds
        prices = {spec.tickers[0]: frame}
    elif spec.kind == "file":
        prices = _read_file(Path(spec.path))
    else:
        path = Path(cache_dir or default_cache_dir()) / f"{spec.cache_key()}.parquet"
        if path.exists() and not refresh:
            prices = _from_long(pd.read_parquet(path))
        elif os.environ.get("HPO_OFFLINE") == "1":
            raise DataError(f"no cached data for {', '.join(spec.tickers)} ({spec.start} .. {spec.end}, "
                            f"{spec.interval}) at {path} and HPO_OFFLINE=1; run `hpo data fetch` first "
                            f"(on a cluster: the data-prep Job)")
        else:
            prices = download_yahoo(spec)
            _write_cache(prices, path)
        prices = {t: prices[t] for t in spec.tickers}
    return validate_prices(prices)


def fetch(spec: str, *, cache_dir: str | Path | None = None, refresh: bool = False) -> tuple[Path | None, Prices]:
    """Download once into the cache (the cluster's data-prep Job runs this); returns the cache file and the prices."""
    parsed = parse_spec(spec)
    prices = load_prices(parsed, cache_dir=cache_dir, refresh=refresh)
    if parsed.kind != "yahoo":
        return None, prices
    return Path(cache_dir or default_cache_dir()) / f"{parsed.cache_key()}.parquet", prices


def _load_sample(name: str) -> pd.DataFrame:
    """The CSV that ships in ``arch``, read the way ``arch.data.<name>.load()`` reads it, without importing arch.

    Importing arch (statsmodels, scipy) costs about 1.4 s, paid again by every trial process; only the GARCH
    baseline needs it. If the file is not where arch keeps it, arch's own loader is used.
    """
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("arch")  # locates the package without running it
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "data" / name / f"{name}.csv.gz" if locations else None
    if path is not None and path.exists():
        frame = pd.read_csv(path, index_col="Date", parse_dates=["Date"]).apply(pd.to_numeric, errors="coerce")
    else:
        frame = importlib.import_module(SAMPLES[name]).load()
    # arch's Close equals its Adj Close (an index has no dividends or splits)
    return frame[list(FIELDS)].astype("float64")


def _read_file(path: Path) -> Prices:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        frame = pd.read_csv(path)
    else:
        raise DataError(f"data file {path} must be .csv or .parquet")
    if frame.empty:
        raise DataError(f"data file {path} has no rows")
    frame = frame.rename(columns={c: str(c).strip().title() for c in frame.columns})
    frame = frame.rename(columns={"Adj Close": "Adj_Close"})
    if "Date" not in frame.columns:
        frame = frame.reset_index().rename(columns={frame.index.name or "index": "Date"})
    missing = [f for f in FIELDS if f not in frame.columns]
    if missing:
        raise DataError(f"data file {path} lacks column(s) {missing}; need Date, {', '.join(FIELDS)}")
    if "Ticker" not in frame.columns:
        frame["Ticker"] = path.stem
    return _from_long(frame)


def _from_long(frame: pd.DataFrame) -> Prices:
    """Long frame (Date, Ticker, OHLCV) -> per-ticker frames, keeping the order tickers first appear in."""
    try:
        dates = pd.to_datetime(frame["Date"])
    except (ValueError, TypeError) as exc:
        raise DataError(f"Date column does not parse as dates: {exc}") from None
    frame = frame.assign(Date=dates)
    out: Prices = {}
    for ticker in pd.unique(frame["Ticker"]):
        part = frame[frame["Ticker"] == ticker].set_index("Date").sort_index()
        out[str(ticker)] = part[list(FIELDS)].apply(pd.to_numeric, errors="coerce").astype("float64")
    return out


def to_long(prices: Prices) -> pd.DataFrame:
    """Prices as one long frame (Date, Ticker, OHLCV): the Parquet layout of the cache and the pipeline's Dataset."""
    return pd.concat([f.rename_axis("Date").reset_index().assign(Ticker=t) for t, f in prices.items()],
                     ignore_index=True)[["Date", "Ticker", *FIELDS]]


def _write_cache(prices: Prices, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    to_long(prices).to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: concurrent trials never read a half-written file


def _yf_download(tickers: list[str], start: str | None, end: str | None, interval: str) -> pd.DataFrame:
    import yfinance as yf

    return yf.download(tickers, start=start, end=end, interval=interval, auto_adjust=True, actions=False,
                       group_by="column", progress=False, threads=False, multi_level_index=True)


def download_yahoo(spec: DataSpec, *, retries: int = 4, backoff_s: float = 2.0,
                   download: Callable[..., pd.DataFrame] | None = None,
                   sleep: Callable[[float], None] | None = None) -> Prices:
    """Download auto-adjusted OHLCV with yfinance, retrying with exponential backoff.

    yfinance does not raise for an unknown ticker or a throttled request: it logs and returns empty or all-NaN
    columns. A ticker with no rows therefore counts as a failed attempt; after ``retries`` attempts it is reported
    as unknown (or Yahoo unavailable) by name.
    """
    download, sleep = download or _yf_download, sleep or time.sleep
    missing: list[str] = list(spec.tickers)
    last_error = ""
    for attempt in range(retries):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            raw = download(list(spec.tickers), spec.start, spec.end, spec.interval)
        except Exception as exc:  # network and Yahoo errors vary by yfinance version: retry them all
            last_error = f"{type(exc).__name__}: {exc}"
            log.warning("yahoo download attempt %d/%d failed: %s", attempt + 1, retries, last_error)
            continue
        prices = split_yahoo_frame(raw, spec.tickers)
        missing = [t for t in spec.tickers if t not in prices]
        if not missing:
            return prices
        log.warning("yahoo download attempt %d/%d returned no rows for %s", attempt + 1, retries, missing)
    detail = f" (last error: {last_error})" if last_error else ""
    raise DataError(f"yahoo returned no data for {', '.join(missing)} between {spec.start or 'the first day'} and "
                    f"{spec.end or 'today'} after {retries} attempts: unknown ticker or Yahoo unavailable{detail}")


def split_yahoo_frame(raw: pd.DataFrame | None, tickers: tuple[str, ...]) -> Prices:
    """Turn yfinance's frame (MultiIndex ``(Price, Ticker)`` columns, or flat for one ticker) into per-ticker frames.

    Rows where a ticker has no field at all (another ticker's trading day) are dropped; tickers without rows are left
    out so the caller can name them.
    """
    out: Prices = {}
    if raw is None or raw.empty:
        return out
    for ticker in tickers:
        if isinstance(raw.columns, pd.MultiIndex):
            level = 1 if ticker in raw.columns.get_level_values(1) else 0
            if ticker not in raw.columns.get_level_values(level):
                continue
            frame = raw.xs(ticker, axis=1, level=level)
        elif len(tickers) == 1:
            frame = raw
        else:
            raise DataError("yahoo returned flat columns for a multi-ticker request; cannot tell tickers apart")
        frame = frame.rename(columns=lambda c: str(c).title())
        if any(f not in frame.columns for f in FIELDS):
            continue
        frame = frame[list(FIELDS)].astype("float64").dropna(how="all").rename_axis(columns=None)
        if frame.empty:
            continue
        index = pd.DatetimeIndex(frame.index)
        frame.index = (index.tz_localize(None) if index.tz is not None else index).rename("Date")
        out[ticker] = frame
    return out


def validate_prices(prices: Prices) -> Prices:
    """Check every series and align them on common dates; raise DataError naming the first problem."""
    if not prices:
        raise DataError("no price series loaded")
    for ticker, frame in prices.items():
        if frame.empty:
            raise DataError(f"{ticker}: no rows")
        if frame.index.has_duplicates:
            raise DataError(f"{ticker}: duplicate dates, first {frame.index[frame.index.duplicated()][0].date()}")
        nan = frame[["Open", "High", "Low", "Close"]].isna().any(axis=1)
        if nan.any():
            first = frame.index[nan.to_numpy()][0]
            raise DataError(f"{ticker}: {int(nan.sum())} row(s) with NaN prices, first on {pd.Timestamp(first).date()}"
                            f"; clean the series or drop those rows")
        nonpositive = (frame[["Open", "High", "Low", "Close"]] <= 0).any(axis=1)
        if nonpositive.any():
            first = frame.index[nonpositive.to_numpy()][0]
            raise DataError(f"{ticker}: non-positive price on {pd.Timestamp(first).date()}")
    common = None
    for frame in prices.values():
        common = frame.index if common is None else common.intersection(frame.index)
    if len(common) == 0:
        raise DataError(f"tickers {list(prices)} share no trading day")
    return {t: f.loc[common].assign(Volume=f.loc[common, "Volume"].fillna(0.0)) for t, f in prices.items()}


# ----------------------------------------------------------------------------------------------- features
def build_features(prices: Prices) -> tuple[pd.DataFrame, pd.Series]:
    """Causal features of every ticker (row t uses data up to and including day t) and the forecast ticker's returns.

    Per ticker: 1-day log return, 5- and 21-day momentum, 5- and 21-day return volatility, log high/low range,
    log close/open, and a 21-day volume z-score (0 where volume is absent). Warm-up rows with incomplete rolling
    windows are dropped.
    """
    columns = {}
    for ticker, frame in prices.items():
        ret = np.log(frame["Close"]).diff()
        log_volume = np.log1p(frame["Volume"].clip(lower=0))
        vol_std = log_volume.rolling(21).std()
        volume_z = ((log_volume - log_volume.rolling(21).mean()) / vol_std.where(vol_std > 0)).fillna(0.0)
        columns.update({
            f"{ticker}:ret_1": ret,
            f"{ticker}:ret_5": ret.rolling(5).sum(),
            f"{ticker}:ret_21": ret.rolling(21).sum(),
            f"{ticker}:vol_5": ret.rolling(5).std(),
            f"{ticker}:vol_21": ret.rolling(21).std(),
            f"{ticker}:range": np.log(frame["High"] / frame["Low"]),
            f"{ticker}:close_open": np.log(frame["Close"] / frame["Open"]),
            f"{ticker}:volume_z": volume_z.where(ret.notna()),
        })
    features = pd.DataFrame(columns).iloc[21:]  # the longest rolling window needs 21 returns (22 prices)
    target_ticker = next(iter(prices))
    returns = features[f"{target_ticker}:ret_1"].rename("ret")
    if features.isna().any().any():
        bad = features.columns[features.isna().any()].tolist()
        raise DataError(f"features {bad} contain NaN after warm-up; check the input series")
    return features, returns


def variance_proxy(returns: np.ndarray) -> np.ndarray:
    """The one realized-variance proxy of a day: its squared close-to-close log return.

    The volatility target, every volatility baseline and the variance scores (QLIKE, MSE on variance) use it; an
    h-day realized variance is its mean over the h days, and realized volatility the square root of that. With
    daily OHLCV only this is the noisiest unbiased proxy (a range estimator would be less noisy but biased by
    overnight gaps); QLIKE and MSE on variance rank forecasts consistently under such noise (Patton 2011).
    """
    return np.square(np.asarray(returns, dtype=np.float64))


def make_target(returns: np.ndarray, kind: str, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Target and reference value for each row t, from returns t+1..t+horizon (NaN where the horizon runs out).

    * ``return``: the next-``horizon``-day log return; reference 0 (direction = sign).
    * ``direction``: 1 if that return is > 0 else 0 (a zero return counts as not up); reference 0.5.
    * ``volatility``: realized volatility over the next ``horizon`` days, the square root of the mean of
      :func:`variance_proxy` over those days; reference the same over the previous ``horizon`` days, so direction
      means "volatility rises".
    """
    if kind not in TARGETS:
        raise DataError(f"unknown target {kind!r}; choose one of {', '.join(TARGETS)}")
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    future = np.full((n, horizon), np.nan)
    past = np.full((n, horizon), np.nan)
    for k in range(1, horizon + 1):  # loops over the horizon only, never over samples
        future[: n - k, k - 1] = r[k:]
        past[k - 1:, k - 1] = r[: n - k + 1]
    if kind == "volatility":
        return np.sqrt(np.mean(variance_proxy(future), axis=1)), np.sqrt(np.mean(variance_proxy(past), axis=1))
    forward = future.sum(axis=1)
    if kind == "direction":
        y = np.where(np.isnan(forward), np.nan, (forward > 0).astype(np.float64))
        return y, np.full(n, 0.5)
    return forward, np.zeros(n)


def trailing_return(returns: np.ndarray, horizon: int) -> np.ndarray:
    """Sum of returns t-horizon+1..t (known at t): the persistence forecast of the next horizon's return."""
    r = np.asarray(returns, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(r)])
    out = np.full(len(r), np.nan)
    out[horizon - 1:] = csum[horizon:] - csum[:-horizon]
    return out


# ----------------------------------------------------------------------------------------------- splits
def purge_gap(window: int, horizon: int) -> int:
    """Rows left unused between two splits: no input window or label horizon can reach across."""
    return window + horizon


@dataclass(frozen=True)
class Split:
    """Sample positions of each split. A sample at position t reads rows t-window+1..t and its label t+1..t+horizon.

    ``train_rows`` is the ``[start, stop)`` row range that training samples read: the only rows a learned transform
    may be fit on.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_rows: tuple[int, int]
    gap: int


def chronological_split(n_rows: int, *, window: int, horizon: int, val_frac: float = 0.15, test_frac: float = 0.15,
                        min_samples: int = 30) -> Split:
    """Split ``n_rows`` rows into train, validation and test segments, in time order, separated by purge gaps.

    Every sample's whole footprint (input window and label horizon) lies inside its own segment, and consecutive
    segments are ``purge_gap(window, horizon)`` rows apart. ``window`` is the longest lookback any trial will use,
    so trials with shorter sequences are scored on the very same validation days.

    >>> s = chronological_split(40, window=3, horizon=1, val_frac=0.25, test_frac=0.25, min_samples=1)
    >>> s.train.tolist(), s.val.tolist(), s.test.tolist(), s.gap
    ([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [22, 23, 24, 25, 26], [34, 35, 36, 37, 38], 4)
    """
    if window < 1 or horizon < 1:
        raise DataError(f"window and horizon must be at least 1, got window={window}, horizon={horizon}")
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"val_frac={val_frac} and test_frac={test_frac} must be in (0, 1) and sum below 1")
    gap = purge_gap(window, horizon)
    usable = n_rows - 2 * gap
    n_val, n_test = int(usable * val_frac), int(usable * test_frac)
    n_train = usable - n_val - n_test
    bounds = [(0, n_train), (n_train + gap, n_train + gap + n_val), (n_rows - n_test, n_rows)]
    # first sample needs window rows before it (inclusive); last needs horizon rows after it
    parts = [np.arange(a + window - 1, b - horizon, dtype=np.int64) for a, b in bounds]
    counts = [len(p) for p in parts]
    if usable <= 0 or min(counts) < min_samples:
        needed = 2 * gap + 3 * (window + horizon + min_samples)
        raise DataError(f"series too short: {n_rows} rows give train/val/test samples {counts} with window={window}, "
                        f"horizon={horizon} and purge gaps of {gap}; need at least {min_samples} samples per split "
                        f"(about {needed} rows)")
    return Split(train=parts[0], val=parts[1], test=parts[2], train_rows=bounds[0], gap=gap)


def refit_split(split: Split, *, window: int, horizon: int) -> Split:
    """The split of a final retrain: training spans train and validation rows; the test split is untouched.

    Training samples are every position whose footprint lies in the rows from the start of training to the end of
    validation (the purge gap between them is no longer needed), so ``train_rows`` and the scaler fit on it grow
    to the end of validation and never reach the purge gap before test. ``val`` keeps its positions, now inside
    the training rows: it can only monitor the fit, not measure it.

    >>> s = chronological_split(40, window=3, horizon=1, val_frac=0.25, test_frac=0.25, min_samples=1)
    >>> r = refit_split(s, window=3, horizon=1)
    >>> r.train[[0, -1]].tolist(), r.test.tolist(), r.train_rows
    ([2, 26], [34, 35, 36, 37, 38], (0, 28))
    """
    start, stop = split.train_rows[0], int(split.val[-1]) + horizon + 1  # the validation segment's last row + 1
    train = np.arange(start + window - 1, stop - horizon, dtype=np.int64)
    return Split(train=train, val=split.val, test=split.test, train_rows=(start, stop), gap=split.gap)


# ----------------------------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation, fit on training rows only (``Split.train_rows``)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "Scaler":
        values = np.asarray(values, dtype=np.float64)
        std = values.std(axis=0)
        return cls(mean=values.mean(axis=0), std=np.where(std > 0, std, 1.0))  # a constant column maps to 0

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.std + self.mean


def make_windows(values: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """(rows, features) -> (samples, window, features): the ``window`` rows ending at each position in ``ends``.

    Built from a strided view and one fancy-index copy; no per-sample Python loop.
    """
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (rows-window+1, features, window)
    return np.ascontiguousarray(view[np.asarray(ends) - window + 1].transpose(0, 2, 1), dtype=np.float32)


# ----------------------------------------------------------------------------------------------- bundle
@dataclass
class Dataset:
    """Everything a trial needs: scaled windows and targets per split, plus what reports need in original units."""

    target: str
    horizon: int
    window: int
    split: Split
    feature_names: list[str]
    x: dict[str, np.ndarray]  # split -> (samples, window, features) float32, scaled with train statistics
    y: dict[str, np.ndarray]  # split -> targets in original units (class ids for direction)
    y_scaled: dict[str, np.ndarray]  # split -> model-space targets (standardised for regression)
    ref: dict[str, np.ndarray]  # split -> reference value for directional accuracy
    persistence: dict[str, np.ndarray]  # split -> naive "last value" forecast in original units
    dates: dict[str, pd.DatetimeIndex]  # split -> date of each sample's last input row
    feature_scaler: Scaler
    target_scaler: Scaler | None  # None for classification
    returns: np.ndarray | None = None  # the forecast ticker's daily log return per row (split positions index it)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def is_classification(self) -> bool:
        return self.target == "direction"


def prepare(prices: Prices, *, target: str = "return", horizon: int = 1, window: int = 60,
            split_window: int | None = None, val_frac: float = 0.15, test_frac: float = 0.15,
            refit: bool = False) -> Dataset:
    """Features, target, split, train-only scaling and windows in one call.

    ``window`` is this model's sequence length; ``split_window`` (default: ``window``) fixes the split and purge gap
    so that every trial up to that length sees identical splits. ``refit`` trains on train + validation for a final
    retrain (:func:`refit_split`): scalers are fit on those rows, the test split stays where it was.
    """
    split_window = split_window or window
    if window > split_window:
        raise DataError(f"sequence length {window} exceeds split window {split_window}; raise --split-window")
    features, returns = build_features(prices)
    y_all, ref_all = make_target(returns.to_numpy(), target, horizon)
    split = chronological_split(len(features), window=split_window, horizon=horizon, val_frac=val_frac,
                                test_frac=test_frac)
    if refit:
        split = refit_split(split, window=split_window, horizon=horizon)
    values = features.to_numpy(dtype=np.float64)
    feature_scaler = Scaler.fit(values[slice(*split.train_rows)])
    scaled = feature_scaler.transform(values)
    if target == "volatility":
        persistence_all = ref_all
    elif target == "direction":
        persistence_all = (trailing_return(returns.to_numpy(), horizon) > 0).astype(np.float64)
    else:
        persistence_all = trailing_return(returns.to_numpy(), horizon)
    target_scaler = None if target == "direction" else Scaler.fit(y_all[split.train])
    parts = {"train": split.train, "val": split.val, "test": split.test}
    y = {k: y_all[v] for k, v in parts.items()}
    return Dataset(
        target=target, horizon=horizon, window=window, split=split, feature_names=list(features.columns),
        x={k: make_windows(scaled, v, window) for k, v in parts.items()},
        y=y,
        y_scaled={k: (v if target_scaler is None else target_scaler.transform(v)) for k, v in y.items()},
        ref={k: ref_all[v] for k, v in parts.items()},
        persistence={k: persistence_all[v] for k, v in parts.items()},
        dates={k: features.index[v] for k, v in parts.items()},
        feature_scaler=feature_scaler, target_scaler=target_scaler, returns=returns.to_numpy(dtype=np.float64),
    )
