"""``hpo pipeline run-local`` and :func:`hpo_lib.api.run_pipeline`: the KFP pipeline on kfp's local runner, its
trials taken from the embedded engine's export (``hpo tune``) instead of Katib.

The steps run in kfp's processes; they report their progress to a file and log the retrains to MLflow through the
environment those processes inherit (:data:`~hpo_lib.pipeline.progress.PROGRESS_ENV`, ``MLFLOW_TRACKING_URI``),
and :func:`run` hands each report to the caller's callback in this process. Nothing here prints.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hpo_lib.errors import REDACTED, ConfigError, HpoError, NoWinnersError, first_line
from hpo_lib.katib import experiment as katib_experiment
from hpo_lib.pipeline.progress import PROGRESS_ENV, ProgressCallback, follow_progress
from hpo_lib.pipeline.settings import PipelineSettings
from hpo_lib.study_record import SUCCEEDED

LOG_FILE = "run-local.log"  # in the pipeline root: every step's output, as kfp's local runner echoes it
OUTPUTS = ("summary", "leaderboard", "report", "registry")  # the pipeline's outputs, by name
# the trial flags that define the forecasting problem: a local run's retrains take them from the tuned trials'
# config.json (``hpo tune --set test-frac=0.3`` is in no manifest), so that they forecast what was tuned and keep its
# test split held out
PROBLEM_FLAGS = ("target", "horizon", "split_window", "val_frac", "test_frac", "embargo")


def pipeline_arguments(
    manifest: str | Path,
    settings: PipelineSettings,
    *,
    state_dir: str | Path,
    trials: str | Path | None,
    data: str | None,
    tracking_uri: str,
    mlflow_experiment: str,
    model_name: str,
) -> dict[str, Any]:
    """Every argument of the pipeline for a local run: :func:`local_arguments` (the export, the data), ``settings``
    and MLflow's."""
    arguments = local_arguments(manifest, state_dir=state_dir, trials=trials, data=data, epochs=settings.epochs)
    problem = arguments.pop("problem_flags")
    kfp = {k: v for k, v in settings.kfp_arguments().items() if k != "epochs"}
    kfp["retrain_flags"] = " ".join(part for part in (problem, kfp["retrain_flags"]) if part)  # the caller's win
    return {
        **arguments,
        **kfp,
        "mlflow_experiment": mlflow_experiment,
        "model_name": model_name,
        "tracking_uri": tracking_uri,
    }


def run(
    arguments: Mapping[str, Any],
    *,
    pipeline_root: Path,
    on_progress: ProgressCallback | None = None,
    echo_steps: bool = False,
) -> dict[str, Path]:
    """Run the pipeline with ``arguments`` (:func:`pipeline_arguments`); returns each output's path.

    kfp echoes every step's executor input and output: into ``<pipeline_root>/run-local.log``, or with
    ``echo_steps`` onto this process's stdout. A failed step is one HpoError that says where its traceback is.
    """
    from hpo_lib.pipeline import dag

    log_path = pipeline_root / LOG_FILE
    progress_path = pipeline_root.resolve() / "progress.jsonl"
    progress_path.unlink(missing_ok=True)
    environment = {PROGRESS_ENV: str(progress_path), "MLFLOW_TRACKING_URI": str(arguments["tracking_uri"])}
    if arguments["mlflow_experiment"]:
        environment["MLFLOW_EXPERIMENT_NAME"] = str(arguments["mlflow_experiment"])
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_environment(environment))
            stack.enter_context(_print_kept())
            stack.enter_context(_steps_end_with_this_process(pipeline_root))
            if on_progress is not None:
                stack.enter_context(follow_progress(progress_path, on_progress))
            if not echo_steps:
                log_file = stack.enter_context(open(log_path, "w"))
                stack.enter_context(contextlib.redirect_stdout(log_file))
            task = dag.run_local(pipeline_root=pipeline_root, **arguments)
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        where = "the last traceback above" if echo_steps else f"the last traceback in {log_path}"
        raise HpoError(
            f"{message} The task's error is {where}; the finished steps' artifacts are under {pipeline_root}/"
        ) from None
    return {name: Path(task.outputs[name].path) for name in OUTPUTS}


