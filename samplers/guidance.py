"""Classifier-free guidance (Ho & Salimans 2022) around a velocity model.

Guidance is linear, so guiding the velocity guides the x0 prediction identically:
`denoiser_from_velocity(classifier_free_guidance(model, cond, uncond, cfg))` is the guided denoiser.

Axes: B batch, L text tokens, D text width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ConditionedVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_free_guidance(
    velocity: ConditionedVelocity, cond: torch.Tensor, uncond: torch.Tensor | None, cfg: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`velocity(x, sigma, context) -> v` guided to (x, sigma) -> uncond + cfg·(cond - uncond).

    The conditional and unconditional passes run as one forward of twice the batch; cfg = 1 runs the
    conditional pass alone (and uncond may then be None). Contexts are B×L×D with B = 1 (shared by the
    whole batch) or the batch of x, and cond and uncond must have the same L (Wan pads both to 512)."""
    if not (isinstance(cfg, (int, float)) and math.isfinite(cfg)):
        raise ValueError(f"cfg={cfg!r} must be a finite number (1 turns guidance off).")
    _check_context("cond", cond)
    if cfg == 1:
        return lambda x, sigma: velocity(x, sigma, _per_item(cond, x))
    if uncond is None:
        raise ValueError(f"cfg={cfg} needs a negative (unconditional) context; pass one, or set cfg to 1.")
    _check_context("uncond", uncond)
    if cond.shape[1:] != uncond.shape[1:]:
        raise ValueError(
            f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} differ in token count or width; "
            "they share one batched forward, so encode both padded to the same length."
        )

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        both = velocity(
            torch.cat([x, x]),
            torch.cat([sigma, sigma]) if sigma.ndim else sigma,
            torch.cat([_per_item(cond, x), _per_item(uncond, x)]),
        )
        v_cond, v_uncond = both.chunk(2)
        return v_uncond + cfg * (v_cond - v_uncond)

    return guided


def _check_context(name: str, context: torch.Tensor) -> None:
    if context.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(context.shape)}; expected text embeddings B×L×D.")


def _per_item(context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The context for each item of x's batch: one shared context is repeated."""
    if context.shape[0] == x.shape[0]:
        return context
    if context.shape[0] == 1:
        return context.expand(x.shape[0], -1, -1)
    raise ValueError(
        f"a context of batch {context.shape[0]} cannot condition a latent batch of {x.shape[0]}: "
        "give one context, or one per latent."
    )
