"""What the pipeline records about a retrain, as the steps and MLflow read it: the prepared data set, the retrain's
settings as MLflow params and tags, its scalar results (test metrics, the bar, DM, backtest, inference), the code
and requirements shipped with its model, and the JSON files the steps pass on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo_lib import fileio
from hpo_lib.pipeline import retrain
from hpo_lib.results import tracking

PRICES_FILE = "prices.parquet"  # the prepared data, one long Parquet file (prepare_data writes it)
RUN_FLAGS_SKIPPED = ("output_dir", "cache_dir")  # a retrain's folders: paths of this run, not settings


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(path, json.dumps(value, indent=2, default=str))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------------------------- the data set
def data_spec(data_dir: str | Path) -> str:
    """The data spec the retrains read: the prepared Parquet file in ``data_dir``."""
    return f"file:{Path(data_dir) / PRICES_FILE}"


def dataset(data_dir: str | Path):
    """The prepared data as an MLflow run input: its spec, the digest of the prepared file, its size and dates."""
    folder = Path(data_dir)
    meta = read_json(folder / "data.json")
    digest = hashlib.sha256((folder / PRICES_FILE).read_bytes()).hexdigest()[:8]
    return tracking.dataset_input(
        str(meta["spec"]), digest=digest, profile={k: v for k, v in meta.items() if k != "spec"}
    )


# ----------------------------------------------------------------------------------------------- params, tags, scalars
def run_params(config: Mapping[str, Any], data_dir: str | Path) -> dict[str, str]:
    """A retrain's settings as MLflow params under the trial's flag names (Katib's: ``batch-size``), the same
    names as the tuning runs'; ``data`` is the spec the data was prepared from, not the prepared file's path."""
    flags = [f"--{k.replace('_', '-')}={_flag_value(v)}" for k, v in config.items() if k not in RUN_FLAGS_SKIPPED]
    params = tracking.flag_params(flags)
    meta = Path(data_dir) / "data.json"
    if meta.exists():
        params["data"] = str(read_json(meta)["spec"])
    return params


def _flag_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def retrain_tags(item: Mapping[str, Any], champion_id: str | None = None) -> dict[str, str]:
    """A retrain run's MLflow tags: what it retrained (trial, rank, seed, why it won) and, once known, whether it
    is the champion."""
    tags = {
        "hpo.kind": "retrain-run",
        "hpo.trial": str(item["trial"]),
        "hpo.rank": str(item["rank"]),
        "hpo.seed": str(item["seed"]),
        "hpo.top_k": str(item["top_k"]),
        "hpo.pareto": str(item["pareto"]),
    }
    if champion_id is not None:
        tags["hpo.champion"] = str(item["id"] == champion_id)
    return tags


def scalar_results(item: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one retrain: test metrics, the bar, DM, backtest, val -> test gap (for KFP and MLflow)."""
    ranking = report["ranking_metric"]
    values: dict[str, float | None] = {f"test_{k}": v for k, v in report["model"].items()}
    values[f"bar_test_{ranking}"] = report["baselines"][report["bar"]][ranking]
    values["beats_bar"] = float(report["beats_bar"])
    values["dm_statistic"] = report["dm"].get("statistic")
    values["dm_p_value"] = report["dm"].get("p_value")
    for name, result in (report.get("backtest") or {}).items():
        if isinstance(result, dict) and "sharpe" in result:  # a backtest's figures, not the equity series
            prefix = "backtest" if name == "model" else name
            for key in ("sharpe", "max_drawdown", "win_rate", "total_return"):
                values[f"{prefix}_{key}"] = result[key]
    values["tuning_objective"] = item.get("objective")
    values["val_test_gap"] = retrain.val_test_gap(item["objective_metric"], item.get("objective"), report["model"])
    values["train_time_s"] = report["run"]["train_time_s"]
    values["kept_epoch"] = report["run"].get("kept_epoch")
    values.update(inference_scalars(report.get("inference") or {}))
    rolling = report.get("rolling")
    if rolling:
        values[f"rolling_test_{ranking}"] = rolling["model"][ranking]
        values[f"rolling_bar_test_{ranking}"] = rolling["baselines"][rolling["bar"]][ranking]
        values["rolling_dm_p_value"] = rolling["dm"].get("p_value")
    return {k: float(v) for k, v in values.items() if v is not None}


def inference_scalars(inference: Mapping[str, Any]) -> dict[str, float | None]:
    """The headline numbers of :func:`hpo_lib.pipeline.retrain.inference_report` (absent ones left out)."""
    values: dict[str, float | None] = {}
    for name, interval in (inference.get("intervals") or {}).items():
        values[f"{name}_ci_low"], values[f"{name}_ci_high"] = interval["low"], interval["high"]
    for name, cw in (inference.get("clark_west") or {}).items():
        values[f"clark_west_p_{name}"] = cw["p_value"]
    values["oos_r2"] = (inference.get("oos_r2") or {}).get("r2")
    values["pesaran_timmermann_p"] = (inference.get("pesaran_timmermann") or {}).get("p_value")
    values["psr"] = (inference.get("psr") or {}).get("psr")
    values["dsr"] = (inference.get("dsr") or {}).get("dsr")
    return values


# ----------------------------------------------------------------------------------------------- the model's files
def package_copy() -> str:
    """hpo_lib's sources (no bytecode) in a temporary folder, to ship with each logged model."""
    import shutil
    import tempfile

    package = Path(__file__).resolve().parents[1]  # hpo_lib/, found without importing the package's API
    target = Path(tempfile.mkdtemp(prefix="hpo-model-code-")) / "hpo_lib"
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "numpy", "cloudpickle")]
