"""Winner selection over Trial CRs shaped like Katib's (tests/fixtures/katib/) and over the engine's export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract
from hpo_lib.katib.experiment import Objective
from hpo_lib.results import winners

FIXTURES = Path(__file__).parents[1] / "fixtures" / "katib"
EXP = "lstm-spy-return"


@pytest.fixture(scope="module")
def trial_list() -> dict:
    return json.loads((FIXTURES / "trials.json").read_text())


@pytest.fixture(scope="module")
def experiment() -> dict:
    return json.loads((FIXTURES / "experiment-succeeded.json").read_text())


@pytest.fixture(scope="module")
def trials(trial_list) -> list[winners.Trial]:
    return winners.parse_trials(trial_list)


def by_name(trials: list[winners.Trial]) -> dict[str, winners.Trial]:
    return {t.name.removeprefix(f"{EXP}-"): t for t in trials}


# ----------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, expected", [
    ("0.3512", 0.3512), ("1e-05", 1e-05), ("unavailable", None), ("", None), ("nan", None), ("inf", None),
    ("-", None), (None, None), (3, 3.0),
])
def test_metric_strings_read_as_katib_stores_them(text, expected):
    assert contract.finite_number(text) == expected


def test_trial_state_follows_katib_conditions(trial_list):
    states = {t.name.removeprefix(f"{EXP}-"): t.condition for t in winners.parse_trials(trial_list)}
    # the early-stopped trial keeps Running=True; EarlyStopped still wins; a trial with only Running=True is running
    assert states == {"7xk2p9qd": "Succeeded", "b4n8s2lm": "Succeeded", "c9v1t6wa": "Succeeded",
                      "d2r5q8zh": "Succeeded", "e6m3w1yc": "Succeeded", "f1h7j4kx": "EarlyStopped",
                      "g8p2d5nv": "Failed", "h5q9k3rb": "MetricsUnavailable", "j3w6c8ft": "Running"}


def test_trial_cr_parsing_reads_parameters_metrics_and_reasons(trials):
    t = by_name(trials)
    # parameters come from spec.parameterAssignments, as strings
    assert t["7xk2p9qd"].params["hidden-size"] == "128" and t["7xk2p9qd"].params["lr"] == "0.000412"
    # every additional metric is read, with min/max/latest as floats
    assert t["7xk2p9qd"].value("val_loss", "min") == 0.3512
    assert t["7xk2p9qd"].value("train_time_s", "latest") == 640.0
    assert t["7xk2p9qd"].value("n_params", "latest") == 302500.0
    # "unavailable" strings become missing values
    assert t["e6m3w1yc"].value("model_size_mb", "latest") is None
    assert t["h5q9k3rb"].value("val_loss", "min") is None
    # the failure reason and message come from the True condition
    assert "BackoffLimitExceeded" in t["g8p2d5nv"].reason and "backoff limit" in t["g8p2d5nv"].reason
    # a trial without status.observation has no metrics
    assert t["g8p2d5nv"].metrics == {}


def test_engine_export_records_parse_like_trial_crs():
    record = {"name": "lstm-tiny-0003", "condition": "Failed", "epochsRun": 2, "failReason": "exited with code 1",
              "parameterAssignments": [{"name": "lr", "value": "0.001"}],
              "observation": {"metrics": [{"name": "val_loss", "min": "0.4", "max": "0.5", "latest": "0.45"}]}}
    parsed = winners.parse_trial(record)
    # the export's own fields map onto the same Trial as a CR's
    assert (parsed.name, parsed.condition, parsed.reason, parsed.epochs_run) == (
        "lstm-tiny-0003", "Failed", "exited with code 1", 2)
    assert parsed.params == {"lr": "0.001"} and parsed.value("val_loss", "latest") == 0.45


def test_anything_else_is_refused_by_name():
    with pytest.raises(ConfigError, match="not a Katib Trial or an engine export record"):
        winners.parse_trial({"foo": 1})


def test_criteria_come_from_the_experiments_metric_strategies(experiment):
    objective, axes = winners.criteria(experiment)
    # val_loss uses its declared "min"; the extra axes use "latest" as declared in our manifests
    assert objective == Objective("val_loss", "minimize", "min")
    assert axes == [Objective("train_time_s", "minimize", "latest"),
                    Objective("model_size_mb", "minimize", "latest")]


# ----------------------------------------------------------------------------------------------- Pareto
@pytest.mark.parametrize("points, front", [
    ([(1.0, 2.0)], [0]),
    ([(1.0, 2.0), (2.0, 1.0)], [0, 1]),  # a trade-off: both stay
    ([(1.0, 1.0), (2.0, 2.0)], [0]),  # dominated on both
    ([(1.0, 1.0), (1.0, 2.0)], [0]),  # equal on one, worse on the other: dominated
    ([(1.0, 1.0), (1.0, 1.0)], [0, 1]),  # duplicates do not dominate each other
    ([(3.0, 1.0, 1.0), (1.0, 3.0, 1.0), (1.0, 1.0, 3.0), (2.0, 2.0, 2.0)], [0, 1, 2, 3]),
])
def test_pareto_front_keeps_exactly_the_non_dominated_points(points, front):
    assert winners.pareto_front(points) == front


# ----------------------------------------------------------------------------------------------- selection
def names(selection: winners.Selection) -> list[str]:
    return [w.trial.name.removeprefix(f"{EXP}-") for w in selection.winners]


def test_top_k_plus_pareto_front_skipping_unusable_trials(trials, experiment):
    objective, axes = winners.criteria(experiment)
    selection = winners.select(trials, objective, k=2, axes=axes)
    # top-2 by val_loss, then the Pareto-only trial (fast and small), in objective order
    assert names(selection) == ["7xk2p9qd", "c9v1t6wa", "b4n8s2lm"]
    assert [(w.rank, w.top_k, w.pareto) for w in selection.winners] == [(1, True, True), (2, True, True),
                                                                         (3, False, True)]
    # the accounting a reader needs: 9 trials, 5 usable, and why the others were left out
    assert (selection.n_trials, selection.n_eligible) == (9, 5)
    assert {k: [n.removeprefix(f"{EXP}-") for n in v] for k, v in selection.skipped.items()} == {
        "early stopped": ["f1h7j4kx"], "failed": ["g8p2d5nv"], "metrics unavailable": ["h5q9k3rb"],
        "not finished": ["j3w6c8ft"]}
    # the trial without model_size_mb can rank but not be on the front, and a note says so
    assert any("lack train_time_s or model_size_mb" in n for n in selection.notes)


def multi_objective(experiment: dict, objectives: str) -> dict:
    """The fixture's Experiment as katib-hpo-multiobjective runs it, declaring ``objectives``."""
    doc = json.loads(json.dumps(experiment))
    doc["spec"]["algorithm"] = {"algorithmName": "katib-hpo-multiobjective", "algorithmSettings": [
        {"name": "objectives", "value": objectives}, {"name": "random_state", "value": "42"}]}
    return doc


