"""Initializers: shapes, dtypes, empirical spread against the torch.nn.init formulas, name lookup."""

from __future__ import annotations

import numpy as np
import pytest

from nn.initializers import INITIALIZERS, get_initializer

FAN_IN, FAN_OUT = 400, 250

EXPECTED_STD = {
    "he_normal": np.sqrt(2 / FAN_IN),
    "he_uniform": np.sqrt(6 / FAN_IN) / np.sqrt(3),
    "xavier_normal": np.sqrt(2 / (FAN_IN + FAN_OUT)),
    "xavier_uniform": np.sqrt(6 / (FAN_IN + FAN_OUT)) / np.sqrt(3),
    "glorot_normal": np.sqrt(2 / (FAN_IN + FAN_OUT)),
    "glorot_uniform": np.sqrt(6 / (FAN_IN + FAN_OUT)) / np.sqrt(3),
    "lecun_normal": np.sqrt(1 / FAN_IN),
    "small_random": 1 / np.sqrt(12),
}
UNIFORM_BOUND = {
    "he_uniform": np.sqrt(6 / FAN_IN),
    "xavier_uniform": np.sqrt(6 / (FAN_IN + FAN_OUT)),
    "glorot_uniform": np.sqrt(6 / (FAN_IN + FAN_OUT)),
    "small_random": 0.5,
}


def draw(name, dtype=np.float32, seed=0):
    return get_initializer(name)(FAN_IN, FAN_OUT, np.random.default_rng(seed), dtype)


def test_every_initializer_has_an_expected_std():
    assert set(INITIALIZERS) == set(EXPECTED_STD)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_and_dtype(name, dtype):
    w = draw(name, dtype)
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == dtype


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_empirical_std_and_mean_match_formula(name):
    w = draw(name, np.float64)
    assert w.std() == pytest.approx(EXPECTED_STD[name], rel=0.02)
    assert abs(w.mean()) < 0.02 * EXPECTED_STD[name] * 3


@pytest.mark.parametrize("name", sorted(UNIFORM_BOUND))
def test_uniform_initializers_fill_their_bounds(name):
    w = draw(name, np.float64)
    bound = UNIFORM_BOUND[name]
    assert np.abs(w).max() <= bound
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound


def test_small_random_range():
    w = draw("small_random")
    assert -0.5 <= w.min() < -0.49 and 0.49 < w.max() <= 0.5


@pytest.mark.parametrize("name", ["he_normal", "xavier_normal", "lecun_normal"])
def test_normal_initializers_are_gaussian_not_uniform(name):
    w = draw(name, np.float64)
    assert np.abs(w).max() > 3.5 * EXPECTED_STD[name]


def test_same_seed_same_weights_and_different_seed_differs():
    np.testing.assert_array_equal(draw("he_normal", seed=3), draw("he_normal", seed=3))
    assert not np.array_equal(draw("he_normal", seed=3), draw("he_normal", seed=4))


def test_glorot_names_alias_xavier():
    assert get_initializer("glorot_normal") is get_initializer("xavier_normal")
    assert get_initializer("glorot_uniform") is get_initializer("xavier_uniform")


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown initializer 'kaiming'") as excinfo:
        get_initializer("kaiming")
    assert all(name in str(excinfo.value) for name in INITIALIZERS)
