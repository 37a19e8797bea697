"""What ``hpo tune`` shows while it runs (a pipe gets lines, a terminal a block that fits its width) and the
pipeline's retrain epochs as they end, seed by seed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from hpo_lib import cli_progress
from hpo_lib.engine.options import EndedTrial, Progress, RunningTrial
from hpo_lib.study_record import EARLY_STOPPED, FAILED, SUCCEEDED
from tests.conftest import manifest, options

ARGV = ("python", "scripted_trial.py", "--x=0.5", "--epochs=6")
PARAMS = (("lr", 0.000123456789), ("hidden-size", 256), ("optimizer", "adamw"), ("dropout", 0.4697494707))


def running(number: int, reports: int) -> RunningTrial:
    return RunningTrial(number, reports, ARGV, warm=True, params=PARAMS)


def progress(*, finished=(0, 0, 0), total=8, trials=(), ended=(), best=0.2601) -> Progress:
    complete, pruned, failed = finished
    return Progress(total, len(trials), complete, pruned, failed, (best,) if complete else None, None,
                    tuple(trials), tuple(ended))


# ----------------------------------------------------------------------------------------------- lines (a pipe)
def test_lines_tell_each_trial_event_and_throttle_epochs():
    out = io.StringIO()
    shown = cli_progress.TuneProgress(enabled=True, terminal=False, out=out)
    shown.EPOCH_EVERY_S = 3600.0  # epochs come faster than that: none is told
    with shown:
        shown.update(progress(trials=[running(0, 0)]))
        for epoch in range(1, 6):
            shown.update(progress(trials=[running(0, epoch)]))
        shown.update(progress(finished=(1, 0, 0), ended=[EndedTrial(0, SUCCEEDED, 0.2601234, 6, 83.0)]))
    lines = [re.sub(r"^\[\d\d:\d\d\] ", "", line) for line in out.getvalue().splitlines()]
    # started with its parameters at 4 significant digits, ended with its value; no epoch line inside an hour
    assert lines[0] == "trial 0 started: lr=0.0001235 hidden-size=256 optimizer=adamw dropout=0.4697"
    assert lines[1] == "trial 0 succeeded: value 0.2601 after 6 epochs, 1 min 23 s"
    assert re.fullmatch(r"tune: 1 trials in 0 s: 1 succeeded, 0 early-stopped, 0 failed; best 0.2601",
                        lines[2]), lines[2]
    assert len(lines) == 3
    # with no throttle every new epoch is told, once
    out = io.StringIO()
    shown = cli_progress.TuneProgress(enabled=True, terminal=False, out=out)
    shown.EPOCH_EVERY_S = 0.0
    with shown:
        for epoch in (0, 1, 1, 2):
            shown.update(progress(trials=[running(3, epoch)]))
    assert re.findall(r"trial 3: epoch \d/6", out.getvalue()) == ["trial 3: epoch 1/6", "trial 3: epoch 2/6"]


def test_ended_lines_name_how_the_trial_ended():
    assert cli_progress.ended_line(EndedTrial(5, EARLY_STOPPED, 3.7132, 5, 12.4)) == (
        "trial 5 early-stopped at epoch 5: value 3.713, 12 s")
    assert cli_progress.ended_line(EndedTrial(6, FAILED, None, 2, 3725)).startswith(
        "trial 6 failed after 2 epochs, 1 h 02 min")


def test_no_progress_shows_nothing():
    out = io.StringIO()
    with cli_progress.TuneProgress(enabled=False, terminal=False, out=out) as shown:
        shown.update(progress(trials=[running(0, 1)]))
    assert out.getvalue() == ""


def test_the_engine_tells_each_running_trials_parameters_and_how_each_trial_of_this_run_ended(tmp_path):
    from hpo_lib import engine
    from hpo_lib.errors import ExperimentFailed

    heard = []
    opts = options(tmp_path, curves="1,3,5")
    opts.on_progress = heard.append
    study = engine.run(manifest(tmp_path), opts)
    assert {t.params for p in heard for t in p.trials} == {(("x", t.params["x"]),) for t in study.trials}
    # medianstop (mean of 1 and 3 = 2) stops the level-5 trial at its 2nd report; values by the manifest's strategy
    assert [(t.number, t.condition, t.value, t.reports) for t in heard[-1].ended] == [
        (0, SUCCEEDED, 1.0, 4), (1, SUCCEEDED, 3.0, 4), (2, EARLY_STOPPED, 5.0, 2)]
    # resumed with one more trial, which crashes: only this run's trial is told, failed, with no value
    heard.clear()
    opts = options(tmp_path, curves="1,3,5", mode="crash")
    opts.on_progress, opts.max_trials = heard.append, 4
    with contextlib.suppress(ExperimentFailed):
        engine.run(manifest(tmp_path), opts)
    assert [(t.number, t.condition, t.value) for t in heard[-1].ended] == [(3, FAILED, None)]


def test_hpo_tune_into_a_pipe_prints_a_line_per_trial_event(tmp_path):
    # the scripted Experiment: levels 1, 3, 5; medianstop (mean of 1 and 3 = 2) stops the third at its 2nd report
    argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(manifest(tmp_path)), "--set", "curves=1,3,5",
            "--state-dir", str(tmp_path / "s"), "--no-tracking"]
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "log").read_text()
    assert re.search(r"^\[\d\d:\d\d\] trial 0 started: x=0\.\d+$", text, re.M), text
    assert re.search(r"^\[\d\d:\d\d\] trial 0 succeeded: value 1 after 4 epochs, \d+ s$", text, re.M), text
    assert re.search(r"^\[\d\d:\d\d\] trial 2 early-stopped at epoch 2: value 5, \d+ s$", text, re.M), text
    assert re.search(r"\] tune: 3 trials in \d+ s: 2 succeeded, 1 early-stopped, 0 failed; best 1\n",
                     text), text
    # the lines come before the results, all on stdout; no terminal escape codes in a log
    assert text.index("early-stopped at epoch 2") < text.index("local.scripted: 2 succeeded") and "\x1b" not in text


# ----------------------------------------------------------------------------------------------- the terminal block
def test_the_bar_fits_the_width_and_its_eta_counts_this_runs_trials():
    out = io.StringIO()
    shown = cli_progress.TuneProgress(enabled=True, terminal=True, out=out, width=80)
    with shown:
        # a resumed study: 30 of 40 finished before this run; nothing ended yet in this run, so no rate, no ETA
        shown.update(progress(finished=(25, 4, 1), total=40, trials=[running(30, 2), running(31, 0)]))
        bar, *trials = shown._block()
        assert re.fullmatch(r"trials 30/40 \|.+\| 00:0\d<\? run 2 ok 25 stop 4 fail 1 best 0\.2601", bar), bar
        assert trials[0].startswith("  #30 epoch 2/6 00:0") and "lr=0.0001235" in trials[0]
        # one trial ended in this run after t seconds: 9 left take about 9 t (parallel trials included)
        shown._t0 -= 100
        shown.update(progress(finished=(26, 4, 1), total=40, trials=[running(31, 1)],
                              ended=[EndedTrial(30, SUCCEEDED, 0.25, 6, 100.0)]))
        bar = shown._block()[0]
        assert re.search(r" 01:4\d<1[45]:\d\d run 1 ok 26 ", bar), bar
        # every line of the block fits 80 columns, however large the numbers
        shown.update(progress(finished=(9999, 0, 0), total=10000, trials=[running(10000, 123)], best=-1.23456e-5))
        assert all(len(line) < 80 for line in shown._block())
    # the end leaves the bar and the summary below it, and clears the running trials' lines
    *_, bar, summary = out.getvalue().rstrip("\n").split("\n")
    assert re.search(r"trials 9999/10000 \|.+\| .+ run 1 ok 9999", bar)
    assert summary.endswith("tune: 0 trials in 1 min 40 s: 0 succeeded, 0 early-stopped, 0 failed; best -1.235e-05")


def capture(session: str, *flags: str) -> str:
    """The tmux pane's text, its history included; a line wrapped at the width stays two lines unless ``-J``."""
    argv = ["tmux", "capture-pane", "-p", *flags, "-S", "-300", "-t", session]
    return subprocess.run(argv, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_hpo_tune_in_an_80_column_terminal(tmp_path):
    session = f"hpo-progress-{os.getpid()}"
    script = tmp_path / "run.sh"
    argv = [sys.executable, "-m", "hpo_lib.cli", "tune", str(manifest(tmp_path, maxTrialCount=3)), "--set",
            "curves=1,3,5", "--set", "sleep=0.7", "--state-dir", str(tmp_path / "s"), "--no-tracking"]
    script.write_text(f"cd {shlex.quote(str(tmp_path))}\n{shlex.join(argv)}\necho EXIT=$?\nsleep 60\n")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", f"bash {script}"],
                   check=True)
    try:
        started, first, mid, screen = time.monotonic(), None, None, ""
        while time.monotonic() - started < 240 and "EXIT=" not in screen:
            screen = capture(session)
            if first is None and screen.strip():
                first = time.monotonic() - started
            if mid is None and re.search(r"^  #\d epoch [1-3]/4", screen, re.M):
                mid = screen
            time.sleep(0.1)
        assert "EXIT=0" in screen, screen
        # the first line shows before the engine loads (within a second on an idle machine; this one is shared)
        assert first is not None and first < 5, first
        # while a trial runs: the bar, whole (its last field is the best value), and the trial's line below it
        assert mid is not None, screen
        bar = next(line for line in mid.splitlines() if line.startswith("trials "))
        assert re.fullmatch(r"trials \d/3 \|.*\| \d\d:\d\d<(\?|\d\d:\d\d) run 1 ok \d stop \d fail 0 best (-|1)",
                            bar), bar
        # at the end: the trials' lines above, the final bar and the summary, then the leaderboard
        screen = capture(session, "-J")  # the kept lines may be longer than the terminal: joined
        assert "trial 2 early-stopped at epoch 2: value 5" in screen
        assert re.search(r"^trials 3/3 \|.+\| .* run 0 ok 2 stop 1 fail 0 best 1$", screen, re.M), screen
        assert re.search(r"^tune: 3 trials in \d+ s: 2 succeeded, 1 early-stopped, 0 failed; best 1$",
                         screen, re.M), screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


