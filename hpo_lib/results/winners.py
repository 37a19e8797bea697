"""Winners of a tuning run: trials from either source -> the usable ones -> top-k plus a Pareto front.

Two sources give trials in the same shape, and :func:`parse_trial` reads both:

* a real Katib Trial CR (``kubectl get trials -o json``): ``metadata.name``, ``spec.parameterAssignments``,
  ``status.conditions`` and ``status.observation.metrics``;
* a record of the embedded engine's export (``trials.json``): ``name``, ``condition``, ``parameterAssignments``,
  ``observation.metrics``, ``epochsRun`` and ``failReason``.

Metric values are strings in both, with Katib's sentinel ``"unavailable"`` for a metric that was never reported;
values that are not finite numbers are read as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from hpo_lib import metrics, study_record
from hpo_lib.errors import ConfigError, NoWinnersError
from hpo_lib.katib import contract
from hpo_lib.katib import experiment as katib_experiment
from hpo_lib.katib.experiment import Objective


@dataclass(frozen=True)
class Trial:
    """One trial, whichever source it came from. ``metrics`` maps name -> {min, max, latest}, None when missing."""

    name: str
    condition: str
    params: dict[str, str]
    metrics: dict[str, dict[str, float | None]]
    reason: str = ""
    epochs_run: int | None = None

    def value(self, metric: str, strategy: str) -> float | None:
        """The metric's value under a Katib metric strategy (``min``, ``max`` or ``latest``)."""
        return self.metrics.get(metric, {}).get(strategy)


# ----------------------------------------------------------------------------------------------- parsing
def parse_trial(obj: Mapping[str, Any]) -> Trial:
    """A Katib Trial CR or an engine export record -> :class:`Trial`. Raises ConfigError for anything else."""
    if "metadata" in obj and ("spec" in obj or "status" in obj):  # a Trial CR
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        name = (obj.get("metadata") or {}).get("name", "")
        found = contract.condition(status.get("conditions") or [], contract.TRIAL_STATES)
        condition, reason = found or (study_record.CREATED, "")
        assignments, observation, epochs = spec.get("parameterAssignments"), status.get("observation"), None
    elif "name" in obj and "condition" in obj:  # the engine's export
        name, condition, reason = obj["name"], obj["condition"], obj.get("failReason", "")
        assignments, observation, epochs = obj.get("parameterAssignments"), obj.get("observation"), obj.get("epochsRun")
    else:
        raise ConfigError(f"not a Katib Trial or an engine export record: keys {sorted(obj)[:8]}")
    if not name:
        raise ConfigError("a trial has no name")
    params = {str(p["name"]): str(p.get("value", "")) for p in assignments or []}
    metrics = {
        str(m["name"]): {k: contract.finite_number(m.get(k)) for k in contract.METRIC_STRATEGIES}
        for m in (observation or {}).get("metrics") or []
    }
    return Trial(
        name=name,
        condition=condition,
        params=params,
        metrics=metrics,
        reason=reason,
        epochs_run=int(epochs) if epochs is not None else None,
    )


def parse_trials(objs: Iterable[Mapping[str, Any]]) -> list[Trial]:
    """Every trial of a list, a ``TrialList`` (``{"items": [...]}``) or an export, in the order given."""
    if isinstance(objs, Mapping):
        objs = objs.get("items") or []
    return [parse_trial(o) for o in objs]


def criteria(
    experiment: Mapping[str, Any],
    pareto_metrics: Iterable[str] = metrics.PARETO,
) -> tuple[Objective, list[Objective]]:
    """The objective and the extra Pareto axes of an Experiment, with its metric strategies.

    A multi-objective Experiment (algorithm ``katib-hpo-multiobjective``) declares its own: the front is taken over
    exactly the objectives it was tuned for, each in its declared direction, so the pipeline retrains the front the
    suggestion service searched. Any other Experiment trades the objective off against ``pareto_metrics``, all
    minimised; an axis without a declared strategy uses ``latest`` (the value at the end of the trial, as for
    ``train_time_s``).
    """
    objective = katib_experiment.primary_objective(experiment)
    declared = katib_experiment.objectives(experiment)
    if len(declared) > 1:
        return objective, [o for o in declared if o.metric != objective.metric]
    axes = [
        Objective(m, "minimize", katib_experiment.metric_strategy(experiment, m, "latest"))
        for m in pareto_metrics
        if m != objective.metric
    ]
    return objective, axes


# ----------------------------------------------------------------------------------------------- selection
@dataclass
class Winner:
    """A selected trial: its rank by the objective among the usable trials, and why it was selected."""

    trial: Trial
    rank: int
    objective: float
    axes: dict[str, float | None]
    top_k: bool
    pareto: bool


