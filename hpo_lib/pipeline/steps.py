"""The six steps of the KFP pipeline, as plain functions over folders (each component of
:mod:`hpo_lib.pipeline.dag` calls one of them):

    prepare_data -> tune -> select_winners -> run_retrain (one per winner, its seeds together) -> evaluate -> register

Every step reads and writes files in folders (KFP artifacts on a cluster, temporary folders in the tests), so
each one runs the same under KFP, under ``kfp.local`` and in a unit test. The KFP definition that wires them is
:mod:`hpo_lib.pipeline.dag` (``pipelines/katib_hpo.py`` only re-exports it); nothing here imports KFP. What they
record is in :mod:`.records`, the evaluation's arithmetic in :mod:`.summary`, their knobs' defaults in
:mod:`.settings`, and how they report progress (never to a terminal) in :mod:`.progress`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from hpo_lib import fileio
from hpo_lib.errors import ConfigError, ExperimentError, HpoError, first_line, redact
from hpo_lib.katib import client, manifests, space
from hpo_lib.katib import experiment as katib_experiment
from hpo_lib.katib.contract import SHELL_SAFE
from hpo_lib.pipeline import records, retrain
from hpo_lib.pipeline.progress import ProgressCallback, StepProgress, reporter
from hpo_lib.pipeline.records import data_spec
from hpo_lib.pipeline.settings import CLUSTER, PipelineSettings
from hpo_lib.pipeline.summary import load_retrains, summarize
from hpo_lib.results import render, retrain_tracking, winners
from hpo_lib.study_record import FAILED, SUCCEEDED

log = logging.getLogger(__name__)

TUNE_MODES = ("launch", "existing", "export")


# ----------------------------------------------------------------------------------------------- 1. data
def prepare_data(
    spec: str, out_dir: str | Path, *, cache_dir: str | None = None, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Load the market data once (yahoo through its cache) and write it as one long Parquet file.

    Retrains then read ``file:<out_dir>/prices.parquet``: the same rows and ticker names as the trials, and no
    network access on the GPU nodes.
    """
    from hpo_lib import data

    reporter(on_progress)(StepProgress("prepare data"))
    prices = data.load_prices(spec, cache_dir=cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data.to_long(prices).to_parquet(out / records.PRICES_FILE, index=False)
    first = next(iter(prices.values()))
    meta = {
        "spec": spec,
        "tickers": list(prices),
        "rows": len(first),
        "first_date": str(first.index[0].date()),
        "last_date": str(first.index[-1].date()),
    }
    records.write_json(out / "data.json", meta)
    return meta


# ----------------------------------------------------------------------------------------------- 2. tune
def experiment_doc(
    *, experiment_yaml: str = "", model_family: str = CLUSTER.model_family, name: str = "", namespace: str = ""
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
    model_family: str = CLUSTER.model_family,
    experiment_name: str = "",
    namespace: str = "",
    trials_export: str = "",
    timeout_s: float = CLUSTER.timeout_s,
    poll_s: float = CLUSTER.poll_s,
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
    reporter(on_progress)(StepProgress("tune"))
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
            trials = records.read_json(path)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON: {exc}") from None
        trials = trials.get("items", []) if isinstance(trials, dict) else trials
        state, detail, counts = SUCCEEDED, f"exported by the embedded engine to {path}", f"{len(trials)} trials"
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
        if state not in (SUCCEEDED, FAILED):
            live = client.wait_for_experiment(api, name, ns, timeout_s=timeout_s, poll_s=poll_s)
        experiment = {**experiment, "spec": live.get("spec") or experiment["spec"], "status": live.get("status")}
        trials = client.list_trials(api, name, ns)
        state, detail = client.experiment_state(live)
        counts = client.progress(live)
    tuned_on = katib_experiment.fixed_flag(experiment, "data")
    if mode == "existing" and tuned_on and tuned_on != data:  # an export does not record `hpo tune --set data=`
        notes.append(f"the trials were tuned on --data={tuned_on}; the retrains use {data}")
    out = Path(out_dir)
    records.write_json(out / "experiment.json", experiment)
    records.write_json(out / "trials.json", trials)
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
    records.write_json(out / "tune.json", summary)
    return summary


# ----------------------------------------------------------------------------------------------- 3. winners
def select_winners(
    trials_dir: str | Path,
    out_dir: str | Path,
    *,
    top_k: int = CLUSTER.top_k,
    pareto: bool = CLUSTER.pareto,
    max_winners: int = CLUSTER.max_winners,
    include_early_stopped: bool = CLUSTER.include_early_stopped,
    seeds: int = CLUSTER.seeds,
    epochs: int = CLUSTER.epochs,
    retrain_flags: str = CLUSTER.retrain_flags,
    tracking_uri: str | None = None,
    mlflow_experiment: str = "",
    run_name: str = "",
    on_progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Pick the winners and return one retrain item per winner, with its ``seeds`` (0 .. seeds - 1), all retrained
    in one process by :func:`run_retrain`; writes ``selection.json``. The settings are those of
    :class:`~hpo_lib.pipeline.settings.PipelineSettings`, checked by it.

    Each item carries everything its retrain needs (the trial's flags included): in a local ``dsl.ParallelFor``,
    other task outputs passed beside the loop item arrive replaced by it (kfp 2.16-2.17), so nothing else is
    passed. ``epochs`` 0 keeps the template's ``--epochs``; ``retrain_flags`` (e.g. ``--threads=1``) come last.

    With a tracking URI (``tracking_uri``, else ``$MLFLOW_TRACKING_URI``) the pipeline's MLflow parent run is opened
    here, before any retrain (:func:`pipeline_parent`), and each item names it (``mlflow_parent``), so each
    retrain's run is nested under it from its start; :func:`register` ends it.
    """
    reporter(on_progress)(StepProgress("select winners"))
    PipelineSettings(
        top_k=top_k, max_winners=max_winners, seeds=seeds, epochs=epochs, retrain_flags=retrain_flags
    ).check()
    folder = Path(trials_dir)
    tuned = records.read_json(folder / "tune.json")
    if tuned["state"] == FAILED:
        raise ExperimentError(
            f"experiment {tuned['namespace']}/{tuned['experiment']} failed ({tuned['detail'] or 'no reason given'}; "
            f"{tuned['progress']}); its trials are saved in the tune step's artifact, but no winners are picked "
            f"from a failed experiment"
        )
    experiment = records.read_json(folder / "experiment.json")
    objective, axes = winners.criteria(experiment)
    trials = winners.parse_trials(records.read_json(folder / "trials.json"))
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
                "seeds": list(range(seeds)),
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
    parent = pipeline_parent(tracking_uri, mlflow_experiment, run_name, str(tuned["experiment"])) if items else None
    for item in items:
        item["mlflow_parent"] = parent
    out = Path(out_dir)
    records.write_json(out / "selection.json", {**selection.to_dict(), "tune": tuned, "items": len(items)})
    fileio.write_text(out / "leaderboard.md", render.selection_markdown(selection, tuned))
    return items


def pipeline_parent(uri: str | None, mlflow_experiment: str, run_name: str, experiment: str) -> dict[str, str] | None:
    """The pipeline's MLflow parent run, opened RUNNING, as the items name it (run id, redacted tracking URI and
    MLflow experiment); None without a tracking URI, or when MLflow fails (one warning: :func:`register` opens it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if uri is None else uri
    if not uri:
        return None
    mlflow_experiment = _mlflow_experiment(mlflow_experiment, experiment)
    try:
        run_id = retrain_tracking.open_pipeline_run(
            uri,
            experiment_name=mlflow_experiment,
            name=_parent_name(run_name, experiment),
            tags={"hpo.kind": "retrain", "hpo.experiment": experiment},
        )
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; register opens the parent run instead
        log.warning("MLflow: no parent run before the retrains (%s); register opens it", first_line(exc))
        return None
    return {"run_id": run_id, "tracking_uri": redact(uri), "experiment": mlflow_experiment}


def _mlflow_experiment(mlflow_experiment: str, experiment: str) -> str:
    """The MLflow experiment of the pipeline's runs: the argument, else ``$MLFLOW_EXPERIMENT_NAME``, else Katib's."""
    return mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "") or experiment


def _parent_name(run_name: str, experiment: str) -> str:
    return run_name or f"retrain-{experiment}"


def _same_parent(parent: Mapping[str, Any] | None, uri: str, mlflow_experiment: str) -> str | None:
    """The parent run's id when ``parent`` (an item's ``mlflow_parent``) is in this store and experiment."""
    if parent and parent.get("tracking_uri") == redact(uri) and parent.get("experiment") == mlflow_experiment:
        return str(parent["run_id"])
    return None


# ----------------------------------------------------------------------------------------------- 4. retrain
def run_retrain(
    item: Mapping[str, Any],
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    cost_bps: float = CLUSTER.cost_bps,
    test_origins: int = CLUSTER.test_origins,
    tracking_uri: str | None = None,
    mlflow_experiment: str = "",
    on_progress: ProgressCallback | None = None,
) -> dict[int, dict[str, float]]:
    """Retrain one winner item with all its seeds in this process (:func:`hpo_lib.pipeline.retrain.retrain_seeds`:
    one data load, the seeds packed where the family packs); writes one folder per seed, ``<out_dir>/seed<s>/``,
    with the retrain files plus ``item.json`` (the item with that ``seed`` and the id ``<id>-seed<s>``).

    ``test_origins`` R > 1 adds the rolling-origin test (0: one origin per quarter of test days; 1: none); the item's
    ``n_trials`` deflates the Sharpe ratio. Returns each seed's scalar results for the step's metrics. Loop items
    pass through protobuf, so numbers may arrive as floats: they are cast back here.

    With a tracking URI (``tracking_uri``, else ``$MLFLOW_TRACKING_URI``) each seed's MLflow run is opened before
    training, in ``mlflow_experiment`` (else ``$MLFLOW_EXPERIMENT_NAME``, else the item's experiment): each epoch's
    metrics appear as the epoch ends (each seed's own, while the seeds train together), then the test metrics,
    ``evaluation.json``, ``forecasts.csv`` and the model; ``item.json`` records the run, which :func:`register`
    nests under the pipeline's parent run. A tracking failure costs the live run (one warning), never the retrain:
    :func:`register` then logs the retrain afresh.
    """
    out = Path(out_dir)
    report_progress = reporter(on_progress)
    report_progress(StepProgress("retrain", item=str(item["id"])))
    seeds = [int(s) for s in item["seeds"]]
    common = {k: v for k, v in item.items() if k != "seeds"}
    common.update({k: int(item[k]) for k in ("rank", "n_trials", "n_eligible")})
    per_seed = {s: {**common, "id": f"{item['id']}-seed{s}", "seed": s} for s in seeds}
    args = retrain.retrain_args(
        list(item["flags"]), data=data_spec(data_dir), cache_dir="", output_dir=str(out), eval_test=True
    )
    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if tracking_uri is None else tracking_uri
    experiment = _mlflow_experiment(mlflow_experiment, str(item["experiment"]))
    parent = _same_parent(item.get("mlflow_parent"), uri, experiment) if uri else None
    params = {s: records.run_params(asdict(replace(args, seed=s)), data_dir) for s in seeds}
    live = {
        s: _open_retrain_run(uri, experiment, per_seed[s], params[s], data_dir, parent) if uri else None for s in seeds
    }
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
        scalars = records.scalar_results(seed_item, report)
        if run is not None:
            try:
                model_uri = run.finish(
                    metrics={**scalars, "epochs_run": float(report["run"]["epochs"])},
                    dicts={"evaluation.json": report},
                    artifacts=[folder / "forecasts.csv"],
                    model=retrain.load_model(folder),
                    input_example=np.load(folder / "input_example.npy"),
                    code_path=records.package_copy(),
                    requirements=records.model_requirements(),
                    forecaster=_forecaster(folder),
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
        records.write_json(folder / "item.json", seed_item)
        results[seed] = scalars
    return results


def _forecaster(folder: Path) -> tuple[Any, dict[str, str]] | None:
    """The retrain in ``folder`` as a pyfunc that takes raw prices (:mod:`.serving`); None for a folder written
    before the retrains kept their scalers."""
    if not (folder / retrain.SCALERS).exists():
        return None
    from hpo_lib.pipeline import serving

    return serving.PriceForecaster(), {serving.ARTIFACT: str(folder)}


def _open_retrain_run(
    uri: str,
    experiment: str,
    item: Mapping[str, Any],
    params: Mapping[str, str],
    data_dir: str | Path,
    parent: str | None,
) -> retrain_tracking.RetrainRun | None:
    try:
        retrain_tracking.check_server(uri)
        return retrain_tracking.RetrainRun.open(
            uri,
            experiment_name=experiment,
            name=str(item["id"]),
            tags={**records.retrain_tags(item), **({"mlflow.parentRunId": parent} if parent else {})},
            params=params,
            dataset=records.dataset(data_dir),
        )
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the retrain goes on without a live run
        log.warning("MLflow: no live run for %s (%s); register logs it after the retrains", item["id"], first_line(exc))
        return None


# ----------------------------------------------------------------------------------------------- 5. evaluate
def evaluate(dirs: Sequence[str | Path], *, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """The retrains' test results summarised per winner, the champion and its verdict (:func:`.summary.summarize`)
    from winner or seed folders of :func:`run_retrain`."""
    reporter(on_progress)(StepProgress("evaluate"))
    return summarize(load_retrains(dirs))


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
    reporter(on_progress)(StepProgress("register"))
    model_name = model_name or summary["experiment"]
    experiment = mlflow_experiment or summary["experiment"]
    runs = load_retrains(dirs)
    opened = [_same_parent(r["item"].get("mlflow_parent"), uri, experiment) for r in runs]
    champion_id = summary["champion"]["item"]["id"]
    if summary["beats_bar"] and not any(r["item"]["id"] == champion_id for r in runs):
        raise HpoError(f"the champion {champion_id} is not among the {len(runs)} retrains given to register")
    to_log: list[dict[str, Any]] = []
    for run in runs:
        item, evaluation, folder = run["item"], run["evaluation"], Path(run["dir"])
        champion = item["id"] == champion_id
        logged = item.get("mlflow_tracking_uri") == redact(uri) and item.get("mlflow_experiment") == experiment
        if logged and item.get("mlflow_run_id"):
            to_log.append(
                {
                    "id": item["id"],
                    "champion": champion,
                    "run_id": item["mlflow_run_id"],
                    "model_uri": item["mlflow_model_uri"],
                    "tags": {"hpo.champion": str(champion)},
                }
            )
            continue
        config = records.read_json(folder / "config.json")
        history = records.read_json(folder / "history.json")
        data_dir = Path(config["data"].removeprefix("file:")).parent
        to_log.append(
            {
                "id": item["id"],
                "champion": champion,
                "tags": records.retrain_tags(item, champion_id),
                "params": records.run_params(config, data_dir),
                "dataset": records.dataset(data_dir) if (data_dir / "data.json").exists() else None,
                "curves": [
                    (k, float(v), int(epoch["epoch"])) for epoch in history for k, v in epoch.items() if k != "epoch"
                ],
                "metrics": {
                    **records.scalar_results(item, evaluation),
                    "epochs_run": float(evaluation["run"]["epochs"]),
                },
                "dicts": {"evaluation.json": evaluation},
                "artifacts": [folder / "forecasts.csv"],
                "model": retrain.load_model(folder),
                "input_example": np.load(folder / "input_example.npy"),
                "forecaster": _forecaster(folder),
            }
        )
    parent = {
        "run_id": next((p for p in opened if p), None),  # opened by the winners step: the retrains are under it
        "name": _parent_name(run_name, summary["experiment"]),
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
    return retrain_tracking.log_retrains(
        uri,
        experiment_name=experiment,
        parent=parent,
        runs=to_log,
        register_as=model_name if summary["beats_bar"] else None,
        model_tags={"hpo.trial": summary["champion"]["item"]["trial"], "hpo.experiment": summary["experiment"]},
        code_path=records.package_copy(),
        requirements=records.model_requirements(),
    ) | {"model_name": model_name}
