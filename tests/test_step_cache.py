"""Step caching: at threshold 0 sampling is exactly uncached; above it, fewer DiT calls, never the first
two or the last step's, with guidance, the A14B expert switch and pinned frames."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from spacetime.dit.patchify import SpacetimePatches, patchify
from spacetime.dit.wan import WanDiT
from spacetime.samplers.denoiser import Sampling, denoise
from spacetime.samplers.guidance import Guider
from spacetime.samplers.schedules import schedule_by_name
from spacetime.samplers.step_cache import StepCache

from numerics import relative_error
from wan_reference import T2V, random_wan_state_dict

CONFIG = replace(T2V, num_layers=2)


class Counted(WanDiT):
    """The DiT, counting its forward calls and the noise levels they were made at."""

    def forward_tokens(self, tokens, grid, timestep, context, image=None):
        self.seen.append(float(timestep.flatten().max()) / 1000)
        return super().forward_tokens(tokens, grid, timestep, context, image)


def model(seed: int) -> Counted:
    dit = Counted(CONFIG)
    dit.load_state_dict(random_wan_state_dict(CONFIG, seed=seed))
    dit.seen = []
    return dit.requires_grad_(False)


def patches(pinned: bool = False) -> SpacetimePatches:
    tokens, grid = patchify(torch.zeros(1, 16, 3, 8, 8), CONFIG.patch_size)
    if not pinned:
        return SpacetimePatches(tokens, grid, CONFIG.patch_size, CONFIG.latent_format)
    pins = torch.zeros(tokens.shape[:2], dtype=torch.bool)
    pins[:, :16] = True  # the first latent frame known
    known = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(8))
    return SpacetimePatches(tokens, grid, CONFIG.patch_size, CONFIG.latent_format, pins, known)


def guider(dit, low=None) -> Guider:
    generator = torch.Generator().manual_seed(1)
    contexts = [torch.randn(1, 5, CONFIG.text_dim, generator=generator) for _ in range(2)]
    return Guider(dit, *contexts, cfg=4.0, low_noise_dit=low, boundary=0.7 if low is not None else None)


SIGMAS = schedule_by_name("simple")(20, 3.0)


@pytest.mark.parametrize("solver", ["euler", "unipc"])
def test_threshold_zero_is_exactly_uncached(solver):
    dit = model(1)
    plain = denoise(guider(dit), patches(), Sampling(SIGMAS, solver, 3)).tokens
    calls = len(dit.seen)
    dit.seen.clear()
    with pytest.raises(ValueError, match="cache"):
        Sampling(SIGMAS, solver, 3, cache=-0.1)
    assert torch.equal(denoise(guider(dit), patches(), Sampling(SIGMAS, solver, 3, cache=0.0)).tokens, plain)
    assert len(dit.seen) == calls == 20


@pytest.mark.parametrize("pinned", [False, True])
def test_a_threshold_skips_calls_but_never_the_first_two_or_the_last_step(pinned):
    dit = model(2)
    plain = denoise(guider(dit), patches(pinned), Sampling(SIGMAS, "euler", 3)).tokens
    dit.seen.clear()
    cached = denoise(guider(dit), patches(pinned), Sampling(SIGMAS, "euler", 3, cache=1.2)).tokens
    made = dit.seen
    assert 2 < len(made) < 20  # fewer DiT calls
    levels = [round(float(s), 4) for s in SIGMAS[:-1]]
    assert [round(s, 4) for s in made[:2]] == levels[:2]  # the first two computed
    assert round(made[-1], 4) == levels[-1]  # the last step computed
    assert relative_error(cached, plain) < 0.5  # a random model changes fast: a loose bound
    if pinned:  # known tokens held exactly, cached or not
        assert torch.equal(cached[:, :16], patches(True).known[:, :16].float())


def test_each_expert_has_its_own_cache():
    high, low = model(3), model(4)
    denoise(guider(high, low), patches(), Sampling(SIGMAS, "euler", 3, cache=1.2))
    assert len(high.seen) >= 2 and len(low.seen) >= 2  # each warms up again after the switch
    assert all(s >= 0.7 for s in high.seen) and all(s < 0.7 for s in low.seen)
    assert len(high.seen) + len(low.seen) < 20


def test_the_cache_reuses_the_last_transformation():
    cache = StepCache(threshold=10.0, last_sigma=0.05)
    outputs = iter([torch.ones(3) * 2, torch.ones(3) * 3])
    velocity = cache.wrap(lambda x, sigma: next(outputs))
    velocity(torch.zeros(3), torch.tensor(0.9))
    velocity(torch.ones(3), torch.tensor(0.8))  # v - x = 2 now
    assert torch.equal(velocity(torch.full((3,), 1.5), torch.tensor(0.7)), torch.full((3,), 3.5))
    assert (cache.calls, cache.skipped) == (2, 1)


def test_long_videos_windows_keep_the_cache_setting():
    """Long Video reseeds its Sampling per window; each window's denoise makes its own caches."""
    assert Sampling(SIGMAS, "euler", 3, cache=0.2).reseeded(7).cache == 0.2
