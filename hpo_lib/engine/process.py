"""A trial as a process on this machine: its command, its launch, the lines it prints, its end.

* the command: the manifest's (:func:`hpo_lib.katib.experiment.trial_command`) resolved to this environment
  (:func:`local_command`), checked once with the trial's own parser (:func:`preflight`) when it is this project's;
* the process: a fresh one, or a fork of the warm worker (:func:`warm_server`, :mod:`hpo_lib.engine.warm`), in its
  own session, SIGTERMed when the engine dies (:func:`launch`, :func:`terminate`);
* its output: one reader thread per trial puts ``(number, kind, payload)`` events on the engine's queue, read from
  stdout (Katib's StdOut collector) or from the file the manifest names (its File collector).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from hpo_lib import limits, study_record
from hpo_lib.engine import warm
from hpo_lib.engine.options import TuneOptions
from hpo_lib.errors import ConfigError, first_line, redact_argv
from hpo_lib.katib import experiment
from hpo_lib.trial_contract import CHECK_FLAGS, OUTPUT_DIR_ENV

TAIL_LINES = 40  # the output lines kept of each trial, for a failure's record
LOG_NAME = "trial.log"  # both streams of a trial, merged in order: Katib's `<command> 1>metrics.log 2>&1`
WARM_LOG = "warm-worker.log"  # the fork server's own stderr, beside the experiment's trial folders
log = logging.getLogger(__name__)
Process = subprocess.Popen | warm.WarmProcess


@dataclass
class Running:
    """A trial this engine runs now: its process and what it printed so far."""

    trial: optuna.trial.Trial
    process: Process
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


# ----------------------------------------------------------------------------------------------- the command
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
    check_lengths(argv, env)
    return argv, env, options.trial_timeout_s or command.deadline_s


def check_lengths(argv: list[str], env: dict[str, str]) -> None:
    """Refuse, naming it, an argument or environment entry the kernel would refuse to start (``Argument list too
    long``): one over :data:`~hpo_lib.limits.ARGUMENT_BYTES`, or all together over the system's ARG_MAX."""
    for arg in argv:
        size = len(arg.encode("utf-8", "surrogateescape"))
        limits.ARGUMENT_BYTES.check(f"the trial argument {arg[:40]!r}...", size)
    for name, value in env.items():
        size = len(f"{name}={value}".encode("utf-8", "surrogateescape"))
        limits.ARGUMENT_BYTES.check(f"the trial's environment variable {name}", size)
    total = sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv)
    total += sum(len(f"{k}={v}".encode("utf-8", "surrogateescape")) + 1 for k, v in env.items())
    arg_max = _arg_max()
    if total > arg_max:
        raise ConfigError(
            f"the trial's arguments and environment are {total:,} bytes, over the system's ARG_MAX of {arg_max:,} "
            "bytes: shorten the longest values or put them in a file and pass its path"
        )


def _arg_max() -> int:
    try:
        return int(os.sysconf("SC_ARG_MAX"))
    except (ValueError, OSError, AttributeError):
        return 2_097_152  # Linux's usual value (a quarter of an 8 MiB stack)


_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")


