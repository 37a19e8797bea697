"""Folds x seeds in one process: every replica gets exactly the updates it would get alone, packed or not."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from hpo_lib import cli, data, metrics, models, train, trial
from hpo_lib.errors import ConfigError, DataError

FAST = ["--seq-len=8", "--split-window=8", "--hidden-size=8", "--num-layers=2", "--threads=2", "--epochs=3"]
FAMILY_FLAGS = {
    "mlp": ["--dropout=0.3"],
    "lstm": ["--dropout=0.2"],
    "gru": ["--dropout=0.2", "--attention"],
    "cnn-lstm": ["--cnn-filters=4", "--lstm-hidden=8", "--dropout=0.2"],
}


def _args(*flags: str) -> trial.TrialArgs:
    return trial.parse_args(["--data=sample:sp500", "--val-frac=0.1", "--test-frac=0.1", *FAST, *flags])


@pytest.mark.parametrize(
    "family, flags",
    [
        ("mlp", ["--fold-train=rolling", "--grad-clip=0.05"]),  # every replica in one packed model; clipping bites
        ("mlp", ["--target=direction", "--optimizer=adam", "--weight-decay=0.01"]),  # packed per fold (expanding)
        ("mlp", ["--target=volatility", "--loss=huber", "--optimizer=sgd", "--lr=0.01", "--folds=2"]),
        ("lstm", []),
        ("gru", ["--target=direction", "--loss=focal"]),
        ("cnn-lstm", ["--fold-train=rolling"]),
    ],
)
def test_each_replica_equals_its_own_lone_run(sp500, family, flags):
    flags = (
        ["--folds=3", "--seeds=2", *flags] if not any(f.startswith("--folds") for f in flags) else flags + ["--seeds=2"]
    )
    args = _args(f"--model={family}", *FAMILY_FLAGS[family], *flags)
    cfg = dataclasses.replace(trial.setup(args), patience=100)  # no early stop: every epoch compares
    datasets = trial.load_datasets(args, prices=sp500)
    replicas, built = trial.build_replicas(args, datasets)
    packed = train.fit_replicas(built, replicas, cfg)
    if family == "mlp":  # the MLP really packs: fewer groups than replicas
        assert len(train.plan(built, replicas)) < len(replicas)
    for r, got in zip(replicas, packed.replicas):
        # the same fold and seed trained alone, as a trial with --folds=1 on that fold's data would
        train.seed_everything(r.seed)
        alone = trial.build_model(args, r.ds)
        history = train.fit(alone, r.ds, dataclasses.replace(cfg, seed=r.seed)).history
        want = [h[metrics.OBJECTIVE] for h in history]
        have = [h[metrics.OBJECTIVE] for h in got.history]
        # per-epoch validation loss of the replica equals the lone run's, to float tolerance
        assert have == pytest.approx(want, rel=2e-5, abs=1e-7), (r.fold, r.seed)
        # and its kept weights are the lone run's at the same (best mean) epoch when that is the lone best too
        if int(np.argmin(want)) + 1 == packed.best_epoch:
            for k, v in alone.state_dict().items():
                torch.testing.assert_close(got.state_dict[k].to(v.dtype), v, rtol=1e-4, atol=1e-5)


def test_the_reported_record_is_the_mean_over_replicas(sp500):
    args = _args("--model=mlp", "--folds=2", "--seeds=2")
    cfg = trial.setup(args)
    replicas, built = trial.build_replicas(args, trial.load_datasets(args, prices=sp500))
    result = train.fit_replicas(built, replicas, cfg)
    losses = np.array([r.history[0][metrics.OBJECTIVE] for r in result.replicas])
    first = result.history[0]
    # val_loss is the mean, val_loss_sd the sample sd, val_loss_worst_fold the worst fold's mean over its seeds
    assert first[metrics.OBJECTIVE] == pytest.approx(losses.mean())
    assert first[metrics.VAL_SD] == pytest.approx(losses.std(ddof=1))
    assert first[metrics.VAL_WORST] == pytest.approx(max(losses[:2].mean(), losses[2:].mean()))
    # early stopping and the best epoch follow the mean curve
    curve = [h[metrics.OBJECTIVE] for h in result.history]
    assert result.best_epoch == int(np.argmin(curve)) + 1


def test_one_fold_one_seed_prints_todays_line(sp500, tmp_path):
    lines = {}
    for name, extra in (("plain", []), ("explicit", ["--folds=1", "--seeds=1", "--fold-train=rolling"])):
        out = io.StringIO()
        trial.run(_args("--model=gru", *extra, f"--output-dir={tmp_path / name}"), out=out, err=io.StringIO())
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
        _args("--model=mlp", "--folds=2", "--seeds=2", f"--output-dir={tmp_path}"), out=out, err=io.StringIO()
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
    code = cli.main(["trial", "--data=sample:sp500", *FAST, *flags, "--output-dir=/tmp/unused-robust"])
    err = capsys.readouterr().err.strip()
    # exit 2 and one line naming the value and the rule
    assert code == 2 and err.count("\n") == 0 and message in err, err


def test_too_many_folds_names_the_rows(sp500):
    with pytest.raises(DataError) as info:
        trial.load_datasets(_args("--folds=12"), prices=sp500)
    # the rows the first fold needs and the rows it has
    assert "training rows, and it needs" in str(info.value) and "use fewer folds" in str(info.value)


def test_a_packed_model_too_big_for_the_device_is_refused_before_training(sp500, monkeypatch):
    args = _args("--model=mlp", "--folds=2", "--seeds=4")
    replicas, built = trial.build_replicas(args, trial.load_datasets(args, prices=sp500))
    monkeypatch.setattr(train, "available_memory", lambda device: 1 << 20)  # 1 MiB free
    calls = []
    monkeypatch.setattr(train._Packed, "epoch", lambda *a: calls.append(a))
    with pytest.raises(ConfigError, match=r"8 replicas need an estimated [0-9.]+ GiB on cpu and 0.0 GiB is free"):
        train.fit_replicas(built, replicas, trial.setup(args))
    # refused before any step
    assert calls == []


def test_packing_is_per_family(sp500):
    ds = data.prepare(sp500, window=8, split_window=8)
    mlp = [models.build_model("mlp", n_features=ds.n_features, window=8, n_outputs=1, params={}) for _ in range(2)]
    gru = [models.build_model("gru", n_features=ds.n_features, window=8, n_outputs=1, params={}) for _ in range(2)]
    reps = [train.Replica(fold=0, seed=s, ds=ds) for s in range(2)]
    # the MLP packs (one group), a recurrent family trains its replicas one after another; off never packs
    assert train.plan(mlp, reps) == [[0, 1]] and train.plan(gru, reps) == [[0], [1]]
    assert train.plan(mlp, reps, "off") == [[0], [1]]
