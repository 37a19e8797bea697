"""The embedded engine's loop: run a Katib Experiment manifest's trials as local processes under an Optuna study.

The same manifest a cluster runs, read the way Katib reads it:

* search: ``algorithm`` -> the Optuna sampler closest to Katib's service for it (``tpe``, ``multivariate-tpe``,
  ``random``, ``grid``, ``cmaes``, ``sobol``); ``parameters`` -> the distributions Katib's Optuna service builds;
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

:func:`run` reads top to bottom: :func:`_plan` (the manifest, the sampler and stopping rule, the checks before any
trial, the study), :func:`_loop` (ask, launch, read, finish), :func:`_close` (export, MLflow). The trial's process
lives in :mod:`.process`, the stored study in :mod:`.storage`, interruption and orphans in :mod:`.recovery`, and what
each trial leaves in the study in :mod:`hpo_lib.study_record`.

All Optuna calls happen on the main thread (one reader thread per trial process feeds a queue), so SQLite sees one
writer and parallel trials never hit lock errors. The engine draws nothing: it calls ``TuneOptions.on_progress``
with a :class:`~hpo_lib.engine.options.Progress` whenever the counts change, and the face (``hpo tune``) draws the
bar.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import queue
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from hpo_lib import study_record
from hpo_lib.engine import mlflow_runs, process, pruners, recovery, sampling, storage, warm
from hpo_lib.engine.katib_view import KatibTells
from hpo_lib.engine.options import EndedTrial, Progress, RunningTrial, TuneOptions
from hpo_lib.engine.process import Running
from hpo_lib.errors import ConfigError, ExperimentFailed, WriteError, redact
from hpo_lib.katib import contract, experiment, space
from hpo_lib.katib.experiment import Objective
from hpo_lib.results import render
from hpo_lib.study_record import Tally, TrialRecord, tally

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """What :func:`run` settles before the first trial, and the resources it opened."""

    path: str | Path
    doc: dict[str, Any]
    options: TuneOptions
    goals: list[Objective]
    metric_names: list[str]  # every metric collected; the first is the objective
    filters: Any  # the manifest's metricsFormat, compiled
    collection: experiment.Collection
    distributions: dict[str, optuna.distributions.BaseDistribution]
    max_trials: int
    parallel: int  # trials this engine runs at once
    shared: int  # trials the study runs at once, across every engine sharing it
    max_failed: int | None
    goal: float | None
    minimize: bool
    pruner: optuna.pruners.BasePruner | None
    medianstop: pruners.KatibMedianStopPruner | None  # multi-objective studies: Katib's rule, applied on the curve
    study: optuna.Study
    server: warm.WarmServer | None
    tracker: Any  # hpo_lib.results.tracking.StudyTracker, or None
    lock: storage.SchedulingLock
    me: dict[str, Any]  # who this engine is (recovery.this_engine)
    stamps: dict[tuple[int, str], list] = field(default_factory=dict)  # (trial, metric) -> its values' timestamps


@dataclass
class _Loop:
    """The loop's moving parts."""

    events: queue.Queue = field(default_factory=queue.Queue)  # (number, kind, payload) from the trials' readers
    running: dict[int, Running] = field(default_factory=dict)
    shown: list[Progress] = field(default_factory=list)  # the last Progress reported: the face hears only changes
    ended: list[EndedTrial] = field(default_factory=list)  # the trials this loop ended, for the face's lines
    asking: optuna.trial.Trial | None = None  # asked but not yet running: an interruption there must not orphan it
    requested: list[int] = field(default_factory=list)  # stop signals noted, raised at the loop's safe points


def run(path: str | Path, options: TuneOptions | None = None) -> optuna.Study:
    """Run (or resume) the manifest's experiment locally; returns the Optuna study."""
    plan = _plan(path, options or TuneOptions())
    completed = False
    try:
        _loop(plan)
        completed = True
    finally:
        _close(plan, completed)
    _raise_if_failed(plan)
    return plan.study


