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


@dataclass
class _Running:
    trial: optuna.trial.Trial
    process: subprocess.Popen
    started: float
    output_dir: Path
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reports: int = 0
    observations: dict[str, list[float]] = field(default_factory=dict)
    deadline: float | None = None
    pruned: bool = False
    reason: str = ""


# ----------------------------------------------------------------------------------------------- manifest
def load_experiment(path: str | Path) -> dict[str, Any]:
    """Load one Experiment and refuse it, naming every failing rule, if Katib would reject or stall on it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"manifest {path} does not exist")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise ConfigError(f"manifest {path} is not valid YAML: {exc}") from None
    experiments = [d for d in docs if d.get("kind") == "Experiment"]
    if len(experiments) != 1:
        raise ConfigError(f"manifest {path} must hold exactly one Experiment, found {len(experiments)}")
    doc = experiments[0]
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


# ----------------------------------------------------------------------------------------------- engine
def run(path: str | Path, options: TuneOptions | None = None) -> optuna.Study:
    """Run (or resume) the manifest's experiment locally; returns the Optuna study."""
    options = options or TuneOptions()
    doc = load_experiment(path)
    spec = doc["spec"]
    objective = spec["objective"]
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
              else pruners.make_pruner(options.pruner, **_early_stopping_settings(spec)))
    options.state_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage or f"sqlite:///{options.state_dir / 'studies.db'}"
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name(doc), load_if_exists=True,
            direction="minimize" if minimize else "maximize",
            sampler=make_sampler(spec["algorithm"], distributions, max_trials), pruner=pruner)
    except (optuna.exceptions.StorageInternalError, ValueError) as exc:
        raise ConfigError(f"cannot open study storage {storage}: {exc}") from None
    _fail_interrupted(study)

    events: queue.Queue = queue.Queue()
    running: dict[int, _Running] = {}
    bar = _progress(options.progress, max_trials)
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
                    running[trial.number] = _launch(doc, trial, options, events)
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
                _on_line(study, state, payload, metric_names, filters)
            else:
                _finish(study, state, payload, objective)
                del running[number]
                finished_since_check = True
    except KeyboardInterrupt:
        for state in running.values():  # stop cleanly: running trials end, finished ones stay in storage
            _terminate(state.process, grace_s=5)
            state.trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            study.tell(state.trial, state=TrialState.FAIL)
        raise
    finally:
        if bar is not None:
            bar.close()
    export(study, options.state_dir / study.study_name)
    return study


def _early_stopping_settings(spec: dict[str, Any]) -> dict[str, Any]:
    settings = {s["name"]: int(s["value"]) for s in (spec.get("earlyStopping") or {}).get("algorithmSettings") or []}
    return {k: v for k, v in settings.items() if k in ("min_trials_required", "start_step")}


def _fail_interrupted(study: optuna.Study) -> None:
    """Trials a killed run left RUNNING can never finish: record them as failed, keep everything else."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("trial %d was interrupted by an earlier run: marking it failed", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)


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


def _on_line(study: optuna.Study, state: _Running, line: str, metric_names: list[str], filters) -> None:
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
    state.trial.report(value, state.reports)  # 0-based report index
    state.reports += 1
    if state.trial.should_prune():
        state.pruned = True
        _terminate(state.process)


def _enforce_deadlines(running: dict[int, _Running]) -> None:
    now = time.monotonic()
    for state in running.values():
        if state.deadline and now - state.started > state.deadline and state.process.poll() is None:
            state.reason = f"exceeded the trial deadline of {state.deadline:.0f} s (activeDeadlineSeconds)"
            _terminate(state.process)


def _finish(study: optuna.Study, state: _Running, exit_code: int, objective: dict[str, Any]) -> None:
    """Decide the trial's one final state, record its observation, and log one line for a failure."""
    trial, name = state.trial, objective["objectiveMetricName"]
    minimize = objective["type"] == "minimize"
    trial.set_user_attr("observation", _observation(state.observations))
    trial.set_user_attr("epochs_run", state.reports)
    trial.set_user_attr("output_dir", str(state.output_dir))
    values = state.observations.get(name, [])
    best = (min if minimize else max)(values) if values else None
    if state.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    reason = state.reason
    if not reason and exit_code != 0:
        reason = f"exited with code {exit_code}"
    if not reason and best is None:
        reason = f"never printed the objective {name} (Katib: MetricsUnavailable)"
    if reason:
        tail = "\n".join(state.tail) + _stderr_tail(state.output_dir)
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("output_tail", tail[-4000:])
        log.warning("trial %d failed: %s; params %s; output in %s", trial.number, reason, trial.params,
                    state.output_dir)
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, best)


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
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
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
                   best=f"{study.best_value:.5g}" if complete else "-")
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
    for t in study.get_trials(deepcopy=False):
        observation = t.user_attrs.get("observation", {})
        records.append({
            "name": f"{study.study_name.split('.', 1)[-1]}-{t.number:04d}",
            "condition": CONDITIONS.get(t.state, str(t.state)),
            "parameterAssignments": [{"name": k, "value": _katib_value(v)} for k, v in t.params.items()],
            "observation": {"metrics": [{"name": k, "min": str(v["min"]), "max": str(v["max"]),
                                         "latest": str(v["latest"])} for k, v in observation.items()]},
            "epochsRun": t.user_attrs.get("epochs_run", 0),
            "failReason": t.user_attrs.get("fail_reason", ""),
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


def leaderboard(study: optuna.Study, k: int = 5) -> str:
    """Top-k succeeded trials with their objective, the baseline beside it, and the run's totals."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value,
                      reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    counts = _counts(study)
    lines = [f"{study.study_name}: {counts['complete']} succeeded, {counts['pruned']} early-stopped, "
             f"{counts['fail']} failed"]
    for rank, t in enumerate(complete[:k], start=1):
        base = t.user_attrs.get("observation", {}).get("baseline_val_loss", {}).get("latest")
        base_text = f" (best naive baseline {base:.5g})" if base is not None else ""
        params = " ".join(f"{name}={_katib_value(v)}" for name, v in t.params.items())
        lines.append(f"  #{rank} trial {t.number}: objective {t.value:.5g}{base_text} after "
                     f"{t.user_attrs.get('epochs_run', '?')} epochs | {params}")
    epochs = [t.user_attrs.get("epochs_run", 0) for t in study.get_trials(deepcopy=False)]
    pruned_epochs = [t.user_attrs.get("epochs_run", 0) for t in study.get_trials(deepcopy=False,
                                                                                  states=(TrialState.PRUNED,))]
    lines.append(f"  epochs run: {sum(epochs)} in all, {sum(pruned_epochs)} of them in early-stopped trials")
    return "\n".join(lines)


