"""Solvers, guidance and noise: step-for-step parity with diffusers' flow schedulers, convergence to the
exact flow of Gaussian data, one batched forward for guidance, and ComfyUI core's seeded noise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from spacetime.samplers.guidance import classifier_free_guidance
from spacetime.samplers.noise import initial_noise, noise_scaling
from spacetime.samplers.schedules import linear_schedule, shift_sigmas
from spacetime.samplers.solvers import SOLVERS, denoiser_from_velocity, sample_euler, solver_by_name

from numerics import relative_error

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # in diffusers

PARITY_TOLERANCE = 1e-5  # diffusers steps euler, heun and dpmpp in float32 whatever the input dtype

_weights = torch.Generator().manual_seed(0)
W = torch.randn(8, 8, generator=_weights, dtype=torch.float64) / 8**0.5
BIAS = torch.randn(8, generator=_weights, dtype=torch.float64)


def toy_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A fixed smooth nonlinear velocity field of x (B×3×8) and sigma (a scalar or one per item)."""
    s = sigma.reshape(-1, 1, 1).to(x.dtype)
    return torch.tanh(x @ W.to(x.dtype)) * (1 + s) - 0.5 * x * torch.cos(3 * s) + s**2 * BIAS.to(x.dtype)


def wan_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Wan's UniPC schedule and diffusers' flow-sigma DPM one: the shifted line from 0.999, then 0."""
    return shift_sigmas(torch.linspace(0.999, 0.0, steps + 1, dtype=torch.float64), shift).float()


# ---- parity with diffusers -------------------------------------------------------------------------


def diffusers_euler(sigmas):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=sigmas[:-1].numpy())
    return scheduler


def diffusers_heun(sigmas):
    """Its set_timesteps takes only a step count; its sigma layout (each inner level twice) is set here."""
    scheduler = FlowMatchHeunDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(len(sigmas) - 1)
    scheduler.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
    timesteps = sigmas[:-1] * 1000
    scheduler.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
    return scheduler


def diffusers_dpmpp_2m(sigmas, shift: float = 5.0):
    """Its set_timesteps builds the flow sigmas from a shift, and takes no list: ours replace them
    (for Wan's line they are the same list, see the next test)."""
    scheduler = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", algorithm_type="dpmsolver++",
        solver_order=2, final_sigmas_type="zero", flow_shift=shift,
    )  # fmt: skip
    scheduler.set_timesteps(len(sigmas) - 1)
    scheduler.sigmas, scheduler.timesteps = sigmas.clone(), (sigmas[:-1] * 1000).long()
    return scheduler


def test_diffusers_flow_dpm_sigmas_are_wans_line():
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0)
    scheduler.set_timesteps(20)
    assert torch.equal(scheduler.sigmas, wan_sigmas(20, 5.0))


def diffusers_unipc(sigmas):
    """Float64 sigmas make its coefficients float64, so the comparison is of the algorithm alone."""
    scheduler = UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", solver_order=2, solver_type="bh2",
        predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
    )  # fmt: skip
    scheduler.set_timesteps(sigmas=sigmas[:-1].numpy())
    assert torch.equal(scheduler.sigmas[:-1], sigmas[:-1])  # unshifted (flow_shift=1), not moved off 1
    scheduler.sigmas = sigmas.double()  # the last level too, when it is not 0
    return scheduler


def run_diffusers(scheduler, x: torch.Tensor) -> list[torch.Tensor]:
    """x at the start of each step (after UniPC's correction), then the result."""
    states = []
    scheduler.set_begin_index(0)
    for i, timestep in enumerate(scheduler.timesteps):
        if isinstance(scheduler, FlowMatchHeunDiscreteScheduler):
            if scheduler.state_in_first_order:
                states.append(x)
        elif not isinstance(scheduler, UniPCMultistepScheduler):
            states.append(x)
        velocity = toy_velocity(x, scheduler.sigmas[i])
        x = scheduler.step(velocity, timestep, x, return_dict=False)[0]
        if isinstance(scheduler, UniPCMultistepScheduler):
            states.append(scheduler.last_sample)
    return [*states, x]