# ----------------------------------------------------------------------------------------------- plan
def _plan(path: str | Path, options: TuneOptions) -> _Plan:
    """Read the manifest as Katib would, refuse what cannot run before any study or trial exists, then open the
    study (recovering trials a dead engine left) and MLflow."""
    doc = experiment.load_experiment(path)
    spec = doc["spec"]
    objective = spec["objective"]
    goals = experiment.objectives(doc)
    metric_names = experiment.collected_metrics(doc)
    filters = experiment.metrics_filters(doc)
    collection = experiment.metrics_collection(doc)
    goptuna = contract.SUGGESTION_SERVICES.get(spec["algorithm"].get("algorithmName")) == "goptuna"  # linear
    distributions = {p["name"]: space.from_katib_parameter(p, linear=goptuna) for p in spec["parameters"]}
    for name, value in process.searched_overrides(doc, options.overrides).items():  # --set of a searched one
        distributions[name] = optuna.distributions.CategoricalDistribution([value])  # recorded as the trials ran
    max_trials = options.max_trials or spec.get("maxTrialCount") or 10
    # this engine runs up to `parallel` trials at once; the study, across every engine sharing it, up to `shared`
    parallel = options.parallel or spec.get("parallelTrialCount") or 3
    shared = max(parallel, spec.get("parallelTrialCount") or 3)
    _check_collection(collection, parallel)
    sampler, pruner, medianstop = _search(spec, distributions, max_trials, len(goals) > 1, options)
    _inside(options.state_dir, experiment.qualified_name(doc))  # every file of this run stays under --state-dir
    argv, env = process.sample_command(doc, options)  # built once, for the two below
    process.preflight(argv, env)  # a typo in a flag costs one line, before any study or trial
    # the warm worker's imports overlap with opening the study
    server = process.warm_server(argv, env, options, options.state_dir / experiment.qualified_name(doc))
    try:
        tracker = mlflow_runs.connect(doc, options)
        study = storage.open_study(doc, options, sampler=KatibTells(sampler), pruner=pruner)
        me = recovery.this_engine()
        recovery.recover_orphans(study, me)
        if study.user_attrs.get(study_record.OBJECTIVE_NAMES) != [o.metric for o in goals]:
            study.set_user_attr(study_record.OBJECTIVE_NAMES, [o.metric for o in goals])
        if study.metric_names != [o.metric for o in goals]:  # optuna-dashboard's names, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([o.metric for o in goals])
        tracker = mlflow_runs.open_parent(tracker, doc, study, options, goals, path)
        lock = storage.SchedulingLock(options.storage_url, study.study_name)
    except BaseException:
        if server is not None:
            server.close()
        raise
    return _Plan(
        path=path,
        doc=doc,
        options=options,
        goals=goals,
        metric_names=metric_names,
        filters=filters,
        collection=collection,
        distributions=distributions,
        max_trials=max_trials,
        parallel=parallel,
        shared=shared,
        max_failed=spec.get("maxFailedTrialCount"),
        goal=objective.get("goal"),
        minimize=objective["type"] == "minimize",
        pruner=pruner,
        medianstop=medianstop,
        study=study,
        server=server,
        tracker=tracker,
        lock=lock,
        me=me,
    )


def _search(
    spec: dict[str, Any], distributions: dict[str, Any], max_trials: int, multi: bool, options: TuneOptions
) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner | None, pruners.KatibMedianStopPruner | None]:
    """The sampler Katib would build, the pruner asked for, and (multi-objective studies, where Optuna prunes
    nothing) Katib's rule to apply on the first objective's curve instead."""
    pruner: optuna.pruners.BasePruner | None = (
        pruners.from_katib_settings(spec.get("earlyStopping"))
        if options.pruner == "manifest"
        else pruners.make_pruner(options.pruner, **_early_stopping_settings(spec, options.pruner))
    )
    if not multi:
        return sampling.study_sampler(spec["algorithm"], distributions, max_trials), pruner, None
    algorithm, choice = spec["algorithm"], options.mo_sampler
    sampler = sampling.study_sampler(algorithm, distributions, max_trials, multi=True, choice=choice)
    if not isinstance(pruner, (pruners.KatibMedianStopPruner, optuna.pruners.NopPruner)):
        raise ConfigError(
            f"pruner {options.pruner}: Optuna cannot prune multi-objective studies; use "
            "manifest, medianstop (Katib's rule on the first objective) or none",
            settings=("pruner",),
        )
    return sampler, None, pruner if isinstance(pruner, pruners.KatibMedianStopPruner) else None


