"""Data: specs, sources, features, targets, chronological splits, train-only scaling, windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpo_lib import data
from hpo_lib.data import sources
from hpo_lib.errors import DataError

from tests.conftest import prices_from_returns


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
def test_sample_sp500_is_real_daily_data(sp500):
    frame = sp500["sp500"]
    # 20 years of daily OHLCV from the arch package
    assert list(frame.columns) == list(data.FIELDS)
    assert frame.index[0] == pd.Timestamp("1999-01-04") and frame.index[-1] == pd.Timestamp("2018-12-31")
    assert len(frame) == 5031


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
    with pytest.raises(DataError, match="does not exist"):
        data.load_prices(f"file:{tmp_path / 'nope.csv'}")


# ----------------------------------------------------------------------------------------------- features/targets
def test_features_are_causal(sp500):
    prices = {"sp500": sp500["sp500"].iloc[:400]}
    features, _ = data.build_features(prices)
    changed = {"sp500": prices["sp500"].copy()}
    changed["sp500"].iloc[300:, :] *= 1.5
    features_changed, _ = data.build_features(changed)
    cut = prices["sp500"].index[299]
    # rows up to day 299 do not change when later prices do
    pd.testing.assert_frame_equal(features.loc[:cut], features_changed.loc[:cut])


def test_targets_use_the_next_horizon_only():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.05])
    y, ref = data.make_target(r, "return", 2)
    # y[t] = r[t+1] + r[t+2]; the last two rows have no full horizon
    np.testing.assert_allclose(y[:3], [0.01, 0.03, 0.05])
    assert np.isnan(y[3:]).all() and (ref == 0).all()
    up, _ = data.make_target(r, "direction", 1)
    # a zero return counts as not up
    np.testing.assert_array_equal(up[:4], [0, 1, 0, 1])
    vol, prev = data.make_target(r, "volatility", 2)
    np.testing.assert_allclose(vol[0], np.sqrt((0.02**2 + 0.03**2) / 2))
    np.testing.assert_allclose(prev[1], np.sqrt((0.01**2 + 0.02**2) / 2))


def test_unknown_target_is_rejected():
    with pytest.raises(DataError, match="unknown target 'price'"):
        data.make_target(np.zeros(5), "price", 1)


# ----------------------------------------------------------------------------------------------- splits
def check_valid_split(split: data.Split, n_rows: int, window: int, horizon: int) -> None:
    """Every footprint lies in its own segment, segments are ordered, and the purge gap separates them."""
    spans = []
    for part in (split.train, split.val, split.test):
        assert len(part) > 0
        spans.append((part.min() - window + 1, part.max() + horizon))  # first input row, last label row
    assert spans[0][0] >= 0 and spans[-1][1] < n_rows
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start - end - 1 >= data.purge_gap(window, horizon)


def test_split_exact_indices_on_tiny_input():
    split = data.chronological_split(40, window=3, horizon=1, val_frac=0.25, test_frac=0.25, min_samples=1)
    # sample t reads rows t-2..t and its label t+1; gaps of window + horizon = 4 rows
    assert split.train.tolist() == list(range(2, 15))
    assert split.val.tolist() == list(range(22, 27))
    assert split.test.tolist() == list(range(34, 39))
    assert split.train_rows == (0, 16) and split.gap == 4
    check_valid_split(split, 40, 3, 1)


@pytest.mark.parametrize("n_rows, window, horizon", [(500, 20, 1), (1500, 90, 5), (5000, 60, 10), (317, 7, 3)])
def test_no_window_or_label_crosses_a_split(n_rows, window, horizon):
    check_valid_split(data.chronological_split(n_rows, window=window, horizon=horizon), n_rows, window, horizon)


def test_too_short_series_names_the_quantities():
    # the message names rows, window, horizon and the per-split sample counts
    with pytest.raises(DataError, match=r"series too short: 200 rows .* window=60, horizon=1"):
        data.chronological_split(200, window=60, horizon=1)


def test_trials_with_shorter_windows_share_the_split(sp500):
    a = data.prepare(sp500, window=20, split_window=90)
    b = data.prepare(sp500, window=90, split_window=90)
    # a shorter lookback is scored on the very same validation and test days
    for part in ("train", "val", "test"):
        assert a.dates[part].equals(b.dates[part])


# ----------------------------------------------------------------------------------------------- leakage
def test_scaler_sees_only_training_rows(sp500):
    ds = data.prepare(sp500, window=30)
    frame = sp500["sp500"].copy()
    first_unused = frame.index.get_loc(ds.dates["train"][-1]) + 1 + ds.horizon  # after the last train label
    frame.iloc[first_unused + 1:, :4] *= np.linspace(0.5, 3.0, len(frame) - first_unused - 1)[:, None]
    frame.iloc[first_unused + 1:, 4] *= 7
    changed = data.prepare({"sp500": frame}, window=30)
    # changing validation and test rows leaves feature and target scalers unchanged
    np.testing.assert_array_equal(ds.feature_scaler.mean, changed.feature_scaler.mean)
    np.testing.assert_array_equal(ds.feature_scaler.std, changed.feature_scaler.std)
    np.testing.assert_array_equal(ds.target_scaler.mean, changed.target_scaler.mean)
    # ...and the training windows themselves
    np.testing.assert_array_equal(ds.x["train"], changed.x["train"])


def test_windows_match_a_plain_loop():
    values = np.arange(60, dtype=np.float64).reshape(20, 3)
    ends = np.array([4, 9, 19])
    expected = np.stack([values[e - 4:e + 1] for e in ends])
    # the strided version equals the obvious per-sample slice
    np.testing.assert_array_equal(data.make_windows(values, ends, 5), expected.astype(np.float32))


def test_multi_ticker_features_align_on_common_dates(sp500):
    other = sp500["sp500"].iloc[::2] * 1.1  # every other day only
    prices = data.validate_prices({"sp500": sp500["sp500"], "half": other})
    features, returns = data.build_features(prices)
    # both tickers contribute features on the dates they share; the first ticker is the one forecast
    assert {c.split(":")[0] for c in features.columns} == {"sp500", "half"}
    assert len(prices["sp500"]) == len(other)
    assert returns.name == "ret" and np.allclose(returns, features["sp500:ret_1"])


def test_constant_prices_do_not_produce_nan_features():
    prices = prices_from_returns(np.zeros(300))
    features, _ = data.build_features(prices)
    assert not features.isna().any().any()


def test_sample_spec_keeps_a_date_range():
    prices = data.load_prices("sample:sp500,start=2012-01-01,end=2012-12-31")
    frame = next(iter(prices.values()))
    assert frame.index[0] >= pd.Timestamp("2012-01-01") and frame.index[-1] <= pd.Timestamp("2012-12-31")
    assert 240 < len(frame) < 260  # one year of trading days
    for bad, message in (("sample:sp500,foo=1", "unknown sample option"), ("sample:sp500,start=x", "not a date")):
        with pytest.raises(DataError, match=message):
            data.parse_spec(bad)


@pytest.mark.parametrize("name", sorted(data.SAMPLES))
def test_sample_read_directly_equals_archs_own_loader(name):
    import importlib

    ours = sources._load_sample(name)
    theirs = importlib.import_module(data.SAMPLES[name]).load()[list(data.FIELDS)].astype("float64")
    pd.testing.assert_frame_equal(ours, theirs, check_freq=False)
