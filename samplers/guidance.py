"""Guidance: the one object that knows the models and how to call them (ComfyUI's `CFGGuider`), and
classifier-free guidance (Ho & Salimans 2022) around a velocity model.

Guidance is linear, so guiding the velocity guides the x0 prediction identically:
`denoiser_from_velocity(classifier_free_guidance(model, cond, uncond, cfg))` is the guided denoiser.

Axes: B batch, L tokens (text tokens in contexts), D width, P token width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from ..dit import SpacetimePatches, WanDiT
from .image_condition import ImageCondition
from .solvers import denoiser_from_velocity
from .step_cache import StepCache

MAX_CFG = 30.0  # the guidance widgets' maximum
SHOT_KEY = "spacetime_shot"  # a storyboard shot's timing, in a CONDITIONING entry's options
ConditionedVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_free_guidance(
    velocity: ConditionedVelocity,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    cfg: float,
    batched: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`velocity(x, sigma, context) -> v` guided to (x, sigma) -> uncond + cfg·(cond - uncond).

    The conditional and unconditional passes run as one forward of twice the batch (`batched`), or one
    after the other where memory holds only one; cfg = 1 runs the conditional pass alone (and uncond may
    then be None). Contexts are B×L×D with B = 1 (shared by the
    whole batch) or the batch of x, and cond and uncond must have the same L (Wan pads both to 512)."""
    _check_guidance(cfg, uncond)
    _check_context("cond", cond)
    if cfg == 1:
        return lambda x, sigma: velocity(x, sigma, _per_item(cond, x))
    _check_context("uncond", uncond)
    if cond.shape[1:] != uncond.shape[1:]:
        raise ValueError(
            f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} differ in token count or width; "
            "they share one batched forward, so encode both padded to the same length."
        )

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        if not batched:
            v_cond = velocity(x, sigma, _per_item(cond, x))
            return (v_uncond := velocity(x, sigma, _per_item(uncond, x))) + cfg * (v_cond - v_uncond)
        both = velocity(
            torch.cat([x, x]),
            torch.cat([sigma, sigma]) if sigma.ndim else sigma,
            torch.cat([_per_item(cond, x), _per_item(uncond, x)]),
        )
        v_cond, v_uncond = both.chunk(2)
        return v_uncond + cfg * (v_cond - v_uncond)

    return guided


