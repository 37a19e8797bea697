"""The engine's record of a study: one set of names, read back typed, one Optuna -> Katib table."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import optuna
from optuna.trial import TrialState

from hpo_lib import study_record
from hpo_lib.katib import contract
from hpo_lib.study_record import TrialRecord


def _trial(state: TrialState, **attrs) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"lr": 0.01},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0)},
        user_attrs=attrs,
    )


def test_every_trial_attribute_the_engine_writes_is_a_field_of_the_record():
    # one definition: each trial attribute is read back as the record's field of the same name, except the
    # engine's own bookkeeping (who runs the trial, and its heartbeat)
    attrs = set(study_record.TRIAL_ATTRS)
    assert len(attrs) == len(study_record.TRIAL_ATTRS)  # no two attributes share a name
    fields = {f.name for f in dataclasses.fields(TrialRecord)} - {"number", "state", "params", "values"}
    assert attrs - {study_record.OWNER, study_record.HEARTBEAT} == fields


def test_a_finished_trial_reads_back_typed():
    frozen = _trial(
        TrialState.PRUNED,
        observation={"val_loss": {"min": 0.4, "max": 0.9, "latest": 0.5}},
        epochs_run=3,
        argv=["hpo", "trial", "--epochs=10"],
        katib_told=[0.5],
        warm_start=True,
    )
    record = TrialRecord.from_frozen(frozen)
    assert record.condition == "EarlyStopped" and record.epochs_run == 3 and record.planned_epochs == 10
    assert record.latest("val_loss") == 0.5 and record.latest("val_rmse") is None
    assert record.katib_told == (0.5,) and record.warm_start is True and record.fail_reason == ""
    # a trial the engine never finished has no epochs, rather than zero
    assert TrialRecord.from_frozen(_trial(TrialState.RUNNING)).epochs_run is None


def test_one_katib_condition_for_each_optuna_state_with_the_samplers_view_beside_it():
    # every Optuna state a study can hold has its Katib condition, and each is a Katib Trial condition
    assert set(study_record.CONDITIONS) == {s.name for s in TrialState}
    assert set(study_record.CONDITIONS.values()) <= set(contract.TRIAL_STATES)
    # a queued re-run: Created for a person, Running for the sampler (its assignment is taken); early-stopped
    # trials reach the sampler only through the engine's Katib view
    assert study_record.CONDITIONS["WAITING"] == "Created" and study_record.SAMPLER_CONDITIONS["WAITING"] == "Running"
    assert "PRUNED" not in study_record.SAMPLER_CONDITIONS
    # the sampler's records are built from that view: a queued re-run reaches it as Running, a pruned trial not at all
    from hpo_lib.engine import sampling

    dist = {"lr": optuna.distributions.FloatDistribution(0.01, 1.0)}
    waiting = optuna.trial.create_trial(state=TrialState.WAITING, params={"lr": 0.1}, distributions=dist)
    pruned = optuna.trial.create_trial(state=TrialState.PRUNED, params={"lr": 0.1}, distributions=dist)
    assert sampling._record(waiting).condition == "Running"
    assert sampling._record(pruned) is None


def test_the_tally_counts_interrupted_trials_apart_from_failures():
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.COMPLETE))
    study.add_trial(_trial(TrialState.FAIL, fail_reason="exited with code 1"))
    study.add_trial(_trial(TrialState.FAIL, interrupted=True))
    study.add_trial(_trial(TrialState.PRUNED))
    counts = study_record.tally(study)
    assert (counts.complete, counts.pruned, counts.failed, counts.interrupted) == (1, 1, 1, 1)
    assert counts.finished == 3 and counts.used == 3
    assert counts.line("local.x") == "local.x: 1 succeeded, 1 early-stopped, 1 failed, 1 interrupted and re-run"


def test_the_record_and_the_condition_names_load_without_optuna():
    # the trial process reads the condition names (through katib.contract) and must not pay for importing Optuna
    code = "import sys, hpo_lib.study_record, hpo_lib.katib.contract; sys.exit('optuna' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
