"""The results page: verdicts follow the measured numbers, and the page is generated from a real (tiny) run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import bench_module

results_page = bench_module("results_page")


def _run(model_loss: float, p_value: float, *, bar_loss: float = 0.70, seed_statistic: float | None = None,
         seed: int = 0, noise: float = 0.3, rolling: bool = True) -> dict:
    """One retrain's evaluation record in :func:`hpo_lib.pipeline.retrain.evaluate_test`'s shape (direction target),
    with per-day losses of the given means (``noise`` their day-to-day spread) and, by default, a rolling part."""
    statistic = seed_statistic if seed_statistic is not None else (-1.0 if model_loss < bar_loss else 1.0)
    rng = np.random.default_rng(seed)
    days = bar_loss + noise * rng.standard_normal(700)
    losses = {"model": (days + (model_loss - bar_loss)).tolist(),
              "baselines": {"train_prior": days.tolist(), "always_up": (days + 2.4).tolist()}}
    record = {"ranking_metric": "loss", "model": {"loss": model_loss, "acc": 0.52, "dir_acc": 0.52},
              "baselines": {"train_prior": {"loss": bar_loss, "acc": 0.54, "dir_acc": 0.54},
                            "always_up": {"loss": 3.1, "acc": 0.54, "dir_acc": 0.54}},
              "bar": "train_prior", "beats_bar": model_loss < bar_loss,
              "dm": {"against": "train_prior", "loss": "loss", "statistic": statistic, "p_value": p_value},
              "test_period": ["2016-01-04", "2018-12-28"], "n_test": 700, "val_test_gap": 0.01,
              "losses": losses, "inference": {}, "run": {"seed": seed, "epochs": 3, "kept_epoch": 2}}
    if rolling:
        record["rolling"] = {k: v for k, v in record.items() if k != "run"} | {"n_origins": 11, "origins": []}
    return record


def _cell(runs: list[dict]) -> dict:
    return {"dataset": "sp500", "target": "direction", "data": "sample:sp500", "trials": 8, "completed": 6,
            "pruned": 2, "failed": 0, "epochs_run": 50, "winner": {"number": 3, "val_loss": 0.69, "params": {}},
            "runs": runs}


@pytest.mark.parametrize("losses, noise, rolling, verdict", [
    ([0.71, 0.72, 0.71], 0.3, True, "no: the tuned model does not beat"),  # worse than the bar
    ([0.69, 0.69, 0.69], 0.3, True, "no: on the rolling-origin forecasts SPA p = "),  # a little better, noisy
    ([0.60, 0.61, 0.62], 0.05, True, "yes: on the rolling-origin forecasts SPA p = "),  # better on nearly every day
    ([0.60, 0.61, 0.62], 0.05, False, "not established: no rolling-origin test was run"),  # no rolling test
])
def test_verdict_needs_spa_to_reject_on_the_rolling_origin_forecasts(losses, noise, rolling, verdict):
    runs = [_run(loss, 0.5, seed=i, noise=noise, rolling=rolling) for i, loss in enumerate(losses)]
    summary = results_page.summarise(_cell(runs))
    # the verdict is decided by the search-aware test in the cell, against the bar chosen on test
    assert summary["verdict"].startswith(verdict) and summary["bar"] == "train_prior"
    assert summary["beats_baselines"] == verdict.startswith("yes")
    # SPA names the seeds it tested and the configurations tried
    spa = summary["search"]["single"]["spa"]
    assert spa["n_models"] == 3 and spa["n_configurations"] == 8


def test_direction_cell_compares_cross_entropy_with_ln2_and_the_train_prior():
    text = "\n".join(results_page.render_cell(_cell([_run(0.6950, 0.5), _run(0.6940, 0.6), _run(0.6960, 0.4)])))
    # the sanity line names chance (ln 2) and says the model is not below it
    assert f"ln 2 = {math.log(2):.4f}" in text and "not below it" in text and "0.7000 for the constant" in text
    # the seed spread and every seed's DM p-value with the side it favours are on the page
    assert "0.6940 .. 0.6960" in text and "0.500 (model better)" in text


def test_page_says_plainly_where_no_model_beats_the_baselines():
    page = results_page.render([_cell([_run(0.71, 0.01), _run(0.72, 0.01)])], results_page.Config(), [],
                               {"date": "today", "machine": "here", "wall": "1 s"})
    # the summary table and the plain statement both appear, and missing benchmarks are reported, not invented
    assert "no tuned model beats the baselines on sample:sp500 direction" in page
    # every figure's row is there, with the reason where a figure is missing
    assert "| SPA / Reality Check p over the seeds |" in page and "| Model Confidence Set at 10 %" in page
    assert "No benchmark outputs were found" in page


def test_read_benches_keeps_the_bench_order_and_skips_missing_or_empty_files(tmp_path):
    (tmp_path / "samplers.txt").write_text("table\nheadline: b\n")
    (tmp_path / "early_stopping.txt").write_text("table\nheadline: a\n")
    (tmp_path / "trial_loop.txt").write_text("")
    # early_stopping comes before samplers (the page's order); the empty file is left out
    assert [name for name, _, _ in results_page.read_benches(tmp_path)] == ["early_stopping", "samplers"]


@pytest.mark.e2e
def test_generator_tunes_retrains_and_writes_the_page_from_measurements(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "samplers.txt").write_text("# samplers\nheadline: measured elsewhere\n")
    out, saved = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = ["--out", str(out), "--json", str(saved), "--bench-dir", str(tmp_path / "bench"), "--datasets", "sp500",
            "--targets", "direction", "--start", "2013-01-01", "--trials", "2", "--epochs", "1", "--seeds", "2",
            "--label", "test run"]
    # the generator tunes, retrains and writes the page, exit code 0
    assert results_page.main(argv) == 0
    page, record = out.read_text(), json.loads(saved.read_text())
    cell = record["cells"][0]
    # two trials were run by the engine and the winner retrained with two seeds
    assert cell["trials"] == 2 and len(cell["runs"]) == 2
    # the page carries the measured test loss of the model and of every baseline, the label and the bench output
    mean = sum(r["model"]["loss"] for r in cell["runs"]) / 2
    assert f"{mean:.4f}" in page and "| always_up |" in page and "| persistence |" in page
    assert "test run" in page and "headline: measured elsewhere" in page and "ln 2" in page
    # re-rendering from the saved measurements gives the same page
    assert results_page.main([*argv[:6], "--reuse"]) == 0 and out.read_text() == page