def timed_guidance(
    velocity: ConditionedVelocity,
    conds: torch.Tensor,
    weights: torch.Tensor,
    uncond: torch.Tensor | None,
    cfg: float,
    batched: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance towards a prompt that changes along the tokens: the conditional velocity is
    Σ_k weights[k]·velocity(x, sigma, conds[k]) (conds K×S×E, weights K×L×1 summing to 1 over K), guided
    as classifier_free_guidance guides one prompt (the unconditional pass runs once). The K + 1 passes run
    as one forward (`batched`) or one after the other."""
    _check_guidance(cfg, uncond)
    contexts = list(conds.split(1)) + ([] if cfg == 1 else [uncond])

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        if batched:
            count = len(contexts)
            passes = velocity(
                torch.cat([x] * count),
                torch.cat([sigma] * count) if sigma.ndim else sigma,
                torch.cat([_per_item(context, x) for context in contexts]),
            ).chunk(count)
        else:
            passes = [velocity(x, sigma, _per_item(context, x)) for context in contexts]
        blend = weights.to(x.device, passes[0].dtype)
        v_cond = sum(weight * v for weight, v in zip(blend, passes[: len(conds)], strict=True))
        return v_cond if cfg == 1 else passes[-1] + cfg * (v_cond - passes[-1])

    return guided


def _check_guidance(cfg: float, uncond: torch.Tensor | None) -> None:
    if not (isinstance(cfg, (int, float)) and math.isfinite(cfg)):
        raise ValueError(f"cfg={cfg!r} must be a finite number (1 turns guidance off).")
    if cfg < 0:
        raise ValueError(
            f"cfg={cfg} must be 0 or more: 1 turns guidance off, larger values follow the prompt more "
            "closely (Wan: 5)."
        )
    if cfg != 1 and uncond is None:
        raise ValueError(f"cfg={cfg} needs a negative (unconditional) context; give one, or set cfg to 1.")


def _check_context(name: str, context: torch.Tensor) -> None:
    if context.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(context.shape)}; expected text embeddings B×L×D.")
    if not torch.isfinite(context).all():
        raise ValueError(
            f"{name} holds NaN or infinite values: the text encoder overflowed or its weights are damaged "
            "(try fp32 or bf16 instead of fp16, or check the text encoder file). Nothing can be sampled from it."
        )


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


def conditioning_context(conditioning, batch: int, name: str) -> torch.Tensor:
    """ComfyUI CONDITIONING ([[embeddings 1×S×E, {...}]]) -> text context B×S×E."""
    if (
        not isinstance(conditioning, list)
        or not conditioning
        or not isinstance(conditioning[0], list | tuple)
    ):
        got = "an empty list" if conditioning == [] else type(conditioning).__name__
        raise ValueError(
            f"{name}: expected a CONDITIONING (a list of [embeddings, options]), got {got}: connect a Text "
            "Encode output."
        )
    if len(conditioning) > 1 and SHOT_KEY in _options(conditioning[0]):
        raise ValueError(
            f"{name}: a storyboard of {len(conditioning)} shots, which play one after the other along a long "
            "video: connect it to Long Video (Spacetime)'s positive input. Other samplers take one prompt."
        )
    if len(conditioning) > 1:
        raise ValueError(
            f"{name}: this CONDITIONING holds {len(conditioning)} entries (e.g. from Conditioning Combine or area "
            "conditioning); the DiT Denoiser takes one prompt. Use one Text Encode output, or Conditioning Concat."
        )
    embeddings = conditioning[0][0] if conditioning[0] else None
    if not isinstance(embeddings, torch.Tensor):
        raise ValueError(
            f"{name}: a CONDITIONING's first entry holds {type(embeddings).__name__}, not text embeddings (a "
            "tensor 1×S×E): connect a Text Encode output."
        )
    if embeddings.ndim != 3 or embeddings.shape[0] not in (1, batch):
        raise ValueError(
            f"{name}: embeddings of shape {tuple(embeddings.shape)}; expected 1×S×E or {batch}×S×E text embeddings."
        )
    return embeddings.expand(batch, -1, -1)


def _options(entry) -> dict:
    return entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens B×L×P, sigma) -> x0


@dataclass(frozen=True)
class Timeline:
    """The prompts a window sees and their weight at each of its latent frames: contexts K×S×E (one per
    shot), weights K×T summing to 1 over K."""

    contexts: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        if (
            self.contexts.ndim != 3
            or self.weights.ndim != 2
            or self.contexts.shape[0] != self.weights.shape[0]
        ):
            raise ValueError(
                f"a timeline of contexts {tuple(self.contexts.shape)} and weights {tuple(self.weights.shape)}: "
                "expected K×S×E and K×T."
            )

    def token_weights(self, frames: int, tokens_per_frame: int) -> torch.Tensor:
        """K×L×1 weights over a window's tokens (frame-major, `tokens_per_frame` each)."""
        if self.weights.shape[1] != frames:
            raise ValueError(
                f"a timeline of {self.weights.shape[1]} latent frames cannot weigh a window of {frames}."
            )
        return self.weights.float().repeat_interleave(tokens_per_frame, dim=1).unsqueeze(-1)


@dataclass(frozen=True)
class Guider:
    """The models and how to call them (ComfyUI's `CFGGuider`): the DiT under classifier-free guidance with
    the prompt's context (`positive`, B×S×E) and the negative one, for Wan 2.2 A14B the low-noise expert
    that takes over below `boundary` (None: the high-noise model's own), and for Wan's image-to-video models
    the `image` condition; for a Long Video window that a storyboard's shot change crosses, the `timeline` of
    prompts along its frames (which then stands in for `positive`). Validated here (the image condition
    against the models where sampling starts, `check_patches`); offloading, LoRA and step caching change
    this object and nothing else."""

    dit: WanDiT
    positive: torch.Tensor
    negative: torch.Tensor | None = None
    cfg: float = 5.0
    low_noise_dit: WanDiT | None = None
    boundary: float | None = None
    image: ImageCondition | None = None
    timeline: Timeline | None = None

    def __post_init__(self):
        _check_guidance(self.cfg, self.negative)
        if self.boundary is None:
            object.__setattr__(self, "boundary", self.dit.config.expert_boundary)
        if not 0.0 <= self.boundary <= 1.0:
            raise ValueError(
                f"boundary={self.boundary}: expected a noise level in 0..1 (Wan 2.2 A14B: 0.875)."
            )
        _check_context("positive", self.positive)
        if self.negative is not None:  # one batched forward needs equal lengths
            _check_context("negative", self.negative)
            length = max(self.positive.shape[1], self.negative.shape[1])
            object.__setattr__(self, "positive", _pad_to(self.positive, length))
            object.__setattr__(self, "negative", _pad_to(self.negative, length))

    @classmethod
    def from_conditioning(
        cls, dit: WanDiT, positive, negative, cfg: float, batch: int = 1, **experts
    ) -> Guider:
        """From ComfyUI CONDITIONING (the negative is not read when cfg is 1), with the image condition the
        positive carries under core's keys (Image Condition's, or core's WanImageToVideo's); `experts`:
        low_noise_dit, boundary."""
        negative_context = None if cfg == 1.0 else conditioning_context(negative, batch, "negative")
        context = conditioning_context(positive, batch, "positive")
        image = ImageCondition.from_options(positive[0][1] if len(positive[0]) > 1 else {})
        return cls(dit, context, negative_context, cfg, image=image, **experts)

    @property
    def models(self) -> list[WanDiT]:
        return [model for model in (self.dit, self.low_noise_dit) if model is not None]

    def check_patches(self, patches: SpacetimePatches) -> None:
        """Patches must be cut for these models (the same channels and patch size), and an image-to-video
        model needs its image condition (checked before sampling starts)."""
        for model in self.models:
            (self.image or ImageCondition()).check(model)
            if model.config.out_channels * model.config.patch_volume != patches.tokens.shape[2]:
                raise ValueError(
                    f"patches of width {patches.tokens.shape[2]} were cut for another model than "
                    f"{model.config.name}: patchify the latent with the same DiT that denoises it."
                )

    def experts(self, sigmas: torch.Tensor) -> list[tuple[WanDiT, torch.Tensor]]:
        """[(model, sigmas of its segment)]: steps starting at sigma >= boundary go to the high-noise expert."""
        if self.low_noise_dit is None:
            return [(self.dit, sigmas)]
        switch = int((sigmas[:-1] >= self.boundary).sum())
        segments = [(self.dit, sigmas[: switch + 1]), (self.low_noise_dit, sigmas[switch:])]
        return [(model, segment) for model, segment in segments if len(segment) > 1]

    def pins(self, patches: SpacetimePatches) -> torch.Tensor | None:
        """Which tokens are held to their known values (B×L×1), if any: image-to-video models take known
        frames through their image condition instead."""
        if patches.pinned is None or self.dit.config.concat_condition:
            return None
        return patches.pinned.unsqueeze(-1)

    def denoiser(
        self,
        model: WanDiT,
        patches: SpacetimePatches,
        noise: torch.Tensor,
        device,
        batched: bool = True,
        cache: StepCache | None = None,
    ) -> Denoiser:
        """The guided denoiser (tokens B×L×P, sigma) -> x0 of `model` on `device`, holding the pinned tokens
        to their known values: before each call they are reset, noised to sigma with the run's own `noise`
        or, for models trained that way (config.clean_pins), left clean at timestep 0. An image-to-video
        model gets its image condition beside the tokens instead. `batched`: guidance's two passes as one
        forward (else one after the other, for half the activation memory). `cache`: step caching of the
        guided velocity (both passes reused together)."""
        forward = self._conditioned(model, patches, device)
        negative = None if self.negative is None else self.negative.to(device)
        if self.timeline is None:
            guided = classifier_free_guidance(forward, self.positive.to(device), negative, self.cfg, batched)
        else:
            frames, height, width = patches.grid
            weights = self.timeline.token_weights(frames, height * width)
            contexts = _pad_to(self.timeline.contexts, self.positive.shape[1]).to(device)
            guided = timed_guidance(forward, contexts, weights, negative, self.cfg, batched)
        pinned = self.pins(patches)
        pinned = None if pinned is None else pinned.to(device)
        clean_pins = pinned is not None and model.config.clean_pins

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            timestep = (1000.0 * sigma.float()).expand(x.shape[0])
            if clean_pins:  # known tokens stay clean, at timestep 0
                timestep = torch.where(pinned[..., 0], 0.0, timestep[:, None])
            return guided(x, timestep).float()

        x0_of = denoiser_from_velocity(velocity if cache is None else cache.wrap(velocity))
        if pinned is None:
            return x0_of
        known, noise = patches.known.float().to(device), noise.to(device)

        def x0_prediction(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            reset = known if clean_pins else (1 - sigma) * known + sigma * noise
            return torch.where(pinned, known, x0_of(torch.where(pinned, reset, x), sigma))

        return x0_prediction

    def _conditioned(self, model: WanDiT, patches: SpacetimePatches, device):
        """`model`'s forward over tokens (x, timestep, context) -> velocity, with the image condition's
        tokens after x's and its CLIP features, repeated to the batch of x (guidance doubles it)."""
        forward = partial(model.forward_tokens, grid=patches.grid)
        condition = features = None
        if model.config.concat_condition:
            condition = self.image.tokens(model, patches.latent_shape).to(device)
        if model.config.image_dim:
            features = self.image.features.to(device)

        def call(x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
            if condition is not None:
                x = torch.cat([x, _repeat_to(condition, x.shape[0])], dim=-1)
            if features is None:
                return forward(x, timestep=timestep, context=context)
            return forward(x, timestep=timestep, context=context, image=_repeat_to(features, x.shape[0]))

        return call


def _repeat_to(x: torch.Tensor, batch: int) -> torch.Tensor:
    """x (B'×…) repeated to `batch` items (B' divides it: one per item, or one for all)."""
    return x if x.shape[0] == batch else x.repeat(batch // x.shape[0], *[1] * (x.ndim - 1))


def _pad_to(context: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad text embeddings to `length` tokens (the DiT pads to 512 with zeros anyway)."""
    return F.pad(context, (0, 0, 0, length - context.shape[1]))