# ----------------------------------------------------------------------------------------------- retrain epochs
def test_seeds_retrained_together_report_each_epoch_as_it_ends(tmp_path):
    from hpo_lib.pipeline import records, retrain, steps
    from tests.conftest import prices_from_returns
    from tests.pipeline.conftest import sign_switch_returns

    frame = prices_from_returns(sign_switch_returns(600))["SYN"]
    frame.rename_axis("Date").reset_index().to_csv(tmp_path / "syn.csv", index=False)
    steps.prepare_data(f"file:{tmp_path / 'syn.csv'}", tmp_path / "prepared")
    args = retrain.retrain_args(["--model=lstm", "--hidden-size=8", "--num-layers=1", "--seq-len=5",
                                 "--split-window=10", "--epochs=3", "--threads=1"],
                                data=records.data_spec(tmp_path / "prepared"), eval_test=True)
    folders = {seed: tmp_path / f"seed{seed}" for seed in (0, 1)}
    heard = []

    def on_epoch(seed, phase, record, epochs):
        heard.append((seed, phase, dict(record), epochs, (folders[0] / "history.json").exists()))

    retrain.retrain_seeds(args, folders, test_origins=1, on_epoch=on_epoch)
    # epoch by epoch, each seed in turn, while the shared fit runs (before any seed's files are written)
    assert [(seed, int(record["epoch"])) for seed, _, record, _, _ in heard] == [
        (0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]
    assert {(phase, epochs) for _, phase, _, epochs, _ in heard} == {("fit", 3)}
    assert not any(written for *_, written in heard)
    # each seed hears its own records: those its history.json keeps
    for seed, folder in folders.items():
        kept = json.loads((folder / "history.json").read_text())
        assert [record for s, _, record, _, _ in heard if s == seed] == kept
    assert heard[0][2]["insample_val_loss"] != heard[1][2]["insample_val_loss"]
