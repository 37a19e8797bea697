"""Manifests: rendered from code, drift-checked, loadable by Katib's API models and kustomize, and runnable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubeflow_katib_api.models import V1beta1Experiment

from hpo_lib import cli, metrics
from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract, experiment, lint, manifests, space

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
EXPERIMENTS = [MANIFESTS / f"{family}-experiment.yaml" for family in space.FAMILIES]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_committed_manifests_match_the_code(capsys):
    # `hpo manifests check` passes on the committed tree
    assert cli.main(["manifests", "check", f"--root={MANIFESTS}"]) == 0


def test_check_names_a_drifted_file_and_render_fixes_it(tmp_path, capsys):
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    path = copy / "gru-experiment.yaml"
    path.write_text(path.read_text().replace("maxTrialCount: 40", "maxTrialCount: 41"))
    (copy / "cluster" / "role.yaml").unlink()
    # a hand edit and a missing file are both reported, by name, with exit code 1
    assert cli.main(["manifests", "check", f"--root={copy}"]) == 1
    err = capsys.readouterr().err
    # both problems are named on stderr; rendering fixes them and check passes again
    assert "gru-experiment.yaml" in err and "cluster/role.yaml" in err
    assert cli.main(["manifests", "render", f"--root={copy}"]) == 0
    assert cli.main(["manifests", "check", f"--root={copy}"]) == 0


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiments_load_into_katib_api_models(path):
    doc = load(path)
    model = V1beta1Experiment.from_dict(doc)
    # the typed model keeps every field we wrote (nothing silently dropped)
    assert model.to_dict()["spec"].keys() == doc["spec"].keys()
    # Katib's name rule: starts with a letter, at most 40 characters
    assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 40
    spec = doc["spec"]
    # multivariate TPE searches and medianstop stops
    assert spec["algorithm"]["algorithmName"] == "multivariate-tpe"
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    # every metric has an explicit strategy (Katib's default would extract "min" for all of them)
    assert {m["name"] for m in spec["objective"]["metricStrategies"]} == \
        {spec["objective"]["objectiveMetricName"], *spec["objective"]["additionalMetricNames"]}


def test_namespace_enables_metrics_injection_and_rbac_is_least_privilege():
    labels = load(MANIFESTS / "cluster" / "namespace.yaml")["metadata"]["labels"]
    # the namespace lets Katib inject its metrics collector
    assert labels["katib.kubeflow.org/metrics-collector-injection"] == "enabled"
    rules = load(MANIFESTS / "cluster" / "role.yaml")["rules"]
    # experiments: create/get/list/watch/delete; trials: read only; nothing else
    assert rules == [
        {"apiGroups": ["kubeflow.org"], "resources": ["experiments"],
         "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": ["kubeflow.org"], "resources": ["trials"], "verbs": ["get", "list", "watch"]},
    ]


def test_substitution_matches_katib_and_names_missing_values():
    spec = {"args": ["--lr=${trialParameters.lr}", "--x=${trialParameters.other}"]}
    params = [{"name": "lr", "reference": "lr"}, {"name": "other", "reference": "x"}]
    # placeholders are replaced through each trialParameter's reference; a missing value is named
    assert contract.substitute_trial_parameters(spec, params, {"lr": "0.1", "x": "7"}) == {
        "args": ["--lr=0.1", "--x=7"]}
    with pytest.raises(ConfigError, match="references 'x', which has no value"):
        contract.substitute_trial_parameters(spec, params, {"lr": "0.1"})


def _trial_argv(path: Path, tmp_path: Path) -> tuple[list[str], dict, list[str]]:
    """The manifest's exact command and args with sample values substituted, pointed at local data.

    Each parameter takes its list's first choice or its range's lower bound, except the batch size: its largest
    choice, the fewest steps per epoch (as the image's test does), since every value is a valid assignment.
    """
    doc = load(path)
    assignments = {p["name"]: (p["feasibleSpace"].get("list") or [p["feasibleSpace"]["min"]])[0]
                   for p in doc["spec"]["parameters"]}
    batches = next((p["feasibleSpace"].get("list") for p in doc["spec"]["parameters"] if p["name"] == "batch-size"),
                   None)
    if batches:
        assignments["batch-size"] = max(batches, key=int)
    local = {"data": "sample:sp500", "epochs": "2", "output-dir": str(tmp_path), "cache-dir": str(tmp_path)}
    command = experiment.trial_command(doc, assignments, local)
    argv = [shutil.which(command.argv[0], path=os.path.dirname(sys.executable)), *command.argv[1:]]
    env = {**os.environ, **{k: v for k, v in command.env.items() if k != "HOME"}}
    return argv, env, experiment.collected_metrics(doc)


@pytest.mark.e2e
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_manifest_trial_command_runs_and_reports_every_metric(path, tmp_path):
    argv, env, names = _trial_argv(path, tmp_path)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    # the trial command exits 0 and prints one line per epoch
    assert proc.returncode == 0, proc.stderr[-2000:]
    epoch_lines = [line for line in proc.stdout.splitlines() if " epoch=" in line]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        stamp, values = contract.parse_metrics_line(line, names)
        # Katib's StdOut filter finds the objective and every additional metric, with a real timestamp
        assert set(values) == set(names) and all(values.values())
        assert stamp != contract.ZERO_TIME


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
def test_kustomize_builds_each_part_on_its_own_and_overrides_the_trial_image(tmp_path):
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    parts = {".": None, **{f"experiments/{name}": name for name in manifests.experiments()}}
    for part in parts:
        kustomization = copy / part / "kustomization.yaml"
        text = kustomization.read_text().replace(f"newTag: {manifests.IMAGE_TAG}",
                                                 "newName: registry.example/hpo\n  newTag: '9.9'")
        kustomization.write_text(text)
    built = {}
    for part in parts:
        out = subprocess.run(["kubectl", "kustomize", str(copy / part)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        built[part] = list(yaml.safe_load_all(out.stdout))
    # `kubectl apply -k manifests/` is the cluster resources only: it starts no experiment
    assert sorted(d["kind"] for d in built["."]) == sorted(
        ["Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Job", "NetworkPolicy"])
    # each experiment folder is exactly its one Experiment, the one the flat <name>-experiment.yaml shows
    for part, name in parts.items():
        if name is not None:
            assert [d["kind"] for d in built[part]] == ["Experiment"]
            assert built[part][0]["metadata"]["name"] == load(MANIFESTS / f"{name}-experiment.yaml")["metadata"]["name"]
    images = []
    for docs in built.values():
        for doc in docs:
            job = doc["spec"]["trialTemplate"]["trialSpec"] if doc["kind"] == "Experiment" else doc
            if job["kind"] == "Job":
                images += [c["image"] for c in job["spec"]["template"]["spec"]["containers"]]
    # kustomize's images: reaches the trial containers nested inside the Experiments and the data-prep Job
    assert len(images) == len(parts) and set(images) == {"registry.example/hpo:9.9"}


def test_flat_experiment_files_are_links_to_the_experiment_folders():
    for rel, target in manifests.links().items():
        # `kubectl apply -f manifests/<name>-experiment.yaml` and `hpo tune` read the folder's one file
        assert (MANIFESTS / rel).is_symlink() and (MANIFESTS / rel).resolve() == (MANIFESTS / target).resolve()


@pytest.mark.parametrize("name", list(manifests.experiments()))
def test_trial_pods_are_kept_with_a_way_to_read_a_failed_trials_log(name):
    path = MANIFESTS / f"{name}-experiment.yaml"
    # retain: true keeps a failed trial's pod and its log, and the file says how to read it
    assert load(path)["spec"]["trialTemplate"]["retain"] is True
    assert "kubectl -n katib-hpo logs -l katib.kubeflow.org/trial=<trial> -c metrics-logger-and-collector" in \
        path.read_text()


def test_pareto_experiment_and_its_overlay_validate_and_register_the_service():
    path = MANIFESTS / "cnn-lstm-pareto-experiment.yaml"
    namespace = load(MANIFESTS / "cluster" / "namespace.yaml")
    findings = lint.validate_experiment(load(path), namespace_labels=namespace["metadata"]["labels"],
                                        printed_metrics=metrics.epoch_metrics("return", robust=True))
    # the multi-objective experiment passes every offline rule, its algorithm's settings included
    assert findings == []
    config = yaml.safe_load(load(MANIFESTS / "overlays" / "katib-hpo-multiobjective" / "katib-config.yaml")
                            ["data"]["katib-config.yaml"])
    (entry,) = [s for s in config["runtime"]["suggestions"] if s["algorithmName"] == manifests.ALGORITHM]
    # the overlay registers the algorithm with the service command, no port of its own (Katib adds 6789)
    assert entry["command"] == ["hpo", "katib", "suggestion-service", "--port=6789"] and "ports" not in entry
    # hardened: non-root, no privilege escalation, read-only root, no capabilities, limits set
    security = entry["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == manifests.UID
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]} and entry["resources"]["limits"]["memory"]
    # Katib's own algorithms are all still there, tpe still on Hyperopt (this overlay changes nothing else)
    names = [s["algorithmName"] for s in config["runtime"]["suggestions"]]
    assert set(contract.SUGGESTION_SERVICES) <= set(names)
    assert [s["image"] for s in config["runtime"]["suggestions"] if s["algorithmName"] == "tpe"] == [
        f"ghcr.io/kubeflow/katib/suggestion-hyperopt:{manifests.KATIB_VERSION}"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_committed_experiments_pass_offline_validation(path):
    namespace = load(MANIFESTS / "cluster" / "namespace.yaml")
    findings = lint.validate_experiment(load(path), namespace_labels=namespace["metadata"]["labels"],
                                              printed_metrics=metrics.epoch_metrics("return", robust=True))
    # no error and no warning: every Katib rule holds and the trial prints every metric the experiment collects
    assert findings == []


def test_validate_command_reports_rules_and_exit_code(tmp_path, capsys):
    doc = load(EXPERIMENTS[0])
    doc["spec"]["parallelTrialCount"] = 50
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"].append(
        "--data=yahoo:SPY?start=2020-01-01&end=2021-01-01")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    # the committed manifest is valid (exit 0); the broken one is INVALID (exit 1)
    assert cli.main(["manifests", "validate", str(EXPERIMENTS[0])]) == 0
    assert cli.main(["manifests", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    # the budget rule and the shell-safety rule are named
    assert "W-CNT" in out and "S-SHELL" in out and "INVALID" in out


@pytest.mark.parametrize("overlay", ["optuna-tpe", "katib-hpo-multiobjective"])
def test_the_katib_config_overlays_write_only_fields_katibs_config_types_read(overlay):
    from kubernetes.client import V1Container

    # katib pkg/apis/config/v1beta1/types.go:101-126: a suggestion is a corev1.Container inline plus five fields;
    # early stopping and metrics collectors have no securityContext, and Katib's decoder drops unknown fields
    container = set(V1Container.attribute_map.values())
    fields = {
        "suggestions": container | {"algorithmName", "serviceAccountName", "volumeMountPath",
                                    "persistentVolumeClaimSpec", "persistentVolumeSpec", "persistentVolumeLabels"},
        "earlyStoppings": {"algorithmName", "image", "imagePullPolicy", "resources"},
        "metricsCollectors": {"kind", "image", "imagePullPolicy", "resources", "waitAllProcesses"},
    }
    path = MANIFESTS / "overlays" / overlay / "katib-config.yaml"
    config = yaml.safe_load(load(path)["data"]["katib-config.yaml"])
    for section, known in fields.items():
        for entry in config["runtime"][section]:
            assert set(entry) <= known, (section, set(entry) - known)
    # the suggestions are hardened where Katib reads it; what it cannot harden is said in the file
    assert all("securityContext" in s for s in config["runtime"]["suggestions"])
    assert "cannot harden metrics collectors or early stopping" in path.read_text()
