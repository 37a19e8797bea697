"""The study as Katib's suggestion service would show it to the sampler: early-stopped trials told as complete.

Katib's Optuna service tells an early-stopped trial as COMPLETE with its observed objective value (the strategy's
pick of the values it printed before the stop), and never tells a failed one. The engine stores early-stopped
trials as PRUNED (the user's "EarlyStopped") and failed ones as FAIL (which Optuna's samplers skip). Wrapped in
:class:`KatibTells`, every sampler sees each early-stopped trial as the COMPLETE trial Katib would have told, so the
laptop's suggestions follow the cluster's once trials are stopped.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo_lib.engine import optuna_compat
from hpo_lib.study_record import KATIB_TOLD

TOLD_ATTR = KATIB_TOLD  # early-stopped trial: the objective value(s) Katib's service would tell its study


class KatibTells(optuna.samplers.BaseSampler):
    """The manifest's sampler, shown the history Katib's suggestion service shows its own (see the module)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.inner = sampler

    def __str__(self) -> str:
        return f"KatibTells({self.inner})"

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(katib_history(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(katib_history(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(katib_history(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(katib_history(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(katib_history(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def katib_history(study: optuna.Study) -> optuna.Study:
    """The study with its early-stopped trials shown as Katib tells them."""
    return optuna_compat.study_view(study, told_as_katib, also_fetch=(TrialState.PRUNED,))


def told_as_katib(trials: list[FrozenTrial], wanted: frozenset[TrialState] | None) -> list[FrozenTrial]:
    """Each early-stopped trial with an observation as the COMPLETE trial Katib tells; one without is dropped, as
    is every early-stopped trial when the caller asked for states that leave COMPLETE out."""
    shown = []
    for t in trials:
        if t.state != TrialState.PRUNED:
            shown.append(t)
            continue
        told = t.user_attrs.get(TOLD_ATTR)
        if told is None or (wanted is not None and TrialState.COMPLETE not in wanted):
            continue  # Katib tells no early-stopped trial without an observation
        shown.append(optuna_compat.with_state(t, TrialState.COMPLETE, told))
    return shown
