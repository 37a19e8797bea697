"""The ``hpo`` command, the project's only face: parse flags, call hpo_lib, print (progress bars included).

Bad input ends as one line on stderr and exit code 2 (:func:`hpo_lib.errors.run_main`); an error that names the
settings that fix it gets them as this command's flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from hpo_lib.errors import ConfigError, HpoError, RedactingFilter, exit_now, first_line, redact, run_main
from hpo_lib.version import __version__

DESCRIPTION = """\
Tune deep-learning forecasters for financial time series with Katib, or on one machine.

commands:
  trial         train one model; prints Katib metrics lines (what every Katib trial pod runs)
  data fetch    download market data once into the Parquet cache (what the cluster's data-prep Job runs)
  tune          run a Katib Experiment manifest's trials on this machine (Optuna, SQLite, Katib's rules)
  results       leaderboard and export (CSV, JSON in Katib Trial shape) of a local study
  report        plots of a local study (history, learning curves, importances, slices, Pareto front)
  dashboard     serve optuna-dashboard on the local studies (the laptop's Katib UI)
  manifests     render, drift-check and validate the Katib Experiment manifests and cluster resources
  katib suggestion-service  serve Katib's Suggestion gRPC API for algorithm katib-hpo-multiobjective
  pipeline      the KFP pipeline (tune -> winners -> GPU retrains -> test evaluation -> MLflow): compile, run-local

Run `hpo COMMAND --help` for the options of a command.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and retries")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("trial", help="train one model (run `hpo trial --help` for its flags)", add_help=False)

    data_parser = commands.add_parser("data", help="market data")
    data_commands = data_parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    fetch = data_commands.add_parser(
        "fetch",
        help="download once into the cache",
        description="Download market data once and cache it as Parquet, so trials never call Yahoo again. "
        "Example: hpo data fetch 'yahoo:SPY,QQQ?start=2010-01-01&end=2024-12-31' --cache-dir /data",
    )
    fetch.add_argument("spec", help="data spec: yahoo:T1,T2?start=..&end=..&interval=1d, sample:NAME or file:PATH")
    fetch.add_argument("--cache-dir", default=None, help="cache folder (default $HPO_CACHE_DIR or ~/.cache/katib-hpo)")
    fetch.add_argument("--refresh", action="store_true", help="download again even when the cache has the request")

    tune = commands.add_parser(
        "tune",
        help="run a Katib Experiment manifest locally",
        description="Run the trials of a Katib Experiment manifest as local processes: the manifest's algorithm "
        "as an Optuna sampler, its trial command with the parameters substituted, Katib's metrics "
        "filter and median stopping rule, its budget. Re-running the same command resumes the study. "
        "Example: hpo tune manifests/lstm-experiment.yaml --set data=sample:sp500 --set epochs=5 "
        "--max-trials 8",
    )
    tune.add_argument("manifest", help="Experiment YAML, e.g. manifests/lstm-experiment.yaml")
    tune.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FLAG=VALUE",
        help="override or add a trial flag for local runs (repeatable), e.g. data=sample:sp500",
    )
    tune.add_argument("--max-trials", type=int, default=None, help="override maxTrialCount")
    tune.add_argument("--parallel", type=int, default=None, help="override parallelTrialCount")
    tune.add_argument(
        "--pruner",
        default="manifest",
        choices=["manifest", "medianstop", "optuna-median", "hyperband", "none"],
        help="early stopping: the manifest's (Katib's medianstop, the default) or a local alternative",
    )
    tune.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///<state-dir>/studies.db)")
    tune.add_argument("--state-dir", default=".hpo", help="studies, trial outputs and exports (default .hpo)")
    tune.add_argument(
        "--trial-timeout", type=float, default=None, help="seconds per trial (default: the Job's activeDeadlineSeconds)"
    )
    tune.add_argument("--no-progress", action="store_true", help="no live progress bar")
    tune.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<state-dir>/mlflow.db)",
    )
    tune.add_argument("--no-tracking", action="store_true", help="do not log the study and its trials to MLflow")
    tune.add_argument(
        "--new-study", action="store_true", help="keep the stored study as <name>.archived-<UTC time> and start afresh"
    )
    tune.add_argument(
        "--cold-start",
        action="store_const",
        const="off",
        dest="warm_start",
        help="start each trial as a fresh interpreter (default: the project's trials fork from a warm worker that "
        "imported torch once, about 2 s faster per trial)",
    )
    tune.add_argument(
        "--warm-start",
        choices=["own", "python", "off"],
        default="own",
        help="which trials fork from the warm worker: own (hpo trial / python -m hpo_lib.trial, the default), "
        "python (any command of this Python: python -m MOD, python FILE.py), off (same as --cold-start)",
    )
    tune.add_argument(
        "--mo-sampler",
        default="manifest",
        choices=["manifest", "nsga2"],
        help="sampler of a multi-objective study (algorithm katib-hpo-multiobjective's objectives setting): "
        "the manifest's algorithm (default: its sampler setting) or NSGA-II",
    )

    def study_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("manifest", help="the Experiment YAML the study was tuned from")
        sub.add_argument(
            "--storage", default=None, help="Optuna storage URL (default sqlite:///<state-dir>/studies.db)"
        )
        sub.add_argument("--state-dir", default=".hpo", help="where `hpo tune` kept its state (default .hpo)")

    results = commands.add_parser(
        "results",
        help="leaderboard and export of a local study",
        description="Print the leaderboard of a study `hpo tune` ran (top-k or the Pareto front, beside the best "
        "naive baseline) and export every trial: JSON shaped like Katib Trial CRs "
        "(parameterAssignments, observation.metrics), and CSV with a row per trial.",
    )
    study_args(results)
    results.add_argument("--output", default=None, help="export folder (default <state-dir>/<study>/)")
    results.add_argument("--top", type=int, default=5, help="trials on the leaderboard (default 5)")
    report = commands.add_parser(
        "report",
        help="plots of a local study (HTML and PNG)",
        description="Write optimization history, learning curves, parameter importances, slice plots and (with "
        "several objectives) the Pareto front as PNG files and one offline report.html.",
    )
    study_args(report)
    report.add_argument("--output", default=None, help="report folder (default <state-dir>/<study>/report/)")
    dashboard = commands.add_parser(
        "dashboard",
        help="serve optuna-dashboard on the local study storage",
        description="Serve optuna-dashboard on the studies `hpo tune` stored: trials, curves and plots live in a "
        "browser, the local stand-in for the Katib UI. Ctrl-C stops it.",
    )
    dashboard.add_argument(
        "--storage", default=None, help="Optuna storage URL (default sqlite:///<state-dir>/studies.db)"
    )
    dashboard.add_argument("--state-dir", default=".hpo", help="where `hpo tune` kept its state (default .hpo)")
    dashboard.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")

    pipeline = commands.add_parser("pipeline", help="the KFP pipeline: compile it, or run it on this machine")
    pipeline_commands = pipeline.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    compile_ = pipeline_commands.add_parser(
        "compile",
        help="write the compiled pipeline YAML (upload it to Kubeflow Pipelines)",
        description="Compile the pipeline (hpo_lib/pipeline/dag.py) to YAML: in a checkout of the repository to the "
        "committed pipelines/katib_hpo_pipeline.yaml (a test fails when it is stale), elsewhere to "
        "./katib_hpo_pipeline.yaml.",
    )
    compile_.add_argument(
        "--output",
        default=None,
        help="YAML path (default pipelines/katib_hpo_pipeline.yaml in a checkout, else ./katib_hpo_pipeline.yaml)",
    )
    local = pipeline_commands.add_parser(
        "run-local",
        help="run the pipeline with kfp's local runner on `hpo tune`'s trials",
        description="Run the whole pipeline with kfp's local SubprocessRunner, taking the trials from the embedded "
        "engine's export instead of Katib: winners -> retrains on train+val -> test evaluation against "
        "the baselines -> MLflow (register <model-name>@champion only if it beats the best baseline). "
        "Example: hpo tune manifests/lstm-experiment.yaml --set data=sample:sp500 --set epochs=5 "
        "--max-trials 8 && hpo pipeline run-local manifests/lstm-experiment.yaml",
    )
    local.add_argument("manifest", help="the Experiment YAML `hpo tune` ran")
    local.add_argument("--state-dir", default=".hpo", help="where `hpo tune` kept its state (default .hpo)")
    local.add_argument("--trials", default=None, help="trials.json (default <state-dir>/<study>/trials.json)")
    local.add_argument("--data", default=None, help="data spec (default: the one the local trials used)")
    local.add_argument("--top-k", type=int, default=3, help="winners by the objective (default 3)")
    local.add_argument("--no-pareto", action="store_true", help="only the top-k, no Pareto front")
    local.add_argument("--max-winners", type=int, default=4, help="cap on winners, 0 = none (default 4)")
    local.add_argument("--include-early-stopped", action="store_true", help="early-stopped trials may win too")
    local.add_argument("--seeds", type=int, default=2, help="retrains per winner, seeds 0..N-1 (default 2)")
    local.add_argument("--epochs", type=int, default=0, help="retrain epochs (default: the trials' --epochs)")
    local.add_argument(
        "--retrain-flags", default=None, help="extra trial flags for every retrain (default --threads=<half the CPUs>)"
    )
    local.add_argument("--cost-bps", type=float, default=5.0, help="backtest cost per unit traded (default 5)")
    local.add_argument(
        "--test-origins",
        type=int,
        default=0,
        help="rolling-origin test: refit at R origins through the test split (default 0 = one per quarter, 1 = off)",
    )
    local.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI (default $MLFLOW_TRACKING_URI, else sqlite:///<state-dir>/mlflow.db)",
    )
    local.add_argument("--mlflow-experiment", default="", help="MLflow experiment (default: the Experiment's name)")
    local.add_argument("--model-name", default="", help="registered model name (default: the Experiment's name)")
    local.add_argument(
        "--pipeline-root",
        default="local_outputs/pipeline",
        help="where kfp writes every step's artifacts (default local_outputs/pipeline)",
    )

    manifests = commands.add_parser("manifests", help="Katib Experiment manifests and cluster resources")
    manifest_commands = manifests.add_subparsers(dest="manifests_command", metavar="SUBCOMMAND")
    for name, text in (
        ("render", "write manifests/ from the search spaces in hpo_lib/katib/space.py"),
        ("check", "fail when a committed manifest differs from what the code renders"),
    ):
        sub = manifest_commands.add_parser(name, help=text, description=text)
        sub.add_argument("--root", default="manifests", help="manifests folder (default: manifests)")
    validate = manifest_commands.add_parser(
        "validate",
        help="check Experiment files offline against Katib's admission and runtime rules",
        description="Check Katib Experiment YAML offline: Katib's webhook rules, the failures Katib accepts but "
        "then stalls on, the Job template against Kubernetes' schema, and that the trial prints the "
        "objective and additional metrics. Exit code 1 when any error is found.",
    )
    validate.add_argument("files", nargs="+", help="Experiment YAML files")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")

    katib = commands.add_parser("katib", help="services a Katib cluster runs from this project")
    katib_commands = katib.add_subparsers(dest="katib_command", metavar="SUBCOMMAND")
    service = katib_commands.add_parser(
        "suggestion-service",
        help="serve Katib's Suggestion gRPC API for algorithm katib-hpo-multiobjective",
        description="Serve Katib's v1beta1 Suggestion API (GetSuggestions, ValidateAlgorithmSettings) and the gRPC "
        "health service for algorithm katib-hpo-multiobjective: multi-objective TPE or NSGA-II proposals from the "
        "same code `hpo tune` runs. What the suggestion pod registered by "
        "manifests/overlays/katib-hpo-multiobjective runs. Stops on Ctrl-C or SIGTERM.",
    )
    service.add_argument("--port", type=int, default=6789, help="port to listen on (default 6789, Katib's; 0: any)")
    service.add_argument("--host", default="[::]", help="address to listen on (default [::], every interface)")
    _verbose_after_the_command(parser)
    return parser


