"""Models: shapes, the registry, and that every family learns a predictable signal better than naive forecasts."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hpo_lib import data, models, train
from hpo_lib.data import baselines
from hpo_lib.errors import ConfigError

FAMILIES = ["mlp", "lstm", "gru", "cnn-lstm"]
OPTIONS = {  # the options users search, switched on so every branch runs
    "mlp": {"num_layers": 3, "hidden_size": 64, "width_decay": 0.5},
    "lstm": {"hidden_size": 32, "num_layers": 2, "bidirectional": True, "attention": True},
    "gru": {"hidden_size": 32, "num_layers": 1, "attention": True},
    "cnn-lstm": {"cnn_filters": 16, "kernel_size": 4, "cnn_layers": 2, "max_pool": True, "lstm_hidden": 32,
                 "bidirectional": True, "attention_heads": 4},
}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_every_family_maps_windows_to_outputs(name, n_outputs):
    model = models.build_model(name, n_features=8, window=20, n_outputs=n_outputs, params=OPTIONS[name])
    # (batch, window, features) -> (batch, n_outputs)
    assert model(torch.randn(5, 20, 8)).shape == (5, n_outputs)


# one small config per family (3 features, window 4, one output) and its parameter count by hand
SMALL = [
    # MLP: Linear(3*4 -> 10) 12*10+10 = 130; next width 10*0.5 = 5, raised to the 8-unit floor: Linear(10 -> 8) 88;
    # head Linear(8 -> 1) 9.  130 + 88 + 9 = 227
    ("mlp", {"hidden_size": 10, "num_layers": 2, "width_decay": 0.5}, 227),
    # LSTM(3 -> 4), one layer: 4 gates x (4*3 input + 4*4 recurrent weights + 2*4 biases) = 4 * 36 = 144;
    # attention pooling Linear(4 -> 1) 5; head Linear(4 -> 1) 5.  144 + 5 + 5 = 154
    ("lstm", {"hidden_size": 4, "num_layers": 1, "attention": True}, 154),
    # GRU(3 -> 4), one layer, both directions: 2 x 3 gates x 36 = 216; head Linear(2*4 -> 1) 9.  216 + 9 = 225
    ("gru", {"hidden_size": 4, "num_layers": 1, "bidirectional": True}, 225),
    # CNN-LSTM: Conv1d(3 -> 5, k=3) 3*5*3+5 = 50; Conv1d(5 -> 5, k=3) 5*5*3+5 = 80; LSTM(5 -> 4) 4 x (4*5 + 4*4 + 8)
    # = 176; head Linear(4 -> 1) 5.  50 + 80 + 176 + 5 = 311
    ("cnn-lstm", {"cnn_filters": 5, "kernel_size": 3, "cnn_layers": 2, "lstm_hidden": 4, "lstm_layers": 1}, 311),
]


@pytest.mark.parametrize("name, params, n_params", SMALL, ids=[s[0] for s in SMALL])
def test_parameter_count_and_size_of_a_small_config(name, params, n_params):
    model = models.build_model(name, n_features=3, window=4, n_outputs=1, params=params)
    # the exact count of the layers the config describes
    assert models.count_params(model) == n_params
    # float32 weights and no buffers: 4 bytes a parameter, in MB of 10^6 bytes (model_size_mb's unit)
    assert models.model_size_mb(model) == 4 * n_params / 1e6


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 7])
def test_convolutions_keep_the_time_axis_like_same_padding_without_warnings(kernel_size, recwarn):
    torch.manual_seed(0)
    layers = nn.Sequential(*models._same_length_conv(3, 5, kernel_size))
    reference = nn.Conv1d(3, 5, kernel_size, padding="same")
    reference.load_state_dict(layers[-1].state_dict())
    x = torch.randn(2, 3, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own "same" warns on even kernels; ours must not
        expected = reference(x)
    recwarn.clear()
    out = layers(x)
    # the same output as torch's padding='same', without its per-call warning
    assert out.shape == (2, 5, 11) and torch.allclose(out, expected, atol=1e-6)
    assert not [w for w in recwarn if "padding='same'" in str(w.message)]


def test_unknown_model_is_rejected():
    # a family the registry does not know is refused, naming it
    with pytest.raises(ConfigError, match="unknown model 'transformer'"):
        models.build_model("transformer", n_features=1, window=1, n_outputs=1, params={})


def test_attention_heads_must_divide_the_width():
    # attention heads that do not divide the LSTM width are refused, with both numbers
    with pytest.raises(ConfigError, match="attention_heads=8 must divide the LSTM output width 36"):
        models.build_model("cnn-lstm", n_features=3, window=10, n_outputs=1,
                           params={"lstm_hidden": 36, "attention_heads": 8})


def test_registry_lists_each_family_options():
    # each family reads its own knobs and not the others'
    assert "attention" in models.config_fields("lstm") and "cnn_filters" not in models.config_fields("lstm")
    assert "attention_heads" in models.config_fields("cnn-lstm") and "width_decay" in models.config_fields("mlp")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_beats_naive_baselines_on_a_learnable_series(name, ar1_prices):
    ds = data.prepare(ar1_prices, window=10, split_window=10)
    params = {**OPTIONS[name], "dropout": 0.0}
    model = models.build_model(name, n_features=ds.n_features, window=10, n_outputs=1, params=params)
    torch.set_num_threads(2)
    result = train.fit(model, ds, train.TrainConfig(epochs=25, batch_size=64, lr=3e-3, patience=8, seed=0))
    base = baselines.evaluate(ds).report
    best = baselines.best_baseline(base)
    # AR(1) with phi=0.6: the best achievable MSE is 64% of the variance, the best naive one (persistence) 80%
    assert result.best_val_loss < 0.95 * base[best]["val"]["loss"], (result.best_val_loss, base)
