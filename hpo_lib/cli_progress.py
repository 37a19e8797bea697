"""What ``hpo`` shows while work runs: the progress of ``hpo tune`` (:class:`TuneProgress`, from the engine's
:class:`~hpo_lib.engine.options.Progress`) and the step and epoch lines of ``hpo pipeline run-local``
(:func:`pipeline_lines`, from the steps' :class:`~hpo_lib.pipeline.progress.StepProgress`). Both are callbacks the
API calls; they only draw.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from hpo_lib.study_record import EARLY_STOPPED, FAILED, planned_epochs

if TYPE_CHECKING:
    from hpo_lib.engine.options import EndedTrial, Progress, RunningTrial
    from hpo_lib.pipeline.progress import StepProgress


def number(value: Any) -> str:
    """A parameter or metric value as a line shows it: floats at 4 significant digits, the rest as they are."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """``4 min 12 s``, ``38 s``, ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def ended_line(trial: EndedTrial) -> str:
    """One line for a trial that ended: how, its value, its epochs and time."""
    value = "no value" if trial.value is None else f"value {number(trial.value)}"
    took = duration(trial.duration_s)
    if trial.condition == EARLY_STOPPED:
        return f"trial {trial.number} early-stopped at epoch {trial.reports}: {value}, {took}"
    if trial.condition == FAILED:
        return f"trial {trial.number} failed after {trial.reports} epochs, {took} (its reason is logged)"
    return f"trial {trial.number} succeeded: {value} after {trial.reports} epochs, {took}"


def started_line(trial: RunningTrial) -> str:
    params = " ".join(f"{name}={number(value)}" for name, value in trial.params)
    return f"trial {trial.number} started: {params}".rstrip()


def _epochs(trial: RunningTrial) -> str:
    return f"epoch {trial.reports}/{planned_epochs(trial.argv) or '?'}"


STARTING = "trials: starting the engine (manifest, study, first trials)"


