"""Market data sources: specs, the bundled samples, files, Yahoo downloads with retries, the Parquet cache.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import pandas as pd

from hpo_lib import limits
from hpo_lib.errors import DataError, first_line

log = logging.getLogger(__name__)

FIELDS = ("Open", "High", "Low", "Close", "Volume")
SAMPLES = {"sp500": "arch.data.sp500", "nasdaq": "arch.data.nasdaq"}
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
        request = {
            "tickers": list(self.tickers),
            "start": self.start,
            "end": self.end,
            "interval": self.interval,
            "auto_adjust": True,
        }
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
        options = dict(t.split("=", 1) if "=" in t else [t, ""] for t in extra)
        unknown = set(options) - {"start", "end"}
        if unknown:
            raise DataError(f"unknown sample option(s) {sorted(unknown)}; use start, end")
        _check_dates(options, "sample")
        return DataSpec(
            kind="sample", tickers=(name,), start=options.get("start") or None, end=options.get("end") or None
        )
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
        return DataSpec(
            kind="yahoo",
            tickers=tickers,
            start=options.get("start") or None,
            end=options.get("end") or None,
            interval=options.get("interval") or "1d",
        )
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
        frame = frame.loc[spec.start : spec.end] if spec.start or spec.end else frame  # inclusive date bounds
        prices = {spec.tickers[0]: frame}
    elif spec.kind == "file":
        if spec.path is None:  # parse_spec("file:PATH") always sets one; Path(None) raised TypeError too
            raise TypeError("DataSpec(kind='file') needs a path")
        prices = _read_file(Path(spec.path))
    else:
        path = Path(cache_dir or default_cache_dir()) / f"{spec.cache_key()}.parquet"
        if path.exists() and not refresh:
            prices = _from_long(_read_table(path, parquet=True))
        elif os.environ.get("HPO_OFFLINE") == "1":
            raise DataError(
                f"no cached data for {', '.join(spec.tickers)} ({spec.start} .. {spec.end}, "
                f"{spec.interval}) at {path} and HPO_OFFLINE=1; run `hpo data fetch` first "
                f"(on a cluster: the data-prep Job)"
            )
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
    if path.is_dir():
        raise DataError(f"data file {path} is a folder: give file:PATH to a .csv or .parquet file in it")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt"):
        raise DataError(f"data file {path} must be .csv or .parquet")
    _check_size(path, parquet=suffix in (".parquet", ".pq"))
    frame = _read_table(path, parquet=suffix in (".parquet", ".pq"))
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


def _check_size(path: Path, *, parquet: bool) -> None:
    """Refuse a file over :data:`~hpo_lib.limits.DATA_FILE_BYTES` or :data:`~hpo_lib.limits.DATA_ROWS` before it is
    parsed: the rows are counted from the Parquet footer, or as a CSV's line ends read a block at a time (memory
    stays one block, whatever the file's size)."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # _read_table words why it cannot be read
    limits.DATA_FILE_BYTES.check(f"data file {path}", size, DataError)
    rows = _parquet_rows(path) if parquet else _csv_lines(path)
    if rows is not None:
        limits.DATA_ROWS.check(f"data file {path}", rows, DataError)


def _parquet_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - a corrupt file: _read_table words it
        return None


def _csv_lines(path: Path, block: int = 1 << 20) -> int | None:
    """The data rows of a CSV (its line ends, less the header's), counted without parsing (the size limit, checked
    before, bounds the time: about a second a GiB)."""
    lines = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(block):
                lines += chunk.count(b"\n")
    except OSError:
        return None
    return max(0, lines - 1)