# ----------------------------------------------------------------------------------------------- loop
def _loop(plan: _Plan) -> None:
    """Launch trials while the budget allows, read what they print, finish each as it exits; until nothing of
    ours runs and the experiment ended or its budget finished. A stop signal ends the running trials, records them
    as interrupted (re-run on resume) and raises."""
    loop = _Loop()
    previous_handlers = recovery.install_stop_signals(loop.requested)
    try:
        check_at = 0.0  # storage is read for scheduling when a trial finished, or every POLL_S while waiting
        beat_at = time.monotonic() + recovery.HEARTBEAT_S
        while True:
            if loop.requested:
                raise recovery.Interrupted(loop.requested[0])
            now = time.monotonic()
            if now >= check_at:
                check_at = now + recovery.POLL_S
                counts, ended = _schedule(plan, loop)
                _report_progress(plan, counts, loop)
                # done when nothing of ours runs and the experiment ended or its budget finished; while another
                # engine's trials run, wait: they may finish, or lose their engine and come back to be re-run
                if not loop.running and (ended or counts.finished >= plan.max_trials):
                    return
            if now >= beat_at:
                beat_at = now + recovery.HEARTBEAT_S
                recovery.heartbeat(state.trial for state in loop.running.values())
            try:
                number, kind, payload = loop.events.get(timeout=0.5)
            except queue.Empty:
                process.enforce_deadlines(loop.running)
                continue
            state = loop.running.get(number)
            if state is None:
                continue
            if kind == "output":  # a File collector's trial: its output is kept, its metrics come from the file
                state.tail.append(payload)
            elif kind == "line":
                reports = state.reports
                _on_line(plan, state, payload)
                if state.reports != reports and plan.options.on_progress is not None and loop.shown:  # an epoch
                    _report_epochs(plan.options.on_progress, loop.running, loop.shown)  # no storage read
            else:
                told = _finish(plan.study, state, payload, plan.goals, plan.tracker)
                del loop.running[number]
                if told is not None:
                    loop.ended.append(told)
                check_at = 0.0
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: running trials end and re-run on resume
        recovery.ignore_stop_signals()
        label = exc.label if isinstance(exc, recovery.Interrupted) else "Ctrl-C"
        for state in loop.running.values():
            process.terminate(state.process, grace_s=5)
            state.reason, state.interrupted = f"interrupted ({label})", True
            _finish(plan.study, state, -2, plan.goals, plan.tracker)
        if loop.asking is not None and loop.asking.number not in loop.running:
            recovery.interrupt(plan.study, loop.asking, f"interrupted ({label})")
        raise
    finally:
        recovery.restore_signals(previous_handlers)


def _schedule(plan: _Plan, loop: _Loop) -> tuple[Tally, bool]:
    """Recover orphans, then ask and launch trials while the budget and the slots allow; the counts, and whether
    the experiment ended. Counting and asking happen under one lock: engines sharing the study never overshoot."""
    study = plan.study
    recovery.recover_orphans(study, plan.me)
    with plan.lock:
        counts = tally(study)
        ended = _is_over(study, counts, plan.max_failed, plan.goal, plan.minimize)
        while (
            not ended
            and len(loop.running) < plan.parallel
            and counts.running < plan.shared
            and counts.used < plan.max_trials
            and not loop.requested
        ):
            trial = loop.asking = study.ask(plan.distributions)
            trial.set_user_attr(study_record.OWNER, plan.me)
            trial.set_user_attr(study_record.HEARTBEAT, time.time())
            if isinstance(plan.pruner, pruners.KatibMedianStopPruner):
                plan.pruner.freeze(study, trial)  # Katib freezes the stopping rule when it creates the trial
            launched = process.launch(plan.doc, trial, plan.options, loop.events, plan.collection, plan.server)
            if plan.medianstop is not None:
                launched.threshold = _curve_threshold(study, plan.medianstop)
            loop.running[trial.number] = launched
            loop.asking = None
            counts = dataclasses.replace(counts, running=counts.running + 1)  # no storage read per launch
    return counts, ended


