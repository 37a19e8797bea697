"""The dataset: features, targets, chronological splits, train-only scaling, the refit split, windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpo_lib import data
from hpo_lib.errors import ConfigError, DataError
from tests.conftest import prices_from_returns


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
    # volatility: RMS of the next horizon's returns; its reference is the RMS of the last horizon's
    np.testing.assert_allclose(vol[0], np.sqrt((0.02**2 + 0.03**2) / 2))
    np.testing.assert_allclose(prev[1], np.sqrt((0.01**2 + 0.02**2) / 2))


def test_unknown_target_is_rejected():
    # a target the dataset does not know is refused by name
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
    # every split of every size keeps its windows and labels inside its own rows, purge gaps between
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


# ----------------------------------------------------------------------------------------------- refit
def test_refit_trains_on_train_and_validation_and_keeps_the_test_split(sp500):
    tuned = data.prepare(sp500, window=30, split_window=60)
    refit = data.prepare(sp500, window=30, split_window=60, refit=True)
    # the test split is the same days
    np.testing.assert_array_equal(tuned.split.test, refit.split.test)
    # training now runs from the first training sample through the last validation sample
    assert refit.split.train[0] == tuned.split.train[0] and refit.split.train[-1] == tuned.split.val[-1]
    assert len(refit.split.train) == tuned.split.val[-1] - tuned.split.train[0] + 1
    # the rows the scaler sees end a full purge gap before the first test row
    first_test_row = tuned.split.test[0] - 60 + 1
    assert refit.split.train_rows[1] + refit.split.gap == first_test_row


def test_refit_scaler_never_sees_test_rows(sp500):
    ds = data.prepare(sp500, window=30, split_window=60, refit=True)
    frame = sp500["sp500"].copy()
    first_unused = frame.index.get_loc(ds.dates["train"][-1]) + 1 + ds.horizon  # after the last refit label
    frame.iloc[first_unused + 1:, :4] *= np.linspace(0.5, 3.0, len(frame) - first_unused - 1)[:, None]
    changed = data.prepare({"sp500": frame}, window=30, split_window=60, refit=True)
    # changing every row after the training labels leaves both scalers and the training windows unchanged
    np.testing.assert_array_equal(ds.feature_scaler.mean, changed.feature_scaler.mean)
    np.testing.assert_array_equal(ds.target_scaler.std, changed.target_scaler.std)
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
    assert len(features) <= len(other) and features.index.isin(other.index).all()
    assert returns.name == "ret" and np.allclose(returns, features["sp500:ret_1"])


def test_constant_prices_do_not_produce_nan_features():
    prices = prices_from_returns(np.zeros(300))
    features, _ = data.build_features(prices)
    # a price that never moves has zero returns and zero volatility, not 0/0
    assert not features.isna().any().any()


# ----------------------------------------------------------------------------------------------- walk-forward folds
def _footprint(positions: np.ndarray, window: int, horizon: int) -> tuple[int, int]:
    """The [first, last] rows a split's samples read: input windows and label horizons."""
    return int(positions[0]) - window + 1, int(positions[-1]) + horizon


@pytest.mark.parametrize("fold_train", data.FOLD_TRAIN)
@pytest.mark.parametrize("window, horizon, embargo", [(10, 1, 0), (20, 5, 7)])
def test_walk_forward_folds_keep_the_purge_gap_and_end_on_todays_split(fold_train, window, horizon, embargo):
    split = data.chronological_split(2000, window=window, horizon=horizon)
    folds = data.walk_forward(split, folds=4, window=window, horizon=horizon, embargo=embargo, fold_train=fold_train)
    gap = data.purge_gap(window, horizon)
    # the last fold validates on the usual block (expanding: it is the usual split); every fold keeps the test split
    assert folds[-1].val.tolist() == split.val.tolist() and all(f.test is split.test for f in folds)
    assert (folds[-1] is split) == (fold_train == "expanding")
    for k, fold in enumerate(folds):
        train_first, train_last = _footprint(fold.train, window, horizon)
        val_first, val_last = _footprint(fold.val, window, horizon)
        # training reads only its own rows, and the purge gap separates it from validation exactly
        assert (train_first, train_last + 1) == fold.train_rows
        assert val_first - (train_last + 1) == gap
        # equal-length validation blocks, each embargo rows before the next one
        assert len(fold.val) == len(split.val)
        if k:
            assert val_first - (_footprint(folds[k - 1].val, window, horizon)[1] + 1) == embargo
    lengths = [len(f.train) for f in folds]
    # expanding: each fold trains on more rows, from the first one; rolling: all on as many rows
    if fold_train == "expanding":
        assert lengths == sorted(set(lengths)) and all(f.train_rows[0] == 0 for f in folds)
    else:
        assert len(set(lengths)) == 1


def test_one_fold_is_the_plain_split():
    split = data.chronological_split(500, window=10, horizon=1)
    assert data.walk_forward(split, folds=1, window=10, horizon=1) == [split]


def test_too_many_folds_names_rows_needed_and_there():
    split = data.chronological_split(1000, window=10, horizon=1)
    with pytest.raises(DataError, match=r"leave the first fold 0 training rows, and it needs 300 .*"
                                         r"300 for the fitted baselines.*of the series' 1000 rows"):
        data.walk_forward(split, folds=8, window=10, horizon=1, min_train_rows=300)


