"""Optimizers against the torch.optim update rules written out by hand, chunking, state, validation."""

from __future__ import annotations

import numpy as np
import pytest

import nn.optimizers
from nn.optimizers import SGD, Adam, AdamW, RMSprop

STEPS = 3
LRS = [0.1, 0.05, 0.02]
pytestmark = pytest.mark.usefixtures("elementwise_kernels")  # NumPy's passes, then the compiled ones


def ref_sgd(p, grads, lrs, wd=0.0, momentum=0.0, dampening=0.0, nesterov=False):
    p, buf = p.copy(), None
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g + wd * p
        if momentum:
            buf = g.copy() if t == 1 else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adam(p, grads, lrs, wd=0.0, betas=(0.9, 0.999), eps=1e-8, decoupled=False):
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_rmsprop(p, grads, lrs, wd=0.0, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
    p, v, g_avg, buf = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        g = g + wd * p
        v = alpha * v + (1 - alpha) * g * g
        v_tilde = v
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
            v_tilde = v - g_avg * g_avg
        if momentum:
            buf = momentum * buf + g / (np.sqrt(v_tilde) + eps)
            p = p - lr * buf
        else:
            p = p - lr * g / (np.sqrt(v_tilde) + eps)
    return p


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"dense0.W": rng.standard_normal((2, 3)), "dense0.b": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


def run(optimizer, params, grads, lrs=None):
    params = {k: v.copy() for k, v in params.items()}
    for t, step_grads in enumerate(grads):
        optimizer.step(params, {k: v.copy() for k, v in step_grads.items()}, None if lrs is None else lrs[t])
    return params


CASES = {
    "sgd": (lambda: SGD(lr=0.1), ref_sgd, {}),
    "sgd-wd": (lambda: SGD(lr=0.1, weight_decay=0.1), ref_sgd, {"wd": 0.1}),
    "momentum": (lambda: SGD(lr=0.1, momentum=0.9), ref_sgd, {"momentum": 0.9}),
    "momentum-wd": (lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.05), ref_sgd, {"momentum": 0.9, "wd": 0.05}),
    "dampening": (lambda: SGD(lr=0.1, momentum=0.9, dampening=0.5), ref_sgd, {"momentum": 0.9, "dampening": 0.5}),
    "nesterov": (lambda: SGD(lr=0.1, momentum=0.8, nesterov=True), ref_sgd, {"momentum": 0.8, "nesterov": True}),
    "adam": (lambda: Adam(lr=0.1), ref_adam, {}),
    "adam-betas": (lambda: Adam(lr=0.1, betas=(0.5, 0.9), eps=1e-3), ref_adam, {"betas": (0.5, 0.9), "eps": 1e-3}),
    "adam-wd": (lambda: Adam(lr=0.1, weight_decay=0.1), ref_adam, {"wd": 0.1}),
    "adamw": (lambda: AdamW(lr=0.1, weight_decay=0.1), ref_adam, {"wd": 0.1, "decoupled": True}),
    "rmsprop": (lambda: RMSprop(lr=0.1), ref_rmsprop, {}),
    "rmsprop-alpha": (lambda: RMSprop(lr=0.1, alpha=0.5, eps=1e-2), ref_rmsprop, {"alpha": 0.5, "eps": 1e-2}),
    "rmsprop-momentum": (lambda: RMSprop(lr=0.1, momentum=0.9), ref_rmsprop, {"momentum": 0.9}),
    "rmsprop-centered": (lambda: RMSprop(lr=0.1, centered=True), ref_rmsprop, {"centered": True}),
    "rmsprop-centered-momentum-wd": (
        lambda: RMSprop(lr=0.1, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1),
        ref_rmsprop,
        {"alpha": 0.9, "centered": True, "momentum": 0.5, "wd": 0.1},
    ),
}


def reference(ref, kwargs, params, grads, lrs, decay_bias=False):
    out = {}
    for name, p in params.items():
        kw = dict(kwargs)
        if p.ndim == 1 and not decay_bias:
            kw["wd"] = 0.0
        out[name] = ref(p, [g[name] for g in grads], lrs, **kw)
    return out


@pytest.mark.parametrize("case", CASES)
def test_three_steps_match_hand_written_torch_recurrence(case):
    make, ref, kwargs = CASES[case]
    params, grads = problem()
    got = run(make(), params, grads)
    expected = reference(ref, kwargs, params, grads, [make().lr] * STEPS)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=0, err_msg=name)
        assert not np.allclose(got[name], params[name])


