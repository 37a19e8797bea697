"""Seeds retrained together in one process: per seed the same numbers as a lone retrain with that seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo_lib.pipeline import retrain, steps

FLAGS = ["--hidden-size=8", "--num-layers=1", "--seq-len=5", "--split-window=10", "--epochs=2", "--lr=0.003",
         "--batch-size=128", "--optimizer=adam", "--threads=1", "--dropout=0.1"]
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("family", ["mlp", "lstm", "gru", "cnn-lstm"])
def test_seeds_retrained_together_match_lone_retrains(family, signal_data, tmp_path):
    args = retrain.retrain_args([f"--model={family}", *FLAGS], data=steps.data_spec(signal_data), eval_test=True)
    together = retrain.retrain_seeds(args, {s: tmp_path / "together" / f"seed{s}" for s in SEEDS})
    for seed in SEEDS:
        alone = retrain.retrain(retrain.retrain_args([f"--model={family}", *FLAGS, f"--seed={seed}"],
                                                     data=steps.data_spec(signal_data), eval_test=True),
                                tmp_path / "alone" / f"seed{seed}")
        mine, lone = together[seed], alone
        # each seed's report is its own: its seed, its kept epoch, its test metrics and per-day losses
        assert mine["run"]["seed"] == seed and mine["run"]["kept_epoch"] == lone["run"]["kept_epoch"]
        assert mine["model"] == pytest.approx(lone["model"], rel=1e-4, abs=1e-7)
        np.testing.assert_allclose(mine["losses"]["model"], lone["losses"]["model"], rtol=1e-4, atol=1e-9)
        # the written history has today's keys and, timing aside, the lone retrain's values
        ours, theirs = (json.loads((tmp_path / side / f"seed{seed}" / "history.json").read_text())
                        for side in ("together", "alone"))
        assert [set(h) for h in ours] == [set(h) for h in theirs]
        for a, b in zip(ours, theirs):
            assert {k: v for k, v in a.items() if k != "train_time_s"} == pytest.approx(
                {k: v for k, v in b.items() if k != "train_time_s"}, rel=1e-4, abs=1e-7)
        # every seed's folder holds the files a lone retrain writes
        assert {p.name for p in (tmp_path / "together" / f"seed{seed}").iterdir()} >= set(retrain.FILES)


def test_the_retrain_step_writes_one_folder_per_seed_that_the_summary_reads(signal_data, tmp_path):
    from tests.pipeline.conftest import SIGNAL_FLAGS, item

    by_seed = steps.run_retrain(item("t-two", 1, [0, 1], 0.6, SIGNAL_FLAGS + ["--epochs=2"]), signal_data,
                                tmp_path / "winner")
    # one task, two seeds: each has its scalars, its folder and its own item (seed, id)
    assert sorted(by_seed) == [0, 1] and all("test_loss" in v for v in by_seed.values())
    saved = [json.loads((tmp_path / "winner" / f"seed{s}" / "item.json").read_text()) for s in (0, 1)]
    assert [(i["seed"], i["id"]) for i in saved] == [(0, "001-t-two-seed0"), (1, "001-t-two-seed1")]
    # the summary takes the winner's folder and sees its two seeds
    summary = steps.summarize([tmp_path / "winner"])
    assert summary["n_retrains"] == 2 and summary["winners"][0]["seeds"] == [0, 1]
