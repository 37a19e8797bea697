"""The sampler's view of the study: early-stopped trials told as Katib's suggestion service tells them."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState


def _history(study, told_as_complete: bool):
    """Ten trials; every third one early-stopped with an observed value, told as Katib tells it or as PRUNED."""
    from hpo_lib.engine.katib_view import TOLD_ATTR

    x = optuna.distributions.FloatDistribution(0, 1)
    for i in range(10):
        value = (i * 0.37) % 1.0
        trial = optuna.trial.create_trial(params={"x": value}, distributions={"x": x},
                                          value=value if told_as_complete or i % 3 else None,
                                          state=TrialState.COMPLETE if told_as_complete or i % 3 else
                                          TrialState.PRUNED,
                                          intermediate_values={0: value}, user_attrs={TOLD_ATTR: [value]})
        study.add_trial(trial)
    return {"x": x}


def test_the_sampler_sees_early_stopped_trials_as_katibs_service_tells_them():
    from hpo_lib.engine.katib_view import KatibTells

    katib = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=5))
    ours = optuna.create_study(sampler=KatibTells(optuna.samplers.TPESampler(seed=3, n_startup_trials=5)))
    plain = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=5))
    space = _history(katib, told_as_complete=True)
    _history(ours, told_as_complete=False)
    _history(plain, told_as_complete=False)
    # with early-stopped trials stored as PRUNED, the wrapped sampler suggests exactly what Katib's service would
    # (which told them COMPLETE with their observed value); the bare sampler, which ranks PRUNED last, does not
    suggested = [study.ask(space).params["x"] for study in (katib, ours, plain)]
    assert suggested[0] == suggested[1] != suggested[2]
    # the user still sees them as early-stopped
    assert [t.state for t in ours.trials].count(TrialState.PRUNED) == 4
