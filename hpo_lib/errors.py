"""Every exception the project raises for input a user can fix, and the one boundary that prints them.

A message names the bad value and the rule it breaks, in the words of the layer that raised it: the same code runs
under ``hpo``, from Python and as a KFP step configured through its arguments. A setting is named as the layer
knows it: a message may open with it (``max_trials must be at least 1``, which ``hpo`` words as ``--max-trials``),
and the settings that fix it go in ``settings=("lr", "grad_clip")``, which each face turns into its own hint
(``--lr``, ``--grad-clip`` for ``hpo``). The trial's own messages name its flags (``--epochs must be ...``): they
are the trial's settings. A message that says what to run next names the ``hpo`` command (``run `hpo tune
MANIFEST` first``), the one way to make what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO


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


class ExperimentFailed(HpoError):
    """The Experiment ended the way Katib marks one Failed (maxFailedTrialCount reached); what finished is kept."""

    exit_code = 1


class TrackingError(HpoError):
    """MLflow cannot be reached or refuses a write; what was computed stays in its folders."""


class WriteError(HpoError):
    """A file the user reads cannot be written (a full disk, no permission); its previous version is kept."""


EXIT_BAD_INPUT = 2  # argparse's code for a usage error; every HpoError ends with it
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def flag_hint(exc: HpoError) -> str:
    """``"; set with --lr, --grad-clip"`` for an error's settings (empty when it names none): the hint of ``hpo``."""
    if not exc.settings:
        return ""
    return "; set with " + ", ".join("--" + name.replace("_", "-") for name in exc.settings)


def run_main(body: Callable[[], int], *, prog: str = "hpo", err: TextIO | None = None) -> int:
    """Run a command's body: bad input becomes one line on stderr and exit code 2 (a failed Experiment 1), Ctrl-C
    exit code 130, a SIGTERM/SIGHUP the engine turned into an interruption 128 + its number, as a shell reports."""
    err = err or sys.stderr
    try:
        return body()
    except HpoError as exc:
        print(redact(f"{prog}: error: {exc}{flag_hint(exc)}"), file=err)
        return getattr(exc, "exit_code", EXIT_BAD_INPUT)
    except KeyboardInterrupt as exc:  # Ctrl-C, or a SIGTERM/SIGHUP the engine turned into one (it sets .signum)
        signum = getattr(exc, "signum", 2)
        print(f"{prog}: interrupted" + ("" if signum == 2 else f" by {getattr(exc, 'label', signum)}"), file=err)
        return 128 + signum if signum != 2 else EXIT_INTERRUPTED


def exit_now(code: int) -> NoReturn:
    """Exit with ``code`` once stdout, stderr and the log handlers are flushed, skipping the interpreter's teardown
    (about a second once torch is imported): a trial's slot is free the moment its last line is out. Only for a
    process's own end, never from a function other code calls."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can be said on it
            pass
    logging.shutdown()
    os._exit(code)


def first_line(exc: BaseException, *, default: str | None = None) -> str:
    """The first line of an exception's message (libraries raise pages), redacted; its type name when it has none."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else (type(exc).__name__ if default is None else default)


def cause_line(exc: BaseException) -> str:
    """The first line of the innermost cause of ``exc`` (a store's own words, e.g. ``database or disk is full``),
    redacted: no SQL statement, no parameters, no traceback. A library's wrapper says less than what it wraps. Only
    explicit causes (``raise ... from``) are followed: an exception merely raised while another was handled (its
    ``__context__``, e.g. in a ``finally``) has a cause of its own."""
    seen = [exc]
    nearer = exc.__cause__
    while nearer is not None and nearer not in seen:
        seen.append(nearer)
        nearer = nearer.__cause__
    for cause in reversed(seen):
        text = first_line(cause, default="")
        if text:
            return text
    return type(exc).__name__


# a URL's password (scheme://user:PASSWORD@host): RFC 3986 forbids an unescaped / ? # @ in it
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<secret>[^/?#@\s]+)@")
# the words that make a key, a flag or a parameter a secret's name
_SECRET_WORDS = r"password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|credentials?|signature|sig|auth"
# a secret passed as key=value (a URL query, a data spec option, a flag): the value up to the next separator
_KEY_SECRET = re.compile(rf"(?P<head>(?i:\b[\w.\-]*(?:{_SECRET_WORDS})[\w\-]*)=)(?P<secret>[^&\s,;'\"]+)")
_SECRET_NAME = re.compile(rf"(?i:{_SECRET_WORDS})")
# an HTTP URL's lone userinfo (https://TOKEN@host) is how a token travels without a password
_HTTP_TOKEN = re.compile(r"(?P<head>\bhttps?://)(?P<secret>[^:/?#@\s]+)@", re.IGNORECASE)
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``***``.

    Three forms: a URL's password (``postgresql://user:***@host``), an HTTP URL's lone user part (a token,
    ``https://***@host``), and the value of any ``password=``, ``token=``, ``secret=``, ``api_key=``,
    ``access_key=``, ``auth=`` or ``sig=`` pair (a URL query, a data spec option). User names, hosts, ports and paths
    stay, so the line still says which server or file it is about. Every message, log line, progress line and MLflow
    tag the project writes goes through it.

    >>> redact("cannot reach http://ana:s3cret@mlflow:5000/?token=abc&x=1")
    'cannot reach http://ana:***@mlflow:5000/?token=***&x=1'
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    text = _HTTP_TOKEN.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _KEY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact_value(name: str, value: str) -> str:
    """A stored ``name -> value`` pair's value (an MLflow param or tag, a flag's value): all of it hidden when the
    name is a secret's (``api-key``, ``db_password``), else :func:`redact` of it."""
    return REDACTED if value and _SECRET_NAME.search(name) else redact(value)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be stored: each argument through :func:`redact` (``--api-key=***``), and the value
    after a bare secret flag hidden too (``--api-key ***``)."""
    out: list[str] = []
    for arg in argv:
        previous = out[-1] if out else ""
        secret_flag = previous.startswith("-") and "=" not in previous and _SECRET_NAME.search(previous)
        out.append(REDACTED if secret_flag and not arg.startswith("-") else redact(arg))
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record through :func:`redact` (the libraries' log lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
