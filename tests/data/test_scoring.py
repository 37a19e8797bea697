"""Diebold-Mariano with the Harvey-Leybourne-Newbold correction: known values, edge cases and size under the null."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_lib.errors import DataError
from hpo_lib.data.scoring import diebold_mariano


def _ma_losses(h: int, n: int = 120, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Loss pairs whose differential is autocorrelated up to lag h-1, as overlapping h-step forecasts make it."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n + h)
    loss_a = np.convolve(e, np.ones(h), "valid")[:n] ** 2 + 0.3
    loss_b = rng.normal(size=n) ** 2 + 0.1 * loss_a
    return loss_a, loss_b


# reference values from the independent `dieboldmariano` 1.1.0 package (dm_test, acf variance, Harvey correction)
@pytest.mark.parametrize("horizon, statistic, p_value", [
    (1, 2.4761074904705556, 0.014688698130747028),
    (3, 4.701188187462346, 7.0180975618221926e-06),
    (5, 2.6726382738620873, 0.008581655907951171),
])
def test_dm_matches_an_independent_implementation(horizon, statistic, p_value):
    rng = np.random.default_rng(3)
    for h in (1, 3, 5):  # the reference drew the three cases from one generator, in this order
        e = rng.normal(size=120 + h)
        loss_a = np.convolve(e, np.ones(h), "valid")[:120] ** 2 + 0.3
        loss_b = rng.normal(size=120) ** 2 + 0.1 * loss_a
        if h == horizon:
            break
    result = diebold_mariano(loss_a, loss_b, horizon)
    # same statistic and two-sided Student-t p-value as the reference
    assert result.statistic == pytest.approx(statistic, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-6)
    assert result.n == 120 and result.mean_diff == pytest.approx(np.mean(loss_a - loss_b))


def test_dm_hln_formula_by_hand_for_one_step():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 1.0, 2.5, 2.0])
    d = a - b
    # h = 1: variance is gamma_0, correction sqrt((n - 1) / n)
    expected = d.mean() / np.sqrt(d.var() / 4) * np.sqrt(3 / 4)
    assert diebold_mariano(a, b, 1).statistic == pytest.approx(expected)


def test_identical_losses_give_p_value_one():
    loss = np.random.default_rng(0).random(50)
    result = diebold_mariano(loss, loss.copy(), 2)
    # no differential at all: nothing to reject
    assert (result.statistic, result.p_value, result.mean_diff, result.n) == (0.0, 1.0, 0.0, 50)


def test_clearly_better_forecast_has_a_small_p_value_and_the_sign_says_which():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=300)
    good = (truth - (truth + rng.normal(0, 0.3, 300))) ** 2
    bad = (truth - (truth + rng.normal(0, 1.0, 300))) ** 2
    result = diebold_mariano(bad, good, 1)
    # A (bad) has the larger loss: positive statistic, tiny p-value
    assert result.statistic > 5 and result.p_value < 1e-6 and result.mean_diff > 0


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_swapping_the_forecasts_flips_the_sign_and_keeps_the_p_value(horizon):
    a, b = _ma_losses(horizon)
    ab, ba = diebold_mariano(a, b, horizon), diebold_mariano(b, a, horizon)
    assert ba.statistic == pytest.approx(-ab.statistic)
    assert ba.p_value == pytest.approx(ab.p_value)
    assert ba.mean_diff == pytest.approx(-ab.mean_diff)


@pytest.mark.parametrize("horizon, low, high", [(1, 0.03, 0.07), (3, 0.03, 0.09)])
def test_rejection_rate_under_equal_accuracy_is_near_the_nominal_level(horizon, low, high):
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(400):
        e = rng.normal(size=(2, 150 + horizon))
        a = np.convolve(e[0], np.ones(horizon), "valid")[:150] ** 2
        b = np.convolve(e[1], np.ones(horizon), "valid")[:150] ** 2
        rejected += diebold_mariano(a, b, horizon).p_value < 0.05
    # about 5% of equally accurate pairs are rejected at the 5% level
    assert low <= rejected / 400 <= high


@pytest.mark.parametrize("a, b, horizon, message", [
    (np.ones(5), np.zeros(5), 3, "needs at least 6 loss pairs for horizon=3 (max(3, 2 * horizon)), got 5"),
    (np.ones(2), np.zeros(2), 1, "needs at least 3 loss pairs for horizon=1"),
    (np.ones(10), np.zeros(9), 1, "must be 1-D and of equal length, got shapes (10,) and (9,)"),
    (np.ones((5, 2)), np.ones((5, 2)), 1, "must be 1-D and of equal length"),
    (np.r_[np.ones(9), np.nan], np.zeros(10), 1, "contain 1 non-finite value(s)"),
    (np.ones(10), np.zeros(10), 0, "horizon must be an integer of at least 1, got 0"),
    (np.ones(10), np.zeros(10), 1.5, "horizon must be an integer of at least 1, got 1.5"),
    (np.full(10, 2.0), np.ones(10), 1, "the loss differential is constant (1 on all 10 samples)"),
])
def test_bad_input_names_the_problem(a, b, horizon, message):
    with pytest.raises(DataError) as info:
        diebold_mariano(a, b, horizon)
    assert message in str(info.value)
