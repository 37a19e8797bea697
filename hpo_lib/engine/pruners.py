"""Stopping rules as Optuna pruners: Katib's ``medianstop`` reproduced exactly, and the alternatives to compare it with.

:class:`KatibMedianStopPruner` makes a laptop run stop the same trials the cluster would. :func:`make_pruner` maps a
name (a CLI flag) to a pruner, and :func:`from_katib_settings` reads an Experiment's ``spec.earlyStopping``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo_lib.engine import options
from hpo_lib.errors import ConfigError
from hpo_lib.katib.settings import EARLY_STOPPINGS, MEDIANSTOP

PRUNERS = options.PRUNERS[1:]  # the named pruners (options lists "manifest", the Experiment's own rule, first)


# ------------------------------------------------------------------------------------------------ arithmetic
def _trial_prefix_mean(values_by_step: Mapping[int, float], start_step: int) -> float | None:
    """Mean of a trial's first ``start_step`` reported values, in step order; None for a trial with no reports.

    Katib slices the first ``start_step`` rows of the trial's observation log, so a trial with fewer rows gives
    the mean of what it has. With zero rows Katib divides by zero; here the trial is skipped instead.

    >>> _trial_prefix_mean({1: 4.0, 2: 2.0, 3: 0.0, 4: 10.0}, 3)
    2.0
    """
    first = [value for _, value in sorted(values_by_step.items())][:start_step]
    if not first:
        return None
    return sum(first) / len(first)


def _medianstop_threshold(prefix_means: Sequence[float], min_trials_required: int) -> float | None:
    """Katib's threshold: the arithmetic mean of the completed trials' prefix means, or None (no rule) if too few.

    >>> _medianstop_threshold([1.0, 1.0, 4.0], 3)  # a mean: the median would be 1.0
    2.0
    >>> _medianstop_threshold([1.0, 1.0], 3) is None
    True
    """
    if len(prefix_means) < min_trials_required:
        return None
    return sum(prefix_means) / len(prefix_means)


def _best_so_far(values: Sequence[float], direction: StudyDirection) -> float:
    """The sidecar's running optimum over non-empty ``values`` in report order: min to minimize, max to maximize.

    Written as the sidecar's fold (the first value, then replaced only by a strictly better one), so NaN behaves
    as in Go: a later NaN is never better, and a NaN first value sticks and never compares worse than anything.
    """
    best = values[0]
    for value in values[1:]:
        if (value > best) if direction == StudyDirection.MAXIMIZE else (value < best):
            best = value
    return best


def medianstop_threshold(curves: Sequence[Sequence[float]], min_trials_required: int, start_step: int) -> float | None:
    """Katib's threshold from completed trials' objective curves (values in report order); None: no rule yet.

    >>> medianstop_threshold([[4.0, 2.0], [1.0, 1.0], [0.5, 0.5]], 3, 2)
    1.5
    """
    prefix_means = [m for m in (_trial_prefix_mean(dict(enumerate(c)), start_step) for c in curves) if m is not None]
    return _medianstop_threshold(prefix_means, min_trials_required)


def medianstop_stops(
    curve: Sequence[float], threshold: float | None, start_step: int, direction: StudyDirection
) -> bool:
    """Katib's check on a running trial's curve: once, at its ``start_step``-th report, best so far vs threshold.

    >>> medianstop_stops([3.0, 2.5], 2.0, 2, StudyDirection.MINIMIZE)
    True
    >>> medianstop_stops([3.0, 2.5, 2.4], 2.0, 2, StudyDirection.MINIMIZE)  # checked once, at report 2
    False
    """
    if threshold is None or len(curve) != start_step:
        return False
    best = _best_so_far(list(curve), direction)
    return best < threshold if direction == StudyDirection.MAXIMIZE else best > threshold


def collector_exits_on(line: str, filters: Sequence[re.Pattern[str]], metric: str) -> str:
    """Why Katib's metrics collector would exit on ``line`` of a trial with a stopping rule on ``metric`` ("" when
    it would not): it reads every filter match of a line containing the rule's metric and exits on a value that is
    not a number (katib cmd/metricscollector/v1beta1/file-metricscollector/main.go:191-216), so
    ``val_loss=0.3 optimizer=adam`` fails the trial with no metrics."""
    for regex in filters:
        for match in regex.finditer(line):
            try:
                float(match.group(2).strip())
            except ValueError:
                pair = line[match.start() :].split()[0]
                return (
                    f"printed {pair!r} on a line with {metric}: with an early-stopping rule, Katib's metrics "
                    "collector exits on a value that is not a number, and the trial fails with no metrics (Katib "
                    "file-metricscollector main.go:205-216); print other name=word pairs on a line of their own"
                )
    return ""


def _require_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _require_single_objective(study: optuna.Study) -> None:
    if len(study.directions) > 1:
        raise ValueError(
            f"medianstop needs a single-objective study, got {len(study.directions)} directions "
            "(Katib experiments have one objective)"
        )


# ------------------------------------------------------------------------------------------------ the pruner
class KatibMedianStopPruner(BasePruner):
    """Katib v0.19's ``medianstop``, rule for rule, so a local study stops the trials the cluster would stop.

    The rule (``pkg/earlystopping/v1beta1/medianstop/service.py`` makes it, the metrics-collector sidecar
    ``file-metricscollector/main.go`` enforces it):

    * For every COMPLETE trial (Katib: Succeeded; pruned = EarlyStopped and failed trials are ignored), average its
      first ``start_step`` reported values in step order. A trial that reported fewer values uses the mean of what
      it has; a trial that reported none is skipped (Katib would divide by zero).
    * Once at least ``min_trials_required`` such averages exist, the threshold is their arithmetic **mean**. Katib
      calls it ``median``; it is not one. Before that there is no rule and nothing is pruned.
    * The trial is checked **once**, when its number of reports is exactly ``start_step``: the sidecar counts reports
      down and compares only when the count hits 0. Earlier and later reports never prune, however bad.
    * The compared value is the trial's best so far (min to minimize, max to maximize), pruned when strictly worse
      than the threshold (Katib's GREATER / LESS): equal does not prune. NaN never prunes (Go's comparisons).

    Katib computes the rule when it creates a trial and freezes it into ``Trial.spec.earlyStoppingRules``; a trial
    created before enough trials succeeded is never stopped, even if they succeed while it runs. With
    ``frozen_rule=True`` the threshold is fixed per trial by :meth:`freeze`, which the engine calls right after
    ``study.ask()``. A trial that was not frozen explicitly is frozen at its first ``prune()`` call (its first
    ``should_prune()``), which is exact when no trial completes between ``ask()`` and that call, as in a sequential
    run. ``frozen_rule=False`` recomputes the threshold at the check, from the trials complete by then.

    Call ``should_prune()`` after every report, as the sidecar sees every line; a trial whose reports skip past
    the ``start_step``-th without a call is never checked.

    How Optuna's :class:`~optuna.pruners.MedianPruner` differs: it checks at every step after its warmup, and
    compares the best value so far with the **median of other trials' values at the same step**. Katib compares it
    once with the mean of early averages, which for a falling loss is a looser bar than the median at that step.

    Args:
        min_trials_required:
            Completed trials (with at least one report) needed before there is a rule; an integer > 0. Default 3.
        start_step:
            The report number at which the trial is checked, and how many leading reports of each completed trial
            are averaged; an integer >= 1. Default 4.
        frozen_rule:
            True (Katib): each trial keeps the threshold as of its creation. False: the threshold at the check.
    """

    def __init__(self, min_trials_required: int = 3, start_step: int = 4, *, frozen_rule: bool = True) -> None:
        self._min_trials_required = _require_int("min_trials_required", min_trials_required, 1)
        self._start_step = _require_int("start_step", start_step, 1)
        if not isinstance(frozen_rule, bool):
            raise ValueError(f"frozen_rule must be True or False, got {frozen_rule!r}")
        self._frozen_rule = frozen_rule
        self._frozen: dict[tuple[str, int], float | None] = {}  # (study, trial number) -> threshold, None = no rule

    @property
    def min_trials_required(self) -> int:
        return self._min_trials_required

    @property
    def start_step(self) -> int:
        return self._start_step

    @property
    def frozen_rule(self) -> bool:
        return self._frozen_rule

    def threshold(self, study: optuna.Study) -> float | None:
        """The threshold a trial created now would get, from the trials complete now; None while there is no rule."""
        _require_single_objective(study)
        prefix_means = []
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            mean = _trial_prefix_mean(done.intermediate_values, self._start_step)
            if mean is not None:
                prefix_means.append(mean)
        return _medianstop_threshold(prefix_means, self._min_trials_required)

    def freeze(self, study: optuna.Study, trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> float | None:
        """Fix the trial's threshold now, as Katib does at creation; call right after ``study.ask()``.

        Returns the threshold (None: no rule, the trial will never be pruned). Freezing twice keeps the first
        value. With ``frozen_rule=False`` nothing is stored and the current threshold is returned.
        """
        if not self._frozen_rule:
            return self.threshold(study)
        key = (study.study_name, trial.number)
        if key not in self._frozen:
            self._frozen[key] = self.threshold(study)
        return self._frozen[key]

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        _require_single_objective(study)
        if self._frozen_rule:
            self.freeze(study, trial)  # no-op if the engine froze it at ask(); else freezes at the first report

        if len(trial.intermediate_values) != self._start_step:
            return False  # the sidecar compares only when its countdown of reports hits exactly 0

        threshold = self._frozen[(study.study_name, trial.number)] if self._frozen_rule else self.threshold(study)
        if threshold is None:
            return False  # no rule: fewer than min_trials_required trials had completed

        curve = [value for _, value in sorted(trial.intermediate_values.items())]
        return medianstop_stops(curve, threshold, self._start_step, study.direction)


# ------------------------------------------------------------------------------------------------ factories
_SETTINGS = {
    "medianstop": ("min_trials_required", "start_step", "frozen_rule"),
    "optuna-median": ("min_trials_required", "start_step"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "none": (),
}


def make_pruner(name: str = "medianstop", **settings: Any) -> BasePruner:
    """The pruner called ``name``, one of :data:`PRUNERS`; ``settings`` are Python values, checked here.

    * ``medianstop``: :class:`KatibMedianStopPruner` (``min_trials_required``, ``start_step``, ``frozen_rule``).
    * ``optuna-median``: Optuna's ``MedianPruner`` on the same settings, ``n_startup_trials=min_trials_required``
      and ``n_warmup_steps=start_step - 1``: with steps numbered from 0 its first check is the ``start_step``-th
      report, like Katib's, and it keeps checking after that.
    * ``hyperband``: Optuna's ``HyperbandPruner`` (``min_resource`` >= 1, default 1; ``max_resource``, "auto" or an
      integer >= ``min_resource``, default "auto"; ``reduction_factor`` >= 2, default 3).
    * ``none``: ``NopPruner``.

    Raises:
        ConfigError: an unknown name or setting, or a setting out of range.
    """
    if name not in _SETTINGS:
        raise ConfigError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    unknown = sorted(set(settings) - set(_SETTINGS[name]))
    if unknown:
        accepted = ", ".join(_SETTINGS[name]) or "none"
        raise ConfigError(f"unknown setting {unknown[0]!r} for pruner {name!r}; accepted: {accepted}")
    try:
        return _build(name, settings)
    except ValueError as err:
        raise ConfigError(f"pruner {name!r}: {err}") from err


def _build(name: str, settings: dict[str, Any]) -> BasePruner:
    if name == "medianstop":
        return KatibMedianStopPruner(**settings)
    if name == "optuna-median":
        katib = EARLY_STOPPINGS[MEDIANSTOP].defaults  # the same defaults as Katib's rule
        min_trials = _require_int(
            "min_trials_required", settings.get("min_trials_required", katib["min_trials_required"]), 1
        )
        start_step = _require_int("start_step", settings.get("start_step", katib["start_step"]), 1)
        return MedianPruner(n_startup_trials=min_trials, n_warmup_steps=start_step - 1)
    if name == "hyperband":
        min_resource = _require_int("min_resource", settings.get("min_resource", 1), 1)
        max_resource = settings.get("max_resource", "auto")
        if max_resource != "auto":
            max_resource = _require_int("max_resource", max_resource, min_resource)
        reduction_factor = _require_int("reduction_factor", settings.get("reduction_factor", 3), 2)
        return HyperbandPruner(min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor)
    return NopPruner()


def from_katib_settings(early_stopping: Mapping[str, Any] | None, *, frozen_rule: bool = True) -> BasePruner:
    """The pruner a Katib Experiment's ``spec.earlyStopping`` asks for; None (no early stopping) gives NopPruner.

    Accepts what Katib's medianstop service accepts (``ValidateEarlyStoppingSettings``, the table in
    :mod:`hpo_lib.katib.settings`): algorithm ``medianstop``; settings ``min_trials_required`` (> 0) and
    ``start_step`` (>= 1) as strings that ``int()`` parses; a repeated setting keeps its last value. Anything else
    fails the Experiment on the cluster, so it raises here.

    Raises:
        ConfigError: naming the unknown algorithm or setting, or the value that does not parse or is out of range.
    """
    if early_stopping is None:
        return NopPruner()
    algorithm = early_stopping.get("algorithmName")
    if algorithm not in EARLY_STOPPINGS:
        raise ConfigError(f"unknown early stopping algorithm name {algorithm!r}; Katib ships only {MEDIANSTOP!r}")
    rules = EARLY_STOPPINGS[algorithm]
    values = dict(rules.defaults)
    for setting in early_stopping.get("algorithmSettings") or []:
        name, value = setting.get("name", ""), setting.get("value", "")
        if name not in rules.settings:
            raise ConfigError(
                f"unknown setting {name!r} for algorithm {algorithm}; accepted: {', '.join(rules.settings)}"
            )
        if not isinstance(value, str):
            raise ConfigError(f"setting {name} must be a string (Katib's type), got {value!r}")
        values[name] = rules.settings[name].parse(value)
        if values[name] is None:
            raise ConfigError(f"setting {name}={value!r} is not an integer")
    try:  # the range, in the pruner's words
        return KatibMedianStopPruner(values["min_trials_required"], values["start_step"], frozen_rule=frozen_rule)
    except ValueError as err:
        raise ConfigError(f"earlyStopping: {err}") from err
