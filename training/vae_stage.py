"""Stage 1 of Tiny World's training: its VAE, in three phases (VAERecipe).

The Wan 2.2 VAE class (2x2 pixel fold, weightless shortcuts around every resampling stage) at width 16
with two 2x stages, so 4x8x8 like Wan 2.1, and 12 latent channels (no preset latent format), on 64x64
crops of 128x128 clips (L1 + MSE). The 2.2 design learns several times faster per second than 2.1's on a
CPU: its first convolutions run at half resolution, and its shortcuts keep the input's signal alive from
the start. After phases 1-2 the latent's per-channel mean and std are folded into the two 1x1 convs
around the latent, so raw latents are already normalised (the DiT's latent format is the identity).
Then the decoder alone learns to join its groups of 4 frames as smoothly as the truth moves (phase 3);
the encoder, and so the latents, stay as they are.

Axes: B clips, C channels, T frames, H W height and width.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..vae.causal import AttentionBlock, Resample, ResidualBlock, TimeCache
from ..vae.wan22 import Wan22VAE, Wan22VAEConfig
from .data import FRAMES, SIZE, clips, to_video
from .recipe import VAERecipe
from .runtime import log, share_cores, warmup_cosine

VAE_CONFIG = Wan22VAEConfig(
    dim=16, decoder_dim=16, z_dim=12, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(True, True),
    name="Tiny World VAE",
)  # fmt: skip
VAE_FILE = "tiny_world_vae.safetensors"
CROP = 64  # training crops are CROP×CROP of SIZE×SIZE clips
VAE_LR, VAE_WARMUP = 3e-4, 20
SMOOTH_LR, SMOOTH_WEIGHT = 1e-4, 30.0  # phase 3: the decoder alone


@dataclass(frozen=True)
class VAEPhase:
    """One phase of VAE training: `steps` on CROP×CROP crops of `frames` frames, L1 + MSE, plus
    `step_weight` x step_error; with `decoder_only`, the encoder stays as it is. `still_weight` > 0: the
    batch also holds each clip's first frame repeated (a still clip), and `still_weight` x latent_spread
    of those clips' latents is added. `index` (1, 2, 3) seeds its own clips and crops."""

    index: int
    steps: int
    frames: int
    lr: float
    step_weight: float = 0.0
    decoder_only: bool = False
    still_weight: float = 0.0


def phases(recipe: VAERecipe) -> tuple[VAEPhase, VAEPhase, VAEPhase]:
    """Phase 1 on short crops (fast), phase 2 on whole 17-frame clips at a third of the learning rate,
    phase 3 the decoder alone with the frame-to-frame steps weighed."""
    return (
        VAEPhase(1, recipe.steps, recipe.frames, VAE_LR),
        VAEPhase(2, recipe.long_steps, FRAMES, VAE_LR / 3, still_weight=recipe.still_weight),
        VAEPhase(3, recipe.smooth_steps, FRAMES, SMOOTH_LR, SMOOTH_WEIGHT, decoder_only=True),
    )


