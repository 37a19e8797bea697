"""The training loop: schedules, losses, early stopping, reproducibility, non-finite losses."""

from __future__ import annotations

import math

import pytest
import torch

from hpo_lib import data, models, train
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