# ----------------------------------------------------------------------------------------------- close
def _close(plan: _Plan, completed: bool) -> None:
    """Whatever happened: stop the warm worker, export the trials, close the study's MLflow run."""
    if plan.server is not None:
        plan.server.close()
    try:
        render.export(plan.study, plan.options.state_dir / plan.study.study_name)
    except WriteError as exc:  # a full disk: every trial stays in the study; the next run writes the export
        if completed:
            mlflow_runs.close_parent(plan.tracker, plan.study, completed)
            raise
        log.info("%s", exc)  # the error that stopped the loop is the one line the caller reads; a resume exports
    mlflow_runs.close_parent(plan.tracker, plan.study, completed)


def _raise_if_failed(plan: _Plan) -> None:
    """Katib's failed Experiment (maxFailedTrialCount reached), or every trial failed: one line with the first
    failure."""
    study, max_failed = plan.study, plan.max_failed
    where = plan.options.state_dir / study.study_name / "trials.json"
    counts = tally(study)
    if _max_failed_reached(counts, max_failed) and not _goal_reached(study, plan.goal, plan.minimize):
        raise ExperimentFailed(
            f"experiment {study.study_name} failed: {counts.failed} trial(s) failed and maxFailedTrialCount is "
            f"{max_failed} (Katib: Experiment has failed because max failed count has reached); "
            f"{_first_failure(study)}; everything is in {where}"
        )
    if counts.failed and not counts.complete + counts.pruned:
        raise ExperimentFailed(
            f"experiment {study.study_name}: every trial failed ({counts.failed}); {_first_failure(study)}; "
            f"everything is in {where}"
        )


# ----------------------------------------------------------------------------------------------- checks
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
    if folder.is_symlink() and "/" not in name and name not in (".", ".."):  # the name is fine; the folder is a link
        raise ConfigError(
            f"{folder} is a symbolic link to {folder.resolve()}: every file of a run stays under {base}/; remove "
            "the link or give another --state-dir"
        )
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


def _early_stopping_settings(spec: dict[str, Any], pruner: str) -> dict[str, Any]:
    """The manifest's medianstop settings that the chosen local pruner understands (Hyperband takes none)."""
    settings = {k: int(v) for k, v in experiment.settings(spec.get("earlyStopping")).items()}
    accepted = {
        "medianstop": ("min_trials_required", "start_step"),
        "optuna-median": ("min_trials_required", "start_step"),
    }.get(pruner, ())
    return {k: v for k, v in settings.items() if k in accepted}


def _is_over(study: optuna.Study, counts: Tally, max_failed: int | None, goal: float | None, minimize: bool) -> bool:
    """Katib's early ends of an Experiment: maxFailedTrialCount reached, or the objective's goal met."""
    return _max_failed_reached(counts, max_failed) or _goal_reached(study, goal, minimize)


def _max_failed_reached(counts: Tally, max_failed: int | None) -> bool:
    """Katib's rule: a trial failed and the failed trials reach ``maxFailedTrialCount``, so 0 fails the Experiment
    at the first failure (katib pkg/controller.v1beta1/experiment/util/status_util.go:205); the goal is checked
    first (status_util.go:195), so an Experiment that met it succeeds whatever failed."""
    return max_failed is not None and counts.failed > 0 and counts.failed >= max_failed


def _goal_reached(study: optuna.Study, goal: float | None, minimize: bool) -> bool:
    if goal is None:
        return False
    # every trial with an objective observation counts, an EarlyStopped one too (katib status_util.go:94-127)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    told = [t.values if t.state == TrialState.COMPLETE else t.user_attrs.get(study_record.KATIB_TOLD) for t in done]
    values = [v[0] if v else None for v in told]
    return any(v is not None and (v <= goal if minimize else v >= goal) for v in values)