def vae_forward(model: Wan22VAE, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable encode (chunked like inference) and decode without the final clamp."""
    mean = model.encode(video)
    x, cache, chunks = model.conv2(mean), TimeCache(), []
    for index in range(mean.shape[2]):
        cache.start_chunk()
        chunks.append(model.unpatchify(model.decoder(x[:, :, index : index + 1], cache)))
    return torch.cat(chunks, dim=2), mean


@torch.no_grad()
def init_vae(model: Wan22VAE, seed: int) -> None:
    """Signal-preserving init. PyTorch's default conv init shrinks the signal's variance ~3x per conv and
    adds biases that dominate it, so training first collapses to one constant picture. Here: every conv
    N(0, 1/fan_in) with zero bias; residual branches and attention start as the identity (last conv zero);
    the time convs that halve or double frames start by passing the current frame through."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            module.weight.normal_(0.0, module.weight[0].numel() ** -0.5, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
    for module in model.modules():
        if isinstance(module, ResidualBlock):
            module.residual[-1].weight.zero_()
        elif isinstance(module, AttentionBlock):
            module.proj.weight.zero_()
        elif isinstance(module, Resample) and hasattr(module, "time_conv"):
            weight = module.time_conv.weight  # out × in × 3 × 1 × 1; the last tap is the current frame
            weight.mul_(0.1)
            channels = weight.shape[1]
            for out_channel in range(weight.shape[0]):
                weight[out_channel, out_channel % channels, -1] += 1.0


def trained_vae(out: Path, recipe: VAERecipe, seed: int, init: Path | None = None) -> Wan22VAE:
    """The VAE an earlier run left in `out`, or one trained by `recipe` (train_vae)."""
    if not (out / VAE_FILE).exists():
        return train_vae(out, recipe, seed, init)
    model = Wan22VAE(VAE_CONFIG)
    model.load_state_dict(load_file(str(out / VAE_FILE)))
    model.eval().requires_grad_(False)
    log("VAE loaded from an earlier run")
    return model


def train_vae(out: Path, recipe: VAERecipe, seed: int, init: Path | None = None) -> Wan22VAE:
    """The three phases of `recipe`, from `init`'s weights if given. A VAE that only ever saw 3 latent
    frames carries its time cache badly into the 4th and 5th, and Tiny World makes 17-frame videos: hence
    phase 2. Each phase draws its own seeded
    clips, so a run that resumes phase 2 from phase 1's checkpoint (--vae-init, --vae-steps 0) matches one
    that does both. The latent statistics are folded in after the encoder's phases (and only then: a run
    of phase 3 alone keeps the encoder, and so every cached latent, exactly)."""
    torch.manual_seed(seed)
    model = Wan22VAE(VAE_CONFIG)
    if init is None:
        init_vae(model, seed)
    else:  # continue from earlier weights (any folded normalisation is refolded after phases 1-2)
        model.load_state_dict(load_file(str(init)))
    first, second, smooth = phases(recipe)
    vae_phase(model, out, first, seed)
    vae_phase(model, out, second, seed)
    model.eval().requires_grad_(False)
    if init is None or first.steps or second.steps:
        normalise_latents(model, seed, recipe.stats_clips)
    # Phase 3, the decoder alone: it makes each latent frame's 4 frames together, and after phases 1-2
    # they meet the next group's with a step larger than the truth's; this phase smooths the latent
    # boundaries (docs/tiny-world.md). The encoder, and so every latent, is unchanged.
    vae_phase(model, out, smooth, seed)
    model.eval().requires_grad_(False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / VAE_FILE))
    return model


def vae_phase(model: Wan22VAE, out: Path, phase: VAEPhase, seed: int) -> None:
    """Train `model` through `phase` (see VAEPhase), with a checkpoint in `out` every 100 steps."""
    if phase.steps <= 0:
        return
    trained = (
        [*model.decoder.parameters(), *model.conv2.parameters()]
        if phase.decoder_only
        else [*model.parameters()]
    )
    model.requires_grad_(not phase.decoder_only)
    for parameter in trained:
        parameter.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(trained, lr=phase.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, VAE_WARMUP, phase.steps)
    )
    rng = np.random.default_rng(seed if phase.index == 1 else (seed, phase.index))
    offset = 0 if phase.index == 1 else 10_000_000 * phase.index  # clip seeds not shared between phases
    start = time.time()
    for step in range(phase.steps):
        video = _crops(seed * 1_000_003 + offset + step, phase, rng)
        output, mean = vae_forward(model, video)
        loss = vae_loss(output, video, mean, phase)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == phase.steps - 1:
            share_cores()
            psnr = 10 * math.log10(4 / F.mse_loss(output.clamp(-1, 1), video).item())
            steps_error = step_error(output.detach(), video)
            log(
                f"vae phase {phase.index} step {step}/{phase.steps} ({phase.frames} frames) loss "
                f"{loss.item():.4f} step error {steps_error.item():.5f} psnr {psnr:.1f} dB "
                f"({time.time() - start:.0f} s)"
            )
        if (step + 1) % 100 == 0:  # a checkpoint to continue from (--vae-init)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(out / f"vae_phase{phase.index}_checkpoint.safetensors"))


