"""Long videos by chained extension in latent space: the first window is generated from the prompt, each
next one is generated with the last `overlap` latent frames of the video so far pinned as its opening
frames, and keeps only its new frames. Memory is that of one window, whatever the length: the DiT never
sees more than `window` latent frames, and the latent video itself is small (a minute of Wan 2.1 at
832x480 is 96 MB). The whole latent is then decoded in one causal pass (no cut between windows in pixels).

Colour drift: chained windows can drift in tone (each continues from the last, errors add up). After each
window, the per-channel mean of its new latent frames is moved towards the first window's: not at all at
the join (the model continues the frames it was given, so a jump there would be a seam), rising linearly
over the window towards `correction`. (Measured with Tiny World over a minute: moving the mean this way
halves the drift, 6.1 to 3.4 levels, with 73 of 79 joins under 1.5x the median step against 76 without
it; matching the spread as well, or correcting fully from the join on, made joins and drift worse.)

Joins: the windows' joins are named (window_joins, and JOINS_KEY in a LATENT), so the pixel frames can
have the jump at each spread over the frames after it (samplers/frames.py spread_joins).

Axes: B batch, C latent channels, T latent frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..dit import SpacetimePatches, WanDiT
from .denoiser import WAN22_T2V_BOUNDARY, denoise


def window_count(frames: int, window: int, overlap: int) -> int:
    """Windows needed for `frames` latent frames."""
    check_windows(frames, window, overlap)
    return 1 if frames <= window else 1 + -(-(frames - window) // (window - overlap))


JOINS_KEY = "spacetime_joins"  # in a LATENT: joins_entry(...), where later windows' new frames begin


def joins_entry(frames: int, window: int, overlap: int) -> dict:
    """What a LATENT carries under JOINS_KEY: the joins, and the latent length they belong to (a node that
    trims or joins latents keeps the key but changes the length, and the joins no longer apply)."""
    return {"latent_frames": frames, "at": window_joins(frames, window, overlap)}


def latent_joins(latent: dict) -> list[int]:
    """The window joins a LATENT names, if they still belong to its samples; else none."""
    entry = latent.get(JOINS_KEY)
    if not isinstance(entry, dict) or entry.get("latent_frames") != latent["samples"].shape[2]:
        return []
    return [int(join) for join in entry.get("at", ())]


def window_joins(frames: int, window: int, overlap: int) -> list[int]:
    """Latent frames at which each window after the first begins its new frames (the joins)."""
    count = window_count(frames, window, overlap)
    return [window + index * (window - overlap) for index in range(count - 1)]


def latent_windows(window_frames: int, overlap_frames: int, stride: int) -> tuple[int, int]:
    """A window of `window_frames` video frames (4k+1) continuing from `overlap_frames` (a multiple of 4,
    rounded down) -> (window, overlap) in latent frames."""
    return (window_frames - 1) // stride + 1, overlap_frames // stride


def check_windows(frames: int, window: int, overlap: int) -> None:
    if window < 2 or not 1 <= overlap < window:
        raise ValueError(
            f"window={window}, overlap={overlap} latent frames: expected a window of at least 2 and an overlap "
            "of at least 1 and less than the window (e.g. window 5, overlap 2 for Tiny World; 21 and 4 for Wan)."
        )
    if frames < 1:
        raise ValueError(f"{frames} latent frames: expected at least 1.")


def match_mean(new: torch.Tensor, reference: torch.Tensor, amount: float | torch.Tensor) -> torch.Tensor:
    """Move the per-channel mean of `new` (B×C×T×H×W) `amount` of the way towards `reference`'s; `amount`
    may be one value or one per frame (T)."""
    amount = torch.as_tensor(amount, dtype=new.dtype).reshape(1, 1, -1, 1, 1)
    dims = (2, 3, 4)
    shift = reference.mean(dims, keepdim=True) - new.mean(dims, keepdim=True)
    return new + amount * shift


def long_video_latent(
    dit: WanDiT,
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    *,
    window: int,
    overlap: int,
    correction: float = 1.0,
    cfg: float = 5.0,
    seed: int = 0,
    solver: str = "unipc",
    low_noise_dit: WanDiT | None = None,
    boundary: float = WAN22_T2V_BOUNDARY,
    step_callback: Callable[[], None] | None = None,
    window_callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """A raw latent of `shape` (B×C×T×H×W, T as long as wanted), window by window; window k uses seed + k.
    `window_callback(k, count)` is called as each window starts."""
    batch, channels, frames, height, width = shape
    check_windows(frames, window, overlap)
    if not 0.0 <= correction <= 1.0:
        raise ValueError(f"correction={correction}: expected 0 (off) .. 1 (full).")
    count = window_count(frames, window, overlap)
    fmt, patch = dit.latent_format, dit.config.patch_size
    video = torch.zeros(batch, channels, 0, height, width)
    reference = None
    for index in range(count):
        if window_callback is not None:
            window_callback(index, count)
        known = video[:, :, video.shape[2] - overlap :] if index else video
        new = min(window - known.shape[2], frames - video.shape[2])
        latent = torch.cat([known, torch.zeros(batch, channels, new, height, width)], dim=2)
        mask = torch.ones(batch, 1, latent.shape[2], height, width)
        mask[:, :, : known.shape[2]] = 0.0
        patches = SpacetimePatches.from_latent(latent, patch, fmt, mask if index else None)
        patches = denoise(
            dit, patches, sigmas, positive, negative, cfg=cfg, seed=seed + index, solver=solver,
            low_noise_dit=low_noise_dit, boundary=boundary, step_callback=step_callback,
        )  # fmt: skip
        generated = patches.to_latent().float().cpu()[:, :, known.shape[2] :]
        if reference is None:
            reference = generated
        else:
            ramp = torch.arange(generated.shape[2]) / generated.shape[2]  # 0 at the join
            generated = match_mean(generated, reference, correction * ramp)
        video = torch.cat([video, generated], dim=2)
    return video
