"""The project's own trial forked warm gives the numbers a cold process gives, and starts sooner: the MLP manifest as
it ships, two short trials each way (a cold trial pays `import torch` first, so these take several seconds)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from hpo_lib import engine

pytestmark = pytest.mark.e2e
MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "mlp-experiment.yaml"
TIMES = {"train_time_s"}  # the only metrics that depend on the clock


def tune(state: Path, warm_start: str):
    overrides = {"data": "sample:sp500", "epochs": "1", "threads": "1", "folds": "1", "seeds": "1"}
    options = engine.TuneOptions(overrides=overrides, state_dir=state, max_trials=2, parallel=1, pruner="none",
                                 tracking=False, warm_start=warm_start)
    return engine.run(MANIFEST, options).get_trials()


def test_the_project_trial_forked_warm_gives_the_cold_numbers_sooner(tmp_path):
    warm, cold = tune(tmp_path / "warm", "own"), tune(tmp_path / "cold", "off")
    assert [t.user_attrs["warm_start"] for t in warm] == [True, True]
    assert [t.user_attrs["warm_start"] for t in cold] == [False, False]
    # the same sampler seed proposes the same configurations, and each trains to the very same numbers
    assert [t.params for t in warm] == [t.params for t in cold]
    assert [t.value for t in warm] == [t.value for t in cold]
    for w, c in zip(warm, cold):
        observed = {k: v for k, v in w.user_attrs["observation"].items() if k not in TIMES}
        assert observed == {k: v for k, v in c.user_attrs["observation"].items() if k not in TIMES}
    # and the warm trials held their slots for less time: no interpreter start, no imports, no teardown
    assert statistics.mean(t.user_attrs["duration_s"] for t in warm) < statistics.mean(
        t.user_attrs["duration_s"] for t in cold)
