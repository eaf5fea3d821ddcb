"""experiments/bench_speed.py builds the recipes it names and times what it says (no wall-clock assertions)."""

from __future__ import annotations

import numpy as np
import pytest

import nn
from experiments import bench_speed


@pytest.mark.parametrize("recipe", bench_speed.RECIPES)
def test_each_recipe_builds_the_trainer_it_names(recipe):
    sizes, optimizer, options, (clip, limit), batch, dtype, dropout = bench_speed.RECIPES[recipe]
    trainer = bench_speed.make_trainer(recipe)
    dense = [layer for layer in trainer.network.layers if isinstance(layer, nn.Dense)]
    assert [layer.in_features for layer in dense] + [dense[-1].out_features] == sizes
    assert type(trainer.optimizer).__name__ == optimizer
    assert trainer.optimizer.lr == options.get("lr", 0.01) and trainer.optimizer.weight_decay == 1e-4
    assert isinstance(trainer.clipper, nn.ClipByValue if clip == "value" else nn.ClipByNorm)
    assert trainer.batch_size == batch and trainer.network.dtype == np.dtype(dtype)
    dropouts = [layer.p for layer in trainer.network.layers if isinstance(layer, nn.Dropout)]
    assert dropouts == ([dropout] if dropout else [])


@pytest.mark.parametrize("update", [False, True])
def test_step_products_multiply_at_the_step_shapes_and_update_only_for_the_limit(update, monkeypatch):
    if update and nn.kernels.numba is None:
        pytest.skip("the limit's update is the numba kernel")
    shapes = []
    original = np.matmul

    def spy(a, b, out=None):
        shapes.append((a.shape, b.shape))
        return original(a, b, out=out)

    run, momenta = bench_speed.step_products([6, 5, 3], 4, "float32", np.random.default_rng(0), update)
    monkeypatch.setattr(bench_speed.np, "matmul", spy)
    run()
    assert shapes == [((4, 6), (6, 5)), ((6, 4), (4, 5)), ((4, 5), (5, 3)), ((5, 4), (4, 3)), ((4, 3), (3, 5))]
    assert [buf.size for buf in momenta] == [30, 15]
    assert all(np.any(buf != 0) for buf in momenta) == update


def test_the_diagnostics_worker_trains_with_the_watch_train_uses():
    from nn.diagnostics import Watch

    watched, plain = bench_speed.make_trainer("wide1024", watch=True), bench_speed.make_trainer("wide1024")
    assert isinstance(watched.watch, Watch) and [name for name, _ in watched.watch.dense] == ["dense0", "dense1"]
    assert plain.watch is None


def test_ratios_are_taken_round_by_round():
    """A loop and the floor slowed alike in round 2 (the machine drifted) keep their ratio of round 1;
    the ratio of overall medians (3.0 / 2.5) would not."""
    times = {"nn": [[2.0, 2.2, 1.8], [6.0, 6.6, 5.4]], "floor": [[1.0, 1.0, 1.0], [3.0, 4.0, 3.0]]}
    assert bench_speed.seconds(times, "nn") == pytest.approx(3.8)  # (2.2 + 5.4) / 2
    assert bench_speed.ratio(times, "nn", "floor") == "2.00 (2.00-2.00)"
    assert bench_speed.ratio(times, "floor", "floor") == "1.00"
    times["nn"][1] = [3.0] * 3
    assert bench_speed.ratio(times, "nn", "floor") == "1.50 (1.00-2.00)"
