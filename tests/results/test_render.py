"""Results as people read them: the leaderboard, the Katib-shaped export and the trial records of local studies."""

from __future__ import annotations

import json

import optuna
import pytest

from hpo_lib import engine
from hpo_lib.engine import recovery
from hpo_lib.results import render
from tests.conftest import manifest, multi_manifest, options


@pytest.fixture
def scripted_study(tmp_path) -> optuna.Study:
    """Levels 1, 3, 5 under medianstop (2 trials, start step 2): two succeed, the third stops after 2 of 4 epochs."""
    return engine.run(manifest(tmp_path), options(tmp_path, curves="1,3,5"))


def test_export_has_katib_trial_shape(scripted_study, tmp_path):
    json_path, csv_path = render.export(scripted_study, tmp_path / "export")
    records = json.loads(json_path.read_text())
    # like Trial CRs: parameterAssignments and observation.metrics with string min/max/latest
    assert [r["condition"] for r in records] == ["Succeeded", "Succeeded", "EarlyStopped"]
    assert records[1]["observation"]["metrics"][0] == {"name": "val_loss", "min": "3.0", "max": "3.0",
                                                       "latest": "3.0"}
    assert records[0]["parameterAssignments"][0]["name"] == "x"
    # the CSV has a row per trial and a column per parameter and metric
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("name,condition,epochs_run,x,") and len(rows) == 4


def test_leaderboard_ranks_succeeded_trials_and_counts_the_saved_epochs(scripted_study):
    board = render.leaderboard(scripted_study, k=1)
    # the counts by state, then only the top k by the objective
    assert board.splitlines()[0] == "local.scripted: 2 succeeded, 1 early-stopped, 0 failed"
    assert "top 1 by the objective" in board and "#1 trial 0: objective 1," in board and "#2" not in board
    # epochs run 4 + 4 + 2; the stopped trial would have run 2 more of its --epochs=4
    assert render.compute_summary(scripted_study) == {"epochs_run": 10.0, "epochs_saved": 2.0,
                                                      "compute_saved_pct": pytest.approx(100 * 2 / 12)}
    assert "epochs run: 10; early stopping saved 2 epochs (17% of the planned compute)" in board


def test_leaderboard_of_a_multi_objective_study_lists_the_pareto_front(tmp_path):
    study = engine.run(multi_manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    board = render.leaderboard(study)
    # the front, not a top k, with every objective of each trial on it, first objective first
    assert "Pareto front (2 trials)" in board and "by the objective" not in board
    assert board.index("objective (1, 2)") < board.index("objective (3, 6)")


def test_trial_records_say_why_an_interrupted_trial_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(recovery, "GRACE_S", 1.0)  # the unstamped orphan counts as lost after 1 s, not a minute
    engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path, curves="1"))
    killed = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{tmp_path / 'state' / 'studies.db'}")
    killed.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # a trial a kill -9 left RUNNING
    resumed = engine.run(manifest(tmp_path, maxTrialCount=3), options(tmp_path, curves="1"))
    records = render.trial_records(resumed)
    # the orphan the engine failed on resume says it was killed; the trials that ran have no reason, and the
    # interrupted one took no budget: three succeeded trials beside it
    assert [(r["condition"], r["failReason"]) for r in records] == [
        ("Succeeded", ""), ("Failed", "interrupted: the engine running it was killed"), ("Succeeded", ""),
        ("Succeeded", "")]


def _categorical_study() -> optuna.Study:
    """Three succeeded trials of a Katib categorical whose choices are numbers (as Katib hands them: text)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import create_trial

    study = optuna.create_study(study_name="local.cat")
    dists = {"hidden-size": CategoricalDistribution(["16", "128", "64"]), "lr": FloatDistribution(1e-4, 1e-1),
             "act": CategoricalDistribution(["relu", "tanh"])}
    for value, (hidden, act) in zip([0.5, 0.4, 0.6], [("16", "relu"), ("128", "tanh"), ("64", "relu")]):
        study.add_trial(create_trial(value=value, params={"hidden-size": hidden, "lr": 0.01, "act": act},
                                     distributions=dists,
                                     user_attrs={"observation": {"baseline_val_loss": {"min": 0.4, "max": 0.4,
                                                                                       "latest": 0.4}}}))
    return study


def test_trials_frame_types_numeric_categoricals_and_the_result_has_best_params(tmp_path):
    from hpo_lib import api

    frame = api.trials_frame(_categorical_study())
    # "128" < "16" as text; as numbers the column sorts as sizes do, and text choices stay text
    assert str(frame["param_hidden-size"].dtype) == "int64" and frame["param_act"].tolist() == ["relu", "tanh", "relu"]
    assert frame.sort_values("param_hidden-size")["param_hidden-size"].tolist() == [16, 64, 128]
    result = api.TuneResult(study=_categorical_study(), manifest=tmp_path / "m.yaml", state_dir=tmp_path,
                            export_dir=tmp_path)
    # the best trial's parameters in one step, typed the same way
    assert result.best_params == {"hidden-size": 128, "lr": 0.01, "act": "tanh"}


def test_the_leaderboard_says_how_far_each_trial_is_from_the_baseline_and_flags_the_ones_on_it():
    board = render.leaderboard(_categorical_study())
    # 0.4 is the baseline's own loss: flagged as what a constant forecast scores; 0.5 is 25% worse than it
    assert "#1 trial 1: objective 0.4 vs best naive baseline 0.4 (+0.00%; ≈ baseline)" in board
    assert "#2 trial 0: objective 0.5 vs best naive baseline 0.4 (+25.00%)," in board


def test_the_leaderboard_prints_parameters_at_4_digits_within_80_columns():
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    study = optuna.create_study(study_name="local.long")
    names = [f"parameter-{i}" for i in range(8)]
    study.add_trial(create_trial(value=0.5, params={n: 0.0053063715752208465 for n in names},
                                 distributions={n: FloatDistribution(1e-4, 1e-1) for n in names}))
    board = render.leaderboard(study)
    # full precision is the export's; a person reads 4 digits, and no line runs past a terminal's 80 columns
    assert "parameter-0=0.005306 " in board and "0.00530637" not in board
    assert max(len(line) for line in board.splitlines()) <= 80
