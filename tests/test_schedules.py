"""Schedules: descend from 1 to exactly 0, shift as SD3/Wan, and reproduce ComfyUI's `simple` and `beta`
schedulers and its partial-denoise rule value for value."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from spacetime.samplers.schedules import (
    SCHEDULES,
    beta_quantile,
    beta_schedule,
    linear_schedule,
    regularized_incomplete_beta,
    schedule_by_name,
    shift_sigmas,
    simple_schedule,
)

# Computed by running ComfyUI's own code (comfy/model_sampling.py ModelSamplingDiscreteFlow with
# set_parameters(shift=...), and simple_scheduler / beta_scheduler / KSampler.set_steps from
# comfy/samplers.py) on the CPU; rounded to 7 decimals here.
COMFYUI_SIGMAS = {
    ("simple", 8.0, 30, 1.0): [
        1.0, 0.9957523, 0.9912444, 0.9863014, 0.9811855, 0.9757239, 0.9696970, 0.9634166, 0.9566634,
        0.9491525, 0.9412594, 0.9326958, 0.9230769, 0.9128597, 0.9016463, 0.8888889, 0.8751464,
        0.8598316, 0.8421053, 0.8226394, 0.8004794, 0.7741935, 0.7445103, 0.7096285, 0.6666666,
        0.6159521, 0.5531476, 0.4705882, 0.3648741, 0.2197092, 0.0,
    ],
    ("simple", 5.0, 20, 0.6): [
        0.8853558, 0.8716707, 0.8574120, 0.8420365, 0.8248300, 0.8067376, 0.7870370, 0.7647516,
        0.7410424, 0.7148973, 0.6859205, 0.6524857, 0.6161258, 0.5750540, 0.5266204, 0.4726368,
        0.4099462, 0.3335777, 0.2451769, 0.1379004, 0.0,
    ],
    ("simple", 1.0, 6, 1.0): [1.0, 0.834, 0.667, 0.5, 0.334, 0.167, 0.0],
    ("beta", 5.0, 20, 1.0): [
        1.0, 0.9973727, 0.9917355, 0.9835891, 0.9727151, 0.9590316, 0.9424212, 0.9224319, 0.8980856,
        0.8689024, 0.8338881, 0.7911160, 0.7402120, 0.6787020, 0.6056700, 0.5181499, 0.4144385,
        0.2972561, 0.1761168, 0.0662879, 0.0,
    ],
    ("beta", 8.0, 13, 0.7): [
        0.9684018, 0.9547325, 0.9377131, 0.9160548, 0.8892833, 0.8548387, 0.8102445, 0.7530696,
        0.6775244, 0.5776460, 0.4476885, 0.2874252, 0.1151079, 0.0,
    ],
}  # fmt: skip


def comfyui_flow_table(shift: float) -> torch.Tensor:
    """ModelSamplingDiscreteFlow.set_parameters(shift) as in ComfyUI (float32)."""
    timesteps = (torch.arange(1, 1001, 1) / 1000) * 1000
    t = timesteps / 1000
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def comfyui_simple(shift: float, steps: int) -> torch.Tensor:
    sigmas = comfyui_flow_table(shift)
    ss = len(sigmas) / steps
    return torch.FloatTensor([float(sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def comfyui_beta(shift: float, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    sigmas = comfyui_flow_table(shift)
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * 999)
    kept = [t for k, t in enumerate(ts) if k == 0 or t != ts[k - 1]]
    return torch.FloatTensor([float(sigmas[int(t)]) for t in kept] + [0.0])


def comfyui_set_steps(calculate, steps: int, denoise: float) -> torch.Tensor:
    """KSampler.set_steps: a longer schedule, cut to its last steps + 1 sigmas."""
    if denoise > 0.9999:
        return calculate(steps)
    return calculate(int(steps / denoise))[-(steps + 1) :]


def test_shift_keeps_the_ends_and_follows_the_formula():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    for shift in (0.5, 1.0, 3.0, 8.0):
        shifted = shift_sigmas(s, shift)
        assert shifted[0] == 0 and shifted[-1] == 1
        torch.testing.assert_close(shifted, shift * s / (1 + (shift - 1) * s), rtol=0, atol=0)
    assert torch.equal(shift_sigmas(s, 1.0), s)
    assert shift_sigmas(0.5, 3.0) == 0.75  # 1.5 / 2: shift > 1 moves every level towards noise


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("steps,shift", [(1, 1.0), (7, 1.0), (30, 5.0), (50, 8.0)])
def test_schedules_descend_from_one_to_exactly_zero(name, steps, shift):
    sigmas = SCHEDULES[name](steps, shift)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_linear_is_wans_sampling_sigmas():
    """Wan2.2 `wan/utils/fm_solvers.py` get_sampling_sigmas, then the appended 0 of its schedulers."""
    for steps, shift in [(10, 5.0), (30, 8.0), (50, 3.0)]:
        wan = np.linspace(1, 0, steps + 1)[:steps]
        wan = shift * wan / (1 + (shift - 1) * wan)
        expected = torch.from_numpy(np.append(wan, 0.0).astype(np.float32))
        assert torch.equal(linear_schedule(steps, shift), expected)


@pytest.mark.parametrize("key", list(COMFYUI_SIGMAS))
def test_simple_and_beta_reproduce_comfyui_numbers(key):
    name, shift, steps, denoise = key
    sigmas = SCHEDULES[name](steps, shift, denoise)
    torch.testing.assert_close(sigmas, torch.tensor(COMFYUI_SIGMAS[key]), rtol=0, atol=6e-8)


@pytest.mark.parametrize("shift", [1.0, 3.0, 8.0])
@pytest.mark.parametrize("steps", [1, 4, 6, 13, 30, 77])
@pytest.mark.parametrize("denoise", [1.0, 0.75, 0.3])
def test_simple_is_comfyuis_simple_scheduler_bit_for_bit(shift, steps, denoise):
    expected = comfyui_set_steps(lambda n: comfyui_simple(shift, n), steps, denoise)
    assert torch.equal(simple_schedule(steps, shift, denoise), expected)


@pytest.mark.parametrize(
    "shift,steps,denoise,alpha,beta",
    [
        (1.0, 5, 1.0, 0.6, 0.6),
        (5.0, 20, 1.0, 0.6, 0.6),
        (8.0, 33, 0.6, 0.6, 0.6),
        (3.0, 12, 1.0, 0.5, 0.7),
        (5.0, 150, 1.0, 0.6, 0.6),  # repeated table levels are dropped, as ComfyUI does
    ],
)
def test_beta_is_comfyuis_beta_scheduler_with_scipy(shift, steps, denoise, alpha, beta):
    expected = comfyui_set_steps(lambda n: comfyui_beta(shift, n, alpha, beta), steps, denoise)
    assert torch.equal(beta_schedule(steps, shift, denoise, alpha, beta), expected)
    assert len(expected) == (steps + 1 if steps < 139 else 150)


@pytest.mark.parametrize("a,b", [(0.6, 0.6), (0.5, 0.7), (1.0, 1.0), (2.0, 3.0), (5.0, 0.8)])
def test_beta_quantile_and_distribution_match_scipy(a, b):
    p = np.concatenate([np.linspace(0, 1, 201), [1e-9, 1e-5, 1 - 1e-9]])
    ours = np.array([beta_quantile(float(q), a, b) for q in p])
    np.testing.assert_allclose(ours, scipy.stats.beta.ppf(p, a, b), rtol=0, atol=1e-11)
    cdf = np.array([regularized_incomplete_beta(float(x), a, b) for x in p])
    np.testing.assert_allclose(cdf, scipy.stats.beta.cdf(p, a, b), rtol=0, atol=1e-14)


def test_linear_and_simple_agree_when_steps_divide_the_table():
    for steps in (10, 20, 25, 40, 50):
        torch.testing.assert_close(
            linear_schedule(steps, 5.0), simple_schedule(steps, 5.0), rtol=0, atol=2e-7
        )
    difference = (linear_schedule(6, 1.0) - simple_schedule(6, 1.0)).abs().max()
    assert 5e-4 < difference < 1e-3  # 5/6 against ComfyUI's table level 0.834


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_denoise_keeps_the_tail_of_a_longer_schedule(name):
    schedule = SCHEDULES[name]
    partial = schedule(20, 5.0, 0.6)
    assert torch.equal(partial, schedule(33, 5.0)[-21:])  # int(20 / 0.6) = 33
    assert partial.shape == (21,) and partial[-1] == 0 and 0.8 < partial[0] < 0.95
    assert torch.equal(schedule(20, 5.0, 0.99995), schedule(20, 5.0))  # ComfyUI's "> 0.9999 is full"
    assert torch.equal(schedule(4, 5.0, 0.1)[0], schedule(40, 5.0)[-5])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"steps": 0}, r"steps=0 must be a whole number, at least 1"),
        ({"steps": 2.5}, r"steps=2\.5 must be a whole number"),
        ({"steps": 10, "shift": 0.0}, r"shift=0\.0 must be a positive number"),
        ({"steps": 10, "shift": float("nan")}, r"shift=nan must be a positive number"),
        ({"steps": 10, "denoise": 0.0}, r"denoise=0\.0 must be in \(0, 1\]"),
        ({"steps": 10, "denoise": 1.5}, r"denoise=1\.5 must be in \(0, 1\]"),
    ],
)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_bad_arguments_say_what_was_received_and_expected(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SCHEDULES[name](**kwargs)


def test_beta_parameters_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match=r"alpha=0 must be a positive number"):
        beta_schedule(10, 5.0, alpha=0)
    with pytest.raises(ValueError, match=r"unknown schedule 'karras': choose one of simple, linear, beta"):
        schedule_by_name("karras")
    assert schedule_by_name("beta") is beta_schedule
