"""The suggestion service's image, built for real (`trial_image/build.sh suggestion-image`, buildah, the Debian base)
and served from inside it as Katib's suggestion Deployment runs it: the image's entrypoint as a non-root uid of
group 0, dialled over gRPC by the messages Katib's suggestion controller sends.

It answers as the service on the laptop does: the same suggestions for the same Experiment and trials, the same
refusals, the health service Katib's probes ask; and it holds no torch (a few hundred MB, not the trial image's GB).
Needs root, buildah and debootstrap like tests/e2e/test_image_build.py (`.ci/run` installs them); skips otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from hpo_lib.katib import manifests, service, suggestion
from tests.e2e.conftest import BUILD, SUGGESTION_TEST_TAG, buildah, needs_buildah
from tests.katib.katib_messages import Client, experiment_message, history, pb, trial_message
from tests.katib.test_suggestion import spec

TAG = SUGGESTION_TEST_TAG  # never replaces the image `make suggestion-image` built for pushing
MAX_SIZE_MB = 600  # measured 337 MB on 3 December 2026; the GPU trial image is 6.2 GB

pytestmark = [pytest.mark.e2e, pytest.mark.image, needs_buildah]


@pytest.fixture(scope="module")
def container(suggestion_image, image_container) -> str:
    """A working container of the image, built once per run (tests/e2e/conftest.py)."""
    return image_container(suggestion_image)


@pytest.fixture(scope="module")
def served(container):
    """The image's own entrypoint (`hpo katib suggestion-service`), as an arbitrary uid of group 0, on a free port;
    the container shares this machine's network (buildah's chroot isolation), so the test dials 127.0.0.1."""
    entrypoint = buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Config.Entrypoint}}", TAG).stdout
    assert entrypoint.strip() == "[hpo katib suggestion-service]"
    process = subprocess.Popen([str(BUILD), "buildah", "run", "--user", "12345:0", container, "--",
                                "hpo", "katib", "suggestion-service", "--port=0", "--host=127.0.0.1"],
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = process.stderr.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert found, f"the service did not start in the image: {line}{process.stderr.read()[-2000:]}"
        yield Client(int(found.group(1)))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_image_is_the_service_without_torch(container):
    images = buildah("images", "--format", "{{.Name}}:{{.Tag}} {{.Size}}").stdout
    line = next(row.strip() for row in images.splitlines() if row.startswith(TAG + " "))
    value, unit = re.search(r"([\d.]+) (kB|MB|GB)$", line).groups()
    assert float(value) * {"kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit] < MAX_SIZE_MB, line
    user = buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", TAG).stdout.strip()
    assert user == str(manifests.UID)
    probe = subprocess.run([str(BUILD), "buildah", "run", "--user", f"{manifests.UID}:0", container, "--", "python3",
                            "-c", "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('mlflow'))"],
                           capture_output=True, text=True, timeout=300)
    # nothing of the trainer: no torch, no MLflow
    assert probe.returncode == 0 and probe.stdout.split() == ["None", "None"], probe.stderr[-2000:]


def test_the_image_answers_katibs_session_as_the_laptops_service_does(served):
    check = served.health.Check(health_pb2.HealthCheckRequest(service=service.HEALTH_SERVICE), timeout=30)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    laptop = service.serve(0, host="127.0.0.1")
    try:
        local = Client(laptop.port)
        for sampler in suggestion.SAMPLERS:
            doc = spec(sampler=sampler)
            if sampler == "nsga2":
                doc["algorithm"]["algorithmSettings"].append({"name": "population_size", "value": "4"})
            experiment = experiment_message(doc)
            assert served.validate(pb.ValidateAlgorithmSettingsRequest(experiment=experiment), timeout=60) == \
                pb.ValidateAlgorithmSettingsReply()
            # first call with no trials (two parallel trials), then a history the image itself proposed
            assert served.suggest(experiment, [], 2) == local.suggest(experiment, [], 2)
            started = time.monotonic()
            trials = history(served, experiment, 8)
            trials.append(trial_message("t-failed", {a.name: a.value for a in
                                                     trials[0].spec.parameter_assignments.assignments}, "Failed"))
            # the image and the laptop propose the same batch from the same trials
            assert served.suggest(experiment, trials, 3) == local.suggest(experiment, trials, 3), sampler
            assert time.monotonic() - started < 120
    finally:
        laptop.stop(0)


def test_the_image_refuses_a_bad_setting_with_the_laptops_message(served):
    doc = spec(sampler="cmaes")
    with pytest.raises(grpc.RpcError) as caught:
        served.validate(pb.ValidateAlgorithmSettingsRequest(experiment=experiment_message(doc)), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "; ".join(suggestion.spec_problems(doc))
