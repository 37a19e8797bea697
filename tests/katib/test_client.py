"""The Katib launcher (create, poll, list) against a CustomObjectsApi double that replays recorded Katib objects."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from hpo_lib.errors import ConfigError
from hpo_lib.katib import client as katib_client
from hpo_lib.katib import manifests
from tests.conftest import FakeApi, fixture

NS, NAME = "katib-hpo", "lstm-spy-return"


class Clock:
    """A fake monotonic clock that the fake sleep advances: waiting costs no real time."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ----------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("name, state, detail", [
    ("experiment-running.json", "Running", "ExperimentRunning: Experiment is running"),
    ("experiment-succeeded.json", "Succeeded",
     "ExperimentMaxTrialsReached: Experiment has succeeded because max trial count has reached"),
    ("experiment-failed.json", "Failed",
     "ExperimentFailed: Experiment has failed because max failed count has reached"),
])
def test_experiment_state_reads_the_true_condition(name, state, detail):
    # the state and its reason come from the condition Katib set last, terminal ones first
    assert katib_client.experiment_state(fixture(name)) == (state, detail)


def test_a_new_experiment_has_no_state_yet():
    # an experiment Katib has not reconciled yet has no state
    assert katib_client.experiment_state({"metadata": {"name": "x"}}) == ("", "")


def test_progress_counts_trials_as_katib_reports_them():
    # the counters in the order Katib reports them, the zero ones left out
    assert katib_client.progress(fixture("experiment-running.json")) == (
        "9 trials: 5 succeeded, 1 early stopped, 1 failed, 1 metrics unavailable, 1 running")


# ----------------------------------------------------------------------------------------------- create
def test_create_posts_to_katibs_crd():
    doc = manifests.experiment("lstm")
    answer = {**doc, "metadata": {**doc["metadata"], "uid": "5f1c-server-set"}}
    api = FakeApi(create=answer)
    created, is_new = katib_client.create_experiment(api, doc)
    # one create, of experiments.kubeflow.org/v1beta1 in the experiment's namespace
    assert api.calls == [("create", "kubeflow.org", "v1beta1", NS, "experiments", NAME)]
    # a fresh create is reported as new, and the caller gets the server's object (with its uid), not its own body
    assert is_new is True and created["metadata"]["uid"] == "5f1c-server-set"


def test_an_existing_experiment_is_reused_not_relaunched(caplog):
    api = FakeApi(create=ApiException(status=409, reason="Conflict"), gets=[fixture("experiment-running.json")])
    existing, is_new = katib_client.create_experiment(api, manifests.experiment("lstm"))
    # 409 AlreadyExists: read the experiment that is there and carry on with it
    assert not is_new and existing["status"]["trials"] == 9
    assert [c[0] for c in api.calls] == ["create", "get"]
    assert "already exists" in caplog.text


@pytest.mark.parametrize("status, message", [
    (404, "not found in namespace 'katib-hpo' while trying to create"),
    (403, "not allowed to create experiment 'lstm-spy-return' in namespace 'katib-hpo' \\(HTTP 403\\): the "
          "pipeline's service account needs the Role in manifests/cluster/role.yaml"),
    (422, "Katib rejected experiment 'lstm-spy-return'"),
])
def test_create_errors_say_what_to_fix(status, message):
    api = FakeApi(create=ApiException(status=status, reason="x"))
    # each HTTP status becomes a message that says what to fix
    with pytest.raises(katib_client.ExperimentError, match=message):
        katib_client.create_experiment(api, manifests.experiment("lstm"))


def test_an_experiment_needs_a_name_and_namespace():
    # an experiment without a name or namespace is refused before any API call
    with pytest.raises(ConfigError, match="metadata.name and metadata.namespace"):
        katib_client.create_experiment(FakeApi(), {"metadata": {"name": "x"}, "spec": {}})


# ----------------------------------------------------------------------------------------------- wait
def test_wait_polls_until_succeeded():
    running, done = fixture("experiment-running.json"), fixture("experiment-succeeded.json")
    api, clock = FakeApi(gets=[running, running, done]), Clock()
    result = katib_client.wait_for_experiment(api, NAME, NS, timeout_s=3600, poll_s=30, sleep=clock.sleep,
                                              clock=clock)
    # two polls while running, 30 s apart, then the terminal object is returned
    assert katib_client.experiment_state(result)[0] == "Succeeded" and clock.sleeps == [30, 30]