def _crops(clip_seed: int, phase: VAEPhase, rng: np.random.Generator) -> torch.Tensor:
    """4 clips drawn from `clip_seed`, cropped to CROP×CROP and `phase.frames` frames where `rng` says (with
    their still copies after them when the phase weighs those)."""
    clip_frames, _ = clips(clip_seed, 4)
    top, left = rng.integers(0, SIZE - CROP + 1, 2).tolist()
    first = int(rng.integers(0, FRAMES - phase.frames + 1))
    video = to_video(clip_frames[:, first : first + phase.frames, top : top + CROP, left : left + CROP])
    if phase.still_weight:
        video = torch.cat([video, video[:, :, :1].expand_as(video)])
    return video


def vae_loss(output: torch.Tensor, video: torch.Tensor, mean: torch.Tensor, phase: VAEPhase) -> torch.Tensor:
    """L1 + MSE, plus the phase's weighed terms, and a slight pull of the latent towards 0 while the encoder
    trains."""
    steps_error = step_error(output, video) if phase.step_weight else None  # first: autograd's sum order
    loss = F.l1_loss(output, video) + F.mse_loss(output, video)
    if steps_error is not None:
        loss = loss + phase.step_weight * steps_error
    if not phase.decoder_only:
        loss = loss + 1e-6 * mean.pow(2).mean()
    if phase.still_weight:
        loss = loss + phase.still_weight * latent_spread(mean[len(mean) // 2 :])
    return loss


def latent_spread(mean: torch.Tensor) -> torch.Tensor:
    """How far a clip's latent frames (B×C×T×H×W) stray from their mean, against the latent's power: 0
    when every latent frame is the same. For a still clip it should be 0, and with Tiny World's first VAE
    it was not: a causal encoder started from zero history codes *when* as well as *what* (the latent's
    RMS grew from 0.5 in the first latent frame to 1.2 in the fifth), so the DiT had to learn every look
    once per latent frame."""
    return (mean - mean.mean(2, keepdim=True)).pow(2).mean() / mean.pow(2).mean().detach()


def step_error(output: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the frame-to-frame steps (B×C×T×H×W): zero for an output off by a constant,
    large for one whose frames jump where the truth moves smoothly."""
    return ((output[:, :, 1:] - output[:, :, :-1]) - (video[:, :, 1:] - video[:, :, :-1])).pow(2).mean()


@torch.no_grad()
def normalise_latents(model: Wan22VAE, seed: int, count: int) -> None:
    """Fold the per-channel mean and std of `count` clips' latents into conv1 (encoder side) and conv2
    (decoder side)."""
    frames, _ = clips(seed + 17, count)
    mean = model.encode(to_video(frames))
    mu, sigma = mean.mean(dim=(0, 2, 3, 4)), mean.std(dim=(0, 2, 3, 4))
    z = VAE_CONFIG.z_dim
    model.conv1.weight[:z] /= sigma.view(-1, 1, 1, 1, 1)
    model.conv1.bias[:z] = (model.conv1.bias[:z] - mu) / sigma
    # conv2(z') with z = z'·sigma + mu: W' = W·diag(sigma), b' = b + W·mu
    weight = model.conv2.weight[:, :, 0, 0, 0]
    model.conv2.bias += weight @ mu
    model.conv2.weight *= sigma.view(1, -1, 1, 1, 1)
    log(f"latent mean {mu.numpy().round(2)} std {sigma.numpy().round(2)} folded into the VAE")
