"""Data: market data in, leakage-safe datasets, baselines and scores out. Imports nothing else of hpo_lib.

    sources.load_prices(spec) -> dataset.prepare(prices) -> Dataset
        -> baselines.evaluate(ds)             naive, GARCH(1,1), HAR-RV, EWMA (fit on training rows only)
        -> scoring.score(ds, split, forecast)  the metrics every forecast is judged by; DM test; backtest

* :mod:`.sources`: market data from Yahoo (cached), the bundled samples or a file, validated;
* :mod:`.dataset`: features, targets, chronological splits with purge gaps, walk-forward folds, rolling origins,
  train-only scalers and windows;
* :mod:`.baselines`: the naive and econometric forecasts every model is compared with;
* :mod:`.scoring`: per-sample losses and their means, QLIKE, Diebold-Mariano, the cost-aware backtest;
* :mod:`.inference`: search-aware tests (SPA, Reality Check, MCS), bootstrap intervals, nested-model tests,
  probabilistic and deflated Sharpe.

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
    rolling_origins,
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
    "rolling_origins",
    "split_yahoo_frame",
    "to_long",
    "trailing_return",
    "validate_prices",
    "variance_proxy",
    "walk_forward",
]