def _read_table(path: Path, *, parquet: bool) -> pd.DataFrame:
    """The file as a frame; a file that cannot be read or parsed is one DataError naming it and why."""
    kind = "Parquet" if parquet else "CSV"
    try:
        return pd.read_parquet(path) if parquet else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty: it needs a header (Date, {', '.join(FIELDS)}) and rows") from None
    except PermissionError:
        raise DataError(f"data file {path} cannot be read (permission denied): make it readable to this user") from None
    except IsADirectoryError:
        raise DataError(f"data file {path} is a folder: give file:PATH to a .csv or .parquet file in it") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"data file {path} is not valid {kind}: {first_line(exc)[:200]}") from None
    except OSError as exc:
        raise DataError(f"data file {path} cannot be read: {exc.strerror or first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid and kin for a corrupt or truncated file
        if parquet and type(exc).__module__.startswith("pyarrow"):
            raise DataError(
                f"data file {path} is not a valid Parquet file ({type(exc).__name__}: {first_line(exc)[:200]}): "
                "write it again, or give a CSV"
            ) from None
        raise


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
    return pd.concat(
        [f.rename_axis("Date").reset_index().assign(Ticker=t) for t, f in prices.items()], ignore_index=True
    )[["Date", "Ticker", *FIELDS]]


def _write_cache(prices: Prices, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_long(prices).to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: concurrent trials never read a half-written file
    except OSError as exc:
        raise DataError(
            f"cache folder {path.parent} cannot be written ({exc.strerror or type(exc).__name__}): give a cache "
            "folder this user may write"
        ) from None


YAHOO_HOST = "query2.finance.yahoo.com"  # the host yfinance downloads prices from
_NOISY_LOGGERS = ("yfinance", "urllib3", "requests", "curl_cffi", "peewee", "pandas")


def _yf_download(tickers: list[str], start: str | None, end: str | None, interval: str) -> pd.DataFrame:
    """yfinance's download with its own noise silenced: its loggers, urllib3's retry warnings and pandas' warnings
    would print dozens of lines for one failed request; :func:`download_yahoo` says what went wrong in one."""
    import contextlib
    import io
    import warnings

    import yfinance as yf

    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            return yf.download(
                tickers,
                start=start,
                end=end,
                interval=interval,
                auto_adjust=True,
                actions=False,
                group_by="column",
                progress=False,
                threads=False,
                multi_level_index=True,
            )
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def yahoo_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why Yahoo cannot be reached from here (no DNS, no route, refused, timed out), or None when it can."""
    import socket

    try:
        with socket.create_connection((YAHOO_HOST, 443), timeout=timeout_s):
            return None
    except OSError as exc:  # socket.gaierror (no DNS), ConnectionRefusedError, TimeoutError, no route
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"{type(exc).__name__}: {reason}"


def download_yahoo(
    spec: DataSpec,
    *,
    retries: int = 4,
    backoff_s: float = 2.0,
    download: Callable[..., pd.DataFrame] | None = None,
    sleep: Callable[[float], None] | None = None,
    reach: Callable[[], str | None] | None = None,
) -> Prices:
    """Download auto-adjusted OHLCV with yfinance, retrying with exponential backoff.

    yfinance does not raise for an unknown ticker, a throttled request or a missing network: it logs and returns
    empty or all-NaN columns. After the first failed attempt the network is checked (``reach``, default
    :func:`yahoo_unreachable`): when Yahoo cannot be reached at all that is said once, at once, with no retry.
    Otherwise a ticker with no rows counts as a failed attempt, and after ``retries`` attempts it is reported as
    unknown (or not traded in the range) by name.
    """
    download, sleep, reach = download or _yf_download, sleep or time.sleep, reach or yahoo_unreachable
    missing: list[str] = list(spec.tickers)
    last_error = ""
    for attempt in range(retries):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            raw = download(list(spec.tickers), spec.start, spec.end, spec.interval)
        except Exception as exc:  # network and Yahoo errors vary by yfinance version: retry them all
            last_error = f"{type(exc).__name__}: {first_line(exc)[:200]}"
            raw = None
        prices = split_yahoo_frame(raw, spec.tickers)
        missing = [t for t in spec.tickers if t not in prices]
        if not missing:
            return prices
        if attempt == 0:
            unreachable = reach()
            if unreachable:
                raise DataError(
                    f"network failure: cannot reach Yahoo Finance ({YAHOO_HOST}:443, {unreachable}) to download "
                    f"{', '.join(spec.tickers)}; connect to the network, or run `hpo data fetch` where there is one "
                    "and use its cache (or sample:/file: data)"
                )
        log.info(
            "yahoo download attempt %d/%d returned no rows for %s%s",
            attempt + 1,
            retries,
            missing,
            f" ({last_error})" if last_error else "",
        )
    detail = f" (last error: {last_error})" if last_error else ""
    raise DataError(
        f"yahoo returned no data for {', '.join(missing)} between {spec.start or 'the first day'} and "
        f"{spec.end or 'today'} after {retries} attempts while Yahoo was reachable: unknown ticker, or none of its "
        f"days in that range{detail}"
    )


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


MAX_FLAT_SHARE = 0.5  # at most half the days may close where the day before closed
MIN_RETURN_SD = 1e-6  # daily log-return standard deviation below this is a constant series, not a market


def _check_moves(ticker: str, close: pd.Series) -> None:
    """Refuse a constant or near-constant close: a model would learn nothing and a naive forecast scores loss 0.

    The rule: the close must move on more than half the days (a flat day closes exactly where the day before did),
    and the daily log returns must have a standard deviation of at least 1e-6.
    """
    import numpy as np

    values = close.to_numpy(dtype=np.float64)
    if len(values) < 2:
        return
    returns = np.diff(np.log(values))
    flat = float(np.mean(returns == 0))
    spread = float(np.std(returns))
    if spread < MIN_RETURN_SD:
        raise DataError(
            f"{ticker}: the close is constant ({values[0]:g} on all {len(values)} days, daily return sd {spread:.1e}, "
            f"need at least {MIN_RETURN_SD:g}): there is nothing to forecast; check the series"
        )
    if flat > MAX_FLAT_SHARE:
        raise DataError(
            f"{ticker}: the close is unchanged on {flat:.0%} of {len(returns)} days (at most {MAX_FLAT_SHARE:.0%} "
            "may be flat): a near-constant series; check the series (a stale feed, a filled gap)"
        )


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
            raise DataError(
                f"{ticker}: {int(nan.sum())} row(s) with NaN prices, first on {pd.Timestamp(first).date()}"
                f"; clean the series or drop those rows"
            )
        infinite = frame[["Open", "High", "Low", "Close"]].isin([float("inf"), float("-inf")]).any(axis=1)
        if infinite.any():
            first = frame.index[infinite.to_numpy()][0]
            raise DataError(
                f"{ticker}: {int(infinite.sum())} row(s) with an infinite price, first on "
                f"{pd.Timestamp(first).date()}; clean the series or drop those rows"
            )
        nonpositive = (frame[["Open", "High", "Low", "Close"]] <= 0).any(axis=1)
        if nonpositive.any():
            first = frame.index[nonpositive.to_numpy()][0]
            raise DataError(f"{ticker}: non-positive price on {pd.Timestamp(first).date()}")
    common: pd.Index | None = None
    for frame in prices.values():
        common = frame.index if common is None else common.intersection(frame.index)
    assert common is not None  # an empty prices dict was rejected above
    if len(common) == 0:
        raise DataError(f"tickers {list(prices)} share no trading day")
    for ticker, frame in prices.items():  # on the days the model will see
        _check_moves(ticker, frame.loc[common, "Close"])
    return {t: f.loc[common].assign(Volume=f.loc[common, "Volume"].fillna(0.0)) for t, f in prices.items()}
