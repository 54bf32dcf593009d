"""The whole text-to-video path as one function, shared by the command line and the tests; the nodes call
the same pieces one by one (Text Encode, Empty Latent Video, Patchifier, Scheduler, DiT Denoiser,
Unpatchify, VAE Decode)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import host
from .dit import SpacetimePatches, WanDiT, load_dit
from .samplers.denoiser import WAN22_T2V_BOUNDARY, denoise
from .samplers.frames import spread_joins
from .samplers.long_video import (
    join_frames,
    latent_windows,
    long_video_windows,
    opening_frames,
    window_count,
)
from .samplers.schedules import schedule_by_name
from .text_encoders import WAN_NEGATIVE_PROMPT, TextEncoder, load_text_encoder
from .vae.loader import VideoVAE, load_vae, video_to_frames
from .video.combine import FrameStream

# Tiny World: the pack's own small model, trained by training/train.py, shipped in the repository.
TINY_WORLD_DIR = Path(__file__).resolve().parent / "tiny_world"
TINY_WORLD_FILES = {
    "dit": "tiny_world_dit.safetensors",
    "text_encoder": "tiny_world_umt5.safetensors",
    "vae": "tiny_world_vae.safetensors",
}


@dataclass(frozen=True)
class Settings:
    """What a text-to-video run needs besides the models and the prompt (defaults: Wan 2.1 T2V's own)."""

    width: int = 832
    height: int = 480
    frames: int = 81
    steps: int = 50
    cfg: float = 5.0
    shift: float = 5.0
    seed: int = 0
    solver: str = "unipc"
    schedule: str = "simple"
    boundary: float = WAN22_T2V_BOUNDARY
    tile: int = 0
    overlap: int = 0
    window: int = 81  # longer videos are made in windows of this many frames (the length trained at)
    window_overlap: int = 16  # frames each window continues from
    correction: float = 1.0  # colour-drift correction between windows


TINY_WORLD_SETTINGS = replace(
    Settings(), width=128, height=128, frames=17, steps=20, cfg=5.0, shift=3.0, window=17, window_overlap=8
)


def load_tiny_world(device=None, vae_device=None, folder=None) -> tuple[WanDiT, TextEncoder, VideoVAE]:
    """Tiny World's DiT, text encoder (on `device`, default ComfyUI's offload device) and VAE (on
    `vae_device`, default the compute device), through the same loaders as any checkpoint. `folder`:
    another set of the three files, e.g. a training run's --out (default: the shipped weights)."""
    folder = Path(folder) if folder is not None else TINY_WORLD_DIR
    missing = [name for name in TINY_WORLD_FILES.values() if not (folder / name).is_file()]
    if missing:
        if folder != TINY_WORLD_DIR:
            raise FileNotFoundError(
                f"{folder} lacks Tiny World files ({', '.join(missing)}): give the --out folder of a finished "
                "training run, which holds all three."
            )
        raise FileNotFoundError(
            f"Tiny World's weights are not all in {TINY_WORLD_DIR} (missing: {', '.join(missing)}). They ship "
            "with the pack: restore the folder from the repository (git checkout -- tiny_world), retrain them "
            "with `python -m spacetime.training.train --out tiny_world`, or give Wan model files "
            "(generate --dit FILE --text-encoder FILE --vae FILE)."
        )
    device = device or host.offload_device()
    dit = load_dit(folder / TINY_WORLD_FILES["dit"], torch.float32, device=device)
    text_encoder = load_text_encoder(folder / TINY_WORLD_FILES["text_encoder"], device=device)
    vae = load_vae(folder / TINY_WORLD_FILES["vae"], device=vae_device or host.compute_device())
    return dit, text_encoder, vae


def _console_progress(description: str, total: int) -> Callable[[], None]:
    """The default `progress`: ComfyUI's or the console's progress bar, which also honours cancel."""
    return host.progress_ticker(total, description)


def encode_prompt(
    text_encoder: TextEncoder, prompt: str, negative_prompt: str, cfg: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text contexts (positive, negative or None when cfg is 1)."""
    with host.on_compute_device(text_encoder.model):
        context = text_encoder.encode([prompt] if cfg == 1.0 else [prompt, negative_prompt])
    return context[:1], (context[1:] if cfg != 1.0 else None)


def sample_latent(
    dit: WanDiT,
    latent: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    settings: Settings,
    noise_mask: torch.Tensor | None = None,
    sigmas: torch.Tensor | None = None,
    low_noise_dit: WanDiT | None = None,
    tick: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Denoise a raw latent (zeros: text to video) down `sigmas` (default: the settings' schedule), holding
    what core's `noise_mask` keeps; the Patchifier, DiT Denoiser and Unpatchify nodes in one call."""
    s = settings
    if dit.config.in_channels != latent.shape[1]:
        raise ValueError(
            f"{dit.config.name} takes {dit.config.in_channels}-channel latents but the VAE makes "
            f"{latent.shape[1]}: use the VAE that belongs to the model."
        )
    patches = SpacetimePatches.from_latent(latent, dit.config.patch_size, dit.latent_format, noise_mask)
    if sigmas is None:
        sigmas = schedule_by_name(s.schedule)(s.steps, shift=s.shift)
    patches = denoise(
        dit,
        patches,
        sigmas,
        positive,
        negative,
        cfg=s.cfg,
        seed=s.seed,
        solver=s.solver,
        low_noise_dit=low_noise_dit,
        boundary=s.boundary,
        step_callback=tick,
    )
    return patches.to_latent()


def text_to_video(
    dit: WanDiT,
    text_encoder: TextEncoder,
    vae: VideoVAE,
    prompt: str,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    settings: Settings = Settings(),
    low_noise_dit: WanDiT | None = None,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> torch.Tensor:
    """A prompt -> IMAGE frames T×H×W×3 in 0..1. `progress(description, total)` returns a per-step tick
    (default: ComfyUI's or the console's progress bar, which also honours cancel)."""
    s = settings
    empty = torch.zeros(vae.latent_shape(s.frames, s.height, s.width))
    return edit_video(
        dit, text_encoder, vae, prompt, empty, None, negative_prompt, s, low_noise_dit, progress
    )


def long_video(
    dit: WanDiT,
    text_encoder: TextEncoder,
    vae: VideoVAE,
    prompt: str,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    settings: Settings = Settings(),
    low_noise_dit: WanDiT | None = None,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> FrameStream:
    """A prompt -> a video longer than one window, made window by window (samplers/long_video.py) and
    written as it is made: each window is decoded once, for the next window's opening and for its own new
    frames, which arrive as a FrameStream for combine_video. Memory stays that of one window whatever the
    length, and the frames are those the Long Video node's LATENT decodes to (decode_long_video)."""
    progress = progress or _console_progress
    s = settings
    shape = vae.latent_shape(s.frames, s.height, s.width)
    vae.check_size(s.window, s.height, s.width)
    stride = vae.temporal_stride
    window, overlap = latent_windows(s.window, s.window_overlap, stride)
    positive, negative = encode_prompt(text_encoder, prompt, negative_prompt, s.cfg)
    sigmas = schedule_by_name(s.schedule)(s.steps, shift=s.shift)
    count = window_count(shape[2], window, overlap)
    decoded = shape[2] + (count - 1) * overlap  # latent frames through the decoder: each opening again
    tick = progress(f"Long video, {count} windows", s.steps * count + decoded)
    windows = long_video_windows(
        dit, shape, sigmas, positive, negative, window=window, overlap=overlap, stride=stride,
        encode=vae.encode, decode=lambda latent: vae.decode(latent, tick, tile=s.tile, overlap=s.overlap),
        correction=s.correction, cfg=s.cfg, seed=s.seed, solver=s.solver, low_noise_dit=low_noise_dit,
        boundary=s.boundary, step_callback=tick,
    )  # fmt: skip

    def new_frames():  # the opening's frames are left out; a window's video is held until the next is made
        for made in windows:
            start = 0 if made.opening is None else opening_frames(overlap, stride)
            for first in range(start, made.video().shape[2], stride):
                yield video_to_frames(made.video()[:, :, first : first + stride])

    frames = spread_joins(new_frames(), join_frames(shape[2], window, overlap, stride))
    return FrameStream(s.frames, s.height, s.width, frames)


def edit_video(
    dit: WanDiT,
    text_encoder: TextEncoder,
    vae: VideoVAE,
    prompt: str,
    latent: torch.Tensor,
    noise_mask: torch.Tensor | None = None,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    settings: Settings = Settings(),
    low_noise_dit: WanDiT | None = None,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise `latent` (with core's `noise_mask`: the known frames of an edit) under a prompt and decode
    it -> IMAGE frames (B·T)×H×W×3 in 0..1, as the edit nodes' graph does."""
    progress = progress or _console_progress
    s = settings
    positive, negative = encode_prompt(text_encoder, prompt, negative_prompt, s.cfg)
    steps = s.steps if sigmas is None else len(sigmas) - 1
    latent = sample_latent(
        dit, latent, positive, negative, s, noise_mask, sigmas, low_noise_dit, progress("Denoising", steps)
    )
    video = vae.decode(latent, progress("Decoding", latent.shape[2]), tile=s.tile, overlap=s.overlap)
    return video_to_frames(video)