def test_a_multi_objective_experiments_front_is_over_its_declared_objectives(experiment):
    doc = multi_objective(experiment, "val_loss:minimize, val_dir_acc:maximize")
    objective, axes = winners.criteria(doc)
    # the axes the suggestion service searched, in their directions: not the default time and size
    assert objective.metric == "val_loss" and [(a.metric, a.direction, a.strategy) for a in axes] == \
        [("val_dir_acc", "maximize", "max")]
    made = [winners.Trial(name, "Succeeded", {}, {"val_loss": {"min": loss}, "val_dir_acc": {"max": acc}})
            for name, loss, acc in [("a", 0.30, 0.50), ("b", 0.32, 0.58), ("c", 0.33, 0.55), ("d", 0.35, 0.60)]]
    selection = winners.select(made, objective, k=1, axes=axes)
    # c is dominated (b has lower loss and higher accuracy); minimising accuracy instead would keep only a
    assert [(w.trial.name, w.pareto) for w in selection.winners] == [("a", True), ("b", True), ("d", True)]
    assert all(set(w.axes) == {"val_dir_acc"} for w in selection.winners)


def test_the_pareto_manifests_front_is_loss_time_and_size():
    import yaml

    doc = yaml.safe_load((Path(__file__).parents[2] / "manifests" / "cnn-lstm-pareto-experiment.yaml").read_text())
    objective, axes = winners.criteria(doc)
    assert objective.metric == "val_loss"
    assert [(a.metric, a.direction) for a in axes] == [("train_time_s", "minimize"), ("model_size_mb", "minimize")]


def test_early_stopped_trials_compete_when_asked(trials, experiment):
    objective, axes = winners.criteria(experiment)
    selection = winners.select(trials, objective, k=1, axes=axes, include_early_stopped=True)
    # the early-stopped trial has the best val_loss and is faster and no larger than 7xk2p9qd and c9v1t6wa,
    # so it pushes both off the front; only the fast, small b4n8s2lm stays beside it
    assert names(selection) == ["f1h7j4kx", "b4n8s2lm"]
    assert selection.winners[0].top_k and not selection.winners[1].top_k


def test_k_larger_than_the_usable_trials_takes_them_all_and_says_so(trials, experiment):
    objective, _ = winners.criteria(experiment)
    selection = winners.select(trials, objective, k=50, pareto=False)
    assert len(selection.winners) == 5
    assert "top-k asked for 50 trials but only 5 are usable" in selection.notes[0]


def test_max_winners_keeps_the_best_ranked(trials, experiment):
    objective, axes = winners.criteria(experiment)
    selection = winners.select(trials, objective, k=2, axes=axes, max_winners=2)
    # the Pareto-only winner goes first; the note names it
    assert names(selection) == ["7xk2p9qd", "c9v1t6wa"]
    assert "b4n8s2lm" in selection.notes[-1]


def test_a_maximised_objective_ranks_high_values_first():
    trials = [winners.Trial(f"t{i}", "Succeeded", {}, {"acc": {"min": v, "max": v, "latest": v}})
              for i, v in enumerate([0.51, 0.55, 0.53])]
    selection = winners.select(trials, Objective("acc", "maximize", "max"), k=2)
    assert [w.trial.name for w in selection.winners] == ["t1", "t2"]


def test_zero_succeeded_trials_is_a_clear_error(trial_list, experiment):
    objective, _ = winners.criteria(experiment)
    unusable = [t for t in winners.parse_trials(trial_list) if t.condition != "Succeeded"]
    # every trial is accounted for by reason in the message
    with pytest.raises(winners.NoWinnersError, match=r"no trial succeeded with a usable val_loss among 4 trial\(s\) "
                                                     r"\(1 early stopped, 1 failed, 1 metrics unavailable, "
                                                     r"1 not finished\)"):
        winners.select(unusable, objective)


def test_a_succeeded_trial_without_its_objective_counts_as_metrics_unavailable():
    odd = winners.Trial("odd", "Succeeded", {}, {"val_loss": {"min": None, "max": None, "latest": None}})
    with pytest.raises(winners.NoWinnersError, match="1 metrics unavailable"):
        winners.select([odd], Objective("val_loss"))


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k \\(top-k\\) must be at least 1, got 0"),
    ({"max_winners": -1}, "max_winners must be 0 \\(no cap\\) or more, got -1"),
])
def test_bad_selection_arguments_are_refused(trials, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        winners.select(trials, Objective("val_loss"), **kwargs)
