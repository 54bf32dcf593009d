"""The DiT denoiser: guidance batching, pinned tokens, the A14B expert switch, seeds, and agreement with a
hand-written Euler loop over the DiT."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from spacetime.dit import SpacetimePatches, WanDiT
from spacetime.dit.patchify import patchify
from spacetime.samplers.denoiser import Sampling, denoise
from spacetime.samplers.guidance import Guider, conditioning_context
from spacetime.samplers.noise import initial_noise
from spacetime.samplers.schedules import linear_schedule

from wan_reference import T2V, random_wan_state_dict

TINY = replace(T2V, dim=64, ffn_dim=128, head_dim=32, text_dim=32)


def tiny_dit(seed: int = 0, config=TINY) -> WanDiT:
    model = WanDiT(config)
    model.load_state_dict(random_wan_state_dict(config, seed))
    return model.eval().requires_grad_(False)


class CallLog:
    """Wraps a DiT's forward_tokens and records each call's batch and timesteps."""

    def __init__(self, dit: WanDiT):
        self.calls = []
        forward = dit.forward_tokens

        def logged(tokens, grid, timestep, context):
            self.calls.append((tokens.shape[0], timestep.clone()))
            return forward(tokens, grid, timestep, context)

        dit.forward_tokens = logged


@pytest.fixture(scope="module")
def dit():
    return tiny_dit()


def empty_patches(dit, batch=1, frames=2, height=4, width=6):
    return SpacetimePatches.from_latent(
        torch.zeros(batch, 16, frames, height, width), dit.config.patch_size, dit.latent_format
    )


def contexts(batch=1, length=7):
    generator = torch.Generator().manual_seed(3)
    return torch.randn(batch, length, 32, generator=generator), torch.randn(
        batch, length + 2, 32, generator=generator
    )


def test_euler_run_equals_a_hand_written_loop_over_the_dit(dit):
    patches, (positive, negative) = empty_patches(dit), contexts()
    sigmas = linear_schedule(4, shift=3.0)
    out = denoise(Guider(dit, positive, negative, cfg=4.0), patches, Sampling(sigmas, "euler", seed=11))

    x, _ = patchify(initial_noise((1, 16, 2, 4, 6), 11), dit.config.patch_size)
    padded = torch.nn.functional.pad(positive, (0, 0, 0, 2))
    for sigma, sigma_next in itertools.pairwise(sigmas):
        t = (1000 * sigma).reshape(1)
        v_cond = dit.forward_tokens(x, patches.grid, t, padded)
        v_uncond = dit.forward_tokens(x, patches.grid, t, negative)
        v = v_uncond + 4.0 * (v_cond - v_uncond)
        x = x + (sigma_next - sigma) * v
    torch.testing.assert_close(out.tokens, x, rtol=1e-4, atol=1e-5)
    assert out.tokens.abs().mean() > 0.1


def test_guidance_runs_one_batched_forward_and_cfg_1_skips_the_negative():
    model = tiny_dit()
    log = CallLog(model)
    patches, (positive, negative) = empty_patches(model, batch=2), contexts()
    denoise(Guider(model, positive, negative, cfg=5.0), patches, Sampling(linear_schedule(3), "euler"))
    assert [batch for batch, _ in log.calls] == [4, 4, 4]  # cond and uncond of 2 latents, one call a step
    log.calls.clear()
    denoise(Guider(model, positive, None, cfg=1.0), patches, Sampling(linear_schedule(3), "euler"))
    assert [batch for batch, _ in log.calls] == [2, 2, 2]


def test_seed_gives_the_same_result_and_batch_items_differ(dit):
    patches, (positive, negative) = empty_patches(dit, batch=2), contexts()
    sigmas = linear_schedule(3, shift=5.0)
    first = denoise(Guider(dit, positive, negative), patches, Sampling(sigmas, "unipc", seed=7)).tokens
    again = denoise(Guider(dit, positive, negative), patches, Sampling(sigmas, "unipc", seed=7)).tokens
    other = denoise(Guider(dit, positive, negative), patches, Sampling(sigmas, "unipc", seed=8)).tokens
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - other).abs().mean() > 0.1
    assert (first[0] - first[1]).abs().mean() > 0.1


@pytest.mark.parametrize("clean", [False, True])
def test_pinned_tokens_come_back_exactly_and_steer_the_rest(clean):
    model = tiny_dit(config=replace(TINY, clean_pins=clean))
    log = CallLog(model)
    patches, (positive, negative) = empty_patches(model), contexts()
    known = torch.randn(patches.tokens.shape, generator=torch.Generator().manual_seed(5))
    pinned = torch.zeros(patches.tokens.shape[:2], dtype=torch.bool)
    pinned[:, :6] = True  # the first latent frame (grid 2×2×3)
    pinned_patches = replace(patches, pinned=pinned, known=known)
    sigmas = linear_schedule(3, shift=2.0)
    out = denoise(Guider(model, positive, negative), pinned_patches, Sampling(sigmas, "dpmpp_2m", seed=1))
    free = denoise(Guider(model, positive, negative), patches, Sampling(sigmas, "dpmpp_2m", seed=1))
    torch.testing.assert_close(out.tokens[pinned], known[pinned], rtol=0, atol=0)
    assert (
        out.tokens[~pinned] - free.tokens[~pinned]
    ).abs().mean() > 1e-3  # the known frame conditions the rest
    assert out.pinned is pinned  # the output still says which tokens are known
    timesteps = log.calls[0][1]
    if clean:  # per-token timesteps: 0 for the known tokens, 1000·sigma for the others
        assert timesteps.shape == (2, 12)
        assert (timesteps[:, :6] == 0).all() and torch.allclose(timesteps[:, 6:], 1000 * sigmas[0])
    else:
        assert timesteps.shape == (2,)


def test_a14b_switches_to_the_low_noise_expert_at_the_boundary():
    high, low = tiny_dit(0), tiny_dit(1)
    high_log, low_log = CallLog(high), CallLog(low)
    patches, (positive, negative) = empty_patches(high), contexts()
    sigmas = linear_schedule(8, shift=5.0)
    denoise(
        Guider(high, positive, negative, low_noise_dit=low, boundary=0.875),
        patches,
        Sampling(sigmas, "euler"),
    )
    high_sigmas = [float(t[0]) / 1000 for _, t in high_log.calls]
    low_sigmas = [float(t[0]) / 1000 for _, t in low_log.calls]
    assert high_sigmas and low_sigmas and len(high_sigmas) + len(low_sigmas) == 8
    assert min(high_sigmas) >= 0.875 > max(low_sigmas)
    torch.testing.assert_close(torch.tensor(high_sigmas + low_sigmas), sigmas[:-1], rtol=1e-5, atol=1e-6)


def test_steps_tick_and_cancel_stops_within_a_step(dit):
    patches, (positive, negative) = empty_patches(dit), contexts()
    ticks = []
    denoise(
        Guider(dit, positive, negative),
        patches,
        Sampling(linear_schedule(5), "heun"),
        lambda: ticks.append(1),
    )
    assert len(ticks) == 5

    class Cancelled(Exception):
        pass

    def cancel_after_two():
        ticks.append(1)
        if len(ticks) == 7:
            raise Cancelled

    with pytest.raises(Cancelled):
        denoise(
            Guider(dit, positive, negative), patches, Sampling(linear_schedule(5), "unipc"), cancel_after_two
        )
    assert len(ticks) == 7


def test_bad_inputs_are_refused_clearly(dit):
    patches, (positive, negative) = empty_patches(dit), contexts()
    with pytest.raises(ValueError, match="solver 'ddim'"):
        denoise(Guider(dit, positive, negative), patches, Sampling(linear_schedule(3), "ddim"))
    with pytest.raises(ValueError, match="descending"):
        denoise(Guider(dit, positive, negative), patches, Sampling(torch.tensor([0.5, 0.7, 0.0])))
    with pytest.raises(ValueError, match="negative"):
        denoise(Guider(dit, positive, None, cfg=3.0), patches, Sampling(linear_schedule(3)))
    with pytest.raises(ValueError, match="entries"):
        conditioning_context([[positive, {}], [positive, {}]], 1, "positive")
    with pytest.raises(ValueError, match="1×S×E or 2×S×E"):
        conditioning_context([[torch.zeros(3, 4, 32), {}]], 2, "positive")
    assert conditioning_context([[positive, {"pooled_output": None}]], 3, "positive").shape == (3, 7, 32)