# ----------------------------------------------------------------------------------------------- rolling origins
def assert_purged(split: data.Split, window: int, horizon: int) -> None:
    """Every training sample's footprint ends a purge gap before the first test sample's window starts."""
    last_label_row = int(split.train[-1]) + horizon
    first_input_row = int(split.test[0]) - window + 1
    assert first_input_row - last_label_row - 1 >= data.purge_gap(window, horizon)
    assert split.train_rows[1] == first_input_row - data.purge_gap(window, horizon)


@pytest.mark.parametrize("n_origins, sizes", [(1, [12]), (2, [6, 6]), (3, [4, 4, 4]), (5, [3, 3, 2, 2, 2])])
def test_rolling_origins_cut_the_test_days_into_purged_blocks(n_origins, sizes):
    refit = data.refit_split(data.chronological_split(60, window=3, horizon=1, val_frac=0.2, test_frac=0.3,
                                                      min_samples=1), window=3, horizon=1)
    splits = data.rolling_origins(refit, n_origins, window=3, horizon=1)
    # the blocks partition the test days, in order, each forecast by a model trained up to its own origin
    assert [len(s.test) for s in splits] == sizes
    assert np.concatenate([s.test for s in splits]).tolist() == refit.test.tolist()
    for s in splits:
        assert_purged(s, window=3, horizon=1)
    # the first origin's split is the refit itself; later origins train on more rows
    assert splits[0].train.tolist() == refit.train.tolist() and splits[0].train_rows == refit.train_rows
    assert all(a.train_rows[1] < b.train_rows[1] for a, b in zip(splits, splits[1:]))


def test_rolling_origins_default_to_quarters_and_refuse_more_origins_than_days():
    refit = data.refit_split(data.chronological_split(2000, window=10, horizon=1), window=10, horizon=1)
    # 0 means one origin per 63 test days
    assert len(data.rolling_origins(refit, 0, window=10, horizon=1)) == round(len(refit.test) / 63)
    with pytest.raises(ConfigError, match="test_origins must be 0 \\(quarterly\\) or 1.."):
        data.rolling_origins(refit, len(refit.test) + 1, window=10, horizon=1)


def test_each_fold_is_scaled_on_its_own_training_rows_and_blind_to_later_rows(sp500):
    kwargs = dict(window=10, split_window=10, val_frac=0.1, test_frac=0.1)
    folds = data.prepare_folds(sp500, folds=3, **kwargs)
    features, _ = data.build_features(sp500)
    for ds in folds:
        start, stop = ds.split.train_rows
        # the feature scaler saw exactly the fold's training rows
        np.testing.assert_allclose(ds.feature_scaler.mean, features.to_numpy()[start:stop].mean(axis=0))
    # the last fold is exactly prepare()'s dataset
    plain = data.prepare(sp500, **kwargs)
    np.testing.assert_array_equal(folds[-1].x["val"], plain.x["val"])
    # changing every price after the first fold's validation block leaves that fold's data bit-identical
    first = folds[0]
    cut = first.dates["val"][-1] + pd.Timedelta(days=first.horizon * 3 + 7)
    shocked = {t: f.mul(np.where(f.index <= cut, 1.0, 1.5), axis=0) for t, f in sp500.items()}
    again = data.prepare_folds(shocked, folds=3, **kwargs)[0]
    for part in ("train", "val"):
        np.testing.assert_array_equal(again.x[part], first.x[part])
        np.testing.assert_array_equal(again.y[part], first.y[part])


@pytest.mark.parametrize("window, horizon, val_frac, test_frac, expected", [
    (90, 1, 0.15, 0.15, 982),  # the trial's defaults: 120-row validation and test segments at 15 %
    (10, 1, 0.15, 0.15, 289),
    (3, 1, 0.25, 0.25, 140),
    (60, 20, 0.3, 0.3, 524),
])
def test_min_rows_is_the_exact_threshold_of_the_split(window, horizon, val_frac, test_frac, expected):
    from hpo_lib.data.dataset import min_rows

    needed = min_rows(window=window, horizon=horizon, val_frac=val_frac, test_frac=test_frac)
    assert needed == expected

    def splits(n: int) -> bool:
        try:
            data.chronological_split(n, window=window, horizon=horizon, val_frac=val_frac, test_frac=test_frac)
        except DataError:
            return False
        return True

    # one row fewer is refused, and that many rows or more always split (the rounding never bites later)
    assert not splits(needed - 1)
    assert all(splits(n) for n in range(needed, needed + 2000))


def test_a_short_series_is_told_the_rows_it_really_needs(sp500):
    short = {"sp500": sp500["sp500"].iloc[:733]}
    # 733 price rows: the message states the true requirement in price rows (982 + 21 of warm-up), not ~545
    with pytest.raises(DataError, match=r"series too short: sp500 has 733 rows and needs at least 1003: 21 of"):
        data.prepare(short, window=60, split_window=90)
    # and 1003 rows are indeed enough, 1002 not
    data.prepare({"sp500": sp500["sp500"].iloc[:1003]}, window=60, split_window=90)
    with pytest.raises(DataError, match="needs at least 1003"):
        data.prepare({"sp500": sp500["sp500"].iloc[:1002]}, window=60, split_window=90)
