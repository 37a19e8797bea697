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

import logging
import os
import queue
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

from hpo_lib.engine import pruners, sampling
from hpo_lib.errors import ConfigError, first_line
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

    @property
    def study_db(self) -> Path:
        """The default SQLite file of the studies (used when ``storage`` is not set)."""
        return self.state_dir / "studies.db"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.study_db}"


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

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass
class _Running:
    trial: optuna.trial.Trial
    process: subprocess.Popen
    started: float
    output_dir: Path
    started_wall: float = field(default_factory=time.time)
    threshold: float | None = None  # multi-objective studies: the frozen medianstop threshold of this trial
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reports: int = 0
    observations: dict[str, list[float]] = field(default_factory=dict)
    deadline: float | None = None
    pruned: bool = False
    reason: str = ""


# ----------------------------------------------------------------------------------------------- trial command
def local_command(
    doc: dict[str, Any], assignments: dict[str, str], options: TuneOptions, output_dir: Path
) -> tuple[list[str], dict[str, str], float | None]:
    """A trial's command (:func:`hpo_lib.katib.experiment.trial_command`) resolved to this machine: ``hpo`` and
    ``python`` from this environment, the container's env over ours (but our HOME), the local overrides applied."""
    command = experiment.trial_command(doc, assignments, {**options.overrides, "output-dir": str(output_dir)})
    argv = command.argv
    bindir = Path(sys.executable).parent
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif (bindir / argv[0]).exists():
        argv[0] = str(bindir / argv[0])
    env = {**os.environ, **{k: v for k, v in command.env.items() if k != "HOME"}, "PYTHONUNBUFFERED": "1"}
    return argv, env, options.trial_timeout_s or command.deadline_s


def _read_lines(number: int, process: subprocess.Popen, events: queue.Queue) -> None:
    assert process.stdout is not None  # _launch starts every trial with stdout=PIPE
    for line in process.stdout:
        events.put((number, "line", line.rstrip("\n")))
    events.put((number, "exit", process.wait()))


