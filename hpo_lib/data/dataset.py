"""The dataset: causal features, targets, chronological splits with a purge gap, train-only scalers and windows.

Data flows one way::

    build_features(prices) -> make_target(returns) -> chronological_split -> Scaler.fit(train rows) -> windows

:func:`prepare` is the one place these leakage rules are assembled into a :class:`Dataset`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpo_lib.data.sources import Prices
from hpo_lib.errors import ConfigError, DataError

TARGETS = ("return", "direction", "volatility")
QUARTER = 63  # trading days per quarter: rolling_origins' default block of test days
WARMUP_ROWS = 21  # price rows the features spend before their first complete row (the 21-day rolling windows)


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
        columns.update(
            {
                f"{ticker}:ret_1": ret,
                f"{ticker}:ret_5": ret.rolling(5).sum(),
                f"{ticker}:ret_21": ret.rolling(21).sum(),
                f"{ticker}:vol_5": ret.rolling(5).std(),
                f"{ticker}:vol_21": ret.rolling(21).std(),
                f"{ticker}:range": np.log(frame["High"] / frame["Low"]),
                f"{ticker}:close_open": np.log(frame["Close"] / frame["Open"]),
                f"{ticker}:volume_z": volume_z.where(ret.notna()),
            }
        )
    features = pd.DataFrame(columns).iloc[WARMUP_ROWS:]  # the longest rolling window needs 21 returns (22 prices)
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
        past[k - 1 :, k - 1] = r[: n - k + 1]
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
    out[horizon - 1 :] = csum[horizon:] - csum[:-horizon]
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


def chronological_split(
    n_rows: int, *, window: int, horizon: int, val_frac: float = 0.15, test_frac: float = 0.15, min_samples: int = 30
) -> Split:
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
    bounds = _segments(n_rows, gap, val_frac, test_frac)
    # first sample needs window rows before it (inclusive); last needs horizon rows after it
    parts = [np.arange(a + window - 1, b - horizon, dtype=np.int64) for a, b in bounds]
    counts = [len(p) for p in parts]
    if n_rows - 2 * gap <= 0 or min(counts) < min_samples:
        needed = min_rows(
            window=window, horizon=horizon, val_frac=val_frac, test_frac=test_frac, min_samples=min_samples
        )
        raise DataError(
            f"series too short: {n_rows} rows give train/val/test samples {counts} with window={window}, "
            f"horizon={horizon} and purge gaps of {gap}; need at least {min_samples} samples per split, "
            f"which takes {needed} rows"
        )
    return Split(train=parts[0], val=parts[1], test=parts[2], train_rows=bounds[0], gap=gap)


def _segments(n_rows: int, gap: int, val_frac: float, test_frac: float) -> list[tuple[int, int]]:
    """The ``[start, stop)`` rows of train, validation and test: the one place the split's arithmetic lives."""
    usable = n_rows - 2 * gap
    n_val, n_test = int(usable * val_frac), int(usable * test_frac)
    n_train = usable - n_val - n_test
    return [(0, n_train), (n_train + gap, n_train + gap + n_val), (n_rows - n_test, n_rows)]


def min_rows(
    *, window: int, horizon: int, val_frac: float = 0.15, test_frac: float = 0.15, min_samples: int = 30
) -> int:
    """The fewest rows from which :func:`chronological_split` gives every split ``min_samples`` samples, and so does
    every longer series: the exact figure, found on the split's own arithmetic (its integer rounding included).

    Each segment needs ``window + horizon - 1 + min_samples`` rows and two purge gaps lie between them.

    >>> min_rows(window=90, horizon=1)  # the trial's defaults: 120-row validation and test segments at 15 %
    982
    """
    gap, segment = purge_gap(window, horizon), window + horizon - 1 + min_samples

    def enough(n_rows: int) -> bool:
        return n_rows - 2 * gap > 0 and all(b - a >= segment for a, b in _segments(n_rows, gap, val_frac, test_frac))

    # beyond this bound every segment has at least segment + 2 rows whatever the rounding: scan down from it
    n_rows = 2 * gap + math.ceil((segment + 2) / min(val_frac, test_frac, 1 - val_frac - test_frac)) + 2
    while n_rows > 1 and enough(n_rows - 1):
        n_rows -= 1
    return n_rows


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


FOLD_TRAIN = ("expanding", "rolling")


