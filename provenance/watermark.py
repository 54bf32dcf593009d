"""An invisible video watermark that survives H.264, resizing, cropping and GIF: a keyed spread-spectrum
pattern in low-frequency luma, switched in sign every few frames, found by phase correlation.

Embedding. The pattern is a sum of F×F keyed cosines, periodic over a square tile whose side is the
frame's shorter side (so resizing keeps it in place). Every frame gets `strength` levels (RMS, of 255) of
it added to R, G and B alike (luma only; chroma is untouched). Its sign switches between segments of
SEGMENT frames in keyed quads (+ - - + or - + + -), each switch eased over RAMP frames, so:
- everything static in the picture, and everything changing at a steady rate, cancels in the
  detector's weighted sum of frames, and only the mark (and uneven motion) remains;
- the change is one smooth luma turn per segment, which H.264 keeps, rather than per-frame flicker,
  which it would round away.

Detection. Luma frames are summed with weights that follow the mark's levels, minus their constant
and linear parts; the first segment alone is a second candidate (the intra frame keeps the mark
where a pan drags it along later). A single image is used as it is. Each candidate is also scored with
its loud places turned down (moving objects leave local residue in the sum, far louder than the mark).
Each is resampled so one tile spans M pixels, for each of a few scale guesses (a crop of up to ~14%
shrinks the frame around the tile). It is folded into one M×M tile. The pattern's band is then phase-correlated
with the key over every circular shift (a crop moves the tile). Each term of the correlation is a
cosine of a phase that is uniform on unmarked video, so the map is N(0, 1) after dividing by
sqrt(terms / 2). The score is the map's maximum over shifts, scales, bands and candidates: about 3 to
5 on unmarked video, whose tail is a little heavier than Gaussian (a few loud bins dominate some
maps), so THRESHOLD is set from measured unmarked clips, with margin.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_KEY = "ComfyUI-Spacetime"
BAND = 16  # cosines up to 16 cycles per tile (= per shorter side), each axis
DETECT_BANDS = (8, 12, 16)  # nested: the low band alone survives small, heavily compressed copies best
SEGMENT = 8  # frames per sign segment (0.5 s at 16 fps)
STRENGTH = 2.2  # RMS of the added luma, in 8-bit levels: 41.3 dB PSNR (less where it clips)
TILE = 4 * BAND  # pixels per tile side when detecting (4 per period of the highest cosine)
CROPS = tuple(1 - 0.02 * i for i in range(8))  # scale guesses: crops of up to 14% of the shorter side
LUMA = (0.2126, 0.7152, 0.0722)  # BT.709
THRESHOLD = 6.5  # above every unmarked clip's score in the benchmark's calibration run (docs/benchmarks.md)
RAMP = 4


def _rng(key: str, purpose: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{key}\0{purpose}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _frequencies() -> tuple[np.ndarray, np.ndarray]:
    """The band's frequencies (ky, kx), one of each ± pair: kx > 0, or kx == 0 and ky > 0."""
    ky, kx = np.meshgrid(np.arange(-BAND, BAND + 1), np.arange(-BAND, BAND + 1), indexing="ij")
    keep = (kx > 0) | ((kx == 0) & (ky > 0))
    return ky[keep], kx[keep]


def key_phases(key: str = DEFAULT_KEY) -> np.ndarray:
    """One uniformly random phase per band frequency."""
    ky, _ = _frequencies()
    return _rng(key, "phases").uniform(0, 2 * math.pi, ky.shape[0])


