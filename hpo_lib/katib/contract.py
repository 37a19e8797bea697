"""Katib's side of the contract: the StdOut metrics format, written by trials and read back exactly as Katib does;
``${trialParameters}`` substitution and what survives ``sh -c``; the conditions of Trials, Experiments and trial Jobs;
the names of Katib's algorithm services and metric strategies.

Katib's StdOut collector (``file-metricscollector.go``) keeps a line only if it contains one of the collected
metric names, takes the text before the first space as an RFC3339 timestamp, and applies its filter regex to the
whole line, keeping matches whose name equals a collected metric exactly. One writer (:func:`format_metrics_line`)
and one reader (:func:`parse_metrics_line`) serve the trial, the local engine and the tests.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from hpo_lib.errors import ConfigError
from hpo_lib.study_record import (
    CREATED,
    EARLY_STOPPED,
    FAILED,
    KILLED,
    METRICS_UNAVAILABLE,
    RUNNING,
    SUCCEEDED,
)

# Katib's DefaultFilter, written for Go RE2 where \w is ASCII-only; re.ASCII gives Python the same meaning.
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
METRIC_NAME = re.compile(r"[A-Za-z0-9_-]+")
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # what Katib records when the timestamp does not parse
# Katib v0.19's default katib-config: algorithmName -> the suggestion service (image suggestion-<service>)
SUGGESTION_SERVICES = {
    "random": "hyperopt",
    "tpe": "hyperopt",
    "grid": "optuna",
    "multivariate-tpe": "optuna",
    "hyperband": "hyperband",
    "bayesianoptimization": "skopt",
    "cmaes": "goptuna",
    "sobol": "goptuna",
    "enas": "enas",
    "darts": "darts",
    "pbt": "pbt",
}
# this project's algorithm, served on Katib by `hpo katib suggestion-service` (registered by the overlay
# manifests/overlays/katib-hpo-multiobjective) and locally by the engine through the same code
MULTI_OBJECTIVE_ALGORITHM = "katib-hpo-multiobjective"
METRIC_STRATEGIES = ("min", "max", "latest")  # Katib's metricStrategies: which observed value is a trial's value


def format_value(value: float | int | bool) -> str:
    """A number in a form the default filter reads back exactly; NaN/inf are refused (Katib would store "" or "-")."""
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    if not math.isfinite(value):
        raise ValueError(f"refusing to print non-finite metric value {value}")
    return f"{value:.6g}"


def format_metrics_line(metrics: Mapping[str, float], *, now: datetime | None = None, prefix: str = "") -> str:
    """``<RFC3339 UTC timestamp> [prefix] name=value ...``, the line Katib's StdOut collector parses."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name in metrics:
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must use only [A-Za-z0-9_-] to survive Katib's filter")
    pairs = " ".join(f"{name}={format_value(value)}" for name, value in metrics.items())
    return f"{stamp} {prefix + ' ' if prefix else ''}{pairs}"