def walk_forward(
    split: Split,
    *,
    folds: int,
    window: int,
    horizon: int,
    embargo: int = 0,
    fold_train: str = "expanding",
    min_samples: int = 30,
    min_train_rows: int = 0,
) -> list[Split]:
    """``folds`` rolling-origin (walk-forward) splits of the tuning period, oldest first; the last one is ``split``.

    Every fold validates on a block of the same length as ``split``'s validation block, the last fold on that very
    block: every fold scores the same number of days, so the replicas of one trial stack. Fold ``k``'s block ends
    ``embargo`` rows before fold ``k + 1``'s starts, and fold ``k`` trains on the rows before its block less the
    purge gap: ``expanding`` from the first row, ``rolling`` over a fixed length (the first fold's, so every fold
    trains on as many rows; the last fold is then ``split`` with its training cut to that length). The test split
    is ``split``'s, untouched, behind its own purge gap.

    ``min_train_rows`` is the training rows a fold needs beyond its windows (the fitted baselines' needs).

    >>> s = chronological_split(60, window=3, horizon=1, val_frac=0.2, test_frac=0.2, min_samples=1)
    >>> f = walk_forward(s, folds=2, window=3, horizon=1, min_samples=1)
    >>> [(x.train_rows, x.val[[0, -1]].tolist()) for x in f]
    [((0, 22), [28, 34]), ((0, 32), [38, 44])]
    >>> f[-1] is s
    True
    """
    if folds < 1:
        raise DataError(f"folds must be at least 1, got {folds}", settings=("folds",))
    if embargo < 0:
        raise DataError(f"embargo must be 0 or more rows, got {embargo}", settings=("embargo",))
    if fold_train not in FOLD_TRAIN:
        raise DataError(f"fold_train must be one of {', '.join(FOLD_TRAIN)}, got {fold_train!r}")
    if folds == 1:
        return [split]
    gap = split.gap
    last_start = split.train_rows[1] + gap  # the first row of the last fold's validation block
    block = int(split.val[-1]) + horizon + 1 - last_start  # rows of one validation block
    starts = [last_start - (folds - 1 - k) * (block + embargo) for k in range(folds)]
    first_train = starts[0] - gap  # training rows of the first (shortest) fold
    needed = max(window + horizon - 1 + min_samples, min_train_rows)
    if first_train < needed:
        n_rows = split.test[-1] + horizon + 1
        raise DataError(
            f"too many folds for the data: {folds} folds of {block} validation rows (embargo {embargo}, purge gap "
            f"{gap}) leave the first fold {max(first_train, 0)} training rows, and it needs {needed} "
            f"(window {window} + horizon {horizon} - 1 + {min_samples} samples"
            + (f", {min_train_rows} for the fitted baselines" if min_train_rows > needed - min_samples else "")
            + f"); the tuning period has {last_start + block} of the series' {n_rows} rows: use fewer folds",
            settings=("folds",),
        )
    out = []
    for start in starts:
        stop = start - gap
        train_start = 0 if fold_train == "expanding" else stop - first_train
        out.append(
            Split(
                train=np.arange(train_start + window - 1, stop - horizon, dtype=np.int64),
                val=np.arange(start + window - 1, start + block - horizon, dtype=np.int64),
                test=split.test,
                train_rows=(train_start, stop),
                gap=gap,
            )
        )
    if fold_train == "expanding":
        out[-1] = split  # the very same object: --folds=1 and the last expanding fold are one split
    return out


def rolling_origins(split: Split, n_origins: int, *, window: int, horizon: int) -> list[Split]:
    """The rolling-origin test's splits: ``split``'s test positions cut into ``n_origins`` consecutive blocks, and
    for each block a training span that ends one purge gap before the block's first input row.

    ``window`` is the split window (the longest lookback), so the gap is the same ``purge_gap(window, horizon)`` as
    the single-window test's. Training samples are every position whose footprint (input window and label horizon)
    lies in ``[split.train_rows[0], origin - gap)``; validation keeps ``split.val``, inside the training rows (an
    in-sample monitor, as in :func:`refit_split`). The first block's split is the refit split itself, so its model
    is the single-window retrain's. ``n_origins`` 0 means one origin per quarter (:data:`QUARTER` test days); it is
    the final retrain's ``test_origins``, and an error names it so.

    >>> s = refit_split(chronological_split(60, window=3, horizon=1, val_frac=0.2, test_frac=0.3, min_samples=1),
    ...     window=3, horizon=1)
    >>> s.train_rows, s.test.tolist()
    ((0, 41), [47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58])
    >>> [(int(o.train[-1]), o.train_rows, o.test.tolist()) for o in rolling_origins(s, 2, window=3, horizon=1)]
    [(39, (0, 41), [47, 48, 49, 50, 51, 52]), (45, (0, 47), [53, 54, 55, 56, 57, 58])]
    """
    test = np.asarray(split.test)
    n = n_origins or max(1, round(len(test) / QUARTER))
    if isinstance(n, bool) or n < 1 or n > len(test):
        raise ConfigError(f"test_origins must be 0 (quarterly) or 1..{len(test)} (the test days), got {n_origins}")
    gap = purge_gap(window, horizon)
    start = split.train_rows[0]
    out = []
    for block in np.array_split(test, n):
        stop = int(block[0]) - window + 1 - gap  # the block's first input row, minus the purge gap
        train = np.arange(start + window - 1, stop - horizon, dtype=np.int64)
        out.append(Split(train=train, val=split.val, test=block, train_rows=(start, stop), gap=gap))
    return out