def run_ours(name: str, sigmas: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    states = []
    out = SOLVERS[name](
        denoiser_from_velocity(toy_velocity), x, sigmas, callback=lambda s: states.append(s["x"])
    )
    return [*states, out]


@pytest.mark.parametrize(
    "name,reference,sigmas,tolerance",
    [
        ("euler", diffusers_euler, linear_schedule(20, 5.0), PARITY_TOLERANCE),
        ("heun", diffusers_heun, linear_schedule(20, 5.0), PARITY_TOLERANCE),
        ("dpmpp_2m", diffusers_dpmpp_2m, wan_sigmas(20, 5.0), PARITY_TOLERANCE),
        ("dpmpp_2m", diffusers_dpmpp_2m, linear_schedule(13, 3.0), PARITY_TOLERANCE),  # from sigma = 1
        ("unipc", diffusers_unipc, wan_sigmas(20, 5.0), 1e-12),  # float64 on both sides
        ("unipc", diffusers_unipc, linear_schedule(20, 5.0, denoise=0.6), 1e-12),
        ("unipc", diffusers_unipc, wan_sigmas(20, 5.0)[:12], 1e-12),  # the first half of a split
    ],
)
def test_solver_matches_diffusers_step_for_step(name, reference, sigmas, tolerance):
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scheduler = reference(sigmas)
    ours, theirs = run_ours(name, sigmas, x), run_diffusers(scheduler, x)
    assert torch.equal(torch.unique_consecutive(scheduler.sigmas.float()), sigmas)  # heun lists levels twice
    assert len(ours) == len(theirs) == len(sigmas)
    errors = [relative_error(a, b) for a, b in zip(ours, theirs, strict=True)]
    assert max(errors) <= tolerance, errors
    assert relative_error(ours[-1], x) > 0.1  # the run moved x: the comparison is not of two copies


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_a_run_down_part_of_a_schedule_ends_where_the_whole_run_passes(name):
    """ComfyUI's SplitSigmas: the first part's last step is the whole run's step (k-diffusion's rule:
    DPM-Solver++(2M) drops to first order only for the step to sigma = 0). UniPC, like Wan and diffusers,
    takes every last step at first order instead (tested against diffusers above)."""
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigmas, states = linear_schedule(12, 5.0), []
    SOLVERS[name](denoiser_from_velocity(toy_velocity), x, sigmas, callback=lambda s: states.append(s["x"]))
    first_part = SOLVERS[name](denoiser_from_velocity(toy_velocity), x, sigmas[:7])
    torch.testing.assert_close(first_part, states[6], rtol=0, atol=1e-14)


# ---- convergence on a flow with a known answer -----------------------------------------------------

_data = torch.Generator().manual_seed(2)
MU = torch.rand(4096, generator=_data, dtype=torch.float64) * 2 - 1
SCALE = torch.rand(4096, generator=_data, dtype=torch.float64) * 1.8 + 0.2
NOISE = torch.randn(2, 4096, generator=_data, dtype=torch.float64)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_sigma] for x0 ~ N(MU, SCALE²) per dimension: MU + Cov(x0, x)/Var(x)·(x - E[x])."""
    sigma = sigma.to(x.dtype)
    variance = (1 - sigma) ** 2 * SCALE**2 + sigma**2
    return MU + (1 - sigma) * SCALE**2 / variance * (x - (1 - sigma) * MU)


def flow_error(name: str, steps: int, shift: float) -> float:
    """The probability-flow ODE keeps each point's standard score, so noise n flows to MU + SCALE·n."""
    out = SOLVERS[name](gaussian_denoiser, NOISE, linear_schedule(steps, shift).double())
    return relative_error(out, MU + SCALE * NOISE)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_solvers_converge_to_the_exact_flow_at_their_order(shift):
    errors = {name: [flow_error(name, steps, shift) for steps in (5, 10, 20, 40)] for name in SOLVERS}
    for name, by_steps in errors.items():
        assert all(a > b for a, b in itertools.pairwise(by_steps)), (name, by_steps)
    for name in ("heun", "dpmpp_2m", "unipc"):
        assert errors[name][1] < 0.5 * errors["euler"][1], errors  # at 10 steps
        assert errors[name][3] < 0.2 * errors["euler"][3], errors  # at 40 steps
    order = {name: np.log2(by_steps[2] / by_steps[3]) for name, by_steps in errors.items()}
    assert 0.8 < order["euler"] < 1.2 and order["heun"] > 1.8 and order["unipc"] > 1.8, order
    assert order["dpmpp_2m"] > 1.3, order  # its last step, to sigma = 0, is first order