class TuneProgress:
    """The progress of ``hpo tune``, for a person at a terminal or for a log.

    On a terminal (stdout and stderr both): a block on stderr, redrawn every second, that fits the terminal's width:
    a bar with trials done of the budget, the elapsed time and the time left (from the trials ended in this run
    only, so a resumed study's earlier trials do not inflate the rate), the counts and the best value; below it one
    line per running trial (its epoch and parameters). Each trial's start and end is written above the block, where
    it stays. Anywhere else (a pipe, a file, CI, a Kubernetes Job): plain lines on stdout, where the results go too:
    each trial's start with its parameters, its epochs at most every :attr:`EPOCH_EVERY_S` seconds, its end with
    its value, and a summary. On a terminal a first line appears at once, before the engine loads; a log's first
    line is the first trial's start (a refusal before any trial stays the one line on stderr).
    """

    REFRESH_S = 1.0
    EPOCH_EVERY_S = 30.0  # lines mode: a running trial's epoch line at most this often

    def __init__(
        self, *, enabled: bool, terminal: bool | None = None, out: TextIO | None = None, width: int | None = None
    ) -> None:
        self.enabled = enabled
        self.terminal = sys.stdout.isatty() and sys.stderr.isatty() if terminal is None else terminal
        self.out = out or (sys.stderr if self.terminal else sys.stdout)
        self.width = width
        self.last: Progress | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._started: dict[int, float] = {}  # running trial -> when it was first seen
        self._told: dict[int, float] = {}  # lines mode: running trial -> when its last line was written
        self._epochs_told: dict[int, int] = {}
        self._n_ended = 0
        self._height = 0  # terminal mode: the block's lines now on screen
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []

    def __enter__(self) -> TuneProgress:
        if not self.enabled:
            return self
        if self.terminal:
            self._redirect_logging()
            self._paint([STARTING])
            self._timer = threading.Thread(target=self._tick, name="hpo-progress", daemon=True)
            self._timer.start()
        return self

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            ended = progress.ended[self._n_ended :]
            self._n_ended = len(progress.ended)
            lines = [ended_line(t) for t in ended]
            for gone in ended:
                self._started.pop(gone.number, None)
            for trial in progress.trials:
                if trial.number not in self._started:
                    self._started[trial.number] = self._told[trial.number] = now
                    self._epochs_told[trial.number] = trial.reports
                    lines.append(started_line(trial))
                elif not self.terminal and trial.reports != self._epochs_told[trial.number]:
                    if now - self._told[trial.number] >= self.EPOCH_EVERY_S:
                        self._told[trial.number], self._epochs_told[trial.number] = now, trial.reports
                        lines.append(f"trial {trial.number}: {_epochs(trial)}")
            self.last = progress
            if self.terminal:
                self._paint(self._block(), above=lines)
            else:
                for line in lines:
                    self._write(line)

    def summary(self) -> str:
        """The last line: the trials this run ended (not those of a resumed study's earlier runs), how, in what
        time, and the study's best value."""
        p, elapsed = self.last, duration(time.monotonic() - self._t0)
        if p is None:
            return f"tune: no trial ended in this run ({elapsed})"
        conditions = [t.condition for t in p.ended]
        stopped, failed = conditions.count(EARLY_STOPPED), conditions.count(FAILED)
        best = f"{p.front} on the Pareto front" if p.front is not None else number(p.best[0]) if p.best else "none yet"
        ok = len(conditions) - stopped - failed
        return (
            f"tune: {len(conditions)} trials in {elapsed}: {ok} succeeded, {stopped} early-stopped, {failed} failed; "
            f"best {best}"
        )

    def __exit__(self, exc_type, *exc_info) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=2)
        with self._lock:
            if not self.terminal:
                if exc_type is None:
                    self._write(self.summary())
                return
            final = [self._bar()] if self.last is not None else []  # the running trials' lines go
            self._paint(final + [self.summary()] if exc_type is None else final)
            self._height = 0  # what follows (the results, an error) prints below, untouched
            self._restore_logging()

    # ------------------------------------------------------------------------------- drawing
    def _columns(self) -> int:
        if self.width:
            return self.width
        try:
            return os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError, io.UnsupportedOperation):
            return 80

    def _bar(self) -> str:
        """``trials 3/8 |█████     | 02:10<03:15 run 2 ok 1 stop 0 fail 0 best 0.2601``, at most the width - 1."""
        p, columns = self.last, self._columns()
        if p is None:
            return STARTING[: columns - 1]
        elapsed = time.monotonic() - self._t0
        ended = len(p.ended)
        left = max(p.total - p.finished, 0)
        eta = elapsed / ended * left if ended else None
        best = f"front {p.front}" if p.front is not None else number(p.best[0]) if p.best else "-"
        head = f"trials {p.finished}/{p.total} "
        tail = (
            f" {_clock(elapsed)}<{_clock(eta)} run {p.running} ok {p.complete} stop {p.pruned} fail {p.failed} "
            f"best {best}"
        )
        room = columns - 1 - len(head) - len(tail) - 2
        if room < 4:
            return (head + tail.lstrip())[: columns - 1]
        full = min(room, int(room * p.finished / p.total)) if p.total else 0
        fill = "#" if (getattr(self.out, "encoding", "") or "").lower().replace("-", "") != "utf8" else "\u2588"
        return f"{head}|{fill * full}{' ' * (room - full)}|{tail}"

    def _block(self) -> list[str]:
        columns = self._columns()
        lines = [self._bar()]
        if self.last is not None:
            now = time.monotonic()
            for t in self.last.trials:
                params = " ".join(f"{name}={number(value)}" for name, value in t.params)
                took = _clock(now - self._started.get(t.number, now))
                lines.append(f"  #{t.number} {_epochs(t)} {took} {params}"[: columns - 1])
        return lines

    def _paint(self, block: Sequence[str], above: Sequence[str] = ()) -> None:
        """Replace the block on screen with ``block``, writing the ``above`` lines (kept) before it."""
        with self._lock:
            # line by line (erase the line, write it): some terminals keep what an erase-below clears as history
            rows = [*above, *block]
            text = (f"\x1b[{self._height}F" if self._height else "\r") + "".join(f"\x1b[2K{r}\n" for r in rows)
            extra = self._height - len(rows)
            if extra > 0:  # the old block was taller: blank its last lines and come back up
                text += "\x1b[2K\n" * extra + f"\x1b[{extra}F"
            self.out.write(text)
            self.out.flush()
            self._height = len(block)

    def _write(self, line: str) -> None:
        """A line that stays: above the block on a terminal, else a plain line."""
        with self._lock:
            if self.terminal:
                self._paint(self._block() if self._height else [], above=[line])
            else:
                self.out.write(f"[{_clock(time.monotonic() - self._t0)}] {line}\n")
                self.out.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.REFRESH_S):
            with self._lock:
                if not self._stop.is_set():
                    self._paint(self._block())

    def _redirect_logging(self) -> None:
        """Log records that would go to our stream (the engine's warnings) are written above the block instead."""
        progress = self

        class Above(io.TextIOBase):
            def write(self, text: str) -> int:
                for line in text.rstrip("\n").split("\n"):
                    progress._write(line)
                return len(text)

        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.out:
                self._handlers.append((handler, handler.setStream(Above())))

    def _restore_logging(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()


def pipeline_lines(terminal: TextIO, intro: str = "") -> Callable[[StepProgress], None]:
    """The callback that shows the local pipeline's progress on ``terminal`` (the stdout of now: kfp's echo of the
    steps goes elsewhere): ``intro`` before the first step, each step as it starts, each retrain's epochs (about
    five lines per retrain and phase, and its last epoch)."""
    seen: set[str] = set()

    def write(line: str) -> None:
        # not print(): kfp's local runner swaps builtins.print for an indenting one while a step runs (this runs on
        # the progress thread meanwhile), and that one writes its indent to sys.stdout, not to ``terminal``
        terminal.write(line + "\n")
        terminal.flush()

    def show(progress: StepProgress) -> None:
        if intro and not seen:
            write(intro)
        if progress.step != "retrain":
            if progress.step not in seen:
                seen.add(progress.step)
                write(f"step: {progress.step}")
            return
        if "retrain" not in seen:
            seen.add("retrain")
            write("step: retrain (two at a time)")
        if not progress.epoch:
            write(f"  retrain {progress.item}: started")
            return
        every = max(1, progress.epochs // 5)
        if progress.epoch % every == 0 or progress.epoch == progress.epochs:
            phase = "" if progress.phase == "fit" else f" ({progress.phase})"
            line = f"  retrain {progress.item}: epoch {progress.epoch}/{progress.epochs}{phase}"
            write(line)

    return show
