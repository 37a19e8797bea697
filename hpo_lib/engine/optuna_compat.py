"""Every private Optuna name the engine relies on, in one place (checked against Optuna :data:`CHECKED_WITH`).

Optuna's public API has no way to do three things the engine needs, so this module reaches past it:

* write a user attribute of a trial the engine holds no ``Trial`` object for (an orphan of a dead engine, a
  trial asked but not yet launched): ``Study._storage`` and ``FrozenTrial._trial_id``;
* copy a ``FrozenTrial`` with another state and values (``FrozenTrial.__init__`` wants the private ``trial_id``);
* show a sampler a study whose trials are rewritten (:mod:`hpo_lib.engine.katib_view`): Optuna's samplers read a
  study's trials through ``Study._get_trials``, so the view must answer that private method.

``tests/engine/test_optuna_compat.py`` exercises each on the installed Optuna and fails when its minor version is no
longer :data:`CHECKED_WITH`, naming these three to re-check against Optuna's sources.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

CHECKED_WITH = "5.0"  # the Optuna minor whose sources these calls were checked against


def trial_id(trial: optuna.trial.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its ``number`` counts within the study, the id across the storage)."""
    return trial._trial_id


def set_trial_attr(study: optuna.Study, trial: optuna.trial.Trial | FrozenTrial, key: str, value: Any) -> None:
    """``trial.set_user_attr`` for a trial this process holds no live ``Trial`` of."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def with_state(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> FrozenTrial:
    """A copy of the frozen trial in another state, with other objective values (the rest unchanged)."""
    return FrozenTrial(
        number=trial.number,
        state=state,
        value=None,
        values=None if values is None else list(values),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs,
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
    )


# what a view shows: (the stored trials, the states the caller asked for or None) -> the trials it sees
Show = Callable[[list[FrozenTrial], frozenset[TrialState] | None], list[FrozenTrial]]


def study_view(study: optuna.Study, show: Show, also_fetch: Collection[TrialState] = ()) -> optuna.Study:
    """The study, with the trials a sampler reads passed through ``show``; ``also_fetch``: the states ``show``
    needs fetched besides those asked for (it may turn them into one of those). Every other attribute is the
    study's own."""
    # cast: the view stands in for the study wherever a sampler reads it
    return cast(optuna.Study, _View(study, show, frozenset(also_fetch)))


class _View:
    def __init__(self, study: optuna.Study, show: Show, also_fetch: frozenset[TrialState]) -> None:
        self._study, self._show, self._also_fetch = study, show, also_fetch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        wanted = None if states is None else frozenset(states)
        fetch = None if wanted is None else tuple(wanted | self._also_fetch)
        return self._show(self._study._get_trials(deepcopy=deepcopy, states=fetch, use_cache=use_cache), wanted)

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()
