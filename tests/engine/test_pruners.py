"""Katib's medianstop as an Optuna pruner, driven through Optuna's ask / report / should_prune / tell."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo_lib.engine.pruners import (
    PRUNERS,
    KatibMedianStopPruner,
    _best_so_far,
    _medianstop_threshold,
    _trial_prefix_mean,
    from_katib_settings,
    make_pruner,
    medianstop_stops,
    medianstop_threshold,
)
from hpo_lib.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_study(pruner: optuna.pruners.BasePruner, direction: str = "minimize") -> optuna.Study:
    return optuna.create_study(direction=direction, pruner=pruner)


def finish(study: optuna.Study, values: list[float], state: TrialState = TrialState.COMPLETE) -> None:
    """One whole trial: report every value (steps 0, 1, ...), then end it in ``state``."""
    trial = study.ask()
    for step, value in enumerate(values):
        trial.report(value, step)
    if state == TrialState.COMPLETE:
        study.tell(trial, values[-1] if values else 0.0)
    else:
        study.tell(trial, state=state)


def prune_reports(study: optuna.Study, values: list[float], trial: optuna.trial.Trial | None = None) -> list[int]:
    """Report ``values`` one by one, never stopping, and list the report numbers where should_prune said True."""
    trial = trial or study.ask()
    pruned_at = []
    for step, value in enumerate(values):
        trial.report(value, step)
        if trial.should_prune():
            pruned_at.append(step + 1)
    return pruned_at


# ------------------------------------------------------------------------------------------------ pure helpers
def test_prefix_mean_uses_first_start_step_values_in_step_order():
    # steps arrive out of order; the first three by step are 1, 2, 3
    assert _trial_prefix_mean({3: 3.0, 1: 1.0, 9: 100.0, 2: 2.0}, 3) == 2.0


def test_prefix_mean_of_a_short_trial_is_the_mean_of_what_it_has():
    # Katib slices the first start_step rows; two rows give their mean
    assert _trial_prefix_mean({0: 1.0, 1: 2.0}, 4) == 1.5
    # zero rows would divide by zero in Katib; here the trial has no mean
    assert _trial_prefix_mean({}, 4) is None


def test_threshold_is_a_mean_not_a_median_and_needs_min_trials():
    # mean of 1, 1, 4 is 2 (the median would be 1)
    assert _medianstop_threshold([1.0, 1.0, 4.0], 3) == 2.0
    # fewer prefix means than min_trials_required: no rule
    assert _medianstop_threshold([1.0, 1.0], 3) is None


@pytest.mark.parametrize("direction, values, best", [
    (StudyDirection.MINIMIZE, [3.0, 1.0, 2.0], 1.0),
    (StudyDirection.MAXIMIZE, [3.0, 1.0, 4.0], 4.0),
    (StudyDirection.MINIMIZE, [2.0, math.nan, 1.0], 1.0),
])
def test_best_so_far_follows_the_direction(direction, values, best):
    # min to minimize, max to maximize; a later NaN is never better
    assert _best_so_far(values, direction) == best


def test_best_so_far_keeps_a_leading_nan_like_the_sidecar():
    # Go's fold: nothing compares better than a NaN first value, so it sticks
    assert math.isnan(_best_so_far([math.nan, 1.0], StudyDirection.MINIMIZE))


# ------------------------------------------------------------------------------------------------ when it checks
@pytest.mark.parametrize("start_step, values, expected", [
    (4, [2.0] * 6, [4]),                        # worse than 1.0 throughout: pruned at the 4th report only
    (4, [2.0] * 3, []),                         # never reaches the 4th report: never checked
    (4, [2.0, 2.0, 2.0, 0.9, 5.0, 5.0], []),    # fine at the check; later, worse reports are never compared
    (4, [0.5, 2.0, 2.0, 2.0, 2.0], []),         # best so far (0.5) is what is compared, not the latest value
    (4, [2.0, 2.0, 1.5, 1.2, 0.1], [4]),        # pruned at the 4th report even though it would recover later
    (4, [1.0, 1.0, 1.0, 1.0, 9.0], []),         # equal to the threshold: GREATER is strict, no prune
    (1, [2.0, 2.0, 2.0], [1]),                  # start_step=1: checked at the first report only
    (2, [2.0, 0.5, 9.0], []),                   # start_step=2: best of the first two (0.5) passes
    (6, [2.0] * 8, [6]),
])
def test_medianstop_checks_once_at_start_step(start_step, values, expected):
    study = make_study(KatibMedianStopPruner(min_trials_required=3, start_step=start_step))
    for _ in range(3):
        finish(study, [1.0] * 8)  # threshold 1.0
    # the report numbers at which should_prune said True
    assert prune_reports(study, values) == expected


def test_should_prune_is_stable_when_called_twice_at_the_same_report():
    study = make_study(KatibMedianStopPruner(3, 2))
    for _ in range(3):
        finish(study, [1.0] * 4)
    trial = study.ask()
    trial.report(2.0, 0)
    trial.report(2.0, 1)
    # same reports, same answer (Optuna's contract for should_prune)
    assert trial.should_prune() and trial.should_prune()


# ------------------------------------------------------------------------------------------------ what it compares to
def test_threshold_is_the_mean_of_prefix_means_not_a_median():
    study = make_study(KatibMedianStopPruner(3, 2))
    # prefix means (first 2 values) 1, 1, 4: mean 2.0, median 1.0; the later values do not enter
    finish(study, [1.0, 1.0, 50.0])
    finish(study, [1.0, 1.0, 50.0])
    finish(study, [5.0, 3.0, 50.0])
    assert KatibMedianStopPruner(3, 2).threshold(study) == 2.0
    # best 1.5 is under the mean (2.0) though over the median (1.0): a median rule would prune, Katib does not
    assert prune_reports(study, [1.5, 1.5, 1.5]) == []
    # best 2.5 is over the mean: pruned at the 2nd report
    assert prune_reports(study, [2.5, 2.5, 2.5]) == [2]


def test_only_completed_trials_count_and_no_rule_before_min_trials():
    study = make_study(KatibMedianStopPruner(3, 2, frozen_rule=False))
    finish(study, [1.0, 1.0])
    finish(study, [1.0, 1.0])
    finish(study, [100.0, 100.0], state=TrialState.PRUNED)
    finish(study, [100.0, 100.0], state=TrialState.FAIL)
    finish(study, [], state=TrialState.COMPLETE)  # completed with no reports: skipped, not a division by zero
    # two usable completed trials (pruned, failed and report-less ignored) < 3: no rule, however bad the trial
    assert prune_reports(study, [50.0, 50.0, 50.0]) == []
    finish(study, [1.0, 1.0])
    # the third completed trial makes the rule: threshold 1.0, untouched by the pruned/failed trials' 100s
    assert prune_reports(study, [1.1, 1.1, 1.1]) == [2]


def test_a_completed_trial_with_fewer_reports_uses_the_mean_of_what_it_has():
    study = make_study(KatibMedianStopPruner(3, 4, frozen_rule=False))
    finish(study, [1.0, 1.0, 1.0, 1.0])
    finish(study, [1.0, 1.0, 1.0, 1.0])
    finish(study, [4.0])  # one report: its prefix mean is 4.0
    # threshold (1 + 1 + 4) / 3 = 2.0
    assert KatibMedianStopPruner(3, 4).threshold(study) == 2.0


@pytest.mark.parametrize("direction, baseline, values, expected", [
    ("minimize", 1.0, [2.0, 2.0, 2.0], [2]),       # best 2.0 > 1.0: pruned
    ("minimize", 1.0, [1.0, 1.0, 5.0], []),        # best 1.0 == 1.0: strictly greater needed
    ("minimize", 1.0, [5.0, 0.9, 5.0], []),        # best 0.9 < 1.0
    ("maximize", 1.0, [0.5, 0.5, 0.5], [2]),       # best 0.5 < 1.0: pruned
    ("maximize", 1.0, [1.0, 1.0, 0.0], []),        # best 1.0 == 1.0: strictly less needed
    ("maximize", 1.0, [0.1, 1.2, 0.1], []),        # best 1.2 > 1.0
])
def test_best_so_far_against_threshold_in_both_directions(direction, baseline, values, expected):
    study = make_study(KatibMedianStopPruner(3, 2), direction=direction)
    for _ in range(3):
        finish(study, [baseline] * 3)
    # the report numbers at which should_prune said True
    assert prune_reports(study, values) == expected


# ------------------------------------------------------------------------------------------------ frozen rule
def _study_with_late_completions(pruner: KatibMedianStopPruner, *,
                                 freeze_at_ask: bool) -> tuple[optuna.Study, list[int]]:
    """Threshold 1.0 when the probe is created; three trials at 10.0 complete before it reports (mean then 5.5)."""
    study = make_study(pruner)
    for _ in range(3):
        finish(study, [1.0, 1.0])
    probe = study.ask()
    if freeze_at_ask:
        pruner.freeze(study, probe)
    for _ in range(3):
        finish(study, [10.0, 10.0])
    return study, prune_reports(study, [2.0, 2.0], trial=probe)


def test_frozen_rule_keeps_the_threshold_from_the_trials_creation():
    pruner = KatibMedianStopPruner(3, 2, frozen_rule=True)
    study, pruned_at = _study_with_late_completions(pruner, freeze_at_ask=True)
    # frozen at ask(): 2.0 > 1.0, pruned, although the current threshold 5.5 would let it run
    assert pruned_at == [2]
    assert pruner.threshold(study) == 5.5


def test_unfrozen_rule_uses_the_threshold_at_the_check():
    pruner = KatibMedianStopPruner(3, 2, frozen_rule=False)
    _, pruned_at = _study_with_late_completions(pruner, freeze_at_ask=True)
    # recomputed at the check: 2.0 < 5.5, not pruned (freeze() stores nothing when frozen_rule=False)
    assert pruned_at == []


def test_without_explicit_freeze_the_rule_freezes_at_the_first_prune_call():
    pruner = KatibMedianStopPruner(3, 2)
    study = make_study(pruner)
    for _ in range(3):
        finish(study, [1.0, 1.0])
    probe = study.ask()
    probe.report(2.0, 0)
    # first should_prune (report 1 of 2) freezes threshold 1.0 and does not prune
    assert not probe.should_prune()
    for _ in range(3):
        finish(study, [10.0, 10.0])
    probe.report(2.0, 1)
    # checked against the frozen 1.0, not the current 5.5
    assert probe.should_prune()
    # not frozen before its own first should_prune, a later trial gets the current 5.5 and survives 2.0
    assert prune_reports(study, [2.0, 2.0]) == []


def test_a_trial_created_before_any_rule_is_never_pruned_with_frozen_rule():
    pruner = KatibMedianStopPruner(3, 2)
    study = make_study(pruner)
    finish(study, [1.0, 1.0])
    early = study.ask()
    # frozen with no rule (one completed trial of three needed)
    assert pruner.freeze(study, early) is None
    finish(study, [1.0, 1.0])
    finish(study, [1.0, 1.0])
    # the rule exists now, yet the early trial keeps "no rule", as on Katib
    assert prune_reports(study, [9.0, 9.0], trial=early) == []
    assert prune_reports(study, [9.0, 9.0]) == [2]


# ---------------------------------------------------------------------------------------- vs Optuna's MedianPruner
def test_optuna_median_and_katib_medianstop_decide_differently():
    # Completed trials' loss falls 1.0, 0.8, 0.6, 0.4. Katib's bar is the mean of the first 4 values (0.7);
    # Optuna's is the median of the others at the same step (0.4 at the 4th report). A trial at 0.5 after four
    # reports clears Katib's looser bar but not Optuna's. Then, at report 5, Optuna checks again; Katib never does.
    completed = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1]
    probe = [1.0, 0.8, 0.6, 0.5, 0.5]
    katib = make_study(make_pruner("medianstop", min_trials_required=3, start_step=4))
    optuna_median = make_study(make_pruner("optuna-median", min_trials_required=3, start_step=4))
    for study in (katib, optuna_median):
        for _ in range(3):
            finish(study, completed)
    # Katib: best 0.5 is not greater than 0.7
    assert prune_reports(katib, probe) == []
    # Optuna: best 0.5 > median 0.4 at the 4th report (step 3) and > 0.2 at the 5th
    assert prune_reports(optuna_median, probe) == [4, 5]


def test_optuna_median_waits_for_start_step_and_min_trials():
    study = make_study(make_pruner("optuna-median", min_trials_required=3, start_step=4))
    for _ in range(2):
        finish(study, [1.0] * 5)
    # two completed trials < n_startup_trials=3: no pruning
    assert prune_reports(study, [9.0] * 5) == []
    finish(study, [1.0] * 5)
    # with three, warmup start_step-1=3 steps: first check at the 4th report
    assert prune_reports(study, [9.0] * 5) == [4, 5]


# ------------------------------------------------------------------------------------------------ pruner vs curve rule
# One set of scripted objective curves, run one trial after another. The single-objective engine feeds each value to
# KatibMedianStopPruner (trial.report, then should_prune); the multi-objective engine, which has no intermediate
# values, freezes medianstop_threshold over the completed curves at each trial's creation and asks medianstop_stops
# after each value. Both must stop the same trials at the same report.
CURVES = [
    [1.0, 1.0, 0.5, 0.5],
    [3.0, 3.0, 3.0, 3.0],
    [5.0, 2.5, 1.0, 1.0],
    [5.0, 2.0, 9.0, 9.0],  # minimize, (2, 2): best 2.0 equals the threshold 2.0 at its check: not stopped
    [2.7, 2.7, 0.1, 0.1],  # minimize, (2, 2): 2.7 over the mean 2.5 of 1, 3, 3.5, under their median 3: stopped
    [1.0, 1.0, 9.0, 9.0],  # bad only after the check
    [4.0, 4.0, 4.0, 4.0],
    [9.0],  # ends before its check: never stopped, however bad
]


def stops_by_pruner(curves, min_trials, start_step, direction) -> dict[int, int]:
    """{trial: report number} where KatibMedianStopPruner stopped it, trials run in order as the engine runs them."""
    pruner = KatibMedianStopPruner(min_trials, start_step)
    study = make_study(pruner, direction=direction)
    stopped = {}
    for number, curve in enumerate(curves):
        trial = study.ask()
        pruner.freeze(study, trial)  # the engine freezes the rule right after ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                stopped[number] = step + 1
                break
        if number in stopped:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
    return stopped


def stops_by_curve_rule(curves, min_trials, start_step, direction) -> dict[int, int]:
    """The same, by the multi-objective path: threshold frozen at creation from completed curves, checked per value."""
    direction = StudyDirection.MINIMIZE if direction == "minimize" else StudyDirection.MAXIMIZE
    completed, stopped = [], {}
    for number, curve in enumerate(curves):
        threshold = medianstop_threshold(completed, min_trials, start_step)
        for reports in range(1, len(curve) + 1):
            if medianstop_stops(curve[:reports], threshold, start_step, direction):
                stopped[number] = reports
                break
        if number not in stopped:
            completed.append(curve)
    return stopped


@pytest.mark.parametrize("min_trials, start_step, direction, expected", [
    # no rule for trials 0-1; trials 2 (best 2.5 > 2.0), 4 (2.7 > 2.5) and 6 (4.0 > 2.125) stop at report 2
    (2, 2, "minimize", {2: 2, 4: 2, 6: 2}),
    # trials 4 (2.4 < 2.81) and 5 (1.0, the pruned trial 4 not counted) stop at report 2
    (2, 2, "maximize", {4: 2, 5: 2}),
    # no rule for trials 0-2; only trial 6 (best 4.0 > 2.92) is worse at its 3rd report
    (3, 3, "minimize", {6: 3}),
])
def test_pruner_and_curve_rule_stop_the_same_trials_at_the_same_report(min_trials, start_step, direction, expected):
    by_pruner = stops_by_pruner(CURVES, min_trials, start_step, direction)
    by_curves = stops_by_curve_rule(CURVES, min_trials, start_step, direction)
    # the Optuna pruner stops the trials Katib's rule stops, at the report it checks
    assert by_pruner == expected
    # the multi-objective curve rule stops exactly the same trials at the same reports
    assert by_curves == by_pruner


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, message", [
    ({"min_trials_required": 0}, "min_trials_required must be an integer >= 1, got 0"),
    ({"min_trials_required": 2.5}, "min_trials_required must be an integer >= 1, got 2.5"),
    ({"min_trials_required": True}, "min_trials_required must be an integer >= 1, got True"),
    ({"start_step": 0}, "start_step must be an integer >= 1, got 0"),
    ({"start_step": "4"}, "start_step must be an integer >= 1, got '4'"),
    ({"frozen_rule": 1}, "frozen_rule must be True or False, got 1"),
])
def test_constructor_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KatibMedianStopPruner(**kwargs)


def test_defaults_are_katibs():
    pruner = KatibMedianStopPruner()
    # Katib's MedianStopService defaults, and frozen rules
    assert (pruner.min_trials_required, pruner.start_step, pruner.frozen_rule) == (3, 4, True)


def test_multi_objective_study_is_refused():
    pruner = KatibMedianStopPruner()
    study = optuna.create_study(directions=["minimize", "maximize"], pruner=pruner)
    trial = study.ask()
    with pytest.raises(ValueError, match="single-objective study, got 2 directions"):
        pruner.freeze(study, trial)
    with pytest.raises(ValueError, match="single-objective study"):
        pruner.prune(study, study.trials[0])


def test_from_katib_settings_reads_an_experiments_early_stopping():
    pruner = from_katib_settings({"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "5"}, {"name": "start_step", "value": "2"},
        {"name": "start_step", "value": "6"}]})
    # string values parsed; a repeated setting keeps its last value, as in Katib's service
    assert (pruner.min_trials_required, pruner.start_step, pruner.frozen_rule) == (5, 6, True)
    # no settings: Katib's defaults
    assert from_katib_settings({"algorithmName": "medianstop"}).start_step == 4
    # no earlyStopping: nothing is pruned
    assert isinstance(from_katib_settings(None), NopPruner)
    assert from_katib_settings({"algorithmName": "medianstop"}, frozen_rule=False).frozen_rule is False


@pytest.mark.parametrize("spec, message", [
    ({"algorithmName": "hyperband"}, "unknown early stopping algorithm name 'hyperband'"),
    ({}, "unknown early stopping algorithm name None"),
    ({"algorithmName": "medianstop", "algorithmSettings": [{"name": "min_trials", "value": "3"}]},
     "unknown setting 'min_trials' for algorithm medianstop; accepted: min_trials_required, start_step"),
    ({"algorithmName": "medianstop", "algorithmSettings": [{"name": "start_step", "value": "4.0"}]},
     r"setting start_step='4.0' is not an integer"),
    ({"algorithmName": "medianstop", "algorithmSettings": [{"name": "start_step", "value": 4}]},
     r"setting start_step must be a string \(Katib's type\), got 4"),
    ({"algorithmName": "medianstop", "algorithmSettings": [{"name": "min_trials_required", "value": "0"}]},
     "earlyStopping: min_trials_required must be an integer >= 1, got 0"),
    ({"algorithmName": "medianstop", "algorithmSettings": [{"name": "start_step", "value": "-1"}]},
     "earlyStopping: start_step must be an integer >= 1, got -1"),
])
def test_from_katib_settings_rejects_what_katibs_service_rejects(spec, message):
    with pytest.raises(ConfigError, match=message):
        from_katib_settings(spec)


def test_make_pruner_maps_names_to_pruners():
    # medianstop is the default, built with the given settings
    pruner = make_pruner(min_trials_required=5, start_step=2, frozen_rule=False)
    assert isinstance(pruner, KatibMedianStopPruner)
    assert (pruner.min_trials_required, pruner.start_step, pruner.frozen_rule) == (5, 2, False)
    assert isinstance(make_pruner("optuna-median"), MedianPruner)
    assert isinstance(make_pruner("hyperband", min_resource=1, max_resource=9), HyperbandPruner)
    assert isinstance(make_pruner("none"), NopPruner)


def test_every_listed_pruner_name_builds_its_own_pruner():
    built = {name: make_pruner(name) for name in PRUNERS}
    # every name a face may offer builds an Optuna pruner with its defaults
    assert all(isinstance(pruner, optuna.pruners.BasePruner) for pruner in built.values())
    # and no two names build the same kind (a name falling through to a default would)
    assert len({type(pruner) for pruner in built.values()}) == len(PRUNERS)


def test_an_unknown_pruner_name_is_refused_with_every_choice():
    with pytest.raises(ConfigError) as info:
        make_pruner("median")
    # the message names the bad value and every name that would work
    assert "'median'" in str(info.value)
    assert all(name in str(info.value) for name in PRUNERS)


@pytest.mark.parametrize("name, settings, message", [
    ("median", {}, "unknown pruner 'median'; choose one of medianstop, optuna-median, hyperband, none"),
    ("none", {"start_step": 4}, "unknown setting 'start_step' for pruner 'none'; accepted: none"),
    ("hyperband", {"start_step": 4},
     "unknown setting 'start_step' for pruner 'hyperband'; accepted: min_resource, max_resource, reduction_"),
    ("medianstop", {"start_step": 0}, "pruner 'medianstop': start_step must be an integer >= 1, got 0"),
    ("optuna-median", {"min_trials_required": 0},
     "pruner 'optuna-median': min_trials_required must be an integer >= 1, got 0"),
    ("hyperband", {"min_resource": 3, "max_resource": 2},
     "pruner 'hyperband': max_resource must be an integer >= 3, got 2"),
    ("hyperband", {"reduction_factor": 1}, "pruner 'hyperband': reduction_factor must be an integer >= 2, got 1"),
])
def test_make_pruner_rejects_unknown_names_and_bad_settings(name, settings, message):
    with pytest.raises(ConfigError, match=message):
        make_pruner(name, **settings)