def segment_signs(frames: int, key: str = DEFAULT_KEY) -> np.ndarray:
    """±1 per frame: segments of SEGMENT frames in keyed quads (+ - - +) or (- + + -)."""
    segments = -(-frames // SEGMENT)
    first = _rng(key, "signs").choice([-1.0, 1.0], size=-(-segments // 4))
    per_segment = (first[:, None] * np.array([1.0, -1.0, -1.0, 1.0])).reshape(-1)[:segments]
    return np.repeat(per_segment, SEGMENT)[:frames]


def mark_levels(frames: int, key: str = DEFAULT_KEY) -> np.ndarray:
    """The mark's level per frame: the segment signs, each change eased over RAMP frames by a half
    cosine centred on the boundary (a soft turn rather than a step, which the eye would catch)."""
    hard = segment_signs(frames + SEGMENT, key)
    levels = hard[:frames].copy()
    for boundary in range(SEGMENT, frames + RAMP, SEGMENT):
        before, after = hard[boundary - 1], hard[boundary]
        for offset in range(RAMP):
            index = boundary - RAMP // 2 + offset
            if before != after and 0 <= index < frames:
                ease = 0.5 - 0.5 * math.cos(math.pi * (offset + 0.5) / RAMP)
                levels[index] = before + (after - before) * ease
    return levels


def pattern(height: int, width: int, key: str = DEFAULT_KEY) -> np.ndarray:
    """The mark, H×W float32 with RMS 1 over a tile (periodic with a period of the shorter side)."""
    side = min(height, width)
    ky, kx = _frequencies()
    phases = key_phases(key)
    y = (np.arange(height) + 0.5) / side
    x = (np.arange(width) + 0.5) / side
    # sum_k cos(2π(ky·y + kx·x) + φ) = Re[ (e^{2πi ky y})ᵀ diag(e^{iφ}) (e^{2πi kx x}) ], separably
    rows = np.exp(2j * math.pi * np.outer(ky, y)) * np.exp(1j * phases)[:, None]  # K×H
    columns = np.exp(2j * math.pi * np.outer(kx, x))  # K×W
    values = np.real(rows.T @ columns)
    return (values / math.sqrt(ky.shape[0] / 2)).astype(np.float32)


class Marker:
    """Adds the mark to the frames of one clip, one frame at a time (no second copy of the clip):
    `marker(frame, index)` for frame `index` of the file as written (after ping-pong and repeats)."""

    def __init__(
        self, height: int, width: int, frames: int, key: str = DEFAULT_KEY, strength: float = STRENGTH
    ):
        self.offset = torch.from_numpy(pattern(height, width, key)) * (strength / 255)
        self.levels = mark_levels(frames, key).tolist()

    def __call__(self, frame: torch.Tensor, index: int) -> torch.Tensor:
        """H×W×C in 0..1 -> the same frame marked (alpha untouched), clamped to 0..1."""
        if self.offset.device != frame.device or self.offset.dtype != frame.dtype:
            self.offset = self.offset.to(frame.device, frame.dtype)  # once, not per frame
        marked = frame.clone()
        offset = self.offset * self.levels[index]
        marked[..., :3] = (frame[..., :3] + offset[..., None]).clamp(0.0, 1.0)
        return marked


def embed(frames: torch.Tensor, key: str = DEFAULT_KEY, strength: float = STRENGTH) -> torch.Tensor:
    """Mark ComfyUI IMAGE frames (T×H×W×C in 0..1; alpha, if any, untouched)."""
    count, height, width = frames.shape[:3]
    marker = Marker(height, width, count, key, strength)
    return torch.stack([marker(frame, index) for index, frame in enumerate(frames)])


@dataclass(frozen=True)
class Detection:
    score: float  # the correlation peak in standard deviations of unmarked video
    detected: bool
    crop: float  # the scale guess that scored best (1 = the frame as marked)
    shift: tuple[int, int]  # the best circular shift of the tile, in detection pixels

    def __str__(self) -> str:
        verdict = "watermarked" if self.detected else "no watermark found"
        return f"{verdict} (score {self.score:.1f}, threshold {THRESHOLD})"


def _candidates(frames: torch.Tensor, key: str) -> list[torch.Tensor]:
    """Luma images in which to look for the mark, each with it at its own sign:
    - the frames summed with the keyed signs, over whole quads (or one pair), so that static content and
      steady change cancel;
    - the first segment: H.264 keeps the mark exactly in its first (intra) frame, while in later frames
      of a pan it copies the moving picture with the mark moving along."""
    luma = frames[..., 0] * LUMA[0] + frames[..., 1] * LUMA[1] + frames[..., 2] * LUMA[2]
    count = frames.shape[0]
    levels = mark_levels(count, key)
    steady = max(1, min(count, SEGMENT - RAMP // 2))  # the first segment before its ramp
    first = torch.einsum("t,thw->hw", torch.from_numpy(levels[:steady]).to(luma), luma[:steady]) / steady
    if count < 2 * SEGMENT:
        return [first]
    # weights: the levels with their constant and linear parts removed, so static content and steady
    # change cancel whatever the length
    time = np.arange(count, dtype=np.float64)
    basis = np.stack([np.ones(count), time - time.mean()], axis=1)
    weights = levels - basis @ np.linalg.lstsq(basis, levels, rcond=None)[0]
    weights /= np.abs(weights).sum()
    return [torch.einsum("t,thw->hw", torch.from_numpy(weights).to(luma), luma), first]


def _quieted(image: torch.Tensor) -> torch.Tensor:
    """The image with its loud places turned down: what is left of moving objects and their edges in the
    signed sum is local and far louder than the mark, which is spread evenly over the frame. Each pixel is
    scaled by the median local energy over its own (at most 1), the energy measured over about one period
    of the mark's middle band. The scale depends on the picture only, so on unmarked video the phases
    against the key stay uniform."""
    centred = image - image.mean()
    sigma = min(image.shape) / BAND
    radius = int(3 * sigma) + 1
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=image.dtype).pow(2) / (2 * sigma**2))
    taps = taps / taps.sum()
    mode = "reflect" if radius < min(image.shape) else "replicate"  # reflect needs more pixels than that
    energy = F.pad((centred * centred)[None, None], (radius,) * 4, mode=mode)
    energy = F.conv2d(F.conv2d(energy, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))[0, 0]
    return centred * (energy.median() / energy.clamp_min(1e-12)).clamp(max=1.0)


def _fold(image: torch.Tensor, tile: int) -> torch.Tensor:
    """Sum every pixel into its position modulo the tile."""
    height, width = image.shape
    padded = F.pad(image, (0, -width % tile, 0, -height % tile))
    return padded.reshape(padded.shape[0] // tile, tile, padded.shape[1] // tile, tile).sum(dim=(0, 2))


def detect(frames: torch.Tensor, key: str = DEFAULT_KEY) -> Detection:
    """Look for the mark in IMAGE frames (T×H×W×C in 0..1), cropped, resized or re-encoded or not."""
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise ValueError(f"detect needs IMAGE frames T×H×W×3 (or ×4), got shape {tuple(frames.shape)}")
    candidates = _candidates(frames.float().cpu(), key)
    images = torch.stack(candidates + [_quieted(image) for image in candidates])[:, None]
    height, width = images.shape[-2:]
    ky, kx = _frequencies()
    # the key's phases as the fold sees them: detection pixel q samples the pattern at (q + 1/2) / TILE
    reference = torch.from_numpy(np.exp(-1j * (key_phases(key) + math.pi * (ky + kx) / TILE)))
    rows, columns = torch.from_numpy(ky % TILE), torch.from_numpy(kx % TILE)
    radius = np.maximum(np.abs(ky), np.abs(kx))
    bands = [torch.from_numpy(radius <= band) for band in DETECT_BANDS]
    best = Detection(-math.inf, False, 1.0, (0, 0))
    for crop in CROPS:
        tile_pixels = min(height, width) / crop  # the marked frame's shorter side, in this frame's pixels
        size = (max(1, round(height * TILE / tile_pixels)), max(1, round(width * TILE / tile_pixels)))
        resized = F.interpolate(images, size=size, mode="bilinear", antialias=True)[:, 0]
        for image in resized:
            spectrum = torch.fft.fft2(_fold(image - image.mean(), TILE))[rows, columns]
            magnitude = spectrum.abs().clamp_min(1e-12)
            aligned = spectrum / magnitude * reference.to(spectrum.dtype)
            for band in bands:
                # Bins far louder than the band's median are the picture's (or the codec's), not the
                # mark's: they count less. The weights depend on magnitudes only, and phases against a
                # random key are uniform, so the map stays N(0, 1) on unmarked video.
                weight = (magnitude[band].median() / magnitude[band]).clamp(max=1.0)
                # over every circular shift d of the tile: sum_k w_k cos(arg(spectrum_k) - φ_k - 2π k·d / TILE)
                product = torch.zeros(TILE, TILE, dtype=aligned.dtype)
                product[rows[band], columns[band]] = aligned[band] * weight
                null_std = math.sqrt(float(weight.pow(2).sum()) / 2)
                correlation = torch.fft.ifft2(product).real * TILE**2 / null_std
                peak = int(correlation.argmax())
                score = float(correlation.flatten()[peak])
                if score > best.score:
                    best = Detection(score, score >= THRESHOLD, crop, divmod(peak, TILE))
    return best
