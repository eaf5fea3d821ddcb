"""Learning-rate schedules against hand-worked values and the torch.optim.lr_scheduler closed forms."""

from __future__ import annotations

import math

import pytest

from nn.schedules import (
    Constant,
    CosineAnnealing,
    ExponentialDecay,
    MultiStepDecay,
    ReduceOnPlateau,
    Schedule,
    StepDecay,
    Warmup,
)

BASE = 0.1


def lrs(schedule, epochs):
    return [schedule.lr_at(BASE, e) for e in epochs]


def test_constant_is_base_rate_everywhere():
    assert lrs(Constant(), [0, 0.5, 7, 1000]) == [BASE] * 4


def test_step_decay_hand_values():
    assert lrs(StepDecay(3, gamma=0.5), range(10)) == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125], rel=1e-12
    )


def test_multistep_decay_around_milestones():
    schedule = MultiStepDecay([30, 50, 65], gamma=0.1)
    epochs = [0, 29, 30, 31, 49, 50, 64, 65, 100]
    expected = [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]
    assert lrs(schedule, epochs) == pytest.approx(expected, rel=1e-12)


def test_exponential_decay_hand_values():
    assert lrs(ExponentialDecay(0.9), range(5)) == pytest.approx([0.1, 0.09, 0.081, 0.0729, 0.06561], rel=1e-12)


def test_cosine_annealing_hand_values():
    expected = [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2, 0.0]
    assert lrs(CosineAnnealing(T_max=4), range(5)) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_annealing_with_eta_min():
    schedule = CosineAnnealing(T_max=10, eta_min=0.001)
    assert schedule.lr_at(BASE, 0) == pytest.approx(0.1, rel=1e-12)
    assert schedule.lr_at(BASE, 5) == pytest.approx(0.0505, rel=1e-12)
    assert schedule.lr_at(BASE, 10) == pytest.approx(0.001, rel=1e-12)
    assert schedule.lr_at(BASE, 1) == pytest.approx(0.0975772976, rel=1e-9)


def torch_closed_form(kind, epoch):
    return {
        "step": BASE * 0.5 ** (epoch // 7),
        "multistep": BASE * 0.1 ** sum(m <= epoch for m in (30, 50, 65)),
        "exponential": BASE * 0.95**epoch,
        "cosine": 0.002 + (BASE - 0.002) * (1 + math.cos(math.pi * epoch / 40)) / 2,
    }[kind]


SCHEDULES = {
    "step": lambda: StepDecay(7, gamma=0.5),
    "multistep": lambda: MultiStepDecay([30, 50, 65]),
    "exponential": lambda: ExponentialDecay(0.95),
    "cosine": lambda: CosineAnnealing(T_max=40, eta_min=0.002),
}


@pytest.mark.parametrize("kind", SCHEDULES)
def test_matches_torch_closed_form_at_every_epoch(kind):
    schedule = SCHEDULES[kind]()
    for epoch in range(80 if kind != "cosine" else 41):
        assert schedule.lr_at(BASE, epoch) == pytest.approx(torch_closed_form(kind, epoch), rel=1e-12), epoch


@pytest.mark.parametrize("kind", SCHEDULES)
def test_fractional_epochs_keep_the_epoch_rate(kind):
    schedule = SCHEDULES[kind]()
    for epoch in (0, 6, 29, 30, 49, 64):
        for fraction in (0.25, 0.5, 0.999):
            assert schedule.lr_at(BASE, epoch + fraction) == schedule.lr_at(BASE, epoch)


def test_warmup_ramps_linearly_per_step_then_runs_cosine_shifted():
    cosine = CosineAnnealing(T_max=10, eta_min=0.001)
    schedule = Warmup(cosine, epochs=2, start_factor=0.1)
    assert schedule.lr_at(BASE, 0) == pytest.approx(0.01, rel=1e-12)
    assert schedule.lr_at(BASE, 0.5) == pytest.approx(0.1 * (0.1 + 0.9 * 0.25), rel=1e-12)
    assert schedule.lr_at(BASE, 1) == pytest.approx(0.055, rel=1e-12)
    assert schedule.lr_at(BASE, 1.9) == pytest.approx(0.1 * (0.1 + 0.9 * 0.95), rel=1e-12)
    assert schedule.lr_at(BASE, 2) == pytest.approx(0.1, rel=1e-12)
    assert schedule.lr_at(BASE, 7) == pytest.approx(0.0505, rel=1e-12)
    assert schedule.lr_at(BASE, 12) == pytest.approx(0.001, rel=1e-12)
    for epoch in range(2, 13):
        assert schedule.lr_at(BASE, epoch) == cosine.lr_at(BASE, epoch - 2)


def test_warmup_increases_at_every_step():
    schedule = Warmup(CosineAnnealing(T_max=10), epochs=1, start_factor=0.0)
    ramp = [schedule.lr_at(BASE, step / 50) for step in range(50)]
    assert ramp[0] == 0.0 and all(a < b for a, b in zip(ramp, ramp[1:]))
    assert ramp[-1] < BASE


def test_warmup_defaults_to_constant_after():
    schedule = Warmup(epochs=1, start_factor=0.5)
    assert schedule.lr_at(BASE, 0) == pytest.approx(0.05, rel=1e-12)
    assert lrs(schedule, [1, 5, 50]) == [BASE] * 3


def observe_all(schedule, losses):
    rates = []
    for loss in losses:
        schedule.lr_at(BASE, len(rates))
        schedule.observe(loss)
        rates.append(schedule.lr_at(BASE, len(rates)))
    return rates


PLATEAU_LOSSES = [1.0, 0.95, 0.95, 0.95, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]
PLATEAU_RATES = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02, 0.02]