def _first_failure(study: optuna.Study) -> str:
    """The first trial that failed on its own, its reason and its last output line, for the one-line error."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        record = TrialRecord.from_frozen(t)
        if record.interrupted:
            continue
        lines = [
            line.strip()
            for line in record.output_tail.splitlines()
            if line.strip() and not line.strip().startswith(("Traceback (most recent call last)", 'File "'))
        ]
        last = f": {redact(lines[-1])[:200]}" if lines else ""  # a stack's last line is its cause
        return f"the first, trial {t.number}, {record.fail_reason or 'failed'}{last}"
    return "no trial failed on its own"


# ----------------------------------------------------------------------------------------------- a trial
def _on_line(plan: _Plan, state: Running, line: str) -> None:
    """A line the trial printed: kept for its output tail, read for metrics (Katib's StdOut filter, or the File
    collector's JSON lines), the objective reported, and the stopping rule applied."""
    study, metric_names, medianstop = plan.study, plan.metric_names, plan.medianstop
    state.tail.append(line)
    if plan.collection.json:
        try:
            parsed = contract.parse_json_metrics_line(line, metric_names)
        except ValueError as exc:  # Katib fails the whole collection on a line that is not a JSON object
            state.reason = f"metrics file: {exc}"
            process.terminate(state.process)
            return
    else:
        unreadable = _unreadable_for_the_rule(plan, state, line)
        if unreadable:  # Katib's sidecar dies on it: the trial fails with no metrics, as on the cluster
            state.reason = unreadable
            process.terminate(state.process)
            return
        parsed = contract.parse_metrics_line(line, metric_names, plan.filters)
    if parsed is None or state.pruned:
        return
    stamp, values = parsed
    # every match of a line (katib file-metricscollector.go:100-118), by timestamp (trial_controller_util.go:226)
    every = [(m.group(1).strip(), m.group(2).strip()) for regex in plan.filters for m in regex.finditer(line)]
    for name, raw in values.items() if plan.collection.json else [(n, v) for n, v in every if n in metric_names]:
        try:
            stamps = plan.stamps.setdefault((state.trial.number, name), [])
            at = bisect.bisect_right(stamps, stamp)  # after the values stamped the same: the later line wins
            state.observations.setdefault(name, []).insert(at, float(raw))
            stamps.insert(at, stamp)
        except ValueError:
            state.reason = f"metric {name} printed as {raw!r}, which Katib cannot use"
    objective = metric_names[0]
    if objective not in values:
        return
    try:
        value = float(values[objective])
    except ValueError:
        process.terminate(state.process)
        return
    state.reports += 1
    if len(study.directions) > 1:  # Optuna has no intermediate values here: Katib's rule on the curve directly
        curve = state.observations[objective]
        if medianstop is not None and pruners.medianstop_stops(
            curve, state.threshold, medianstop.start_step, study.directions[0]
        ):
            state.pruned = True
            process.terminate(state.process)
        return
    state.trial.report(value, state.reports - 1)  # 0-based report index
    if state.trial.should_prune():
        state.pruned = True
        process.terminate(state.process)


def _unreadable_for_the_rule(plan: _Plan, state: Running, line: str) -> str:
    """:func:`pruners.collector_exits_on` for a trial whose early-stopping rule exists ("" for the others)."""
    objective = plan.metric_names[0]
    if objective not in line:
        return ""
    if plan.medianstop is not None:
        has_rule = state.threshold is not None
    elif isinstance(plan.pruner, pruners.KatibMedianStopPruner):
        has_rule = plan.pruner.freeze(plan.study, state.trial) is not None  # the rule frozen at its creation
    else:
        return ""
    return pruners.collector_exits_on(line, plan.filters, objective) if has_rule else ""


def _curve_threshold(study: optuna.Study, rule: pruners.KatibMedianStopPruner) -> float | None:
    """Katib's medianstop threshold from completed trials' first-objective curves (multi-objective studies,
    where Optuna has no intermediate values): the same arithmetic as the pruner, frozen at the trial's creation."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    curves = [t.user_attrs.get(study_record.OBJECTIVE_CURVE, []) for t in complete]
    return pruners.medianstop_threshold(curves, rule.min_trials_required, rule.start_step)


def _finish(
    study: optuna.Study, state: Running, exit_code: int, goals: list[Objective], tracker=None
) -> EndedTrial | None:
    """Decide the trial's one final state, record its observation, and log one line for a failure; returns what the
    face tells of it (None for an interrupted trial, which re-runs)."""
    trial, primary = state.trial, goals[0]
    observation = _observation(state.observations)
    duration = time.monotonic() - state.started
    trial.set_user_attr(study_record.OBSERVATION, observation)
    trial.set_user_attr(study_record.EPOCHS_RUN, state.reports)
    trial.set_user_attr(study_record.OUTPUT_DIR, str(state.output_dir))
    trial.set_user_attr(study_record.DURATION_S, round(duration, 3))
    if len(goals) > 1:
        trial.set_user_attr(study_record.OBJECTIVE_CURVE, state.observations.get(primary.metric, []))
    values = [observation.get(goal.metric, {}).get(goal.strategy) for goal in goals]
    reason = ""
    if not state.pruned:
        reason = state.reason
        if not reason and getattr(state.process, "worker_died", False):
            reason = f"its warm trial worker died (see {process.WARM_LOG}); the next trials start on a new one"
            # the engine's fault, not the trial's: re-run without budget, once (a re-run that loses it again fails)
            state.interrupted = study_record.RERUN_OF not in trial.user_attrs
        if not reason and exit_code != 0:
            reason = f"exited with code {exit_code}"
        missing = [goal.metric for goal, value in zip(goals, values) if value is None]
        if not reason and missing:
            reason = f"never printed the objective {', '.join(missing)} (Katib: MetricsUnavailable)"
    condition = (
        study_record.EARLY_STOPPED if state.pruned else study_record.FAILED if reason else study_record.SUCCEEDED
    )
    tail = "\n".join(state.tail) if reason else ""  # the last lines of both streams, merged
    if reason:
        trial.set_user_attr(study_record.FAIL_REASON, reason)
        trial.set_user_attr(study_record.OUTPUT_TAIL, tail[-4000:])
        log.warning(
            "trial %d failed: %s; params %s; output in %s", trial.number, reason, trial.params, state.output_dir
        )
    mlflow_runs.log_trial(tracker, study, state, condition, tail)
    if state.interrupted:
        trial.set_user_attr(study_record.INTERRUPTED, True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={study_record.RERUN_OF: trial.number})
        return None
    if state.pruned:
        if all(value is not None for value in values):  # what Katib's service tells: the observed value(s)
            trial.set_user_attr(study_record.KATIB_TOLD, [float(v) for v in cast(list[float], values)])
        study.tell(trial, state=TrialState.PRUNED)
    elif reason:
        study.tell(trial, state=TrialState.FAIL)
    else:
        done = cast(list[float], values)  # no value is None here: a missing one sets reason above
        study.tell(trial, done if len(goals) > 1 else done[0])
    return EndedTrial(trial.number, condition, values[0], state.reports, duration)


def _observation(observations: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"min": min(v), "max": max(v), "latest": v[-1]} for name, v in observations.items() if v}


# ----------------------------------------------------------------------------------------------- progress
def _running_trials(running: dict[int, Running]) -> tuple[RunningTrial, ...]:
    return tuple(
        RunningTrial(n, s.reports, s.argv, isinstance(s.process, warm.WarmProcess), tuple(s.trial.params.items()))
        for n, s in sorted(running.items())
    )


def _report_epochs(callback: Callable[[Progress], None], running: dict[int, Running], shown: list[Progress]) -> None:
    """A running trial reported an epoch: the last Progress with the running trials' epochs brought up to date."""
    now = dataclasses.replace(shown[-1], trials=_running_trials(running))
    if now != shown[-1]:
        shown[:] = [now]
        callback(now)


def _report_progress(plan: _Plan, counts: Tally, loop: _Loop) -> None:
    """Tell the face where the study stands, only when something changed."""
    callback, study = plan.options.on_progress, plan.study
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
        total=plan.max_trials,
        running=len(loop.running),
        complete=counts.complete,
        pruned=counts.pruned,
        failed=counts.failed,
        best=best,
        front=front,
        trials=_running_trials(loop.running),
        ended=tuple(loop.ended),
    )
    if not loop.shown or loop.shown[-1] != now:
        loop.shown[:] = [now]
        callback(now)