# ---- the contract every solver keeps ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
def test_last_step_returns_x0_and_callback_ticks_once_per_step(name):
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(3))
    sigmas = linear_schedule(6, 3.0)
    seen = []
    out = SOLVERS[name](denoiser_from_velocity(toy_velocity), x, sigmas, callback=seen.append)
    assert [s["i"] for s in seen] == list(range(6))
    assert all(s["sigma"] == sigmas[s["i"]] and s["denoised"].shape == x.shape for s in seen)
    assert torch.equal(out, seen[-1]["denoised"])


@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_raising_callback_cancels_sampling(name):
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return x * 0.5

    def cancel(state):
        if state["i"] == 2:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        SOLVERS[name](model, torch.ones(1, 4), linear_schedule(10), callback=cancel)
    assert len(calls) <= 5  # heun makes two calls a step


def test_denoiser_from_velocity_is_x_minus_sigma_v_per_batch_item():
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    sigma = torch.tensor([0.25, 0.75], dtype=torch.float64)
    expected = torch.stack(
        [x[k] - sigma[k] * toy_velocity(x[k : k + 1], sigma[k : k + 1])[0] for k in range(2)]
    )
    torch.testing.assert_close(denoiser_from_velocity(toy_velocity)(x, sigma), expected, rtol=0, atol=1e-15)


def test_model_sees_each_level_as_a_scalar_and_gets_extra_args():
    seen = []

    def model(x, sigma, scale):
        seen.append((sigma, scale))
        return x * scale

    sample_euler(model, torch.ones(3, 2), linear_schedule(2), extra_args={"scale": 0.5})
    assert [(s.shape, float(s), scale) for s, scale in seen] == [((), 1.0, 0.5), ((), 0.5, 0.5)]


@pytest.mark.parametrize(
    "sigmas,message",
    [
        (torch.tensor([0.0, 0.5, 1.0]), "must descend strictly"),
        (torch.tensor([1.5, 0.5, 0.0]), r"\[1\.5, 0\.5, 0\] must descend strictly within \[0, 1\]"),
        (torch.tensor([1.0, 0.5, 0.5, 0.0]), "must descend strictly"),
        (torch.ones(2, 3), r"shape \(2, 3\); expected a 1-D tensor"),
    ],
)
def test_bad_sigmas_are_refused_with_the_reason(sigmas, message):
    with pytest.raises(ValueError, match=message):
        sample_euler(lambda x, sigma: x, torch.ones(1, 4), sigmas)


def test_unknown_solver_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown solver 'ddim': choose one of euler, heun, dpmpp_2m, unipc"
    ):
        solver_by_name("ddim")
    assert solver_by_name("unipc") is SOLVERS["unipc"]


# ---- classifier-free guidance ----------------------------------------------------------------------


