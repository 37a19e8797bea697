"""The metric contract: what hpo_lib.metrics names is what scoring returns, what a real trial prints, what the
manifests collect, and what the leaderboard and the Pareto front read."""

from __future__ import annotations

import io

import pytest

from hpo_lib import data, metrics, trial
from hpo_lib.data import baselines, scoring
from hpo_lib.katib import contract, manifests, space
from tests.conftest import ar1_returns, prices_from_returns

FAST = ["--seq-len=10", "--split-window=10", "--hidden-size=8", "--num-layers=1", "--threads=2"]
# on some target's epoch line, with several replicas
PRINTED = set().union(*(metrics.epoch_metrics(target, robust=True) for target in metrics.SCORES))


def pairs(line: str) -> dict[str, str]:
    """Every ``name=value`` token of a Katib line after its timestamp (and prefix), not only the expected ones."""
    return dict(token.split("=", 1) for token in line.split()[1:] if "=" in token)


# ----------------------------------------------------------------------------------------------- scores
@pytest.mark.parametrize("target", sorted(metrics.SCORES))
def test_score_returns_exactly_the_scores_named_for_its_target(target):
    ds = data.prepare(prices_from_returns(ar1_returns(400, seed=4)), target=target, window=5, split_window=5)
    # the metric table and the scorer name the same metrics, for the model and for every naive baseline alike
    for name, forecast in baselines.naive_forecasts(ds, "val").items():
        assert set(scoring.score(ds, "val", forecast)) == set(metrics.SCORES[target]), name


def test_every_target_is_scored_and_every_score_has_its_loss():
    # the table covers the dataset's targets, and each target is ranked by a metric it scores
    assert set(metrics.SCORES) == set(data.TARGETS)
    assert all("loss" in names and "dir_acc" in names for names in metrics.SCORES.values())


# ----------------------------------------------------------------------------------------------- a real trial
@pytest.fixture(scope="module", params=["return", "direction"])
def trial_output(request, tmp_path_factory) -> tuple[str, list[str]]:
    """stdout of one in-process ``hpo trial`` of 2 epochs for a target, split in lines."""
    target = request.param
    out, err = io.StringIO(), io.StringIO()
    args = trial.parse_args(["--model=mlp", "--data=sample:nasdaq", "--epochs=2", "--patience=5", f"--target={target}",
                             *FAST, f"--output-dir={tmp_path_factory.mktemp(f'trial-{target}')}"])
    trial.run(args, out=out, err=err)
    return target, out.getvalue().splitlines()


def test_a_real_epoch_line_carries_exactly_the_epoch_metrics(trial_output):
    target, lines = trial_output
    epoch_lines = [line for line in lines if " epoch=" in line]
    # two epochs, two lines, then the final line: nothing else on stdout
    assert len(epoch_lines) == 2 and len(lines) == 3
    for line in epoch_lines:
        # every name on the line is in the contract and every name of the contract is on the line
        assert set(pairs(line)) == metrics.epoch_metrics(target)
        # ... and Katib's StdOut filter reads each of them back
        _, found = contract.parse_metrics_line(line, metrics.epoch_metrics(target))
        assert set(found) == metrics.epoch_metrics(target)


def test_a_real_final_line_carries_exactly_the_final_metrics(trial_output):
    _, lines = trial_output
    # the last line is "<stamp> final ..." with the FINAL names, no more and no fewer
    assert lines[-1].split()[1] == metrics.FINAL_PREFIX
    assert set(pairs(lines[-1])) == set(metrics.FINAL)


# ----------------------------------------------------------------------------------------------- manifests
def test_the_objective_and_the_collected_metrics_are_printed_every_epoch():
    # the shipped Experiments train on the return target with several replicas (--folds, --seeds): its epoch line
    # prints what they minimize and collect
    assert metrics.OBJECTIVE in metrics.epoch_metrics("return")
    assert set(metrics.COLLECTED) <= metrics.epoch_metrics("return", robust=True)
    # ... and the spread metrics only exist with several replicas
    assert not set(metrics.ROBUST) & metrics.epoch_metrics("return")
    # the objective's naive bar is printed too, and the objective is not collected twice
    assert metrics.BASELINE_OBJECTIVE in metrics.epoch_metrics("return") and metrics.OBJECTIVE not in metrics.COLLECTED


@pytest.mark.parametrize("family", space.FAMILIES)
def test_rendered_manifests_collect_exactly_the_metric_table(family):
    doc = manifests.experiment(family)
    objective = doc["spec"]["objective"]
    # the objective, and every collected metric once, in the table's order
    assert objective["objectiveMetricName"] == metrics.OBJECTIVE and objective["type"] == "minimize"
    assert objective["additionalMetricNames"] == list(metrics.COLLECTED)
    # each with the table's extraction strategy, the objective with min
    strategies = {s["name"]: s["value"] for s in objective["metricStrategies"]}
    assert len(strategies) == len(objective["metricStrategies"])
    assert strategies == {metrics.OBJECTIVE: "min", **metrics.COLLECTED}
    # and the trial they run is on the return target, whose epoch line prints them all
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert "--target=return" in container["args"]


# ----------------------------------------------------------------------------------------------- results
def test_leaderboard_and_pareto_metrics_are_printed_metrics():
    # every leaderboard column is printed on the epoch line of some target (val_acc on direction, val_rmse on return)
    assert set(metrics.LEADERBOARD) <= PRINTED, sorted(set(metrics.LEADERBOARD) - PRINTED)
    # the Pareto axes are printed for every target: a winner can be traded off whatever it forecasts
    for target in metrics.SCORES:
        assert set(metrics.PARETO) <= metrics.epoch_metrics(target), target
