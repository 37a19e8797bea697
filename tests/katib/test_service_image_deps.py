"""The suggestion image holds the project (--no-deps) and trial_image/suggestion-requirements.txt only: the service
must serve Katib's whole session with every other installed distribution unimportable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "trial_image" / "suggestion-requirements.txt"

# run in a fresh interpreter: a meta-path finder refuses every top-level module that only distributions outside
# the image provide, then a Katib session (validate, first call, history, NSGA-II batch) is served over gRPC
SESSION = r"""
import importlib.abc, importlib.metadata as md, json, sys

allowed = set(json.loads(sys.argv[1]))
owners = md.packages_distributions()
refused = set()

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
        if dists and not dists & allowed:
            refused.add(top)
            raise ImportError(f"{top} ({', '.join(sorted(dists))}) is not in the suggestion image")
        return None

sys.path.insert(0, sys.argv[2])
import pytest  # the test helpers' own scaffolding (test_suggestion's marks), loaded before the refusals start
sys.meta_path.insert(0, Refuse())
from hpo_lib.katib import service
from tests.katib import katib_messages as t
from tests.katib.test_suggestion import spec

running = service.serve(0, host="127.0.0.1")
client = t.Client(running.port)
for sampler in ("tpe", "nsga2"):
    doc = spec()
    doc["algorithm"]["algorithmSettings"] = [s for s in doc["algorithm"]["algorithmSettings"] if s["name"] != "sampler"]
    doc["algorithm"]["algorithmSettings"].append({"name": "sampler", "value": sampler})
    if sampler == "nsga2":
        doc["algorithm"]["algorithmSettings"].append({"name": "population_size", "value": "4"})
    experiment = t.experiment_message(doc)
    assert client.validate(t.pb.ValidateAlgorithmSettingsRequest(experiment=experiment)) is not None
    trials = t.history(client, experiment, 6)
    assert len(client.suggest(experiment, trials, 3)) == 3
running.stop(0)
from hpo_lib import cli  # the pod's command, `hpo katib suggestion-service`, parses with the same refusals
try:
    cli.main(["katib", "suggestion-service", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(refused)))
"""


def requirement_names() -> list[str]:
    lines = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return [re.split(r"[<>=!~;\[ ]", line)[0] for line in lines if line]


def closure(names: list[str]) -> set[str]:
    """The distributions pip installs for ``names``: each one's requirements without extras, transitively."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [n.lower().replace("_", "-") for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):  # this platform, no extras
                todo.append(req.name.lower().replace("_", "-"))
    return seen


def test_every_image_requirement_is_a_declared_dependency_of_the_project():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["suggestion"]
    names = {re.split(r"[<>=!~;\[ ]", d)[0].lower() for d in declared}
    # the image installs nothing the project does not declare (protobuf: kfp's and grpcio-health-checking's)
    assert {n.lower() for n in requirement_names()} - names <= {"protobuf"}


def test_the_service_serves_a_katib_session_with_only_the_images_distributions():
    allowed = closure(requirement_names()) | {"katib-hpo", "kubeflow-katib"}
    # what the trial needs and the service must not: none of it is in the image
    assert not allowed & {"torch", "mlflow", "kfp", "pandas", "scipy", "arch", "yfinance", "pyarrow"}
    proc = subprocess.run([sys.executable, "-c", SESSION, json.dumps(sorted(allowed)), str(ROOT)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    # the whole session ran: nothing the service needs was refused (what it only tries to import may have been)
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(refused, list)
