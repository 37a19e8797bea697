"""The embedded engine against scripted trial processes whose outcomes are known in advance."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo_lib import engine
from hpo_lib.errors import ConfigError, ExperimentFailed
from tests.conftest import manifest, multi_manifest, options, states


# ------------------------------------------------------------------------------------------------ stopping
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_medianstop_stops_a_trial_worse_than_the_mean_at_start_step(tmp_path):
    study = engine.run(manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    # levels 1 and 3 succeed (threshold = mean 2.0); the third at 5 is stopped at its 2nd report
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[2].user_attrs["epochs_run"] == 2
    # the objective is extracted with the manifest's strategy (min), additional metrics kept as Katib does
    assert study.trials[1].value == 3.0
    assert study.trials[1].user_attrs["observation"]["val_rmse"] == {"min": 6.0, "max": 6.0, "latest": 6.0}


def script_manifest(tmp_path, name: str, text: str, *, strategies: list | None = None, **spec):
    """The test manifest whose trial runs ``text`` as a Python script (``--x`` as the sampler draws it), with
    ``metricStrategies`` replaced when given; ``spec`` as :func:`tests.conftest.manifest` takes it."""
    script = tmp_path / name
    script.write_text(text)
    path = manifest(tmp_path, **spec)
    doc = yaml.safe_load(path.read_text())
    if strategies is not None:
        doc["spec"]["objective"]["metricStrategies"] = strategies
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [str(script), "--x=${trialParameters.x}"]
    path.write_text(yaml.safe_dump(doc))
    return path


def test_mean_not_median_decides(tmp_path):
    path = manifest(tmp_path, maxTrialCount=4, earlyStopping={"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "2"}]})
    study = engine.run(path, options(tmp_path, curves="1,1,7,2.5"))
    # completed levels 1, 1, 7: median 1 would stop a trial at 2.5, Katib's mean 3 lets it finish
    assert states(study)[3] == TrialState.COMPLETE


@pytest.mark.parametrize("pruner, kind", [("hyperband", optuna.pruners.HyperbandPruner),
                                          ("optuna-median", optuna.pruners.MedianPruner),
                                          ("none", optuna.pruners.NopPruner)])
def test_local_pruners_run_on_a_manifest_with_medianstop_settings(tmp_path, pruner, kind):
    opts = options(tmp_path, curves="1,3,5")
    opts.pruner = pruner
    study = engine.run(manifest(tmp_path), opts)
    # the chosen pruner replaces the manifest's medianstop, and the whole budget runs under it
    assert isinstance(study.pruner, kind) and len(study.trials) == 3


# ------------------------------------------------------------------------------------------------ failures and budget
@pytest.mark.parametrize("mode, reason", [
    ("crash", "exited with code 3"),
    ("nometric", "never printed the objective val_loss"),
    ("nan", "printed as ''"),
])
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_failed_trials_keep_their_output_and_the_study_goes_on(tmp_path, mode, reason):
    with pytest.raises(ExperimentFailed, match=r"every trial failed \(2\); the first, trial 0, .*" + reason):
        engine.run(manifest(tmp_path, maxTrialCount=2, maxFailedTrialCount=None), options(tmp_path, mode=mode))
    # each trial fails with its reason and output tail; the budget still runs to the end, and the run says so
    study = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{tmp_path / 'state' / 'studies.db'}")
    assert states(study) == [TrialState.FAIL, TrialState.FAIL]
    assert reason in study.trials[0].user_attrs["fail_reason"]
    if mode == "crash":
        assert "simulated crash" in study.trials[0].user_attrs["output_tail"]
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_max_failed_trial_count_fails_the_experiment_in_katibs_words(tmp_path):
    with pytest.raises(ExperimentFailed) as failed:
        engine.run(manifest(tmp_path, maxTrialCount=5, maxFailedTrialCount=2), options(tmp_path, mode="crash"))
    # two failures of a budget of five end the study, as Katib marks the Experiment Failed, with the first cause
    assert "max failed count has reached" in str(failed.value) and "simulated crash" in str(failed.value)
    assert failed.value.exit_code != 0
    study = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{tmp_path / 'state' / 'studies.db'}")
    assert states(study) == [TrialState.FAIL, TrialState.FAIL]
    # nothing finished is lost: the export is written
    assert (tmp_path / "state" / "local.scripted" / "trials.json").exists()
def test_max_failed_trial_count_zero_fails_the_experiment_at_the_first_failure(tmp_path):
    # Katib: failed != 0 && failed >= maxFailedTrialCount (katib pkg/controller.v1beta1/experiment/util/
    # status_util.go:205), so 0 fails the Experiment at its first failed trial; the engine used to ignore 0
    path = manifest(tmp_path, maxTrialCount=4, maxFailedTrialCount=0)
    with pytest.raises(ExperimentFailed, match="1 trial\\(s\\) failed and maxFailedTrialCount is 0"):
        engine.run(path, options(tmp_path, mode="crash"))
    study = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{tmp_path / 'state' / 'studies.db'}")
    assert states(study) == [TrialState.FAIL]


def test_a_word_pair_on_the_objectives_line_fails_the_trial_once_a_stopping_rule_exists(tmp_path):
    # Katib's metrics collector, with an early-stopping rule, reads every filter match of a line naming the rule's
    # metric and exits on a value that is not a number (katib cmd/metricscollector/v1beta1/file-metricscollector/
    # main.go:191-216): `val_loss=0.3 optimizer=adam` then fails the trial with no metrics
    path = script_manifest(tmp_path, "chatty.py", "for e in range(1, 4):\n    print(f'2026-01-01T00:00:0{e}Z epoch={e} "
                           "val_loss=0.5 val_rmse=1 optimizer=adam', flush=True)\n", maxTrialCount=3)
    study = engine.run(path, options(tmp_path))
    # medianstop (min_trials_required 2) has no rule for the first two trials: read as the engine always did
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    reason = study.trials[2].user_attrs["fail_reason"]
    assert "printed 'optimizer=adam' on a line with val_loss" in reason and "main.go:205-216" in reason


@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_hanging_trial_is_ended_at_its_deadline(tmp_path):
    opts = options(tmp_path, mode="hang")
    opts.trial_timeout_s = 1.5
    with pytest.raises(ExperimentFailed, match="deadline"):
        engine.run(manifest(tmp_path, maxTrialCount=1, maxFailedTrialCount=None), opts)
    study = optuna.load_study(study_name="local.scripted", storage=f"sqlite:///{tmp_path / 'state' / 'studies.db'}")
    # the trial is ended and failed with the deadline as its reason
    assert states(study) == [TrialState.FAIL]
    assert "deadline" in study.trials[0].user_attrs["fail_reason"]
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_two_parallel_trials_on_sqlite(tmp_path):
    study = engine.run(manifest(tmp_path, maxTrialCount=4, parallelTrialCount=2), options(tmp_path, curves="1"))
    # two processes at once on one SQLite file: every trial succeeds, none hits a lock
    assert states(study) == [TrialState.COMPLETE] * 4


# ------------------------------------------------------------------------------------------------ progress
@pytest.mark.parametrize("parallel", [1, 2])
def test_progress_reports_only_changes_and_ends_at_the_budget(tmp_path, parallel):
    heard = []
    opts = options(tmp_path, curves="1,3,5,2")
    opts.on_progress = heard.append
    study = engine.run(manifest(tmp_path, maxTrialCount=4, parallelTrialCount=parallel), opts)
    finished = [p.finished for p in heard]
    # the face hears Progress values, each one a change from the one before
    assert heard and all(isinstance(p, engine.Progress) for p in heard)
    assert all(before != after for before, after in zip(heard, heard[1:]))
    # finished trials never go back, and the last report counts every trial of the budget
    assert finished == sorted(finished)
    assert finished[-1] == len(study.trials) == heard[-1].total == 4 and heard[-1].running == 0
    # trials are reported running while they run, and the best value is the study's once one succeeded
    assert max(p.running for p in heard) == parallel
    assert heard[-1].best == (study.best_value,) and heard[-1].front is None
    # each running trial's epochs are heard as they are reported (the scripted trial prints 4), with its command
    epochs = [t.reports for p in heard for t in p.trials]
    assert max(epochs) == 4 and sorted(set(epochs)) == [0, 1, 2, 3, 4]
    assert all(len(p.trials) == p.running for p in heard) and heard[-1].trials == ()
    assert all(t.argv[-1].startswith("--") for p in heard for t in p.trials)


# ------------------------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("change, message", [
    ({"algorithm": {"algorithmName": "bayesianoptimization"}}, "is not served by the local engine"),
    ({"parallelTrialCount": 9}, "W-CNT"),
    ({"algorithm": {"algorithmName": "multivariate-tpe", "algorithmSettings": [{"name": "foo", "value": "1"}]}},
     "setting 'foo' is unknown to multivariate-tpe"),
])
def test_invalid_manifests_are_refused_with_the_rule(tmp_path, change, message):
    # the engine refuses what Katib would refuse, with the rule in the message
    with pytest.raises(ConfigError, match=message):
        engine.run(manifest(tmp_path, **change), options(tmp_path))


# ------------------------------------------------------------------------------------------------ multi-objective
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_multi_objective_study_has_a_pareto_front_and_keeps_katibs_medianstop(tmp_path):
    study = engine.run(multi_manifest(tmp_path), options(tmp_path, curves="1,3,5"))
    # one direction per objective
    assert len(study.directions) == 2
    # Katib's rule still applies to the first objective: threshold mean(1, 3) = 2, the level-5 trial stops
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[2].user_attrs["epochs_run"] == 2
    # (val_loss min, val_rmse max): level 1 = (1, 2) and level 3 = (3, 6) trade off, so both are on the front
    assert sorted(t.values for t in study.best_trials) == [[1.0, 2.0], [3.0, 6.0]]


def test_multi_objective_refuses_a_pruner_optuna_cannot_apply(tmp_path):
    opts = options(tmp_path)
    opts.pruner = "hyperband"
    # refused before any trial, naming the setting that fixes it
    with pytest.raises(ConfigError, match="cannot prune multi-objective") as info:
        engine.run(multi_manifest(tmp_path), opts)
    assert info.value.settings == ("pruner",)


def test_nsga2_runs_a_multi_objective_study(tmp_path):
    opts = options(tmp_path, curves="1,2")
    opts.mo_sampler = "nsga2"
    study = engine.run(multi_manifest(tmp_path, maxTrialCount=2), opts)
    # the chosen sampler drives the study to the end of its budget
    assert isinstance(study.sampler.inner.seeded, optuna.samplers.NSGAIISampler)
    assert states(study) == [TrialState.COMPLETE] * 2


# ------------------------------------------------------------------------------------------------ Katib's shapes
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_a_trial_that_logs_its_metrics_to_stderr_is_collected_as_on_katib(tmp_path):
    study = engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path, mode="stderr"))
    # Katib's StdOut collector reads `<command> 1>metrics.log 2>&1`: metrics on stderr count, as Python's logging
    # writes them
    assert states(study) == [TrialState.COMPLETE] and study.trials[0].value == 1.0
    log = tmp_path / "state" / "local.scripted" / "trial-0000" / "trial.log"
    assert "val_loss=1" in log.read_text()
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_nothing_is_appended_to_the_trial_command(tmp_path):
    study = engine.run(manifest(tmp_path, maxTrialCount=1), options(tmp_path))
    argv = study.trials[0].user_attrs["argv"]
    # the manifest's command, the assignment and the --set overrides; the output folder comes from the environment
    assert not any(a.startswith("--output-dir") for a in argv)
    assert (tmp_path / "state" / "local.scripted" / "started.txt").exists()


@pytest.mark.parametrize("metadata", [{"name": "a/../../escape", "namespace": "local"},
                                      {"name": "scripted", "namespace": "../../x"}])
def test_names_that_lead_outside_the_state_folder_are_refused(tmp_path, metadata):
    import yaml

    path = manifest(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["metadata"].update(metadata)
    path.write_text(yaml.safe_dump(doc))
    before = set(tmp_path.parent.iterdir())
    with pytest.raises(ConfigError, match="name"):
        engine.run(path, options(tmp_path))
    # nothing was written outside the test's folder
    assert set(tmp_path.parent.iterdir()) == before


@pytest.mark.parametrize("fmt, source", [
    ("braces", {"fileSystemPath": {"kind": "File", "format": "TEXT"},
                "filter": {"metricsFormat": [r"{(\w+): ((-?\d+)(\.\d+)?)}"]}}),
    ("json", {"fileSystemPath": {"kind": "File", "format": "JSON"}}),
])
@pytest.mark.usefixtures("start")  # warm-forked and cold trials alike
def test_a_file_collector_reads_the_file_the_trial_writes(tmp_path, fmt, source):
    metrics = tmp_path / "katib" / "metrics.log"
    metrics.parent.mkdir()
    metrics.write_text("val_loss=0.001\n" if fmt == "braces" else '{"val_loss": "0.001"}\n')  # before: not read
    source["fileSystemPath"]["path"] = str(metrics)
    path = manifest(tmp_path, maxTrialCount=2, metricsCollectorSpec={"collector": {"kind": "File"}, "source": source})
    study = engine.run(path, options(tmp_path, curves="2,3", **{"metrics-file": str(metrics), "metrics-format": fmt}))
    # the metrics come from the file, parsed with its filter (or as JSON strings); stdout's val_loss=200 is ignored
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.value for t in study.trials] == [2.0, 3.0]
    assert "is not a metric here" in (tmp_path / "state" / "local.scripted" / "trial-0000" / "trial.log").read_text()


@pytest.mark.parametrize("collector, parallel, message", [
    ({"collector": {"kind": "TensorFlowEvent"}, "source": {"fileSystemPath": {"kind": "Directory", "path": "/x"}}},
     1, "StdOut and File metrics only"),
    ({"collector": {"kind": "File"}, "source": {"fileSystemPath": {"kind": "File", "path": "/tmp/m.log"}}},
     2, "one path every trial process would share"),
])
def test_collectors_the_engine_cannot_run_as_katib_are_refused(tmp_path, collector, parallel, message):
    path = manifest(tmp_path, maxTrialCount=2, parallelTrialCount=parallel, metricsCollectorSpec=collector,
                    earlyStopping=None)  # Katib stops early only with StdOut or File collectors
    with pytest.raises(ConfigError, match=message):
        engine.run(path, options(tmp_path))


def test_an_early_stopped_trial_that_met_the_goal_ends_the_experiment_as_on_katib():
    # Katib's goal check reads every trial's objective observation, EarlyStopped ones included (katib
    # pkg/controller.v1beta1/experiment/util/status_util.go:94-127); the engine tells an early-stopped trial's
    # observation as KATIB_TOLD and used to read COMPLETE trials only
    from hpo_lib import study_record
    from hpo_lib.engine import study as loop

    study = optuna.create_study()
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.tell(study.ask(x), 0.5)
    stopped = study.ask(x)
    stopped.report(0.9, 0)  # Optuna keeps the last report as a pruned trial's value; Katib its observation
    stopped.set_user_attr(study_record.KATIB_TOLD, [0.1])
    study.tell(stopped, state=TrialState.PRUNED)
    assert loop._goal_reached(study, 0.2, minimize=True)
    assert not loop._goal_reached(study, 0.05, minimize=True) and not loop._goal_reached(study, 0.95, minimize=False)


def test_a_metric_printed_twice_on_a_line_keeps_both_values_as_katib_does(tmp_path):
    # Katib's collector appends every filter match of a line to the observation log (katib
    # pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go:100-118), and min/max/latest run
    # over all of them (pkg/controller.v1beta1/trial/trial_controller_util.go:205-235); the engine kept the last
    path = script_manifest(tmp_path, "twice.py", "print('2026-01-01T00:00:01Z epoch=1 val_loss=0.9 val_rmse=1 "
                           "val_loss=0.85', flush=True)\n", maxTrialCount=1)
    study = engine.run(path, options(tmp_path))
    observed = study.trials[0].user_attrs["observation"]["val_loss"]
    assert observed == {"min": 0.85, "max": 0.9, "latest": 0.85}


def test_latest_is_the_newest_timestamp_and_an_unstamped_line_is_the_zero_time(tmp_path):
    # Katib's `latest` is the value with the newest timestamp, ties to the later line (katib
    # pkg/controller.v1beta1/trial/trial_controller_util.go:226-235), and a line without one is stamped with the
    # zero time (pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go:89-97)
    lines = ("for line in ['2026-01-01T00:00:02Z epoch=1 val_loss=0.5 val_rmse=1',\n"
             "             '2026-01-01T00:00:01Z epoch=2 val_loss=0.7 val_rmse=1',\n"
             "             'epoch=3 val_loss=0.9 val_rmse=1']:\n"
             "    print(line, flush=True)\n")
    latest = [{"name": "val_loss", "value": "latest"}, {"name": "val_rmse", "value": "latest"}]
    path = script_manifest(tmp_path, "stamps.py", lines, maxTrialCount=1, strategies=latest)
    study = engine.run(path, options(tmp_path))
    # printed last, 0.9 has the zero time; 0.7 is older than 0.5: Katib's latest is 0.5, the study's value too
    assert study.trials[0].user_attrs["observation"]["val_loss"] == {"min": 0.5, "max": 0.9, "latest": 0.5}
    assert study.trials[0].value == 0.5
