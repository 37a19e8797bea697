"""The trial entrypoint: Katib-format output, files, and one clear line for every bad input."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import re
import resource
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hpo_lib import cli, metrics, models, train, trial, trial_contract
from hpo_lib.data import sources
from hpo_lib.errors import DataError
from hpo_lib.katib import contract

EPOCH_METRICS = sorted(metrics.epoch_metrics("return"))
FAST = ["--seq-len=10", "--split-window=10", "--hidden-size=8", "--num-layers=1", "--threads=2"]


@pytest.mark.e2e
def test_trial_process_prints_katib_lines_and_writes_outputs(tmp_path):
    out_dir = tmp_path / "trial"
    proc = subprocess.run([sys.executable, "-m", "hpo_lib.trial", "--model=lstm", "--data=sample:sp500",
                           "--epochs=2", "--patience=5", *FAST, f"--output-dir={out_dir}"],
                          capture_output=True, text=True, timeout=300)
    # the trial process exits 0
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    # one line per epoch plus the final line, nothing else on stdout
    assert len(lines) == 3
    for number, line in enumerate(lines[:2], start=1):
        stamp, values = contract.parse_metrics_line(line, EPOCH_METRICS)
        # Katib reads a real timestamp and every expected metric, each a finite number
        assert stamp != contract.ZERO_TIME
        # ... which is exactly the advertised metric contract
        assert set(values) == set(EPOCH_METRICS)
        assert all(math.isfinite(float(v)) for v in values.values())
        assert float(values["epoch"]) == number
    assert "final" in lines[2] and "best_val_loss=" in lines[2]
    # the human comparison with the naive baseline goes to stderr
    assert "the best naive baseline" in proc.stderr
    final = json.loads((out_dir / "metrics.json").read_text())
    # metrics.json names the best baseline among the baselines, and no test scores were asked for
    assert final["best_baseline"] in final["baselines"] and "test" not in final
    # weights load safely and fit a model rebuilt from the saved config
    config = json.loads((out_dir / "config.json").read_text())
    state = torch.load(out_dir / "model.pt", weights_only=True)
    model = models.build_model(config["model"], n_features=8, window=config["seq_len"], n_outputs=1, params=config)
    model.load_state_dict(state)


@pytest.mark.parametrize("target, extra, metric", [
    ("direction", ["--loss=focal"], "acc"),
    ("volatility", ["--horizon=5"], "rmse"),
    ("return", ["--eval-test"], "rmse"),
])
def test_each_target_runs_end_to_end(tmp_path, capsys, target, extra, metric):
    code = cli.main(["trial", "--model=mlp", "--data=sample:nasdaq", "--epochs=1", f"--target={target}", *FAST,
                     *extra, f"--output-dir={tmp_path}"])
    final = json.loads((tmp_path / "metrics.json").read_text())
    # exit code 0 for every target
    assert code == 0
    _, values = contract.parse_metrics_line(capsys.readouterr().out.splitlines()[0], metrics.epoch_metrics(target))
    # each target prints its own metric contract
    assert set(values) == metrics.epoch_metrics(target)
    # the model and its best naive baseline carry the same metrics
    assert metric in final["val"] and metric in final["baselines"][final["best_baseline"]]["val"]
    # the test split is scored only when asked for
    assert ("test" in final) == ("--eval-test" in extra)


def _short_file(tmp_path, sp500, rows=120):
    path = tmp_path / "short.csv"
    sp500["sp500"].iloc[:rows].reset_index().to_csv(path, index=False)
    return path


def _nan_file(tmp_path, sp500):
    path = tmp_path / "nan.csv"
    frame = sp500["sp500"].iloc[:2000].copy()
    frame.iloc[500, 3] = float("nan")
    frame.reset_index().to_csv(path, index=False)
    return path


BAD_INPUTS = [
    (["--model=transformer"], "--model must be one of mlp, lstm, gru, cnn-lstm, got 'transformer'"),
    (["--data=ftp:SPY"], "unknown data source 'ftp'"),
    (["--data=sample:dax"], "unknown sample 'dax'"),
    (["--lr=-0.1"], "--lr must be greater than 0, got -0.1"),
    (["--dropout=1"], "--dropout must be less than 1, got 1.0"),
    (["--num-layers=0"], "--num-layers must be at least 1, got 0"),
    (["--batch-size=abc"], "--batch-size expects an integer, got 'abc'"),
    (["--lr=nan"], "--lr must be a finite number"),
    (["--bidirectional=maybe"], "--bidirectional expects true or false"),
    (["--frobnicate=1"], "unknown flag --frobnicate"),
    (["positional"], "unexpected argument 'positional'"),
    (["--seq-len=120"], "--seq-len=120 exceeds --split-window=90"),
    (["--target=direction", "--loss=mse"], "loss 'mse' does not fit the direction target"),
    (["--data=file:{short}"], "series too short: short has 120 rows and needs at least 1003: 21 of feature warm-up"),
    (["--data=file:{nan}"], "nan: 1 row(s) with NaN prices, first on"),
]


@pytest.mark.parametrize("flags, message", BAD_INPUTS)
def test_bad_input_exits_non_zero_with_one_line(tmp_path, sp500, capsys, flags, message):
    paths = {"short": _short_file(tmp_path, sp500), "nan": _nan_file(tmp_path, sp500)}
    flags = [f.format(**paths) for f in flags]
    code = cli.main(["trial", "--epochs=1", *flags, f"--output-dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    # exit code 2, a single line that names the problem, nothing written
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("hpo: error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


def test_unknown_ticker_is_one_line(tmp_path, capsys, monkeypatch):
    # Yahoo answers nothing, and the retries wait no real time
    download = functools.partial(sources.download_yahoo, download=lambda *a: pd.DataFrame(), sleep=lambda s: None,
                                 reach=lambda: None)
    monkeypatch.setattr(sources, "download_yahoo", download)
    code = cli.main(["trial", "--data=yahoo:NOSUCHTICKER", f"--cache-dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "yahoo returned no data for NOSUCHTICKER" in err


def test_training_failure_is_one_line_with_the_flags_that_fix_it(tmp_path, capsys):
    # a learning rate that blows the loss up: the loop names the settings, the face turns them into flags
    code = cli.main(["trial", "--epochs=3", *FAST, "--lr=10", "--grad-clip=0", "--optimizer=sgd",
                     f"--output-dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert re.fullmatch(r"hpo: error: (training|validation) loss became (nan|inf) at epoch \d with learning rate 10; "
                        r"lower the learning rate.*; set with --lr.*", err), err


@pytest.mark.e2e
def test_bad_flag_in_a_real_process_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "hpo_lib.trial", "--dropout=1.5"], capture_output=True, text=True,
                          timeout=120)
    # exit code 2 and the one-line message, with no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "hpo: error: --dropout must be less than 1, got 1.5"


def test_help_lists_every_flag(capsys):
    # --help exits 0 and names every flag
    assert cli.main(["trial", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"--{f.replace('_', '-')}" in text for f in trial.TrialArgs.__dataclass_fields__)


def test_help_shows_each_flags_range_or_choices(capsys):
    assert cli.main(["trial", "--help"]) == 0
    text = capsys.readouterr().out
    # a bounded flag shows its range, a choice flag its choices, --check-flags is documented
    assert "--horizon            forecast horizon in trading days [1 <= x <= 60]" in text
    assert "[0 < x < 1]" in text and "[x >= 0]" in text and "[0 <= x < 1]" in text
    assert "[one of mlp, lstm, gru, cnn-lstm]" in text and "--check-flags" in text


def test_the_spelled_out_choices_are_the_modules_own():
    # the choices the trial parses without torch are exactly those of the modules that use them
    assert trial_contract.MODEL_NAMES == tuple(models.MODELS)
    assert (trial_contract.PACK, trial_contract.OPTIMIZERS) == (train.PACK, train.OPTIMIZERS)
    assert trial_contract.LOSSES == ("auto", *train.REGRESSION_LOSSES, *train.CLASSIFICATION_LOSSES)


def test_check_flags_accepts_valid_flags_silently_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trial, "run", lambda args: pytest.fail("--check-flags must not run the trial"))
    # exit 0, no output at all, no folder made
    assert cli.main(["trial", "--model=gru", "--lr=0.01", "--seq-len", "30", "--check-flags"]) == 0
    assert capsys.readouterr() == ("", "") and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, message", [
    (["--frobnicate=1"], "unknown flag --frobnicate"),
    (["--lr=0"], "--lr must be greater than 0, got 0.0"),
    (["--seq-len=120"], "--seq-len=120 exceeds --split-window=90"),
    (["--val-frac=0.5", "--test-frac=0.5"], "--val-frac + --test-frac must be below 1"),
])
def test_check_flags_refuses_what_a_run_refuses(capsys, flags, message):
    # exit 2 and the usual one line, the same as a real run would print
    assert cli.main(["trial", *flags, "--check-flags"]) == 2
    checked = capsys.readouterr().err
    assert checked.startswith(f"hpo: error: {message}") and checked.count("\n") == 1
    assert cli.main(["trial", *flags]) == 2
    assert capsys.readouterr().err == checked


@pytest.mark.e2e
@pytest.mark.parametrize("argv", [["trial", "--check-flags", "--model=lstm", "--lr=0.01"], ["trial", "--help"]])
def test_check_flags_and_help_answer_fast_without_torch(argv):
    script = ("import sys, time; t = time.perf_counter(); from hpo_lib import cli; code = cli.main(sys.argv[1:]); "
              "print('torch' in sys.modules, code, time.perf_counter() - t, file=sys.stderr)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the child, not the wall clock: under xdist another worker shares the cores
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    torch_loaded, code, _ = proc.stderr.split()
    # exit 0, torch never imported, and the whole process (interpreter start included) well under 1.5 s of CPU
    assert code == "0" and torch_loaded == "False"
    assert cpu_s < 1.5, cpu_s


def test_output_dir_defaults_to_the_engines_variable(monkeypatch, tmp_path):
    args = trial.parse_args(["--model=mlp"])
    monkeypatch.setenv("HPO_OUTPUT_DIR", str(tmp_path / "from-env"))
    # the variable the engine sets, unless --output-dir is given
    assert trial.output_dir_of(args) == tmp_path / "from-env"
    assert trial.output_dir_of(trial.parse_args([f"--output-dir={tmp_path}/flag"])) == tmp_path / "flag"
    monkeypatch.delenv("HPO_OUTPUT_DIR")
    monkeypatch.setenv("KATIB_TRIAL_NAME", "t-7")
    assert str(trial.output_dir_of(args)) == "local_outputs/trials/mlp-t-7"


def test_an_unusable_output_dir_fails_before_any_data_is_loaded(tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("")
    monkeypatch.setattr(trial, "load_datasets", lambda *a, **k: pytest.fail("data loaded before the folder check"))
    # exit 2, one line naming the folder; the check creates nothing
    assert cli.main(["trial", f"--output-dir={taken}/sub"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hpo: error: output folder {taken}/sub cannot be created: {taken} is a file; set with --output-dir"
    )
    trial.check_output_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()


def test_volatility_metric_names_are_katib_safe():
    names = metrics.epoch_metrics("volatility")
    # QLIKE and MSE on variance are reported for the model and for the best baseline, every epoch
    assert {"val_qlike", "val_var_mse", "baseline_val_qlike", "baseline_val_var_mse", "val_loss"} <= names
    # lowercase with underscores, which Katib's metrics filter keeps whole
    assert all(re.fullmatch(r"[a-z0-9_]+", n) and contract.METRIC_NAME.fullmatch(n) for n in names)
    assert "val_qlike" not in metrics.epoch_metrics("return")


def test_volatility_trial_reports_qlike_against_the_volatility_baselines(tmp_path, capsys):
    code = cli.main(["trial", "--model=mlp", "--data=sample:sp500", "--epochs=1", "--target=volatility",
                     "--horizon=5", "--eval-test", *FAST, f"--output-dir={tmp_path}"])
    out, err = capsys.readouterr()
    final = json.loads((tmp_path / "metrics.json").read_text())
    # exit code 0
    assert code == 0
    _, values = contract.parse_metrics_line(out.splitlines()[0], metrics.epoch_metrics("volatility"))
    # the epoch line carries the model's and the best baseline's QLIKE
    assert float(values["val_qlike"]) == pytest.approx(final["val"]["qlike"], rel=1e-5)
    assert float(values["baseline_val_qlike"]) == pytest.approx(
        final["baselines"][final["best_baseline"]]["val"]["qlike"], rel=1e-5)
    # GARCH, HAR-RV, EWMA and previous-window are all scored, on validation and test, with fitted parameters kept
    assert {"garch", "har", "ewma", "previous_window"} <= set(final["baselines"]) and not final["baseline_warnings"]
    assert all({"qlike", "var_mse", "rmse"} <= set(final["baselines"][n]["test"]) for n in final["baselines"])
    assert set(final["baseline_params"]) == {"garch", "har", "ewma"}
    # the best baseline is the one with the lowest validation QLIKE
    assert final["best_baseline"] == min(final["baselines"], key=lambda n: final["baselines"][n]["val"]["qlike"])
    # Diebold-Mariano on daily QLIKE, model against that baseline, on each scored split
    for part in ("val", "test"):
        dm = final["dm"][part]
        assert dm["loss"] == "qlike" and dm["n"] == final["splits"][part][2] and 0 <= dm["p_value"] <= 1
    assert "the best volatility baseline" in err and "DM p=" in err


def test_volatility_trial_on_a_short_series_warns_and_reports_the_other_baselines(tmp_path, sp500, capsys):
    path = _short_file(tmp_path, sp500, rows=380)
    code = cli.main(["trial", "--model=mlp", f"--data=file:{path}", "--epochs=1", "--target=volatility",
                     "--horizon=5", *FAST, f"--output-dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    final = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # a warning that names the problem, and the trial goes on
    assert code == 0
    assert "hpo: warning: baseline garch skipped: GARCH(1,1) needs at least 250 training returns" in err
    assert "garch" in final["baseline_warnings"] and "garch" not in final["baselines"]
    assert {"har", "ewma", "previous_window", "train_mean"} <= set(final["baselines"])


# ----------------------------------------------------------------------------------------------- one source of defaults
FLAG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(trial.TrialArgs)}


def test_training_defaults_are_the_trial_flag_defaults():
    config = {f.name: f.default for f in dataclasses.fields(train.TrainConfig)}
    # every training setting is a trial flag (train_config copies each one over) ...
    assert set(config) <= set(FLAG_DEFAULTS), sorted(set(config) - set(FLAG_DEFAULTS))
    # ... with the same default, so a config built in code trains as a bare `hpo trial` does
    assert {k: FLAG_DEFAULTS[k] for k in config if k != "loss"} == {k: v for k, v in config.items() if k != "loss"}
    # except the loss, which the flag spells "auto" and the trial resolves to the config's default for its target
    assert FLAG_DEFAULTS["loss"] == "auto" and trial.train_config(trial.TrialArgs()).loss == config["loss"] == "mse"


@pytest.mark.parametrize("family, config_cls", [
    ("mlp", models.MLPConfig), ("lstm", models.RecurrentConfig), ("cnn-lstm", models.CNNLSTMConfig),
], ids=["mlp", "recurrent", "cnn-lstm"])
def test_model_config_defaults_are_the_trial_flag_defaults(family, config_cls):
    config = {f.name: f.default for f in dataclasses.fields(config_cls) if f.default is not dataclasses.MISSING}
    shared = set(config) & set(FLAG_DEFAULTS)
    # every knob the family reads is a trial flag (all but the data shape and the registry's fixed cell) ...
    assert set(models.config_fields(family)) <= shared, sorted(set(models.config_fields(family)) - shared)
    # ... and each defaults the same way as its flag, so a model built in code is the one a bare trial builds
    assert {k: config[k] for k in shared} == {k: FLAG_DEFAULTS[k] for k in shared}


# ----------------------------------------------------------------------------------------------- replicas
# folds x seeds in one process: every replica gets exactly the updates it would get alone, packed or not
REPLICA_FAST = ["--seq-len=8", "--split-window=8", "--hidden-size=8", "--num-layers=2", "--threads=2", "--epochs=3"]


def _replica_args(*flags: str) -> trial.TrialArgs:
    return trial.parse_args(["--data=sample:sp500", "--val-frac=0.1", "--test-frac=0.1", *REPLICA_FAST, *flags])


def test_one_fold_one_seed_prints_todays_line(sp500, tmp_path):
    lines = {}
    for name, extra in (("plain", []), ("explicit", ["--folds=1", "--seeds=1", "--fold-train=rolling"])):
        out = io.StringIO()
        trial.run(_replica_args("--model=gru", *extra, f"--output-dir={tmp_path / name}"), out=out, err=io.StringIO())
        lines[name] = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    strip = [
        [" ".join(p for p in line.split() if not p.startswith("train_time_s=")) for line in v] for v in lines.values()
    ]
    # the same metrics, values and names, with no spread metrics: exactly the single-split trial
    assert strip[0] == strip[1]
    assert not any(name in lines["plain"][0] for name in metrics.ROBUST)


def test_several_replicas_print_their_spread_and_keep_every_curve(sp500, tmp_path):
    out = io.StringIO()
    final = trial.run(
        _replica_args("--model=mlp", "--folds=2", "--seeds=2", f"--output-dir={tmp_path}"), out=out, err=io.StringIO()
    )
    first, last = out.getvalue().splitlines()[0], out.getvalue().splitlines()[-1]
    # the epoch line carries the robust contract and nothing else
    names = {pair.split("=")[0] for pair in first.split()[1:]}
    assert names == metrics.epoch_metrics("return", robust=True)
    # the final line keeps each replica's validation loss at the best epoch
    assert "val_loss_fold1_seed0=" in last and "val_loss_fold2_seed1=" in last
    saved = json.loads((tmp_path / "metrics.json").read_text())
    # metrics.json keeps every replica's curve and every fold's bar
    assert len(saved["robust"]["replicas"]) == 4 and len(saved["robust"]["fold_splits"]) == 2
    assert saved["robust"]["replicas"][0]["history"][0]["epoch"] == 1
    # baseline_val_loss is the mean over folds of each fold's best baseline
    bars = [f["baseline_val_loss"] for f in saved["robust"]["fold_splits"]]
    assert final["baseline_val_loss"] == pytest.approx(np.mean(bars))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seeds=0"], "--seeds must be at least 1, got 0"),
        (["--folds=0"], "--folds must be at least 1, got 0"),
        (["--folds=40"], "too many folds for the data: 40 folds"),
        (["--fold-train=sliding"], "--fold-train must be one of expanding, rolling"),
        (["--embargo=-1"], "--embargo must be at least 0"),
        (["--model=lstm", "--folds=2", "--pack=on"], "has no packed form"),
    ],
)
def test_bad_robust_flags_are_one_line(flags, message, capsys):
    code = cli.main(["trial", "--data=sample:sp500", *REPLICA_FAST, *flags, "--output-dir=/tmp/unused-robust"])
    err = capsys.readouterr().err.strip()
    # exit 2 and one line naming the value and the rule
    assert code == 2 and err.count("\n") == 0 and message in err, err


def test_too_many_folds_names_the_rows(sp500):
    with pytest.raises(DataError) as info:
        trial.load_datasets(_replica_args("--folds=12"), prices=sp500)
    # the rows the first fold needs and the rows it has
    assert "training rows, and it needs" in str(info.value) and "use fewer folds" in str(info.value)
