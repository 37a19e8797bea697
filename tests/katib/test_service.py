"""The Suggestion gRPC service on a local port, driven with the messages Katib's suggestion controller sends."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import optuna
import pytest
from grpc_health.v1 import health_pb2

from hpo_lib import limits
from hpo_lib.engine import sampling
from hpo_lib.engine.katib_view import TOLD_ATTR, KatibTells
from hpo_lib.errors import ConfigError
from hpo_lib.katib import service, space, suggestion
from tests.katib.katib_messages import (
    CONDITION,
    TYPES,
    Client,
    experiment_message,
    history,
    observed,
    pb,
    trial_message,
)
from tests.katib.test_suggestion import PARAMETERS, assert_feasible, spec


@pytest.fixture
def server():
    running = service.serve(0, host="127.0.0.1")
    yield running
    running.stop(0)


def test_katib_controller_session_first_call_history_batch_and_restart():
    running = service.serve(0, host="127.0.0.1")
    client = Client(running.port)
    experiment = experiment_message(spec())
    # the controller validates once, before the first trial: accepted (an empty reply, status OK)
    assert client.validate(pb.ValidateAlgorithmSettingsRequest(experiment=experiment)) == \
        pb.ValidateAlgorithmSettingsReply()
    # the probes' service name answers SERVING
    check = client.health.Check(health_pb2.HealthCheckRequest(service=service.HEALTH_SERVICE))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    # first call, no trials: two suggestions (parallelTrialCount 2), distinct and feasible
    first = client.suggest(experiment, [], 2)
    assert len(first) == 2 and first[0] != first[1]
    for assignment in first:
        assert_feasible(assignment)
    trials = history(client, experiment, 12)
    trials.append(trial_message("t-failed", first_assignment(trials[0]), "Failed"))
    trials.append(trial_message("t-running", first[1], "Running"))
    # finished trials of three objectives, a failed and a running one: a batch of three, inside the space
    batch = client.suggest(experiment, trials, 3)
    assert len(batch) == 3 and len({tuple(sorted(a.items())) for a in batch}) == 3
    for assignment in batch:
        assert_feasible(assignment)
    running.stop(0)
    # the pod restarts: a fresh process answers the same request with the same suggestions (nothing was in memory)
    restarted = service.serve(0, host="127.0.0.1")
    try:
        assert Client(restarted.port).suggest(experiment, trials, 3) == batch
    finally:
        restarted.stop(0)


@pytest.mark.parametrize("settings", [
    {"sampler": "cmaes"}, {"random_state": "-1"}, {"n_startup_trials": "x"}, {"n_ei_candidates": "0"},
    {"sampler": "nsga2", "population_size": "1"}, {"sampler": "nsga2", "crossover_prob": "2"},
    {"sampler": "nsga2", "mutation_prob": "-1"}, {"sampler": "nsga2", "swapping_prob": "a"},
    {"population_size": "8"}, {"seed": "1"}, {"objectives": ""}, {"objectives": "val_loss:maximize"},
    {"objectives": "val_loss:minimize, n_params:minimize"},
])
def test_every_invalid_setting_fails_validation_with_its_message(server, settings):
    client = Client(server.port)
    experiment = experiment_message(spec(**settings))
    with pytest.raises(grpc.RpcError) as caught:
        client.validate(pb.ValidateAlgorithmSettingsRequest(experiment=experiment))
    # INVALID_ARGUMENT: the controller marks the Experiment Failed and shows this message in its status
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "; ".join(suggestion.spec_problems(spec(**settings)))
    # GetSuggestions refuses the same settings the same way (it never proposes from a spec it would refuse)
    with pytest.raises(grpc.RpcError) as again:
        client.suggest(experiment, [], 1)
    assert again.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_another_algorithm_name_is_refused(server):
    doc_spec = spec()
    doc_spec["algorithm"]["algorithmName"] = "tpe"
    with pytest.raises(grpc.RpcError) as caught:
        Client(server.port).validate(pb.ValidateAlgorithmSettingsRequest(experiment=experiment_message(doc_spec)))
    # Katib's own wording: unknown algorithm name, and which one this service serves
    assert "unknown algorithm name tpe" in caught.value.details()


def test_a_port_that_is_taken_is_named(server):
    # a second server on the same port: one line naming the address, no traceback
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        service.serve(server.port, host="127.0.0.1")


@pytest.mark.parametrize("sampler", suggestion.SAMPLERS)
def test_laptop_and_cluster_propose_the_same_configurations(server, sampler):
    doc_spec = spec(sampler=sampler)
    if sampler == "nsga2":
        doc_spec["algorithm"]["algorithmSettings"].append({"name": "population_size", "value": "4"})
    client = Client(server.port)
    experiment = experiment_message(doc_spec)
    trials = history(client, experiment, 11)
    failed = trial_message("t-failed", first_assignment(trials[3]), "Failed")
    stopped = trial_message("t-stopped", client.suggest(experiment, trials, 1)[0], "EarlyStopped", observed(40))
    cluster = client.suggest(experiment, [*trials, failed, stopped], 2)

    # the laptop: the engine's study holds the same trials in its own states, its sampler is the manifest's
    distributions = {p["name"]: space.from_katib_parameter(p) for p in PARAMETERS}
    goals = ["val_loss", "train_time_s", "val_dir_acc"]
    study = optuna.create_study(directions=["minimize", "minimize", "maximize"],
                                sampler=KatibTells(sampling.make_sampler(doc_spec["algorithm"], distributions, 40)))
    for message in [*trials, failed, stopped]:
        assignments = {a.name: a.value for a in message.spec.parameter_assignments.assignments}
        params = suggestion.parse_assignments(suggestion.Setup(distributions, [], suggestion.Sampler()), assignments)
        metrics = {m.name: float(m.value) for m in message.status.observation.metrics}
        state = {CONDITION["Succeeded"]: "COMPLETE", CONDITION["Failed"]: "FAIL",
                 CONDITION["EarlyStopped"]: "PRUNED"}[message.status.condition]
        values = [metrics[g] for g in goals] if state == "COMPLETE" else None
        attrs = {TOLD_ATTR: [metrics[g] for g in goals]} if state == "PRUNED" else {}
        study.add_trial(optuna.trial.create_trial(state=getattr(optuna.trial.TrialState, state), params=params,
                                                  distributions=distributions, values=values, user_attrs=attrs))
    laptop = []
    for _ in range(2):  # the engine asks one trial at a time; the first is running when it asks the second
        trial = study.ask(copy.deepcopy(distributions))
        laptop.append({name: suggestion.as_text(trial.params[name]) for name in distributions})
    # the same finished, failed and early-stopped trials: the same next two configurations on both paths
    assert laptop == cluster


def first_assignment(message) -> dict[str, str]:
    return {a.name: a.value for a in message.spec.parameter_assignments.assignments}


# ----------------------------------------------------------------------------------------------- hostile requests
def _request(experiment, count: int, trials=()) -> object:
    return pb.GetSuggestionsRequest(experiment=experiment, trials=list(trials), current_request_number=count,
                                    total_request_number=len(trials) + count)


def _serving(client: Client, timeout: float = 1.0) -> bool:
    check = client.health.Check(health_pb2.HealthCheckRequest(service=service.HEALTH_SERVICE), timeout=timeout)
    return check.status == health_pb2.HealthCheckResponse.SERVING


def test_a_flood_of_huge_requests_is_refused_at_once_and_a_normal_request_answers_within_a_second(server):
    client = Client(server.port)
    experiment = experiment_message(spec())
    huge = [2**31 - 1] + [10**6] * 6
    with ThreadPoolExecutor(len(huge)) as pool:
        caught = list(pool.map(lambda n: _error(lambda: client.get(_request(experiment, n), timeout=10)), huge))
    for error in caught:  # each refused in one line naming the field and the cap, not computed
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("current_request_number is ")
        assert "over the limit of 1,000 suggestions" in error.details()
        assert "HPO_LIMIT_SUGGESTIONS_PER_REQUEST" in error.details()
    assert _serving(client)
    start = time.monotonic()
    assert len(client.suggest(experiment, history(client, experiment, 0), 2)) == 2
    assert time.monotonic() - start < 1.0


def test_a_request_past_its_time_budget_stops_and_others_are_served_meanwhile(server, monkeypatch):
    monkeypatch.setenv(limits.SUGGESTION_BUDGET_S.env, "1")
    client = Client(server.port)
    experiment = experiment_message(spec())
    trials = history(client, experiment, 3)
    with ThreadPoolExecutor(6) as pool:  # six requests for the cap each: more than the service computes at once
        heavy = [pool.submit(_error, lambda: client.get(_request(experiment, 1000, trials), timeout=30))
                 for _ in range(6)]
        time.sleep(0.3)
        # meanwhile the probes answer, and a normal request waits at most for a slot's budget, not for the flood
        assert _serving(client)
        start = time.monotonic()
        assert len(client.suggest(experiment, trials, 1)) == 1
        assert time.monotonic() - start < 4.0
        errors = [f.result() for f in heavy]
    for error in errors:
        assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
    stopped = [e for e in errors if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED]
    assert stopped and "over the limit of 1 seconds" in stopped[0].details()
    assert limits.SUGGESTION_BUDGET_S.env in stopped[0].details()


def _parameter_message(name: str, kind: int, **space) -> object:
    return pb.ParameterSpec(name=name, parameter_type=kind, feasible_space=pb.FeasibleSpace(**space))


@pytest.mark.parametrize(("parameter", "words"), [
    (_parameter_message("opt", TYPES["categorical"], list=[]), "parameter opt: a categorical needs a non-empty"),
    (_parameter_message("lr", TYPES["double"], min="0.1", max="0.01"), "parameter lr: bad feasibleSpace"),
    (_parameter_message("units", TYPES["int"], min="64", max="16"), "parameter units: bad feasibleSpace"),
    (_parameter_message("kind", 0, min="1", max="2"), "parameter kind: unknown parameterType 'unknown'"),
    (_parameter_message("x", TYPES["double"], min="nan", max="1"), "parameter x: feasibleSpace min and max must be"),
    (_parameter_message("y", TYPES["double"], min="0", max="inf"), "parameter y: feasibleSpace min and max must be"),
    (_parameter_message("z", TYPES["int"], min="a", max="2"), "parameter z: bad feasibleSpace"),
    (_parameter_message("lr", TYPES["double"], min="0", max="1"), "parameter name 'lr' is used 2 times"),
    (_parameter_message("", TYPES["double"], min="0", max="1"), "a double parameter has no name"),
    (_parameter_message("c", TYPES["discrete"], list=["1", "1"]), "parameter c: feasibleSpace.list holds 1 more"),
    (_parameter_message("big", TYPES["categorical"], list=[str(i) for i in range(10_001)]),
     "parameter big's feasibleSpace.list is 10,001 values, over the limit of 10,000 values"),
])
def test_every_malformed_parameter_is_invalid_argument_naming_it(server, parameter, words):
    client = Client(server.port)
    experiment = experiment_message(spec())
    experiment.spec.parameter_specs.parameters.append(parameter)
    for call in (lambda: client.validate(pb.ValidateAlgorithmSettingsRequest(experiment=experiment), timeout=10),
                 lambda: client.get(_request(experiment, 1), timeout=10)):
        error = _error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in error.details()
        assert "Traceback" not in error.details()


def test_sigterm_ends_a_busy_service_within_a_five_second_grace_period(tmp_path):
    env = {**os.environ, limits.SUGGESTION_BUDGET_S.env: "120"}
    child = subprocess.Popen([sys.executable, "-m", "hpo_lib.cli", "katib", "suggestion-service", "--port", "0",
                              "--host", "127.0.0.1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stderr.readline()
        assert "listening on" in line, line
        client = Client(int(line.rsplit(":", 1)[1]))
        experiment = experiment_message(spec())
        trials = history(client, experiment, 3)
        busy = ThreadPoolExecutor(2)
        calls = [busy.submit(_error, lambda: client.get(_request(experiment, 1000, trials), timeout=60))
                 for _ in range(2)]
        time.sleep(1.0)
        assert not any(c.done() for c in calls)  # both computing: the service is busy
        start = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=5) == 0
        assert time.monotonic() - start < 5
        assert all(c.result(timeout=5).code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                   for c in calls)
        busy.shutdown()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def _error(call) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call was answered, not refused")
