"""The training loop: schedules, losses, early stopping, reproducibility, non-finite losses."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from hpo_lib import data, metrics, models, train, trial
from hpo_lib.errors import ConfigError, TrainingError


@pytest.mark.parametrize("scheduler, epoch, expected", [
    ("none", 9, 1.0),
    ("cosine", 0, 1.0), ("cosine", 5, 0.505), ("cosine", 10, 0.01),
    ("step", 0, 1.0), ("step", 2, 1.0), ("step", 3, 0.5), ("step", 5, 0.25), ("step", 10, 0.125),
    ("exponential", 0, 1.0), ("exponential", 5, 0.1), ("exponential", 10, 0.01),
])
def test_learning_rate_schedules(scheduler, epoch, expected):
    cfg = train.TrainConfig(lr=1.0, epochs=11, scheduler=scheduler)
    # each schedule's learning rate at an epoch, as a fraction of lr
    assert train.lr_at(epoch, cfg) == pytest.approx(expected)


def test_warmup_ramps_linearly_before_the_schedule():
    cfg = train.TrainConfig(lr=1.0, epochs=12, scheduler="cosine", warmup_epochs=2)
    # lr/10 at the first epoch, full lr when the schedule starts
    assert [round(train.lr_at(e, cfg), 3) for e in range(3)] == [0.1, 0.55, 1.0]


def test_focal_loss_without_focusing_is_weighted_cross_entropy():
    out, y = torch.randn(16, 2), torch.randint(0, 2, (16,)).float()
    focal = train.make_loss(train.TrainConfig(loss="focal", focal_alpha=0.5, focal_gamma=0.0), True)
    ce = train.make_loss(train.TrainConfig(loss="ce"), True)
    # gamma=0, alpha=0.5 weighs every sample by one half
    assert focal(out, y).item() == pytest.approx(0.5 * ce(out, y).item(), rel=1e-6)


@pytest.mark.parametrize("loss, classification", [("ce", False), ("mse", True)])
def test_loss_must_fit_the_target(loss, classification):
    # a loss of the other kind of target is refused by name
    with pytest.raises(ConfigError, match=f"loss '{loss}' does not fit"):
        train.make_loss(train.TrainConfig(loss=loss), classification)


@pytest.fixture(scope="module")
def small(sp500):
    frame = sp500["sp500"].iloc[:900]
    return data.prepare({"sp500": frame}, window=10, split_window=10)


def _model(ds):
    return models.build_model("gru", n_features=ds.n_features, window=10, n_outputs=1, params={"hidden_size": 8})


def test_patience_stops_when_validation_stalls(small):
    records = []
    # lr=0: the weights never change, so no epoch after the first improves on it
    result = train.fit(_model(small), small, train.TrainConfig(epochs=50, lr=0.0, patience=3), reporter=records.append)
    assert result.best_epoch == 1 and result.epochs_run == 4 and result.stopped_early
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]


def test_same_seed_same_history(small):
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # the trial seeds before it builds the model
        runs.append(train.fit(_model(small), small, train.TrainConfig(epochs=3, seed=7)).history)
    strip = lambda h: [{k: v for k, v in r.items() if k != "train_time_s"} for r in h]  # noqa: E731
    # same seed, same epochs: the same history, timing aside
    assert strip(runs[0]) == strip(runs[1])


def test_best_weights_are_restored(small):
    model = _model(small)
    result = train.fit(model, small, train.TrainConfig(epochs=6, lr=3e-2, patience=6))
    for key, value in model.state_dict().items():
        # the returned model carries the best epoch's weights, not the last epoch's
        assert torch.equal(value, result.state_dict[key])


def test_non_finite_loss_ends_training_with_a_clear_error(small):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return (x[:, -1, :1] * self.w) * math.inf

    # an infinite output is caught at its first epoch, with a message that names it
    with pytest.raises(TrainingError, match="training loss became nan at epoch 1"):
        train.fit(Exploding(), small, train.TrainConfig(epochs=2))


def test_cuda_request_without_a_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    # asking for CUDA on a machine without one is a ConfigError
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train.select_device("cuda")


# ----------------------------------------------------------------------------------------------- replicas
# folds x seeds in one process: every replica gets exactly the updates it would get alone, packed or not
REPLICA_FAST = ["--seq-len=8", "--split-window=8", "--hidden-size=8", "--num-layers=2", "--threads=2", "--epochs=3"]
FAMILY_FLAGS = {
    "mlp": ["--dropout=0.3"],
    "lstm": ["--dropout=0.2"],
    "gru": ["--dropout=0.2", "--attention"],
    "cnn-lstm": ["--cnn-filters=4", "--lstm-hidden=8", "--dropout=0.2"],
}


def _replica_args(*flags: str) -> trial.TrialArgs:
    return trial.parse_args(["--data=sample:sp500", "--val-frac=0.1", "--test-frac=0.1", *REPLICA_FAST, *flags])


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
    args = _replica_args(f"--model={family}", *FAMILY_FLAGS[family], *flags)
    cfg = dataclasses.replace(trial.configure(args), patience=100)  # no early stop: every epoch compares
    datasets = trial.load_datasets(args, prices=sp500)
    replicas, built = trial.build_replicas(args, datasets)
    packed = train.fit_replicas(built, replicas, cfg)
    if family == "mlp":  # the MLP really packs: fewer groups than replicas
        assert len(train.pack_groups(built, replicas)) < len(replicas)
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
    args = _replica_args("--model=mlp", "--folds=2", "--seeds=2")
    cfg = trial.configure(args)
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


def test_a_packed_model_too_big_for_the_device_is_refused_before_training(sp500, monkeypatch):
    args = _replica_args("--model=mlp", "--folds=2", "--seeds=4")
    replicas, built = trial.build_replicas(args, trial.load_datasets(args, prices=sp500))
    monkeypatch.setattr(train, "available_memory", lambda device: 1 << 20)  # 1 MiB free
    calls = []
    monkeypatch.setattr(train._Packed, "epoch", lambda *a: calls.append(a))
    with pytest.raises(ConfigError, match=r"8 replicas need an estimated [0-9.]+ GiB on cpu and 0.0 GiB is free"):
        train.fit_replicas(built, replicas, trial.configure(args))
    # refused before any step
    assert calls == []


def test_packing_is_per_family(sp500):
    ds = data.prepare(sp500, window=8, split_window=8)
    mlp = [models.build_model("mlp", n_features=ds.n_features, window=8, n_outputs=1, params={}) for _ in range(2)]
    gru = [models.build_model("gru", n_features=ds.n_features, window=8, n_outputs=1, params={}) for _ in range(2)]
    reps = [train.Replica(fold=0, seed=s, ds=ds) for s in range(2)]
    # the MLP packs (one group), a recurrent family trains its replicas one after another; off never packs
    assert train.pack_groups(mlp, reps) == [[0, 1]] and train.pack_groups(gru, reps) == [[0], [1]]
    assert train.pack_groups(mlp, reps, "off") == [[0], [1]]
