"""The whole text-to-video path as one function, shared by the command line and the tests; the nodes call
the same pieces one by one (Text Encode, Empty Latent Video, Patchifier, Scheduler, DiT Denoiser,
Unpatchify, VAE Decode)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import host
from .dit import SpacetimePatches, WanDiT, load_dit
from .editing.long_video import MAX_LONG_FRAMES, LongVideo, Windows
from .editing.storyboard import Script, Storyboard
from .host import Progress
from .samplers.denoiser import Sampling, denoise
from .samplers.guidance import MAX_CFG, Guider
from .samplers.noise import MAX_SEED
from .samplers.schedules import MAX_SHIFT, MIN_SHIFT, check_steps, schedule_by_name
from .samplers.solvers import SOLVERS
from .text_encoders import WAN_NEGATIVE_PROMPT, TextEncoder, load_text_encoder
from .vae import MAX_FRAMES, MAX_SIZE, VideoVAE, load_vae, video_to_frames
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
    boundary: float | None = None  # Wan 2.2 A14B's expert switch (None: the model's own)
    tile: int = 0
    overlap: int = 0
    window: int = 81  # longer videos are made in windows of this many frames (the length trained at)
    window_overlap: int = 16  # frames each window continues from
    correction: float = 1.0  # colour-drift correction between windows
    cache: float = 0.0  # step caching's threshold (samplers/step_cache.py); 0: off

    def __post_init__(self):
        """The bounds of the nodes' widgets, checked before any model is loaded; the multiples that sizes
        and frame counts must be are the VAE's and the DiT's to check (they differ by model)."""
        for name, low, high in (
            ("width", 1, MAX_SIZE), ("height", 1, MAX_SIZE), ("frames", 1, MAX_LONG_FRAMES),
            ("window", 1, MAX_FRAMES), ("window_overlap", 0, MAX_FRAMES), ("tile", 0, MAX_SIZE),
            ("overlap", 0, MAX_SIZE), ("seed", 0, MAX_SEED),
        ):  # fmt: skip
            _check_bounds(name, getattr(self, name), low, high, whole=True)
        for name, low, high in (
            ("cfg", 0, MAX_CFG), ("shift", MIN_SHIFT, MAX_SHIFT), ("correction", 0, 1), ("cache", 0, 1),
        ):  # fmt: skip
            _check_bounds(name, getattr(self, name), low, high, whole=False)
        if self.boundary is not None:
            _check_bounds("boundary", self.boundary, 0, 1, whole=False)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r}: expected one of {', '.join(SOLVERS)}.")
        schedule_by_name(self.schedule)
        check_steps(self.steps)


def _check_bounds(name: str, value, low, high, whole: bool) -> None:
    """`value` is a whole number (or a finite number) from `low` to `high`."""
    if whole:
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:
        fits = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not fits or value < low:
        kind = "a whole number" if whole else "a finite number"
        raise ValueError(f"{name}={value!r} must be {kind} from {low} to {high}.")
    if value > high:
        raise ValueError(f"{name}={value!r} is above the largest the nodes take, {high}: use {high} or less.")


TINY_WORLD_SETTINGS = replace(
    Settings(), width=128, height=128, frames=17, steps=20, cfg=5.0, shift=3.0, window=17, window_overlap=8
)


def load_tiny_world(
    device=None, vae_device=None, folder=None, dtype: torch.dtype | None = None
) -> tuple[WanDiT, TextEncoder, VideoVAE]:
    """Tiny World's DiT, text encoder (on `device`, default ComfyUI's offload device) and VAE (run on
    `vae_device` when given, else placed on the compute device for each use), through the same loaders as
    any checkpoint. `folder`: another set of the three files, e.g. a training run's --out (default: the
    shipped weights). `dtype`: of the DiT's matmuls and the VAE's weights (None: `auto`, which on a CPU with
    native bf16 is bf16 for both, the CPU's fast path, else fp32 for the VAE)."""
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
    dit = load_dit(folder / TINY_WORLD_FILES["dit"], torch.float32, dtype, device=device)
    text_encoder = load_text_encoder(folder / TINY_WORLD_FILES["text_encoder"], device=device)
    decodes_on = torch.device(vae_device) if vae_device is not None else host.compute_device()
    fast = decodes_on.type == "cpu" and dit.compute_dtype == torch.bfloat16
    vae_dtype = dtype or (torch.bfloat16 if fast else torch.float32)
    vae = load_vae(folder / TINY_WORLD_FILES["vae"], vae_dtype, device=vae_device or host.offload_device())
    if vae_device is not None:
        vae = replace(vae, device=torch.device(vae_device))
    return dit, text_encoder, vae


def encode_prompt(
    text_encoder: TextEncoder, prompt: str, negative_prompt: str, cfg: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text contexts (positive, negative or None when cfg is 1)."""
    with host.on_compute_device(text_encoder.model) as device:
        context = text_encoder.encode([prompt] if cfg == 1.0 else [prompt, negative_prompt], device)
    return context[:1], (context[1:] if cfg != 1.0 else None)


def encode_storyboard(
    text_encoder: TextEncoder, script: Script, negative_prompt: str | None
) -> tuple[Storyboard, torch.Tensor | None]:
    """A storyboard's shots with their prompts encoded in one batch and the negative prompt after them (one
    shot encodes exactly as encode_prompt encodes its prompt), and the negative context (None without a
    negative prompt, e.g. when cfg is 1)."""
    prompts = [shot.prompt for shot in script.shots]
    negatives = [] if negative_prompt is None else [negative_prompt]
    with host.on_compute_device(text_encoder.model) as device:
        context = text_encoder.encode([*prompts, *negatives], device)
    count = len(prompts)
    storyboard = Storyboard(script, context[:count])
    return storyboard, (context[count:] if negatives else None)


def prompt_guider(
    dit: WanDiT,
    text_encoder: TextEncoder,
    prompt: str,
    negative_prompt: str,
    settings: Settings,
    low_noise_dit: WanDiT | None = None,
) -> Guider:
    """The guider of a run: the DiT (and A14B's low-noise expert) under the encoded prompt."""
    positive, negative = encode_prompt(text_encoder, prompt, negative_prompt, settings.cfg)
    return Guider(dit, positive, negative, settings.cfg, low_noise_dit, settings.boundary)


def settings_sampling(settings: Settings, sigmas: torch.Tensor | None = None) -> Sampling:
    """The settings' schedule (or `sigmas`), solver and seed."""
    if sigmas is None:
        sigmas = schedule_by_name(settings.schedule)(settings.steps, shift=settings.shift)
    return Sampling(sigmas, settings.solver, settings.seed, settings.cache)


def sample_latent(
    guider: Guider,
    latent: torch.Tensor,
    sampling: Sampling,
    noise_mask: torch.Tensor | None = None,
    tick: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Denoise a raw latent (zeros: text to video) down the sampling's sigmas, holding what core's
    `noise_mask` keeps; the Patchifier, DiT Denoiser and Unpatchify nodes in one call."""
    dit = guider.dit
    if dit.config.out_channels != latent.shape[1]:
        raise ValueError(
            f"{dit.config.name} takes {dit.config.out_channels}-channel latents but the VAE makes "
            f"{latent.shape[1]}: use the VAE that belongs to the model."
        )
    patches = SpacetimePatches.from_latent(latent, dit.config.patch_size, dit.latent_format, noise_mask)
    return denoise(guider, patches, sampling, tick).to_latent()


def text_to_video(
    dit: WanDiT,
    text_encoder: TextEncoder,
    vae: VideoVAE,
    prompt: str,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    settings: Settings = Settings(),
    low_noise_dit: WanDiT | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """A prompt -> IMAGE frames T×H×W×3 in 0..1. `progress(description, total)` returns a per-step tick
    (default: ComfyUI's or the console's progress bar, which also honours cancel)."""
    s = settings
    vae.tiling(s.tile, s.overlap)
    empty = torch.zeros(vae.latent_shape(s.frames, s.height, s.width))
    guider = prompt_guider(dit, text_encoder, prompt, negative_prompt, s, low_noise_dit)
    return edit_video(guider, settings_sampling(s), vae, empty, progress=progress, tiles=(s.tile, s.overlap))


def long_video(
    dit: WanDiT,
    text_encoder: TextEncoder,
    vae: VideoVAE,
    prompt: str | Script,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    settings: Settings = Settings(),
    low_noise_dit: WanDiT | None = None,
    progress: Progress | None = None,
) -> FrameStream:
    """A prompt, or a storyboard's Script of timed prompts, -> a video longer than one window, made window by
    window (editing/long_video.py) and written as it is made: a FrameStream for combine_video, in the
    memory of one window."""
    s = settings
    vae.tiling(s.tile, s.overlap)
    vae.latent_shape(s.frames, s.height, s.width)
    windows = Windows.from_frames(s.window, s.window_overlap, vae.temporal_stride, s.correction)
    storyboard = None
    if isinstance(prompt, Script):
        negative_prompt = None if s.cfg == 1.0 else negative_prompt
        storyboard, negative = encode_storyboard(text_encoder, prompt, negative_prompt)
        guider = Guider(dit, storyboard.contexts[:1], negative, s.cfg, low_noise_dit, s.boundary)
    else:
        guider = prompt_guider(dit, text_encoder, prompt, negative_prompt, s, low_noise_dit)
    size = (s.frames, s.height, s.width)
    made = LongVideo(guider, settings_sampling(s), vae, size, windows, storyboard=storyboard)
    return made.frames(progress or host.progress_bars(), s.tile, s.overlap)


def edit_video(
    guider: Guider,
    sampling: Sampling,
    vae: VideoVAE,
    latent: torch.Tensor,
    noise_mask: torch.Tensor | None = None,
    progress: Progress | None = None,
    tiles: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Denoise `latent` (with core's `noise_mask`: the known frames of an edit) and decode it in spatial
    `tiles` (tile, overlap pixels; 0: whole) -> IMAGE frames (B·T)×H×W×3 in 0..1, as the edit nodes' graph
    does."""
    progress = progress or host.progress_bars()
    latent = sample_latent(guider, latent, sampling, noise_mask, progress("Denoising", sampling.steps))
    tile, overlap = tiles
    video = vae.decode(latent, progress("Decoding", latent.shape[2]), tile=tile, overlap=overlap)
    return video_to_frames(video)
