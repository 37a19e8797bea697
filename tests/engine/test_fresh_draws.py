"""A seeded sampler never proposes an assignment already run or running: not on a resumed or extended study, not
with several engines on one study. Issue 30: the sampler was built with the manifest's random_state at every engine
start, so its start-up draws replayed (trials 6 and 7 of an extended study were copies of trials 0 and 1)."""

from __future__ import annotations

import optuna
import pytest

from hpo_lib import engine
from hpo_lib.engine import sampling
from hpo_lib.engine.katib_view import KatibTells
from tests.conftest import manifest, options

SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "units": optuna.distributions.IntDistribution(8, 512),
    "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
}
SEEDED = {
    "random": [{"name": "random_state", "value": "7"}],
    "tpe": [{"name": "random_state", "value": "7"}],
    "multivariate-tpe": [{"name": "random_state", "value": "7"}, {"name": "n_startup_trials", "value": "4"}],
}


def algorithm(name: str) -> dict:
    return {"algorithmName": name, "algorithmSettings": SEEDED[name]}


def engine_start(study_name: str, storage, name: str) -> optuna.Study:
    """What an engine start does: a new sampler from the manifest, on the stored study."""
    sampler = KatibTells(sampling.study_sampler(algorithm(name), SPACE, 100))
    return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)


def run_trials(study: optuna.Study, n: int) -> None:
    for _ in range(n):
        trial = study.ask(SPACE)
        study.tell(trial, trial.params["lr"] * trial.params["units"] + trial.params["dropout"])


def assignments(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.get_trials()]


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_one_uninterrupted_run_keeps_the_sequence_random_state_always_gave(name):
    plain = optuna.create_study(sampler=sampling.make_sampler(algorithm(name), SPACE, 100))
    fresh = optuna.create_study(sampler=sampling.study_sampler(algorithm(name), SPACE, 100))
    run_trials(plain, 8)
    run_trials(fresh, 8)
    assert assignments(fresh) == assignments(plain)


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_a_resumed_and_extended_study_never_replays_an_assignment(name):
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    # the first run, then two resumes, each raising the budget (hpo tune --max-trials 6, then 8, then 10)
    for more in (6, 2, 2):
        run_trials(engine_start("s", storage, name), more)
    seen = assignments(optuna.load_study(study_name="s", storage=storage))
    # before the fix, trials 6-7 and 8-9 were copies of trials 0-1
    assert len(seen) == 10 and len(set(seen)) == 10, seen
    # and a resume is reproducible: the same history and random_state give the same trials
    again = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=again)
    for more in (6, 2, 2):
        run_trials(engine_start("s", again, name), more)
    assert assignments(optuna.load_study(study_name="s", storage=again)) == seen


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_three_engines_on_one_study_draw_distinct_assignments(name):
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    engines = [engine_start("s", storage, name) for _ in range(3)]  # started together, one random_state
    running = [study.ask(SPACE) for study in engines]  # each asks while the others' trials run
    for study, trial in zip(engines, running):
        study.tell(trial, 1.0)
    for _ in range(3):
        for study in engines:
            run_trials(study, 1)
    seen = assignments(optuna.load_study(study_name="s", storage=storage))
    assert len(seen) == 12 and len(set(seen)) == 12, seen


def test_a_resume_through_hpo_tune_runs_no_trial_twice(tmp_path):
    # the scripted stand-in trial, the manifest's random_state 7; the budget raised twice on a finished study
    for budget in (3, 5, 7):
        study = engine.run(manifest(tmp_path, maxTrialCount=budget), options(tmp_path, curves="1"))
    xs = [t.params["x"] for t in study.get_trials()]
    assert len(xs) == 7 and len(set(xs)) == 7, xs


def test_trial_seeds_differ_by_trial_and_by_random_state():
    seeds = {sampling.trial_seed(state, number) for state in (0, 7) for number in range(500)}
    assert len(seeds) == 1000 and all(0 <= s < 2**32 for s in seeds)
