"""The embedded engine: run a Katib Experiment manifest's trials as local processes under an Optuna study.

The same manifest a cluster runs, read the way Katib reads it:

* search: ``algorithm`` -> the Optuna sampler Katib's Optuna suggestion service builds (``tpe``,
  ``multivariate-tpe``, ``random``, ``grid``, ``cmaes``); ``parameters`` -> the distributions that service builds;
* trials: the primary container's ``command`` + ``args`` with ``${trialParameters.*}`` substituted as Katib does,
  run as a process (``hpo``/``python`` resolved to this environment); stdout read line by line with Katib's StdOut
  filter (or the manifest's ``metricsFormat``); each objective value is one report;
* early stopping: ``medianstop`` as Katib computes it (:mod:`hpo_lib.pruners`), the trial terminated (SIGTERM,
  then kill) and recorded as pruned (Katib: EarlyStopped);
* budget and failures: ``parallelTrialCount`` processes at once, ``maxTrialCount`` finished trials,
  ``maxFailedTrialCount`` failed ones, the objective ``goal``; a trial that exits non-zero or never prints the
  objective fails (its output tail kept) and the study goes on;
* storage: Optuna RDB storage (SQLite under ``.hpo/`` by default); re-running resumes, and trials a killed run left
  RUNNING are marked failed.

All Optuna calls happen on the main thread (one reader thread per trial process feeds a queue), so SQLite sees one
writer and parallel trials never hit lock errors.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from hpo_lib import katib, pruners, space, validation
from hpo_lib.errors import ConfigError

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
    progress: bool = True
    tracking: bool = True  # MLflow: a parent run per study, a nested run per trial
    tracking_uri: str | None = None  # default $MLFLOW_TRACKING_URI, else sqlite:///<state_dir>/mlflow.db
    mo_sampler: str = "manifest"  # multi-objective studies: the manifest's algorithm, or nsga2


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


# ----------------------------------------------------------------------------------------------- manifest
def parse_experiment(text: str, source: str) -> dict[str, Any]:
    """The one Experiment in a YAML text (other kinds are skipped); ``source`` names the text in errors."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    experiments = [d for d in docs if d.get("kind") == "Experiment"]
    if len(experiments) != 1:
        raise ConfigError(f"{source} must hold exactly one Experiment, found {len(experiments)}")
    return experiments[0]


