"""The embedded engine: run a Katib Experiment manifest's trials as local processes under an Optuna study.

The same manifest a cluster runs, read the way Katib reads it:

* search: ``algorithm`` -> the Optuna sampler Katib's Optuna suggestion service builds (``tpe``,
  ``multivariate-tpe``, ``random``, ``grid``, ``cmaes``); ``parameters`` -> the distributions that service builds;
* trials: the primary container's ``command`` + ``args`` with ``${trialParameters.*}`` substituted as Katib does,
  run as a process (``hpo``/``python`` resolved to this environment); stdout read line by line with Katib's StdOut
  filter (or the manifest's ``metricsFormat``); each objective value is one report;
* early stopping: ``medianstop`` as Katib computes it (:mod:`hpo_lib.engine.pruners`), the trial terminated (SIGTERM,
  then kill) and recorded as pruned (Katib: EarlyStopped);
* budget and failures: ``parallelTrialCount`` processes at once, ``maxTrialCount`` finished trials,
  ``maxFailedTrialCount`` failed ones, the objective ``goal``; a trial that exits non-zero or never prints the
  objective fails (its output tail kept) and the study goes on;
* storage: Optuna RDB storage (SQLite under ``.hpo/`` by default); re-running resumes, and trials a killed run left
  RUNNING are marked failed.

All Optuna calls happen on the main thread (one reader thread per trial process feeds a queue), so SQLite sees one
writer and parallel trials never hit lock errors. The engine draws nothing: it calls ``TuneOptions.on_progress``
with a :class:`Progress` whenever the counts change, and the face (``hpo tune``) draws the bar.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from optuna.trial import TrialState

from hpo_lib.engine import pruners, sampling, warm
from hpo_lib.errors import ConfigError, ExperimentFailed, first_line, redact
from hpo_lib.katib import contract, experiment, space
from hpo_lib.katib.experiment import Objective
from hpo_lib.results import render

log = logging.getLogger(__name__)
TAIL_LINES = 40


@dataclass
class TuneOptions:
    """How to run a manifest locally (everything else comes from the manifest)."""

    overrides: dict[str, str] = field(default_factory=dict)  # trial flag -> value, e.g. {"data": "sample:sp500"}
    storage: str | None = None  # any Optuna storage URL; default sqlite:///<state_dir>/studies.db
    state_dir: Path = Path(".hpo")
    max_trials: int | None = None  # overrides maxTrialCount
    parallel: int | None = None  # overrides parallelTrialCount
    pruner: str = "manifest"  # manifest (Katib's rule as configured) | medianstop | optuna-median | hyperband | none
    trial_timeout_s: float | None = None  # default: the Job's activeDeadlineSeconds
    on_progress: Callable[[Progress], None] | None = None  # called when the counts change; the face draws them
    tracking: bool = True  # MLflow: a parent run per study, a nested run per trial
    tracking_uri: str | None = None  # default $MLFLOW_TRACKING_URI, else sqlite:///<state_dir>/mlflow.db
    mo_sampler: str = "manifest"  # multi-objective studies: the manifest's algorithm, or nsga2
    new_study: bool = False  # archive the experiment's stored study as <name>.archived-<UTC time> and start afresh
    # which trials fork from a warm worker: own (the project's trial), python (any command of this interpreter:
    # `python -m MOD`, `python FILE.py`, a script of it), off (every trial a fresh process: `hpo tune --cold-start`)
    warm_start: Literal["own", "python", "off"] = "own"

    @property
    def study_db(self) -> Path:
        """The default SQLite file of the studies (used when ``storage`` is not set)."""
        return self.state_dir / "studies.db"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.study_db}"


@dataclass(frozen=True)
class RunningTrial:
    """A trial that runs now, as a progress bar shows it."""

    number: int
    reports: int  # objective values it printed so far: its epochs, for the project's trial
    argv: tuple[str, ...]  # its command, from which the face reads what it plans (e.g. the trial's --epochs)
    warm: bool  # forked from the warm worker


@dataclass(frozen=True)
class Progress:
    """Where a running study stands: what a progress bar shows."""

    total: int  # the trial budget of this run
    running: int
    complete: int
    pruned: int
    failed: int
    best: tuple[float, ...] | None  # the best objective value (single objective), None before any trial succeeds
    front: int | None  # multi-objective studies: trials on the Pareto front
    trials: tuple[RunningTrial, ...] = ()  # this engine's running trials, in trial order

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass
class _Running:
    trial: optuna.trial.Trial
    process: subprocess.Popen | warm.WarmProcess
    started: float
    output_dir: Path
    argv: tuple[str, ...] = ()
    started_wall: float = field(default_factory=time.time)
    threshold: float | None = None  # multi-objective studies: the frozen medianstop threshold of this trial
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reports: int = 0
    observations: dict[str, list[float]] = field(default_factory=dict)
    deadline: float | None = None
    pruned: bool = False
    interrupted: bool = False  # cut short from outside: re-queued, no budget taken
    reason: str = ""


# ----------------------------------------------------------------------------------------------- trial command
OUTPUT_DIR_ENV = "HPO_OUTPUT_DIR"  # where a trial writes its files; `hpo trial --output-dir` defaults to it


def local_command(
    doc: dict[str, Any], assignments: dict[str, str], options: TuneOptions, output_dir: Path
) -> tuple[list[str], dict[str, str], float | None]:
    """A trial's command (:func:`hpo_lib.katib.experiment.trial_command`) resolved to this machine: ``hpo`` and
    ``python`` from this environment, the container's env over ours (but our HOME), the local overrides applied.

    Nothing is appended to the command (Katib appends nothing either): the trial learns its output folder from
    ``HPO_OUTPUT_DIR`` in its environment, the way Katib's own examples read settings from env variables."""
    command = experiment.trial_command(doc, assignments, options.overrides)
    argv = command.argv
    bindir = Path(sys.executable).parent
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif (bindir / argv[0]).exists():
        argv[0] = str(bindir / argv[0])
    env = {
        **os.environ,
        **{k: v for k, v in command.env.items() if k != "HOME"},
        "PYTHONUNBUFFERED": "1",
        OUTPUT_DIR_ENV: str(output_dir),
    }
    return argv, env, options.trial_timeout_s or command.deadline_s


