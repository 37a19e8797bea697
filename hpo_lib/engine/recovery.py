"""What survives an interruption: trials cut short are failed, marked interrupted and re-run; orphans of a dead
engine are found; stop signals end the engine cleanly.

A trial the engine did not end on its own terms (Ctrl-C, SIGTERM/SIGHUP, kill -9 of its engine, a reboot) is
failed with the reason, marked interrupted, and re-queued with the same parameter assignment; an interrupted trial
takes no budget and never counts towards maxFailedTrialCount. Several engines may share one study: each stamps the
trials it runs with who it is and a heartbeat (:func:`heartbeat`), so an engine recovers only trials whose engine
is gone (:func:`recover_orphans`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_lib import study_record
from hpo_lib.engine import optuna_compat

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0  # a live engine stamps each of its running trials this often
GRACE_S = 60.0  # a trial of another machine with no stamp for this long has lost its engine
POLL_S = 2.0  # how often an engine re-reads a shared study for freed slots while it waits
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The engine was asked to stop (Ctrl-C, SIGTERM, SIGHUP); ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.label = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _process_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid from the original."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def this_engine() -> dict[str, Any]:
    """Who this engine is, as it stamps its trials: host, pid, and the process's start (a reused pid differs)."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_started(os.getpid())}


def _engine_gone(trial: optuna.trial.FrozenTrial, me: dict[str, Any], now: float) -> bool:
    """Whether the engine that runs this RUNNING trial is dead. On this machine that is known at once (is its
    process alive, and the same process); for another machine's trial, its heartbeat must be GRACE_S old."""
    owner = trial.user_attrs.get(study_record.OWNER)
    if owner and owner.get("host") == me["host"]:
        if owner.get("pid") == me["pid"] and owner.get("started") == me["started"]:
            return False  # one of ours (this engine's own bookkeeping holds it)
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, under another user
        started = _process_started(int(owner["pid"]))
        return owner.get("started") is not None and started is not None and started != owner["started"]
    last = trial.user_attrs.get(study_record.HEARTBEAT)
    if last is None:  # just asked by an engine that has not stamped it yet, or left by an older version
        last = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return now - float(last) > GRACE_S


def recover_orphans(study: optuna.Study, me: dict[str, Any] | None = None) -> list[int]:
    """Fail and re-queue the RUNNING trials whose engine is gone; the numbers of those this call recovered.

    Two engines may race for the same orphan: the one whose ``tell`` lands re-queues it, the other skips it."""
    me = me or this_engine()
    now = time.time()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _engine_gone(trial, me, now):
            if interrupt(study, trial, study_record.KILLED_ENGINE):
                log.warning("trial %d lost its engine: re-running it with the same parameters", trial.number)
                recovered.append(trial.number)
    return recovered


def interrupt(study: optuna.Study, trial: optuna.trial.Trial | optuna.trial.FrozenTrial, reason: str) -> bool:
    """Record a RUNNING trial that this engine holds no running process of (an orphan, or one asked but not yet
    launched) as interrupted, failed with the reason, and queue its re-run; False when another engine finished it
    first."""
    try:
        optuna_compat.set_trial_attr(study, trial, study_record.FAIL_REASON, reason)
        optuna_compat.set_trial_attr(study, trial, study_record.INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
        return False
    study.enqueue_trial(trial.params, user_attrs={study_record.RERUN_OF: trial.number})
    return True


def heartbeat(trials: Iterable[optuna.trial.Trial]) -> None:
    """Stamp this engine's running trials: it is alive."""
    now = time.time()
    for trial in trials:
        trial.set_user_attr(study_record.HEARTBEAT, now)


def install_stop_signals(requested: list[int]) -> dict[int, Any]:
    """Ctrl-C, SIGTERM and SIGHUP (a closing terminal, `timeout`, systemd, a pod's stop) all stop the engine the
    same way; returns the handlers to restore. The handler only notes the signal, and the loop raises
    :class:`Interrupted` at its next safe point (within half a second): an exception raised inside a signal handler
    can land in a garbage-collector callback, where Python prints and drops it. Only the main thread may set
    handlers: elsewhere nothing changes and Ctrl-C stays Python's KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def note(signum, _frame):
        requested.append(signum)

    return {signum: signal.signal(signum, note) for signum in STOP_SIGNALS}


def restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    """While the engine records what an interruption cut short, a second signal must not cut the recording."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