# ----------------------------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation, fit on training rows only (``Split.train_rows``)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
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


def prepare(
    prices: Prices,
    *,
    target: str = "return",
    horizon: int = 1,
    window: int = 60,
    split_window: int | None = None,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    refit: bool = False,
    split: Split | None = None,
) -> Dataset:
    """Features, target, split, train-only scaling and windows in one call.

    ``window`` is this model's sequence length; ``split_window`` (default: ``window``) fixes the split and purge gap
    so that every trial up to that length sees identical splits. ``refit`` trains on train + validation for a final
    retrain (:func:`refit_split`): scalers are fit on those rows, the test split stays where it was. ``split`` replaces
    the chronological split (a fold of :func:`walk_forward`, a rolling test origin); scalers are fit on its
    ``train_rows`` as always.
    """
    split_window = split_window or window
    if window > split_window:
        raise DataError(
            f"sequence length {window} exceeds split window {split_window}; raise the split window",
            settings=("split_window",),
        )
    features, returns = build_features(prices)
    y_all, ref_all = make_target(returns.to_numpy(), target, horizon)
    if split is None:
        needed = min_rows(window=split_window, horizon=horizon, val_frac=val_frac, test_frac=test_frac)
        if len(features) < needed:
            ticker = next(iter(prices))
            raise DataError(
                f"series too short: {ticker} has {len(prices[ticker])} rows and needs at least "
                f"{needed + WARMUP_ROWS}: {WARMUP_ROWS} of feature warm-up, two purge gaps of "
                f"{purge_gap(split_window, horizon)} rows, and 30 samples of {split_window}-row windows with a "
                f"{horizon}-day horizon in each of train, validation ({val_frac:.0%}) and test ({test_frac:.0%}); "
                "give a longer series or a shorter split window",
                settings=("split_window",),
            )
        split = chronological_split(
            len(features), window=split_window, horizon=horizon, val_frac=val_frac, test_frac=test_frac
        )
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
        target=target,
        horizon=horizon,
        window=window,
        split=split,
        feature_names=list(features.columns),
        x={k: make_windows(scaled, v, window) for k, v in parts.items()},
        y=y,
        y_scaled={k: (v if target_scaler is None else target_scaler.transform(v)) for k, v in y.items()},
        ref={k: ref_all[v] for k, v in parts.items()},
        persistence={k: persistence_all[v] for k, v in parts.items()},
        dates={k: features.index[v] for k, v in parts.items()},
        feature_scaler=feature_scaler,
        target_scaler=target_scaler,
        returns=returns.to_numpy(dtype=np.float64),
    )


def prepare_folds(
    prices: Prices,
    *,
    folds: int,
    embargo: int = 0,
    fold_train: str = "expanding",
    min_train_rows: int = 0,
    **kwargs,
) -> list[Dataset]:
    """One :class:`Dataset` per :func:`walk_forward` fold, each scaled on its own training rows; the last one is
    exactly ``prepare(prices, **kwargs)`` (``kwargs``: :func:`prepare`'s, less ``refit`` and ``split``)."""
    last = prepare(prices, **kwargs)
    if folds == 1:
        return [last]  # whatever fold_train says: one fold is the plain split
    splits = walk_forward(
        last.split,
        folds=folds,
        window=kwargs.get("split_window") or last.window,
        horizon=last.horizon,
        embargo=embargo,
        fold_train=fold_train,
        min_train_rows=min_train_rows,
    )
    return [last if s is last.split else prepare(prices, **kwargs, split=s) for s in splits]