def test_wait_returns_a_failed_experiment_for_the_caller_to_judge():
    api, clock = FakeApi(gets=[fixture("experiment-failed.json")]), Clock()
    result = katib_client.wait_for_experiment(api, NAME, NS, timeout_s=60, sleep=clock.sleep, clock=clock)
    # a Failed experiment ends the wait at once and is returned for the caller to judge
    assert katib_client.experiment_state(result)[0] == "Failed" and clock.sleeps == []


def test_wait_times_out_naming_the_last_state_and_the_way_out():
    api, clock = FakeApi(gets=[fixture("experiment-running.json")]), Clock()
    # the timeout names the last state and how to pick the experiment up again
    with pytest.raises(katib_client.ExperimentError,
                       match=r"did not finish within 100 s \(last state Running: ExperimentRunning: Experiment is "
                             r"running, 9 trials: .*\); it keeps running, so run the pipeline again with "
                             r"tune_mode=existing"):
        katib_client.wait_for_experiment(api, NAME, NS, timeout_s=100, poll_s=30, sleep=clock.sleep, clock=clock)
    # the last sleep is cut to the deadline
    assert clock.sleeps == [30, 30, 30, 10]


def test_wait_rides_out_transient_api_errors():
    api, clock = FakeApi(gets=[ApiException(status=503, reason="Service Unavailable"),
                               ApiException(status=0, reason="connection refused"),
                               fixture("experiment-succeeded.json")]), Clock()
    result = katib_client.wait_for_experiment(api, NAME, NS, timeout_s=600, poll_s=5, sleep=clock.sleep,
                                              clock=clock)
    # 503 and a refused connection are retried on the poll interval, then the result is returned
    assert katib_client.experiment_state(result)[0] == "Succeeded" and clock.sleeps == [5, 5]


def test_wait_stops_at_once_for_an_unknown_experiment():
    api, clock = FakeApi(gets=[ApiException(status=404, reason="Not Found")]), Clock()
    # a 404 ends the wait at once: there is nothing to wait for
    with pytest.raises(katib_client.ExperimentError, match="experiment 'nope' not found in namespace 'katib-hpo'"):
        katib_client.wait_for_experiment(api, "nope", NS, timeout_s=600, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


def test_wait_refuses_a_non_positive_timeout():
    # a timeout of 0 is refused before any poll
    with pytest.raises(ConfigError, match="timeout_s and poll_s must be positive"):
        katib_client.wait_for_experiment(FakeApi(), NAME, NS, timeout_s=0)


def test_get_an_unknown_namespace_is_a_clear_error():
    api = FakeApi(gets=[ApiException(status=404, reason="Not Found")])
    # a 404 on read names the namespace and asks whether it exists
    with pytest.raises(katib_client.ExperimentError, match="not found in namespace 'elsewhere'.*does the namespace "
                                                           "exist"):
        katib_client.get_experiment(api, NAME, "elsewhere")


# ----------------------------------------------------------------------------------------------- list
def test_list_trials_selects_by_experiment_label_and_follows_pages():
    items = fixture("trials.json")["items"]
    api = FakeApi(pages=[{"items": items[:4], "metadata": {"continue": "tok-1"}},
                         {"items": items[4:], "metadata": {"continue": ""}}])
    trials = katib_client.list_trials(api, NAME, NS, page_size=4)
    # every trial of both pages, in order
    assert [t["metadata"]["name"] for t in trials] == [t["metadata"]["name"] for t in items]
    # trials.kubeflow.org, label contract.kubeflow.org/experiment=<name>, the continue token on the second page
    first, second = api.calls
    assert first[1:5] == ("kubeflow.org", "v1beta1", NS, "trials")
    assert first[5] == {"label_selector": f"katib.kubeflow.org/experiment={NAME}", "limit": 4}
    assert second[5]["_continue"] == "tok-1"


def test_list_trials_forbidden_names_the_role():
    api = FakeApi(pages=[ApiException(status=403, reason="Forbidden")])
    # 403 on list names what the service account may not do
    with pytest.raises(katib_client.ExperimentError, match="not allowed to list the trials of experiment"):
        katib_client.list_trials(api, NAME, NS)
