"""Train Tiny World: the pack's own small text-to-video model, on the world of `world.py`.

    python -m spacetime.training.train --out tiny_world            # all stages, ~2.5 h on 2 CPU cores

Stages, each resumable from its file in --out:
1. VAE: the Wan 2.2 VAE class (2x2 pixel fold, weightless shortcuts around every resampling stage) at width
   16 with two 2x stages, so 4x8x8 like Wan 2.1, and 12 latent channels (no preset latent format); on 9-frame 64x64 crops of 128x128
   clips (L1 + MSE). The 2.2 design learns several times faster per second than 2.1's on a CPU: its first
   convolutions run at half resolution, and its shortcuts keep the input's signal alive from the start. Afterwards the latent's per-channel mean and std are folded into the two 1x1 convs around
   the latent, so raw latents are already normalised (the DiT's latent format is the identity). Then the
   decoder alone learns to join its groups of 4 frames as smoothly as the truth moves (phase 3);
   the encoder, and so the latents, stay as they are.
2. Latents: a fixed set of clips, encoded once.
3. Text encoder (--text-steps): it learns to read each scene's attributes back from its caption first.
4. Text encoder + DiT, trained together: a UMT5 encoder with a sentencepiece vocabulary learnt from the
   captions (stored in the weights file as `spiece_model`, as ComfyUI's UMT5 files do) and a Wan DiT,
   by rectified flow: first on 64x64 clips (a quarter of the tokens, so four times the captions per
   second), then on 128x128, the size Tiny World generates at. The full training state is saved every
   500 steps; a later run continues from it (--stop-after N ends a run early). Random frame pinning, as Open-Sora trains: some latent frames are given clean, at
   timestep 0, and not scored, so the model learns to continue known frames (image to video, extension,
   loops). 10% of captions are dropped for classifier-free guidance. Latent cells an object covers weigh
   4 in the loss (--object-weight), so the small objects are not drowned by the background. The DiT's
   weights are an EMA.

Everything is seeded; the files are written in the formats the pack's loaders read.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..dit.config import WanConfig
from ..dit.loader import CLEAN_PINS_KEY, HEAD_DIM_KEY, TEXT_LEN_KEY
from ..dit.patchify import patchify
from ..dit.wan import WanDiT
from ..text_encoders.loader import TOKENIZER_KEY
from ..text_encoders.tokenizer import SentencePieceTokenizer, Tokens
from ..text_encoders.umt5 import UMT5Config, UMT5Encoder
from ..vae.wan21 import AttentionBlock, Resample, ResidualBlock, TimeCache
from ..vae.wan22 import Wan22VAE, Wan22VAEConfig
from .scene import COLOURS, MOTIONS, MOVES, PAN_DIRECTIONS, PATTERNS, SHAPES, SIZES, TONES, Background, Scene
from .world import caption, render, sample_object, sample_scene

VAE_CONFIG = Wan22VAEConfig(
    dim=16, decoder_dim=16, z_dim=12, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(True, True),
    name="Tiny World VAE",
)  # fmt: skip
TEXT_LEN = 64  # captions are short: the DiT reads 64 text tokens, not Wan's 512
DIT_CONFIG = WanConfig(
    dim=192, ffn_dim=768, num_layers=6, in_channels=VAE_CONFIG.z_dim, out_channels=VAE_CONFIG.z_dim, text_dim=128,
    head_dim=64,
    text_len=TEXT_LEN, clean_pins=True, name="Tiny World DiT",
)  # fmt: skip
TEXT_DIM, TEXT_LAYERS, TEXT_HEADS, TEXT_FFN, VOCAB = 128, 2, 4, 256, 400
FRAMES, SIZE = 17, 128
DIT_LR, DIT_WARMUP, DIT_EMA = 1e-3, 200, 0.998
THREADS = 0  # set by --threads
OBJECT_PIXEL_CHANGE = 8  # levels (of 255) an object must change a pixel by to count as covering it

VAE_FILE, TEXT_FILE, DIT_FILE = (
    "tiny_world_vae.safetensors",
    "tiny_world_umt5.safetensors",
    "tiny_world_dit.safetensors",
)
STATE_FILE = "dit_training_state.safetensors"  # resumable state, written beside the weights


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def share_cores(threads: int) -> None:
    """--threads 0: use the cores other processes leave free (oversubscribed OpenMP threads spin and
    slow everything down many times over)."""
    if threads:
        return
    busy = os.getloadavg()[0] - torch.get_num_threads()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, round((os.cpu_count() or 1) - busy))))


def draw_scenes(seed: int, count: int):
    """The seeded scenes and captions of `clips(seed, count)`, in order."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = sample_scene(rng)
        yield scene, caption(scene, rng)


