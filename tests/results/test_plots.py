"""Plots of a local study: one PNG per plot the study supports, and the offline report page."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpo_lib import engine
from hpo_lib.results import plots
from tests.conftest import multi_manifest, options

BASELINE = 0.9


def tuned_study(n: int = 8, storage: str | None = None) -> optuna.Study:
    """A finished single-objective study shaped as the engine leaves it: per-epoch values, Katib observations with
    the best naive baseline, five varied parameters (one categorical, one on a log scale) and an early-stopped trial."""
    study = optuna.create_study(study_name="local.lstm-tiny", storage=storage)
    study.set_metric_names(["val_loss"])
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "dropout": FloatDistribution(0.0, 0.6),
             "hidden-size": IntDistribution(8, 128), "optimizer": CategoricalDistribution(["adam", "sgd"]),
             "seq-len": IntDistribution(5, 60)}
    for i in range(n):
        curve = [1.2 - 0.05 * e - 0.01 * i for e in range(6)]
        state = TrialState.PRUNED if i == 3 else TrialState.COMPLETE
        curve = curve[:2] if state == TrialState.PRUNED else curve
        study.add_trial(create_trial(
            state=state, value=curve[-1] if state == TrialState.COMPLETE else None,
            params={"lr": 10 ** (-4 + 3 * i / n), "dropout": 0.05 * i, "hidden-size": 8 + 7 * i,
                    "optimizer": ["adam", "sgd"][i % 2], "seq-len": 5 + 3 * i},
            distributions=dists, intermediate_values=dict(enumerate(curve)),
            user_attrs={"epochs_run": len(curve), "argv": ["--epochs=6"],
                        "observation": {"val_loss": {"min": min(curve), "max": max(curve), "latest": curve[-1]},
                                        "baseline_val_loss": {"min": BASELINE, "max": BASELINE, "latest": BASELINE},
                                        "val_rmse": {"min": 1.0, "max": 1.1, "latest": 1.0}}}))
    return study


def test_report_of_a_multi_objective_study_has_a_pareto_front(tmp_path):
    study = engine.run(multi_manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    written = plots.write_report(study, tmp_path / "r", objective_name="val_loss", html_page=False)
    # the front is drawn as a PNG; no page was asked for
    assert "pareto_front.png" in {p.name for p in written}
    assert "report.html" not in {p.name for p in written} and all(p.stat().st_size > 1000 for p in written)


def test_a_study_without_a_succeeded_trial_is_refused_not_drawn_empty(tmp_path):
    study = optuna.create_study(study_name="empty")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    # nothing to plot: one ValueError naming the study, and no file written
    with pytest.raises(ValueError, match="study empty has no succeeded trial yet"):
        plots.write_report(study, tmp_path / "r")
    assert list((tmp_path / "r").iterdir()) == []


def test_the_baseline_is_the_best_trials_and_absent_without_one():
    study = tuned_study()
    # the value the best trial printed beside its objective
    assert plots.baseline_value(study, "val_loss") == BASELINE
    # an objective without a baseline of its own, or a study of another shape, has none
    assert plots.baseline_value(study, "train_time_s") is None


def test_the_report_draws_the_baseline_names_its_axes_and_tables_the_leaderboard(tmp_path):
    written = plots.write_report(tuned_study(), tmp_path / "r", objective_name="val_loss")
    # 7 succeeded trials: too few for importances, and the page says so instead of drawing noise
    assert {p.name for p in written} == {"history.png", "learning_curves.png", "slice.png", "report.html"}
    page = (tmp_path / "r" / "report.html").read_text()
    # the baseline is a named trace on the history and on the learning curves
    assert page.count('"name":"best naive baseline (0.9)"') == 2
    # learning curves are labelled in the metric's own words, with epochs counted from 1 and a legend
    assert '"title":{"text":"epoch"}' in page and '"title":{"text":"val_loss"}' in page
    assert "Intermediate Value" not in page and '"showlegend":true' in page
    # the leaderboard is a table: a header with the objective's name, parameters as columns, 7 ranked rows
    table = re.search(r"<table class='leaderboard'>.*?</table>", page).group(0)
    assert "<th>val_loss</th><th>best naive baseline</th><th>vs baseline %</th>" in table
    assert "<th>hidden-size</th>" in table
    # each trial against the baseline in percent; trial 5 scores the baseline exactly and is flagged
    assert "<td>0.88</td><td>0.9</td><td>-2.22%</td><td></td>" in table
    assert "<td>0.9</td><td>0.9</td><td>+0.00%</td><td>≈ baseline</td>" in table
    assert "≈ baseline: 1 of these trials score within 0.5% of the best naive baseline" in page
    assert table.count("<tr>") == 1 + 7 and "<pre>" not in page
    # no plot keeps Optuna's fixed slice width, wider than the page
    assert '"width":1500' not in page and page.count("class='plot'") == 3
    assert "No parameter importances: 7 succeeded trials, and fANOVA needs at least 10" in page


def test_importances_are_drawn_from_enough_trials_and_say_how_many(tmp_path):
    written = plots.write_report(tuned_study(n=12), tmp_path / "r", objective_name="val_loss")
    page = (tmp_path / "r" / "report.html").read_text()
    # 11 succeeded trials: the chart is drawn, titled with the trials it rests on, and no note says otherwise
    assert "importances.png" in {p.name for p in written}
    assert "Parameter importances (fANOVA, 11 trials)" in page and "No parameter importances" not in page


def test_the_slice_png_puts_its_colour_bar_beside_the_panels_not_on_one(tmp_path):
    import matplotlib.image

    plots.write_report(tuned_study(), tmp_path / "r", objective_name="val_loss", html_page=False)
    image = matplotlib.image.imread(tmp_path / "r" / "slice.png")
    height, width = image.shape[:2]
    # five panels on a 3-column grid: two rows, so the image is not one long strip
    assert width / height < 3