def _terminate(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM (what Katib's sidecar sends on early stopping), then kill after a grace period."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ----------------------------------------------------------------------------------------------- engine
def open_study(doc: dict[str, Any], options: TuneOptions, *, sampler=None, pruner=None) -> optuna.Study:
    """Create or load the experiment's study in the configured storage, with a clear error when it cannot."""
    options.state_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage_url
    # cast: optuna's stub wants Literal directions; experiment.objectives yields only "minimize" or "maximize"
    directions = cast(list[Literal["minimize", "maximize"]], [o.direction for o in experiment.objectives(doc)])
    name = experiment.qualified_name(doc)
    try:
        return _create_study(storage, name, directions, sampler, pruner)
    except ValueError as exc:
        if "direction" in str(exc).lower():
            raise ConfigError(
                f"study {name} in {storage} was created with other objectives than this manifest declares: {exc}"
            ) from None
        raise ConfigError(f"cannot open study storage {storage}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Optuna raise many types for an unusable storage
        first = first_line(exc)
        raise ConfigError(f"cannot open study storage {storage}: {first}") from None


def _create_study(storage: str, name: str, directions, sampler, pruner, attempts: int = 8) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)``, retried when another process is creating the same storage.

    Two engines (or an engine and a reader) opening a fresh database at once race on its schema: one of them sees
    "table already exists", "UNIQUE constraint failed: alembic_version" or "database is locked" although nothing is
    wrong. Those errors are transient; anything else, and the last attempt, are raised as they are."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.create_study(
                storage=storage, study_name=name, load_if_exists=True, directions=directions, sampler=sampler,
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
        raise ConfigError(f"no study {name} in {storage}: run `hpo tune {path}` first") from None


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
    distributions = {p["name"]: space.from_katib_parameter(p) for p in spec["parameters"]}
    max_trials = options.max_trials or spec.get("maxTrialCount") or 10
    parallel = options.parallel or spec.get("parallelTrialCount") or 3
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
        sampler, medianstop = sampling.make_sampler(spec["algorithm"], distributions, max_trials), None
    study = open_study(doc, options, sampler=sampler, pruner=pruner)
    _fail_interrupted(study)
    if study.user_attrs.get("objective_names") != [o.metric for o in goals]:
        study.set_user_attr("objective_names", [o.metric for o in goals])
    tracker = _open_tracker(doc, study, options, goals, path)

    events: queue.Queue = queue.Queue()
    running: dict[int, _Running] = {}
    shown: list[Progress] = []  # the last Progress reported, so the face hears only of changes
    completed = False
    try:
        finished_since_check = True  # storage is read for scheduling only when a trial has finished
        while True:
            if finished_since_check:
                finished_since_check = False
                counts = render.state_counts(study)
                finished = counts["complete"] + counts["pruned"] + counts["fail"]
                stop = (
                    finished + len(running) >= max_trials
                    or (max_failed is not None and counts["fail"] >= max_failed > 0)
                    or _goal_reached(study, goal, minimize)
                )
                while not stop and len(running) < parallel and finished + len(running) < max_trials:
                    trial = study.ask(distributions)
                    if isinstance(pruner, pruners.KatibMedianStopPruner):
                        pruner.freeze(study, trial)  # Katib freezes the stopping rule when it creates the trial
                    launched = _launch(doc, trial, options, events)
                    if medianstop is not None:
                        launched.threshold = _curve_threshold(study, medianstop)
                    running[trial.number] = launched
                _report_progress(options.on_progress, study, running, max_trials, shown)
            if not running:
                break
            try:
                number, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                _enforce_deadlines(running)
                continue
            state = running.get(number)
            if state is None:
                continue
            if kind == "line":
                _on_line(study, state, payload, metric_names, filters, medianstop)
            else:
                _finish(study, state, payload, goals, tracker)
                del running[number]
                finished_since_check = True
        completed = True
    except KeyboardInterrupt:
        for state in running.values():  # stop cleanly: running trials end, finished ones stay in storage
            _terminate(state.process, grace_s=5)
            state.reason = "interrupted (Ctrl-C)"
            _finish(study, state, -2, goals, tracker)
        raise
    finally:
        render.export(study, options.state_dir / study.study_name)
        _close_tracker(tracker, study, completed)
    return study


def _curve_threshold(study: optuna.Study, rule: pruners.KatibMedianStopPruner) -> float | None:
    """Katib's medianstop threshold from completed trials' first-objective curves (multi-objective studies,
    where Optuna has no intermediate values): the same arithmetic as the pruner, frozen at the trial's creation."""
    curves = [
        t.user_attrs.get("objective_curve", []) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return pruners.medianstop_threshold(curves, rule.min_trials_required, rule.start_step)


def _open_tracker(
    doc: dict[str, Any], study: optuna.Study, options: TuneOptions, goals: list[Objective], path: str | Path
):
    if not options.tracking:
        return None
    from hpo_lib.results import tracking

    uri = tracking.tracking_uri(options.tracking_uri, state_dir=options.state_dir)
    tracker = tracking.StudyTracker(uri, doc["metadata"]["name"], artifact_root=options.state_dir / "mlartifacts")
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


INTERRUPTED_ATTR = render.INTERRUPTED_ATTR  # the engine writes it, the renderer reads it


def _fail_interrupted(study: optuna.Study) -> None:
    """Trials a killed run left RUNNING can never finish: record them as failed, keep everything else."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        log.warning("trial %d was interrupted by an earlier run: marking it failed", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)
    if orphans:  # a finished trial takes no new attributes: the study remembers why these failed
        study.set_user_attr(
            INTERRUPTED_ATTR, sorted({*study.user_attrs.get(INTERRUPTED_ATTR, []), *(t.number for t in orphans)})
        )


def _launch(doc: dict[str, Any], trial: optuna.trial.Trial, options: TuneOptions, events: queue.Queue) -> _Running:
    assignments = {name: render.katib_value(value) for name, value in trial.params.items()}
    output_dir = options.state_dir / experiment.qualified_name(doc) / f"trial-{trial.number:04d}"
    output_dir.mkdir(parents=True, exist_ok=True)
    argv, env, deadline = local_command(doc, assignments, options, output_dir)
    trial.set_user_attr("argv", argv)
    log_file = open(output_dir / "stderr.log", "w")
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=log_file, text=True, bufsize=1, env=env, start_new_session=True
    )
    log_file.close()
    state = _Running(trial=trial, process=process, started=time.monotonic(), output_dir=output_dir, deadline=deadline)
    threading.Thread(target=_read_lines, args=(trial.number, process, events), daemon=True).start()
    return state


def _on_line(
    study: optuna.Study,
    state: _Running,
    line: str,
    metric_names: list[str],
    filters,
    medianstop: pruners.KatibMedianStopPruner | None = None,
) -> None:
    state.tail.append(line)
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
        if not reason and exit_code != 0:
            reason = f"exited with code {exit_code}"
        missing = [goal.metric for goal, value in zip(goals, values) if value is None]
        if not reason and missing:
            reason = f"never printed the objective {', '.join(missing)} (Katib: MetricsUnavailable)"
    condition = "EarlyStopped" if state.pruned else "Failed" if reason else "Succeeded"
    tail = ("\n".join(state.tail) + _stderr_tail(state.output_dir)) if reason else ""
    if reason:
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("output_tail", tail[-4000:])
        log.warning(
            "trial %d failed: %s; params %s; output in %s", trial.number, reason, trial.params, state.output_dir
        )
    _track(tracker, study, state, condition, tail)
    if state.pruned:
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


def _stderr_tail(output_dir: Path) -> str:
    path = output_dir / "stderr.log"
    return "\n" + "\n".join(path.read_text(errors="replace").splitlines()[-TAIL_LINES:]) if path.exists() else ""


def _observation(observations: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"min": min(v), "max": max(v), "latest": v[-1]} for name, v in observations.items() if v}


def _goal_reached(study: optuna.Study, goal: float | None, minimize: bool) -> bool:
    if goal is None:
        return False
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return any(v <= goal if minimize else v >= goal for v in values)


def _report_progress(
    callback: Callable[[Progress], None] | None,
    study: optuna.Study,
    running: dict[int, _Running],
    total: int,
    shown: list[Progress],
) -> None:
    """Tell the face where the study stands, only when something changed."""
    if callback is None:
        return
    counts = render.state_counts(study)
    multi = len(study.directions) > 1
    best: tuple[float, ...] | None = None
    front = None
    if counts["complete"]:
        if multi:
            front = len(study.best_trials)
        else:
            best = (float(study.best_value),)
    now = Progress(
        total=total,
        running=len(running),
        complete=counts["complete"],
        pruned=counts["pruned"],
        failed=counts["fail"],
        best=best,
        front=front,
    )
    if not shown or shown[-1] != now:
        shown[:] = [now]
        callback(now)