def clips(seed: int, count: int, frames: int = FRAMES, size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    scenes, captions = zip(*draw_scenes(seed, count), strict=True)
    return np.stack([render(scene, frames, size, size) for scene in scenes]), list(captions)


def object_masks(seed: int, count: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """B×T×H×W bool: the pixels the objects change in the clips `clips(seed, count, ...)` draws (the same
    scenes, drawn once with and once without their objects)."""
    return np.stack([scene_mask(scene, frames, size) for scene, _ in draw_scenes(seed, count)])


def scene_mask(scene: Scene, frames: int, size: int) -> np.ndarray:
    """T×H×W bool: the pixels the scene's objects change (drawn once with and once without them)."""
    drawn = render(scene, frames, size, size).astype(np.int16)
    empty = render(replace(scene, objects=()), frames, size, size)
    return np.abs(drawn - empty).max(axis=-1) > OBJECT_PIXEL_CHANGE


def latent_mask(masks: np.ndarray, spatial: int = 8, temporal: int = 4) -> torch.Tensor:
    """Pixel masks B×T×H×W (T = 1 + 4k) to the latent grid B×(1+k)×H/8×W/8: a latent cell is set when
    any pixel it encodes is (the first latent frame encodes frame 0 alone, as the causal VAE does)."""
    x = torch.from_numpy(masks).float()[:, None]
    x = torch.cat([x[:, :, :1].expand(-1, -1, temporal - 1, -1, -1), x], dim=2)  # frame 0 fills its own group
    pooled = F.max_pool3d(x, (temporal, spatial, spatial), (temporal, spatial, spatial))
    return pooled[:, 0] > 0


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 B×T×H×W×3 -> float B×3×T×H×W in -1..1."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


# 1. VAE ------------------------------------------------------------------------------------------


def vae_forward(model: Wan22VAE, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable encode (chunked like inference) and decode without the final clamp."""
    mean = model.encode(video)
    x, cache, chunks = model.conv2(mean), TimeCache(), []
    for index in range(mean.shape[2]):
        cache.start_chunk()
        chunks.append(model.unpatchify(model.decoder(x[:, :, index : index + 1], cache)))
    return torch.cat(chunks, dim=2), mean


VAE_LR, VAE_WARMUP = 3e-4, 20
SMOOTH_LR, SMOOTH_WEIGHT = 1e-4, 30.0  # phase 3: the decoder alone


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


def train_vae(
    out: Path,
    steps: int,
    seed: int,
    init: Path | None = None,
    frames: int = 9,
    long_steps: int = 0,
    smooth_steps: int = 0,
    still_weight: float = 0.0,
) -> Wan22VAE:
    """Three phases: `steps` on short crops (`frames` frames: fast), then `long_steps` on whole 17-frame
    clips at a third of the learning rate, then `smooth_steps` of the decoder alone (phase 3). A
    VAE that only ever saw 3 latent frames carries its time cache badly into the 4th and 5th (9 frames:
    28.8 dB, 17 frames: 20.2 dB after 5000 steps), and Tiny World makes 17-frame videos. Each phase draws
    its own seeded clips, so a run that resumes phase 2 from phase 1's checkpoint (--vae-init, --vae-steps
    0) matches one that does both. The latent statistics are folded in after the encoder's phases (and
    only then: a run of phase 3 alone keeps the encoder, and so every cached latent, exactly).
    `still_weight` > 0: phase 2 also sees each clip's first frame held still, and weighs how far that
    clip's latent frames spread (`latent_spread`)."""
    torch.manual_seed(seed)
    model = Wan22VAE(VAE_CONFIG)
    if init is None:
        init_vae(model, seed)
    else:  # continue from earlier weights (any folded normalisation is refolded after phases 1-2)
        model.load_state_dict(load_file(str(init)))
    _vae_phase(model, out, steps, frames, VAE_LR, seed, phase=1)
    _vae_phase(model, out, long_steps, FRAMES, VAE_LR / 3, seed, phase=2, still_weight=still_weight)
    model.eval().requires_grad_(False)
    if init is None or steps or long_steps:
        normalise_latents(model, seed)
    # Phase 3, the decoder alone: it makes each latent frame's 4 frames together, and after phases 1-2
    # they met the next group's with a step larger than the truth's (round trip of 8 clips at 128x128:
    # 1.65x the median step at latent boundaries, against 1.00 in the rendered clips); 600 steps bring it
    # to 1.32x, and PSNR from 28.7 to 29.1 dB. The encoder, and so every latent, is unchanged.
    _vae_phase(model, out, smooth_steps, FRAMES, SMOOTH_LR, seed, 3, SMOOTH_WEIGHT, decoder_only=True)
    model.eval().requires_grad_(False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / VAE_FILE))
    return model


