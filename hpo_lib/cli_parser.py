"""The ``hpo`` command's argument parser class: "did you mean" suggestions for a mistyped command, choice or flag,
every error under the usage of the (sub)command it belongs to, and the shell completion scripts (shtab).

Python 3.11's argparse has no ``suggest_on_error`` (3.14 adds one); :mod:`difflib` picks the closest name.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence
from typing import Any

SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes
# completion of the arguments that name a file or a folder (the rest complete their choices, if any)
_FILE_ARGUMENTS = ("manifest", "files", "--trials")
_FOLDER_ARGUMENTS = ("--state-dir", "--output", "--pipeline-root", "--cache-dir", "--root")


def closest(value: str, names: Iterable[str]) -> str | None:
    """The name ``value`` most likely mistypes (``tnue`` -> ``tune``), or None when none is close."""
    found = difflib.get_close_matches(value, list(names), n=1, cutoff=0.6)
    return found[0] if found else None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the closest command, choice or flag, and whose subcommands (which
    argparse builds with the same class) report unknown flags under their own usage, not the top-level one."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(choice) for choice in action.choices]
            near = closest(str(value), names)
            if near is not None:
                listed = ", ".join(map(repr, names))
                raise argparse.ArgumentError(
                    action, f"invalid choice: {value!r}; did you mean {near!r}? (choose from {listed})"
                )
        super()._check_value(action, value)

    def parse_args(  # type: ignore[override]  # argparse's overloads: this parser is only called with a list
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = chosen(self, parsed)
            owner.error(f"unrecognized arguments: {' '.join(extras)}{_flag_hint(owner, extras)}")
        return parsed


def chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)command parser that ``args`` went through (``hpo pipeline run-local`` -> run-local's)."""
    for action in parser._actions:  # argparse exposes the subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return chosen(action.choices[name], args)
    return parser


def _flag_hint(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``; did you mean --max-trials?`` for the first unknown flag that mistypes one of ``parser``'s."""
    flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    for extra in extras:
        if extra.startswith("--"):
            near = closest(extra.split("=", 1)[0], flags)
            if near is not None:
                return f"; did you mean {near}?"
    return ""


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    """The ``shell`` completion script of ``parser`` (commands, flags, choices; files and folders where an argument
    names one), written by shtab."""
    import shtab

    _mark_paths(parser, shtab.FILE, shtab.DIRECTORY)
    return str(shtab.complete(parser, shell=shell))


def _mark_paths(parser: argparse.ArgumentParser, file: Any, folder: Any) -> None:
    for action in parser._actions:
        names = [action.dest, *action.option_strings]
        if any(name in _FILE_ARGUMENTS for name in names):
            action.complete = file  # type: ignore[attr-defined]  # shtab reads this attribute
        elif any(name in _FOLDER_ARGUMENTS for name in names):
            action.complete = folder  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub, file, folder)
