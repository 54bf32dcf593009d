"""An invisible video watermark that survives H.264, resizing, cropping, flips, quarter turns and GIF: a
keyed spread-spectrum pattern in low-frequency luma, switched in sign every few frames, found by phase
correlation.

Embedding. The pattern is a sum of F×F keyed cosines, periodic over a square tile whose side is the
frame's shorter side (so resizing keeps it in place). Every frame gets `strength` levels (RMS, of 255) of
it added to R, G and B alike (luma only; chroma is untouched). Its sign switches between segments of
SEGMENT frames in keyed quads (+ - - + or - + + -), each switch eased over RAMP frames, so:
- everything static in the picture, and everything changing at a steady rate, cancels in the
  detector's weighted sum of frames, and only the mark (and uneven motion) remains;
- the change is one smooth luma turn per segment, which H.264 keeps, rather than per-frame flicker,
  which it would round away.

Key. Each installation makes its own secret key on first use (32 random bytes, kept as hex in
`user/spacetime_c2pa/watermark.key` beside the signing identity, readable by the user only). The phases
and the signs derive from it, so a mark stamped by another installation, or a pattern subtracted without
the key, does nothing to the verdict. Detection uses the installation's key unless given another (an owner
can share theirs for detection). The timing is not secret: averaging a still shot's frames cancels the
mark, and the frames themselves give an estimate of it (the README says what is not protected).

Detection. Luma frames are summed with weights that follow the mark's levels, minus their constant
and linear parts; the first segment alone is a second candidate (the intra frame keeps the mark
where a pan drags it along later). A single image is used as it is. Each candidate is also scored with
its loud places turned down (moving objects leave local residue in the sum, far louder than the mark).
Each is resampled so one tile spans M pixels, for each of a few scale guesses (a crop of up to ~14%
shrinks the frame around the tile), and folded into one M×M tile. The pattern's band is then
phase-correlated with the key over every circular shift (a crop moves the tile), in each of the tile's 8
orientations (a flip or quarter turn of the frame is one of its folded tile, up to a circular shift).
Each term of the correlation is a cosine of a phase that is uniform on unmarked video, so the map is
N(0, 1) after dividing by sqrt(terms / 2). The score is the map's maximum over shifts, orientations,
scales, bands and candidates: about 4 to 6 on unmarked video, whose tail is a little heavier than
Gaussian (a few loud bins dominate some maps), so THRESHOLD is set from measured unmarked clips, with
margin (the 8 orientations raise the maximum by about 0.4).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import host
from .credentials import identity_directory, write_private

KEY_FILE = "watermark.key"
KEY_BYTES = 32
SHARED_KEYS = "watermark_keys"  # other installations' keys, shared with this one for detection
BAND = 16  # cosines up to 16 cycles per tile (= per shorter side), each axis
DETECT_BANDS = (8, 12, 16)  # nested: the low band alone survives small, heavily compressed copies best
SEGMENT = 8  # frames per sign segment (0.5 s at 16 fps)
STRENGTH = 2.2  # RMS of the added luma, in 8-bit levels: 41.3 dB PSNR (less where it clips)
TILE = 4 * BAND  # pixels per tile side when detecting (4 per period of the highest cosine)
CROPS = tuple(1 - 0.02 * i for i in range(8))  # scale guesses: crops of up to 14% of the shorter side
LUMA = (0.2126, 0.7152, 0.0722)  # BT.709
THRESHOLD = 7.0  # above every unmarked clip's score in the benchmark's calibration runs (docs/benchmarks.md)
RAMP = 4
# How a copy was flipped or turned, in the order `_orientations` undoes them: the frame turned clockwise by
# 0 to 3 quarter turns, then the same after a mirror (a mirror and a turn is a flip about another axis).
ORIENTATIONS = (
    "as marked",
    "turned 90° clockwise",
    "turned 180°",
    "turned 90° counter-clockwise",
    "mirrored left to right",
    "mirrored about the diagonal from top right to bottom left",
    "flipped upside down",
    "mirrored about the diagonal from top left to bottom right",
)


def installation_key() -> bytes:
    """This installation's key, made on first use: 32 random bytes, stored as hex beside the signing identity,
    readable by the user only."""
    path = identity_directory() / KEY_FILE
    if not path.exists():
        try:
            _make_key(path)
        except OSError as error:
            raise ValueError(
                f"the watermark key could not be made in {path.parent} ({error.strerror}): the user folder "
                f"(ComfyUI's user/, or ${host.USER_DIR_ENV} outside ComfyUI) must be writable, or turn the "
                "watermark off."
            ) from None
    return read_key(path)


def _make_key(path: Path) -> None:
    """Write a new key, never replacing one that another process made meanwhile (both would mark with
    their own and one key would be lost)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    write_private(temporary, secrets.token_bytes(KEY_BYTES).hex().encode() + b"\n")
    try:
        os.link(temporary, path)  # fails when `path` exists
    except FileExistsError:
        pass
    except OSError:  # no hard links on this filesystem
        if not path.exists():
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_key(path: str | Path) -> bytes:
    """A key file: 64 hex digits (an installation's `watermark.key`)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            text = file.read(4 * KEY_BYTES).decode("ascii", errors="replace").strip()
    except OSError as error:
        raise ValueError(f"the watermark key {path} could not be read ({error.strerror}).") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        found = "hex digits" if all(c in string.hexdigits for c in text) else "characters, not all hex digits"
        raise ValueError(  # what it holds is not quoted: it may be most of a key
            f"{path} is not a watermark key: a key file holds {2 * KEY_BYTES} hex digits (as "
            f"user/spacetime_c2pa/{KEY_FILE} does), and this one holds {len(text)} {found}. Give the "
            f"owner's {KEY_FILE} as it is; if this is your own and it was damaged, restore it from a backup "
            "(or remove it to have a new key made: what was marked with the old one is then found only "
            "with it)."
        )
    return key


def shared_keys() -> list[str]:
    """The names of the keys others shared with this installation (`user/spacetime_c2pa/watermark_keys/*.key`)."""
    folder = identity_directory() / SHARED_KEYS
    return sorted(path.name for path in folder.glob("*.key")) if folder.is_dir() else []


def shared_key(name: str) -> bytes:
    """A shared key by its file name."""
    if name not in shared_keys():
        raise ValueError(
            f"no watermark key {name!r} in {identity_directory() / SHARED_KEYS}: put the owner's "
            f"{KEY_FILE} there (under any name ending in .key), then refresh."
        )
    return read_key(identity_directory() / SHARED_KEYS / name)


def _rng(key: bytes, purpose: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256(key + b"\0" + purpose.encode()).digest(), "little")
    )


def _frequencies() -> tuple[np.ndarray, np.ndarray]:
    """The band's frequencies (ky, kx), one of each ± pair: kx > 0, or kx == 0 and ky > 0."""
    ky, kx = np.meshgrid(np.arange(-BAND, BAND + 1), np.arange(-BAND, BAND + 1), indexing="ij")
    keep = (kx > 0) | ((kx == 0) & (ky > 0))
    return ky[keep], kx[keep]


