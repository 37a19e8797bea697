"""Plots of a local study: one PNG per plot the study supports, and the offline report page."""

from __future__ import annotations

import optuna
import pytest

from hpo_lib import engine
from hpo_lib.results import plots
from tests.conftest import multi_manifest, options


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