def parse_timestamp(token: str) -> datetime | None:
    """Go's time.RFC3339Nano, roughly: date 'T' time, optional fraction, then 'Z' or a numeric offset."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)", token):
        return None
    head, _, rest = token.partition(".")
    if rest:  # Python parses at most 6 fractional digits
        match = re.match(r"\d+", rest)
        assert match is not None  # the fullmatch above requires digits after the "."
        digits = match.group(0)
        token = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(token.replace("Z", "+00:00"))
    except ValueError:
        return None


def compile_filters(filters: Iterable[str] | None = None) -> list[re.Pattern[str]]:
    """The manifest's ``metricsFormat`` regexes (each with two groups: name, value), or Katib's default."""
    patterns = list(filters or [DEFAULT_FILTER])
    compiled = []
    for pattern in patterns:
        try:
            regex = re.compile(pattern, re.ASCII)
        except re.error as exc:
            raise ConfigError(f"metrics filter {pattern!r} is not a valid regex: {exc}") from None
        if regex.groups < 2:
            raise ConfigError(f"metrics filter {pattern!r} needs two capture groups (name, value)")
        compiled.append(regex)
    return compiled


def parse_metrics_line(
    line: str, metric_names: Iterable[str], filters: list[re.Pattern[str]] | None = None
) -> tuple[datetime, dict[str, str]] | None:
    """Katib's reading of one line: None when the line names no collected metric, else (timestamp, {name: value}).

    Values stay strings, as Katib stores them; an unparsable timestamp becomes Katib's zero time.
    """
    names = set(metric_names)
    if not any(name in line for name in names):
        return None
    stamp = parse_timestamp(line.strip().split(" ", 1)[0]) or ZERO_TIME
    found: dict[str, str] = {}
    for regex in filters or compile_filters():
        for match in regex.finditer(line):
            name, value = match.group(1).strip(), match.group(2).strip()
            if name in names:
                found[name] = value
    return stamp, found


def parse_json_metrics_line(line: str, metric_names: Iterable[str]) -> tuple[datetime, dict[str, str]] | None:
    """Katib's reading of one line of a JSON-format File collector: None when the line names no collected metric.

    Every non-empty line must be a JSON object (else ValueError, which fails the collection as on Katib); a metric's
    value counts only when it is a JSON *string* (numbers are skipped, as Katib's ``jsonObj[m].(string)`` does);
    ``timestamp`` may be an RFC3339Nano string or float epoch seconds."""
    text = line.strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON metrics line must be a JSON object, got {text[:80]!r}")
    found = {name: record[name] for name in metric_names if isinstance(record.get(name), str)}
    if not found:
        return None
    stamp = record.get("timestamp")
    when: datetime | None
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        when = datetime.fromtimestamp(float(stamp), tz=UTC)
    else:
        when = parse_timestamp(stamp) if isinstance(stamp, str) else None
    return when or ZERO_TIME, found


# ----------------------------------------------------------------------------------------------- trial templates
PLACEHOLDER = re.compile(r"\$\{trialParameters\.(.+?)\}")
# Katib runs the primary container as `sh -c "<command and args joined by spaces>"`, unquoted: what sh re-parses
# in such a word (lint's S-SHELL reports each), and a stricter allow-list of characters that pass through unchanged
# anywhere in a word (for values a tool writes into a trial's argument; no SHELL_SAFE text contains SHELL_META)
SHELL_META = re.compile(r"[&;|<>$()`'\"\\\s*?]")
SHELL_SAFE = re.compile(r"[A-Za-z0-9:,=._/+-]+")


def substitute_trial_parameters(
    trial_spec: Mapping, trial_parameters: Iterable[Mapping], assignments: Mapping[str, str]
) -> dict:
    """Fill ``${trialParameters.NAME}`` placeholders the way Katib does: raw text substitution in the JSON template.

    ``assignments`` maps Katib parameter names to values; each trialParameter's ``reference`` picks its value.
    Raises ConfigError naming a placeholder that has no value.
    """
    text = json.dumps(trial_spec)
    for entry in trial_parameters:
        reference = entry["reference"]
        if reference not in assignments:
            raise ConfigError(f"trialParameter {entry['name']!r} references {reference!r}, which has no value")
        text = text.replace(f"${{trialParameters.{entry['name']}}}", str(assignments[reference]))
    left = PLACEHOLDER.search(text)
    if left:
        raise ConfigError(f"placeholder {left.group(0)} is not a declared trialParameter")
    return json.loads(text)


# ----------------------------------------------------------------------------------------------- conditions
# Katib reads a trial Job's success and failure with these GJSON conditions (its defaults for batch/v1 Jobs)
JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
EXPERIMENT_STATES = (FAILED, SUCCEEDED, "Restarting", RUNNING, CREATED)  # terminal ones win over Running
# A Trial CR keeps every condition it went through; the first of these with status "True" is its state. An
# early-stopped trial keeps Running=True (the medianstop service only appends EarlyStopped), so it comes first.
# The names themselves are defined once, with the Optuna -> Katib table, in hpo_lib.study_record.
TRIAL_STATES = (EARLY_STOPPED, SUCCEEDED, METRICS_UNAVAILABLE, FAILED, KILLED, RUNNING, CREATED)
UNAVAILABLE = "unavailable"  # Katib's value for a metric with no usable observation


def condition(conditions: Iterable[Mapping[str, Any]], order: Iterable[str]) -> tuple[str, str] | None:
    """(type, "reason: message") of the first type in ``order`` whose condition is True; None when none is.

    Katib keeps every condition a Trial or Experiment went through and flips the ones it left to status "False".
    """
    true = {c.get("type"): c for c in conditions if str(c.get("status")) == "True"}
    for state in order:
        if state in true:
            return state, ": ".join(x for x in (true[state].get("reason", ""), true[state].get("message", "")) if x)
    return None


def finite_number(text: Any) -> float | None:
    """A value Katib stores as text, as a finite float; ``"unavailable"``, ``""``, NaN, inf, bools and junk are None."""
    if text is None or isinstance(text, bool):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
