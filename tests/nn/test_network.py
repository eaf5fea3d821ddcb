"""Network and mlp: structure, parameter naming, prediction helpers, dtype, whole-network gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from nn.activations import GELU, ReLU, Tanh
from nn.gradcheck import check_network, numeric_gradient, relative_error
from nn.layers import Dense, Dropout
from nn.losses import SoftmaxCrossEntropy
from nn.network import Network, mlp

TOL = 1e-7


def small_net(seed=0, **kwargs):
    return mlp([5, 7, 6, 3], rng=np.random.default_rng(seed), **kwargs)


def random_biases(net, seed):
    rng = np.random.default_rng(seed)
    for key, value in net.params.items():
        if key.endswith(".b"):
            value[...] = rng.uniform(0.1, 0.5, value.shape) * rng.choice([-1.0, 1.0], value.shape)
    return net


def data(seed=0, n=11, d=5, k=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 1.0, (n, d)) * rng.choice([-1.0, 1.0], (n, d)), rng.integers(0, k, n)


def test_mlp_layer_names_and_types():
    net = small_net()
    assert net.names == ["dense0", "relu0", "dense1", "relu1", "dense2"]
    assert [type(layer) for layer in net.layers] == [Dense, ReLU, Dense, ReLU, Dense]


def test_mlp_with_dropout_layers():
    net = small_net(activation="tanh", dropout=0.3, input_dropout=0.1)
    assert net.names == ["dropout0", "dense0", "tanh0", "dropout1", "dense1", "tanh1", "dropout2", "dense2"]
    assert [layer.p for layer in net.layers if isinstance(layer, Dropout)] == [0.1, 0.3, 0.3]


def test_param_names_and_shapes():
    net = small_net()
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {
        "dense0.W": (5, 7),
        "dense0.b": (7,),
        "dense1.W": (7, 6),
        "dense1.b": (6,),
        "dense2.W": (6, 3),
        "dense2.b": (3,),
    }
    assert (net.input_dim, net.num_classes) == (5, 3)


def test_grads_have_the_same_keys_and_shapes_as_params():
    net = small_net()
    x, y = data()
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(x.astype(np.float32), training=True), y)
    net.backward(loss.backward())
    assert list(net.grads) == list(net.params)
    assert all(net.grads[k].shape == v.shape for k, v in net.params.items())
    assert all(net.grads[k].any() for k in net.params)


def test_params_are_the_layer_arrays():
    net = small_net()
    net.params["dense1.b"][...] = 7.0
    assert (net.layers[2].params["b"] == 7.0).all()


def test_mlp_defaults_to_float32():
    net = small_net()
    assert net.dtype == np.float32
    assert all(v.dtype == np.float32 for v in [*net.params.values(), *net.grads.values()])
    assert net.forward(data()[0].astype(np.float32)).dtype == np.float32


def test_mlp_same_seed_same_weights():
    a, b, c = small_net(3), small_net(3), small_net(4)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["dense0.W"], c.params["dense0.W"])


def test_predict_proba_predict_and_evaluate_agree():
    net = small_net(1, activation="gelu")
    x, y = data(1, n=23)
    proba = net.predict_proba(x)
    assert proba.shape == (23, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    pred = net.predict(x)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    loss, acc = net.evaluate(x, y)
    assert acc == np.mean(pred == y)
    assert loss == pytest.approx(-np.mean(np.log(proba[np.arange(23), y])), rel=1e-5)
    loss_again, acc_again, probabilities = net.evaluate(x, y, batch_size=5, probabilities=True)
    assert (loss_again, acc_again) == pytest.approx((loss, acc), rel=1e-6)
    np.testing.assert_allclose(probabilities, proba, rtol=1e-6)


def test_batch_size_does_not_change_results():
    net = small_net(2)
    x, y = data(2, n=23)
    np.testing.assert_allclose(net.predict_proba(x, batch_size=4), net.predict_proba(x), rtol=1e-6)
    np.testing.assert_array_equal(net.predict(x, batch_size=5), net.predict(x))
    assert net.evaluate(x, y, batch_size=6) == pytest.approx(net.evaluate(x, y), rel=1e-6)


def test_predictions_ignore_dropout():
    net = small_net(3, dropout=0.5)
    x, _ = data(3)
    np.testing.assert_array_equal(net.predict_proba(x), net.predict_proba(x))


def test_set_params_copies_values():
    net, other = small_net(4), small_net(5)
    values = {k: v.copy() for k, v in other.params.items()}
    net.set_params(values)
    for k in values:
        np.testing.assert_array_equal(net.params[k], other.params[k])
        assert net.params[k] is not values[k]


def test_set_params_rejects_wrong_names():
    net = small_net()
    values = dict(net.params)
    values.pop("dense2.b")
    with pytest.raises(ValueError, match="parameter names differ"):
        net.set_params(values)
    with pytest.raises(ValueError, match="parameter names differ"):
        net.set_params({**net.params, "dense3.W": np.zeros((3, 3))})


def test_set_params_rejects_wrong_shapes():
    net = small_net()
    values = {**net.params, "dense1.W": np.zeros((6, 7))}
    with pytest.raises(ValueError, match=r"dense1.W: expected shape \(7, 6\)"):
        net.set_params(values)


def test_astype_float64():
    net = small_net()
    before = {k: v.copy() for k, v in net.params.items()}
    assert net.astype(np.float64) is net
    assert net.dtype == np.float64
    assert all(v.dtype == np.float64 for v in [*net.params.values(), *net.grads.values()])
    assert all(np.array_equal(net.params[k], before[k]) for k in before)
    assert net.forward(data()[0]).dtype == np.float64


def test_first_dense_skips_input_gradient():
    net = small_net()
    x, y = data()
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(x.astype(np.float32)), y)
    assert net.backward(loss.backward()) is None


def test_backward_returns_input_gradient_after_input_dropout():
    net = small_net(input_dropout=0.2)
    x, y = data()
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(x.astype(np.float32)), y)
    assert net.backward(loss.backward()).shape == x.shape


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid", "leaky_relu"])
def test_whole_network_gradient_check(activation):
    net = mlp([5, 7, 6, 3], activation=activation, init="xavier_normal", rng=np.random.default_rng(6), dtype=np.float64)
    random_biases(net, 7)
    x, y = data(6)
    errors = check_network(net, x, y)
    assert set(errors) == set(net.params)
    assert max(errors.values()) < TOL, errors


def training_mode_gradient_errors(net, x, y, rng=None):
    loss = SoftmaxCrossEntropy()
    state = rng.bit_generator.state if rng is not None else None

    def objective():
        if rng is not None:
            rng.bit_generator.state = state
        return loss.forward(net.forward(x, training=True), y)

    objective()
    net.backward(loss.backward())
    analytic = {k: v.copy() for k, v in net.grads.items()}
    return {k: relative_error(analytic[k], numeric_gradient(objective, p)) for k, p in net.params.items()}


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_whole_network_gradient_check_with_frozen_dropout(activation):
    rng = np.random.default_rng(8)
    net = mlp([5, 7, 6, 3], activation=activation, init="xavier_normal", dropout=0.3, rng=rng, dtype=np.float64)
    random_biases(net, 10)
    x, y = data(8)
    errors = training_mode_gradient_errors(net, x, y, rng)
    assert max(errors.values()) < TOL, errors
    masks = [layer._mask for layer in net.layers if isinstance(layer, Dropout)]
    assert all(m is not None and (m == 0).any() for m in masks)


def test_whole_network_gradient_check_with_p_zero_dropout_in_training():
    rng = np.random.default_rng(9)
    layers = [Dropout(0.0), Dense(5, 7, rng=rng, dtype=np.float64), Tanh(), Dropout(0.0)]
    net = Network([*layers, Dense(7, 3, rng=rng, dtype=np.float64)])
    x, y = data(9)
    errors = training_mode_gradient_errors(net, x, y)
    assert max(errors.values()) < TOL, errors


def test_manual_network_naming_counts_each_kind():
    rng = np.random.default_rng(0)
    net = Network([Dense(2, 3, rng=rng), Tanh(), Dense(3, 3, rng=rng), GELU(), Dense(3, 2, rng=rng)])
    assert net.names == ["dense0", "tanh0", "dense1", "gelu0", "dense2"]
    assert "dense2: Dense(in_features=3, out_features=2" in repr(net)


def test_network_needs_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        Network([])


@pytest.mark.parametrize("sizes", [[5], [], [5, 0, 3]])
def test_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes"):
        mlp(sizes)


def test_mlp_unknown_activation_lists_choices():
    with pytest.raises(ValueError, match="activation='swish' is not allowed: activation must be one of relu.*gelu"):
        mlp([4, 3], activation="swish")
