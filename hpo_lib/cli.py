"""The ``hpo`` command, the project's only face: parse flags, call :mod:`hpo_lib.api` (or, for the commands the
API has no call for, the part that does the work), print; progress bars and logging setup included.

Every check, default and error of a command lives in the API; this module only words them for the terminal. Bad
input ends as one line on stderr and exit code 2 (:func:`hpo_lib.errors.run_main`); an error that opens with an API
argument's name (``max_trials must be ...``) is worded with this command's flag for it (``--max-trials must be
...``), and one that names the settings that fix it gets them as this command's flags.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from hpo_lib import api, cli_commands, cli_progress
from hpo_lib.cli_parser import SHELLS, Parser, completion
from hpo_lib.engine.options import MO_SAMPLERS, PRUNERS, WARM_STARTS
from hpo_lib.errors import ConfigError, RedactingFilter, exit_now, redact, run_main
from hpo_lib.pipeline.settings import LAPTOP
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
  completion    print the shell completion script: hpo completion bash > ~/.local/share/bash-completion/completions/hpo

Run `hpo COMMAND --help` for the options of a command.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hpo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        default=api.TUNE_DEFAULTS.pruner,
        choices=PRUNERS,
        help="early stopping: the manifest's (Katib's medianstop, the default) or a local alternative",
    )
    tune.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///<state-dir>/studies.db)")
    tune.add_argument(
        "--state-dir", default=api.STATE_DIR, help=f"studies, trial outputs and exports (default {api.STATE_DIR})"
    )
    tune.add_argument(
        "--trial-timeout", type=float, default=None, help="seconds per trial (default: the Job's activeDeadlineSeconds)"
    )
    tune.add_argument("--no-progress", action="store_true", help="no progress (bar or lines)")
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
        default=api.TUNE_DEFAULTS.warm_start,
        help="start each trial as a fresh interpreter (default: the project's trials fork from a warm worker that "
        "imported torch once, about 2 s faster per trial)",
    )
    tune.add_argument(
        "--warm-start",
        choices=WARM_STARTS,
        default=api.TUNE_DEFAULTS.warm_start,
        help="which trials fork from the warm worker: own (hpo trial / python -m hpo_lib.trial, the default), "
        "python (any command of this Python: python -m MOD, python FILE.py), off (same as --cold-start)",
    )
    tune.add_argument(
        "--mo-sampler",
        default=api.TUNE_DEFAULTS.mo_sampler,
        choices=MO_SAMPLERS,
        help="sampler of a multi-objective study (algorithm katib-hpo-multiobjective's objectives setting): "
        "the manifest's algorithm (default: its sampler setting) or NSGA-II",
    )

    def study_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("manifest", help="the Experiment YAML the study was tuned from")
        sub.add_argument(
            "--storage", default=None, help="Optuna storage URL (default sqlite:///<state-dir>/studies.db)"
        )
        sub.add_argument(
            "--state-dir", default=api.STATE_DIR, help=f"where `hpo tune` kept its state (default {api.STATE_DIR})"
        )

    results = commands.add_parser(
        "results",
        help="leaderboard and export of a local study",
        description="Print the leaderboard of a study `hpo tune` ran (top-k or the Pareto front, beside the best "
        "naive baseline) and export every trial: JSON shaped like Katib Trial CRs "
        "(parameterAssignments, observation.metrics), and CSV with a row per trial.",
    )
    study_args(results)
    results.add_argument("--output", default=None, help="export folder (default <state-dir>/<study>/)")
    results.add_argument("--top", type=int, default=api.TOP, help=f"trials on the leaderboard (default {api.TOP})")
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
    dashboard.add_argument(
        "--state-dir", default=api.STATE_DIR, help=f"where `hpo tune` kept its state (default {api.STATE_DIR})"
    )
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
    local.add_argument(
        "--state-dir", default=api.STATE_DIR, help=f"where `hpo tune` kept its state (default {api.STATE_DIR})"
    )
    local.add_argument("--trials", default=None, help="trials.json (default <state-dir>/<study>/trials.json)")
    local.add_argument("--data", default=None, help="data spec (default: the one the local trials used)")
    # the defaults are the preset for one machine (hpo_lib.pipeline.settings.LAPTOP)
    local.add_argument(
        "--top-k", type=int, default=LAPTOP.top_k, help=f"winners by the objective (default {LAPTOP.top_k})"
    )
    local.add_argument(
        "--no-pareto",
        dest="pareto",
        action="store_false",
        default=LAPTOP.pareto,
        help="only the top-k, no Pareto front",
    )
    local.add_argument(
        "--max-winners",
        type=int,
        default=LAPTOP.max_winners,
        help=f"cap on winners, 0 = none (default {LAPTOP.max_winners})",
    )
    local.add_argument(
        "--include-early-stopped",
        action="store_true",
        default=LAPTOP.include_early_stopped,
        help="early-stopped trials may win too",
    )
    local.add_argument(
        "--seeds", type=int, default=LAPTOP.seeds, help=f"retrains per winner, seeds 0..N-1 (default {LAPTOP.seeds})"
    )
    local.add_argument(
        "--epochs", type=int, default=LAPTOP.epochs, help="retrain epochs (default: the trials' --epochs)"
    )
    local.add_argument(
        "--retrain-flags",
        default=LAPTOP.retrain_flags,
        help=f"extra trial flags for every retrain (default {LAPTOP.retrain_flags}: half this machine's CPUs, as "
        "kfp's local runner runs two retrains at a time)",
    )
    local.add_argument(
        "--cost-bps",
        type=float,
        default=LAPTOP.cost_bps,
        help=f"backtest cost per unit traded (default {LAPTOP.cost_bps:g})",
    )
    local.add_argument(
        "--test-origins",
        type=int,
        default=LAPTOP.test_origins,
        help=f"rolling-origin test: refit at R origins through the test split (default {LAPTOP.test_origins} = one "
        "per quarter, 1 = off)",
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
        default=api.PIPELINE_ROOT,
        help=f"where kfp writes every step's artifacts (default {api.PIPELINE_ROOT})",
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
    shell = commands.add_parser(
        "completion",
        help="print the shell completion script of hpo",
        description="Print the completion script of hpo for a shell. bash: hpo completion bash > "
        '~/.local/share/bash-completion/completions/hpo; zsh: hpo completion zsh > "${fpath[1]}/_hpo"',
    )
    shell.add_argument("shell", choices=SHELLS, help="the shell")
    _verbose_after_the_command(parser)
    return parser


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


def _pipeline(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.pipeline_command == "compile":  # KFP only: compiling needs neither torch nor the steps
        from hpo_lib.pipeline import dag

        print(f"compiled to {dag.compile_pipeline(args.output or dag.default_output())}")
        return 0
    from hpo_lib.pipeline import local

    intro = (  # the steps' own output goes to a log file unless -v: say where, once the first step starts
        f"running the pipeline locally (winners -> retrains -> evaluation -> MLflow); every step's output goes to "
        f"{Path(args.pipeline_root) / local.LOG_FILE} (-v shows it here)"
    )
    result = api.run_pipeline(
        args.manifest,
        state_dir=args.state_dir,
        trials=args.trials,
        data=args.data,
        top_k=args.top_k,
        pareto=args.pareto,
        max_winners=args.max_winners,
        include_early_stopped=args.include_early_stopped,
        seeds=args.seeds,
        epochs=args.epochs,
        retrain_flags=args.retrain_flags,
        cost_bps=args.cost_bps,
        test_origins=args.test_origins,
        tracking_uri=args.tracking_uri,
        mlflow_experiment=args.mlflow_experiment,
        model_name=args.model_name,
        pipeline_root=args.pipeline_root,
        on_progress=cli_progress.pipeline_lines(sys.stdout, "" if args.verbose else intro),
        echo_steps=args.verbose,
    )
    print(result.verdict)
    for name, path in (("leaderboard", result.leaderboard), ("report", result.report), ("registry", result.registry)):
        print(f"{name}: {path}")
    print(f"MLflow: {redact(result.tracking_uri)}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set expects FLAG=VALUE, got {item!r}")
        overrides[name] = value
    with cli_progress.TuneProgress(enabled=not args.no_progress) as bar:
        result = api.tune(
            args.manifest,
            overrides=overrides,
            max_trials=args.max_trials,
            parallel=args.parallel,
            pruner=args.pruner,
            storage=args.storage,
            state_dir=args.state_dir,
            trial_timeout_s=args.trial_timeout,
            tracking=not args.no_tracking,
            tracking_uri=args.tracking_uri,
            mo_sampler=args.mo_sampler,
            new_study=args.new_study,
            warm_start=args.warm_start,
            on_progress=bar.update,
        )
    print(result.leaderboard())
    print(f"trials exported to {result.export_dir}/trials.json and trials.csv")
    if result.tracking_uri is not None:
        experiment = result.study.study_name.split(".", 1)[-1]
        print(f"MLflow runs: {redact(result.tracking_uri)} (experiment {experiment})")
        from hpo_lib.results.tracking import runs_url  # a server's page of the runs (MLflow 3.17 needs the link's type)

        if link := runs_url(result.tracking_uri, experiment):
            print(f"  open {link}")
    print(
        f"next: hpo report {args.manifest} --state-dir {args.state_dir}   |   "
        f"hpo dashboard --state-dir {args.state_dir}"
    )
    return 0


def _results(args: argparse.Namespace) -> int:
    exported = api.export_results(
        args.manifest, top=args.top, output=args.output, state_dir=args.state_dir, storage=args.storage
    )
    print(exported.leaderboard)
    print(f"exported {len(exported.result.study.trials)} trials to {exported.trials_json} and {exported.trials_csv}")
    return 0


def _report(args: argparse.Namespace) -> int:
    result = api.write_report(args.manifest, output=args.output, state_dir=args.state_dir, storage=args.storage)
    for path in result.report_paths:
        print(path)
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
    if args_need_optuna:  # once Optuna is imported: a refusal before that (a missing file) stays fast
        _after_import("optuna", lambda optuna: optuna.logging.set_verbosity(optuna.logging.WARNING))


def _after_import(name: str, then: Callable[[Any], None]) -> None:
    """Call ``then(module)`` once ``name`` is imported: now if it is, else right after its first import (Optuna
    sets its own log level as it loads, ~1 s that a command refused before needing it should not pay)."""
    if name in sys.modules:
        then(sys.modules[name])
        return

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)  # the finders after this one
            if spec is not None and spec.loader is not None:
                loader, load = spec.loader, spec.loader.exec_module

                def exec_module(module: Any) -> None:
                    load(module)
                    then(module)

                loader.exec_module = exec_module  # type: ignore[method-assign]  # this module's loader only
            return spec

    sys.meta_path.insert(0, Hook())


# the API's argument -> this command's flag, where the names differ by more than "--" and dashes
_FLAG_OF = {"trial_timeout_s": "--trial-timeout"}
# the API's arguments that are flags of a command here (an API message opens with the argument's name)
_API_ARGUMENTS = ("state_dir", "max_trials", "parallel", "trial_timeout_s", "top", "output", "top_k", "max_winners",
                  "seeds", "epochs", "test_origins", "cost_bps", "pipeline_root")  # fmt: skip


@contextlib.contextmanager
def _worded_as_flags() -> Iterator[None]:
    """An API error that opens with one of its argument's names (``max_trials must be at least 1, got 0``), worded
    with this command's flag for it (``--max-trials must be at least 1, got 0``)."""
    try:
        yield
    except ConfigError as exc:
        text = str(exc)
        for name in _API_ARGUMENTS:
            if text.startswith(name + " "):
                flag = _FLAG_OF.get(name, "--" + name.replace("_", "-"))
                raise ConfigError(flag + text[len(name) :], settings=exc.settings) from None
        raise


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
    if args.command == "completion":
        print(completion(parser, args.shell), end="")
        return 0
    subcommand = getattr(args, f"{args.command}_command", None)  # `data fetch`, `pipeline run-local`, ...
    with cli_commands.extras_named(f"{args.command} {subcommand}" if subcommand else str(args.command)):
        if args.command == "data" and args.data_command == "fetch":
            return cli_commands.data_fetch(args)
        with _worded_as_flags():
            if args.command == "tune":
                return _tune(args)
            if args.command in ("results", "report", "dashboard"):
                return {"results": _results, "report": _report, "dashboard": cli_commands.dashboard}[args.command](args)
            if args.command == "pipeline" and args.pipeline_command:
                return _pipeline(args)
        if args.command == "katib" and args.katib_command == "suggestion-service":
            return cli_commands.katib_suggestion_service(args)
        if args.command == "manifests" and args.manifests_command:
            return cli_commands.manifests(args)
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
