"""The Python API, and the one implementation of what ``hpo tune``, ``hpo results``/``report``, ``hpo trial`` and
``hpo pipeline run-local`` do: calls that return objects. Nothing here prints (a caller hears of progress through
a callback); bad input raises the :class:`~hpo_lib.errors.HpoError` subclass the command reports in one line (its
message opens with the argument's name, e.g. ``max_trials must be at least 1``, which ``hpo`` words as its flag).

* :func:`tune`: run (or resume) a Katib Experiment's trials on this machine -> :class:`TuneResult`;
* :func:`load_results`: the :class:`TuneResult` of an earlier :func:`tune` (or ``hpo tune``) of a manifest;
  :func:`export_results` and :func:`write_report` write its export and its plots (``hpo results``, ``hpo report``);
* :func:`run_trial`: one trial in this process (the flags of ``hpo trial``) -> :class:`TrialResult`;
* :func:`run_pipeline`: the KFP pipeline on kfp's local runner over a tuned study -> :class:`PipelineResult`.

A manifest is a path, the YAML text of one (any string holding a line break), or the Experiment as a ``dict``. Text
and dicts are written once to ``<state_dir>/manifests/<name>-<digest>.yaml``, the file the study then refers to, so
``hpo report`` and ``hpo dashboard`` can read the same study later.

Only the standard library loads with this module (``import hpo_lib`` stays fast); each call imports what it runs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_lib.api_inputs import (
    Manifest,
    at_least,
    folder_arg,
    load_study,
    manifest_file,
    one_of,
    path_arg,
    storage_failures,
    trial_overrides,
    writable_dir,
)
from hpo_lib.engine.options import MO_SAMPLERS, PRUNERS, WARM_STARTS, Progress, TuneOptions, WarmStart
from hpo_lib.errors import ConfigError, first_line
from hpo_lib.pipeline.settings import LAPTOP, PipelineSettings

if TYPE_CHECKING:  # optuna and pandas load only when a call needs them
    import optuna
    import pandas as pd

    from hpo_lib.pipeline.progress import ProgressCallback

TUNE_DEFAULTS = TuneOptions()  # the engine's defaults, which tune()'s arguments (and hpo tune's flags) keep
STATE_DIR = TUNE_DEFAULTS.state_dir  # studies, trial outputs and exports
PIPELINE_ROOT = "local_outputs/pipeline"  # where a local pipeline run's steps write their artifacts
TOP = 5  # trials on a leaderboard


# ----------------------------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class TuneResult:
    """A local study and where its files are.

    Attributes:
        study: the Optuna study (``study.trials``, ``study.best_trials``, ...).
        manifest: the Experiment file the study was tuned from.
        state_dir: the folder of studies, trial outputs and exports.
        export_dir: ``<state_dir>/<namespace>.<name>/``: ``trials.json`` (Katib Trial shape), ``trials.csv`` and one
            ``trial-NNNN/`` folder per trial.
        report_paths: the plots and ``report.html`` written by ``tune(..., report=True)`` or :meth:`write_report`.
        tracking_uri: the MLflow store :func:`tune` logged the study to (None when it did not).
    """

    study: optuna.Study
    manifest: Path
    state_dir: Path
    export_dir: Path
    report_paths: tuple[Path, ...] = ()
    tracking_uri: str | None = None

    @property
    def trials_json(self) -> Path:
        return self.export_dir / "trials.json"

    @property
    def trials_csv(self) -> Path:
        return self.export_dir / "trials.csv"

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        """The succeeded trial with the best objective; None before any succeeded, and for a multi-objective study
        (whose best trials are the Pareto front, :attr:`best_trials`)."""
        from optuna.trial import TrialState

        if len(self.study.directions) > 1 or not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        return self.study.best_trial

    @property
    def best_params(self) -> dict[str, Any] | None:
        """The parameters of :attr:`best_trial`, numeric categoricals as numbers (``{"hidden-size": 128}``, not
        ``"128"``); None when :attr:`best_trial` is."""
        from hpo_lib.results import render

        best = self.best_trial
        return None if best is None else {k: render.typed_value(v) for k, v in best.params.items()}

    @property
    def best_trials(self) -> list[optuna.trial.FrozenTrial]:
        """The Pareto front of a multi-objective study; ``[best_trial]`` (or ``[]``) of a single-objective one."""
        if len(self.study.directions) > 1:
            return self.study.best_trials
        best = self.best_trial
        return [best] if best is not None else []

    def trials_frame(self) -> pd.DataFrame:
        """:func:`trials_frame` of the study."""
        return trials_frame(self.study)

    def leaderboard(self, top: int = TOP) -> str:
        """The leaderboard ``hpo results`` prints: top trials (or the Pareto front) beside the best baseline."""
        from hpo_lib.results import render

        at_least("top", top, 1)
        return render.leaderboard(self.study, k=top)

    def export(self, folder: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
        """Write ``trials.json`` and ``trials.csv`` (``hpo results``) to ``folder`` (default :attr:`export_dir`)."""
        from hpo_lib.results import render

        target = folder_arg(folder, "folder") if folder is not None else self.export_dir
        try:
            return render.export(self.study, target)
        except OSError as exc:
            raise ConfigError(f"cannot write the export to {target}: {exc.strerror or first_line(exc)}") from None

    def write_report(self, folder: str | os.PathLike[str] | None = None) -> TuneResult:
        """The plots of ``hpo report`` (PNGs and an offline ``report.html``) under ``folder`` (default
        ``<export_dir>/report/``); returns this result with :attr:`report_paths` set."""
        from hpo_lib.katib import experiment
        from hpo_lib.results import plots

        target = folder_arg(folder, "folder") if folder is not None else self.export_dir / "report"
        doc = experiment.load_experiment(self.manifest)
        try:
            written = plots.write_report(
                self.study, target, objective_name=doc["spec"]["objective"]["objectiveMetricName"]
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        except OSError as exc:
            raise ConfigError(f"cannot write the report to {target}: {exc.strerror or first_line(exc)}") from None
        return dataclasses.replace(self, report_paths=tuple(written))


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """One trial run in this process.

    Attributes:
        metrics: the final record (``metrics.json``): best epoch, validation metrics, baselines, splits, params.
        lines: the Katib StdOut lines the trial printed, one per epoch, then the final one.
        log: what the trial wrote for people (the comparison with the baselines, warnings).
        output_dir: the folder holding ``metrics.json``, ``model.pt`` and ``config.json``.
    """

    metrics: dict[str, Any]
    lines: tuple[str, ...]
    log: str
    output_dir: Path


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """A local run of the KFP pipeline.

    Attributes:
        verdict: the one-line verdict: the champion and whether it beats the best baseline on the test split.
        summary: the evaluation step's ``summary.json`` (winners, seeds, tests, ``beats_baselines``).
        leaderboard, report, registry: the Markdown artifacts of the winners, the evaluation and MLflow steps.
        pipeline_root: where kfp wrote every step's artifacts; ``log``: the steps' output (``run-local.log``).
        tracking_uri: the MLflow store the retrains were logged to.
    """

    verdict: str
    summary: dict[str, Any]
    leaderboard: Path
    report: Path
    registry: Path
    pipeline_root: Path
    log: Path
    tracking_uri: str


# ----------------------------------------------------------------------------------------------- tune
def tune(
    manifest: Manifest,
    *,
    overrides: Mapping[str, Any] | None = None,
    max_trials: int | None = None,
    parallel: int | None = None,
    pruner: str = TUNE_DEFAULTS.pruner,
    storage: str | None = None,
    state_dir: str | os.PathLike[str] = STATE_DIR,
    trial_timeout_s: float | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    mo_sampler: str = TUNE_DEFAULTS.mo_sampler,
    new_study: bool = False,
    warm_start: WarmStart = TUNE_DEFAULTS.warm_start,
    report: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> TuneResult:
    """Run (or resume) a Katib Experiment's trials on this machine, as ``hpo tune`` does.

    Re-running with the same manifest and state resumes the study; a changed Experiment is refused in one line
    unless ``new_study`` archives the stored one.

    Args:
        manifest: the Experiment: a path, its YAML text, or a dict.
        overrides: trial flags for local runs, ``{"data": "sample:sp500", "epochs": 2}`` (``--set``); values are
            passed as text, as Katib passes assignments.
        max_trials: overrides ``maxTrialCount`` (at least 1). parallel: overrides ``parallelTrialCount`` (at least 1).
        pruner: early stopping: ``manifest`` (the Experiment's, Katib's medianstop), ``medianstop``,
            ``optuna-median``, ``hyperband`` or ``none``.
        storage: an Optuna storage URL (default ``sqlite:///<state_dir>/studies.db``).
        state_dir: studies, trial outputs and exports (created if missing; must be writable).
        trial_timeout_s: seconds per trial, a positive number (default: the Job's ``activeDeadlineSeconds``).
        tracking: log the study and its trials to MLflow at ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``,
            else ``sqlite:///<state_dir>/mlflow.db``).
        mo_sampler: a multi-objective study's sampler: ``manifest`` (its algorithm) or ``nsga2``.
        new_study: keep the stored study as ``<name>.archived-<UTC time>`` and start afresh.
        warm_start: which trials fork from a warm worker that imported torch once: ``own`` (the project's trial),
            ``python`` (any command of this Python) or ``off`` (each a fresh interpreter, ``hpo tune --cold-start``).
        report: also write the plots of ``hpo report`` (:attr:`TuneResult.report_paths`).
        on_progress: called with the engine's progress (counts, best value) whenever it changes.

    Raises:
        ConfigError: bad input, before any trial starts (a trial flag the project's trial refuses included).
        ExperimentFailed: the Experiment ended the way Katib marks one Failed (every trial failed, or
            ``maxFailedTrialCount`` of them); what finished is stored, and :func:`load_results` reads it.
        HpoError: the storage failed mid-study; running the same call again resumes.
    """
    from hpo_lib import engine

    names = trial_overrides(overrides)
    at_least("max_trials", max_trials, 1)
    at_least("parallel", parallel, 1)
    one_of("pruner", pruner, PRUNERS)
    one_of("mo_sampler", mo_sampler, MO_SAMPLERS)
    one_of("warm_start", warm_start, WARM_STARTS)
    if trial_timeout_s is not None and not (
        isinstance(trial_timeout_s, (int, float)) and math.isfinite(trial_timeout_s) and trial_timeout_s > 0
    ):
        number = isinstance(trial_timeout_s, (int, float)) and not isinstance(trial_timeout_s, bool)
        raise ConfigError(
            f"trial_timeout_s must be a positive number of seconds, got "
            f"{format(trial_timeout_s, 'g') if number else repr(trial_timeout_s)}: every trial would be killed at "
            "once; leave it unset to use the Job's activeDeadlineSeconds"
        )
    # the manifest first: a missing file is refused before the state folder is made (none is left behind)
    path = manifest_file(manifest, path_arg(state_dir, "state_dir"))
    state = writable_dir(path_arg(state_dir, "state_dir"), "state_dir")
    options = engine.TuneOptions(
        overrides=names,
        storage=storage,
        state_dir=state,
        max_trials=max_trials,
        parallel=parallel,
        pruner=pruner,
        trial_timeout_s=trial_timeout_s,
        tracking=tracking,
        tracking_uri=tracking_uri,
        mo_sampler=mo_sampler,
        new_study=new_study,
        warm_start=warm_start,
        on_progress=on_progress,
    )
    with storage_failures(options.storage_url, state):
        study = engine.run(path, options)
    uri = None
    if tracking:
        from hpo_lib.results import tracking as mlflow_tracking

        uri = mlflow_tracking.tracking_uri(tracking_uri, state_dir=state)
    result = TuneResult(
        study=study, manifest=path, state_dir=state, export_dir=state / study.study_name, tracking_uri=uri
    )
    return result.write_report() if report else result


def load_results(
    manifest: Manifest, *, state_dir: str | os.PathLike[str] = STATE_DIR, storage: str | None = None
) -> TuneResult:
    """The study an earlier :func:`tune` or ``hpo tune`` of ``manifest`` stored (``hpo results``, without writing).

    Raises :class:`~hpo_lib.errors.ConfigError` when there is no such study, or the storage cannot be read.
    """
    from hpo_lib import engine

    state = path_arg(state_dir, "state_dir")
    path = manifest_file(manifest, state)
    options = engine.TuneOptions(storage=storage, state_dir=state, tracking=False)
    study = load_study(path, options)
    return TuneResult(study=study, manifest=path, state_dir=state, export_dir=state / study.study_name)


@dataclasses.dataclass(frozen=True)
class ResultsExport:
    """What :func:`export_results` wrote: the study, its leaderboard and the two export files."""

    result: TuneResult
    leaderboard: str
    trials_json: Path
    trials_csv: Path


def export_results(
    manifest: Manifest,
    *,
    top: int = TOP,
    output: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] = STATE_DIR,
    storage: str | None = None,
) -> ResultsExport:
    """``hpo results``: the stored study's leaderboard (``top`` trials, or the Pareto front) and its export
    (``trials.json``, ``trials.csv``) written to ``output`` (default the study's folder). Every argument is checked
    before the study is read."""
    at_least("top", top, 1)
    folder = folder_arg(output, "output") if output is not None else None
    result = load_results(manifest, state_dir=state_dir, storage=storage)
    leaderboard = result.leaderboard(top)
    json_path, csv_path = result.export(folder)
    return ResultsExport(result=result, leaderboard=leaderboard, trials_json=json_path, trials_csv=csv_path)


def write_report(
    manifest: Manifest,
    *,
    output: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] = STATE_DIR,
    storage: str | None = None,
) -> TuneResult:
    """``hpo report``: the stored study's plots (PNGs and an offline ``report.html``) under ``output`` (default
    ``<study folder>/report/``); the result's :attr:`TuneResult.report_paths` lists them."""
    folder = folder_arg(output, "output") if output is not None else None
    return load_results(manifest, state_dir=state_dir, storage=storage).write_report(folder)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial in Katib's words: the Trial name, its condition (``Succeeded``, ``EarlyStopped``,
    ``Failed``, ...), the epochs it ran, each parameter (Optuna's typed value; a categorical whose choices are all
    numbers, ``"16"`` and ``"128"``, as numbers, so that it sorts as one) and, for each metric Katib observed,
    ``<metric>_min``, ``<metric>_max`` and ``<metric>_latest`` as numbers; trials that never reported a metric
    have NaN there. The same records as ``trials.json``, the columns of ``trials.csv`` and more.
    """
    import pandas as pd

    from hpo_lib.katib import contract
    from hpo_lib.results import render
    from hpo_lib.study_record import TrialRecord

    trials = study.get_trials(deepcopy=False)
    rows = []
    for trial, katib in zip(trials, render.trial_records(study)):
        record = TrialRecord.from_frozen(trial)
        row: dict[str, Any] = {
            "number": record.number,
            "name": katib["name"],
            "condition": record.condition,
            "epochs_run": record.epochs_run or 0,
            **{f"param_{name}": value for name, value in record.params.items()},
        }
        for metric, observed in record.observation.items():
            for key in contract.METRIC_STRATEGIES:
                row[f"{metric}_{key}"] = float(observed[key])
        row["fail_reason"] = katib["failReason"]  # with the reason of a trial an older engine left RUNNING
        rows.append(row)
    frame = render.typed_columns(pd.DataFrame(rows), prefix="param_")
    return frame.set_index("number") if rows else frame


# ----------------------------------------------------------------------------------------------- one trial
def run_trial(
    flags: Mapping[str, Any] | Sequence[str] = (), *, output_dir: str | os.PathLike[str] | None = None
) -> TrialResult:
    """Train one model in this process with the flags of ``hpo trial`` (``hpo trial --help`` lists them and their
    ranges): ``{"model": "mlp", "epochs": 3}`` or ``["--model=mlp", "--epochs=3"]``.

    The Katib lines and the human summary are captured, not printed. ``output_dir`` (default the trial's own:
    ``$HPO_OUTPUT_DIR``, else ``local_outputs/trials/<model>-<time>``) receives ``metrics.json``, ``model.pt`` and
    ``config.json``. ``threads`` sets torch's thread count for this whole process.
    """
    from hpo_lib import trial

    argv = _trial_argv(flags)
    if output_dir is not None:
        argv.append(f"--output-dir={os.fspath(path_arg(output_dir, 'output_dir'))}")
    args = trial.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    final = trial.run(args, out=out, err=err)
    return TrialResult(
        metrics=final,
        lines=tuple(out.getvalue().splitlines()),
        log=err.getvalue(),
        output_dir=trial.output_dir_of(args),
    )


def _trial_argv(flags: Mapping[str, Any] | Sequence[str]) -> list[str]:
    if isinstance(flags, Mapping):
        argv = []
        for name, value in flags.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"trial flag names must be non-empty strings, got {name!r}")
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            argv.append(f"--{name.removeprefix('--').replace('_', '-')}={text}")
        return argv
    if isinstance(flags, str) or not all(isinstance(item, str) for item in flags):
        raise ConfigError(
            f"flags must be a dict of trial flags or a list of '--name=value' strings, got {type(flags).__name__}"
            + ("" if isinstance(flags, str) else " holding non-strings")
        )
    return list(flags)


# ----------------------------------------------------------------------------------------------- the pipeline
def run_pipeline(
    manifest: Manifest,
    *,
    state_dir: str | os.PathLike[str] = STATE_DIR,
    trials: str | os.PathLike[str] | None = None,
    data: str | None = None,
    top_k: int = LAPTOP.top_k,
    pareto: bool = LAPTOP.pareto,
    max_winners: int = LAPTOP.max_winners,
    include_early_stopped: bool = LAPTOP.include_early_stopped,
    seeds: int = LAPTOP.seeds,
    epochs: int = LAPTOP.epochs,
    retrain_flags: str | None = None,
    cost_bps: float = LAPTOP.cost_bps,
    test_origins: int = LAPTOP.test_origins,
    tracking_uri: str | None = None,
    mlflow_experiment: str = "",
    model_name: str = "",
    pipeline_root: str | os.PathLike[str] = PIPELINE_ROOT,
    on_progress: ProgressCallback | None = None,
    echo_steps: bool = False,
) -> PipelineResult:
    """Run the KFP pipeline with kfp's local runner on a tuned study's trials, as ``hpo pipeline run-local`` does:
    winners -> retrains on train + validation -> test evaluation against the baselines -> MLflow (the champion is
    registered as ``<model_name>@champion`` only if it beats the best baseline). The settings default to
    :data:`hpo_lib.pipeline.settings.LAPTOP`, the preset for one machine.

    Args:
        manifest: the Experiment :func:`tune` ran (path, YAML text or dict).
        state_dir: where :func:`tune` kept its state. trials: its ``trials.json`` (default in ``state_dir``).
        data: the data spec (default: the one the trials used).
        top_k: winners by the objective (at least 1); pareto: add the Pareto front; max_winners: cap (0: none).
        include_early_stopped: early-stopped trials may win too.
        seeds: retrains per winner, seeds 0..N-1 (at least 1). epochs: retrain epochs (0: the trials' own).
        retrain_flags: extra trial flags for every retrain (default ``--threads=<half the CPUs>``).
        cost_bps: backtest cost per unit traded. test_origins: the rolling-origin test's refits (0: quarterly).
        tracking_uri: MLflow (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<state_dir>/mlflow.db``); the
            retrains log to it live, as they train.
        mlflow_experiment: the MLflow experiment (default: the Experiment's name).
        model_name: the registered model's name (default: the Experiment's name).
        pipeline_root: where kfp writes every step's artifacts, and ``run-local.log``, the steps' output.
        on_progress: called in this process with each step's :class:`~hpo_lib.pipeline.progress.StepProgress`
            (a step starting, a retrain's epoch ending).
        echo_steps: leave kfp's echo of every step on this process's stdout instead of ``run-local.log``.
    """
    from hpo_lib.pipeline import local
    from hpo_lib.results import tracking

    settings = PipelineSettings(
        top_k=top_k,
        pareto=pareto,
        max_winners=max_winners,
        include_early_stopped=include_early_stopped,
        seeds=seeds,
        epochs=epochs,
        retrain_flags=LAPTOP.retrain_flags if retrain_flags is None else retrain_flags,
        cost_bps=cost_bps,
        test_origins=test_origins,
    ).check()
    state = path_arg(state_dir, "state_dir")
    path = manifest_file(manifest, state)
    uri = tracking.tracking_uri(tracking_uri, state_dir=state)
    arguments = local.pipeline_arguments(
        path,
        settings,
        state_dir=state,
        trials=None if trials is None else Path(trials),
        data=data,
        tracking_uri=uri,
        mlflow_experiment=mlflow_experiment,
        model_name=model_name,
    )
    root = writable_dir(path_arg(pipeline_root, "pipeline_root"), "pipeline_root")
    outputs = local.run(arguments, pipeline_root=root, on_progress=on_progress, echo_steps=echo_steps)
    summary = json.loads((outputs["summary"] / "summary.json").read_text())
    return PipelineResult(
        verdict=summary["verdict"],
        summary=summary,
        leaderboard=outputs["leaderboard"],
        report=outputs["report"],
        registry=outputs["registry"],
        pipeline_root=root,
        log=root / local.LOG_FILE,
        tracking_uri=uri,
    )
