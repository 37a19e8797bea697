"""A retrained model as an MLflow pyfunc that takes raw prices: the features, the train-only scalers and the model
in one package, so ``mlflow models serve`` answers a request of daily bars with forecasts in the target's units.

Input: a DataFrame of daily bars, oldest first, with a ``Date`` column (or a date index) and ``Open``, ``High``,
``Low``, ``Close``, ``Volume`` for a model trained on one ticker, or ``<ticker>:<field>`` columns for several (the
forecast ticker first, as trained). Output: one row per date that has a full window of features behind it
(:data:`hpo_lib.data.dataset.WARMUP_ROWS` bars of warm-up, then the model's sequence length): ``date`` and
``forecast`` (the next ``horizon`` days' return or volatility, or P(up) for a direction model), exactly what the
retrain's ``forecasts.csv`` holds for the same dates.

The scalers are the ones the retrain fitted (:data:`hpo_lib.pipeline.retrain.SCALERS` beside ``model.pt``): never
refitted on the request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc.model import PythonModel

FIELDS = ("Open", "High", "Low", "Close", "Volume")
ARTIFACT = "retrain"  # the retrain folder, as the pyfunc's one artifact


class PriceForecaster(PythonModel):
    """The pyfunc: raw daily bars in, forecasts out (see the module's docstring)."""

    def load_context(self, context) -> None:
        from hpo_lib.pipeline import retrain

        folder = Path(context.artifacts[ARTIFACT])
        self.model = retrain.load_model(folder)
        self.record = json.loads((folder / retrain.SCALERS).read_text())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # hints: MLflow reads them
        return forecast(self.model, self.record, model_input)


def forecast(model: Any, record: dict[str, Any], bars: Any) -> Any:
    """Forecasts of ``model`` (a torch module) for every date of ``bars`` with a full window behind it."""
    import numpy as np
    import pandas as pd
    import torch

    from hpo_lib.data.dataset import build_features, make_windows
    from hpo_lib.errors import DataError

    features, _ = build_features(_prices(pd.DataFrame(bars), record["feature_names"]))
    if list(features.columns) != record["feature_names"]:
        raise DataError(
            f"the bars give features {list(features.columns)}, the model was trained on "
            f"{record['feature_names']}; send the tickers and fields it was trained on"
        )
    window = int(record["window"])
    if len(features) < window:
        raise DataError(f"{len(features)} rows of features after warm-up, the model needs {window}; send more bars")
    scaled = (features.to_numpy(dtype=np.float64) - np.asarray(record["feature_mean"])) / np.asarray(
        record["feature_std"]
    )
    ends = np.arange(window - 1, len(features))
    with torch.no_grad():
        out = model(torch.from_numpy(make_windows(scaled, ends, window))).numpy()
    if record["target"] == "direction":
        values = torch.softmax(torch.from_numpy(out), dim=1)[:, 1].numpy()
    else:
        values = out[:, 0] * np.asarray(record["target_std"]) + np.asarray(record["target_mean"])
    return pd.DataFrame({"date": features.index[ends].strftime("%Y-%m-%d"), "forecast": values.astype(np.float64)})


def _prices(frame: Any, feature_names: list[str]) -> dict[str, Any]:
    """The bars as :func:`hpo_lib.data.dataset.build_features` takes them: ticker -> OHLCV frame by date."""
    import pandas as pd

    from hpo_lib.errors import DataError

    tickers = list(dict.fromkeys(name.split(":", 1)[0] for name in feature_names))
    if "Date" in frame.columns:
        frame = frame.set_index(pd.to_datetime(frame["Date"])).drop(columns="Date")
    frame.index = pd.DatetimeIndex(frame.index)
    prices = {}
    for ticker in tickers:
        names = {f: f if len(tickers) == 1 and f in frame.columns else f"{ticker}:{f}" for f in FIELDS}
        missing = [n for n in names.values() if n not in frame.columns]
        if missing:
            raise DataError(f"the bars lack columns {missing}; send {', '.join(names.values())} (and Date)")
        prices[ticker] = frame[list(names.values())].set_axis(list(FIELDS), axis=1).astype("float64")
    return prices


def save(retrain_dir: str | Path, path: str | Path, *, code_path: str, requirements: list[str]) -> Path:
    """The retrain in ``retrain_dir`` saved as a pyfunc model folder at ``path`` (for ``mlflow models serve``)."""
    mlflow.pyfunc.save_model(
        str(path),
        python_model=PriceForecaster(),
        artifacts={ARTIFACT: str(retrain_dir)},
        code_paths=[code_path],
        pip_requirements=list(requirements),
    )
    return Path(path)
