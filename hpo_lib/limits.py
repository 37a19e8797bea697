"""Every bound on an input, defined once, each with its reason and the environment variable that raises it.

An input over a bound is refused before any work starts, in one line that names the input, its size, the limit,
the reason and how to raise it (:meth:`Limit.check`)::

    hpo: error: manifest exp.yaml is 2,000,000 bytes, over the limit of 1,572,864 bytes (etcd stores a Kubernetes
    object of at most 1.5 MiB: Katib could not create this Experiment); raise it with HPO_LIMIT_MANIFEST_BYTES=N

A bound exists so a mistake or a hostile input costs one line, not the machine's memory or a stalled service; a
user with a real need above one raises it for their run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpo_lib.errors import ConfigError, HpoError

ENV_PREFIX = "HPO_LIMIT_"


@dataclass(frozen=True)
class Limit:
    """One bound: its name (``HPO_LIMIT_<NAME>`` raises it), its default, its unit and why it is there."""

    name: str
    default: float
    unit: str
    reason: str
    fix: str = ""  # what to do instead, for a bound that cannot be raised (the kernel's); else the variable

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def value(self) -> float:
        """The bound in force: the environment's ``HPO_LIMIT_<NAME>`` when set, else the default (always the
        default for a bound that cannot be raised)."""
        text = "" if self.fix else os.environ.get(self.env, "").strip()
        if not text:
            return self.default
        try:
            value = float(text.replace("_", ""))
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"{self.env}={text!r} must be a number above 0 ({self.unit})")
        return value

    def exceeded(self, amount: float) -> bool:
        return amount > self.value

    def refusal(self, what: str, amount: float) -> str:
        """The one line that refuses ``what`` for being ``amount`` units."""
        fix = self.fix or f"raise it with {self.env}=N"
        return (
            f"{what} is {_number(amount)} {self.unit}, over the limit of {_number(self.value)} {self.unit} "
            f"({self.reason}); {fix}"
        )

    def check(self, what: str, amount: float, error: type[HpoError] = ConfigError) -> None:
        """Raise ``error`` (:meth:`refusal`) when ``amount`` is over the bound."""
        if self.exceeded(amount):
            raise error(self.refusal(what, amount))


def _number(amount: float) -> str:
    return f"{amount:,.0f}" if float(amount).is_integer() else f"{amount:,.3g}"


MANIFEST_BYTES = Limit(
    "manifest_bytes",
    1_572_864,
    "bytes",
    "etcd stores a Kubernetes object of at most 1.5 MiB: Katib could not create this Experiment",
)
YAML_NODES = Limit(
    "yaml_nodes",
    500_000,
    "values",
    "more than a manifest within the size limit spells out: aliases nested to multiply, a 'billion laughs'",
)
LIST_VALUES = Limit(
    "list_values",
    10_000,
    "values",
    "a categorical or discrete list beyond what a search of thousands of trials can try",
)
ARGUMENT_BYTES = Limit(
    "argument_bytes",
    131_072,
    "bytes",
    "Linux refuses to start a process with one argument or environment entry over 128 KiB (MAX_ARG_STRLEN)",
    "put the value in a file and pass the file's path",
)
DATA_FILE_BYTES = Limit(
    "data_file_bytes",
    268_435_456,
    "bytes",
    "a price file is read into memory whole; 256 MiB is four times a CSV of the row limit",
)
DATA_ROWS = Limit(
    "data_rows",
    1_000_000,
    "rows",
    "a price file is read into memory whole, about 150 bytes a row; 1,000,000 rows are 4,000 years of daily bars",
)
SUGGESTIONS_PER_REQUEST = Limit(
    "suggestions_per_request",
    1_000,
    "suggestions",
    "Katib asks for at most parallelTrialCount suggestions at a time; each one is proposed in turn",
)
SUGGESTION_BUDGET_S = Limit(
    "suggestion_budget_s",
    20,
    "seconds",
    "one GetSuggestions request may compute this long, so no request holds the service from the others",
)
SHUTDOWN_GRACE_S = Limit(
    "shutdown_grace_s",
    3,
    "seconds",
    "a SIGTERMed service ends its requests this long after the signal, inside a pod's grace period",
)

ALL = (
    MANIFEST_BYTES,
    YAML_NODES,
    LIST_VALUES,
    ARGUMENT_BYTES,
    DATA_FILE_BYTES,
    DATA_ROWS,
    SUGGESTIONS_PER_REQUEST,
    SUGGESTION_BUDGET_S,
    SHUTDOWN_GRACE_S,
)