def load_experiment(path: str | Path) -> dict[str, Any]:
    """Load one Experiment and refuse it, naming every failing rule, if Katib would reject or stall on it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"manifest {path} does not exist")
    doc = parse_experiment(path.read_text(), f"manifest {path}")
    errors = [f for f in validation.validate_experiment(doc) if f.severity == "error"]
    if errors:
        raise ConfigError(f"manifest {path} is invalid: " + "; ".join(map(str, errors)))
    return doc


def make_sampler(algorithm: dict[str, Any], distributions: dict[str, Any], max_trials: int) -> optuna.samplers.BaseSampler:
    """The sampler Katib's Optuna suggestion service builds for ``spec.algorithm``."""
    name = algorithm.get("algorithmName")
    settings = {s["name"]: s["value"] for s in algorithm.get("algorithmSettings") or []}
    seed = int(settings["random_state"]) if "random_state" in settings else None
    if name in ("tpe", "multivariate-tpe"):
        if name == "tpe":
            log.warning("algorithm tpe: Katib's default katib-config serves it with Hyperopt, not Optuna; "
                        "this local run uses Optuna's TPE (use multivariate-tpe for the same sampler on both)")
        return optuna.samplers.TPESampler(
            n_startup_trials=int(settings.get("n_startup_trials", 10)),
            n_ei_candidates=int(settings.get("n_ei_candidates", 24)),
            seed=seed, multivariate=name == "multivariate-tpe", constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        sigma = float(settings["sigma"]) if "sigma" in settings else None
        restart = settings.get("restart_strategy")
        return optuna.samplers.CmaEsSampler(sigma0=sigma, seed=seed,
                                            restart_strategy=None if restart in (None, "None", "none") else restart)
    if name == "grid":
        grid = {}
        for pname, dist in distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                grid[pname] = list(dist.choices)
            elif dist.step is not None and not dist.log:
                n = int(round((dist.high - dist.low) / dist.step)) + 1
                grid[pname] = [dist.low + i * dist.step for i in range(n)]
            else:
                raise ConfigError(f"grid search needs a step for parameter {pname}")
        combinations = 1
        for values in grid.values():
            combinations *= len(values)
        if max_trials > combinations:
            raise ConfigError(f"grid: maxTrialCount {max_trials} exceeds the {combinations} grid combinations")
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ConfigError(f"algorithm {name!r} is not served by Katib's Optuna service; use tpe, multivariate-tpe, "
                      f"random, grid or cmaes")


def study_name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata", {})
    return f"{meta.get('namespace', 'default')}.{meta['name']}"


# ----------------------------------------------------------------------------------------------- trial command
def trial_argv(doc: dict[str, Any], assignments: dict[str, str], options: TuneOptions,
               output_dir: Path) -> tuple[list[str], dict[str, str], float | None]:
    """The primary container's command line with Katib's substitution, resolved to this machine."""
    template = doc["spec"]["trialTemplate"]
    job = katib.substitute_trial_parameters(template["trialSpec"], template["trialParameters"], assignments)
    pod = job.get("spec", {}).get("template", {}).get("spec", {})
    containers = [c for c in pod.get("containers", []) if c.get("name") == template["primaryContainerName"]]
    if not containers:
        raise ConfigError(f"no container named {template['primaryContainerName']!r} in the trial template")
    container = containers[0]
    argv = [*container.get("command", []), *container.get("args", [])]
    if not argv:
        raise ConfigError("the primary container has no command: the engine runs the command it declares")
    bindir = Path(sys.executable).parent
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif (bindir / argv[0]).exists():
        argv[0] = str(bindir / argv[0])
    overrides = {**options.overrides, "output-dir": str(output_dir)}
    seen = set()
    for i, arg in enumerate(argv):
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") and "=" in arg else None
        if name in overrides:
            argv[i] = f"--{name}={overrides[name]}"
            seen.add(name)
    argv += [f"--{k}={v}" for k, v in overrides.items() if k not in seen]
    env = {**os.environ, **{e["name"]: str(e.get("value", "")) for e in container.get("env", [])
                            if "value" in e and e["name"] != "HOME"}}
    env["PYTHONUNBUFFERED"] = "1"
    deadline = options.trial_timeout_s or job.get("spec", {}).get("activeDeadlineSeconds")
    return argv, env, float(deadline) if deadline else None


def _read_lines(number: int, process: subprocess.Popen, events: queue.Queue) -> None:
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


# ----------------------------------------------------------------------------------------------- objectives
OBJECTIVES_ANNOTATION = "katib-hpo.io/objectives"


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize | maximize
    strategy: str  # min | max | latest: which of the trial's observed values is its value (Katib's metricStrategies)


def objectives(doc: dict[str, Any]) -> list[Objective]:
    """The study's objectives: Katib's one, plus any the ``katib-hpo.io/objectives`` annotation declares.

    The annotation (Katib ignores it) lists ``metric:direction`` pairs, e.g.
    ``val_loss:minimize, train_time_s:minimize, model_size_mb:minimize``. The Katib objective is always first;
    every other metric must be one of ``additionalMetricNames`` so the cluster records it too. Each value is taken
    with the manifest's ``metricStrategies`` (Katib's default: min for minimize, max for maximize).
    """
    spec = doc["spec"]["objective"]
    primary, kind = spec["objectiveMetricName"], spec["type"]
    default = "min" if kind == "minimize" else "max"
    strategies = {m["name"]: m["value"] for m in spec.get("metricStrategies") or []}
    result = [Objective(primary, kind, strategies.get(primary, default))]
    raw = ((doc.get("metadata") or {}).get("annotations") or {}).get(OBJECTIVES_ANNOTATION, "")
    additional = set(spec.get("additionalMetricNames") or [])
    for item in filter(None, (part.strip() for part in str(raw).split(","))):
        metric, sep, direction = (x.strip() for x in item.partition(":"))
        if not sep or direction not in ("minimize", "maximize"):
            raise ConfigError(f"annotation {OBJECTIVES_ANNOTATION}: {item!r} is not METRIC:minimize or "
                              "METRIC:maximize")
        if metric == primary:
            if direction != kind:
                raise ConfigError(f"annotation {OBJECTIVES_ANNOTATION}: {primary} is the Katib objective, which "
                                  f"the manifest says to {kind}, not {direction}")
            continue
        if metric not in additional:
            raise ConfigError(f"annotation {OBJECTIVES_ANNOTATION}: {metric} is not in additionalMetricNames "
                              f"({', '.join(sorted(additional)) or 'none'}), so Katib would not record it")
        if any(o.metric == metric for o in result):
            raise ConfigError(f"annotation {OBJECTIVES_ANNOTATION}: {metric} is listed twice")
        result.append(Objective(metric, direction, strategies.get(metric, default)))
    return result


# ----------------------------------------------------------------------------------------------- engine
def open_study(doc: dict[str, Any], options: TuneOptions, *, sampler=None, pruner=None) -> optuna.Study:
    """Create or load the experiment's study in the configured storage, with a clear error when it cannot."""
    options.state_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage or f"sqlite:///{options.state_dir / 'studies.db'}"
    directions = [o.direction for o in objectives(doc)]
    try:
        return optuna.create_study(storage=storage, study_name=study_name(doc), load_if_exists=True,
                                   directions=directions, sampler=sampler, pruner=pruner)
    except ValueError as exc:
        if "direction" in str(exc).lower():
            raise ConfigError(f"study {study_name(doc)} in {storage} was created with other objectives than "
                              f"this manifest declares: {exc}") from None
        raise ConfigError(f"cannot open study storage {storage}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Optuna raise many types for an unusable storage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open study storage {storage}: {first}") from None


def load_study(path: str | Path, options: TuneOptions) -> optuna.Study:
    """The study a manifest's earlier ``hpo tune`` wrote (for results, reports and the dashboard)."""
    doc = load_experiment(path)
    storage = options.storage or f"sqlite:///{options.state_dir / 'studies.db'}"
    if options.storage is None and not (options.state_dir / "studies.db").exists():
        raise ConfigError(f"no studies under {options.state_dir}/: run `hpo tune {path}` first")
    try:
        return optuna.load_study(study_name=study_name(doc), storage=storage)
    except KeyError:
        raise ConfigError(f"no study {study_name(doc)} in {storage}: run `hpo tune {path}` first") from None


def run(path: str | Path, options: TuneOptions | None = None) -> optuna.Study:
    """Run (or resume) the manifest's experiment locally; returns the Optuna study."""
    options = options or TuneOptions()
    doc = load_experiment(path)
    spec = doc["spec"]
    objective = spec["objective"]
    goals = objectives(doc)
    multi = len(goals) > 1
    metric_names = [objective["objectiveMetricName"], *(objective.get("additionalMetricNames") or [])]
    filters = katib.compile_filters(((spec.get("metricsCollectorSpec") or {}).get("source") or {})
                                    .get("filter", {}).get("metricsFormat"))
    distributions = {p["name"]: space.from_katib_parameter(p) for p in spec["parameters"]}
    max_trials = options.max_trials or spec.get("maxTrialCount") or 10
    parallel = options.parallel or spec.get("parallelTrialCount") or 3
    max_failed = spec.get("maxFailedTrialCount")
    goal = objective.get("goal")
    minimize = objective["type"] == "minimize"

    pruner = (pruners.from_katib_settings(spec.get("earlyStopping")) if options.pruner == "manifest"
              else pruners.make_pruner(options.pruner, **_early_stopping_settings(spec, options.pruner)))
    if multi:
        sampler = _multi_objective_sampler(spec["algorithm"], distributions, max_trials, options.mo_sampler)
        if not isinstance(pruner, (pruners.KatibMedianStopPruner, optuna.pruners.NopPruner)):
            raise ConfigError(f"--pruner {options.pruner}: Optuna cannot prune multi-objective studies; use "
                              "manifest, medianstop (Katib's rule on the first objective) or none")
        medianstop, pruner = (pruner if isinstance(pruner, pruners.KatibMedianStopPruner) else None), None
    else:
        sampler, medianstop = make_sampler(spec["algorithm"], distributions, max_trials), None
    study = open_study(doc, options, sampler=sampler, pruner=pruner)
    _fail_interrupted(study)
    if study.user_attrs.get("objective_names") != [o.metric for o in goals]:
        study.set_user_attr("objective_names", [o.metric for o in goals])
    tracker = _open_tracker(doc, study, options, goals, path)

    events: queue.Queue = queue.Queue()
    running: dict[int, _Running] = {}
    bar = _progress(options.progress, max_trials)
    completed = False
    try:
        finished_since_check = True  # storage is read for scheduling only when a trial has finished
        while True:
            if finished_since_check:
                finished_since_check = False
                counts = _counts(study)
                finished = counts["complete"] + counts["pruned"] + counts["fail"]
                stop = (finished + len(running) >= max_trials
                        or (max_failed is not None and counts["fail"] >= max_failed > 0)
                        or _goal_reached(study, goal, minimize))
                while not stop and len(running) < parallel and finished + len(running) < max_trials:
                    trial = study.ask(distributions)
                    if isinstance(pruner, pruners.KatibMedianStopPruner):
                        pruner.freeze(study, trial)  # Katib freezes the stopping rule when it creates the trial
                    state = _launch(doc, trial, options, events)
                    if medianstop is not None:
                        state.threshold = _curve_threshold(study, medianstop)
                    running[trial.number] = state
                _update_progress(bar, study, running)
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
        if bar is not None:
            bar.close()
        export(study, options.state_dir / study.study_name)
        _close_tracker(tracker, study, completed)
    return study


def _multi_objective_sampler(algorithm: dict[str, Any], distributions: dict[str, Any], max_trials: int,
                             choice: str) -> optuna.samplers.BaseSampler:
    """The manifest's sampler where Optuna's multi-objective support allows it (TPE, random, grid), or NSGA-II."""
    settings = {s["name"]: s["value"] for s in algorithm.get("algorithmSettings") or []}
    if choice == "nsga2":
        seed = int(settings["random_state"]) if "random_state" in settings else None
        return optuna.samplers.NSGAIISampler(seed=seed)
    if choice != "manifest":
        raise ConfigError(f"--mo-sampler must be manifest or nsga2, got {choice!r}")
    if algorithm.get("algorithmName") == "cmaes":
        raise ConfigError("algorithm cmaes cannot run a multi-objective study; use --mo-sampler nsga2, or drop "
                          f"the {OBJECTIVES_ANNOTATION} annotation")
    return make_sampler(algorithm, distributions, max_trials)


def _curve_threshold(study: optuna.Study, rule: pruners.KatibMedianStopPruner) -> float | None:
    """Katib's medianstop threshold from completed trials' first-objective curves (multi-objective studies,
    where Optuna has no intermediate values): the same arithmetic as the pruner, frozen at the trial's creation."""
    curves = [t.user_attrs.get("objective_curve", []) for t in study.get_trials(deepcopy=False,
                                                                                  states=(TrialState.COMPLETE,))]
    return pruners.medianstop_threshold(curves, rule.min_trials_required, rule.start_step)


def _open_tracker(doc: dict[str, Any], study: optuna.Study, options: TuneOptions, goals: list[Objective],
                  path: str | Path):
    if not options.tracking:
        return None
    from hpo_lib import tracking

    uri = options.tracking_uri or tracking.default_uri(options.state_dir)
    tracker = tracking.StudyTracker(uri, doc["metadata"]["name"], artifact_root=options.state_dir / "mlartifacts")
    spec = doc["spec"]
    run_id = tracker.open_study(study.study_name, study.user_attrs, params={
        "manifest": str(path), "algorithm": spec["algorithm"]["algorithmName"],
        "early_stopping": (spec.get("earlyStopping") or {}).get("algorithmName", "none"),
        "pruner": options.pruner, "objectives": ",".join(f"{o.metric}:{o.direction}" for o in goals),
        "max_trials": options.max_trials or spec.get("maxTrialCount"),
        "parallel": options.parallel or spec.get("parallelTrialCount"),
        **{f"set.{k}": v for k, v in options.overrides.items()}})
    study.set_user_attr(tracking.PARENT_ATTR, run_id)
    return tracker


def _close_tracker(tracker, study: optuna.Study, completed: bool) -> None:
    if tracker is None:
        return
    counts = _counts(study)
    summary = {f"trials_{k}": float(v) for k, v in counts.items()}
    summary.update(_compute(study))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete and len(study.directions) == 1:
        summary["best_value"] = float(study.best_value)
    try:
        tracker.close_study(summary, leaderboard(study), failed=not completed)
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the study
        log.warning("MLflow: could not close the study run: %s", exc)


def _early_stopping_settings(spec: dict[str, Any], pruner: str) -> dict[str, Any]:
    """The manifest's medianstop settings that the chosen local pruner understands (Hyperband takes none)."""
    settings = {s["name"]: int(s["value"]) for s in (spec.get("earlyStopping") or {}).get("algorithmSettings") or []}
    accepted = {"medianstop": ("min_trials_required", "start_step"),
                "optuna-median": ("min_trials_required", "start_step")}.get(pruner, ())
    return {k: v for k, v in settings.items() if k in accepted}


INTERRUPTED_ATTR = "interrupted_trials"


def _fail_interrupted(study: optuna.Study) -> None:
    """Trials a killed run left RUNNING can never finish: record them as failed, keep everything else."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        log.warning("trial %d was interrupted by an earlier run: marking it failed", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)
    if orphans:  # a finished trial takes no new attributes: the study remembers why these failed
        study.set_user_attr(INTERRUPTED_ATTR, sorted({*study.user_attrs.get(INTERRUPTED_ATTR, []),
                                                      *(t.number for t in orphans)}))


def _launch(doc: dict[str, Any], trial: optuna.trial.Trial, options: TuneOptions, events: queue.Queue) -> _Running:
    assignments = {name: _katib_value(value) for name, value in trial.params.items()}
    output_dir = options.state_dir / study_name(doc) / f"trial-{trial.number:04d}"
    output_dir.mkdir(parents=True, exist_ok=True)
    argv, env, deadline = trial_argv(doc, assignments, options, output_dir)
    trial.set_user_attr("argv", argv)
    log_file = open(output_dir / "stderr.log", "w")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file, text=True, bufsize=1, env=env,
                               start_new_session=True)
    log_file.close()
    state = _Running(trial=trial, process=process, started=time.monotonic(), output_dir=output_dir,
                     deadline=deadline)
    threading.Thread(target=_read_lines, args=(trial.number, process, events), daemon=True).start()
    return state


def _katib_value(value: Any) -> str:
    """Katib passes every assignment as a string; floats keep full precision."""
    return repr(value) if isinstance(value, float) else str(value)


def _on_line(study: optuna.Study, state: _Running, line: str, metric_names: list[str], filters,
             medianstop: pruners.KatibMedianStopPruner | None = None) -> None:
    state.tail.append(line)
    parsed = katib.parse_metrics_line(line, metric_names, filters)
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
        if medianstop is not None and pruners.medianstop_stops(curve, state.threshold, medianstop.start_step,
                                                               study.directions[0]):
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
        log.warning("trial %d failed: %s; params %s; output in %s", trial.number, reason, trial.params,
                    state.output_dir)
    _track(tracker, study, state, condition, tail)
    if state.pruned:
        study.tell(trial, state=TrialState.PRUNED)
    elif reason:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, values if len(goals) > 1 else values[0])


def _track(tracker, study: optuna.Study, state: _Running, condition: str, tail: str) -> None:
    """One nested MLflow run for the trial; a tracking failure costs the tracking, never the trial."""
    if tracker is None:
        return
    trial = state.trial
    try:
        run_id = tracker.log_trial(
            number=trial.number, name=f"{study.study_name.split('.', 1)[-1]}-{trial.number:04d}",
            condition=condition, params={k: _katib_value(v) for k, v in trial.params.items()},
            curves=state.observations, tags={"hpo.output_dir": str(state.output_dir)}, output_tail=tail,
            started=state.started_wall)
        trial.set_user_attr("mlflow_run_id", run_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("MLflow: could not log trial %d (%s); the study goes on", trial.number, exc)


def _stderr_tail(output_dir: Path) -> str:
    path = output_dir / "stderr.log"
    return "\n" + "\n".join(path.read_text(errors="replace").splitlines()[-TAIL_LINES:]) if path.exists() else ""


def _observation(observations: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"min": min(v), "max": max(v), "latest": v[-1]} for name, v in observations.items() if v}


def _counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {"complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
            "fail": states.count(TrialState.FAIL)}


def _goal_reached(study: optuna.Study, goal: float | None, minimize: bool) -> bool:
    if goal is None:
        return False
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return any(v <= goal if minimize else v >= goal for v in values)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    # disable=None: a live bar on a terminal, nothing in a log file
    return tqdm(total=total, desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True, disable=None)


def _update_progress(bar, study: optuna.Study, running: dict[int, _Running]) -> None:
    """Redraw only when something changed: trials done/running/pruned/failed and the best value so far."""
    if bar is None or bar.disable:
        return
    counts = _counts(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    postfix = dict(running=len(running), done=counts["complete"], pruned=counts["pruned"], failed=counts["fail"],
                   best=_best_text(study) if complete else "-")
    if postfix != getattr(bar, "_last_postfix", None):
        bar._last_postfix = postfix
        bar.n = counts["complete"] + counts["pruned"] + counts["fail"]
        bar.set_postfix(postfix)


# ----------------------------------------------------------------------------------------------- results
CONDITIONS = {TrialState.COMPLETE: "Succeeded", TrialState.PRUNED: "EarlyStopped", TrialState.FAIL: "Failed",
              TrialState.RUNNING: "Running", TrialState.WAITING: "Created"}


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial in the shape of a Katib Trial CR (name, parameterAssignments, observation.metrics, condition)."""
    records = []
    interrupted = set(study.user_attrs.get(INTERRUPTED_ATTR, []))
    for t in study.get_trials(deepcopy=False):
        observation = t.user_attrs.get("observation", {})
        records.append({
            "name": f"{study.study_name.split('.', 1)[-1]}-{t.number:04d}",
            "condition": CONDITIONS.get(t.state, str(t.state)),
            "parameterAssignments": [{"name": k, "value": _katib_value(v)} for k, v in t.params.items()],
            "observation": {"metrics": [{"name": k, "min": str(v["min"]), "max": str(v["max"]),
                                         "latest": str(v["latest"])} for k, v in observation.items()]},
            "epochsRun": t.user_attrs.get("epochs_run", 0),
            "failReason": t.user_attrs.get("fail_reason", "") or (
                "interrupted: the engine running it was killed" if t.number in interrupted else ""),
        })
    return records


def export(study: optuna.Study, directory: Path) -> tuple[Path, Path]:
    """``trials.json`` (Katib Trial shape) and ``trials.csv`` (one row per trial, one column per metric)."""
    directory.mkdir(parents=True, exist_ok=True)
    records = trial_records(study)
    json_path, csv_path = directory / "trials.json", directory / "trials.csv"
    json_path.write_text(json.dumps(records, indent=2))
    metric_names = sorted({m["name"] for r in records for m in r["observation"]["metrics"]})
    param_names = sorted({p["name"] for r in records for p in r["parameterAssignments"]})
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "condition", "epochs_run", *param_names, *(f"{m}_min" for m in metric_names),
                         *(f"{m}_latest" for m in metric_names)])
        for r in records:
            params = {p["name"]: p["value"] for p in r["parameterAssignments"]}
            metrics = {m["name"]: m for m in r["observation"]["metrics"]}
            writer.writerow([r["name"], r["condition"], r["epochsRun"], *(params.get(p, "") for p in param_names),
                             *(metrics.get(m, {}).get("min", "") for m in metric_names),
                             *(metrics.get(m, {}).get("latest", "") for m in metric_names)])
    return json_path, csv_path