def _own_trial(argv: list[str]) -> bool:
    """Whether the command runs this project's trial (``hpo trial ...`` or ``python -m hpo_lib.trial ...``)."""
    head = [Path(argv[0]).name, *argv[1:3]]
    return (head[0] == "hpo" and head[1:2] == ["trial"]) or (
        head[0].startswith("python") and head[1:3] == ["-m", "hpo_lib.trial"]
    )


LOG_NAME = "trial.log"  # both streams of a trial, merged in order: Katib's `<command> 1>metrics.log 2>&1`


def _read_lines(
    number: int,
    process: subprocess.Popen | warm.WarmProcess,
    events: queue.Queue,
    log_path: Path,
    from_file: Path | None = None,
) -> None:
    """Feed the trial's merged output to the engine: as metrics lines (StdOut collector), or, when the metrics come
    from a file (``from_file``), as output only, while :func:`_tail_file` feeds the metrics and the exit."""
    assert process.stdout is not None  # _launch starts every trial with stdout=PIPE, stderr merged into it
    with open(log_path, "w", encoding="utf-8", errors="replace") as log_file:
        for line in process.stdout:
            log_file.write(line)
            log_file.flush()
            events.put((number, "output" if from_file else "line", line.rstrip("\n")))
    if from_file is None:
        events.put((number, "exit", process.wait()))