def _katib_suggestion_service(args: argparse.Namespace) -> int:
    import signal
    import threading

    from hpo_lib.katib import service

    running = service.serve(args.port, host=args.host)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # the pod's stop: finish in-flight calls
    print(f"hpo: katib-hpo-multiobjective suggestion service listening on {args.host}:{running.port}", file=sys.stderr)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        running.stop(grace_s=5)
    return 0


def _verbose_after_the_command(parser: argparse.ArgumentParser) -> None:
    """``-v`` after a (sub)command too (``hpo tune -v ...``); SUPPRESS keeps one given before it (``hpo -v tune``)."""
    for action in parser._actions:  # argparse exposes the subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name != "trial":  # the trial parses its own flags
                    sub.add_argument(
                        "-v",
                        "--verbose",
                        action="store_true",
                        default=argparse.SUPPRESS,
                        help="log progress and retries",
                    )
                    _verbose_after_the_command(sub)


def _manifests(args: argparse.Namespace) -> int:
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


def _pipeline(args: argparse.Namespace) -> int:
    import json
    import os
    import re
    from pathlib import Path

    from hpo_lib.pipeline import dag as definition

    if args.pipeline_command == "compile":  # KFP only: compiling needs neither torch nor the steps
        print(f"compiled to {definition.compile_pipeline(args.output or definition.default_output())}")
        return 0
    from hpo_lib.pipeline import steps
    from hpo_lib.results import tracking

    for name in ("top_k", "seeds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    arguments = steps.local_arguments(
        args.manifest, state_dir=args.state_dir, trials=args.trials, data=args.data, epochs=args.epochs
    )
    threads = max(1, (os.cpu_count() or 2) // 2)  # kfp's local runner runs two retrains at a time
    flags = args.retrain_flags if args.retrain_flags is not None else f"--threads={threads}"
    arguments.update(
        top_k=args.top_k,
        pareto=not args.no_pareto,
        max_winners=args.max_winners,
        include_early_stopped=args.include_early_stopped,
        n_seeds=args.seeds,
        retrain_flags=flags,
        cost_bps=args.cost_bps,
        test_origins=args.test_origins,
        mlflow_experiment=args.mlflow_experiment,
        model_name=args.model_name,
        tracking_uri=tracking.tracking_uri(args.tracking_uri, state_dir=args.state_dir),
    )
    import contextlib

    Path(args.pipeline_root).mkdir(parents=True, exist_ok=True)
    log_path = Path(args.pipeline_root) / "run-local.log"
    if not args.verbose:  # kfp's local runner echoes every step's full executor input and output
        print(
            f"running the pipeline locally (winners -> retrains -> evaluation -> MLflow); every step's output "
            f"goes to {log_path} (-v shows it here)",
            flush=True,
        )
    # the steps run in kfp's processes: they report to a file (and log retrains to MLflow as they train) through
    # the environment those processes inherit; follow_progress hands each report to _pipeline_progress here
    progress_path = Path(args.pipeline_root).resolve() / "progress.jsonl"
    progress_path.unlink(missing_ok=True)
    environment = {steps.PROGRESS_ENV: str(progress_path), "MLFLOW_TRACKING_URI": arguments["tracking_uri"]}
    if args.mlflow_experiment:
        environment["MLFLOW_EXPERIMENT_NAME"] = args.mlflow_experiment
    saved = {name: os.environ.get(name) for name in environment}
    terminal = sys.stdout
    try:
        os.environ.update(environment)
        with contextlib.ExitStack() as stack:
            stack.enter_context(steps.follow_progress(progress_path, _pipeline_progress(terminal)))
            if not args.verbose:
                log_file = stack.enter_context(open(log_path, "w"))
                stack.enter_context(contextlib.redirect_stdout(log_file))
            task = definition.run_local(pipeline_root=args.pipeline_root, **arguments)
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        where = "the last traceback above" if args.verbose else f"the last traceback in {log_path}"
        raise HpoError(
            f"{message} The task's error is {where}; the finished steps' artifacts are under {args.pipeline_root}/"
        ) from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    summary = json.loads((Path(task.outputs["summary"].path) / "summary.json").read_text())
    print(summary["verdict"])
    for name in ("leaderboard", "report", "registry"):
        print(f"{name}: {task.outputs[name].path}")
    print(f"MLflow: {redact(arguments['tracking_uri'])}")
    return 0


def _pipeline_progress(terminal):
    """The callback that shows the local pipeline's progress on ``terminal``: each step as it starts, each retrain's
    epochs (about five lines per retrain and phase, and its last epoch)."""
    seen: set[str] = set()

    def show(progress) -> None:
        if progress.step != "retrain":
            if progress.step not in seen:
                seen.add(progress.step)
                print(f"step: {progress.step}", file=terminal, flush=True)
            return
        if "retrain" not in seen:
            seen.add("retrain")
            print("step: retrain (two at a time)", file=terminal, flush=True)
        if not progress.epoch:
            print(f"  retrain {progress.item}: started", file=terminal, flush=True)
            return
        every = max(1, progress.epochs // 5)
        if progress.epoch % every == 0 or progress.epoch == progress.epochs:
            phase = "" if progress.phase == "fit" else f" ({progress.phase})"
            line = f"  retrain {progress.item}: epoch {progress.epoch}/{progress.epochs}{phase}"
            print(line, file=terminal, flush=True)

    return show


def _tune(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from hpo_lib import engine
    from hpo_lib.results import render

    overrides = {}
    for item in args.overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set expects FLAG=VALUE, got {item!r}")
        overrides[name.removeprefix("--")] = value
    for name, value in (("--max-trials", args.max_trials), ("--parallel", args.parallel)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if args.trial_timeout is not None and not (math.isfinite(args.trial_timeout) and args.trial_timeout > 0):
        raise ConfigError(
            f"--trial-timeout must be a positive number of seconds, got {args.trial_timeout:g}: every trial would be "
            "killed at once; leave it out to use the Job's activeDeadlineSeconds"
        )
    _writable_dir(Path(args.state_dir), "--state-dir")
    options = engine.TuneOptions(
        overrides=overrides,
        storage=args.storage,
        state_dir=Path(args.state_dir),
        max_trials=args.max_trials,
        parallel=args.parallel,
        pruner=args.pruner,
        trial_timeout_s=args.trial_timeout,
        tracking=not args.no_tracking,
        tracking_uri=args.tracking_uri,
        mo_sampler=args.mo_sampler,
        new_study=args.new_study,
        warm_start=args.warm_start,
    )
    with _ProgressBar(enabled=not args.no_progress) as bar, _storage_failures(options.storage_url, args.state_dir):
        options.on_progress = bar.update
        study = engine.run(args.manifest, options)
    print(render.leaderboard(study))
    folder = Path(args.state_dir) / study.study_name
    print(f"trials exported to {folder}/trials.json and trials.csv")
    if options.tracking:
        from hpo_lib.results import tracking

        print(
            f"MLflow runs: {redact(tracking.tracking_uri(options.tracking_uri, state_dir=options.state_dir))} "
            f"(experiment {study.study_name.split('.', 1)[-1]})"
        )
    print(
        f"next: hpo report {args.manifest} --state-dir {args.state_dir}   |   "
        f"hpo dashboard --state-dir {args.state_dir}"
    )
    return 0


def _study_options(args: argparse.Namespace):
    from pathlib import Path

    from hpo_lib import engine

    return engine.TuneOptions(storage=args.storage, state_dir=Path(args.state_dir), tracking=False)


def _writable_dir(path, flag: str):
    """``path`` as a folder this user can write (created if missing), or one ConfigError naming the flag and why."""
    import os

    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder: give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{flag} {path} cannot be written ({exc.strerror or type(exc).__name__}): give a folder this user may write"
        ) from None
    return path


def _load_study(manifest: str, options):
    """``engine.load_study``, with a storage that cannot be read (a corrupt or foreign SQLite file, a server that
    refuses) as one line."""
    from hpo_lib import engine

    try:
        return engine.load_study(manifest, options)
    except HpoError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and Optuna raise many types for an unusable storage
        raise ConfigError(
            f"cannot read study storage {options.storage_url}: {first_line(exc)}; is it the file or URL `hpo tune` "
            "wrote? A damaged SQLite file cannot be repaired here: restore it or tune again with another --state-dir"
        ) from None


def _storage_failures(storage: str, state_dir: str):
    """Turn a storage that fails mid-study (a full disk, a lost database server) into one line: what finished is in
    the storage already, and re-running the same command resumes."""
    from hpo_lib import api

    return api.storage_failures(storage, state_dir, resume="re-run the same command to resume")


def _output_folder(path, flag: str):
    """An explicit ``--output`` folder: refused when it is a file."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder: give a folder (it is created if missing)")
    return path


def _results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo_lib.results import render

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    options = _study_options(args)
    output = _output_folder(Path(args.output), "--output") if args.output else None
    study = _load_study(args.manifest, options)
    print(render.leaderboard(study, k=args.top))
    folder = output or options.state_dir / study.study_name
    try:
        json_path, csv_path = render.export(study, folder)
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {folder}: {exc.strerror or first_line(exc)}") from None
    print(f"exported {len(study.trials)} trials to {json_path} and {csv_path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo_lib.katib import experiment
    from hpo_lib.results import plots

    options = _study_options(args)
    doc = experiment.load_experiment(args.manifest)
    output = _output_folder(Path(args.output), "--output") if args.output else None
    study = _load_study(args.manifest, options)
    folder = output or options.state_dir / study.study_name / "report"
    try:
        written = plots.write_report(study, folder, objective_name=doc["spec"]["objective"]["objectiveMetricName"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {folder}: {exc.strerror or first_line(exc)}") from None
    for path in written:
        print(path)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import socket

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError(
            "optuna-dashboard is not installed: pip install 'katib-hpo[local]' (make install does)"
        ) from None
    options = _study_options(args)
    if options.storage is None and not options.study_db.exists():
        raise ConfigError(f"no studies under {args.state_dir}/: run `hpo tune MANIFEST` first")
    storage = options.storage_url
    try:  # the port is checked before "on http://..." is printed: a taken one is one line, not a crash after it
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, args.port))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or first_line(exc)} (another server holds the "
            "port, or the address is not this machine's); pick another with --port"
        ) from None
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {redact(storage)} (Ctrl-C stops it)", flush=True)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    except OSError as exc:  # the port was taken in the instant between the check and the server's bind
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or first_line(exc)}") from None
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from hpo_lib import data

    path, prices = data.fetch(args.spec, cache_dir=args.cache_dir, refresh=args.refresh)
    for ticker, frame in prices.items():
        print(f"{ticker}: {len(frame)} rows, {frame.index[0].date()} .. {frame.index[-1].date()}")
    print(f"cached at {path}" if path else "bundled or local data: nothing to cache")
    return 0


def _quiet_libraries(args_need_optuna: bool) -> None:
    """Without -v, only warnings: no Optuna/MLflow INFO lines or SQLAlchemy deprecation noise around our output."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported (lazily, later)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*noload.* loader strategy is deprecated")
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
    if args_need_optuna:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


class _ProgressBar:
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

    def __enter__(self) -> _ProgressBar:
        return self

    def update(self, progress) -> None:
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
        epochs = " ".join(f"#{t.number} {t.reports}/{_planned_epochs(t.argv) or '?'}" for t in progress.trials)
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


def _planned_epochs(argv: Sequence[str]) -> int | None:
    """The trial's ``--epochs`` (the face knows the trial's flags; the engine only runs the command)."""
    for arg, following in zip(argv, [*argv[1:], ""]):
        if arg.startswith("--epochs=") or arg == "--epochs":
            value = arg.split("=", 1)[1] if "=" in arg else following
            return int(value) if value.isdigit() else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] in (["-v", "trial"], ["--verbose", "trial"]):  # `hpo -v trial ...`: the trial has no -v of its own
        argv = argv[1:]
    if argv and argv[0] == "trial":  # the trial parses its own Katib-style flags, behind its own error boundary
        from hpo_lib import trial

        return trial.main(argv[1:])
    return run_main(lambda: _dispatch(_build_parser(), argv))


def _dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.root.handlers:  # no log line, ours or a library's, shows a password
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if not args.verbose:
        _quiet_libraries(args.command in ("tune", "results", "report", "dashboard"))
    if args.command == "data" and args.data_command == "fetch":
        return _data_fetch(args)
    if args.command == "tune":
        return _tune(args)
    if args.command in ("results", "report", "dashboard"):
        return {"results": _results, "report": _report, "dashboard": _dashboard}[args.command](args)
    if args.command == "pipeline" and args.pipeline_command:
        return _pipeline(args)
    if args.command == "katib" and args.katib_command == "suggestion-service":
        return _katib_suggestion_service(args)
    if args.command == "manifests" and args.manifests_command:
        return _manifests(args)
    parser.print_help() if args.command is None else parser.parse_args([args.command, "--help"])
    return 2


def entry() -> NoReturn:
    """The ``hpo`` console script. ``hpo trial`` ends without the interpreter's teardown once its streams are
    flushed (the engine frees its slot at once); every other command exits normally, so MLflow flushes at exit."""
    code = main()
    if sys.argv[1:2] == ["trial"]:
        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