@dataclass
class Selection:
    """The winners and the accounting a reader needs to judge them (how many trials they were picked from)."""

    objective: Objective
    axes: list[Objective]
    winners: list[Winner]
    n_trials: int
    n_eligible: int
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> trial names
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto_front(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the points no other point dominates (every coordinate minimised), in input order.

    A point dominates another when it is no worse on every coordinate and better on at least one; equal points do
    not dominate each other, so duplicates on the front are all kept.

    >>> pareto_front([(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (1.0, 5.0)])
    [0, 1, 3]
    """
    front = []
    for i, p in enumerate(points):
        dominated = any(
            all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _skip_reason(trial: Trial, objective: Objective, include_early_stopped: bool) -> str | None:
    if trial.condition in (study_record.FAILED, study_record.KILLED):
        return "failed"
    if trial.condition == study_record.METRICS_UNAVAILABLE:
        return "metrics unavailable"
    if trial.condition in (study_record.RUNNING, study_record.CREATED):
        return "not finished"
    if trial.condition == study_record.EARLY_STOPPED and not include_early_stopped:
        return "early stopped"
    if trial.condition not in (study_record.SUCCEEDED, study_record.EARLY_STOPPED):
        return f"condition {trial.condition}"
    if trial.value(objective.metric, objective.strategy) is None:
        return "metrics unavailable"  # Succeeded in name, but the objective has no usable value
    return None


def select(
    trials: list[Trial],
    objective: Objective,
    *,
    k: int = 3,
    axes: Iterable[Objective] = (),
    pareto: bool = True,
    max_winners: int = 0,
    include_early_stopped: bool = False,
) -> Selection:
    """The top ``k`` trials by the objective plus the Pareto front over the objective and ``axes``.

    Usable trials are the Succeeded ones (and EarlyStopped ones with ``include_early_stopped``) whose objective
    has a value; the rest are listed in ``skipped`` by reason. A trial missing a value on a Pareto axis can still
    be in the top ``k`` but not on the front. When fewer than ``k`` trials are usable, all of them are taken and a
    note says so. Winners come in objective order; ``max_winners`` (0 = no cap) keeps the first ones.

    Args:
        k: at least 1.
        max_winners: 0 for no cap, else at least 1. Winners are in objective order, so a cap keeps the best
            ones and drops Pareto-only trials before any of the top ``k``.

    Raises:
        NoWinnersError: no usable trial.
    """
    if k < 1:
        raise ConfigError(f"k (top-k) must be at least 1, got {k}")
    if max_winners < 0:
        raise ConfigError(f"max_winners must be 0 (no cap) or more, got {max_winners}")
    axes = list(axes)
    skipped: dict[str, list[str]] = {}
    usable: list[tuple[float, Trial]] = []
    for trial in trials:
        reason = _skip_reason(trial, objective, include_early_stopped)
        if reason:
            skipped.setdefault(reason, []).append(trial.name)
        else:
            value = trial.value(objective.metric, objective.strategy)
            assert value is not None  # _skip_reason skips a trial without an objective value
            usable.append((value, trial))
    if not usable:
        counts = ", ".join(f"{len(v)} {r}" for r, v in skipped.items()) or "no trials at all"
        raise NoWinnersError(
            f"no trial succeeded with a usable {objective.metric} among {len(trials)} trial(s) "
            f"({counts}); nothing to retrain"
        )
    usable.sort(key=lambda item: (objective.key(item[0]), item[1].name))
    notes = []
    if k > len(usable):
        notes.append(f"top-k asked for {k} trials but only {len(usable)} are usable: taking all {len(usable)}")
    top = {t.name for _, t in usable[:k]}

    on_front: set[str] = set()
    if pareto and axes:
        complete = [(v, t) for v, t in usable if all(t.value(a.metric, a.strategy) is not None for a in axes)]
        missing = len(usable) - len(complete)
        if missing:
            notes.append(
                f"{missing} usable trial(s) lack {' or '.join(a.metric for a in axes)} and cannot be on "
                f"the Pareto front"
            )
        # cast: complete holds only trials with a value for every axis
        points = [
            (objective.key(v), *(a.key(cast(float, t.value(a.metric, a.strategy))) for a in axes)) for v, t in complete
        ]
        on_front = {complete[i][1].name for i in pareto_front(points)}

    winners = [
        Winner(
            trial=t,
            rank=rank,
            objective=v,
            axes={a.metric: t.value(a.metric, a.strategy) for a in axes},
            top_k=t.name in top,
            pareto=t.name in on_front,
        )
        for rank, (v, t) in enumerate(usable, start=1)
        if t.name in top or t.name in on_front
    ]
    if max_winners and len(winners) > max_winners:
        dropped = [w.trial.name for w in winners[max_winners:]]
        notes.append(f"max_winners={max_winners}: left out {len(dropped)} lower-ranked winner(s) {', '.join(dropped)}")
        winners = winners[:max_winners]
    return Selection(
        objective=objective,
        axes=axes,
        winners=winners,
        n_trials=len(trials),
        n_eligible=len(usable),
        skipped=skipped,
        notes=notes,
    )
