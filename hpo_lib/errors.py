"""Every exception the project raises for input a user can fix, and the one boundary that prints them.

A message names the bad value and the rule it breaks, in the words of the layer that raised it. It never names a
command-line flag: the same code runs under ``hpo`` and as a KFP step configured through its arguments, so the
layer that raises it lists the *settings* a user would change (``settings=("lr", "grad_clip")``) and each face
turns those into its own hint (``--lr``, ``--grad-clip`` for ``hpo``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO


class HpoError(Exception):
    """Base class: the message names the bad value and the rule it breaks.

    Args:
        message: value and rule, e.g. ``"horizon must be at least 1, got 0"``.
        settings: names of the settings (trial flags or tuning options, in ``snake_case``) that fix it.
    """

    def __init__(self, message: str, *, settings: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.settings = tuple(settings)


class DataError(HpoError):
    """A data source, ticker or series that cannot be used (unknown, empty, too short, NaNs)."""


class ConfigError(HpoError):
    """A flag, hyperparameter or manifest value outside what the project accepts."""


class TrainingError(HpoError):
    """Training could not produce a usable model (for example the loss became non-finite)."""


class ExperimentError(HpoError):
    """A Katib Experiment or Trial on the cluster cannot be created, read or waited for, or it failed."""


class NoWinnersError(HpoError):
    """No trial of a tuning run can be retrained: none succeeded with a usable objective."""


class TrackingError(HpoError):
    """MLflow cannot be reached or refuses a write; what was computed stays in its folders."""


EXIT_BAD_INPUT = 2  # argparse's code for a usage error; every HpoError ends with it
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def flag_hint(exc: HpoError) -> str:
    """``"; set with --lr, --grad-clip"`` for an error's settings (empty when it names none): the hint of ``hpo``."""
    if not exc.settings:
        return ""
    return "; set with " + ", ".join("--" + name.replace("_", "-") for name in exc.settings)


def run_main(body: Callable[[], int], *, prog: str = "hpo", err: TextIO | None = None) -> int:
    """Run a command's body: bad input becomes one line on stderr and exit code 2, Ctrl-C exit code 130."""
    err = err or sys.stderr
    try:
        return body()
    except HpoError as exc:
        print(f"{prog}: error: {exc}{flag_hint(exc)}", file=err)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=err)
        return EXIT_INTERRUPTED


def first_line(exc: BaseException, *, default: str | None = None) -> str:
    """The first line of an exception's message (libraries raise pages); its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else (type(exc).__name__ if default is None else default)