def _vae_phase(
    model: Wan22VAE,
    out: Path,
    steps: int,
    frames: int,
    lr: float,
    seed: int,
    phase: int,
    step_weight: float = 0.0,
    decoder_only: bool = False,
    still_weight: float = 0.0,
) -> None:
    """`steps` on 64x64 crops of `frames` frames: L1 + MSE, plus `step_weight` x step_error; with
    `decoder_only`, the encoder stays as it is. `still_weight` > 0: the batch also holds each clip's first
    frame repeated (a still clip), and `still_weight` x latent_spread of those clips' latents is added."""
    if steps <= 0:
        return
    trained = (
        [*model.decoder.parameters(), *model.conv2.parameters()] if decoder_only else [*model.parameters()]
    )
    model.requires_grad_(not decoder_only)
    for parameter in trained:
        parameter.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / VAE_WARMUP) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))),
    )
    rng = np.random.default_rng(seed if phase == 1 else (seed, phase))
    offset = 0 if phase == 1 else 10_000_000 * phase  # clip seeds not shared between phases
    start = time.time()
    for step in range(steps):
        clip_frames, _ = clips(seed * 1_000_003 + offset + step, 4)
        top, left = rng.integers(0, SIZE - 64 + 1, 2).tolist()
        first = int(rng.integers(0, FRAMES - frames + 1))
        video = to_video(clip_frames[:, first : first + frames, top : top + 64, left : left + 64])
        if still_weight:
            video = torch.cat([video, video[:, :, :1].expand_as(video)])
        output, mean = vae_forward(model, video)
        steps_error = step_error(output, video) if step_weight else None  # first: autograd's sum order
        loss = F.l1_loss(output, video) + F.mse_loss(output, video)
        if steps_error is not None:
            loss = loss + step_weight * steps_error
        if not decoder_only:
            loss = loss + 1e-6 * mean.pow(2).mean()
        if still_weight:
            loss = loss + still_weight * latent_spread(mean[len(mean) // 2 :])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            share_cores(THREADS)
            psnr = 10 * math.log10(4 / F.mse_loss(output.clamp(-1, 1), video).item())
            steps_error = step_error(output.detach(), video)
            log(
                f"vae phase {phase} step {step}/{steps} ({frames} frames) loss {loss.item():.4f} step error "
                f"{steps_error.item():.5f} psnr {psnr:.1f} dB ({time.time() - start:.0f} s)"
            )
        if (step + 1) % 100 == 0:  # a checkpoint to continue from (--vae-init)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(out / f"vae_phase{phase}_checkpoint.safetensors"))


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
def normalise_latents(model: Wan22VAE, seed: int) -> None:
    """Fold the latents' per-channel mean and std into conv1 (encoder side) and conv2 (decoder side)."""
    frames, _ = clips(seed + 17, 32)
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


# 2. Latents --------------------------------------------------------------------------------------


def _dataset_seed(seed: int, size: int, index: int) -> int:
    """The seed of the 32 cached clips from `index` on; 128x128 keeps the clips the shipped DiT saw."""
    return seed * 7919 + (0 if size == SIZE else size * 1_000_003) + index


@torch.no_grad()
def encode_dataset(
    model: Wan22VAE, out: Path, count: int, seed: int, size: int = SIZE
) -> tuple[torch.Tensor, list[str]]:
    """`count` clips rendered at size×size, encoded once (cached in --out, one file per size)."""
    path, caption_path = out / f"latents_{size}.safetensors", out / f"captions_{size}.json"
    if path.exists():  # an earlier run's cache
        return load_file(str(path))["latents"], json.loads(caption_path.read_text())
    latents, captions = [], []
    start = time.time()
    for index in range(0, count, 32):
        frames, texts = clips(_dataset_seed(seed, size, index), min(32, count - index), size=size)
        latents.append(model.encode(to_video(frames)).half())
        captions += texts
        if index % 1024 == 0:
            share_cores(THREADS)
            log(f"encoded {index}/{count} clips at {size}x{size} ({time.time() - start:.0f} s)")
    latents = torch.cat(latents)
    save_file({"latents": latents}, str(path))
    caption_path.write_text(json.dumps(captions))
    return latents, captions


def object_dataset(out: Path, count: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Where the objects are in the clips `encode_dataset` encodes, on the latent grid (cached in --out)."""
    path = out / f"objects_{size}.safetensors"
    if path.exists():
        return load_file(str(path))["objects"]
    start, masks = time.time(), []
    for index in range(0, count, 32):
        masks.append(
            latent_mask(object_masks(_dataset_seed(seed, size, index), min(32, count - index), size=size))
        )
    masks = torch.cat(masks)
    save_file({"objects": masks}, str(path))
    share = f"{masks.float().mean():.1%}"
    log(
        f"object masks {tuple(masks.shape)} at {size}x{size}: {share} of latent cells ({time.time() - start:.0f} s)"
    )
    return masks


# One look moving: the direction primer (--direction-share, --primer-motions) ----------------------------------

# colour, shape, size, background tone: none of its moves is a held-out combination
PRIMER_LOOK = ("red", "circle", "large", "black")
PRIMER_CAPTION = "a large red circle moving {} on a black background"
# --primer-motions all adds these, one template each; a circle cannot be seen to turn, so a cross rotates.
# No pair in them is held out either (red with a cross; red, a circle or a cross with these motions).
PRIMER_MORE = {
    "grow": ("circle", "a large red circle growing on a black background"),
    "shrink": ("circle", "a large red circle shrinking on a black background"),
    "rotate": ("cross", "a large red cross rotating on a black background"),
}
PRIMER_MOTIONS = {"directions": tuple(MOVES), "all": (*MOVES, *PRIMER_MORE)}
PRIMER_FILES = {"directions": "direction_primer_{}.safetensors", "all": "motion_primer_{}.safetensors"}


def primer_scenes(count: int, seed: int, motions: str = "directions") -> list[tuple[Scene, str]]:
    """One look, a large red circle on plain black without a pan, moving left, right, up and down in turn,
    each named by one caption template: clips where the direction is the only thing to learn. `motions`
    "all" also grows, shrinks and rotates it (a large red cross rotates) in the turn."""
    colour, shape, size, tone = PRIMER_LOOK
    rng = np.random.default_rng((seed, 11))
    chosen = PRIMER_MOTIONS[motions]
    scenes = []
    for index in range(count):
        motion = chosen[index % len(chosen)]
        look, text = PRIMER_MORE.get(motion, (shape, PRIMER_CAPTION.format(motion)))
        obj = sample_object(rng, colour, look, motion, size=size)
        scenes.append((Scene((obj,), Background("plain", tone), None), text))
    return scenes


@torch.no_grad()
def primer_dataset(
    model: Wan22VAE, out: Path, count: int, seed: int, size: int = SIZE // 2, motions: str = "directions"
) -> Primer:
    """`count` primer clips at size×size, encoded once with their object masks (cached in --out)."""
    path = out / PRIMER_FILES[motions].format(size)
    if path.exists():
        with safe_open(str(path), "pt") as handle:
            captions = json.loads(handle.metadata()["captions"])
            return Primer(handle.get_tensor("latents"), captions, handle.get_tensor("objects"))
    latents, masks, captions = [], [], []
    drawn = primer_scenes(count, seed, motions)
    for first in range(0, count, 32):
        chunk = drawn[first : first + 32]
        latents.append(
            model.encode(to_video(np.stack([render(s, FRAMES, size, size) for s, _ in chunk]))).half()
        )
        masks.append(latent_mask(np.stack([scene_mask(s, FRAMES, size) for s, _ in chunk])))
        captions += [text for _, text in chunk]
    primer = Primer(torch.cat(latents), captions, torch.cat(masks))
    save_file(
        {"latents": primer.latents, "objects": primer.objects},
        str(path),
        metadata={"captions": json.dumps(captions)},
    )
    log(f"{motions} primer: {count} clips at {size}x{size}")
    return primer


# 3. Text encoder + DiT ---------------------------------------------------------------------------


def train_tokenizer(captions: list[str]) -> bytes:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, vocab_size=VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, byte_fallback=True,
        minloglevel=2, num_threads=1, shuffle_input_sentence=False, seed_sentencepiece_size=100000,
    )  # fmt: skip
    return model.getvalue()


def init_weights(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        with torch.no_grad():
            if name.endswith("modulation"):
                parameter.normal_(0, 0.02, generator=generator)
            elif parameter.ndim >= 2:
                fan_in = parameter[0].numel()
                parameter.normal_(0, fan_in**-0.5, generator=generator)
            elif "norm" in name or name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.zero_()


def pin_mask(
    batch: int, frames: int, rng: np.random.Generator, first_only: torch.Tensor | None = None
) -> torch.Tensor:
    """B×T bool: latent frames given clean. Half the clips have none; the rest a prefix (image to video,
    extension), a suffix (backward extension), both ends (connect, loop) or random frames. Rows set in
    `first_only` (B bool) are given their first latent frame and nothing else (the draws stay the same)."""
    mask = np.zeros((batch, frames), dtype=bool)
    for row in range(batch):
        kind = rng.random()
        if kind < 0.5:
            continue
        if kind < 0.75:
            mask[row, : rng.integers(1, frames)] = True
        elif kind < 0.85:
            mask[row, rng.integers(1, frames) :] = True
        elif kind < 0.93:
            mask[row, 0] = mask[row, -1] = True
        else:
            mask[row] = rng.random(frames) < 0.4
            mask[row, rng.integers(frames)] = False
    if first_only is not None:
        mask[first_only.numpy()] = False
        mask[first_only.numpy(), 0] = True
    return torch.from_numpy(mask)


class SceneHeads(torch.nn.Module):
    """Reads a Tiny World scene back from the text encoder's token vectors: two object slots, each pooled by
    attention with a learnt query, name their object's colour, shape, size and motion (or that there is no
    such object); the mean vector names the background's pattern and tone and the camera pan."""

    SLOTS = 2
    OBJECT_FIELDS = (
        ("colour", tuple(COLOURS)),
        ("shape", SHAPES),
        ("size", tuple(SIZES)),
        ("motion", MOTIONS),
    )
    SCENE_FIELDS = (("pattern", PATTERNS), ("tone", tuple(TONES)), ("pan", (*PAN_DIRECTIONS, "none")))

    def __init__(self, dim: int):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(self.SLOTS, dim) * dim**-0.5)
        self.objects = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {name: torch.nn.Linear(dim, len(values) + 1) for name, values in self.OBJECT_FIELDS}
            )
            for _ in range(self.SLOTS)
        )
        self.scene = torch.nn.ModuleDict(
            {name: torch.nn.Linear(dim, len(values)) for name, values in self.SCENE_FIELDS}
        )

    @staticmethod
    def _scene_value(scene, name: str) -> str:
        if name == "pan":
            return scene.pan.direction if scene.pan else "none"
        return getattr(scene.background, name)

    def loss(self, hidden: torch.Tensor, mask: torch.Tensor, scenes: list) -> torch.Tensor:
        """Cross-entropy summed over every field, for token vectors B×L×D of the scenes' captions."""
        keep = mask.bool()
        mean = (hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        scores = torch.einsum("bld,sd->bsl", hidden, self.queries) / math.sqrt(hidden.shape[-1])
        slots = torch.einsum(
            "bsl,bld->bsd", scores.masked_fill(~keep[:, None], -math.inf).softmax(-1), hidden
        )
        total = hidden.new_zeros(())
        for slot, heads in enumerate(self.objects):
            for name, values in self.OBJECT_FIELDS:
                target = [
                    values.index(getattr(scene.objects[slot], name))
                    if slot < len(scene.objects)
                    else len(values)
                    for scene in scenes
                ]
                total = total + F.cross_entropy(heads[name](slots[:, slot]), torch.tensor(target))
        for name, values in self.SCENE_FIELDS:
            target = [values.index(self._scene_value(scene, name)) for scene in scenes]
            total = total + F.cross_entropy(self.scene[name](mean), torch.tensor(target))
        return total


def pretrain_text(
    text: UMT5Encoder, tokenizer: SentencePieceTokenizer, steps: int, seed: int, batch: int = 64
) -> list[float]:
    """Teach the text encoder the world's words before the DiT reads it: on freshly drawn scenes, the
    scene's attributes are read back from its caption's token vectors (SceneHeads), so synonyms ("ball",
    "disc", "circle"), colours and which object does what are told apart from the first DiT step. The heads
    are dropped afterwards. Returns the loss every 100 steps."""
    if steps <= 0:
        return []
    heads = SceneHeads(text.config.dim)
    optimizer = torch.optim.AdamW([*text.parameters(), *heads.parameters()], lr=DIT_LR, weight_decay=0.01)
    rng = np.random.default_rng((seed, 7))
    losses, start = [], time.time()
    for step in range(steps):
        scenes = [sample_scene(rng) for _ in range(batch)]
        with captions_cut_quietly():
            tokens = tokenizer([caption(scene, rng) for scene in scenes], TEXT_LEN)
        loss = heads.loss(text(tokens.ids, tokens.mask), tokens.mask, scenes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(loss.item())
            log(f"text step {step}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    return losses


@contextlib.contextmanager
def captions_cut_quietly():
    """The few captions over TEXT_LEN tokens are cut on purpose: the pack's warning about it is held back."""
    logger = logging.getLogger("spacetime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class Primer:
    """Direction primer clips (primer_scenes) at one resolution, encoded."""

    latents: torch.Tensor
    captions: list[str]
    objects: torch.Tensor


@dataclass
class DiTStage:
    """A run of DiT steps on one cached latent set (one resolution)."""

    latents: torch.Tensor
    captions: list[str]
    steps: int
    batch: int
    objects: torch.Tensor | None = None  # B×T×H×W bool on the latent grid: weighted in the loss
    primer: Primer | None = None  # mixed into every batch at primer_share
    primer_share: float = 0.0


def train_dit(
    out: Path,
    stages: list[DiTStage],
    seed: int,
    lr: float = DIT_LR,
    text_steps: int = 0,
    object_weight: float = 1.0,
    stop_after: int = 0,
    motion_weight: float = 0.0,
    text_lr_scale: float = 1.0,
) -> None:
    """Stages share one optimiser, one learning-rate schedule and one EMA: the cheap 64x64 stage teaches
    words, shapes and motion at a quarter of the tokens; the 128x128 stage then adapts it to the size
    Tiny World generates at. `object_weight`: the loss's weight on latent cells an object covers (stages
    with `objects`), against 1 elsewhere; `motion_weight`: see dit_loss. `stop_after` N > 0: end after
    step N with its state saved (a later run, even with other step counts, continues from there).
    `text_lr_scale`: the text encoder's learning rate against the DiT's, once its own stage is done (0:
    it stays as that stage left it, and no gradient reaches it)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    saved = out / TEXT_FILE
    # Going on from a saved state: the vocabulary its text encoder learnt. Captions added since (another
    # primer's, say) must not redraw it, which would renumber the tokens under the trained embeddings.
    if resumed_step(out):
        with safe_open(str(saved), "pt") as handle:
            spiece = handle.get_tensor(TOKENIZER_KEY).numpy().tobytes()
    else:
        spiece = train_tokenizer(
            [
                text
                for stage in stages
                for text in (*stage.captions, *(stage.primer.captions if stage.primer else ()))
            ]
        )
    tokenizer = SentencePieceTokenizer(spiece)
    text_config = UMT5Config(
        vocab_size=tokenizer.vocab_size, dim=TEXT_DIM, ffn_dim=TEXT_FFN, num_layers=TEXT_LAYERS,
        num_heads=TEXT_HEADS, head_dim=TEXT_DIM // TEXT_HEADS, name="Tiny World UMT5",
    )  # fmt: skip
    text = UMT5Encoder(text_config)
    dit = WanDiT(DIT_CONFIG)
    init_weights(text, seed)
    init_weights(dit, seed + 1)
    with torch.no_grad():  # adaLN-zero: blocks start as the identity, the head as zero
        for block in dit.blocks:
            block.modulation.zero_()
        dit.head.head.weight.zero_()
    ema = copy.deepcopy(dit).requires_grad_(False)
    parameters = [*text.parameters(), *dit.parameters()]  # this order numbers Adam's moments in the state
    groups = [
        {"params": list(text.parameters()), "lr": lr * text_lr_scale},
        {"params": list(dit.parameters()), "lr": lr},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    total = sum(stage.steps for stage in stages)
    begin = load_state(out, text, dit, ema, optimizer, rng)  # 0 unless an earlier run left its state
    if begin == 0:
        pretrain_text(text, tokenizer, text_steps, seed)
    text.requires_grad_(text_lr_scale > 0)  # held: Adam skips it, as it has no gradient
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (begin + s + 1) / DIT_WARMUP)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (begin + s) / total)))
        ),
    )
    empty = tokenizer([""], TEXT_LEN)
    start, step = time.time(), 0
    for stage in stages:
        done = min(stage.steps, max(0, begin - step))  # this stage's steps an earlier run made
        step += done
        if done == stage.steps:
            continue
        with captions_cut_quietly():
            tokens_cache = tokenizer(stage.captions, TEXT_LEN)
        latents, batch = stage.latents, stage.batch
        primed = round(batch * stage.primer_share) if stage.primer is not None else 0
        if primed:
            with captions_cut_quietly():
                primer_tokens = tokenizer(stage.primer.captions, TEXT_LEN)
        for _ in range(done, stage.steps):
            index = torch.from_numpy(rng.integers(0, len(latents), batch - primed))
            x0, ids, mask = latents[index], tokens_cache.ids[index], tokens_cache.mask[index]
            objects = None if stage.objects is None else stage.objects[index]
            first_only = None
            if primed:  # the first `primed` rows: primer clips, given their first latent frame
                chosen = torch.from_numpy(rng.integers(0, len(stage.primer.latents), primed))
                x0 = torch.cat([stage.primer.latents[chosen], x0])
                ids = torch.cat([primer_tokens.ids[chosen], ids])
                mask = torch.cat([primer_tokens.mask[chosen], mask])
                if objects is not None:
                    objects = torch.cat([stage.primer.objects[chosen], objects])
                first_only = torch.arange(batch) < primed
            loss = dit_loss(
                dit, text, x0.float(), ids.clone(), mask.clone(), empty, rng, objects, object_weight,
                motion_weight, first_only,
            )  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            decay = min(DIT_EMA, (1 + step) / (10 + step))
            with torch.no_grad():
                for kept, live in zip(ema.parameters(), dit.parameters(), strict=True):
                    kept.lerp_(live, 1 - decay)
            if step % 50 == 0 or step == total - 1:
                share_cores(THREADS)
                size = latents.shape[-1] * 8
                log(
                    f"dit step {step}/{total} ({size}x{size}) loss {loss.item():.4f} ({time.time() - start:.0f} s)"
                )
            stopping = step + 1 == stop_after
            if (step + 1) % 500 == 0 or step == total - 1 or stopping:
                save_models(out, text, spiece, ema)
                save_state(out, step + 1, text, dit, ema, optimizer, rng)
            step += 1
            if stopping:
                log(f"stopped after step {step}, as --stop-after asks")
                return


def save_state(out: Path, step: int, text, dit, ema, optimizer, rng: np.random.Generator) -> None:
    """Everything a later run needs to go on exactly from `step` (--dit-steps can then be raised): live
    and EMA weights, Adam's moments and both random generators, in one safetensors file."""
    tensors = {}
    for prefix, module in (("text.", text), ("dit.", dit), ("ema.", ema)):
        tensors.update({prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()})
    for index, state in optimizer.state_dict()["state"].items():  # index: the parameter's place in the list
        tensors.update({f"adam.{index}.{k}": torch.as_tensor(v).contiguous() for k, v in state.items()})
    tensors["torch_rng"] = torch.get_rng_state()
    metadata = {"step": str(step), "numpy_rng": json.dumps(rng.bit_generator.state)}
    partial = out / (STATE_FILE + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(out / STATE_FILE)


def resumed_step(out: Path) -> int:
    """The DiT step the state saved in `out` goes on from, if the text encoder (and so the vocabulary) was
    saved beside it; else 0, a fresh start."""
    if not ((out / STATE_FILE).exists() and (out / TEXT_FILE).exists()):
        return 0
    with safe_open(str(out / STATE_FILE), "pt") as handle:
        return int(handle.metadata()["step"])


def load_state(out: Path, text, dit, ema, optimizer, rng: np.random.Generator) -> int:
    path = out / STATE_FILE
    if not path.exists():
        return 0
    with safe_open(str(path), "pt") as handle:  # one read: the tensors and the metadata
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for prefix, module in (("text.", text), ("dit.", dit), ("ema.", ema)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    saved = optimizer.state_dict()  # a parameter that never had a gradient has no moments, and no entry
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".")
            saved["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(saved)
    torch.set_rng_state(tensors["torch_rng"])
    rng.bit_generator.state = json.loads(metadata["numpy_rng"])
    step = int(metadata["step"])
    log(f"DiT training resumes at step {step} ({path.name})")
    return step


def dit_loss(
    dit: WanDiT,
    text: UMT5Encoder,
    x0: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    empty: Tokens,
    rng: np.random.Generator,
    objects: torch.Tensor | None = None,
    object_weight: float = 1.0,
    motion_weight: float = 0.0,
    first_only: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rectified flow on a batch of clean latents, with caption dropout and random frame pinning; latent
    cells in `objects` (B×T×H×W bool) weigh `object_weight` in the mean, the rest 1. `motion_weight` λ
    adds λ times the squared error's part that changes over a clip's (unpinned) latent frames: its
    deviation from the error's mean over them. A wrong look errs alike in every frame; a wrong motion
    errs differently in each, so λ > 0 turns the gradient towards motion. Rows set in `first_only` (B bool)
    are given their first latent frame clean and no other (see pin_mask)."""
    batch, latent_frames = x0.shape[0], x0.shape[2]
    drop = torch.from_numpy(rng.random(batch) < 0.1)
    ids[drop], mask[drop] = empty.ids, empty.mask
    context = text(ids, mask)

    # Logit-normal noise levels, shifted towards noise as sampling is (shift 3).
    u = torch.sigmoid(torch.from_numpy(rng.normal(0.0, 1.0, batch)).float())
    sigma = 3 * u / (1 + 2 * u)
    noise = torch.randn_like(x0)
    pinned = pin_mask(batch, latent_frames, rng, first_only)  # B×T
    s = sigma.view(-1, 1, 1, 1, 1)
    frame_pinned = pinned.view(batch, 1, latent_frames, 1, 1)
    x = torch.where(frame_pinned, x0, (1 - s) * x0 + s * noise)
    tokens, grid = patchify(x, DIT_CONFIG.patch_size)
    per_frame = grid[1] * grid[2]
    token_pinned = pinned.repeat_interleave(per_frame, dim=1)  # B×L
    timestep = torch.where(token_pinned, 0.0, 1000 * sigma[:, None])
    velocity = dit.forward_tokens(tokens, grid, timestep, context)
    target, _ = patchify(noise - x0, DIT_CONFIG.patch_size)
    weight = (~token_pinned).float().unsqueeze(-1)
    if objects is not None and object_weight != 1.0:
        cells = 1.0 + (object_weight - 1.0) * objects.float()[:, None].expand_as(x0)
        weight = weight * patchify(cells, DIT_CONFIG.patch_size)[0]
    residual = velocity - target
    error = residual.pow(2)
    if motion_weight:
        error = error + motion_weight * temporal_deviation(residual, ~pinned, per_frame).pow(2)
    return (error * weight).sum() / weight.expand_as(target).sum()


def temporal_deviation(error: torch.Tensor, scored: torch.Tensor, per_frame: int) -> torch.Tensor:
    """B×L×D token errors minus their mean over each clip's scored latent frames (B×T bool), token place
    by token place; zero in unscored frames."""
    batch, length, width = error.shape
    frames = error.view(batch, length // per_frame, per_frame, width)
    keep = scored.to(error.dtype).view(batch, -1, 1, 1)
    mean = (frames * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1.0)
    return ((frames - mean) * keep).view(batch, length, width)


def save_models(out: Path, text: UMT5Encoder, spiece: bytes, dit: WanDiT) -> None:
    state = {k: v.detach().contiguous() for k, v in text.state_dict().items()}
    state[TOKENIZER_KEY] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(state, str(out / TEXT_FILE))
    metadata = {HEAD_DIM_KEY: str(DIT_CONFIG.head_dim), TEXT_LEN_KEY: str(TEXT_LEN), CLEAN_PINS_KEY: "true"}
    dit_state = {k: v.detach().half().contiguous() for k, v in dit.state_dict().items()}
    save_file(dit_state, str(out / DIT_FILE), metadata=metadata)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("tiny_world"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vae-steps", type=int, default=5000, help="phase 1, 9-frame crops: ~40 min on 2 CPU cores"
    )
    parser.add_argument(
        "--vae-long-steps",
        type=int,
        default=600,
        help="phase 2, whole 17-frame clips: ~12 min on 2 CPU cores",
    )
    parser.add_argument(
        "--vae-smooth-steps", type=int, default=600,
        help="phase 3, the decoder alone, steps between frames weighed in the loss: ~6 min on 2 CPU cores",
    )  # fmt: skip
    parser.add_argument(
        "--vae-still-weight", type=float, default=0.0,
        help="phase 2 also learns that a still clip's latent frames agree, with this weight (0: off, as the "
        "shipped VAE was made)",
    )  # fmt: skip
    parser.add_argument("--vae-init", type=Path, help="continue the VAE from these weights")
    parser.add_argument("--vae-frames", type=int, default=9, help="frames per VAE training crop (4k+1)")
    parser.add_argument("--vae-only", action="store_true", help="stop after the VAE")
    parser.add_argument("--clips", type=int, default=6000, help="128x128 clips encoded for the DiT")
    parser.add_argument("--small-clips", type=int, default=12000, help="64x64 clips encoded for the DiT")
    parser.add_argument("--dit-small-steps", type=int, default=3000, help="DiT steps at 64x64")
    parser.add_argument(
        "--dit-steps", type=int, default=4000, help="DiT steps at 128x128, after those at 64x64"
    )
    parser.add_argument(
        "--text-steps", type=int, default=1500,
        help="text encoder steps on the scenes' attributes before the DiT (0: none; 1500: ~3 min)",
    )  # fmt: skip
    parser.add_argument(
        "--object-weight", type=float, default=4.0,
        help="DiT loss weight on latent cells the objects cover, against 1 for the background (1: plain mean; "
        "4 made the shipped weights)",
    )  # fmt: skip
    parser.add_argument(
        "--motion-weight", type=float, default=0.0,
        help="DiT loss: extra weight on the error's part that changes from latent frame to latent frame (0: "
        "off, as the shipped weights were made)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-after", type=int, default=0, metavar="N",
        help="end after DiT step N, its state saved; a later run continues from it, even with other step counts",
    )  # fmt: skip
    parser.add_argument(
        "--direction-share", type=float, default=0.0,
        help="share of every batch (64x64 and 128x128) given to the direction primer: one look moving left, right, up or "
        "down, first frame given (0: off; the shipped weights were made with 0.25)",
    )  # fmt: skip
    parser.add_argument(
        "--direction-clips", type=int, default=1024, help="primer clips encoded (either kind)"
    )
    parser.add_argument(
        "--primer-motions", choices=tuple(PRIMER_MOTIONS), default="directions",
        help="what the primer's clips do: left, right, up and down (directions), or those and grow, shrink "
        "and rotate (all; its clips are cached apart; the shipped weights' last 1500 steps used all)",
    )  # fmt: skip
    parser.add_argument(
        "--text-lr-scale", type=float, default=1.0,
        help="the text encoder's learning rate while the DiT trains, against the DiT's (1: the same; 0: held "
        "as its own stage left it; the shipped weights were made with 0.1)",
    )  # fmt: skip
    parser.add_argument("--small-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dit-lr", type=float, default=DIT_LR)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores left free)")
    args = parser.parse_args(argv)
    if args.vae_still_weight and args.vae_long_steps <= 0:
        parser.error(
            f"--vae-still-weight {args.vae_still_weight} acts in phase 2, but --vae-long-steps is "
            f"{args.vae_long_steps}: give phase 2 some steps, or leave the weight at 0."
        )
    if not 0 <= args.direction_share < 1:
        parser.error(
            f"--direction-share {args.direction_share} is not a share of a batch: give 0 (off) up to below 1, "
            "e.g. 0.25."
        )
    if args.direction_share and args.direction_clips < 1:
        parser.error(
            f"--direction-share {args.direction_share} needs primer clips, but --direction-clips is "
            f"{args.direction_clips}: give 1 or more (1024 by default)."
        )
    if args.direction_share and args.dit_small_steps <= 0 and args.dit_steps <= 0:
        parser.error(
            f"--direction-share {args.direction_share} acts while the DiT trains, but --dit-small-steps and "
            f"--dit-steps are {args.dit_small_steps} and {args.dit_steps}: give a stage some steps, or leave "
            "the share at 0."
        )
    if args.text_lr_scale < 0:
        parser.error(
            f"--text-lr-scale {args.text_lr_scale} is negative: give 0 (text encoder held) up to 1 (trained "
            "with the DiT at its learning rate)."
        )
    if args.motion_weight < 0:
        parser.error(f"--motion-weight {args.motion_weight} is negative: give 0 (off) or more, e.g. 3.")
    global THREADS
    THREADS = args.threads
    if args.threads:
        torch.set_num_threads(args.threads)
    share_cores(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    begin = time.time()
    if (args.out / VAE_FILE).exists():
        vae = Wan22VAE(VAE_CONFIG)
        vae.load_state_dict(load_file(str(args.out / VAE_FILE)))
        vae.eval().requires_grad_(False)
        log("VAE loaded from an earlier run")
    else:
        vae = train_vae(
            args.out, args.vae_steps, args.seed, args.vae_init, args.vae_frames, args.vae_long_steps,
            args.vae_smooth_steps, args.vae_still_weight,
        )  # fmt: skip
    log(f"VAE done ({time.time() - begin:.0f} s)")
    if args.vae_only:
        return 0
    stages, resumed, end = [], resumed_step(args.out), 0
    for size, count, steps, batch in [
        (SIZE // 2, args.small_clips, args.dit_small_steps, args.small_batch),
        (SIZE, args.clips, args.dit_steps, args.batch),
    ]:
        if steps <= 0:
            continue
        end += steps
        if end <= resumed:  # finished by an earlier run: train_dit only counts its steps
            log(f"{size}x{size} stage done in an earlier run (the saved state is at step {resumed})")
            stages.append(DiTStage(torch.empty(0), [], steps, batch))
            continue
        latents, captions = encode_dataset(vae, args.out, count, args.seed, size)
        log(f"latents {tuple(latents.shape)} ({time.time() - begin:.0f} s)")
        objects = None if args.object_weight == 1.0 else object_dataset(args.out, count, args.seed, size)
        primer = None
        if args.direction_share:  # in every stage: taught once and then dropped, it is forgotten
            primer = primer_dataset(vae, args.out, args.direction_clips, args.seed, size, args.primer_motions)
        stages.append(DiTStage(latents, captions, steps, batch, objects, primer, args.direction_share))
    train_dit(
        args.out, stages, args.seed, args.dit_lr, args.text_steps, args.object_weight, args.stop_after,
        args.motion_weight, args.text_lr_scale,
    )  # fmt: skip
    log(f"all done in {time.time() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
