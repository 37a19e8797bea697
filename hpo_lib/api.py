"""The Python API: what ``hpo tune``, ``hpo results``/``report``, ``hpo trial`` and ``hpo pipeline run-local`` do,
as calls that return objects. Nothing here prints; bad input raises the :class:`~hpo_lib.errors.HpoError` subclass
the command would report in one line (its message names the argument, e.g. ``max_trials must be at least 1``).

* :func:`tune`: run (or resume) a Katib Experiment's trials on this machine -> :class:`TuneResult`;
* :func:`load_results`: the :class:`TuneResult` of an earlier :func:`tune` (or ``hpo tune``) of a manifest;
* :func:`run_trial`: one trial in this process (the flags of ``hpo trial``) -> :class:`TrialResult`;
* :func:`run_pipeline`: the KFP pipeline on kfp's local runner over a tuned study -> :class:`PipelineResult`.

A manifest is a path, the YAML text of one (any string holding a line break), or the Experiment as a ``dict``. Text
and dicts are written once to ``<state_dir>/manifests/<name>-<digest>.yaml``, the file the study then refers to, so
``hpo report`` and ``hpo dashboard`` can read the same study later.

Only the standard library loads with this module (``import hpo_lib`` stays fast); each call imports what it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hpo_lib.errors import ConfigError, HpoError, first_line, redact

if TYPE_CHECKING:  # optuna and pandas load only when a call needs them
    import optuna
    import pandas as pd

Manifest = str | os.PathLike[str] | Mapping[str, Any]
PRUNERS = ("manifest", "medianstop", "optuna-median", "hyperband", "none")
MO_SAMPLERS = ("manifest", "nsga2")
WARM_STARTS = ("own", "python", "off")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


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
    """

    study: optuna.Study
    manifest: Path
    state_dir: Path
    export_dir: Path
    report_paths: tuple[Path, ...] = ()

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
    def best_trials(self) -> list[optuna.trial.FrozenTrial]:
        """The Pareto front of a multi-objective study; ``[best_trial]`` (or ``[]``) of a single-objective one."""
        if len(self.study.directions) > 1:
            return self.study.best_trials
        best = self.best_trial
        return [best] if best is not None else []

    def trials_frame(self) -> pd.DataFrame:
        """:func:`trials_frame` of the study."""
        return trials_frame(self.study)

    def leaderboard(self, top: int = 5) -> str:
        """The leaderboard ``hpo results`` prints: top trials (or the Pareto front) beside the best baseline."""
        from hpo_lib.results import render

        _at_least("top", top, 1)
        return render.leaderboard(self.study, k=top)

    def export(self, folder: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
        """Write ``trials.json`` and ``trials.csv`` (``hpo results``) to ``folder`` (default :attr:`export_dir`)."""
        from hpo_lib.results import render

        target = _folder(folder, "folder") if folder is not None else self.export_dir
        try:
            return render.export(self.study, target)
        except OSError as exc:
            raise ConfigError(f"cannot write the export to {target}: {exc.strerror or first_line(exc)}") from None

    def write_report(self, folder: str | os.PathLike[str] | None = None) -> TuneResult:
        """The plots of ``hpo report`` (PNGs and an offline ``report.html``) under ``folder`` (default
        ``<export_dir>/report/``); returns this result with :attr:`report_paths` set."""
        from hpo_lib.katib import experiment
        from hpo_lib.results import plots

        target = _folder(folder, "folder") if folder is not None else self.export_dir / "report"
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
    pruner: str = "manifest",
    storage: str | None = None,
    state_dir: str | os.PathLike[str] = ".hpo",
    trial_timeout_s: float | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    mo_sampler: str = "manifest",
    new_study: bool = False,
    warm_start: Literal["own", "python", "off"] = "own",
    report: bool = False,
    on_progress: Callable[[Any], None] | None = None,
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

    names = _overrides(overrides)
    _at_least("max_trials", max_trials, 1)
    _at_least("parallel", parallel, 1)
    _one_of("pruner", pruner, PRUNERS)
    _one_of("mo_sampler", mo_sampler, MO_SAMPLERS)
    _one_of("warm_start", warm_start, WARM_STARTS)
    if trial_timeout_s is not None and not (
        isinstance(trial_timeout_s, (int, float)) and math.isfinite(trial_timeout_s) and trial_timeout_s > 0
    ):
        raise ConfigError(
            f"trial_timeout_s must be a positive number of seconds, got {trial_timeout_s!r}: every trial would be "
            "killed at once; leave it None to use the Job's activeDeadlineSeconds"
        )
    state = writable_dir(_path(state_dir, "state_dir"), "state_dir")
    path = manifest_file(manifest, state)
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
    result = TuneResult(study=study, manifest=path, state_dir=state, export_dir=state / study.study_name)
    return result.write_report() if report else result


def load_results(
    manifest: Manifest, *, state_dir: str | os.PathLike[str] = ".hpo", storage: str | None = None
) -> TuneResult:
    """The study an earlier :func:`tune` or ``hpo tune`` of ``manifest`` stored (``hpo results``, without writing).

    Raises :class:`~hpo_lib.errors.ConfigError` when there is no such study, or the storage cannot be read.
    """
    from hpo_lib import engine

    state = _path(state_dir, "state_dir")
    path = manifest_file(manifest, state)
    options = engine.TuneOptions(storage=storage, state_dir=state, tracking=False)
    study = load_study(path, options)
    return TuneResult(study=study, manifest=path, state_dir=state, export_dir=state / study.study_name)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial in Katib's words: the Trial name, its condition (``Succeeded``, ``EarlyStopped``,
    ``Failed``, ...), the epochs it ran, each parameter (Optuna's typed value) and, for each metric Katib observed,
    ``<metric>_min``, ``<metric>_max`` and ``<metric>_latest`` as numbers; trials that never reported a metric
    have NaN there. The same records as ``trials.json``, the columns of ``trials.csv`` and more.
    """
    import pandas as pd

    from hpo_lib.results import render

    trials = study.get_trials(deepcopy=False)
    rows = []
    for trial, record in zip(trials, render.trial_records(study)):
        row: dict[str, Any] = {
            "number": trial.number,
            "name": record["name"],
            "condition": record["condition"],
            "epochs_run": record["epochsRun"],
            **{f"param_{name}": value for name, value in trial.params.items()},
        }
        for metric in record["observation"]["metrics"]:
            for key in ("min", "max", "latest"):
                row[f"{metric['name']}_{key}"] = float(metric[key])
        row["fail_reason"] = record["failReason"]
        rows.append(row)
    frame = pd.DataFrame(rows)
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
        argv.append(f"--output-dir={os.fspath(_path(output_dir, 'output_dir'))}")
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
    state_dir: str | os.PathLike[str] = ".hpo",
    trials: str | os.PathLike[str] | None = None,
    data: str | None = None,
    top_k: int = 3,
    pareto: bool = True,
    max_winners: int = 4,
    include_early_stopped: bool = False,
    seeds: int = 2,
    epochs: int = 0,
    retrain_flags: str | None = None,
    cost_bps: float = 5.0,
    test_origins: int = 0,
    tracking_uri: str | None = None,
    mlflow_experiment: str = "",
    model_name: str = "",
    pipeline_root: str | os.PathLike[str] = "local_outputs/pipeline",
) -> PipelineResult:
    """Run the KFP pipeline with kfp's local runner on a tuned study's trials, as ``hpo pipeline run-local`` does:
    winners -> retrains on train + validation -> test evaluation against the baselines -> MLflow (the champion is
    registered as ``<model_name>@champion`` only if it beats the best baseline).

    Args:
        manifest: the Experiment :func:`tune` ran (path, YAML text or dict).
        state_dir: where :func:`tune` kept its state. trials: its ``trials.json`` (default in ``state_dir``).
        data: the data spec (default: the one the trials used).
        top_k: winners by the objective (at least 1); pareto: add the Pareto front; max_winners: cap (0: none).
        include_early_stopped: early-stopped trials may win too.
        seeds: retrains per winner, seeds 0..N-1 (at least 1). epochs: retrain epochs (0: the trials' own).
        retrain_flags: extra trial flags for every retrain (default ``--threads=<half the CPUs>``).
        cost_bps: backtest cost per unit traded. test_origins: the rolling-origin test's refits (0: quarterly).
        tracking_uri: MLflow (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<state_dir>/mlflow.db``).
        mlflow_experiment, model_name: default the Experiment's name.
        pipeline_root: where kfp writes every step's artifacts, and ``run-local.log``, the steps' output.
    """
    import json

    from hpo_lib.pipeline import dag, steps
    from hpo_lib.results import tracking

    _at_least("top_k", top_k, 1)
    _at_least("seeds", seeds, 1)
    _at_least("max_winners", max_winners, 0)
    _at_least("epochs", epochs, 0)
    _at_least("test_origins", test_origins, 0)
    state = _path(state_dir, "state_dir")
    path = manifest_file(manifest, state)
    arguments = steps.local_arguments(
        path, state_dir=state, trials=None if trials is None else os.fspath(trials), data=data, epochs=epochs
    )
    threads = max(1, (os.cpu_count() or 2) // 2)  # kfp's local runner runs two retrains at a time
    uri = tracking.tracking_uri(tracking_uri, state_dir=state)
    arguments.update(
        top_k=top_k,
        pareto=pareto,
        max_winners=max_winners,
        include_early_stopped=include_early_stopped,
        n_seeds=seeds,
        retrain_flags=retrain_flags if retrain_flags is not None else f"--threads={threads}",
        cost_bps=cost_bps,
        test_origins=test_origins,
        mlflow_experiment=mlflow_experiment,
        model_name=model_name,
        tracking_uri=uri,
    )
    root = writable_dir(_path(pipeline_root, "pipeline_root"), "pipeline_root")
    log_path = root / "run-local.log"
    try:
        with open(log_path, "w") as log_file, contextlib.redirect_stdout(log_file):  # kfp echoes every step's I/O
            task = dag.run_local(pipeline_root=root, **arguments)
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        raise HpoError(
            f"{message} The task's error is the last traceback in {log_path}; the finished steps' artifacts are "
            f"under {root}/"
        ) from None
    summary = json.loads((Path(task.outputs["summary"].path) / "summary.json").read_text())
    return PipelineResult(
        verdict=summary["verdict"],
        summary=summary,
        leaderboard=Path(task.outputs["leaderboard"].path),
        report=Path(task.outputs["report"].path),
        registry=Path(task.outputs["registry"].path),
        pipeline_root=root,
        log=log_path,
        tracking_uri=uri,
    )


# ----------------------------------------------------------------------------------------------- shared checks
def manifest_file(manifest: Manifest, state_dir: Path) -> Path:
    """The file of a manifest given as a path, as YAML text or as a dict (text and dicts are written to
    ``<state_dir>/manifests/<name>-<digest>.yaml``, one file per distinct content). Invalid YAML, a document that
    is no Experiment or a dict YAML cannot hold is refused in one line; the Experiment's rules are checked by
    whoever loads the file."""
    import yaml

    from hpo_lib.katib import experiment

    if isinstance(manifest, os.PathLike) or (isinstance(manifest, str) and "\n" not in manifest):
        if not os.fspath(manifest):
            raise ConfigError("manifest must be a path, YAML text or a dict, got an empty string")
        path = Path(manifest)
        if path.is_dir():
            raise ConfigError(f"manifest {path} is a folder: give the Experiment's YAML file")
        return path
    if isinstance(manifest, str):
        text = manifest
        doc = experiment.parse_experiment(text, "manifest text")
    elif isinstance(manifest, Mapping):
        doc = dict(manifest)
        if doc.get("kind") != "Experiment":
            raise ConfigError(
                f"manifest dict must be a Katib Experiment (kind: Experiment), got kind {doc.get('kind')!r}"
            )
        try:
            text = yaml.safe_dump(doc, sort_keys=False)
        except yaml.YAMLError as exc:
            raise ConfigError(f"manifest dict cannot be written as YAML: {first_line(exc)}") from None
    else:
        raise ConfigError(f"manifest must be a path, YAML text or a dict, got {type(manifest).__name__}")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), Mapping) else None
    stem = name if isinstance(name, str) and _DNS_NAME.fullmatch(name) and len(name) <= 63 else "experiment"
    folder = writable_dir(state_dir, "state_dir") / "manifests"
    path = folder / f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    try:
        folder.mkdir(exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the manifest to {path}: {exc.strerror or first_line(exc)}") from None
    return path


def writable_dir(path: Path, setting: str) -> Path:
    """``path`` as a folder this user can write (created if missing), or one ConfigError naming the setting."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{setting} {path} is a file, not a folder: give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{setting} {path} cannot be written ({exc.strerror or type(exc).__name__}): give a folder this user may "
            "write"
        ) from None
    return path


def load_study(manifest: str | Path, options: Any) -> optuna.Study:
    """``engine.load_study``, with a storage that cannot be read (a corrupt or foreign SQLite file, a server that
    refuses) as one ConfigError."""
    from hpo_lib import engine

    try:
        return engine.load_study(manifest, options)
    except HpoError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and Optuna raise many types for an unusable storage
        raise ConfigError(
            f"cannot read study storage {redact(options.storage_url)}: {first_line(exc)}; is it the file or URL the "
            "tuning wrote? A damaged SQLite file cannot be repaired here: restore it or tune again in another state "
            "folder"
        ) from None


@contextlib.contextmanager
def storage_failures(
    storage: str, state_dir: str | os.PathLike[str], *, resume: str = "run the same tuning again to resume"
) -> Iterator[None]:
    """A study storage that fails mid-study (a full disk, a lost database server) as one HpoError: what finished
    is in the storage already, and running the same tuning again resumes (``resume`` says how, in the caller's
    words)."""
    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
        causes = [exc, *_causes(exc)]
        text = " ".join(first_line(c) for c in causes).lower()
        full = any(isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT) for c in causes)
        full = full or "disk is full" in text or "no space left" in text
        what = "the disk is full" if full else first_line(causes[-1])
        raise HpoError(
            f"the study storage {redact(storage)} failed mid-study: {what}; every trial that finished before is kept "
            f"there and under {os.fspath(state_dir)}/: free space (or fix the storage) and {resume}"
        ) from None


def _causes(exc: BaseException) -> list[BaseException]:
    """An exception's chain of causes and contexts, nearest first."""
    out: list[BaseException] = []
    nearer = exc.__cause__ or exc.__context__
    while nearer is not None and nearer not in out:
        out.append(nearer)
        nearer = nearer.__cause__ or nearer.__context__
    return out


def _overrides(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"overrides must be a dict of trial flag -> value, e.g. {{'data': 'sample:sp500'}}, got "
            f"{type(overrides).__name__}"
        )
    out = {}
    for name, value in overrides.items():
        if not isinstance(name, str) or not name.removeprefix("--"):
            raise ConfigError(f"overrides expects trial flag names as keys, got {name!r}")
        out[name.removeprefix("--")] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _at_least(name: str, value: Any, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")


def _one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _path(value: Any, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"{name} must be a folder path, got {value!r}")
    return Path(value)


def _folder(value: Any, name: str) -> Path:
    path = _path(value, name)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} {path} is a file, not a folder: give a folder (it is created if missing)")
    return path