@pytest.mark.parametrize("case", ["momentum", "dampening", "adam", "adamw", "rmsprop-centered-momentum-wd"])
def test_step_lr_argument_overrides_base_rate(case):
    make, ref, kwargs = CASES[case]
    params, grads = problem(1)
    got = run(make(), params, grads, LRS)
    expected = reference(ref, kwargs, params, grads, LRS)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=0, err_msg=name)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(lr=0.1, weight_decay=0.1, decay_bias=True),
        lambda: Adam(lr=0.1, weight_decay=0.1, decay_bias=True),
        lambda: AdamW(lr=0.1, weight_decay=0.1, decay_bias=True),
        lambda: RMSprop(lr=0.1, weight_decay=0.1, decay_bias=True),
    ],
    ids=["sgd", "adam", "adamw", "rmsprop"],
)
def test_decay_bias_decays_biases_too(make):
    ref, kwargs = {
        SGD: (ref_sgd, {}),
        Adam: (ref_adam, {}),
        AdamW: (ref_adam, {"decoupled": True}),
        RMSprop: (ref_rmsprop, {}),
    }[type(make())]
    params, grads = problem(2)
    got = run(make(), params, grads)
    expected = reference(ref, {**kwargs, "wd": 0.1}, params, grads, [0.1] * STEPS, decay_bias=True)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=0, err_msg=name)


def zero_grads(params):
    return {k: np.zeros_like(v) for k, v in params.items()}


def test_sgd_weight_decay_is_l2_on_weights_only():
    params, _ = problem(3)
    before = {k: v.copy() for k, v in params.items()}
    SGD(lr=0.5, weight_decay=0.1).step(params, zero_grads(params))
    np.testing.assert_allclose(params["dense0.W"], before["dense0.W"] * (1 - 0.5 * 0.1), rtol=1e-15)
    np.testing.assert_array_equal(params["dense0.b"], before["dense0.b"])


def test_coupled_l2_acts_as_if_added_to_the_gradient():
    params, grads = problem(4)
    w = params["dense0.W"]
    with_decay = run(Adam(lr=0.1, weight_decay=0.2), params, grads[:1])
    added = [{"dense0.W": grads[0]["dense0.W"] + 0.2 * w, "dense0.b": grads[0]["dense0.b"]}]
    by_hand = run(Adam(lr=0.1), params, added)
    for name in params:
        np.testing.assert_allclose(with_decay[name], by_hand[name], rtol=1e-15, err_msg=name)


def test_adamw_decay_is_decoupled_and_adam_decay_is_coupled():
    params, _ = problem(5)
    w = params["dense0.W"].copy()
    decoupled = {k: v.copy() for k, v in params.items()}
    AdamW(lr=0.1, weight_decay=0.2).step(decoupled, zero_grads(params))
    np.testing.assert_allclose(decoupled["dense0.W"], w * (1 - 0.1 * 0.2), rtol=1e-15)
    coupled = {k: v.copy() for k, v in params.items()}
    Adam(lr=0.1, weight_decay=0.2).step(coupled, zero_grads(params))
    np.testing.assert_allclose(coupled["dense0.W"], w - 0.1 * np.sign(w), rtol=0, atol=1e-6)


