"""Katib's v1beta1 Suggestion messages as Katib's suggestion controller builds them, and a client that dials the
service as the controller does. Needs only what the suggestion image holds (grpcio, Katib's generated messages)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2_grpc

from hpo_lib.katib import service

pb = service.api()
CONDITION = {name: number for number, name in service.CONDITIONS.items()}
TYPES = {name: number for number, name in service.PARAMETER_TYPES.items()}
DISTRIBUTIONS = {name: number for number, name in service.DISTRIBUTIONS.items()}


def experiment_message(doc_spec: dict, name: str = "cnn-lstm-spy-pareto") -> object:
    """The Experiment as Katib's ConvertExperiment builds it from the CR."""
    objective = doc_spec["objective"]
    parameters = []
    for p in doc_spec["parameters"]:
        space_ = p["feasibleSpace"]
        parameters.append(pb.ParameterSpec(
            name=p["name"], parameter_type=TYPES[p["parameterType"]],
            feasible_space=pb.FeasibleSpace(
                min=space_.get("min", ""), max=space_.get("max", ""), step=space_.get("step", ""),
                list=space_.get("list", []), distribution=DISTRIBUTIONS[space_.get("distribution", "uniform")])))
    return pb.Experiment(name=name, spec=pb.ExperimentSpec(
        parameter_specs=pb.ExperimentSpec.ParameterSpecs(parameters=parameters),
        objective=pb.ObjectiveSpec(type=1 if objective["type"] == "minimize" else 2,
                                   objective_metric_name=objective["objectiveMetricName"],
                                   additional_metric_names=objective["additionalMetricNames"]),
        algorithm=pb.AlgorithmSpec(algorithm_name=doc_spec["algorithm"]["algorithmName"],
                                   algorithm_settings=[pb.AlgorithmSetting(**s)
                                                       for s in doc_spec["algorithm"]["algorithmSettings"]]),
        parallel_trial_count=2, max_trial_count=40))


def trial_message(name: str, assignments: dict, condition: str, metrics: dict | None = None) -> object:
    """A Trial as Katib's ConvertTrials sends it: last condition, strategy-extracted metric values as text."""
    return pb.Trial(
        name=name,
        spec=pb.TrialSpec(
            objective=pb.ObjectiveSpec(type=1, objective_metric_name="val_loss"),
            parameter_assignments=pb.TrialSpec.ParameterAssignments(
                assignments=[pb.ParameterAssignment(name=k, value=v) for k, v in assignments.items()])),
        status=pb.TrialStatus(
            start_time="2026-01-01T00:00:00Z", condition=CONDITION[condition],
            observation=pb.Observation(metrics=[pb.Metric(name=k, value=v) for k, v in (metrics or {}).items()])))


class Client:
    """What Katib's suggestion controller dials: the Suggestion service and the gRPC health service."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        prefix = "/" + pb.DESCRIPTOR.services_by_name["Suggestion"].full_name
        self.get = self.channel.unary_unary(f"{prefix}/GetSuggestions",
                                            request_serializer=pb.GetSuggestionsRequest.SerializeToString,
                                            response_deserializer=pb.GetSuggestionsReply.FromString)
        self.validate = self.channel.unary_unary(f"{prefix}/ValidateAlgorithmSettings",
                                                 request_serializer=pb.ValidateAlgorithmSettingsRequest.SerializeToString,
                                                 response_deserializer=pb.ValidateAlgorithmSettingsReply.FromString)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def suggest(self, experiment, trials, count: int) -> list[dict[str, str]]:
        reply = self.get(pb.GetSuggestionsRequest(experiment=experiment, trials=trials, current_request_number=count,
                                                  total_request_number=len(trials) + count), timeout=60)
        return [{a.name: a.value for a in p.assignments} for p in reply.parameter_assignments]


def observed(i: int) -> dict[str, str]:
    """Made-up but fixed metric values of trial i for the three objectives, as Katib's DB returns them (text)."""
    return {"val_loss": repr(1.0 / (i + 2)), "train_time_s": repr(10.0 + (i * 7) % 5),
            "val_dir_acc": repr(0.5 + (i % 4) / 10), "model_size_mb": "1.5"}


def history(client: Client, experiment, n: int) -> list:
    """``n`` trials proposed by the service one at a time and finished, in Katib's messages."""
    trials = []
    for i in range(n):
        (assignment,) = client.suggest(experiment, trials, 1)
        trials.append(trial_message(f"t{i}", assignment, "Succeeded", observed(i)))
    return trials