class _Stopped(BaseException):  # not an Exception: kfp's runner must not catch it as a step's failure
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _steps_end_with_this_process(pipeline_root: Path) -> Iterator[None]:
    """SIGTERM or SIGHUP while the steps run (kfp runs each as a child process of this one): the steps' processes
    get SIGTERM at once, from the handler (kfp waits for a step's process, and for its ParallelFor threads, before an
    exception gets out), SIGKILL 5 s later if still there, and the run ends in one HpoError that names the step(s)
    stopped, so none finishes unsupervised after the command exits. Linux and the main thread only (elsewhere nothing
    changes)."""
    if threading.current_thread() is not threading.main_thread() or not Path("/proc/self/stat").exists():
        yield
        return
    stopped: dict[int, str] = {}  # pid -> the step it ran ("" when its command line names none)

    def stop(signum: int, _frame: Any) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        stopped.update(_signal_descendants(signal.SIGTERM))
        raise _Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except _Stopped as exc:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(_alive(pid) for pid in stopped):
            time.sleep(0.1)
        stopped.update(_signal_descendants(signal.SIGKILL))  # whatever is left, and anything started since
        steps = sorted({step for step in stopped.values() if step})
        named = ", ".join(steps) if steps else "none was running"
        error = HpoError(
            f"stopped by {signal.Signals(exc.signum).name}: the step(s) stopped: {named}; the finished steps' "
            f"artifacts are under {pipeline_root}/"
        )
        error.exit_code = 128 + exc.signum  # type: ignore[attr-defined]  # as a shell reports a signal's end
        raise error from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _signal_descendants(signum: int) -> dict[int, str]:
    """Send ``signum`` to every live descendant process of this one; pid -> the kfp step it runs ("" if none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    found, queue = {}, list(children.get(os.getpid(), []))
    while queue:
        pid = queue.pop()
        queue.extend(children.get(pid, []))
        if not _alive(pid):
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            step = ""
            if b"--function_to_execute" in argv[:-1]:
                step = argv[argv.index(b"--function_to_execute") + 1].decode(errors="replace")
            os.kill(pid, signum)
        except (OSError, IndexError):
            continue
        found[pid] = step
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its kfp thread, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def _print_kept() -> Iterator[None]:
    """``builtins.print`` as it was before the block, whatever kfp left there. kfp's local runner indents each step's
    echo by swapping ``builtins.print`` for the step's run, and runs a ParallelFor's iterations on a thread pool, so two
    retrains' swaps can end out of order and leave this process's ``print`` prefixing four spaces for good
    (kfp 2.17 ``logging_utils.indented_print`` under ``enhanced_dag_orchestrator``)."""
    kept = builtins.print
    try:
        yield
    finally:
        builtins.print = kept


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` set in this process's environment (which kfp's step processes inherit) while the block runs."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _require_a_success(export: Path, manifest: str | Path) -> None:
    """Refuse, in words that say so, an export in which no trial succeeded: nothing can be retrained from it.

    The line counts the trials by condition, gives the first failure's reason, and says where the logs are.
    """
    try:
        records = _read_json(export)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the trials export {export}: {first_line(exc)}", settings=("trials",)) from None
    if not isinstance(records, list):
        raise ConfigError(f"the trials export {export} is not a list of trials", settings=("trials",))
    conditions = [str(r.get("condition", "")) for r in records if isinstance(r, dict)]
    if SUCCEEDED in conditions:
        return
    counts = ", ".join(f"{conditions.count(c)} {c.lower() or 'unknown'}" for c in sorted(set(conditions)))
    reasons = [str(r.get("failReason") or "") for r in records if isinstance(r, dict) and r.get("failReason")]
    first = f"; the first failure: {reasons[0][:200]}" if reasons else ""
    raise NoWinnersError(
        f"no trial succeeded: {len(records)} trial(s) in {export} ({counts or 'none run'}){first}; each trial's "
        f"output is in {export.parent}/trial-*/trial.log: fix the cause and run `hpo tune {manifest}` again"
    )


def local_arguments(
    manifest: str | Path,
    *,
    state_dir: str | Path = ".hpo",
    trials: str | Path | None = None,
    data: str | None = None,
    epochs: int = 0,
) -> dict[str, Any]:
    """Pipeline arguments that take the trials from ``hpo tune``'s export of ``manifest`` instead of Katib.

    ``data`` and ``epochs`` default to what the local trials ran with (their ``config.json``), since ``--set``
    overrides are not in the export; the trials folder defaults to ``<state_dir>/<namespace>.<name>/``.
    ``problem_flags`` (not a pipeline argument: :func:`pipeline_arguments` puts it before the retrain flags) are the
    trials' :data:`PROBLEM_FLAGS` as flags, so the retrains forecast the target, horizon and splits that were tuned.
    """
    doc = katib_experiment.load_experiment(manifest)
    export = Path(trials) if trials else Path(state_dir) / katib_experiment.qualified_name(doc) / "trials.json"
    if not export.exists():
        raise ConfigError(
            f"no trials export at {export}: run `hpo tune {manifest} --state-dir {state_dir}` first "
            f"(or give the trials export)",
            settings=("trials",),
        )
    _require_a_success(export, manifest)
    configs = sorted(export.parent.glob("trial-*/config.json"))
    config = _read_json(configs[0]) if configs else {}
    data = data or config.get("data")
    if not data or REDACTED in data:  # a data spec with a token is stored without it
        raise ConfigError(
            f"cannot tell which data the trials in {export.parent} used: give the data spec", settings=("data",)
        )
    return {
        "tune_mode": "export",
        "trials_export": str(export.resolve()),
        "experiment_yaml": Path(manifest).read_text(),
        "data": data,
        "epochs": int(epochs or config.get("epochs") or 0),
        "problem_flags": " ".join(
            f"--{name.replace('_', '-')}={config[name]}" for name in PROBLEM_FLAGS if config.get(name) is not None
        ),
    }
