"""katib-hpo-multiobjective end to end: `hpo tune` proposes what the service proposes; the service as a process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.engine import sampling
from hpo_lib.engine.katib_view import TOLD_ATTR
from hpo_lib.katib import experiment, suggestion
from tests.conftest import manifest, options, states

ALGORITHM = {"algorithmName": suggestion.ALGORITHM, "algorithmSettings": [
    {"name": "objectives", "value": "val_loss:minimize, val_rmse:maximize"},
    {"name": "random_state", "value": "11"}, {"name": "n_startup_trials", "value": "2"}]}
PARAMETERS = [
    {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0.0", "max": "1.0", "distribution": "uniform"}},
]


@pytest.mark.e2e
def test_hpo_tune_runs_each_trial_with_the_services_proposal(tmp_path):
    path = manifest(tmp_path, algorithm=ALGORITHM, parameters=PARAMETERS, maxTrialCount=5)
    study = engine.run(path, options(tmp_path, curves="3,2,1,4,2"))
    # a two-objective study driven by the service's code path; Katib's medianstop stops the level-4 trial
    assert len(study.directions) == 2 and isinstance(study.sampler.inner, sampling.KatibSuggestions)
    assert states(study) == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE]
    setup, _ = suggestion.setup_from_spec(experiment.load_experiment(path)["spec"])
    trials = study.get_trials()
    for k, trial in enumerate(trials):
        seen = [suggestion.TrialRecord({"x": suggestion.as_text(t.params["x"])},
                                       "EarlyStopped" if t.state == TrialState.PRUNED else "Succeeded",
                                       t.user_attrs[TOLD_ATTR] if t.state == TrialState.PRUNED else t.values)
                for t in trials[:k]]
        # trial k ran with exactly what the service answers Katib for the k trials before it (the early-stopped
        # one told with its observed values, as Katib's controller sends it)
        assert suggestion.propose(setup, seen, 1) == [{"x": suggestion.as_text(trial.params["x"])}]


@pytest.mark.e2e
def test_the_suggestion_service_command_serves_until_sigterm(tmp_path):
    hpo = str(Path(sys.executable).parent / "hpo")
    process = subprocess.Popen([hpo, "katib", "suggestion-service", "--port=0", "--host=127.0.0.1"],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = process.stderr.readline()
        # one line says where it listens
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="manager.v1beta1.Suggestion"), timeout=30)
        # Kubernetes' gRPC probe on Katib's service name gets SERVING
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
        process.send_signal(signal.SIGTERM)
        # the pod's stop ends it cleanly, exit code 0, nothing else on stderr
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
