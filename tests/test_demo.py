"""`make demo` as a new user runs it: the flags its target passes let Katib's median stopping rule stop trials,
leave the searched parameters to the sampler, fit the bundled data with the largest sampled window, give the
retrains the trials' splits, and end with the time it took. Not a timing test: the flags that keep it short."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from hpo_lib.katib import experiment
from hpo_lib.pipeline import local, retrain
from hpo_lib.trial import assemble

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "lstm-experiment.yaml"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_n(*args: str) -> str:
    """What ``make -n args`` prints: the commands, not run. Run as a user would, not as a sub-make of `make test`
    (whose MAKEFLAGS and MAKELEVEL would add "Entering directory" lines)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    return subprocess.run(["make", "--no-print-directory", "-n", *args, "STAMP="], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


def demo_commands(target: str = "demo") -> dict[str, list[str]]:
    """The commands ``make <target>`` runs (``make -n``: printed, not run), by subcommand: tune, report, pipeline."""
    printed = make_n(target, "DEMO_STATE=/tmp/demo-state")
    script = printed.strip().splitlines()[-1]
    commands = {}
    for part in script.split(";"):
        words = shlex.split(part.strip())
        if words[:1] == ["run"]:
            commands[words[2] if words[2] != "pipeline" else "pipeline"] = words[1:]
    return commands


def option(argv: list[str], name: str) -> str:
    """The value of ``name`` (``--name value`` or ``--name=value``); the last one wins, as in argparse."""
    found = None
    for i, word in enumerate(argv):
        if word == name:
            found = argv[i + 1]
        elif word.startswith(name + "="):
            found = word.split("=", 1)[1]
    assert found is not None, f"{name} missing from {argv}"
    return found


def overrides(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, word in enumerate(argv) if word == "--set")


def test_the_demo_gives_the_median_stopping_rule_trials_to_stop():
    tune = demo_commands()["tune"]
    doc = experiment.load_experiment(MANIFEST)
    rule = experiment.settings(doc["spec"]["earlyStopping"])
    assert doc["spec"]["earlyStopping"]["algorithmName"] == "medianstop" and Path(tune[2]) == Path(
        "manifests/lstm-experiment.yaml")
    min_trials, start_step = int(rule["min_trials_required"]), int(rule["start_step"])
    epochs, trials = int(overrides(tune)["epochs"]), int(option(tune, "--max-trials"))
    parallel = int(option(tune, "--parallel"))
    # a stop saves epochs: the check (at report start_step) comes before the last epoch, with some to spare
    assert epochs - start_step >= 2
    # Katib freezes a trial's rule when it is created, and only once min_trials_required trials succeeded: with
    # `parallel` at once, trial number min_trials + parallel - 1 is the first with a rule; at least two are checked
    assert trials - (min_trials + parallel - 1) >= 2


def test_the_demo_sets_no_searched_parameter():
    tune = demo_commands()["tune"]
    searched = {p["name"] for p in experiment.load_experiment(MANIFEST)["spec"]["parameters"]}
    # the export would record the --set value as the sampled one: only fixed flags are set
    assert overrides(tune) and not set(overrides(tune)) & searched


def test_the_demo_window_fits_the_largest_sampled_input_and_the_retrains_share_its_splits():
    commands = demo_commands()
    doc = experiment.load_experiment(MANIFEST)
    # a sampled trial: each parameter at its first value, seq-len at its largest
    space = {p["name"]: p["feasibleSpace"] for p in doc["spec"]["parameters"]}
    largest = {name: (f["list"][0] if "list" in f else f["min"]) for name, f in space.items()}
    largest["seq-len"] = max(space["seq-len"]["list"], key=int)
    trial = experiment.trial_command(doc, largest, overrides(commands["tune"])).flags
    args = retrain.retrain_args(trial)
    # the tuning folds and the retrain's refit split both exist for the longest window the sampler can draw
    # (a DataError names what is missing otherwise)
    assert args.seq_len == int(largest["seq-len"]) and args.data.startswith("sample:")
    assert len(assemble.load_datasets(args)) == args.folds
    # run-local puts the tuned trials' problem flags (from their config.json) before the demo's --retrain-flags
    problem = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in local.PROBLEM_FLAGS]
    extra = problem + shlex.split(option(commands["pipeline"], "--retrain-flags"))
    refit = retrain.retrain_args(experiment.trial_command(doc, largest).flags + extra, data=args.data)
    assert (refit.val_frac, refit.test_frac) == (args.val_frac, args.test_frac)
    assert assemble.load_dataset(refit, refit=True).split.test.size >= 30


def test_the_demo_prints_the_time_it_took_and_the_full_run_stays_one_command_away():
    printed = make_n("demo", "demo-full")
    assert re.search(r'echo "demo finished in \$\(\(s / 60\)\) min \$\(\(s % 60\)\) s"', printed)
    assert 'echo "demo-full finished in' in printed
    full = demo_commands("demo-full")
    # the long run tunes the same manifest on more data and trials at once, in its own state folder
    assert Path(full["tune"][2]) == Path("manifests/lstm-experiment.yaml")
    assert option(full["tune"], "--state-dir") != option(demo_commands()["tune"], "--state-dir")
