"""Katib's v1beta1 ``Suggestion`` gRPC service for ``katib-hpo-multiobjective``: ``hpo katib suggestion-service``.

Katib's suggestion controller calls ``ValidateAlgorithmSettings`` once, before the first trial (a refusal marks the
Experiment Failed and its message is what the user reads in the Experiment's status), then ``GetSuggestions`` with
the Experiment, every trial with its strategy-extracted observation, and the number of new trials it needs. The
answers come from :func:`hpo_lib.katib.suggestion.propose`, the code the local engine runs, rebuilt from the
request each time, so a restarted pod loses nothing. The standard gRPC health service answers Kubernetes' gRPC
probes (service ``manager.v1beta1.Suggestion``, the name Katib's probes ask for).

The messages are Katib's own generated code, read from the ``kubeflow-katib`` 0.19.0 wheel's
``katib_api_pb2.py`` (generated for protobuf 5.26, which the protobuf 6 runtime reads) without importing that
package, which would need protobuf < 5 and Katib's SDK dependencies. Install it beside this project with
``pip install --no-deps kubeflow-katib==0.19.0`` and the ``suggestion`` extra (grpcio).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

from hpo_lib import limits
from hpo_lib.errors import ConfigError, HpoError, exit_now
from hpo_lib.katib import suggestion

log = logging.getLogger(__name__)

KATIB_SDK = "kubeflow-katib"
KATIB_SDK_VERSION = "0.19.0"
HEALTH_SERVICE = "manager.v1beta1.Suggestion"  # the service name Katib's gRPC probes check
DEFAULT_PORT = 6789  # Katib's suggestion port (suggestion-api)
SPARE_THREADS = 12  # threads beyond the computing ones: health checks, validations, requests waiting their turn
_API_MODULE = "hpo_lib.katib._katib_api_pb2"
INSTALL_HINT = f"pip install --no-deps {KATIB_SDK}=={KATIB_SDK_VERSION} grpcio grpcio-health-checking"

# proto enums -> the Experiment CR's words
PARAMETER_TYPES = {1: "double", 2: "int", 3: "discrete", 4: "categorical"}
DISTRIBUTIONS = {1: "uniform", 2: "logUniform", 3: "normal", 4: "logNormal"}
OBJECTIVE_TYPES = {1: "minimize", 2: "maximize"}
CONDITIONS = dict(enumerate(suggestion.CONDITIONS))  # TrialStatus.TrialConditionType -> its name


def api() -> Any:
    """Katib's v1beta1 API messages (``katib_api_pb2``), loaded once from the installed kubeflow-katib wheel."""
    if _API_MODULE in sys.modules:
        return sys.modules[_API_MODULE]
    try:
        dist = importlib.metadata.distribution(KATIB_SDK)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the Katib suggestion API needs Katib's generated messages from {KATIB_SDK} {KATIB_SDK_VERSION}: "
            f"{INSTALL_HINT}"
        ) from None
    if dist.version != KATIB_SDK_VERSION:
        raise ConfigError(
            f"{KATIB_SDK} {dist.version} is installed; the service speaks Katib v1beta1 as {KATIB_SDK_VERSION} "
            f"defines it: {INSTALL_HINT}"
        )
    path = dist.locate_file("kubeflow/katib/katib_api_pb2.py")
    spec = importlib.util.spec_from_file_location(_API_MODULE, str(path))
    if spec is None or spec.loader is None:
        raise ConfigError(f"{KATIB_SDK} {dist.version} has no kubeflow/katib/katib_api_pb2.py: {INSTALL_HINT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_API_MODULE] = module
    return module


# ----------------------------------------------------------------------------------------------- messages
def experiment_spec(message: Any) -> dict[str, Any]:
    """An ``api.v1.beta1.Experiment`` as the Experiment CR's ``spec`` (the dict :mod:`.suggestion` reads)."""
    spec = message.spec
    parameters = []
    for p in spec.parameter_specs.parameters:
        space = p.feasible_space
        feasible: dict[str, Any] = {k: getattr(space, k) for k in ("min", "max", "step") if getattr(space, k)}
        if space.list:
            feasible["list"] = list(space.list)
        feasible["distribution"] = DISTRIBUTIONS.get(space.distribution, "uniform")  # unset: Katib's default
        kind = PARAMETER_TYPES.get(p.parameter_type, "unknown")
        parameters.append({"name": p.name, "parameterType": kind, "feasibleSpace": feasible})
    doc: dict[str, Any] = {
        "objective": {
            "type": OBJECTIVE_TYPES.get(spec.objective.type, "unknown"),
            "objectiveMetricName": spec.objective.objective_metric_name,
            "additionalMetricNames": list(spec.objective.additional_metric_names),
        },
        "algorithm": {
            "algorithmName": spec.algorithm.algorithm_name,
            "algorithmSettings": [{"name": s.name, "value": s.value} for s in spec.algorithm.algorithm_settings],
        },
        "parameters": parameters,
    }
    if spec.max_trial_count:
        doc["maxTrialCount"] = spec.max_trial_count
    if spec.HasField("nas_config"):
        doc["nasConfig"] = {"graphConfig": {"numLayers": spec.nas_config.graph_config.num_layers}}
    return doc


def trial_record(message: Any, goals: list[Any]) -> suggestion.TrialRecord:
    """An ``api.v1.beta1.Trial`` as the record :func:`.suggestion.propose` reads."""
    assignments = {a.name: a.value for a in message.spec.parameter_assignments.assignments}
    metrics = {m.name: m.value for m in message.status.observation.metrics}
    condition = CONDITIONS.get(message.status.condition, "Unknown")
    return suggestion.TrialRecord(assignments, condition, suggestion.observed_values(metrics, goals))


# ----------------------------------------------------------------------------------------------- service
class _Stop(Exception):
    """A request's time is up, its caller gone or the service stopping: the status and message to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SuggestionService:
    """The two calls of Katib's ``Suggestion`` service; stateless, so any number may run at once.

    No request can hold the service: one asks for at most :data:`~hpo_lib.limits.SUGGESTIONS_PER_REQUEST`
    suggestions and computes for at most :data:`~hpo_lib.limits.SUGGESTION_BUDGET_S` (or until its caller's deadline,
    if sooner); at most ``slots`` compute at once and a request waits at most twice the budget for its turn; every
    request stops between two proposals once the service is stopping. The health service and ValidateAlgorithmSettings
    never wait for a slot."""

    def __init__(self, slots: int = 4) -> None:
        self.pb = api()
        self.slots = threading.BoundedSemaphore(slots)
        self.stopping = threading.Event()

    def validate(self, request: Any, context: Any) -> Any:
        spec = experiment_spec(request.experiment)
        problems = self._problems(spec)
        if problems:
            message = "; ".join(problems)
            log.error("ValidateAlgorithmSettings refused experiment %s: %s", request.experiment.name, message)
            _abort_invalid(context, message)
        return self.pb.ValidateAlgorithmSettingsReply()

    def suggest(self, request: Any, context: Any) -> Any:
        count = request.current_request_number
        if limits.SUGGESTIONS_PER_REQUEST.exceeded(count):
            _abort_invalid(context, limits.SUGGESTIONS_PER_REQUEST.refusal("current_request_number", count))
        spec = experiment_spec(request.experiment)
        problems = self._problems(spec)
        if problems:
            _abort_invalid(context, "; ".join(problems))
        setup, goals = suggestion.setup_from_spec(spec)
        records = [trial_record(t, goals) for t in request.trials]
        budget = limits.SUGGESTION_BUDGET_S.value
        try:
            # a slot frees within one budget (and one proposal): twice that is a wait that ends in a turn
            if not self.slots.acquire(timeout=_within(context, 2 * budget)):
                raise _Stop("RESOURCE_EXHAUSTED", "every slot is computing other requests; retry")
            try:
                deadline = time.monotonic() + _within(context, budget)
                proposals = suggestion.propose(setup, records, count, self._clock(context, deadline))
            finally:
                self.slots.release()
        except _Stop as stop:
            log.warning("experiment %s: GetSuggestions stopped: %s", request.experiment.name, stop)
            _abort(context, stop.code, str(stop))
        log.info(
            "experiment %s: %d suggestion(s) from %d trial(s), %d told",
            request.experiment.name,
            len(proposals),
            len(records),
            sum(1 for r in records if r.condition in suggestion.TOLD and r.values is not None),
        )
        pb = self.pb
        return pb.GetSuggestionsReply(
            parameter_assignments=[
                pb.GetSuggestionsReply.ParameterAssignments(
                    assignments=[pb.ParameterAssignment(name=k, value=v) for k, v in proposal.items()]
                )
                for proposal in proposals
            ]
        )

    def _clock(self, context: Any, deadline: float) -> Callable[[int], None]:
        """What runs before each proposal: stops the request when its time is up, its caller gone or the service
        stopping."""
        start = time.monotonic()

        def check(done: int) -> None:
            if self.stopping.is_set():
                raise _Stop("UNAVAILABLE", f"the service is stopping; {done} suggestion(s) were ready, none sent")
            if not context.is_active():
                raise _Stop("CANCELLED", "the caller cancelled the request or its deadline passed")
            now = time.monotonic()
            if now > deadline:
                what = f"the request's computing time ({done} suggestion(s) ready)"
                raise _Stop("DEADLINE_EXCEEDED", limits.SUGGESTION_BUDGET_S.refusal(what, round(now - start, 1)))

        return check

    @staticmethod
    def _problems(spec: dict[str, Any]) -> list[str]:
        name = spec["algorithm"]["algorithmName"]
        if name != suggestion.ALGORITHM:
            return [f"unknown algorithm name {name}: this service serves only {suggestion.ALGORITHM}"]
        return suggestion.spec_problems(spec)


def _within(context: Any, seconds: float) -> float:
    """``seconds``, or less when the caller's deadline comes sooner."""
    remaining = context.time_remaining()
    return max(0.0, seconds if remaining is None else min(seconds, remaining))


def _abort(context: Any, code: str, message: str) -> None:
    import grpc

    context.abort(getattr(grpc.StatusCode, code), message)


def _abort_invalid(context: Any, message: str) -> None:
    import grpc

    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class Running:
    """A started server and the port it listens on (the one asked for, or the free one the system chose for 0)."""

    server: Any
    port: int
    service: SuggestionService | None = None

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, give those in flight ``grace_s`` to finish, then cancel them (each stops before its next
        proposal)."""
        self.server.stop(grace_s).wait()
        if self.service is not None:
            self.service.stopping.set()


def serve(port: int = DEFAULT_PORT, *, host: str = "[::]", workers: int = 4) -> Running:
    """Start the Suggestion and health services on ``host:port`` (0: a free port) and return without blocking.
    ``workers`` requests compute suggestions at once; the threads beyond them answer health checks, validations
    and the requests waiting for their turn."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {port}", settings=("port",))
    try:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError:
        raise ConfigError(f"the suggestion service needs grpcio and grpcio-health-checking: {INSTALL_HINT}") from None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per rebuilt trial otherwise
    service = SuggestionService(slots=workers)
    pb = service.pb
    full_name = pb.DESCRIPTOR.services_by_name["Suggestion"].full_name
    handlers: dict[str, tuple[Callable, Any, Any]] = {
        "GetSuggestions": (service.suggest, pb.GetSuggestionsRequest, pb.GetSuggestionsReply),
        "ValidateAlgorithmSettings": (
            service.validate,
            pb.ValidateAlgorithmSettingsRequest,
            pb.ValidateAlgorithmSettingsReply,
        ),
    }
    # no SO_REUSEPORT: a second service on a taken port must fail, not share it and answer half the calls
    pool = futures.ThreadPoolExecutor(max_workers=workers + SPARE_THREADS, thread_name_prefix="suggestion")
    server = grpc.server(pool, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                full_name,
                {
                    method: grpc.unary_unary_rpc_method_handler(
                        _guarded(call),
                        request_deserializer=request.FromString,
                        response_serializer=reply.SerializeToString,
                    )
                    for method, (call, request, reply) in handlers.items()
                },
            ),
        )
    )
    checker = health.HealthServicer()
    for name in ("", HEALTH_SERVICE):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"cannot listen on {host}:{port}: the port is taken or not allowed", settings=("port",))
    server.start()
    return Running(server, bound, service)


def run_until_stopped(port: int, *, host: str, on_listening: Callable[[int], None]) -> NoReturn:
    """``hpo katib suggestion-service``: serve until SIGTERM (the pod's stop) or Ctrl-C, then give the calls in
    flight :data:`~hpo_lib.limits.SHUTDOWN_GRACE_S` to finish, cancel the rest and end the process, inside the pod's
    grace period even when a thread is still inside a proposal. ``on_listening(port)`` runs once it listens."""
    running = serve(port, host=host)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    on_listening(running.port)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        running.stop(grace_s=limits.SHUTDOWN_GRACE_S.value)
    exit_now(0)  # a thread still inside one proposal is not waited for: the pod's grace period is not


def _guarded(call: Callable) -> Callable:
    """A handler whose project errors reach Katib as INVALID_ARGUMENT with their one-line message."""

    def handler(request: Any, context: Any) -> Any:
        try:
            return call(request, context)
        except HpoError as exc:
            _abort_invalid(context, str(exc))

    return handler