def _best_text(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the front"
    return f"{study.best_value:.5g}"


def _planned_epochs(trial: optuna.trial.FrozenTrial) -> int | None:
    for arg in reversed(trial.user_attrs.get("argv", [])):
        if arg.startswith("--epochs="):
            try:
                return int(arg.split("=", 1)[1])
            except ValueError:
                return None
    return None


def _compute(study: optuna.Study) -> dict[str, float]:
    """Epochs run, and the epochs early stopping saved: what pruned trials would have run to their --epochs."""
    trials = study.get_trials(deepcopy=False)
    run = sum(t.user_attrs.get("epochs_run", 0) for t in trials)
    saved = 0
    for t in trials:
        planned = _planned_epochs(t)
        if t.state == TrialState.PRUNED and planned:
            saved += max(planned - t.user_attrs.get("epochs_run", 0), 0)
    return {"epochs_run": float(run), "epochs_saved": float(saved),
            "compute_saved_pct": 100.0 * saved / (run + saved) if run + saved else 0.0}


def _metric_text(observation: dict[str, Any], names: list[str]) -> str:
    parts = []
    for name in names:
        if name in observation:
            parts.append(f"{name}={observation[name]['latest']:.4g}")
    return " ".join(parts)


def leaderboard(study: optuna.Study, k: int = 5) -> str:
    """Top-k succeeded trials (or the Pareto front) with objective, metrics, epochs, the baseline and compute."""
    multi = len(study.directions) > 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = _counts(study)
    lines = [f"{study.study_name}: {counts['complete']} succeeded, {counts['pruned']} early-stopped, "
             f"{counts['fail']} failed"]
    if multi:
        ranked = sorted(study.best_trials, key=lambda t: t.values[0],
                        reverse=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
        lines.append(f"  Pareto front ({len(ranked)} trials):")
    else:
        ranked = sorted(complete, key=lambda t: t.value,
                        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)[:k]
        if ranked:
            lines.append(f"  top {len(ranked)} by the objective:")
    extra = ["val_rmse", "val_dir_acc", "val_acc", "train_time_s", "model_size_mb"]
    for rank, t in enumerate(ranked, start=1):
        observation = t.user_attrs.get("observation", {})
        base = observation.get("baseline_val_loss", {}).get("latest")
        base_text = f" vs best naive baseline {base:.5g}" if base is not None else ""
        value = "(" + ", ".join(f"{v:.5g}" for v in t.values) + ")" if multi else f"{t.value:.5g}"
        params = " ".join(f"{name}={_katib_value(v)}" for name, v in t.params.items())
        lines.append(f"  #{rank} trial {t.number}: objective {value}{base_text}, "
                     f"{t.user_attrs.get('epochs_run', '?')} epochs | {_metric_text(observation, extra)}")
        lines.append(f"      {params}")
    if not complete:
        lines.append("  no trial succeeded yet")
    compute = _compute(study)
    lines.append(f"  epochs run: {compute['epochs_run']:.0f}; early stopping saved {compute['epochs_saved']:.0f} "
                 f"epochs ({compute['compute_saved_pct']:.0f}% of the planned compute)")
    return "\n".join(lines)