def key_phases(key: bytes) -> np.ndarray:
    """One uniformly random phase per band frequency."""
    ky, _ = _frequencies()
    return _rng(key, "phases").uniform(0, 2 * math.pi, ky.shape[0])


def segment_signs(frames: int, key: bytes) -> np.ndarray:
    """±1 per frame: segments of SEGMENT frames in keyed quads (+ - - +) or (- + + -)."""
    segments = -(-frames // SEGMENT)
    first = _rng(key, "signs").choice([-1.0, 1.0], size=-(-segments // 4))
    per_segment = (first[:, None] * np.array([1.0, -1.0, -1.0, 1.0])).reshape(-1)[:segments]
    return np.repeat(per_segment, SEGMENT)[:frames]


def mark_levels(frames: int, key: bytes) -> np.ndarray:
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


def pattern(height: int, width: int, key: bytes) -> np.ndarray:
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
    `marker(frame, index)` for frame `index` of the file as written (after ping-pong and repeats), with
    the installation's key unless given another."""

    def __init__(
        self, height: int, width: int, frames: int, key: bytes | None = None, strength: float = STRENGTH
    ):
        key = installation_key() if key is None else key
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


def embed(frames: torch.Tensor, key: bytes | None = None, strength: float = STRENGTH) -> torch.Tensor:
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
    orientation: str  # how the copy was flipped or turned (one of ORIENTATIONS)

    def __str__(self) -> str:
        if not self.detected:
            return f"no watermark found (score {self.score:.1f}, threshold {THRESHOLD})"
        turned = "" if self.orientation == ORIENTATIONS[0] else f", {self.orientation}"
        return f"watermarked (score {self.score:.1f}, threshold {THRESHOLD}{turned})"


def _candidates(frames: torch.Tensor, key: bytes) -> list[torch.Tensor]:
    """Luma images in which to look for the mark, each with it at its own sign:
    - the frames summed with the keyed signs, over whole quads (or one pair), so that static content and
      steady change cancel;
    - the first segment: H.264 keeps the mark exactly in its first (intra) frame, while in later frames
      of a pan it copies the moving picture with the mark moving along."""
    luma = frames[..., :3] @ frames.new_tensor(LUMA)
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


def _orientations(tile: torch.Tensor) -> torch.Tensor:
    """The folded tile turned back from each of the 8 flips and quarter turns a copy may have had, in the
    order of ORIENTATIONS (a flip or turn of the frame is one of its folded tile, up to a circular shift)."""
    turned = [torch.rot90(tile, turns, (0, 1)) for turns in range(4)]
    return torch.stack(turned + [image.flip(1) for image in turned])


def detect(frames: torch.Tensor, key: bytes | None = None) -> Detection:
    """Look for the mark in IMAGE frames (T×H×W×C in 0..1), cropped, resized, flipped, turned or re-encoded
    or not, with the installation's key unless given another."""
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise ValueError(f"detect needs IMAGE frames T×H×W×3 (or ×4), got shape {tuple(frames.shape)}")
    if 0 in frames.shape[:3]:
        raise ValueError(
            f"detect needs at least one frame of at least 1×1 pixels, got shape {tuple(frames.shape)}: "
            "give it the frames of the clip from its first frame."
        )
    frames = frames.float().cpu()
    if not torch.isfinite(frames[..., :3]).all():
        raise ValueError(
            "the frames hold NaN or infinite values, which no video can: check what made them (a VAE "
            "decode in fp16 can overflow; try fp32 or bf16)."
        )
    key = installation_key() if key is None else key
    candidates = _candidates(frames, key)
    images = torch.stack(candidates + [_quieted(image) for image in candidates])[:, None]
    height, width = images.shape[-2:]
    ky, kx = _frequencies()
    # the key's phases as the fold sees them: detection pixel q samples the pattern at (q + 1/2) / TILE
    reference = torch.from_numpy(np.exp(-1j * (key_phases(key) + math.pi * (ky + kx) / TILE)))
    rows, columns = torch.from_numpy(ky % TILE), torch.from_numpy(kx % TILE)
    radius = np.maximum(np.abs(ky), np.abs(kx))
    bands = [torch.from_numpy(radius <= band) for band in DETECT_BANDS]
    best = Detection(-math.inf, False, 1.0, (0, 0), ORIENTATIONS[0])
    for crop in CROPS:
        tile_pixels = min(height, width) / crop  # the marked frame's shorter side, in this frame's pixels
        size = (max(1, round(height * TILE / tile_pixels)), max(1, round(width * TILE / tile_pixels)))
        resized = F.interpolate(images, size=size, mode="bilinear", antialias=True)[:, 0]
        for image in resized:
            tiles = _orientations(_fold(image - image.mean(), TILE))
            spectrum = torch.fft.fft2(tiles)[:, rows, columns]  # orientation × frequency
            magnitude = spectrum.abs().clamp_min(1e-12)
            aligned = spectrum / magnitude * reference.to(spectrum.dtype)
            for band in bands:
                # Bins far louder than the band's median are the picture's (or the codec's), not the
                # mark's: they count less. The weights depend on magnitudes only, and phases against a
                # random key are uniform, so the map stays N(0, 1) on unmarked video.
                weight = (magnitude[:, band].median(dim=1, keepdim=True).values / magnitude[:, band]).clamp(
                    max=1.0
                )
                # over every circular shift d of the tile: sum_k w_k cos(arg(spectrum_k) - φ_k - 2π k·d / TILE)
                product = torch.zeros(len(tiles), TILE, TILE, dtype=aligned.dtype)
                product[:, rows[band], columns[band]] = aligned[:, band] * weight
                null_std = (weight.pow(2).sum(dim=1) / 2).sqrt()
                correlation = torch.fft.ifft2(product).real * TILE**2 / null_std[:, None, None]
                peak = int(correlation.argmax())
                score = float(correlation.flatten()[peak])
                if score > best.score:
                    orientation, shift = divmod(peak, TILE * TILE)
                    best = Detection(
                        score, score >= THRESHOLD, crop, divmod(shift, TILE), ORIENTATIONS[orientation]
                    )
    return best
