"""The ``hpo`` commands the API has no call for, each calling the part that does the work: ``data fetch``,
``dashboard``, ``manifests`` and ``katib suggestion-service``; and which extra installs an optional library a command
imports (:func:`extras_named`). :mod:`hpo_lib.cli` parses their flags and dispatches to them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from hpo_lib.errors import ConfigError, HpoError, first_line, redact

log = logging.getLogger(__name__)

# an optional library a command imports -> (its distribution, the extra of pyproject.toml that installs it)
EXTRA_OF = {"plotly": ("plotly", "local"), "optuna_dashboard": ("optuna-dashboard", "local"),
            "psycopg": ("psycopg", "postgres"), "grpc": ("grpcio", "suggestion"),
            "grpc_health": ("grpcio-health-checking", "suggestion")}  # fmt: skip


@contextlib.contextmanager
def extras_named(command: str) -> Iterator[None]:
    """An optional library that is not installed, as one line naming the extra that installs it (``hpo report``
    without ``[local]``), instead of an ImportError's traceback, or a part's message that words the ImportError
    (a storage URL whose driver is missing)."""
    try:
        yield
    except (ImportError, HpoError) as exc:
        missing = _missing_optional(exc)
        if missing is None or "pip install" in str(exc):  # a part that says what to install already says more
            raise
        package, extra = EXTRA_OF[missing]
        raise ConfigError(
            f"`hpo {command}` needs {package}, which katib-hpo's [{extra}] extra installs: "
            f"pip install 'katib-hpo[{extra}]'"
        ) from None


def _missing_optional(exc: BaseException) -> str | None:
    """The optional module whose absence ``exc``, or an exception it was raised from or while handling (a
    ``raise ... from None`` keeps that one too), reports, if any."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        name = (getattr(current, "name", None) or "").split(".")[0]
        if isinstance(current, ImportError) and name in EXTRA_OF:
            return name
        current = current.__cause__ or current.__context__
    return None


def data_fetch(args: argparse.Namespace) -> int:
    from hpo_lib import data

    path, prices = data.fetch(args.spec, cache_dir=args.cache_dir, refresh=args.refresh)
    for ticker, frame in prices.items():
        print(f"{ticker}: {len(frame)} rows, {frame.index[0].date()} .. {frame.index[-1].date()}")
    print(f"cached at {path}" if path else "bundled or local data: nothing to cache")
    return 0


def dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard; its URL is printed once the server listens and the app answers (loading the storage
    takes seconds)."""
    from pathlib import Path

    from hpo_lib import engine

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    options = engine.TuneOptions(storage=args.storage, state_dir=Path(args.state_dir), tracking=False)
    if options.storage is None and not options.study_db.exists():
        raise ConfigError(f"no studies under {args.state_dir}/: run `hpo tune MANIFEST` first")
    storage = options.storage_url
    server = _bound_server(args.host, args.port)  # a taken port is one line before seconds of loading
    try:
        import optuna_dashboard

        print(f"hpo: loading optuna-dashboard for {redact(storage)} ...", file=sys.stderr, flush=True)
        server.set_app(optuna_dashboard.wsgi(storage))
        print(
            f"optuna-dashboard on http://{args.host}:{args.port}/ for {redact(storage)} (Ctrl-C stops it)", flush=True
        )
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _bound_server(host: str, port: int):  # noqa: ANN202 - wsgiref's WSGIServer, imported here
    """A WSGI server listening on ``host:port`` (IPv6 when the host has a colon), requests logged at INFO (-v)."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            log.info("%s " + format, self.address_string(), *args)

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        return Server((host.strip("[]"), port), Handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or first_line(exc)} (another server holds the port, or "
            "the address is not this machine's); pick another with --port"
        ) from None


def manifests(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo_lib.katib import manifests

    root = Path(args.root) if hasattr(args, "root") else None
    if args.manifests_command == "render":
        assert root is not None  # render and check always have --root
        written = manifests.write(root)
        print(f"rendered {len(manifests.render())} files under {root}/ ({len(written)} changed)")
        return 0
    if args.manifests_command == "check":
        assert root is not None  # render and check always have --root
        drifted = manifests.drift(root)
        if drifted:
            print(
                f"hpo: error: {len(drifted)} manifest(s) differ from the code: {', '.join(drifted)}; "
                f"run `hpo manifests render`",
                file=sys.stderr,
            )
            return 1
        print(f"{len(manifests.render())} manifests under {root}/ match the code")
        return 0
    from hpo_lib.katib import lint, suggestion

    failed = False
    for file in args.files:
        findings = lint.validate_file(file, extra=suggestion.lint_findings)
        errors = [f for f in findings if f.severity == "error" or args.strict]
        failed |= bool(errors)
        for finding in findings:
            print(f"{file}: {finding}")
        print(f"{file}: {'INVALID' if errors else 'ok'} ({len(findings)} finding(s))")
    return 1 if failed else 0


def katib_suggestion_service(args: argparse.Namespace) -> int:
    from hpo_lib.katib import service

    def listening(port: int) -> None:
        print(f"hpo: katib-hpo-multiobjective suggestion service listening on {args.host}:{port}", file=sys.stderr)

    service.run_until_stopped(args.port, host=args.host, on_listening=listening)  # SIGTERM or Ctrl-C ends it