class CountingModel:
    """velocity(x, sigma, context) that records each call's batch and context."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, context):
        self.calls.append((x.shape[0], sigma.clone(), context.clone()))
        return torch.tanh(x * context.mean(dim=(1, 2)).reshape(-1, 1, 1)) + sigma.reshape(-1, 1, 1)


def test_guidance_runs_cond_and_uncond_as_one_batched_forward():
    cond, uncond = torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    x, sigma = torch.randn(2, 3, 8), torch.tensor([0.7, 0.7])
    model = CountingModel()
    guided = classifier_free_guidance(model, cond, uncond, cfg=5.0)(x, sigma)
    assert len(model.calls) == 1 and model.calls[0][0] == 4
    torch.testing.assert_close(model.calls[0][1], torch.cat([sigma, sigma]))
    torch.testing.assert_close(model.calls[0][2], torch.cat([cond, cond, uncond, uncond]))
    two_pass = CountingModel()
    v_cond, v_uncond = (
        two_pass(x, sigma, cond.expand(2, -1, -1)),
        two_pass(x, sigma, uncond.expand(2, -1, -1)),
    )
    torch.testing.assert_close(guided, v_uncond + 5.0 * (v_cond - v_uncond), rtol=1e-6, atol=1e-6)


def test_guidance_scale_one_runs_the_cond_pass_alone():
    cond, x, sigma = torch.randn(2, 5, 4), torch.randn(2, 3, 8), torch.tensor([0.3, 0.3])
    model = CountingModel()
    v = classifier_free_guidance(model, cond, None, cfg=1.0)(x, sigma)
    assert len(model.calls) == 1 and model.calls[0][0] == 2 and torch.equal(model.calls[0][2], cond)
    torch.testing.assert_close(v, CountingModel()(x, sigma, cond), rtol=0, atol=0)


def test_guidance_refuses_contexts_that_cannot_share_a_batch():
    model, cond = CountingModel(), torch.randn(1, 5, 4)
    with pytest.raises(ValueError, match="differ in token count or width"):
        classifier_free_guidance(model, cond, torch.randn(1, 7, 4), cfg=4.0)
    with pytest.raises(ValueError, match=r"cfg=4\.0 needs a negative"):
        classifier_free_guidance(model, cond, None, cfg=4.0)
    with pytest.raises(ValueError, match="context of batch 2 cannot condition a latent batch of 3"):
        classifier_free_guidance(model, torch.randn(2, 5, 4), torch.randn(2, 5, 4), cfg=4.0)(
            torch.randn(3, 3, 8), torch.ones(3)
        )


# ---- noise -----------------------------------------------------------------------------------------


def comfyui_prepare_noise(shape, seed, noise_inds=None):
    """comfy/sample.py prepare_noise for a float32 CPU latent, as ComfyUI core writes it."""
    generator = torch.manual_seed(seed)
    if noise_inds is None:
        return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")
    unique_inds, inverse = np.unique(noise_inds, return_inverse=True)
    noises = []
    for i in range(unique_inds[-1] + 1):
        noise = torch.randn([1, *shape[1:]], dtype=torch.float32, generator=generator, device="cpu")
        if i in unique_inds:
            noises.append(noise)
    return torch.cat([noises[i] for i in inverse], axis=0)


@pytest.mark.parametrize("seed", [0, 42, 2**63 + 12345])
def test_noise_is_comfyui_cores_for_the_same_seed_without_touching_the_global_rng(seed):
    shape = (2, 16, 3, 6, 8)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        before = torch.get_rng_state()
        noise = initial_noise(shape, seed)
        assert torch.equal(torch.get_rng_state(), before)
        expected = comfyui_prepare_noise(shape, seed)
    assert noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise, expected) and torch.equal(initial_noise(shape, seed), noise)
    assert not torch.equal(noise[0], noise[1]) and abs(float(noise.std()) - 1) < 0.05


def test_noise_follows_a_latent_batch_index_like_core():
    shape = (3, 4, 1, 2, 2)
    with torch.random.fork_rng():
        expected = comfyui_prepare_noise(shape, 5, noise_inds=[4, 1, 4])
    assert torch.equal(initial_noise(shape, 5, batch_index=[4, 1, 4]), expected)
    with pytest.raises(ValueError, match=r"batch_index=\[0\] must hold one whole number >= 0 per latent \(3"):
        initial_noise(shape, 5, batch_index=[0])
    with pytest.raises(ValueError, match=r"seed=-1 must be a whole number from 0 to"):
        initial_noise(shape, -1)


def test_noise_scaling_is_cores_for_flow_models():
    latent, noise = torch.randn(2, 4, 1, 2, 2), torch.randn(2, 4, 1, 2, 2)
    torch.testing.assert_close(
        noise_scaling(0.25, noise, latent), 0.25 * noise + 0.75 * latent, rtol=0, atol=0
    )
    assert torch.equal(noise_scaling(1.0, noise, latent), noise)
    assert torch.equal(noise_scaling(torch.tensor(0.0), noise, latent), latent)
    per_item = noise_scaling(torch.tensor([1.0, 0.0]), noise, latent)
    assert torch.equal(per_item[0], noise[0]) and torch.equal(per_item[1], latent[1])
