"""What survives an interruption: trials a killed engine left RUNNING are re-run, a live engine's never taken."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.engine import recovery
from hpo_lib.engine.recovery import GRACE_S
from tests.conftest import manifest, options


@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_resume_keeps_finished_trials_and_reruns_interrupted_ones_without_taking_budget(tmp_path, monkeypatch):
    # the orphan carries no engine stamp (an older version's): it counts as lost once GRACE_S has passed since it
    # started; 1 s here instead of a minute, the rule unchanged
    monkeypatch.setattr(recovery, "GRACE_S", 1.0)
    path = manifest(tmp_path, maxTrialCount=2)
    engine.run(path, options(tmp_path, curves="1"))
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    killed = optuna.load_study(study_name="local.scripted", storage=storage)
    orphan = killed.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # a trial a kill -9 left RUNNING
    resumed = engine.run(manifest(tmp_path, maxTrialCount=4, maxFailedTrialCount=1), options(tmp_path, curves="1"))
    # the two finished trials are still there, the orphan is failed as interrupted and re-run with its parameters;
    # it takes no budget (4 succeed) and does not count as a failure (maxFailedTrialCount 1 is not reached)
    trials = resumed.get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4 and len(trials) == 5
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs["interrupted"] is True
    rerun = [t for t in trials if t.user_attrs.get("rerun_of") == orphan.number]
    assert len(rerun) == 1 and rerun[0].params == orphan.params and rerun[0].state == TrialState.COMPLETE
    assert engine.tally(resumed).failed == 0 and engine.tally(resumed).interrupted == 1


def test_a_running_trial_of_a_live_engine_is_never_taken_over(tmp_path):
    path = manifest(tmp_path, maxTrialCount=2)
    engine.run(path, options(tmp_path, curves="1"))
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    other = optuna.load_study(study_name="local.scripted", storage=storage)
    alive = other.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr("engine", {"host": "another-machine", "pid": 1, "started": 1})
    alive.set_user_attr("heartbeat", __import__("time").time())  # its engine stamped it just now
    # an engine on another machine with a fresh heartbeat: nothing is recovered
    assert engine.recover_orphans(other) == []
    # the same trial with a stale heartbeat has lost its engine: recovered and queued again
    alive.set_user_attr("heartbeat", __import__("time").time() - 2 * GRACE_S)
    assert engine.recover_orphans(other) == [alive.number]
    queued = other.get_trials()[-1]
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == alive.params
    # a second engine racing for the same orphan does not queue it twice
    assert engine.recover_orphans(other) == []
