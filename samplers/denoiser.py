"""Denoise spacetime patches down a schedule: the guider's models (guidance, pinned tokens, the Wan 2.2
A14B expert switch), the seed's noise and any solver from the registry, composed as ComfyUI's
SamplerCustomAdvanced composes GUIDER, NOISE, SAMPLER and SIGMAS.

Rectified flow in the DiT's normalised latent space: x_sigma = (1 - sigma) x0 + sigma noise, the DiT
predicts v = noise - x0 at timestep 1000 sigma, so x0 = x - sigma v. Pinned tokens (the primitive behind
image to video, extension, connecting and looping) hold known clean values: the guider resets them before
every model call and replaces their x0 prediction, and the result holds them exactly.

Axes: B batch, L tokens, P token width.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from .. import host
from ..dit import SpacetimePatches, WanDiT
from ..dit.patchify import patchify
from ..streaming import DoesNotFit
from .guidance import Guider
from .noise import initial_noise, noise_scaling
from .solvers import SOLVERS
from .step_cache import StepCache

log = logging.getLogger(__name__)


def check_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if len(sigmas) < 2 or not bool((sigmas[1:] < sigmas[:-1]).all()) or sigmas[0] > 1 or sigmas[-1] < 0:
        raise ValueError(
            f"sigmas {sigmas.tolist()[:8]}{'...' if len(sigmas) > 8 else ''}: expected at least two strictly "
            "descending values in 1..0 (a flow-matching schedule, e.g. from Scheduler (Spacetime))."
        )
    return sigmas


@dataclass(frozen=True)
class Sampling:
    """How to walk down the noise levels: the schedule, the solver and the noise seed (ComfyUI's SIGMAS,
    SAMPLER and NOISE), validated once."""

    sigmas: torch.Tensor
    solver: str = "unipc"
    seed: int = 0
    cache: float = 0.0  # step caching's threshold (step_cache.py); 0: every DiT call made

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r}: expected one of {sorted(SOLVERS)}.")
        if not (isinstance(self.cache, int | float) and self.cache >= 0):
            raise ValueError(f"cache={self.cache!r}: expected 0 (off) or a threshold above 0, e.g. 0.3.")
        object.__setattr__(self, "sigmas", check_sigmas(self.sigmas))

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def reseeded(self, seed: int) -> Sampling:
        return replace(self, seed=seed)


@contextlib.contextmanager
def _placed(guider: Guider, model: WanDiT, patches: SpacetimePatches) -> Iterator[tuple[torch.device, bool]]:
    """`model` on the compute device with room for its work: guidance's passes (two; one more for each further
    prompt of a storyboard's window) as one batch, or, where only one pass fits, one after the other. Yields
    (device, batched)."""
    batch, tokens = patches.tokens.shape[:2]
    per_token = guider.pins(patches) is not None and model.config.clean_pins
    prompts = 1 if guider.timeline is None else guider.timeline.contexts.shape[0]
    passes = prompts + (0 if guider.cfg == 1 else 1)
    with contextlib.ExitStack() as stack:
        try:
            working = model.activation_bytes(passes * batch, tokens, per_token)
            device, batched = stack.enter_context(host.on_compute_device(model, working)), True
        except DoesNotFit:
            if passes == 1:
                raise
            log.info("%s: guidance's %d passes run one after the other (together they would not fit).",
                     model.config.name, passes)  # fmt: skip
            working = model.activation_bytes(batch, tokens, per_token)
            device, batched = stack.enter_context(host.on_compute_device(model, working)), False
        yield device, batched


def denoise(
    guider: Guider,
    patches: SpacetimePatches,
    sampling: Sampling,
    step_callback: Callable[[], None] | None = None,
) -> SpacetimePatches:
    """Run the solver down the sigmas from `patches` (noised to sigmas[0] with the seed's noise; pure noise
    when sigmas[0] = 1) and return the denoised patches; `step_callback` is called after every step."""
    guider.check_patches(patches)
    noise, _ = patchify(
        initial_noise(patches.latent_shape, sampling.seed), patches.patch_size
    )  # as core draws it
    x = noise_scaling(sampling.sigmas[0], noise, patches.tokens.float())

    def tick(_state: dict) -> None:
        if step_callback is not None:
            step_callback()

    for model, segment in guider.experts(sampling.sigmas):
        cache = StepCache(sampling.cache, last_sigma=float(sampling.sigmas[-2])) if sampling.cache else None
        with _placed(guider, model, patches) as (device, batched):
            x0_prediction = guider.denoiser(model, patches, noise, device, batched, cache)
            x = SOLVERS[sampling.solver](x0_prediction, x.to(device), segment.to(device), callback=tick)
        if cache is not None:
            log.info(
                "%s: %d DiT calls, %d reused by the step cache.",
                model.config.name,
                cache.calls,
                cache.skipped,
            )
    pinned = guider.pins(patches)
    if pinned is not None:
        x = torch.where(pinned.to(x.device), patches.known.float().to(x.device), x)
    return SpacetimePatches(
        tokens=x.to(host.intermediate_device()),
        grid=patches.grid,
        patch_size=patches.patch_size,
        latent_format=patches.latent_format,
        pinned=patches.pinned,
        known=patches.known,
    )
