"""A study tied to the experiment that created it: the search space and objectives, recorded and compared on resume.

A study is found by the manifest's ``<namespace>.<name>``. Resuming it with a manifest whose parameters, feasible
spaces, objectives or directions differ would rank trials of two experiments on one leaderboard, so the engine
records a fingerprint of those when it creates the study and refuses any other one in a line that names the first
difference. The budget (maxTrialCount, parallelTrialCount), the algorithm and the trial template are not part of it:
a manifest that only raises the budget resumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna

from hpo_lib.errors import ConfigError
from hpo_lib.katib import experiment

ATTR = "katib_hpo.experiment"  # the study user attr holding the fingerprint (JSON)
SPACE_KEYS = ("min", "max", "step", "distribution", "list")


def _number(text: Any) -> Any:
    """``"1e-3"`` and ``"0.001"`` are one bound; anything that is not a number stays the text it is."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)


def fingerprint(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two manifests one experiment: each parameter's type and feasible space, each objective's
    metric and direction (in order)."""
    parameters = {}
    for parameter in (doc.get("spec") or {}).get("parameters") or []:
        space = parameter.get("feasibleSpace") or {}
        kind = parameter.get("parameterType")
        entry: dict[str, Any] = {"type": kind}
        if kind in ("categorical", "discrete"):
            entry["list"] = [str(v) for v in space.get("list") or []]
        else:
            entry["distribution"] = space.get("distribution") or "uniform"  # Katib's default
            for key in ("min", "max", "step"):
                if space.get(key) not in (None, ""):
                    entry[key] = _number(space[key])
        parameters[str(parameter.get("name"))] = entry
    objectives = [[o.metric, o.direction] for o in experiment.objectives(doc)]
    return {"parameters": parameters, "objectives": objectives}


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first difference between two fingerprints, in words (``None`` when they are the same experiment)."""
    old_objectives = [tuple(o) for o in stored.get("objectives") or []]
    new_objectives = [tuple(o) for o in current.get("objectives") or []]
    if old_objectives != new_objectives:
        show = "; ".join(f"{m} {d}" for m, d in old_objectives)
        return f"objectives {show or 'none'} → {'; '.join(f'{m} {d}' for m, d in new_objectives) or 'none'}"
    old, new = stored.get("parameters") or {}, current.get("parameters") or {}
    for name in sorted(set(old) - set(new)):
        return f"parameter {name} is no longer in the manifest"
    for name in sorted(set(new) - set(old)):
        return f"parameter {name} is new in the manifest"
    for name in sorted(old):
        a, b = old[name], new[name]
        if a.get("type") != b.get("type"):
            return f"parameter {name}: parameterType {a.get('type')} → {b.get('type')}"
        for key in SPACE_KEYS:
            if a.get(key) != b.get(key):
                return f"parameter {name}: feasible space {key} {_show(a.get(key))} → {_show(b.get(key))}"
    return None


def _from_trials(study: optuna.Study, doc: Mapping[str, Any]) -> str | None:
    """A study created before fingerprints: its directions, and the categorical choices its trials used, against
    the manifest's (Optuna refuses another value space for a categorical name with a traceback at the first ask)."""
    from hpo_lib.katib import space

    stored = [d.name.lower() for d in study.directions]
    wanted = [o.direction for o in experiment.objectives(doc)]
    if stored != wanted:
        return f"directions {', '.join(stored)} → {', '.join(wanted)}"
    current = {p["name"]: space.from_katib_parameter(p) for p in (doc.get("spec") or {}).get("parameters") or []}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            new = current.get(name)
            if isinstance(dist, optuna.distributions.CategoricalDistribution) and new is not None and new != dist:
                was = _show(list(dist.choices))
                now = _show(list(new.choices)) if isinstance(new, optuna.distributions.CategoricalDistribution) else new
                return f"parameter {name}: feasible space list {was} → {now}"
    return None


def check_or_record(study: optuna.Study, doc: Mapping[str, Any]) -> None:
    """Record the manifest's fingerprint in a study that has none, or refuse a manifest that differs from it.

    Raises:
        ConfigError: the study was created by another experiment; the message names the first difference and
            how to start a new study.
    """
    current = fingerprint(doc)
    raw = study.user_attrs.get(ATTR)
    found = difference(json.loads(raw), current) if isinstance(raw, str) else _from_trials(study, doc)
    if found is not None:
        name = experiment.qualified_name(doc)
        raise ConfigError(
            f"study {name} was created by another experiment ({found}); to start a new study give the "
            "manifest another metadata.name, or run `hpo tune --new-study` (the old study is kept as "
            f"{name}.archived-<time>)"
        )
    if raw is None:
        study.set_user_attr(ATTR, json.dumps(current, sort_keys=True))