def searched_overrides(doc: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    """The searched parameters an override (``--set``) replaces: parameter -> the value every trial then runs with.

    A flag of the trial template that takes a searched parameter whole (``--seq-len=${trialParameters.seqLen}``)
    and is overridden runs every trial with the override, not the sampled value: the engine then fixes that
    parameter to the override, so the study, the export and the leaderboard record the value the trials used. Each
    is said once, as a warning; a flag that takes a parameter within a longer value is warned about only."""
    template = doc["spec"].get("trialTemplate") or {}
    references = {t.get("name"): t.get("reference") for t in template.get("trialParameters") or []}
    searched = {p["name"] for p in doc["spec"]["parameters"]}
    try:
        container = experiment.primary_container(
            template.get("trialSpec") or {}, template.get("primaryContainerName", "training")
        )
    except ConfigError:
        return {}
    fixed: dict[str, str] = {}
    for arg in [*container.get("command", []), *container.get("args", [])]:
        flag, sep, value = str(arg).removeprefix("--").partition("=")
        if not (str(arg).startswith("--") and sep and flag in overrides):
            continue
        for parameter in (str(references.get(p)) for p in _PLACEHOLDER.findall(value)):
            if parameter not in searched:
                continue
            if _PLACEHOLDER.fullmatch(value):
                fixed[parameter] = overrides[flag]
                log.warning(
                    "--set %s=%s replaces the searched parameter %s: every trial runs with %s, and the study, the "
                    "export and the leaderboard record %s",
                    flag,
                    overrides[flag],
                    parameter,
                    overrides[flag],
                    overrides[flag],
                )
            else:
                log.warning(
                    "--set %s=%s replaces the flag that carries the searched parameter %s: the trials run with the "
                    "--set value while the study records the sampled %s",
                    flag,
                    overrides[flag],
                    parameter,
                    parameter,
                )
    return fixed


def own_trial(argv: list[str]) -> bool:
    """Whether the command runs this project's trial (``hpo trial ...`` or ``python -m hpo_lib.trial ...``)."""
    head = [Path(argv[0]).name, *argv[1:3]]
    return (head[0] == "hpo" and head[1:2] == ["trial"]) or (
        head[0].startswith("python") and head[1:3] == ["-m", "hpo_lib.trial"]
    )


def sample_command(doc: dict[str, Any], options: TuneOptions) -> tuple[list[str], dict[str, str]]:
    """The trial command (argv, env) for one assignment inside the search space (each parameter's first listed
    value, else its min): what :func:`preflight` checks and what :func:`warm_server` preloads for."""
    assignments = {p["name"]: _some_value(p) for p in doc["spec"]["parameters"]}
    longest = {p["name"]: _longest_value(p) for p in doc["spec"]["parameters"]}
    local_command(doc, longest, options, options.state_dir)  # refuses now what a later trial could not start
    argv, env, _ = local_command(doc, assignments, options, options.state_dir)
    return argv, env


def _some_value(parameter: dict[str, Any]) -> str:
    """One value of a Katib parameter's feasible space (its first listed value, else its min)."""
    feasible = parameter.get("feasibleSpace") or {}
    values = feasible.get("list")
    return str(values[0]) if values else str(feasible.get("min", ""))


def _longest_value(parameter: dict[str, Any]) -> str:
    """The longest text a Katib parameter can substitute (its longest listed value, else its longer bound)."""
    feasible = parameter.get("feasibleSpace") or {}
    values = [str(v) for v in feasible.get("list") or [feasible.get("min", ""), feasible.get("max", "")]]
    return max(values, key=len, default="")


def preflight(argv: list[str], env: dict[str, str]) -> None:
    """When the trial command is this project's trial, check its flags (the manifest's and ``--set``'s) with the
    trial's own parser before any trial starts, on one assignment inside the search space: a typo then costs one
    line, not every trial. The trial is reached as a process (``--check-flags``), as the engine reaches it always.
    ``argv`` and ``env``: :func:`sample_command`."""
    if not own_trial(argv):
        return
    env = {k: v for k, v in env.items() if k != OUTPUT_DIR_ENV}
    try:
        done = subprocess.run(
            [*argv, CHECK_FLAGS], capture_output=True, text=True, env=env, timeout=60, errors="replace"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run the trial command {argv[0]}: {first_line(exc)}") from None
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        why = said[-1].split(": error: ", 1)[-1] if said else f"exit code {done.returncode}"
        raise ConfigError(
            f"the trial refuses its flags before any trial starts: {why}; fix the manifest's args or the --set value"
        )


def warm_server(
    argv: list[str], env: dict[str, str], options: TuneOptions, experiment_dir: Path
) -> warm.WarmServer | None:
    """The fork server that starts trials warm (:mod:`hpo_lib.engine.warm`), started now. None when
    ``--cold-start`` is set, or when the trial command is not ours (``warm_start="python"``: not a command of this
    Python); any other command runs as a plain process, as on Katib. It preloads the trial's module (and the ``hpo``
    script's, for ``hpo trial``); the engine still reaches the trial only as a command, run in a child of that
    server. ``argv`` and ``env``: :func:`sample_command`; its log goes to ``experiment_dir``."""
    if options.warm_start not in ("own", "python"):
        return None
    own = own_trial(argv)
    if not (own or options.warm_start == "python") or not warm.runnable(argv, env):
        return None
    preload = [] if not own else ["hpo_lib.trial"] if argv[1:2] == ["-m"] else ["hpo_lib.cli", "hpo_lib.trial"]
    server = warm.WarmServer(preload, experiment_dir / WARM_LOG, preexec=_die_with_engine())
    server.start()
    return server


# ----------------------------------------------------------------------------------------------- the process
def launch(
    doc: dict[str, Any],
    trial: optuna.trial.Trial,
    options: TuneOptions,
    events: queue.Queue,
    collection: experiment.Collection,
    server: warm.WarmServer | None = None,
) -> Running:
    """Start the trial's process (warm when ``server`` can fork it) and its reader thread(s). A trial that cannot
    start (its command refused, or the system refuses to start it) is told FAIL with the reason, never left
    RUNNING, and the reason is raised as one ConfigError."""
    assignments = {name: study_record.katib_value(value) for name, value in trial.params.items()}
    output_dir = options.state_dir / experiment.qualified_name(doc) / f"trial-{trial.number:04d}"
    from_file = Path(collection.path) if collection.path else None
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        argv, env, deadline = local_command(doc, assignments, options, output_dir)
        trial.set_user_attr(study_record.ARGV, redact_argv(argv))  # stored: no secret at rest
        start = _file_state(from_file) if from_file else None  # before the trial runs: what it writes comes after
        process: Process | None = server.launch(argv, env) if server is not None else None
        trial.set_user_attr(study_record.WARM_START, process is not None)
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
    except (ConfigError, OSError) as exc:
        why = str(exc) if isinstance(exc, ConfigError) else f"cannot start trial {trial.number}: {first_line(exc)}"
        trial.set_user_attr(study_record.FAIL_REASON, why)
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise ConfigError(why) from None
    state = Running(
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


def _read_lines(
    number: int,
    process: Process,
    events: queue.Queue,
    log_path: Path,
    from_file: Path | None = None,
) -> None:
    """Feed the trial's merged output to the engine: as metrics lines (StdOut collector), or, when the metrics come
    from a file (``from_file``), as output only, while :func:`_tail_file` feeds the metrics and the exit.

    The trial's exit is reported whatever happens to its log: a log that cannot be written (a full disk) is given up
    with one output line saying why, and the lines still reach the engine."""
    assert process.stdout is not None  # launch starts every trial with stdout=PIPE, stderr merged into it
    log_file = None
    try:
        try:
            log_file = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        except OSError as exc:
            events.put((number, "output", _log_lost(log_path, exc)))
        for line in process.stdout:
            if log_file is not None:
                try:
                    log_file.write(line)
                    log_file.flush()
                except OSError as exc:
                    events.put((number, "output", _log_lost(log_path, exc)))
                    _close_quietly(log_file)
                    log_file = None
            events.put((number, "output" if from_file else "line", line.rstrip("\n")))
    finally:
        _close_quietly(log_file)
        if from_file is None:
            events.put((number, "exit", process.wait()))


def _log_lost(log_path: Path, exc: OSError) -> str:
    return f"hpo: {log_path} is no longer written: {exc.strerror or first_line(exc)}"


def _close_quietly(handle: Any) -> None:
    """Close a file whose buffered writes may fail on closing (a full disk)."""
    if handle is not None:
        try:
            handle.close()
        except OSError:
            pass


def _file_state(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a file, None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size


def _tail_file(
    number: int,
    process: Process,
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


def enforce_deadlines(running: dict[int, Running]) -> None:
    now = time.monotonic()
    for state in running.values():
        if state.deadline and now - state.started > state.deadline and state.process.poll() is None:
            state.reason = f"exceeded the trial deadline of {state.deadline:.0f} s (activeDeadlineSeconds)"
            terminate(state.process)


def terminate(process: Process, grace_s: float = 10.0) -> None:
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


def _signal_group(process: Process, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # each trial leads its own session (start_new_session=True)
    except (ProcessLookupError, PermissionError):
        process.send_signal(signum)
