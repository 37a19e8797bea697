"""Warm trial starts: a fork server that imported the trial's heavy modules once, and forks one child per trial.

A cold trial is a fresh interpreter: ``import torch`` and the optimizer's lazy ``torch._dynamo`` cost seconds before
the first batch. The server (``python -m hpo_lib.engine.warm``, one per engine run) imports them once; each trial is
then a child forked from it that runs the manifest's command as that command would run in a fresh interpreter: the
same argv (``-m module`` through :mod:`runpy`, a script such as ``hpo`` by its path), the same environment and working
folder, stdout and stderr merged into the engine's pipe, its own session (the engine signals its group), Linux's
parent-death signal (it dies with the server, which dies with the engine). The child ends with ``os._exit`` once its
streams are flushed, so no interpreter teardown holds the trial's slot.

Process isolation stays what it is with cold starts: a crash, a hang or an early stop ends one trial only.

What must not happen before the fork: CUDA initialisation (a CUDA context does not survive ``fork``) and torch's
intra-op/inter-op thread pools (threads are not copied into the child, whose pool would then wait on workers that do
not exist). Importing torch does neither; both start lazily, in the child, on its first tensor operation, after the
trial set its ``--threads``. The two native helper threads the imports do start (numpy's OpenBLAS pool and pyarrow's
jemalloc background thread) register ``pthread_atfork`` handlers and are rebuilt in the child.

The socket is a private Unix socket in a 0700 folder of the engine's user, and the server serves only peers with that
user's uid: running a command through it grants nothing a user could not do already.

Wire format: the engine sends one JSON line ``{"argv", "env", "cwd"}`` with the write end of the trial's output pipe
attached (``SCM_RIGHTS``); the server answers ``{"pid"}`` after the fork, then ``{"exit"}`` (``subprocess``'s return
code: negative for a signal) when the child has been reaped, or ``{"error"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

READY = "ready"  # the server's first stdout line, once its preloads are imported
WARM_UP = "warm_up"  # a preloaded module's optional function that imports what its first use would import lazily
# variables read when an interpreter or a native library starts: a command whose environment sets them differently
# from the engine's runs cold, since a fork inherits what the server started with
_STARTUP_VARS = ("PYTHON", "LD_", "MALLOC_", "TORCH", "CUDA_", "KMP_", "MKL_", "OPENBLAS_", "OMP_")
_RUNTIME_VARS = {"PYTHONUNBUFFERED"}  # honoured by the child itself (its streams are rebuilt unbuffered)
START_TIMEOUT_S = 120.0


# ----------------------------------------------------------------------------------------------- the server
def serve(sock_path: str, preload: Sequence[str], out: TextIO | None = None) -> int:
    """Import ``preload`` (calling each module's ``warm_up``), then fork a child per request until SIGTERM."""
    out = out or sys.stdout
    for name in preload:
        module = importlib.import_module(name)
        warm_up = getattr(module, WARM_UP, None)
        if callable(warm_up):
            warm_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    stopping: list[int] = []
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears of exits
    signal.signal(signal.SIGTERM, lambda signum, _f: stopping.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the engine, which ends the trials itself
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, socket.socket] = {}  # child pid -> the connection that asked for it
    print(READY, flush=True, file=out)
    uid = os.getuid()
    private = [listener.fileno(), wake_r, wake_w, selector.fileno()]
    while not stopping:
        for key, _ in selector.select(timeout=1.0):
            if key.data == "accept":
                conn, _ = listener.accept()
                if _peer_uid(conn) != uid:
                    conn.close()
                    continue
                pid = _spawn(conn, private + [c.fileno() for c in children.values()])
                if pid is None:
                    conn.close()
                else:
                    children[pid] = conn
            elif key.data == "wake":
                with contextlib.suppress(OSError):
                    os.read(wake_r, 4096)
        _reap(children)
    for pid in children:  # the engine is gone or done: its trials end with it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while children and time.monotonic() < deadline:
        _reap(children)
        time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return 0


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(_line({"exit": os.waitstatus_to_exitcode(status)}))
            conn.close()


def _line(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def _spawn(conn: socket.socket, private: list[int]) -> int | None:
    """Read one request and fork its child; None when the request cannot be served (the engine then runs it cold)."""
    conn.settimeout(10)
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 1)
        while not data.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more:
                raise OSError("connection closed mid-request")
            data += more
        request = json.loads(data)
        argv, env, cwd = list(request["argv"]), dict(request["env"]), str(request["cwd"])
        if len(fds) != 1:
            raise ValueError("expected the output pipe's write end")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        with contextlib.suppress(OSError):
            conn.sendall(_line({"error": f"bad request: {exc}"}))
        return None
    conn.settimeout(None)
    pid = os.fork()
    if pid == 0:  # the trial
        code = 1
        try:
            code = _child(argv, env, cwd, fds[0], [*private, conn.fileno()], os.getppid())
        finally:
            os._exit(code)
    os.close(fds[0])
    conn.sendall(_line({"pid": pid}))
    return pid


def _child(argv: list[str], env: dict[str, str], cwd: str, output_fd: int, private: list[int], server: int) -> int:
    """Become the command's process, run it, flush, and return its exit code (the caller ``os._exit``s with it)."""
    os.setsid()  # its own session and process group, as the engine's cold trials: SIGTERM reaches all it starts
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the server
        if os.getppid() != server:
            return 1
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in private:
        with contextlib.suppress(OSError):
            os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    # unbuffered byte layer, line-buffered text on top: what PYTHONUNBUFFERED=1 gives a fresh interpreter
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True, write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _reseed()
    code = 0
    try:
        _run_command(argv)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - a fresh interpreter prints the traceback and exits 1
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        logging.shutdown()
    return code


def _reseed() -> None:
    """A fresh interpreter starts with fresh random state; a forked child would share the server's."""
    import random

    random.seed()
    for name, reseed in (("numpy", lambda m: m.random.seed()), ("torch", lambda m: m.seed())):
        module = sys.modules.get(name)
        if module is not None:
            reseed(module)


def _run_command(argv: list[str]) -> None:
    import runpy

    if argv[1:2] == ["-m"]:
        spec = importlib.util.find_spec(argv[2])
        sys.argv = [spec.origin if spec and spec.origin else argv[2], *argv[3:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        script = argv[1:] if argv[0] == sys.executable else argv  # `python FILE.py ...` or a script of ours
        sys.argv = list(script)
        sys.path[0] = str(Path(script[0]).resolve().parent)
        runpy.run_path(script[0], run_name="__main__")


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


# ----------------------------------------------------------------------------------------------- the engine's side
def runnable(argv: Sequence[str], env: dict[str, str], python: str = sys.executable) -> bool:
    """Whether a fork of a server started by ``python`` runs ``argv`` exactly as a fresh process would: the command
    is this interpreter with ``-m MODULE`` or ``FILE.py``, or a script of this interpreter (its ``#!`` line), and the
    environment
    agrees with the engine's on every variable read at start-up."""
    if not argv:
        return False
    if argv[0] == python:
        if not (argv[1:2] == ["-m"] and len(argv) >= 3) and not (len(argv) >= 2 and argv[1].endswith(".py")):
            return False
    elif not _script_of(argv[0], python):
        return False
    for key in set(env) | set(os.environ):
        if key.startswith(_STARTUP_VARS) and key not in _RUNTIME_VARS and env.get(key) != os.environ.get(key):
            return False
    return True


def _script_of(path: str, python: str) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == b"#!" + os.fsencode(python)


class WarmProcess:
    """A trial forked by the server, with the part of :class:`subprocess.Popen` the engine uses: ``pid``,
    ``stdout``, ``poll``, ``wait``, ``send_signal``. Its exit code comes over the server's connection; when the server
    dies first, the child dies with it (parent-death signal) and ``worker_died`` is set."""

    def __init__(self, conn: socket.socket, pid: int, stdout: io.TextIOBase, received: bytes = b"") -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self.worker_died = False
        self._conn = conn
        self._received = received  # what came with the pid: the exit, when the child was that quick
        self._done = threading.Event()
        threading.Thread(target=self._await_exit, daemon=True).start()

    def _await_exit(self) -> None:
        buffer = self._received
        try:
            while b"\n" not in buffer:
                chunk = self._conn.recv(4096)
                if not chunk:
                    break
                buffer += chunk
        except OSError:
            pass
        finally:
            self._conn.close()
        try:
            self.returncode = int(json.loads(buffer.split(b"\n", 1)[0])["exit"])
        except (ValueError, KeyError, TypeError):
            self.worker_died = True
            self._wait_gone()
            self.returncode = -signal.SIGTERM  # what the parent-death signal did to it
        self._done.set()

    def _wait_gone(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.05)

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        return self.returncode if self.returncode is not None else -signal.SIGTERM

    def send_signal(self, signum: int) -> None:
        if not self._done.is_set():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)


class WarmServer:
    """The engine's fork server: started once (its imports overlap with the engine's own start), replaced when it
    dies, closed with the engine. ``launch`` returns None when a command cannot be served warm; the engine then runs
    it as a plain process."""

    def __init__(
        self,
        preload: Sequence[str],
        log_path: Path,
        python: str = sys.executable,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.preload = list(preload)
        self.log_path = log_path
        self.python = python
        self.preexec = preexec
        self.starts = 0
        self._folder: str | None = None
        self._process: subprocess.Popen | None = None
        self._ready = False
        self._broken = False  # could not start: every later trial runs cold

    @property
    def socket_path(self) -> str:
        assert self._folder is not None
        return os.path.join(self._folder, "s")

    def start(self) -> None:
        """Start the server (do not wait for it); :meth:`launch` waits for its ready line."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="hpo-warm-")  # 0700: only this user reaches the socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                [
                    self.python,
                    "-c",  # not -m: the engine package imports this module, and runpy warns when it runs it again
                    "import sys; from hpo_lib.engine import warm; sys.exit(warm.main(sys.argv[1:]))",
                    "--socket",
                    self.socket_path,
                    "--preload",
                    ",".join(self.preload),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,  # Ctrl-C in the terminal reaches the engine, which ends the trials itself
                preexec_fn=self.preexec,  # noqa: PLW1509 - prctl only, as for cold trials
            )
        self._ready = False
        self.starts += 1

    def _wait_ready(self) -> bool:
        process = self._process
        if process is None or process.stdout is None:
            return False
        if not self._ready:
            line = process.stdout.readline()  # the server prints it once its imports are done, or dies
            self._ready = line.decode(errors="replace").strip() == READY
            if not self._ready:
                log.warning("the warm trial worker did not start (%s); trials start cold", self._log_tail())
                self._broken = True
        return self._ready

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"see {self.log_path}"

    def launch(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> WarmProcess | None:
        if self._broken or not runnable(argv, env, self.python):
            return None
        if self._process is None:
            self.start()
        elif self._process.poll() is not None:
            log.warning("the warm trial worker exited (code %s); starting a new one", self._process.returncode)
            self.start()
        if not self._wait_ready():
            return None
        read_fd, write_fd = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.socket_path)
            message = json.dumps({"argv": argv, "env": env, "cwd": cwd or os.getcwd()}).encode() + b"\n"
            socket.send_fds(conn, [message], [write_fd])
            os.close(write_fd)
            write_fd = -1
            answer, rest = _read_answer(conn)
            pid = int(answer["pid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the warm trial worker refused a trial (%s); it starts cold", exc)
            conn.close()
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
            return None
        stdout = open(read_fd, encoding="utf-8", errors="replace", newline=None)  # noqa: SIM115 - the reader closes it
        return WarmProcess(conn, pid, stdout, rest)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _read_answer(conn: socket.socket) -> tuple[dict[str, Any], bytes]:
    """The server's first answer, and whatever came after it on the wire."""
    conn.settimeout(30)
    buffer = b""
    while b"\n" not in buffer:
        chunk = conn.recv(4096)
        if not chunk:
            raise OSError("the worker closed the connection")
        buffer += chunk
    conn.settimeout(None)
    line, rest = buffer.split(b"\n", 1)
    answer = json.loads(line)
    if "error" in answer:
        raise ValueError(answer["error"])
    return answer, rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpo_lib.engine.warm", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to serve on")
    parser.add_argument("--preload", default="", help="modules to import before serving, comma-separated")
    args = parser.parse_args(argv)
    return serve(args.socket, [m for m in args.preload.split(",") if m])


if __name__ == "__main__":
    sys.exit(main())