def _file_state(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a file, None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size


def _tail_file(
    number: int,
    process: subprocess.Popen | warm.WarmProcess,
    events: queue.Queue,
    path: Path,
    start: tuple[int, int] | None,
    poll_s: float = 0.2,
) -> None:
    """Katib's File collector: follow the file the trial writes, line by line, until the trial has exited and the
    file is read to its end. Lines written before the trial started are skipped (a pod starts with a fresh file
    system; the engine never deletes a file at a path the manifest names); a file replaced or truncated by the
    trial is read again from its start."""

    inode, offset = start if start else (None, 0)
    pending = b""
    while True:
        ended = process.poll() is not None
        now = _file_state(path)
        if now is not None:
            if now[0] != inode or now[1] < offset:
                inode, offset, pending = now[0], 0, b""
            if now[1] > offset:
                try:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        chunk = f.read(now[1] - offset)
                except OSError:
                    chunk = b""
                offset += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    events.put((number, "line", line.decode("utf-8", "replace").rstrip("\r")))
        if ended:
            if pending.strip():
                events.put((number, "line", pending.decode("utf-8", "replace")))
            break
        time.sleep(poll_s)
    events.put((number, "exit", process.wait()))


def _die_with_engine() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGTERM the trial when the engine dies, even by kill -9 (Linux's
    parent-death signal; None elsewhere). It fires when the thread that forked the trial ends, and trials are
    forked from the engine's main thread, which lives as long as the engine does."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, before the fork: the child only calls it
    parent = os.getpid()

    def child() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the engine died between fork and prctl: nothing would signal us
            os._exit(1)

    return child


def _terminate(process: subprocess.Popen | warm.WarmProcess, grace_s: float = 10.0) -> None:
    """SIGTERM (what Katib's sidecar sends on early stopping) to the trial's process group, so whatever the trial
    started ends with it, then SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen | warm.WarmProcess, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # each trial leads its own session (start_new_session=True)
    except (ProcessLookupError, PermissionError):
        process.send_signal(signum)


# ----------------------------------------------------------------------------------------------- the sampler's view
TOLD_ATTR = "katib_told"  # early-stopped trial: the objective value(s) Katib's service would tell its study


class KatibTells(optuna.samplers.BaseSampler):
    """The manifest's sampler, shown the history Katib's suggestion service shows its own.

    Katib's Optuna service tells an early-stopped trial as COMPLETE with its observed objective value (the
    strategy's pick of the values it printed before the stop), and never tells a failed one. The engine stores
    early-stopped trials as PRUNED (the user's "EarlyStopped") and failed ones as FAIL (which Optuna's samplers skip);
    this wrapper makes every sampler see each early-stopped trial as the COMPLETE trial Katib would have told, so
    the laptop's suggestions follow the cluster's once trials are stopped."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.inner = sampler

    def __str__(self) -> str:
        return f"KatibTells({self.inner})"

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(_view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(_view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(_view(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(_view(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(_view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def _view(study: optuna.Study) -> optuna.Study:
    # cast: the view stands in for the study wherever a sampler reads it (every other attribute is the study's)
    return cast(optuna.Study, _KatibHistory(study))


class _KatibHistory:
    """A study as a sampler reads it, with early-stopped trials shown as Katib tells them (see KatibTells)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        wanted = None if states is None else set(states)
        fetch = None if wanted is None else tuple(wanted | {TrialState.PRUNED})
        shown = []
        for t in self._study._get_trials(deepcopy=deepcopy, states=fetch, use_cache=use_cache):
            if t.state != TrialState.PRUNED:
                shown.append(t)
                continue
            told = t.user_attrs.get(TOLD_ATTR)
            if told is None or (wanted is not None and TrialState.COMPLETE not in wanted):
                continue  # Katib tells no early-stopped trial without an observation
            copy = optuna.trial.FrozenTrial(
                number=t.number,
                state=TrialState.COMPLETE,
                value=None,
                values=list(told),
                datetime_start=t.datetime_start,
                datetime_complete=t.datetime_complete,
                params=t.params,
                distributions=t.distributions,
                user_attrs=t.user_attrs,
                system_attrs=t.system_attrs,
                intermediate_values=t.intermediate_values,
                trial_id=t._trial_id,
            )
            shown.append(copy)
        return shown

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list:
        return self.get_trials()


# ----------------------------------------------------------------------------------------------- engine
def open_study(doc: dict[str, Any], options: TuneOptions, *, sampler=None, pruner=None) -> optuna.Study:
    """Create or load the experiment's study in the configured storage, with a clear error when it cannot."""
    import datetime

    from hpo_lib.engine import identity

    options.state_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage_url
    # cast: optuna's stub wants Literal directions; experiment.objectives yields only "minimize" or "maximize"
    directions = cast(list[Literal["minimize", "maximize"]], [o.direction for o in experiment.objectives(doc)])
    name = experiment.qualified_name(doc)
    try:
        if options.new_study and name in optuna.study.get_all_study_names(storage):
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            optuna.copy_study(
                from_study_name=name, from_storage=storage, to_storage=storage, to_study_name=f"{name}.archived-{stamp}"
            )
            optuna.delete_study(study_name=name, storage=storage)
        study = _create_study(storage, name, directions, sampler, pruner)
    except ValueError as exc:
        if "direction" in str(exc).lower():
            raise ConfigError(
                f"study {name} in {storage} was created with other objectives than this manifest declares: {exc}"
            ) from None
        raise ConfigError(f"cannot open study storage {redact(storage)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Optuna raise many types for an unusable storage
        first = first_line(exc)
        raise ConfigError(f"cannot open study storage {redact(storage)}: {first}") from None
    identity.check_or_record(study, doc)  # a study serves one experiment: refused before any ask
    return study


def _create_study(storage: str, name: str, directions, sampler, pruner, attempts: int = 8) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)``, retried when another process is creating the same storage.

    Two engines (or an engine and a reader) opening a fresh database at once race on its schema: one of them sees
    "table already exists", "UNIQUE constraint failed: alembic_version" or "database is locked" although nothing is
    wrong. Those errors are transient; anything else, and the last attempt, are raised as they are."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=name,
                load_if_exists=True,
                directions=directions,
                sampler=sampler,
                pruner=pruner,
            )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as exc:
            text = str(exc).lower()
            transient = any(s in text for s in ("already exists", "unique constraint", "locked", "duplicate"))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def load_study(path: str | Path, options: TuneOptions) -> optuna.Study:
    """The study a manifest's earlier ``hpo tune`` wrote (for results, reports and the dashboard)."""
    name = experiment.qualified_name(experiment.load_experiment(path))
    storage = options.storage_url
    if options.storage is None and not options.study_db.exists():
        raise ConfigError(f"no studies under {options.state_dir}/: run `hpo tune {path}` first")
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {name} in {redact(storage)}: run `hpo tune {path}` first") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Optuna raise many types for an unreadable storage
        raise ConfigError(f"cannot read study storage {redact(storage)}: {first_line(exc)}") from None


def run(path: str | Path, options: TuneOptions | None = None) -> optuna.Study:
    """Run (or resume) the manifest's experiment locally; returns the Optuna study."""
    options = options or TuneOptions()
    doc = experiment.load_experiment(path)
    spec = doc["spec"]
    objective = spec["objective"]
    goals = experiment.objectives(doc)
    multi = len(goals) > 1
    metric_names = experiment.collected_metrics(doc)
    filters = experiment.metrics_filters(doc)
    collection = experiment.metrics_collection(doc)
    distributions = {p["name"]: space.from_katib_parameter(p) for p in spec["parameters"]}
    max_trials = options.max_trials or spec.get("maxTrialCount") or 10
    # this engine runs up to `parallel` trials at once; the study, across every engine sharing it, up to `shared`
    parallel = options.parallel or spec.get("parallelTrialCount") or 3
    shared = max(parallel, spec.get("parallelTrialCount") or 3)
    _check_collection(collection, parallel)
    max_failed = spec.get("maxFailedTrialCount")
    goal = objective.get("goal")
    minimize = objective["type"] == "minimize"

    pruner: optuna.pruners.BasePruner | None = (
        pruners.from_katib_settings(spec.get("earlyStopping"))
        if options.pruner == "manifest"
        else pruners.make_pruner(options.pruner, **_early_stopping_settings(spec, options.pruner))
    )
    if multi:
        sampler = sampling.multi_objective_sampler(spec["algorithm"], distributions, max_trials, options.mo_sampler)
        if not isinstance(pruner, (pruners.KatibMedianStopPruner, optuna.pruners.NopPruner)):
            raise ConfigError(
                f"pruner {options.pruner}: Optuna cannot prune multi-objective studies; use "
                "manifest, medianstop (Katib's rule on the first objective) or none",
                settings=("pruner",),
            )
        medianstop, pruner = (pruner if isinstance(pruner, pruners.KatibMedianStopPruner) else None), None
    else:
        startup = spec.get("parallelTrialCount") or 3  # Hyperopt's random start on Katib: one batch of trials
        sampler = sampling.make_sampler(spec["algorithm"], distributions, max_trials, startup_trials=startup)
        medianstop = None
    _inside(options.state_dir, experiment.qualified_name(doc))  # every file of this run stays under --state-dir
    _preflight(doc, options, spec["parameters"])  # a typo in a flag costs one line, before any study or trial
    server = _warm_server(doc, options, spec["parameters"])  # its imports overlap with opening the study
    try:
        tracker = _connect_tracker(doc, options)
        study = open_study(doc, options, sampler=KatibTells(sampler), pruner=pruner)
        me = _me()
        recover_orphans(study, me)
        if study.user_attrs.get("objective_names") != [o.metric for o in goals]:
            study.set_user_attr("objective_names", [o.metric for o in goals])
        tracker = _open_tracker(tracker, doc, study, options, goals, path)
        lock = _SchedulingLock(options.storage_url, study.study_name)
    except BaseException:
        if server is not None:
            server.close()
        raise

    events: queue.Queue = queue.Queue()
    running: dict[int, _Running] = {}
    shown: list[Progress] = []  # the last Progress reported, so the face hears only of changes
    completed = False
    asking: optuna.trial.Trial | None = None  # asked but not yet running: an interruption there must not orphan it
    requested: list[int] = []  # signals noted by the handlers, raised as Interrupted at the loop's safe points
    previous_handlers = _install_stop_signals(requested)
    try:
        check_at = 0.0  # storage is read for scheduling when a trial finished, or every POLL_S while waiting
        beat_at = time.monotonic() + HEARTBEAT_S
        while True:
            if requested:
                raise Interrupted(requested[0])
            now = time.monotonic()
            if now >= check_at:
                check_at = now + POLL_S
                recover_orphans(study, me)
                with lock:  # count and ask under one lock: engines sharing the study never overshoot the budget
                    counts = tally(study)
                    ended = _ended(study, counts, max_failed, goal, minimize)
                    while (
                        not ended
                        and len(running) < parallel
                        and counts.running < shared
                        and counts.used < max_trials
                        and not requested
                    ):
                        trial = asking = study.ask(distributions)
                        trial.set_user_attr(OWNER_ATTR, me)
                        trial.set_user_attr(HEARTBEAT_ATTR, time.time())
                        if isinstance(pruner, pruners.KatibMedianStopPruner):
                            pruner.freeze(study, trial)  # Katib freezes the stopping rule when it creates the trial
                        launched = _launch(doc, trial, options, events, collection, server)
                        if medianstop is not None:
                            launched.threshold = _curve_threshold(study, medianstop)
                        running[trial.number] = launched
                        asking = None
                        counts = dataclasses.replace(counts, running=counts.running + 1)  # no storage read per launch
                _report_progress(options.on_progress, counts, study, running, max_trials, shown)
                # done when nothing of ours runs and the experiment ended or its budget finished; while another
                # engine's trials run, wait: they may finish, or lose their engine and come back to be re-run
                if not running and (ended or counts.finished >= max_trials):
                    break
            if now >= beat_at:
                beat_at = now + HEARTBEAT_S
                _heartbeat(running)
            try:
                number, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                _enforce_deadlines(running)
                continue
            state = running.get(number)
            if state is None:
                continue
            if kind == "output":  # a File collector's trial: its output is kept, its metrics come from the file
                state.tail.append(payload)
            elif kind == "line":
                reports = state.reports
                _on_line(study, state, payload, metric_names, filters, medianstop, json_lines=collection.json)
                if state.reports != reports and options.on_progress is not None and shown:  # an epoch: no storage read
                    _report_epochs(options.on_progress, running, shown)
            else:
                _finish(study, state, payload, goals, tracker)
                del running[number]
                check_at = 0.0
        completed = True
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: running trials end and re-run on resume
        _ignore_stop_signals()
        label = exc.label if isinstance(exc, Interrupted) else "Ctrl-C"
        for state in running.values():
            _terminate(state.process, grace_s=5)
            state.reason, state.interrupted = f"interrupted ({label})", True
            _finish(study, state, -2, goals, tracker)
        if asking is not None and asking.number not in running:
            _interrupt(study, asking.number, asking._trial_id, asking.params, f"interrupted ({label})")
        raise
    finally:
        _restore_signals(previous_handlers)
        if server is not None:
            server.close()
        render.export(study, options.state_dir / study.study_name)
        _close_tracker(tracker, study, completed)
    counts = tally(study)
    if max_failed is not None and counts.failed >= max_failed > 0:
        raise ExperimentFailed(
            f"experiment {study.study_name} failed: {counts.failed} trial(s) failed and maxFailedTrialCount is "
            f"{max_failed} (Katib: Experiment has failed because max failed count has reached); "
            f"{_first_failure(study)}; everything is in {options.state_dir / study.study_name}/trials.json"
        )
    if counts.failed and not counts.complete + counts.pruned:
        raise ExperimentFailed(
            f"experiment {study.study_name}: every trial failed ({counts.failed}); {_first_failure(study)}; "
            f"everything is in {options.state_dir / study.study_name}/trials.json"
        )
    return study


def _check_collection(collection: experiment.Collection, parallel: int) -> None:
    """The collectors the engine runs as Katib does (StdOut, File); the others refused in one line."""
    if collection.kind not in ("StdOut", "File"):
        raise ConfigError(
            f"metrics collector {collection.kind}: the embedded engine collects StdOut and File metrics only; "
            "run this Experiment on Katib, or collect with kind StdOut or File"
        )
    if collection.kind == "File" and parallel > 1:
        raise ConfigError(
            f"metrics collector File reads {collection.path}, one path every trial process would share on this "
            f"machine (each pod has its own on Katib): run {parallel} trials at once on a cluster, or one here",
            settings=("parallel",),
        )


def _inside(base: Path, name: str) -> Path:
    """``base / name``, refused with one line when ``name`` (from the manifest) would lead outside ``base``."""
    folder = base / name
    if (
        Path(name).is_absolute()
        or not folder.resolve().is_relative_to(base.resolve())
        or folder.resolve() == base.resolve()
    ):
        raise ConfigError(
            f"experiment name {name!r} would write outside {base}/: metadata.name and metadata.namespace must be "
            "Kubernetes names (lower-case letters, digits, '-' and '.'), with no '/' or '..'"
        )
    return folder


def _ended(study: optuna.Study, counts: Tally, max_failed: int | None, goal: float | None, minimize: bool) -> bool:
    """Katib's early ends of an Experiment: maxFailedTrialCount reached, or the objective's goal met."""
    return (max_failed is not None and counts.failed >= max_failed > 0) or _goal_reached(study, goal, minimize)


def _first_failure(study: optuna.Study) -> str:
    """The first trial that failed on its own, its reason and its last output line, for the one-line error."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get(INTERRUPTED_TRIAL_ATTR):
            continue
        lines = [
            line.strip()
            for line in str(t.user_attrs.get("output_tail", "")).splitlines()
            if line.strip() and not line.strip().startswith(("Traceback (most recent call last)", 'File "'))
        ]
        last = f": {redact(lines[-1])[:200]}" if lines else ""  # a stack's last line is its cause
        return f"the first, trial {t.number}, {t.user_attrs.get('fail_reason', 'failed')}{last}"
    return "no trial failed on its own"


def _preflight(doc: dict[str, Any], options: TuneOptions, parameters: list[dict[str, Any]]) -> None:
    """When the trial command is this project's trial, check its flags (the manifest's and ``--set``'s) with the
    trial's own parser before any trial starts, on one assignment inside the search space: a typo then costs one
    line, not every trial. The trial is reached as a process (``--check-flags``), as the engine reaches it always."""
    assignments = {p["name"]: _some_value(p) for p in parameters}
    argv, env, _ = local_command(doc, assignments, options, options.state_dir)
    if not _own_trial(argv):
        return
    env.pop(OUTPUT_DIR_ENV, None)
    try:
        done = subprocess.run(
            [*argv, "--check-flags"], capture_output=True, text=True, env=env, timeout=60, errors="replace"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run the trial command {argv[0]}: {first_line(exc)}") from None
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        why = said[-1].split(": error: ", 1)[-1] if said else f"exit code {done.returncode}"
        raise ConfigError(
            f"the trial refuses its flags before any trial starts: {why}; fix the manifest's args or the --set value"
        )


WARM_LOG = "warm-worker.log"  # the fork server's own stderr, beside the experiment's trial folders


def _warm_server(doc: dict[str, Any], options: TuneOptions, parameters: list[dict[str, Any]]) -> warm.WarmServer | None:
    """The fork server that starts trials warm (:mod:`hpo_lib.engine.warm`), started now. None when
    ``--cold-start`` is set, or when the trial command is not ours (``warm_start="python"``: not a command of this
    Python); any other command runs as a plain process, as on Katib. It preloads the trial's module (and the ``hpo``
    script's, for ``hpo trial``); the engine still reaches the trial only as a command, run in a child of that
    server."""
    if options.warm_start not in ("own", "python"):
        return None
    argv, env, _ = local_command(doc, {p["name"]: _some_value(p) for p in parameters}, options, options.state_dir)
    own = _own_trial(argv)
    if not (own or options.warm_start == "python") or not warm.runnable(argv, env):
        return None
    preload = [] if not own else ["hpo_lib.trial"] if argv[1:2] == ["-m"] else ["hpo_lib.cli", "hpo_lib.trial"]
    server = warm.WarmServer(
        preload, options.state_dir / experiment.qualified_name(doc) / WARM_LOG, preexec=_die_with_engine()
    )
    server.start()
    return server


def _some_value(parameter: dict[str, Any]) -> str:
    """One value of a Katib parameter's feasible space (its first listed value, else its min)."""
    feasible = parameter.get("feasibleSpace") or {}
    values = feasible.get("list")
    return str(values[0]) if values else str(feasible.get("min", ""))


def _curve_threshold(study: optuna.Study, rule: pruners.KatibMedianStopPruner) -> float | None:
    """Katib's medianstop threshold from completed trials' first-objective curves (multi-objective studies,
    where Optuna has no intermediate values): the same arithmetic as the pruner, frozen at the trial's creation."""
    curves = [
        t.user_attrs.get("objective_curve", []) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return pruners.medianstop_threshold(curves, rule.min_trials_required, rule.start_step)


def _connect_tracker(doc: dict[str, Any], options: TuneOptions):
    """The MLflow tracker, or None; an unusable server is one line here, before any study exists."""
    if not options.tracking:
        return None
    from hpo_lib.results import tracking

    uri = tracking.tracking_uri(options.tracking_uri, state_dir=options.state_dir)
    return tracking.StudyTracker(uri, doc["metadata"]["name"], artifact_root=options.state_dir / "mlartifacts")


def _open_tracker(
    tracker, doc: dict[str, Any], study: optuna.Study, options: TuneOptions, goals: list[Objective], path: str | Path
):
    if tracker is None:
        return None
    from hpo_lib.results import tracking

    spec = doc["spec"]
    run_id = tracker.open_study(
        study.study_name,
        study.user_attrs,
        params={
            "manifest": str(path),
            "algorithm": spec["algorithm"]["algorithmName"],
            "early_stopping": (spec.get("earlyStopping") or {}).get("algorithmName", "none"),
            "pruner": options.pruner,
            "objectives": ",".join(f"{o.metric}:{o.direction}" for o in goals),
            "max_trials": options.max_trials or spec.get("maxTrialCount"),
            "parallel": options.parallel or spec.get("parallelTrialCount"),
            **{f"set.{k}": v for k, v in options.overrides.items()},
        },
    )
    study.set_user_attr(tracking.PARENT_ATTR, run_id)
    return tracker


def _close_tracker(tracker, study: optuna.Study, completed: bool) -> None:
    if tracker is None:
        return
    counts = render.state_counts(study)
    summary = {f"trials_{k}": float(v) for k, v in counts.items()}
    summary.update(render.compute_summary(study))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete and len(study.directions) == 1:
        summary["best_value"] = float(study.best_value)
    try:
        tracker.close_study(summary, render.leaderboard(study), failed=not completed)
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the study
        log.warning("MLflow: could not close the study run: %s", exc)


def _early_stopping_settings(spec: dict[str, Any], pruner: str) -> dict[str, Any]:
    """The manifest's medianstop settings that the chosen local pruner understands (Hyperband takes none)."""
    settings = {k: int(v) for k, v in experiment.settings(spec.get("earlyStopping")).items()}
    accepted = {
        "medianstop": ("min_trials_required", "start_step"),
        "optuna-median": ("min_trials_required", "start_step"),
    }.get(pruner, ())
    return {k: v for k, v in settings.items() if k in accepted}


INTERRUPTED_ATTR = render.INTERRUPTED_ATTR  # studies of earlier versions: trials a killed engine left RUNNING

# ----------------------------------------------------------------------------------------------- interruption
# A trial the engine did not end on its own terms (Ctrl-C, SIGTERM/SIGHUP, kill -9 of its engine, a reboot) is
# failed with the reason, marked interrupted, and re-queued with the same parameter assignment; an interrupted trial
# takes no budget and never counts towards maxFailedTrialCount. Several engines may share one study: each stamps the
# trials it runs with who it is and a heartbeat, so an engine recovers only trials whose engine is gone.
OWNER_ATTR = "engine"  # trial: {"host", "pid", "started"} of the engine process running it
HEARTBEAT_ATTR = "heartbeat"  # trial: the UNIX time its engine last said it was alive
INTERRUPTED_TRIAL_ATTR = render.INTERRUPTED_TRIAL_ATTR  # trial: True when the trial was cut short from outside
RERUN_ATTR = render.RERUN_ATTR  # trial: the number of the interrupted trial it re-runs with the same assignment
HEARTBEAT_S = 10.0  # a live engine stamps each of its running trials this often
GRACE_S = 60.0  # a trial of another machine with no stamp for this long has lost its engine
POLL_S = 2.0  # how often an engine re-reads a shared study for freed slots while it waits


class Interrupted(KeyboardInterrupt):
    """The engine was asked to stop (Ctrl-C, SIGTERM, SIGHUP); ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.label = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


@dataclass(frozen=True)
class Tally:
    """A study's trials as the budget sees them, across every engine sharing it."""

    complete: int
    pruned: int
    failed: int  # failed on their own: what maxFailedTrialCount counts
    interrupted: int  # cut short from outside and re-queued: no budget taken
    running: int  # by any engine
    waiting: int  # queued (re-runs), not yet started

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def used(self) -> int:
        """Budget taken: finished trials plus the ones running anywhere."""
        return self.finished + self.running


def tally(study: optuna.Study) -> Tally:
    interrupted = render.interrupted_numbers(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return Tally(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL) - len(interrupted),
        interrupted=len(interrupted),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )


def _process_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid from the original."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _me() -> dict[str, Any]:
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_started(os.getpid())}


def _engine_gone(trial: optuna.trial.FrozenTrial, me: dict[str, Any], now: float) -> bool:
    """Whether the engine that runs this RUNNING trial is dead. On this machine that is known at once (is its
    process alive, and the same process); for another machine's trial, its heartbeat must be GRACE_S old."""
    owner = trial.user_attrs.get(OWNER_ATTR)
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
    last = trial.user_attrs.get(HEARTBEAT_ATTR)
    if last is None:  # just asked by an engine that has not stamped it yet, or left by an older version
        last = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return now - float(last) > GRACE_S


def recover_orphans(study: optuna.Study, me: dict[str, Any] | None = None) -> list[int]:
    """Fail and re-queue the RUNNING trials whose engine is gone; the numbers of those this call recovered.

    Two engines may race for the same orphan: the one whose ``tell`` lands re-queues it, the other skips it."""
    me = me or _me()
    now = time.time()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _engine_gone(trial, me, now):
            reason = "interrupted: the engine running it was killed"
            if _interrupt(study, trial.number, trial._trial_id, trial.params, reason):
                log.warning("trial %d lost its engine: re-running it with the same parameters", trial.number)
                recovered.append(trial.number)
    return recovered


def _interrupt(study: optuna.Study, number: int, trial_id: int, params: dict[str, Any], reason: str) -> bool:
    """Record a RUNNING trial as interrupted (failed, with the reason) and queue its re-run; False when another
    engine finished it first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_user_attr(trial_id, INTERRUPTED_TRIAL_ATTR, True)
        study.tell(number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
        return False
    study.enqueue_trial(params, user_attrs={RERUN_ATTR: number})
    return True


class _SchedulingLock:
    """Held while an engine counts the study's budget and asks for a trial, so engines sharing a study never
    overshoot ``maxTrialCount`` or ``parallelTrialCount``: an advisory lock on PostgreSQL, a file lock beside a
    SQLite database; on other databases the budget is checked without a lock (and may overshoot by a trial)."""

    def __init__(self, storage_url: str, study_name: str) -> None:
        import hashlib

        digest = hashlib.sha256(study_name.encode()).digest()
        self.url, self.key = storage_url, int.from_bytes(digest[:8], "big") >> 1  # a bigint for pg_advisory_lock
        self._file: Any = None
        self._engine: Any = None
        self._connection: Any = None

    def __enter__(self) -> _SchedulingLock:
        import fcntl

        if self.url.startswith("sqlite:///"):
            self._file = open(Path(self.url.removeprefix("sqlite:///")).with_suffix(".lock"), "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self.url.startswith(("postgresql", "postgres")):
            import sqlalchemy

            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            self._connection = self._engine.connect()
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        return self

    def __exit__(self, *exc_info) -> None:
        import fcntl

        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            import sqlalchemy

            try:
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                self._connection.close()
                self._connection = None


def _heartbeat(running: dict[int, _Running]) -> None:
    now = time.time()
    for state in running.values():
        state.trial.set_user_attr(HEARTBEAT_ATTR, now)


def _install_stop_signals(requested: list[int]) -> dict[int, Any]:
    """Ctrl-C, SIGTERM and SIGHUP (a closing terminal, `timeout`, systemd, a pod's stop) all stop the engine the
    same way; returns the handlers to restore. The handler only notes the signal, and the loop raises
    :class:`Interrupted` at its next safe point (within half a second): an exception raised inside a signal handler
    can land in a garbage-collector callback, where Python prints and drops it. Only the main thread may set
    handlers: elsewhere nothing changes and Ctrl-C stays Python's KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def note(signum, _frame):
        requested.append(signum)

    return {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _ignore_stop_signals() -> None:
    """While the engine records what an interruption cut short, a second signal must not cut the recording."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


def _launch(
    doc: dict[str, Any],
    trial: optuna.trial.Trial,
    options: TuneOptions,
    events: queue.Queue,
    collection: experiment.Collection,
    server: warm.WarmServer | None = None,
) -> _Running:
    assignments = {name: render.katib_value(value) for name, value in trial.params.items()}
    output_dir = options.state_dir / experiment.qualified_name(doc) / f"trial-{trial.number:04d}"
    output_dir.mkdir(parents=True, exist_ok=True)
    argv, env, deadline = local_command(doc, assignments, options, output_dir)
    trial.set_user_attr("argv", argv)
    from_file = Path(collection.path) if collection.path else None
    start = _file_state(from_file) if from_file else None  # before the trial runs: what it writes comes after
    process: subprocess.Popen | warm.WarmProcess | None = server.launch(argv, env) if server is not None else None
    trial.set_user_attr("warm_start", process is not None)
    if process is None:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_engine(),  # noqa: PLW1509 - only prctl and getppid run between fork and exec
        )
    state = _Running(
        trial=trial,
        process=process,
        started=time.monotonic(),
        output_dir=output_dir,
        argv=tuple(argv),
        deadline=deadline,
    )
    reader = threading.Thread(
        target=_read_lines, args=(trial.number, process, events, output_dir / LOG_NAME, from_file), daemon=True
    )
    reader.start()
    if from_file is not None:
        tail = threading.Thread(target=_tail_file, args=(trial.number, process, events, from_file, start), daemon=True)
        tail.start()
    return state


def _on_line(
    study: optuna.Study,
    state: _Running,
    line: str,
    metric_names: list[str],
    filters,
    medianstop: pruners.KatibMedianStopPruner | None = None,
    *,
    json_lines: bool = False,
) -> None:
    state.tail.append(line)
    if json_lines:
        try:
            parsed = contract.parse_json_metrics_line(line, metric_names)
        except ValueError as exc:  # Katib fails the whole collection on a line that is not a JSON object
            state.reason = f"metrics file: {exc}"
            _terminate(state.process)
            return
    else:
        parsed = contract.parse_metrics_line(line, metric_names, filters)
    if parsed is None or state.pruned:
        return
    _, values = parsed
    for name, raw in values.items():
        try:
            state.observations.setdefault(name, []).append(float(raw))
        except ValueError:
            state.reason = f"metric {name} printed as {raw!r}, which Katib cannot use"
    objective = metric_names[0]
    if objective not in values:
        return
    try:
        value = float(values[objective])
    except ValueError:
        _terminate(state.process)
        return
    state.reports += 1
    if len(study.directions) > 1:  # Optuna has no intermediate values here: Katib's rule on the curve directly
        curve = state.observations[objective]
        if medianstop is not None and pruners.medianstop_stops(
            curve, state.threshold, medianstop.start_step, study.directions[0]
        ):
            state.pruned = True
            _terminate(state.process)
        return
    state.trial.report(value, state.reports - 1)  # 0-based report index
    if state.trial.should_prune():
        state.pruned = True
        _terminate(state.process)


def _enforce_deadlines(running: dict[int, _Running]) -> None:
    now = time.monotonic()
    for state in running.values():
        if state.deadline and now - state.started > state.deadline and state.process.poll() is None:
            state.reason = f"exceeded the trial deadline of {state.deadline:.0f} s (activeDeadlineSeconds)"
            _terminate(state.process)


def _finish(study: optuna.Study, state: _Running, exit_code: int, goals: list[Objective], tracker=None) -> None:
    """Decide the trial's one final state, record its observation, and log one line for a failure."""
    trial, primary = state.trial, goals[0]
    observation = _observation(state.observations)
    trial.set_user_attr("observation", observation)
    trial.set_user_attr("epochs_run", state.reports)
    trial.set_user_attr("output_dir", str(state.output_dir))
    trial.set_user_attr("duration_s", round(time.monotonic() - state.started, 3))
    if len(goals) > 1:
        trial.set_user_attr("objective_curve", state.observations.get(primary.metric, []))
    values = [observation.get(goal.metric, {}).get(goal.strategy) for goal in goals]
    reason = ""
    if not state.pruned:
        reason = state.reason
        if not reason and getattr(state.process, "worker_died", False):
            reason = f"its warm trial worker died (see {WARM_LOG}); the next trials start on a new one"
        if not reason and exit_code != 0:
            reason = f"exited with code {exit_code}"
        missing = [goal.metric for goal, value in zip(goals, values) if value is None]
        if not reason and missing:
            reason = f"never printed the objective {', '.join(missing)} (Katib: MetricsUnavailable)"
    condition = "EarlyStopped" if state.pruned else "Failed" if reason else "Succeeded"
    tail = "\n".join(state.tail) if reason else ""  # the last lines of both streams, merged
    if reason:
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("output_tail", tail[-4000:])
        log.warning(
            "trial %d failed: %s; params %s; output in %s", trial.number, reason, trial.params, state.output_dir
        )
    _track(tracker, study, state, condition, tail)
    if state.interrupted:
        trial.set_user_attr(INTERRUPTED_TRIAL_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={RERUN_ATTR: trial.number})
    elif state.pruned:
        if all(value is not None for value in values):  # what Katib's service tells: the observed value(s)
            trial.set_user_attr(TOLD_ATTR, [float(v) for v in cast(list[float], values)])
        study.tell(trial, state=TrialState.PRUNED)
    elif reason:
        study.tell(trial, state=TrialState.FAIL)
    else:
        done = cast(list[float], values)  # no value is None here: a missing one sets reason above
        study.tell(trial, done if len(goals) > 1 else done[0])


def _track(tracker, study: optuna.Study, state: _Running, condition: str, tail: str) -> None:
    """One nested MLflow run for the trial; a tracking failure costs the tracking, never the trial."""
    if tracker is None:
        return
    trial = state.trial
    try:
        run_id = tracker.log_trial(
            number=trial.number,
            name=f"{study.study_name.split('.', 1)[-1]}-{trial.number:04d}",
            condition=condition,
            params={k: render.katib_value(v) for k, v in trial.params.items()},
            curves=state.observations,
            tags={"hpo.output_dir": str(state.output_dir)},
            output_tail=tail,
            started=state.started_wall,
        )
        trial.set_user_attr("mlflow_run_id", run_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("MLflow: could not log trial %d (%s); the study goes on", trial.number, exc)


def _observation(observations: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"min": min(v), "max": max(v), "latest": v[-1]} for name, v in observations.items() if v}


def _goal_reached(study: optuna.Study, goal: float | None, minimize: bool) -> bool:
    if goal is None:
        return False
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return any(v <= goal if minimize else v >= goal for v in values)


def _running_trials(running: dict[int, _Running]) -> tuple[RunningTrial, ...]:
    return tuple(
        RunningTrial(n, s.reports, s.argv, isinstance(s.process, warm.WarmProcess)) for n, s in sorted(running.items())
    )


def _report_epochs(callback: Callable[[Progress], None], running: dict[int, _Running], shown: list[Progress]) -> None:
    """A running trial reported an epoch: the last Progress with the running trials' epochs brought up to date."""
    now = dataclasses.replace(shown[-1], trials=_running_trials(running))
    if now != shown[-1]:
        shown[:] = [now]
        callback(now)


def _report_progress(
    callback: Callable[[Progress], None] | None,
    counts: Tally,
    study: optuna.Study,
    running: dict[int, _Running],
    total: int,
    shown: list[Progress],
) -> None:
    """Tell the face where the study stands, only when something changed."""
    if callback is None:
        return
    multi = len(study.directions) > 1
    best: tuple[float, ...] | None = None
    front = None
    if counts.complete:
        if multi:
            front = len(study.best_trials)
        else:
            best = (float(study.best_value),)
    now = Progress(
        total=total,
        running=len(running),
        complete=counts.complete,
        pruned=counts.pruned,
        failed=counts.failed,
        best=best,
        front=front,
        trials=_running_trials(running),
    )
    if not shown or shown[-1] != now:
        shown[:] = [now]
        callback(now)
