"""The KFP v2 pipeline: prepare data -> tune on Katib -> pick winners -> retrain them on GPUs -> evaluate -> register.

Every component is a lightweight component on the trial image (which has ``hpo_lib`` and ``kfp`` installed), so
nothing is pip-installed at run time; each body imports :mod:`hpo_lib.pipeline.steps` (and the renderers of
:mod:`hpo_lib.results`) and calls one step, which is where the work and its tests live. The pipeline's parameters
default to :data:`hpo_lib.pipeline.settings.CLUSTER`. The same components run on a cluster and under
``kfp.local.SubprocessRunner(use_venv=False)`` (``hpo pipeline run-local``, :mod:`hpo_lib.pipeline.local`).

It lives in the package, so an installed ``hpo`` compiles and runs it without a checkout; ``pipelines/katib_hpo.py``
re-exports it for those who compile from one. ``hpo pipeline compile`` (or ``python pipelines/katib_hpo.py``) writes
the committed ``pipelines/katib_hpo_pipeline.yaml``; a test fails when it is stale.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from hpo_lib.errors import ConfigError
from hpo_lib.katib import manifests
from hpo_lib.pipeline.settings import CLUSTER

IMAGE = f"{manifests.IMAGE}:{manifests.IMAGE_TAG}"
COMPILED_NAME = "katib_hpo_pipeline.yaml"
GPU = "nvidia.com/gpu"


def _component(func):
    return dsl.component(func, base_image=IMAGE, install_kfp_package=False)


@_component
def prepare_data(data: str, dataset: Output[Dataset]):
    """Load the market data once (yahoo through its cache) into a Parquet Dataset for every retrain."""
    from hpo_lib.pipeline import steps

    dataset.metadata.update(steps.prepare_data(data, dataset.path))


@_component
def tune(
    data: str,
    tune_mode: str,
    model_family: str,
    experiment_yaml: str,
    experiment_name: str,
    namespace: str,
    trials_export: str,
    timeout_s: int,
    poll_s: float,
    trials: Output[Artifact],
):
    """Launch (or read) the Katib Experiment, wait for it, and save every Trial CR before anything else."""
    from hpo_lib.pipeline import steps

    summary = steps.tune(
        trials.path,
        mode=tune_mode,
        data=data,
        experiment_yaml=experiment_yaml,
        model_family=model_family,
        experiment_name=experiment_name,
        namespace=namespace,
        trials_export=trials_export,
        timeout_s=timeout_s,
        poll_s=poll_s,
    )
    trials.metadata.update({k: summary[k] for k in ("experiment", "namespace", "state", "n_trials", "progress")})


@_component
def select_winners(
    trials: Input[Artifact],
    top_k: int,
    pareto: bool,
    max_winners: int,
    include_early_stopped: bool,
    seeds: int,
    epochs: int,
    retrain_flags: str,
    tracking_uri: str,
    mlflow_experiment: str,
    run_name: str,
    selection: Output[Artifact],
    leaderboard: Output[Markdown],
) -> list[dict]:
    """Top-k by the objective plus the Pareto front; one retrain item per winner, with its seeds. With a tracking
    URI (the argument, else $MLFLOW_TRACKING_URI) the MLflow parent run opens here: retrains nest from their start."""
    import shutil

    from hpo_lib.pipeline import steps

    items = steps.select_winners(
        trials.path,
        selection.path,
        top_k=top_k,
        pareto=pareto,
        max_winners=max_winners,
        include_early_stopped=include_early_stopped,
        seeds=seeds,
        epochs=epochs,
        retrain_flags=retrain_flags,
        tracking_uri=tracking_uri or None,
        mlflow_experiment=mlflow_experiment,
        run_name=run_name,
    )
    leaderboard.uri += ".md"  # opens as Markdown, not as a file without an extension
    shutil.copyfile(f"{selection.path}/leaderboard.md", leaderboard.path)
    return items


@_component
def retrain(
    item: dict,
    dataset: Input[Dataset],
    cost_bps: float,
    test_origins: int,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Retrain one winner with all its seeds in one process (packed where the family packs) on train + validation,
    one folder per seed; score the held-out test split once, and refit it at ``test_origins`` origins through the
    test period for the rolling-origin test (0: quarterly; 1: none)."""
    from hpo_lib.pipeline import steps

    by_seed = steps.run_retrain(item, dataset.path, model.path, cost_bps=cost_bps, test_origins=test_origins)
    for seed, values in by_seed.items():
        for name, value in values.items():
            metrics.log_metric(f"seed{seed}_{name}", value)
    model.metadata.update({"trial": item["trial"], "seeds": [int(s) for s in item["seeds"]], "framework": "pytorch"})


