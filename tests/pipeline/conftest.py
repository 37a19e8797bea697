"""Pipeline fixtures shared by the step tests and the retrain tests: AR(1) prices prepared as the first step writes
them, and two winners retrained on them by the retrain step (once for the whole package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo_lib.pipeline import steps
from tests.conftest import ar1_returns, prices_from_returns

AR1_FLAGS = ["--model=mlp", "--hidden-size=16", "--num-layers=1", "--seq-len=5", "--split-window=10",
             "--epochs=60", "--lr=0.003", "--batch-size=128", "--optimizer=adam", "--threads=1"]


def item(trial: str, rank: int, seed: int, objective: float, flags=AR1_FLAGS) -> dict:
    """One loop item as the winners step emits it (numbers as floats, the way KFP's protobuf hands them over)."""
    return {"id": f"{rank:03d}-{trial}-seed{seed}", "experiment": "syn-exp", "trial": trial, "seed": float(seed),
            "rank": float(rank), "objective_metric": "val_loss", "objective": objective, "top_k": True,
            "pareto": False, "axes": {}, "flags": list(flags), "n_trials": 7.0, "n_eligible": 5.0}


@pytest.fixture(scope="package")
def ar1_data(tmp_path_factory) -> Path:
    """Prices with a predictable next return, prepared the way the pipeline's first step does."""
    folder = tmp_path_factory.mktemp("ar1")
    frame = prices_from_returns(ar1_returns(1500, phi=0.5, seed=1))["SYN"]
    frame.rename_axis("Date").reset_index().to_csv(folder / "syn.csv", index=False)
    out = folder / "prepared"
    steps.prepare_data(f"file:{folder / 'syn.csv'}", out)
    return out


@pytest.fixture(scope="package")
def retrained(ar1_data, tmp_path_factory) -> list[Path]:
    """Two winners x one seed, 3 epochs each, on the AR(1) data."""
    root = tmp_path_factory.mktemp("retrains")
    dirs = []
    for rank, (name, extra) in enumerate([("t-best", []), ("t-second", ["--hidden-size=8"])], start=1):
        folder = root / name
        steps.run_retrain(item(name, rank, 0, 0.5 + rank / 10, AR1_FLAGS + extra + ["--epochs=3"]), ar1_data,
                          folder)
        dirs.append(folder)
    return dirs
