"""save/load: round trips rebuild the architecture without a config; bad files raise ModelFileError."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nn.serialization
from nn.activations import GELU, LeakyReLU, Sigmoid, Softmax
from nn.layers import Dense, Dropout
from nn.network import Network, mlp
from nn.serialization import HEADER, ModelFileError, architecture, load, save


def inputs(d=6, n=9):
    return np.random.default_rng(1).standard_normal((n, d))


def layer_description(net):
    return [(type(layer).__name__, layer.config()) for layer in net.layers]


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_rebuilds_architecture_and_predictions(tmp_path, activation, dtype):
    net = mlp(
        [6, 8, 5, 3],
        activation=activation,
        init="xavier_uniform",
        dropout=0.25,
        input_dropout=0.1,
        rng=np.random.default_rng(0),
        dtype=dtype,
    )
    for value in net.params.values():
        value += 0.01
    loaded = load(save(net, tmp_path / "model.npz"))
    assert loaded.names == net.names
    assert layer_description(loaded) == layer_description(net)
    assert loaded.dtype == dtype
    for key, value in net.params.items():
        assert loaded.params[key].dtype == dtype
        np.testing.assert_array_equal(loaded.params[key], value)
    np.testing.assert_array_equal(loaded.predict_proba(inputs()), net.predict_proba(inputs()))


def test_round_trip_keeps_layer_options(tmp_path):
    rng = np.random.default_rng(0)
    net = Network([Dense(6, 4, rng=rng), LeakyReLU(0.3), Dropout(0.4), Dense(4, 4, rng=rng), Sigmoid(), Softmax()])
    loaded = load(save(net, tmp_path / "custom"))
    assert layer_description(loaded) == [
        ("Dense", {"in_features": 6, "out_features": 4, "init": "he_normal"}),
        ("LeakyReLU", {"negative_slope": 0.3}),
        ("Dropout", {"p": 0.4}),
        ("Dense", {"in_features": 4, "out_features": 4, "init": "he_normal"}),
        ("Sigmoid", {}),
        ("Softmax", {}),
    ]
    np.testing.assert_array_equal(
        loaded.forward(inputs(6).astype(np.float32)), net.forward(inputs(6).astype(np.float32))
    )


def test_loaded_dropout_draws_from_given_rng(tmp_path):
    path = save(mlp([6, 5, 2], dropout=0.5, rng=np.random.default_rng(0)), tmp_path / "m")
    x = inputs().astype(np.float32)
    a = load(path, rng=np.random.default_rng(3)).forward(x, training=True)
    b = load(path, rng=np.random.default_rng(3)).forward(x, training=True)
    np.testing.assert_array_equal(a, b)
    c = load(path, rng=np.random.default_rng(4)).forward(x, training=True)
    assert not np.array_equal(a, c)  # the masks come from the generator given, not one of load's own


def test_npz_suffix_is_appended(tmp_path):
    net = mlp([3, 2], rng=np.random.default_rng(0))
    assert save(net, tmp_path / "model") == tmp_path / "model.npz"
    assert save(net, tmp_path / "model.best") == tmp_path / "model.best.npz"
    assert save(net, tmp_path / "again.npz") == tmp_path / "again.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.npz", "model.best.npz", "model.npz"]


def test_network_save_method_and_parent_directories(tmp_path):
    net = mlp([3, 2], rng=np.random.default_rng(0))
    net.save(tmp_path / "a" / "b" / "net")
    assert (tmp_path / "a" / "b" / "net.npz").is_file()


def test_save_leaves_no_temporary_file(tmp_path):
    net = mlp([3, 2], rng=np.random.default_rng(0))
    save(net, tmp_path / "model")
    save(net, tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_failed_save_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch):
    old = mlp([3, 2], rng=np.random.default_rng(0))
    path = save(old, tmp_path / "model")
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nn.serialization.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(mlp([3, 2], rng=np.random.default_rng(1)), path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    assert path.read_bytes() == before


def test_header_is_json_architecture(tmp_path):
    net = mlp([4, 3, 2], activation="gelu", rng=np.random.default_rng(0))
    with np.load(save(net, tmp_path / "m"), allow_pickle=False) as npz:
        header = json.loads(str(npz[HEADER]))
        assert sorted(npz.files) == sorted([HEADER, *net.params])
    assert header == architecture(net)
    assert header["format"] == "nnlab.network" and header["dtype"] == "float32"


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load(tmp_path / "absent.npz")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load(tmp_path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are not weights\n")
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        load(path)


def test_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        load(path)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_npz(tmp_path, keep):
    path = save(mlp([20, 10, 3], rng=np.random.default_rng(0)), tmp_path / "model")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="truncated"):
        load(path)


def test_npz_without_header(tmp_path):
    net = mlp([3, 2], rng=np.random.default_rng(0))
    path = tmp_path / "weights.npz"
    np.savez(path, **net.params)
    with pytest.raises(ModelFileError, match="without the '__nnlab__'"):
        load(path)


def write_with_header(path, header, params):
    np.savez(path, **{HEADER: np.array(json.dumps(header))}, **params)
    return path


def test_header_with_mismatched_shapes(tmp_path):
    net = mlp([4, 3, 2], rng=np.random.default_rng(0))
    params = dict(net.params)
    params["dense1.W"] = params["dense1.W"].T.copy()
    path = write_with_header(tmp_path / "bad.npz", architecture(net), params)
    with pytest.raises(ModelFileError, match=r"do not fit together.*dense1.W"):
        load(path)


def test_header_with_missing_weights(tmp_path):
    net = mlp([4, 3, 2], rng=np.random.default_rng(0))
    params = dict(net.params)
    del params["dense0.b"]
    with pytest.raises(ModelFileError, match="do not fit together"):
        load(write_with_header(tmp_path / "bad.npz", architecture(net), params))


@pytest.mark.parametrize(
    "change",
    [
        {"format": "other"},
        {"version": 99},
        {"layers": [{"type": "Conv2d", "config": {}}]},
        {"dtype": "not-a-dtype"},
    ],
    ids=["format", "version", "layer-type", "dtype"],
)
def test_header_with_bad_architecture(tmp_path, change):
    net = mlp([4, 2], rng=np.random.default_rng(0))
    path = write_with_header(tmp_path / "bad.npz", {**architecture(net), **change}, net.params)
    with pytest.raises(ModelFileError, match="do not fit together"):
        load(path)


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)
    assert GELU.__name__ in nn.serialization.LAYER_TYPES