@_component
def evaluate(
    models: Input[list[Model]],
    summary: Output[Artifact],
    report: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
):
    """Seeds summarised per winner, the champion (chosen by the tuning objective) and its verdict on test; SPA,
    Reality Check and the Model Confidence Set over the retrains, on the single window and the rolling origins.
    The report is report.md and report.html (with the champion's equity curve and forecasts): named with their
    extensions (the artifact URIs), so that they open as what they are."""
    import json
    import os

    from hpo_lib import fileio
    from hpo_lib.pipeline import steps
    from hpo_lib.results import pipeline_report

    result = steps.evaluate([m.path for m in models])
    os.makedirs(summary.path, exist_ok=True)
    fileio.write_text(os.path.join(summary.path, "summary.json"), json.dumps(result, indent=2, default=str))
    report.uri = report.uri.rsplit("/", 1)[0] + "/report.md"  # KFP (launcher and kfp.local) keeps the new URI
    report_html.uri = report_html.uri.rsplit("/", 1)[0] + "/report.html"
    pipeline_report.write(result, report.path, report_html.path)
    for name, value in result["champion_scalars"].items():
        metrics.log_metric(f"champion_{name}", value)
    for name in ("n_trials", "n_eligible", "n_winners", "n_retrains"):
        metrics.log_metric(name, float(result[name]))
    metrics.log_metric("beats_baselines", float(result["beats_baselines"]))
    summary.metadata.update(
        {"verdict": result["verdict"], "beats_bar": result["beats_bar"], "search_verdict": result["search_verdict"]}
    )


@_component
def register(
    models: Input[list[Model]],
    summary: Input[Artifact],
    tracking_uri: str,
    mlflow_experiment: str,
    model_name: str,
    run_name: str,
    registry: Output[Markdown],
    mlflow_store: Output[Artifact],
):
    """Log every retrain to MLflow; register the champion as <model_name>@champion only if it beats the bar."""
    import json
    import os

    from hpo_lib import fileio
    from hpo_lib.pipeline import steps
    from hpo_lib.results import render, tracking

    with open(os.path.join(summary.path, "summary.json")) as handle:
        result = json.load(handle)
    os.makedirs(mlflow_store.path, exist_ok=True)  # the store itself when no tracking URI is configured
    uri = tracking.tracking_uri(tracking_uri, state_dir=mlflow_store.path)
    logged = steps.register(
        [m.path for m in models],
        result,
        uri=uri,
        mlflow_experiment=mlflow_experiment,
        model_name=model_name,
        run_name=run_name,
    )
    registry.uri += ".md"
    fileio.write_text(registry.path, render.registry_markdown(logged, result))
    mlflow_store.metadata.update({"tracking_uri": uri, "registered_version": logged["registered_version"] or ""})


class Outputs(NamedTuple):
    leaderboard: Markdown
    summary: Artifact
    report: Markdown
    registry: Markdown