def big_problem(seed=0):
    rng = np.random.default_rng(seed)
    size = nn.optimizers.CHUNK * 2 + 1001
    params = {"big.W": rng.standard_normal((3, size // 3)), "big.b": rng.standard_normal(size)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


CHUNK_CASES = ["nesterov", "dampening", "adam-wd", "adamw", "rmsprop-centered-momentum-wd"]


@pytest.mark.parametrize("elementwise_kernels", ["numpy"], indirect=True)  # the fused kernels do not chunk
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_chunked_update_equals_unchunked(case, monkeypatch):
    make = CASES[case][0]
    params, grads = big_problem()
    assert params["big.W"].size > nn.optimizers.CHUNK
    chunked = run(make(), params, grads)
    monkeypatch.setattr(nn.optimizers, "CHUNK", 1 << 22)
    whole = run(make(), params, grads)
    for name in params:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)


@pytest.mark.parametrize("elementwise_kernels", ["numpy"], indirect=True)  # the fused kernels do not chunk
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_tiny_chunks_with_ragged_tail_match_reference(case, monkeypatch):
    make, ref, kwargs = CASES[case]
    monkeypatch.setattr(nn.optimizers, "CHUNK", 4)
    params, grads = problem(6)
    got = run(make(), params, grads)
    expected = reference(ref, kwargs, params, grads, [make().lr] * STEPS)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=0, err_msg=name)


def test_float32_params_stay_float32():
    params = {k: v.astype(np.float32) for k, v in problem(7)[0].items()}
    grads = {k: np.ones_like(v) for k, v in params.items()}
    optimizer = Adam(lr=0.1, weight_decay=0.1)
    optimizer.step(params, grads)
    assert all(v.dtype == np.float32 for v in params.values())
    assert all(a.dtype == np.float32 for slot in optimizer.state.values() for a in slot.values())


@pytest.mark.parametrize("case", ["dampening", "nesterov", "adam-wd", "adamw", "rmsprop-centered-momentum-wd"])
def test_state_dict_round_trip_gives_identical_next_steps(case):
    make = CASES[case][0]
    params, grads = problem(8)
    grads = grads * 2
    first = make()
    params = run(first, params, grads[:2])
    state = first.state_dict()
    second = make()
    second.load_state_dict(state)
    continued, resumed = run(first, params, grads[2:]), run(second, params, grads[2:])
    for name in params:
        np.testing.assert_array_equal(continued[name], resumed[name], err_msg=name)
    assert second.steps == first.steps


def test_state_dict_is_a_snapshot():
    params, grads = problem(9)
    optimizer = Adam(lr=0.1)
    params = run(optimizer, params, grads[:1])
    state = optimizer.state_dict()
    saved = {k: v.copy() for k, v in state["arrays"].items()}
    run(optimizer, params, grads[1:])
    assert state["steps"] == 1
    for key, value in saved.items():
        np.testing.assert_array_equal(state["arrays"][key], value, err_msg=key)


def test_state_dict_contents():
    params, grads = problem(10)
    optimizer = RMSprop(lr=0.1, momentum=0.9, centered=True)
    run(optimizer, params, grads)
    state = optimizer.state_dict()
    assert state["steps"] == STEPS
    assert state["names"] == ["dense0.W", "dense0.b"]
    assert set(state["arrays"]) == {
        f"{n}/{k}" for n in state["names"] for k in ("square_avg", "grad_avg", "momentum_buffer")
    }
    assert state["arrays"]["dense0.W/square_avg"].shape == (2, 3)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SGD(lr=-0.1), "learning rate"),
        (lambda: SGD(lr=0.0), "learning rate"),
        (lambda: Adam(lr=float("nan")), "learning rate"),
        (lambda: SGD(lr=0.1, momentum=1.0), "momentum"),
        (lambda: SGD(lr=0.1, momentum=-0.5), "momentum"),
        (lambda: SGD(lr=0.1, momentum=0.9, dampening=1.0), "dampening"),
        (lambda: SGD(lr=0.1, nesterov=True), "Nesterov"),
        (lambda: SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
        (lambda: SGD(lr=0.1, weight_decay=-1e-4), "weight_decay"),
        (lambda: Adam(betas=(1.0, 0.999)), "betas"),
        (lambda: Adam(betas=(0.9, -0.1)), "betas"),
        (lambda: AdamW(betas=(0.9, 1.5)), "betas"),
        (lambda: Adam(eps=0.0), "eps"),
        (lambda: RMSprop(alpha=1.0), "alpha"),
        (lambda: RMSprop(momentum=1.0), "momentum"),
        (lambda: RMSprop(eps=-1.0), "eps"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


class PlainSGD(nn.optimizers.Optimizer):
    """An optimizer added the way the docstring of ``Optimizer`` says: ``update`` alone, no ``fused``."""

    def update(self, p, g, s, lr, decay, tmp):
        p -= lr * g


class SlowMomentumSGD(SGD):
    """Overrides the built-in SGD's ``update`` alone: its parent's kernel (a different rule) must not run."""

    def update(self, p, g, s, lr, decay, tmp):
        buf = s["momentum_buffer"]
        buf *= self.momentum
        buf += g
        p -= lr * 2 * buf


def train(optimizer, clipper, seed=11):
    """Two epochs of a small float32 MLP on random data: the built-in path for the optimizer and clipper."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((96, 12)).astype(np.float32), rng.integers(0, 4, 96)
    net = nn.mlp([12, 16, 4], rng=np.random.default_rng(seed))
    trainer = nn.Trainer(net, optimizer, clipper=clipper, batch_size=32, rng=np.random.default_rng(seed))
    for epoch in range(2):
        trainer.train_epoch(X * 20, y, epoch)  # large inputs: the gradients exceed both clippers' limits
    return net.params


@pytest.mark.parametrize(
    "clipper", [None, nn.ClipByValue(0.05), nn.ClipByNorm(0.5)], ids=["no-clip", "clip-value", "clip-norm"]
)
def test_optimizer_with_only_update_trains_to_the_builtin_sgd_bits(clipper):
    """Runs under both kernel settings (the module's ``elementwise_kernels``): where numba is enabled, ``step``
    must fall back to ``update`` instead of the base ``fused`` that raises NotImplementedError."""
    initial = nn.mlp([12, 16, 4], rng=np.random.default_rng(11)).params
    options = {"lr": 0.05, "weight_decay": 1e-2}
    got, builtin = train(PlainSGD(**options), clipper), train(SGD(**options), clipper)
    for name in builtin:
        np.testing.assert_array_equal(got[name], builtin[name], err_msg=name)
        assert not np.array_equal(got[name], initial[name]), name


def test_subclass_overriding_update_alone_runs_its_update():
    params, grads = problem(12)
    got = run(SlowMomentumSGD(lr=0.1, momentum=0.9), params, grads)
    expected = reference(ref_sgd, {"momentum": 0.9}, params, grads, [0.2] * STEPS)  # lr*2*buf: twice the lr
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=0, err_msg=name)
