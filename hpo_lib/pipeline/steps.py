"""What each step of the KFP pipeline does, as plain functions over folders (the components only call these).

    prepare_data -> tune -> select_winners -> retrain (one per winner, its seeds together) -> summarize -> register

Every step reads and writes files in folders (KFP artifacts on a cluster, temporary folders in the tests), so
each one runs the same under KFP, under ``kfp.local`` and in a unit test. The pipeline definition itself lives in
``pipelines/katib_hpo.py``; nothing here imports KFP.

Progress: every step reports what it does through a :data:`ProgressCallback` (the step starting; each retrain's
epochs as they end). Nothing here writes to a terminal: a caller passes a callback, or, across the processes of
kfp's local runner, sets :data:`PROGRESS_ENV` to a file that the steps append JSON lines to and that
:func:`follow_progress` reads back in the caller's process, for the face to show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import statistics
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hpo_lib.errors import ConfigError, ExperimentError, HpoError, NoWinnersError, first_line, redact
from hpo_lib.katib import client, manifests, space
from hpo_lib.katib import experiment as katib_experiment
from hpo_lib.pipeline import retrain
from hpo_lib.results import render, tracking, winners

log = logging.getLogger(__name__)

TUNE_MODES = ("launch", "existing", "export")
SHELL_SAFE = re.compile(r"[A-Za-z0-9:,=._/+-]+")  # characters `sh -c` passes through unquoted and unchanged
PRICES_FILE = "prices.parquet"
PROGRESS_ENV = "HPO_PROGRESS_FILE"  # a file the steps append their progress to (JSON lines), when set
RUN_FLAGS_SKIPPED = ("output_dir", "cache_dir")  # a retrain's folders: paths of this run, not settings


@dataclass(frozen=True)
class StepProgress:
    """What a step is doing: ``step`` started (``epoch`` 0), or a retrain's ``epoch`` of ``epochs`` ended.

    ``item`` is the retrain's id; ``phase`` is ``fit`` for the retrain, ``origin i/R`` for a rolling-origin refit.
    """

    step: str
    item: str = ""
    phase: str = ""
    epoch: int = 0
    epochs: int = 0


ProgressCallback = Callable[[StepProgress], None]


def progress_to_file(path: str | Path) -> ProgressCallback:
    """A callback that appends each report to ``path`` as one JSON line (one write: parallel steps never mix)."""

    def report(progress: StepProgress) -> None:
        line = (json.dumps(asdict(progress)) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    return report


def _reporter(on_progress: ProgressCallback | None) -> ProgressCallback:
    """``on_progress``; else a file reporter when :data:`PROGRESS_ENV` is set; else nothing. A report that cannot
    be written costs the report, never the step."""
    target = on_progress or (progress_to_file(os.environ[PROGRESS_ENV]) if os.environ.get(PROGRESS_ENV) else None)
    if target is None:
        return lambda progress: None

    def report(progress: StepProgress) -> None:
        try:
            target(progress)
        except OSError as exc:
            log.debug("progress not reported: %s", exc)

    return report


@contextlib.contextmanager
def follow_progress(path: str | Path, on_progress: ProgressCallback, *, interval_s: float = 0.5) -> Iterator[None]:
    """Call ``on_progress`` in this process for every report the steps append to ``path`` while the block runs
    (read every ``interval_s``, and once more at the end so that the last reports are not lost)."""
    source = Path(path)
    stop = threading.Event()
    offset = 0

    def drain() -> None:
        nonlocal offset
        try:
            with source.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        offset += len(complete)
        for line in complete.decode().splitlines():
            with contextlib.suppress(ValueError, TypeError):
                on_progress(StepProgress(**json.loads(line)))

    def loop() -> None:
        while not stop.wait(interval_s):
            drain()

    reader = threading.Thread(target=loop, name="pipeline-progress", daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join()
        drain()


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str))


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------------------------- 1. data
def prepare_data(
    spec: str, out_dir: str | Path, *, cache_dir: str | None = None, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Load the market data once (yahoo through its cache) and write it as one long Parquet file.

    Retrains then read ``file:<out_dir>/prices.parquet``: the same rows and ticker names as the trials, and no
    network access on the GPU nodes.
    """
    from hpo_lib import data

    _reporter(on_progress)(StepProgress("prepare data"))
    prices = data.load_prices(spec, cache_dir=cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data.to_long(prices).to_parquet(out / PRICES_FILE, index=False)
    first = next(iter(prices.values()))
    meta = {
        "spec": spec,
        "tickers": list(prices),
        "rows": len(first),
        "first_date": str(first.index[0].date()),
        "last_date": str(first.index[-1].date()),
    }
    _write_json(out / "data.json", meta)
    return meta


def data_spec(data_dir: str | Path) -> str:
    return f"file:{Path(data_dir) / PRICES_FILE}"


# ----------------------------------------------------------------------------------------------- 2. tune
def experiment_doc(
    *, experiment_yaml: str = "", model_family: str = "lstm", name: str = "", namespace: str = ""
) -> dict[str, Any]:
    """The Experiment to launch or read: ``experiment_yaml`` if given, else our manifest for ``model_family``.

    ``name`` and ``namespace`` replace the manifest's when set. Only apiVersion, kind, metadata (name, namespace,
    labels, annotations) and spec are kept, so an object copied from ``kubectl get -o yaml`` can be launched again.
    """
    if experiment_yaml.strip():
        source = katib_experiment.parse_experiment(experiment_yaml, "experiment_yaml")
    else:
        if model_family not in space.FAMILIES:
            raise ConfigError(f"unknown model family {model_family!r}; choose one of {', '.join(space.FAMILIES)}")
        source = manifests.experiment(model_family)
    meta = source.get("metadata") or {}
    doc = {
        "apiVersion": source.get("apiVersion", f"{client.GROUP}/{client.VERSION}"),
        "kind": "Experiment",
        "metadata": {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")},
        "spec": source.get("spec") or {},
    }
    if name:
        doc["metadata"]["name"] = name
    doc["metadata"]["namespace"] = namespace or meta.get("namespace") or _pod_namespace() or manifests.NAMESPACE
    if not doc["metadata"].get("name"):
        raise ConfigError("the Experiment has no name: set experiment_name")
    if not (doc["spec"].get("trialTemplate") or {}).get("trialSpec"):
        raise ConfigError("the Experiment has no spec.trialTemplate.trialSpec: its trials cannot be retrained")
    return doc


def _pod_namespace() -> str | None:
    path = Path(client.SA_NAMESPACE_FILE)
    return path.read_text().strip() if path.exists() else None


def tune(
    out_dir: str | Path,
    *,
    mode: str,
    data: str,
    experiment_yaml: str = "",
    model_family: str = "lstm",
    experiment_name: str = "",
    namespace: str = "",
    trials_export: str = "",
    timeout_s: float = 86400,
    poll_s: float = 30,
    api=None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Get every trial of a tuning run and write them out before anything else can lose them.

    * ``launch``: create the Experiment (our manifest, or ``experiment_yaml``) with its trials reading ``data``;
      an experiment that already exists under that name is used as it is; wait for it.
    * ``existing``: read an experiment that was started another way; wait for it if it is still running.
    * ``export``: the embedded engine's ``trials.json`` (``hpo tune``), with the manifest it ran.

    Writes ``experiment.json``, ``trials.json`` (the Trial CRs or export records, untouched) and ``tune.json``
    (mode, the experiment's final state, notes). A Failed experiment is recorded, not raised: the next step
    refuses it, after its trials are safe in this artifact.
    """
    if mode not in TUNE_MODES:
        raise ConfigError(f"tune_mode must be one of {', '.join(TUNE_MODES)}, got {mode!r}")
    _reporter(on_progress)(StepProgress("tune"))
    experiment = experiment_doc(
        experiment_yaml=experiment_yaml, model_family=model_family, name=experiment_name, namespace=namespace
    )
    name, ns = experiment["metadata"]["name"], experiment["metadata"]["namespace"]
    notes: list[str] = []
    created = False
    if mode == "launch" and not SHELL_SAFE.fullmatch(data):
        raise ConfigError(
            f"data {data!r} goes into the trials' arguments, which Katib runs through `sh -c`: use the "
            f"shell-safe form, e.g. yahoo:SPY,QQQ,start=2010-01-01,end=2024-12-31"
        )
    if mode == "export":
        path = Path(trials_export)
        if not trials_export or not path.exists():
            raise ConfigError(
                f"tune_mode=export needs trials_export, the trials.json `hpo tune` wrote; "
                f"{trials_export or 'none'} does not exist"
            )
        try:
            trials = _read_json(path)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON: {exc}") from None
        trials = trials.get("items", []) if isinstance(trials, dict) else trials
        state, detail, counts = "Succeeded", f"exported by the embedded engine to {path}", f"{len(trials)} trials"
    else:
        api = api or client.connect()
        if mode == "launch":  # tuning and retraining read the same series
            katib_experiment.set_fixed_flag(experiment, "data", data)
            live, created = client.create_experiment(api, experiment)
            if not created:
                notes.append(f"experiment {ns}/{name} already existed: it was used as it is, not relaunched")
        else:
            live = client.get_experiment(api, name, ns)
        state, _ = client.experiment_state(live)
        if state not in ("Succeeded", "Failed"):
            live = client.wait_for_experiment(api, name, ns, timeout_s=timeout_s, poll_s=poll_s)
        experiment = {**experiment, "spec": live.get("spec") or experiment["spec"], "status": live.get("status")}
        trials = client.list_trials(api, name, ns)
        state, detail = client.experiment_state(live)
        counts = client.progress(live)
    tuned_on = katib_experiment.fixed_flag(experiment, "data")
    if mode == "existing" and tuned_on and tuned_on != data:  # an export does not record `hpo tune --set data=`
        notes.append(f"the trials were tuned on --data={tuned_on}; the retrains use {data}")
    out = Path(out_dir)
    _write_json(out / "experiment.json", experiment)
    _write_json(out / "trials.json", trials)
    summary = {
        "mode": mode,
        "experiment": name,
        "namespace": ns,
        "state": state,
        "detail": detail,
        "progress": counts,
        "n_trials": len(trials),
        "created": created,
        "data": data,
        "notes": notes,
    }
    _write_json(out / "tune.json", summary)
    return summary


# ----------------------------------------------------------------------------------------------- 3. winners
def select_winners(
    trials_dir: str | Path,
    out_dir: str | Path,
    *,
    top_k: int = 3,
    pareto: bool = True,
    max_winners: int = 0,
    include_early_stopped: bool = False,
    n_seeds: int = 3,
    epochs: int = 0,
    retrain_flags: str = "",
    on_progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Pick the winners and return one retrain item per winner, with its ``seeds`` (0 .. n_seeds - 1), all retrained
    in one process by :func:`run_retrain`; writes ``selection.json``.

    Each item carries everything its retrain needs (the trial's flags included): in a local ``dsl.ParallelFor``,
    other task outputs passed beside the loop item arrive replaced by it (kfp 2.16-2.17), so nothing else is
    passed. ``epochs`` 0 keeps the template's ``--epochs``; ``retrain_flags`` (e.g. ``--threads=1``) come last.
    """
    _reporter(on_progress)(StepProgress("select winners"))
    if n_seeds < 1:
        raise ConfigError(f"n_seeds must be at least 1, got {n_seeds}")
    if epochs < 0:
        raise ConfigError(f"epochs must be 0 (the experiment's) or more, got {epochs}")
    folder = Path(trials_dir)
    tuned = _read_json(folder / "tune.json")
    if tuned["state"] == "Failed":
        raise ExperimentError(
            f"experiment {tuned['namespace']}/{tuned['experiment']} failed ({tuned['detail'] or 'no reason given'}; "
            f"{tuned['progress']}); its trials are saved in the tune step's artifact, but no winners are picked "
            f"from a failed experiment"
        )
    experiment = _read_json(folder / "experiment.json")
    objective, axes = winners.criteria(experiment)
    trials = winners.parse_trials(_read_json(folder / "trials.json"))
    selection = winners.select(
        trials,
        objective,
        k=top_k,
        axes=axes,
        pareto=pareto,
        max_winners=max_winners,
        include_early_stopped=include_early_stopped,
    )
    extra = shlex.split(retrain_flags)
    bad = [f for f in extra if not f.startswith("--")]
    if bad:
        raise ConfigError(f"retrain_flags must be --name=value flags, got {bad}")
    items = []
    for w in selection.winners:
        flags = (
            katib_experiment.trial_command(experiment, w.trial.params).flags
            + ([f"--epochs={epochs}"] if epochs else [])
            + extra
        )
        retrain.retrain_args(flags)  # a bad flag fails here, before any GPU is requested
        items.append(
            {
                "id": f"{w.rank:03d}-{w.trial.name}",
                "experiment": tuned["experiment"],
                "trial": w.trial.name,
                "seeds": list(range(n_seeds)),
                "rank": w.rank,
                "objective_metric": objective.metric,
                "objective": w.objective,
                "top_k": w.top_k,
                "pareto": w.pareto,
                "axes": w.axes,
                "flags": flags,
                "n_trials": selection.n_trials,
                "n_eligible": selection.n_eligible,
            }
        )
    out = Path(out_dir)
    _write_json(out / "selection.json", {**selection.to_dict(), "tune": tuned, "items": len(items)})
    (out / "leaderboard.md").write_text(render.selection_markdown(selection, tuned))
    return items


# ----------------------------------------------------------------------------------------------- 4. retrain
def run_retrain(
    item: Mapping[str, Any],
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    cost_bps: float = 5.0,
    test_origins: int = 1,
    tracking_uri: str | None = None,
    mlflow_experiment: str = "",
    on_progress: ProgressCallback | None = None,
) -> dict[int, dict[str, float]]:
    """Retrain one winner item with all its seeds in this process (:func:`hpo_lib.pipeline.retrain.retrain_seeds`:
    one data load, the seeds packed where the family packs); writes one folder per seed, ``<out_dir>/seed<s>/``,
    with the retrain files plus ``item.json`` (the item with that ``seed`` and the id ``<id>-seed<s>``).

    ``test_origins`` R > 1 adds the rolling-origin test (0: one origin per quarter of test days); the item's
    ``n_trials`` deflates the Sharpe ratio. Returns each seed's scalar results for the step's metrics. Loop items
    pass through protobuf, so numbers may arrive as floats: they are cast back here.

    With a tracking URI (``tracking_uri``, else ``$MLFLOW_TRACKING_URI``) each seed's MLflow run is opened before
    training, in ``mlflow_experiment`` (else ``$MLFLOW_EXPERIMENT_NAME``, else the item's experiment): each epoch's
    metrics appear (as the epoch ends with one seed, when the shared fit ends with several), then the test metrics,
    ``evaluation.json``, ``forecasts.csv`` and the model; ``item.json`` records the run, which :func:`register`
    nests under the pipeline's parent run. A tracking failure costs the live run (one warning), never the retrain:
    :func:`register` then logs the retrain afresh.
    """
    out = Path(out_dir)
    report_progress = _reporter(on_progress)
    report_progress(StepProgress("retrain", item=str(item["id"])))
    seeds = [int(s) for s in item["seeds"]]
    common = {k: v for k, v in item.items() if k != "seeds"}
    common.update({k: int(item[k]) for k in ("rank", "n_trials", "n_eligible")})
    per_seed = {s: {**common, "id": f"{item['id']}-seed{s}", "seed": s} for s in seeds}
    args = retrain.retrain_args(
        list(item["flags"]), data=data_spec(data_dir), cache_dir="", output_dir=str(out), eval_test=True
    )
    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if tracking_uri is None else tracking_uri
    experiment = mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "") or str(item["experiment"])
    params = {s: run_params(asdict(replace(args, seed=s)), data_dir) for s in seeds}
    live = {s: _open_retrain_run(uri, experiment, per_seed[s], params[s], data_dir) if uri else None for s in seeds}
    live_epochs = {s: live[s] is not None for s in seeds}

    def on_epoch(seed: int, phase: str, record: Mapping[str, float], epochs: int) -> None:
        epoch, run = int(record["epoch"]), live[seed]
        if run is not None and live_epochs[seed] and phase == "fit":
            try:
                run.log_epoch({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
            except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the retrain goes on
                live_epochs[seed] = False
                log.warning(
                    "MLflow: the epochs of %s are no longer logged live (%s)", per_seed[seed]["id"], first_line(exc)
                )
        report_progress(
            StepProgress("retrain", item=str(per_seed[seed]["id"]), phase=phase, epoch=epoch, epochs=epochs)
        )

    try:
        reports = retrain.retrain_seeds(
            args,
            {s: out / f"seed{s}" for s in seeds},
            cost_bps=cost_bps,
            n_trials=int(item.get("n_trials") or 1),
            test_origins=int(test_origins),
            on_epoch=on_epoch,
        )
    except BaseException:
        for run in live.values():
            if run is not None:
                run.fail()
        raise
    results = {}
    for seed in seeds:
        folder, seed_item, run, report = out / f"seed{seed}", per_seed[seed], live[seed], reports[seed]
        scalars = scalar_results(seed_item, report)
        if run is not None:
            try:
                model_uri = run.finish(
                    metrics={**scalars, "epochs_run": float(report["run"]["epochs"])},
                    dicts={"evaluation.json": report},
                    artifacts=[folder / "forecasts.csv"],
                    model=retrain.load_model(folder),
                    input_example=np.load(folder / "input_example.npy"),
                    code_path=_package_copy(),
                    requirements=_model_requirements(),
                )
                seed_item.update(mlflow_run_id=run.run_id, mlflow_model_uri=model_uri, mlflow_tracking_uri=redact(uri))
                seed_item["mlflow_experiment"] = experiment
            except Exception as exc:  # noqa: BLE001
                run.fail()
                log.warning(
                    "MLflow: the run of %s could not be finished (%s); register logs it",
                    seed_item["id"],
                    first_line(exc),
                )
        _write_json(folder / "item.json", seed_item)
        results[seed] = scalars
    return results


def run_params(config: Mapping[str, Any], data_dir: str | Path) -> dict[str, str]:
    """A retrain's settings as MLflow params under the trial's flag names (Katib's: ``batch-size``), the same
    names as the tuning runs'; ``data`` is the spec the data was prepared from, not the prepared file's path."""
    flags = [f"--{k.replace('_', '-')}={_flag_value(v)}" for k, v in config.items() if k not in RUN_FLAGS_SKIPPED]
    params = tracking.flag_params(flags)
    meta = Path(data_dir) / "data.json"
    if meta.exists():
        params["data"] = str(_read_json(meta)["spec"])
    return params


def _flag_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def dataset(data_dir: str | Path):
    """The prepared data as an MLflow run input: its spec, the digest of the prepared file, its size and dates."""
    folder = Path(data_dir)
    meta = _read_json(folder / "data.json")
    digest = hashlib.sha256((folder / PRICES_FILE).read_bytes()).hexdigest()[:8]
    return tracking.dataset_input(
        str(meta["spec"]), digest=digest, profile={k: v for k, v in meta.items() if k != "spec"}
    )


def _open_retrain_run(
    uri: str, experiment: str, item: Mapping[str, Any], params: Mapping[str, str], data_dir: str | Path
) -> tracking.RetrainRun | None:
    try:
        tracking.check_server(uri)
        return tracking.RetrainRun.open(
            uri,
            experiment_name=experiment,
            name=str(item["id"]),
            tags=_retrain_tags(item),
            params=params,
            dataset=dataset(data_dir),
        )
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the retrain goes on without a live run
        log.warning("MLflow: no live run for %s (%s); register logs it after the retrains", item["id"], first_line(exc))
        return None


def _retrain_tags(item: Mapping[str, Any], champion_id: str | None = None) -> dict[str, str]:
    tags = {
        "hpo.kind": "retrain-run",
        "hpo.trial": str(item["trial"]),
        "hpo.rank": str(item["rank"]),
        "hpo.seed": str(item["seed"]),
        "hpo.top_k": str(item["top_k"]),
        "hpo.pareto": str(item["pareto"]),
    }
    if champion_id is not None:
        tags["hpo.champion"] = str(item["id"] == champion_id)
    return tags


def scalar_results(item: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one retrain: test metrics, the bar, DM, backtest, val -> test gap (for KFP and MLflow)."""
    ranking = report["ranking_metric"]
    values: dict[str, float | None] = {f"test_{k}": v for k, v in report["model"].items()}
    values[f"bar_test_{ranking}"] = report["baselines"][report["bar"]][ranking]
    values["beats_bar"] = float(report["beats_bar"])
    values["dm_statistic"] = report["dm"].get("statistic")
    values["dm_p_value"] = report["dm"].get("p_value")
    for name, result in (report.get("backtest") or {}).items():
        if isinstance(result, dict):
            prefix = "backtest" if name == "model" else name
            for key in ("sharpe", "max_drawdown", "win_rate", "total_return"):
                values[f"{prefix}_{key}"] = result[key]
    values["tuning_objective"] = item.get("objective")
    values["val_test_gap"] = retrain.val_test_gap(item["objective_metric"], item.get("objective"), report["model"])
    values["train_time_s"] = report["run"]["train_time_s"]
    values["kept_epoch"] = report["run"].get("kept_epoch")
    values.update(inference_scalars(report.get("inference") or {}))
    rolling = report.get("rolling")
    if rolling:
        values[f"rolling_test_{ranking}"] = rolling["model"][ranking]
        values[f"rolling_bar_test_{ranking}"] = rolling["baselines"][rolling["bar"]][ranking]
        values["rolling_dm_p_value"] = rolling["dm"].get("p_value")
    return {k: float(v) for k, v in values.items() if v is not None}


def inference_scalars(inference: Mapping[str, Any]) -> dict[str, float | None]:
    """The headline numbers of :func:`hpo_lib.pipeline.retrain.inference_report` (absent ones left out)."""
    values: dict[str, float | None] = {}
    for name, interval in (inference.get("intervals") or {}).items():
        values[f"{name}_ci_low"], values[f"{name}_ci_high"] = interval["low"], interval["high"]
    for name, cw in (inference.get("clark_west") or {}).items():
        values[f"clark_west_p_{name}"] = cw["p_value"]
    values["oos_r2"] = (inference.get("oos_r2") or {}).get("r2")
    values["pesaran_timmermann_p"] = (inference.get("pesaran_timmermann") or {}).get("p_value")
    values["psr"] = (inference.get("psr") or {}).get("psr")
    values["dsr"] = (inference.get("dsr") or {}).get("dsr")
    return values


# ----------------------------------------------------------------------------------------------- 5. summary
def retrain_dirs(dirs: Sequence[str | Path]) -> list[Path]:
    """The seed folders of :func:`run_retrain`'s outputs: a folder with an ``item.json`` is one, any other stands for
    the seed folders in it (``seed<s>/``, in seed order)."""
    found = []
    for d in dirs:
        folder = Path(d)
        if (folder / "item.json").exists():
            found.append(folder)
        else:
            seeds = sorted(folder.glob("seed*/item.json"), key=lambda p: int(p.parent.name.removeprefix("seed")))
            found += [p.parent for p in seeds]
    return found


def load_retrains(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each retrained seed's folder, ``item.json`` and ``evaluation.json``, from winner or seed folders."""
    runs = []
    for folder in retrain_dirs(dirs):
        runs.append(
            {
                "dir": str(folder),
                "item": _read_json(folder / "item.json"),
                "evaluation": _read_json(folder / "evaluation.json"),
            }
        )
    return runs


def summarize(dirs: Sequence[str | Path], *, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Per winner: seed means and spreads on test; the champion; the verdict against the bar.

    The champion is the retrained winner with the best *tuning* objective: the test split is not used to choose
    it, so its test score is an honest estimate. Its first seed's run is the model that may be registered, and only
    if that run beats the bar (the best baseline on test).
    """
    _reporter(on_progress)(StepProgress("evaluate"))
    runs = load_retrains(dirs)
    if not runs:
        raise HpoError("no retrain results to summarize")
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: (r["item"]["rank"], r["item"]["seed"])):
        by_trial.setdefault(run["item"]["trial"], []).append(run)
    rows = []
    for trial_name, group in by_trial.items():
        item, ranking = group[0]["item"], group[0]["evaluation"]["ranking_metric"]
        tests = [r["evaluation"]["model"][ranking] for r in group]
        scalars = [scalar_results(r["item"], r["evaluation"]) for r in group]
        rows.append(
            {
                "trial": trial_name,
                "rank": item["rank"],
                "top_k": item["top_k"],
                "pareto": item["pareto"],
                "tuning_objective": item["objective"],
                "seeds": [r["item"]["seed"] for r in group],
                "test_mean": statistics.fmean(tests),
                "test_sd": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "test_min": min(tests),
                "test_max": max(tests),
                "beats_bar": sum(r["evaluation"]["beats_bar"] for r in group),
                "bar": group[0]["evaluation"]["bar"],
                "bar_test": group[0]["evaluation"]["baselines"][group[0]["evaluation"]["bar"]][ranking],
                "dm_p_values": [s.get("dm_p_value") for s in scalars],
                "sharpe_mean": _mean([s.get("backtest_sharpe") for s in scalars]),
                "max_drawdown_mean": _mean([s.get("backtest_max_drawdown") for s in scalars]),
                "win_rate_mean": _mean([s.get("backtest_win_rate") for s in scalars]),
                "val_test_gap_mean": _mean([s.get("val_test_gap") for s in scalars]),
                "train_time_s_mean": _mean([s.get("train_time_s") for s in scalars]),
                "model_size_mb": group[0]["evaluation"]["run"]["model_size_mb"],
            }
        )
    ordered = [r for group in by_trial.values() for r in group]
    names = [r["item"]["id"] for r in ordered]
    groups = [r["item"]["trial"] for r in ordered]
    n_configurations = int(ordered[0]["item"]["n_trials"])
    single = retrain.search_aware([r["evaluation"] for r in ordered], names, groups, n_configurations=n_configurations)
    rolled = [r["evaluation"].get("rolling") for r in ordered]
    rolling = (
        retrain.search_aware([r for r in rolled if r], names, groups, n_configurations=n_configurations)
        if all(rolled)
        else None
    )
    beats_baselines, search_text = retrain.search_verdict(single, rolling)
    champion_row = min(rows, key=lambda r: r["rank"])
    champion_run = by_trial[champion_row["trial"]][0]
    evaluation = champion_run["evaluation"]
    ranking, bar = evaluation["ranking_metric"], evaluation["bar"]
    model_value, bar_value = evaluation["model"][ranking], evaluation["baselines"][bar][ranking]
    dm = evaluation["dm"]
    item = champion_run["item"]
    who = f"trial {item['trial']} (tuning rank {item['rank']}, seed {item['seed']})"
    if "p_value" in dm:
        significance = "significant" if dm["p_value"] < 0.05 else "not significant"
        evidence = f"Diebold-Mariano p = {dm['p_value']:.3g} ({significance} at 5%, {dm['n']} test days)"
    else:
        evidence = f"no Diebold-Mariano test: {dm['error']}"
    if evaluation["beats_bar"]:
        verdict = (
            f"{who} beats the best baseline ({bar}) on the test split: {ranking} {model_value:.5g} vs "
            f"{bar_value:.5g} ({-evaluation['improvement']:+.2%}); {evidence}."
        )
    else:
        verdict = (
            f"No champion: {who}, the winner with the best tuning objective, does not beat the best baseline "
            f"({bar}) on the test split ({ranking} {model_value:.5g} vs {bar_value:.5g}); {evidence}. "
            f"Nothing is registered."
        )
    return {
        "experiment": item["experiment"],
        "objective_metric": item["objective_metric"],
        "ranking_metric": ranking,
        "n_trials": item["n_trials"],
        "n_eligible": item["n_eligible"],
        "n_winners": len(rows),
        "n_retrains": len(runs),
        "winners": rows,
        "champion": {"dir": champion_run["dir"], "item": item},
        "beats_bar": bool(evaluation["beats_bar"]),
        "verdict": verdict,
        "champion_scalars": scalar_results(item, evaluation),
        "test_period": evaluation["test_period"],
        "n_test": evaluation["n_test"],
        "backtest": evaluation.get("backtest"),
        "search": {"single": single, "rolling": rolling},
        "beats_baselines": beats_baselines,
        "search_verdict": search_text,
        "inference": evaluation.get("inference"),
        "rolling_origins": (evaluation.get("rolling") or {}).get("origins"),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


# ----------------------------------------------------------------------------------------------- 6. MLflow
def register(
    dirs: Sequence[str | Path],
    summary: Mapping[str, Any],
    *,
    uri: str,
    mlflow_experiment: str = "",
    model_name: str = "",
    run_name: str = "",
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Log every retrain to MLflow under one parent run; register the champion as ``<model_name>@champion``.

    Each retrain is a nested run with the retrain's settings as params (the trial's flag names), its data set, its
    per-epoch curves, the test metrics, the evaluation report and the model (signature and input example). A
    retrain whose step already logged it live (same store and experiment) is nested as it is; the others are logged
    here. The champion is registered, and the alias moved to it, only when ``summary["beats_bar"]``; otherwise the
    parent run says why and the registry is left as it was.

    Raises:
        TrackingError: the tracking server is unreachable or a write fails (the runs opened so far end FAILED).
    """
    _reporter(on_progress)(StepProgress("register"))
    model_name = model_name or summary["experiment"]
    experiment = mlflow_experiment or summary["experiment"]
    runs = load_retrains(dirs)
    champion_id = summary["champion"]["item"]["id"]
    if summary["beats_bar"] and not any(r["item"]["id"] == champion_id for r in runs):
        raise HpoError(f"the champion {champion_id} is not among the {len(runs)} retrains given to register")
    records: list[dict[str, Any]] = []
    for run in runs:
        item, evaluation, folder = run["item"], run["evaluation"], Path(run["dir"])
        champion = item["id"] == champion_id
        logged = item.get("mlflow_tracking_uri") == redact(uri) and item.get("mlflow_experiment") == experiment
        if logged and item.get("mlflow_run_id"):
            records.append(
                {
                    "id": item["id"],
                    "champion": champion,
                    "run_id": item["mlflow_run_id"],
                    "model_uri": item["mlflow_model_uri"],
                    "tags": {"hpo.champion": str(champion)},
                }
            )
            continue
        config = _read_json(folder / "config.json")
        history = _read_json(folder / "history.json")
        data_dir = Path(config["data"].removeprefix("file:")).parent
        records.append(
            {
                "id": item["id"],
                "champion": champion,
                "tags": _retrain_tags(item, champion_id),
                "params": run_params(config, data_dir),
                "dataset": dataset(data_dir) if (data_dir / "data.json").exists() else None,
                "curves": [
                    (k, float(v), int(epoch["epoch"])) for epoch in history for k, v in epoch.items() if k != "epoch"
                ],
                "metrics": {**scalar_results(item, evaluation), "epochs_run": float(evaluation["run"]["epochs"])},
                "dicts": {"evaluation.json": evaluation},
                "artifacts": [folder / "forecasts.csv"],
                "model": retrain.load_model(folder),
                "input_example": np.load(folder / "input_example.npy"),
            }
        )
    parent = {
        "name": run_name or f"retrain-{summary['experiment']}",
        "tags": {
            "hpo.kind": "retrain",
            "hpo.experiment": summary["experiment"],
            "hpo.verdict": summary["verdict"][:5000],
        },
        "metrics": {
            **{f"champion_{k}": v for k, v in summary["champion_scalars"].items()},
            "n_trials": float(summary["n_trials"]),
            "n_retrains": float(summary["n_retrains"]),
        },
        "texts": {"report.md": render.summary_markdown(summary)},
        "dicts": {"summary.json": dict(summary)},
    }
    return tracking.log_retrains(
        uri,
        experiment_name=experiment,
        parent=parent,
        runs=records,
        register_as=model_name if summary["beats_bar"] else None,
        model_tags={"hpo.trial": summary["champion"]["item"]["trial"], "hpo.experiment": summary["experiment"]},
        code_path=_package_copy(),
        requirements=_model_requirements(),
    ) | {"model_name": model_name}


def _package_copy() -> str:
    """hpo_lib's sources (no bytecode) in a temporary folder, to ship with each logged model."""
    import shutil
    import tempfile

    package = Path(__file__).resolve().parents[1]  # hpo_lib/, found without importing the package's API
    target = Path(tempfile.mkdtemp(prefix="hpo-model-code-")) / "hpo_lib"
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def _model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "numpy", "cloudpickle")]


# ----------------------------------------------------------------------------------------------- local runs
def _require_a_success(export: Path, manifest: str | Path) -> None:
    """Refuse, in words that say so, an export in which no trial succeeded: nothing can be retrained from it.

    The line counts the trials by condition, gives the first failure's reason, and says where the logs are.
    """
    try:
        records = _read_json(export)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the trials export {export}: {first_line(exc)}", settings=("trials",)) from None
    if not isinstance(records, list):
        raise ConfigError(f"the trials export {export} is not a list of trials", settings=("trials",))
    conditions = [str(r.get("condition", "")) for r in records if isinstance(r, dict)]
    if "Succeeded" in conditions:
        return
    counts = ", ".join(f"{conditions.count(c)} {c.lower() or 'unknown'}" for c in sorted(set(conditions)))
    reasons = [str(r.get("failReason") or "") for r in records if isinstance(r, dict) and r.get("failReason")]
    first = f"; the first failure: {reasons[0][:200]}" if reasons else ""
    raise NoWinnersError(
        f"no trial succeeded: {len(records)} trial(s) in {export} ({counts or 'none run'}){first}; each trial's "
        f"output is in {export.parent}/trial-*/trial.log: fix the cause and run `hpo tune {manifest}` again"
    )


def local_arguments(
    manifest: str | Path,
    *,
    state_dir: str | Path = ".hpo",
    trials: str | Path | None = None,
    data: str | None = None,
    epochs: int = 0,
) -> dict[str, Any]:
    """Pipeline arguments that take the trials from ``hpo tune``'s export of ``manifest`` instead of Katib.

    ``data`` and ``epochs`` default to what the local trials ran with (their ``config.json``), since ``--set``
    overrides are not in the export; the trials folder defaults to ``<state_dir>/<namespace>.<name>/``.
    """
    doc = katib_experiment.load_experiment(manifest)
    export = Path(trials) if trials else Path(state_dir) / katib_experiment.qualified_name(doc) / "trials.json"
    if not export.exists():
        raise ConfigError(
            f"no trials export at {export}: run `hpo tune {manifest} --state-dir {state_dir}` first "
            f"(or give the trials export)",
            settings=("trials",),
        )
    _require_a_success(export, manifest)
    configs = sorted(export.parent.glob("trial-*/config.json"))
    config = _read_json(configs[0]) if configs else {}
    data = data or config.get("data")
    if not data:
        raise ConfigError(
            f"cannot tell which data the trials in {export.parent} used: give the data spec", settings=("data",)
        )
    return {
        "tune_mode": "export",
        "trials_export": str(export.resolve()),
        "experiment_yaml": Path(manifest).read_text(),
        "data": data,
        "epochs": int(epochs or config.get("epochs") or 0),
    }