def test_reduce_on_plateau_factor_patience_threshold_min_lr():
    schedule = ReduceOnPlateau(factor=0.5, patience=2, min_lr=0.02, threshold=0.1)
    assert observe_all(schedule, PLATEAU_LOSSES) == pytest.approx(PLATEAU_RATES, rel=1e-12)


def test_reduce_on_plateau_threshold_is_relative():
    strict = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.1)
    lenient = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.01)
    assert observe_all(strict, [1.0, 0.95]) == pytest.approx([0.1, 0.05])
    assert observe_all(lenient, [1.0, 0.95]) == pytest.approx([0.1, 0.1])


def test_reduce_on_plateau_threshold_scales_with_the_best_loss():
    schedule = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.01)
    assert observe_all(schedule, [10.0, 9.95, 9.85]) == pytest.approx([0.1, 0.05, 0.05])


def test_reduce_on_plateau_patience_zero_reduces_on_first_bad_epoch():
    schedule = ReduceOnPlateau(factor=0.1, patience=0)
    assert observe_all(schedule, [1.0, 1.0, 1.0, 0.5]) == pytest.approx([0.1, 0.01, 0.001, 0.001])


def test_reduce_on_plateau_skips_a_cut_smaller_than_eps_as_torch_does():
    # BASE 0.1, factor 0.1: 1e-8 -> 1e-9 would cut 9e-9 < eps = 1e-8, so the rate stays at 1e-8 (torch's rule)
    rates = observe_all(ReduceOnPlateau(factor=0.1, patience=0), [1.0] * 10)
    assert rates[7] == pytest.approx(1e-8) and rates[8:] == pytest.approx([1e-8] * (len(rates) - 8))
    assert observe_all(ReduceOnPlateau(factor=0.1, patience=0, eps=0.0), [1.0] * 10)[-1] < 1e-9


def test_reduce_on_plateau_state_dict_round_trip():
    first = ReduceOnPlateau(factor=0.5, patience=2, min_lr=0.02, threshold=0.1)
    observe_all(first, PLATEAU_LOSSES[:6])
    state = first.state_dict()
    assert state == {"scale": 0.5, "best": 0.85, "bad_epochs": 1}
    second = ReduceOnPlateau(factor=0.5, patience=2, min_lr=0.02, threshold=0.1)
    second.load_state_dict(state)
    assert second.lr_at(BASE, 6) == first.lr_at(BASE, 6)
    rest = PLATEAU_LOSSES[6:]
    assert observe_all(second, rest) == observe_all(first, rest) == pytest.approx(PLATEAU_RATES[6:], rel=1e-12)


def test_warmup_delegates_observe_and_state_to_its_schedule():
    schedule = Warmup(ReduceOnPlateau(factor=0.5, patience=0), epochs=1)
    schedule.lr_at(BASE, 1)
    schedule.observe(1.0)
    schedule.observe(2.0)
    assert schedule.lr_at(BASE, 3) == pytest.approx(0.05)
    assert schedule.state_dict()["scale"] == 0.5
    fresh = Warmup(ReduceOnPlateau(factor=0.5, patience=0), epochs=1)
    fresh.load_state_dict(schedule.state_dict())
    assert fresh.lr_at(BASE, 3) == pytest.approx(0.05)


def test_stateless_schedules_ignore_observe():
    schedule = StepDecay(2)
    schedule.observe(1.0)
    assert schedule.lr_at(BASE, 1) == BASE and schedule.state_dict() == {}
    assert isinstance(schedule, Schedule)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: StepDecay(0), "step_size"),
        (lambda: StepDecay(3, gamma=0.0), "gamma"),
        (lambda: StepDecay(3, gamma=1.5), "gamma"),
        (lambda: MultiStepDecay([50, 30, 65]), "increasing"),
        (lambda: MultiStepDecay([30, 30, 65]), "increasing"),
        (lambda: MultiStepDecay([0, 30]), ">= 1"),
        (lambda: MultiStepDecay([30, 50], gamma=0), "gamma"),
        (lambda: ExponentialDecay(0.0), "gamma"),
        (lambda: ExponentialDecay(-0.5), "gamma"),
        (lambda: CosineAnnealing(T_max=0), "T_max"),
        (lambda: CosineAnnealing(T_max=10, eta_min=-1e-3), "eta_min"),
        (lambda: Warmup(epochs=0), "epochs"),
        (lambda: Warmup(start_factor=1.5), "start_factor"),
        (lambda: ReduceOnPlateau(factor=1.0), "factor"),
        (lambda: ReduceOnPlateau(factor=0.0), "factor"),
        (lambda: ReduceOnPlateau(patience=-1), "patience"),
        (lambda: ReduceOnPlateau(min_lr=-1.0), "min_lr"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
