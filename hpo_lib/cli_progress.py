"""What ``hpo`` draws while work runs: the live bar of ``hpo tune`` (:class:`ProgressBar`, from the engine's
:class:`~hpo_lib.engine.options.Progress`) and the step and epoch lines of ``hpo pipeline run-local``
(:func:`pipeline_lines`, from the steps' :class:`~hpo_lib.pipeline.progress.StepProgress`). Both are callbacks the
API calls; they only draw.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from hpo_lib.study_record import planned_epochs

if TYPE_CHECKING:
    from hpo_lib.engine.options import Progress
    from hpo_lib.pipeline.progress import StepProgress


class ProgressBar:
    """The live bar of ``hpo tune``: trials done of the budget, running/done/pruned/failed, the best value, and each
    running trial's epoch out of its planned epochs (``#3 2/6``). A timer redraws it every second, so the elapsed time
    moves while trials train (tqdm itself redraws only when told). On a file or pipe (``disable=None``) it prints
    nothing."""

    REFRESH_S = 1.0

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None  # the tqdm bar, made on the first update (tqdm is imported lazily and has no stubs)
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=progress.total, desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True, disable=None
            )
            if not self.bar.disable:
                self._timer = threading.Thread(target=self._tick, name="hpo-progress", daemon=True)
                self._timer.start()
        if self.bar.disable:
            return
        if progress.front is not None:
            best = f"{progress.front} on the front"
        else:
            best = f"{progress.best[0]:.5g}" if progress.best else "-"
        fields = {
            "running": progress.running,
            "done": progress.complete,
            "pruned": progress.pruned,
            "failed": progress.failed,
            "best": best,
        }
        epochs = " ".join(f"#{t.number} {t.reports}/{planned_epochs(t.argv) or '?'}" for t in progress.trials)
        if epochs:
            fields["epochs"] = epochs
        with self.bar.get_lock():
            self.bar.n = progress.finished
            self.bar.set_postfix(fields, refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.REFRESH_S):
            with self.bar.get_lock():
                self.bar.refresh()

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=2)
        if self.bar is not None:
            self.bar.close()


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