@dsl.pipeline(
    name="katib-hpo",
    description="Tune on Katib, retrain the winners on GPUs, evaluate them on a "
    "held-out test split against naive baselines, register the champion.",
)
def katib_hpo(
    image: str = IMAGE,
    data: str = manifests.DATA_SPEC,
    tune_mode: str = "launch",
    model_family: str = CLUSTER.model_family,
    experiment_yaml: str = "",
    experiment_name: str = "",
    namespace: str = "",
    trials_export: str = "",
    timeout_s: int = CLUSTER.timeout_s,
    poll_s: float = CLUSTER.poll_s,
    top_k: int = CLUSTER.top_k,
    pareto: bool = CLUSTER.pareto,
    max_winners: int = CLUSTER.max_winners,
    include_early_stopped: bool = CLUSTER.include_early_stopped,
    seeds: int = CLUSTER.seeds,
    epochs: int = CLUSTER.epochs,
    retrain_flags: str = CLUSTER.retrain_flags,
    cost_bps: float = CLUSTER.cost_bps,
    test_origins: int = CLUSTER.test_origins,
    tracking_uri: str = "",
    mlflow_experiment: str = "",
    model_name: str = "",
) -> Outputs:
    prepared = prepare_data(data=data).set_display_name("prepare data")
    tuned = tune(
        data=data,
        tune_mode=tune_mode,
        model_family=model_family,
        experiment_yaml=experiment_yaml,
        experiment_name=experiment_name,
        namespace=namespace,
        trials_export=trials_export,
        timeout_s=timeout_s,
        poll_s=poll_s,
    ).set_display_name("tune on Katib")
    selected = select_winners(
        trials=tuned.outputs["trials"],
        top_k=top_k,
        pareto=pareto,
        max_winners=max_winners,
        include_early_stopped=include_early_stopped,
        seeds=seeds,
        epochs=epochs,
        retrain_flags=retrain_flags,
        tracking_uri=tracking_uri,
        mlflow_experiment=mlflow_experiment,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    ).set_display_name("select winners")
    with dsl.ParallelFor(selected.outputs["Output"], parallelism=8) as item:
        retrained = retrain(
            item=item, dataset=prepared.outputs["dataset"], cost_bps=cost_bps, test_origins=test_origins
        )
        retrained.set_display_name("retrain winner")
        retrained.set_accelerator_type(GPU).set_accelerator_limit(1)
        retrained.set_cpu_request("2").set_cpu_limit("4").set_memory_request("8Gi").set_memory_limit("16Gi")
        kubernetes.add_toleration(retrained, key=GPU, operator="Exists", effect="NoSchedule")
    evaluated = evaluate(models=dsl.Collected(retrained.outputs["model"])).set_display_name("evaluate on test")
    registered = register(
        models=dsl.Collected(retrained.outputs["model"]),
        summary=evaluated.outputs["summary"],
        tracking_uri=tracking_uri,
        mlflow_experiment=mlflow_experiment,
        model_name=model_name,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    ).set_display_name("register in MLflow")
    for task in (prepared, tuned, selected, retrained, evaluated, registered):
        task.set_caching_options(False)  # an HPO launch or a retrain is never served from cache
        task.set_container_image(image)  # your registry's build of the trial image (KFP backend >= 2.4)
    return Outputs(
        leaderboard=selected.outputs["leaderboard"],
        summary=evaluated.outputs["summary"],
        report=evaluated.outputs["report"],
        registry=registered.outputs["registry"],
    )


def default_output(cwd: str | Path = ".") -> Path:
    """Where ``hpo pipeline compile`` writes by default: ``pipelines/katib_hpo_pipeline.yaml`` in a checkout of the
    repository (``cwd`` holds ``pipelines/katib_hpo.py``: the committed file), else ``katib_hpo_pipeline.yaml``."""
    cwd = Path(cwd)
    pipelines = cwd / "pipelines"
    return pipelines / COMPILED_NAME if (pipelines / "katib_hpo.py").is_file() else cwd / COMPILED_NAME


def compile_pipeline(path: str | Path) -> Path:
    """Write the compiled pipeline YAML to ``path`` (deterministic for a given kfp version and source)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write the compiled pipeline to {path}: it is a folder; give a .yaml file path")
    try:
        compiler.Compiler().compile(katib_hpo, str(path))
    except OSError as exc:
        raise ConfigError(f"cannot write the compiled pipeline to {path}: {exc.strerror or exc}") from None
    return path


def run_local(*, pipeline_root: str | Path, **arguments: Any):
    """Run the pipeline with kfp's local SubprocessRunner in this Python environment; returns the pipeline task.

    GPU, resource and toleration settings have no meaning here and are ignored (kfp warns; the warnings are muted).
    """
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(pipeline_root).resolve()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="kfp.*")
        return katib_hpo(**arguments)
