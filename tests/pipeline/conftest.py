"""Pipeline fixtures shared by the step tests and the retrain tests: prices with a nonlinear signal prepared as the
first step writes them, and two winners retrained on them by the retrain step (once for the whole package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpo_lib.pipeline import steps
from tests.conftest import prices_from_returns

SIGNAL_FLAGS = ["--model=mlp", "--hidden-size=16", "--num-layers=1", "--seq-len=5", "--split-window=10",
             "--epochs=60", "--lr=0.003", "--batch-size=128", "--optimizer=adam", "--threads=1"]


def item(trial: str, rank: int, seeds, objective: float, flags=SIGNAL_FLAGS) -> dict:
    """One loop item as the winners step emits it (numbers as floats, the way KFP's protobuf hands them over)."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    return {"id": f"{rank:03d}-{trial}", "experiment": "syn-exp", "trial": trial, "seeds": [float(s) for s in seeds],
            "rank": float(rank), "objective_metric": "val_loss", "objective": objective, "top_k": True,
            "pareto": False, "axes": {}, "flags": list(flags), "n_trials": 7.0, "n_eligible": 5.0}


def sign_switch_returns(n: int, *, phi: float = 0.7, sigma: float = 0.01, seed: int = 1) -> np.ndarray:
    """``r[t] = phi * sign(r[t-1]) * r[t-2] + noise``: predictable, but uncorrelated with any one day's features.

    A linear model of the last day's features (the ridge baseline) finds nothing; a network that sees the window
    finds the product of a sign and a lagged return. So a model can beat every baseline here, the linear one too.
    """
    rng = np.random.default_rng(seed)
    eps = rng.normal(0, sigma, n)
    r = np.zeros(n)
    for t in range(2, n):
        r[t] = phi * np.sign(r[t - 1]) * r[t - 2] + eps[t]
    return r


@pytest.fixture(scope="package")
def signal_data(tmp_path_factory) -> Path:
    """Prices with a predictable (nonlinear) next return, prepared the way the pipeline's first step does."""
    folder = tmp_path_factory.mktemp("signal")
    frame = prices_from_returns(sign_switch_returns(1500))["SYN"]
    frame.rename_axis("Date").reset_index().to_csv(folder / "syn.csv", index=False)
    out = folder / "prepared"
    steps.prepare_data(f"file:{folder / 'syn.csv'}", out)
    return out


@pytest.fixture(scope="package")
def retrained(signal_data, tmp_path_factory) -> list[Path]:
    """Two winners x one seed, 20 epochs each (a fraction of a second), on the signal data; each with the
    rolling-origin test at 3 origins."""
    root = tmp_path_factory.mktemp("retrains")
    dirs = []
    for rank, (name, extra) in enumerate([("t-best", []), ("t-second", ["--hidden-size=8"])], start=1):
        folder = root / name
        steps.run_retrain(item(name, rank, 0, 0.5 + rank / 10, SIGNAL_FLAGS + extra + ["--epochs=20"]), signal_data,
                          folder, test_origins=3)
        dirs.append(folder / "seed0")
    return dirs
