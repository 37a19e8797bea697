"""How the pipeline's steps say what they do, without a terminal: a :class:`StepProgress` per event (a step
starting; a retrain's epoch ending) handed to a :data:`ProgressCallback`.

Across the processes of kfp's local runner, the caller sets :data:`PROGRESS_ENV` to a file; every step appends its
reports to it as JSON lines (:func:`progress_to_file`), and :func:`follow_progress` reads them back in the caller's
process, for the face to show.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROGRESS_ENV = "HPO_PROGRESS_FILE"  # a file the steps append their progress to (JSON lines), when set


@dataclass(frozen=True)
class StepProgress:
    """What a step is doing: ``step`` started (``epoch`` 0), or a retrain's ``epoch`` of ``epochs`` ended.

    ``item`` is the retrain's id; ``phase`` is ``fit`` for the retrain, ``origin i/R`` for a rolling-origin refit.
    """

    step: str
    item: str = ""
    phase: str = ""
    epoch: int = 0
    epochs: int = 0


ProgressCallback = Callable[[StepProgress], None]


def progress_to_file(path: str | Path) -> ProgressCallback:
    """A callback that appends each report to ``path`` as one JSON line (one write: parallel steps never mix)."""

    def report(progress: StepProgress) -> None:
        line = (json.dumps(asdict(progress)) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    return report


def reporter(on_progress: ProgressCallback | None) -> ProgressCallback:
    """``on_progress``; else a file reporter when :data:`PROGRESS_ENV` is set; else nothing. A report that cannot
    be written costs the report, never the step."""
    target = on_progress or (progress_to_file(os.environ[PROGRESS_ENV]) if os.environ.get(PROGRESS_ENV) else None)
    if target is None:
        return lambda progress: None

    def report(progress: StepProgress) -> None:
        try:
            target(progress)
        except OSError as exc:
            log.debug("progress not reported: %s", exc)

    return report


@contextlib.contextmanager
def follow_progress(path: str | Path, on_progress: ProgressCallback, *, interval_s: float = 0.5) -> Iterator[None]:
    """Call ``on_progress`` in this process for every report the steps append to ``path`` while the block runs
    (read every ``interval_s``, and once more at the end so that the last reports are not lost)."""
    source = Path(path)
    stop = threading.Event()
    offset = 0

    def drain() -> None:
        nonlocal offset
        try:
            with source.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        offset += len(complete)
        for line in complete.decode().splitlines():
            with contextlib.suppress(ValueError, TypeError):
                on_progress(StepProgress(**json.loads(line)))

    def loop() -> None:
        while not stop.wait(interval_s):
            drain()

    thread = threading.Thread(target=loop, name="pipeline-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        drain()
