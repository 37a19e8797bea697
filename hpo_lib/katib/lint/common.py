"""What every rule family of the lint shares: the :class:`Finding` it reports, and readers of a free-form document."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

K8S_SCHEMA_VERSION = "1.32"  # Kubernetes schema for Job templates; kubernetes-validate 1.37 ships 1.25-1.37


@dataclass(frozen=True)
class Finding:
    """One problem in a manifest: the rule it breaks, how bad it is, and what to change.

    Args:
        rule: The rule id, e.g. ``"W-CNT"``, ``"R1"``, ``"S4"`` (see the module docstring).
        severity: ``"error"`` (Katib rejects the Experiment, or it fails or stalls) or ``"warning"``.
        message: Names the offending field and value, and the rule in words.

    Example:
        >>> str(Finding("W-CNT", "error", "parallelTrialCount 5 exceeds maxTrialCount 3"))
        'error W-CNT: parallelTrialCount 5 exceeds maxTrialCount 3'
    """

    rule: str
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity} {self.rule}: {self.message}"


class Findings(list):
    """The findings of one run, in the order the rules report them."""

    def error(self, rule: str, message: str) -> None:
        self.append(Finding(rule, "error", message))

    def warning(self, rule: str, message: str) -> None:
        self.append(Finding(rule, "warning", message))


def path_text(loc: tuple) -> str:
    """A location as a reader writes it: ``spec.parameters[0].name``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def as_dict(value: Any) -> dict:
    """``value`` if it is a mapping, else an empty one: the trial spec is free-form, so nothing is assumed."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def get(value: Any, *keys: str) -> Any:
    """The value at ``keys`` inside nested mappings; None where a key or a mapping is missing."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def pod_templates(value: Any) -> Iterator[dict]:
    """Every pod template (a mapping whose ``spec.containers`` is a list) inside a trial spec."""
    if isinstance(value, dict):
        if isinstance(get(value, "spec", "containers"), list):
            yield value
        for item in value.values():
            yield from pod_templates(item)
    elif isinstance(value, list):
        for item in value:
            yield from pod_templates(item)
