"""The one adapter over Optuna's private API: each call works on the installed Optuna, which is the one checked."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hpo_lib.engine import optuna_compat


def test_the_installed_optuna_is_the_minor_the_private_calls_were_checked_against():
    # a new Optuna minor: re-read Study._get_trials (its arguments, and that samplers still read trials through it),
    # Study._storage.set_trial_user_attr, and FrozenTrial's trial_id / _trial_id in Optuna's sources, then bump
    # CHECKED_WITH in hpo_lib/engine/optuna_compat.py
    installed = ".".join(optuna.__version__.split(".")[:2])
    assert installed == optuna_compat.CHECKED_WITH, (
        f"Optuna {optuna.__version__} is installed; hpo_lib/engine/optuna_compat.py was checked against "
        f"{optuna_compat.CHECKED_WITH}: re-check Study._get_trials, Study._storage and FrozenTrial._trial_id"
    )


def test_a_trial_held_by_no_live_object_gets_a_user_attribute_by_its_storage_id():
    study = optuna.create_study()
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    # the frozen copy and the live trial name the same stored trial
    assert optuna_compat.trial_id(frozen) == optuna_compat.trial_id(trial)
    optuna_compat.set_trial_attr(study, frozen, "reason", "gone")
    assert study.get_trials()[0].user_attrs == {"reason": "gone"}


def test_a_frozen_trial_copied_in_another_state_keeps_everything_else():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": 1.0},
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
                                              user_attrs={"a": 1}, intermediate_values={0: 3.0}))
    pruned = study.get_trials()[0]
    copy = optuna_compat.with_state(pruned, TrialState.COMPLETE, [3.0])
    assert copy.state == TrialState.COMPLETE and copy.values == [3.0]
    assert (copy.number, copy.params, copy.user_attrs, copy.intermediate_values) == (0, {"x": 1.0}, {"a": 1}, {0: 3.0})
    assert optuna_compat.trial_id(copy) == optuna_compat.trial_id(pruned)


def test_a_view_rewrites_the_trials_samplers_read_and_fetches_what_it_needs():
    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        study.add_trial(optuna.trial.create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None))
    asked = []

    def show(trials, wanted):
        asked.append((sorted(t.state.name for t in trials), wanted))
        return [t for t in trials if t.state != TrialState.FAIL]

    view = optuna_compat.study_view(study, show, also_fetch=(TrialState.PRUNED,))
    # what TPE and the other samplers call: the private _get_trials, with PRUNED fetched besides COMPLETE
    shown = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
    assert [t.state for t in shown] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert asked[-1] == (["COMPLETE", "PRUNED"], frozenset({TrialState.COMPLETE}))
    # the public readers go through the same rewrite; everything else is the study's
    assert [t.state for t in view.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert asked[-1][1] is None
    assert view.directions == study.directions and view.study_name == study.study_name
