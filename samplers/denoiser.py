"""Denoise spacetime patches with a Wan DiT: classifier-free guidance, pinned (known) tokens, the Wan 2.2
A14B high-/low-noise expert switch, seeded noise, and any solver from the registry.

Rectified flow in the DiT's normalised latent space: x_sigma = (1 - sigma) x0 + sigma noise, the DiT
predicts v = noise - x0 at timestep 1000 sigma, so x0 = x - sigma v.

Pinned tokens (the primitive behind image to video, extension, connecting and looping) hold known clean
values. Before every model call they are reset: noised to the current sigma with the run's own noise, or,
for models trained that way (`config.clean_pins`: Wan 2.2 TI2V, Tiny World), left clean with a per-token
timestep of 0. Their x0 prediction is replaced by the known values, and the result holds them exactly.

Axes: B batch, L tokens, P token width, S text tokens, E text width.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from .. import host
from ..dit import SpacetimePatches, WanDiT
from ..dit.patchify import patchify
from .guidance import classifier_free_guidance
from .noise import initial_noise, noise_scaling
from .solvers import SOLVERS, denoiser_from_velocity

# Wan 2.2 A14B text-to-video switches from the high-noise to the low-noise expert at timestep 875.
WAN22_T2V_BOUNDARY = 0.875


def conditioning_context(conditioning, batch: int, name: str) -> torch.Tensor:
    """ComfyUI CONDITIONING ([[embeddings 1×S×E, {...}]]) -> text context B×S×E."""
    if (
        not isinstance(conditioning, list)
        or not conditioning
        or not isinstance(conditioning[0], list | tuple)
    ):
        raise ValueError(
            f"{name}: expected a CONDITIONING (a list of [embeddings, options]), got {type(conditioning).__name__}."
        )
    if len(conditioning) > 1:
        raise ValueError(
            f"{name}: this CONDITIONING holds {len(conditioning)} entries (e.g. from Conditioning Combine or area "
            "conditioning); the DiT Denoiser takes one prompt. Use one Text Encode output, or Conditioning Concat."
        )
    embeddings = conditioning[0][0]
    if embeddings.ndim != 3 or embeddings.shape[0] not in (1, batch):
        raise ValueError(
            f"{name}: embeddings of shape {tuple(embeddings.shape)}; expected 1×S×E or {batch}×S×E text embeddings."
        )
    return embeddings.expand(batch, -1, -1)


def _pad_to(context: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad text embeddings to `length` tokens (the DiT pads to 512 with zeros anyway)."""
    return F.pad(context, (0, 0, 0, length - context.shape[1]))


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def _experts(sigmas: torch.Tensor, dit: WanDiT, low_noise_dit: WanDiT | None, boundary: float):
    """[(dit, sigmas of its segment)]: steps starting at sigma >= boundary go to the high-noise expert."""
    if low_noise_dit is None:
        return [(dit, sigmas)]
    switch = int((sigmas[:-1] >= boundary).sum())
    segments = [(dit, sigmas[: switch + 1]), (low_noise_dit, sigmas[switch:])]
    return [(model, segment) for model, segment in segments if len(segment) > 1]


def check_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if len(sigmas) < 2 or not bool((sigmas[1:] < sigmas[:-1]).all()) or sigmas[0] > 1 or sigmas[-1] < 0:
        raise ValueError(
            f"sigmas {sigmas.tolist()[:8]}{'...' if len(sigmas) > 8 else ''}: expected at least two strictly "
            "descending values in 1..0 (a flow-matching schedule, e.g. from Scheduler (Spacetime))."
        )
    return sigmas


def pinned_x0_prediction(
    dit: WanDiT,
    grid: tuple[int, int, int],
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    cfg: float,
    pinned: torch.Tensor | None,
    known: torch.Tensor | None,
    noise: torch.Tensor,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The guided denoiser (tokens B×L×P, sigma) -> x0 that holds pinned tokens (B×L×1 mask) to `known`."""
    forward = partial(dit.forward_tokens, grid=grid)
    guided = classifier_free_guidance(
        lambda x, timestep, context: forward(x, timestep=timestep, context=context), positive, negative, cfg
    )
    clean_pins = pinned is not None and dit.config.clean_pins

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        timestep = (1000.0 * sigma.float()).expand(x.shape[0])
        if clean_pins:  # known tokens stay clean, at timestep 0
            timestep = torch.where(pinned[..., 0], 0.0, timestep[:, None])
        return guided(x, timestep).float()

    x0_of = denoiser_from_velocity(velocity)
    if pinned is None:
        return x0_of

    def x0_prediction(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        reset = known if clean_pins else (1 - sigma) * known + sigma * noise
        return torch.where(pinned, known, x0_of(torch.where(pinned, reset, x), sigma))

    return x0_prediction


def denoise(
    dit: WanDiT,
    patches: SpacetimePatches,
    sigmas: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    *,
    cfg: float = 5.0,
    seed: int = 0,
    solver: str = "unipc",
    low_noise_dit: WanDiT | None = None,
    boundary: float = WAN22_T2V_BOUNDARY,
    step_callback: Callable[[], None] | None = None,
) -> SpacetimePatches:
    """Run `solver` down `sigmas` from `patches` (noised to sigmas[0] with the seed's noise; pure noise when
    sigmas[0] = 1) and return the denoised patches. positive/negative: text contexts B×S×E."""
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r}: expected one of {sorted(SOLVERS)}.")
    if cfg != 1.0 and negative is None:
        raise ValueError(f"cfg={cfg} needs a negative conditioning; give one, or set cfg to 1.")
    sigmas = check_sigmas(sigmas)
    if negative is not None:  # one batched forward needs equal lengths
        length = max(positive.shape[1], negative.shape[1])
        positive, negative = _pad_to(positive, length), _pad_to(negative, length)
    for model in (dit, low_noise_dit):
        if (
            model is not None
            and model.config.in_channels * model.config.patch_volume != patches.tokens.shape[2]
        ):
            raise ValueError(
                f"patches of width {patches.tokens.shape[2]} were cut for another model than {model.config.name}: "
                "patchify the latent with the same DiT that denoises it."
            )

    (t, h, w), (pt, ph, pw) = patches.grid, patches.patch_size
    channels = patches.tokens.shape[2] // (pt * ph * pw)
    shape = (
        patches.tokens.shape[0],
        channels,
        t * pt,
        h * ph,
        w * pw,
    )  # the LATENT's: noise as core draws it
    noise, _ = patchify(initial_noise(shape, seed), patches.patch_size)
    x = noise_scaling(sigmas[0], noise, patches.tokens.float())
    pinned = None if patches.pinned is None else patches.pinned.unsqueeze(-1)
    known = None if patches.known is None else patches.known.float()

    def tick(_state: dict) -> None:
        if step_callback is not None:
            step_callback()

    for model, segment in _experts(sigmas, dit, low_noise_dit, boundary):
        with host.on_compute_device(model) as device:
            on = partial(_to, device=device)
            x0_prediction = pinned_x0_prediction(
                model, patches.grid, on(positive), on(negative), cfg, on(pinned), on(known), on(noise)
            )
            x = SOLVERS[solver](x0_prediction, x.to(device), segment.to(device), callback=tick)
    if pinned is not None:
        x = torch.where(pinned.to(x.device), known.to(x.device), x)
    return SpacetimePatches(
        tokens=x.to(host.intermediate_device()),
        grid=patches.grid,
        patch_size=patches.patch_size,
        latent_format=patches.latent_format,
        pinned=patches.pinned,
        known=patches.known,
    )
