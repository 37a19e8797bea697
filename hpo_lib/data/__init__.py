"""Data: market data in, leakage-safe datasets, baselines and scores out. Imports nothing else of hpo_lib.

    sources.load_prices(spec) -> dataset.prepare(prices) -> Dataset
        -> baselines.evaluate(ds)             naive, GARCH(1,1), HAR-RV, EWMA (fit on training rows only)
        -> scoring.score(ds, split, forecast)  the metrics every forecast is judged by; DM test; backtest

The names of :mod:`.sources` and :mod:`.dataset` are re-exported here (``data.load_prices``, ``data.prepare``);
``baselines`` and ``scoring`` are imported as modules.
"""

from hpo_lib.data.dataset import (
    FOLD_TRAIN,
    TARGETS,
    Dataset,
    Scaler,
    Split,
    build_features,
    chronological_split,
    make_target,
    make_windows,
    prepare,
    prepare_folds,
    purge_gap,
    refit_split,
    trailing_return,
    variance_proxy,
    walk_forward,
)
from hpo_lib.data.sources import (
    FIELDS,
    SAMPLES,
    DataSpec,
    Prices,
    default_cache_dir,
    download_yahoo,
    fetch,
    load_prices,
    parse_spec,
    split_yahoo_frame,
    to_long,
    validate_prices,
)

__all__ = [
    "FIELDS",
    "FOLD_TRAIN",
    "SAMPLES",
    "TARGETS",
    "DataSpec",
    "Dataset",
    "Prices",
    "Scaler",
    "Split",
    "build_features",
    "chronological_split",
    "default_cache_dir",
    "download_yahoo",
    "fetch",
    "load_prices",
    "make_target",
    "make_windows",
    "parse_spec",
    "prepare",
    "prepare_folds",
    "purge_gap",
    "refit_split",
    "split_yahoo_frame",
    "to_long",
    "trailing_return",
    "validate_prices",
    "variance_proxy",
    "walk_forward",
]
