"""Scoring a video against the prompt it was made from: does it show an object of the asked colour and
shape, moving as asked? Measured with OpenCV, independent of how the video was made.

1. The background's colours are sampled from a ring along the frame's border (all frames): a small
   k-means palette, so stripes, checkers, gradients and noise all count as background, panned or not.
2. A pixel far from every palette colour is foreground; opened foreground blobs that are saturated and
   of one hue are objects, named by their hue; one track per colour follows an object through the clip.
3. The track of the asked colour (else the largest) is measured on its coverage map (distance from the
   background over the object's own distance): shape from the lobes of its radial profile and the
   solidity of its outline, motion from the drift of its centroid, the change of its area and the turn
   of its radial profile between frames.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .captions import parse_caption
from .scene import COLOURS, hue_degrees, hue_gap

BORDER = 0.04  # width of the background ring, fraction of the shorter side
PALETTE_SIZE = 8
PALETTE_MIN_SHARE = 0.02  # rarer ring colours are objects crossing the border, not background
PALETTE_SAMPLES = 4096
FOREGROUND_DISTANCE = 45.0  # RGB distance from every background colour
MIN_AREA = 0.002  # of the frame, after opening
MIN_PRESENCE = 0.6  # fraction of frames an object must appear in
MIN_SATURATION = 0.3
MIN_HUE_CONCENTRATION = 0.8  # resultant length of the blob's hues: one colour, not noise
UPSAMPLE = 4  # the outline is traced on the coverage map upsampled this much
MOVE_THRESHOLD = 0.12  # centroid travel over the clip, fraction of the frame
SCALE_THRESHOLD = math.log(1.5)  # area ratio over the clip
ROTATION_THRESHOLD = 30.0  # degrees over the clip
ROTATION_SEARCH = 35.0  # largest turn between two frames: under half the star's 72 degree symmetry
PROFILE_ANGLES = 360
PROFILE_RADII = 32
MIN_PROFILE_RELIEF = 0.03  # a profile flatter than this (a circle) says nothing about turning
# (fraction of the enclosing circle filled, solidity) of each shape's ideal outline.
SHAPE_PROTOTYPES = {
    "circle": (1.0, 1.0),
    "square": (0.636, 1.0),
    "triangle": (0.413, 1.0),
    "star": (0.42, 0.557),
    "cross": (0.64, 0.718),
}
LOBES = {3: "triangle", 4: "square", 5: "star"}
ROUND_RELIEF = 0.04  # largest harmonic of a circle's profile (pixels and blur make it 0.01 or so)
ROUND_FILL = 0.8
CROSS_SOLIDITY = 0.86  # between the cross (0.72) and the square (1.0)
REFERENCE_HUES = {name: hue_degrees(rgb) for name, rgb in COLOURS.items()}


def nearest_colour(hue: float) -> str:
    return min(REFERENCE_HUES, key=lambda name: hue_gap(hue, REFERENCE_HUES[name]))


def background_palette(frames: np.ndarray) -> np.ndarray:
    """(K, 3) float colours of the border ring: farthest-point seeds, a few k-means steps, rare clusters dropped."""
    _, height, width, _ = frames.shape
    b = max(1, round(BORDER * min(height, width)))
    ring = np.concatenate(
        [
            frames[:, :b].reshape(-1, 3),
            frames[:, -b:].reshape(-1, 3),
            frames[:, b:-b, :b].reshape(-1, 3),
            frames[:, b:-b, -b:].reshape(-1, 3),
        ]
    ).astype(np.float32)
    ring = ring[:: max(1, len(ring) // PALETTE_SAMPLES)]
    ring_norms = (ring * ring).sum(axis=1, keepdims=True)

    def squared_distances(centres: np.ndarray) -> np.ndarray:
        return ring_norms - 2.0 * ring @ centres.T + (centres * centres).sum(axis=1)

    centres = [ring[0]]
    nearest = squared_distances(ring[:1])[:, 0]
    while len(centres) < PALETTE_SIZE and nearest.max() > 1.0:
        centres.append(ring[np.argmax(nearest)])
        nearest = np.minimum(nearest, squared_distances(centres[-1][None])[:, 0])
    centres = np.stack(centres)
    for _ in range(8):
        labels = squared_distances(centres).argmin(axis=1)
        counts = np.bincount(labels, minlength=len(centres))
        sums = np.stack([np.bincount(labels, ring[:, c], len(centres)) for c in range(3)], axis=1)
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres).astype(
            np.float32
        )
    share = np.bincount(labels, minlength=len(centres)) / len(ring)
    return centres[share >= PALETTE_MIN_SHARE]


def background_distance(frames: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(T, H, W) RGB distance of every pixel to its nearest background colour."""
    planes = np.moveaxis(frames, -1, 0).astype(np.float32)  # whole colour planes: far faster than (N, 3) rows
    nearest = np.full(frames.shape[:-1], np.inf, dtype=np.float32)
    for centre in palette:
        squared = (planes[0] - centre[0]) ** 2
        squared += (planes[1] - centre[1]) ** 2
        squared += (planes[2] - centre[2]) ** 2
        np.minimum(nearest, squared, out=nearest)
    return np.sqrt(nearest)


@dataclass
class Blob:
    """One object candidate in one frame."""

    frame: int
    labels: np.ndarray  # that frame's component labels
    label: int
    area: int
    box: tuple[int, int, int, int]  # x, y, width, height
    colour: str
    hue: float


def _blobs(frame: int, distance: np.ndarray, hsv: np.ndarray, min_area: int) -> list[Blob]:
    """Saturated one-hued components of one frame's foreground."""
    mask = (distance > FOREGROUND_DISTANCE).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return []
    # Per-component sums in one pass; pixels far from the background (the object's core) weigh most.
    inside = labels > 0
    flat = labels[inside]
    saturation = hsv[..., 1][inside] / 255.0
    angle = np.deg2rad(hsv[..., 0][inside] * 2.0)  # OpenCV keeps hue in 0..180
    weight = distance[inside] ** 2 * saturation
    total = np.bincount(flat, weight, count) + 1e-9
    cos = np.bincount(flat, weight * np.cos(angle), count) / total
    sin = np.bincount(flat, weight * np.sin(angle), count) / total
    saturation = np.bincount(flat, weight * saturation, count) / total
    blobs = []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if area < min_area or saturation[label] < MIN_SATURATION:
            continue
        if math.hypot(cos[label], sin[label]) < MIN_HUE_CONCENTRATION:
            continue
        hue = math.degrees(math.atan2(sin[label], cos[label])) % 360.0
        blobs.append(Blob(frame, labels, label, int(area), (x, y, w, h), nearest_colour(hue), hue))
    return blobs


def _tracks(frames: np.ndarray) -> tuple[dict[str, list[Blob | None]], np.ndarray]:
    """For each colour seen, its largest blob in each frame (or None); and the distance-from-background map."""
    count, height, width, _ = frames.shape
    distance = background_distance(frames, background_palette(frames))
    hsv = cv2.cvtColor(np.ascontiguousarray(frames.reshape(count * height, width, 3)), cv2.COLOR_RGB2HSV)
    hsv = hsv.reshape(count, height, width, 3)
    min_area = max(4, round(MIN_AREA * height * width))
    tracks: dict[str, list[Blob | None]] = {}
    for t in range(count):
        for blob in _blobs(t, distance[t], hsv[t], min_area):
            track = tracks.setdefault(blob.colour, [None] * count)
            if track[t] is None or blob.area > track[t].area:
                track[t] = blob
    return tracks, distance


@dataclass
class Outline:
    """One frame of a tracked object, measured."""

    centre: tuple[float, float]  # pixels
    area: float  # pixels, from the soft coverage
    fill: float  # of the minimum enclosing circle
    solidity: float
    profile: np.ndarray  # radial extent by angle, divided by its mean

    @property
    def harmonics(self) -> np.ndarray:
        """Amplitudes of the profile's angular harmonics 0..6: a star's outline repeats 5 times a turn."""
        return np.abs(np.fft.rfft(self.profile)[:7]) * 2.0 / len(self.profile)


def _pixels(blob: Blob, image: np.ndarray) -> np.ndarray:
    x, y, w, h = blob.box
    return image[y : y + h, x : x + w][blob.labels[y : y + h, x : x + w] == blob.label]


def _outline(blob: Blob, distance: np.ndarray, contrast: float) -> Outline | None:
    x, y, w, h = blob.box
    pad = 3
    height, width = distance.shape
    x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + w + pad, width), min(y + h + pad, height)
    own = (blob.labels[y0:y1, x0:x1] == blob.label).astype(np.uint8)
    own = cv2.dilate(own, np.ones((5, 5), np.uint8))  # take back the edge pixels the opening removed
    soft = (np.clip(distance[y0:y1, x0:x1] / contrast, 0.0, 1.0) * own).astype(np.float32)
    moments = cv2.moments(soft)
    if moments["m00"] <= 0:
        return None
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    fine = cv2.resize(soft, None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_LINEAR)
    contours, _ = cv2.findContours((fine > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(contour)
    hull = cv2.contourArea(cv2.convexHull(contour))
    _, radius = cv2.minEnclosingCircle(contour)
    if area <= 0 or hull <= 0 or radius <= 0:
        return None
    centre = ((cx + 0.5) * UPSAMPLE - 0.5, (cy + 0.5) * UPSAMPLE - 0.5)  # where cv2.resize puts it
    polar = cv2.warpPolar(
        fine,
        (PROFILE_RADII, PROFILE_ANGLES),
        centre,
        1.2 * radius,
        cv2.INTER_LINEAR + cv2.WARP_POLAR_LINEAR + cv2.WARP_FILL_OUTLIERS,
    )
    profile = polar.sum(axis=1)
    return Outline(
        centre=(x0 + cx, y0 + cy),
        area=float(moments["m00"]),
        fill=area / (math.pi * radius * radius),
        solidity=area / hull,
        profile=profile / max(profile.mean(), 1e-9),
    )


def classify_shape(fill: float, solidity: float, harmonics: np.ndarray) -> str:
    """Name a shape from its outline: how many lobes its radial profile has (3 a triangle, 4 a square or a
    cross, 5 a star, none a circle), the cross told from the square by its notches; otherwise the shape
    whose ideal (fill, solidity) is nearest."""
    lobes = 2 + int(np.argmax(harmonics[2:7]))
    if harmonics[lobes] < ROUND_RELIEF and fill > ROUND_FILL:
        return "circle"
    if harmonics[lobes] >= ROUND_RELIEF and lobes in LOBES:
        return LOBES[lobes] if lobes != 4 else ("cross" if solidity < CROSS_SOLIDITY else "square")
    return min(SHAPE_PROTOTYPES, key=lambda s: math.dist((fill, solidity), SHAPE_PROTOTYPES[s]))


def _turn(before: np.ndarray, after: np.ndarray) -> float | None:
    """Degrees (counterclockwise on screen) that `after` is turned from `before`, by circular cross-correlation."""
    if min(before.std(), after.std()) < MIN_PROFILE_RELIEF:
        return None
    a, b = before - before.mean(), after - after.mean()
    correlation = np.fft.irfft(np.conj(np.fft.rfft(a)) * np.fft.rfft(b), n=PROFILE_ANGLES)
    step = 360.0 / PROFILE_ANGLES
    lags = (np.arange(PROFILE_ANGLES) + PROFILE_ANGLES // 2) % PROFILE_ANGLES - PROFILE_ANGLES // 2
    allowed = np.abs(lags) * step <= ROTATION_SEARCH
    best = int(np.argmax(np.where(allowed, correlation, -np.inf)))
    left, centre, right = correlation[best - 1], correlation[best], correlation[(best + 1) % PROFILE_ANGLES]
    curvature = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    # warpPolar's angle runs clockwise on screen (y points down), so a counterclockwise turn lowers it.
    return -(lags[best] + offset) * step


def _slope(times: np.ndarray, values: np.ndarray) -> float:
    return float(np.polyfit(times, values, 1)[0]) if len(times) > 1 else 0.0


def classify_motion(displacement: tuple[float, float], log_area: float, rotation: float) -> str:
    """The single motion that explains the measurements best, or still when none passes its threshold."""
    dx, dy = displacement
    scores = {
        "move": math.hypot(dx, dy) / MOVE_THRESHOLD,
        "scale": abs(log_area) / SCALE_THRESHOLD,
        "rotate": abs(rotation) / ROTATION_THRESHOLD,
    }
    kind = max(scores, key=scores.get)
    if scores[kind] < 1.0:
        return "still"
    if kind == "move":
        return ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    if kind == "scale":
        return "grow" if log_area > 0 else "shrink"
    return "rotate"


def _measure(track: list[Blob | None], distance: np.ndarray) -> dict:
    count, height, width = distance.shape
    present = [blob for blob in track if blob is not None]
    contrast = float(np.median([np.percentile(_pixels(b, distance[b.frame]), 90) for b in present]))
    outlines = {b.frame: o for b in present if (o := _outline(b, distance[b.frame], contrast)) is not None}
    frames = np.array(sorted(outlines))
    times = frames / max(count - 1, 1)
    measured = [outlines[t] for t in frames]
    if not measured:
        return {"shape": None, "motion": None, "frames_measured": 0}
    areas = np.array([o.area for o in measured])
    largest = [o for o in measured if o.area >= np.median(areas)]
    fill = float(np.mean([o.fill for o in largest]))
    solidity = float(np.mean([o.solidity for o in largest]))
    harmonics = np.mean([o.harmonics for o in largest], axis=0)
    displacement = (
        _slope(times, np.array([o.centre[0] for o in measured]) / width),
        _slope(times, np.array([o.centre[1] for o in measured]) / height),
    )
    log_area = _slope(times, np.log(areas))
    turns = [_turn(a.profile, b.profile) for a, b in itertools.pairwise(measured)]
    rotation = float(sum(turn for turn in turns if turn is not None))
    return {
        "shape": classify_shape(fill, solidity, harmonics),
        "motion": classify_motion(displacement, log_area, rotation),
        "fill": fill,
        "solidity": solidity,
        "harmonics": [round(float(a), 4) for a in harmonics],
        "displacement": displacement,
        "log_area_change": log_area,
        "rotation_degrees": rotation,
        "frames_measured": len(measured),
    }


def _target_colour(target: dict) -> str | None:
    return target.get("colour", target.get("color"))


def evaluate_video(frames: np.ndarray, target: dict) -> dict:
    """Whether a video (uint8 T×H×W×3 RGB) shows the target's colour, shape and motion, with the measurements."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"evaluate_video expects uint8 frames T×H×W×3 (RGB), got {frames.dtype} {frames.shape}."
        )
    if frames.shape[0] < 2:
        raise ValueError(f"evaluate_video needs at least 2 frames to see motion, got {frames.shape[0]}.")
    tracks, distance = _tracks(frames)
    count = frames.shape[0]
    presence = {colour: sum(b is not None for b in track) / count for colour, track in tracks.items()}
    objects = [colour for colour in tracks if presence[colour] >= MIN_PRESENCE]
    details: dict = {"objects": {colour: round(presence[colour], 3) for colour in objects}}
    if not objects:
        return {
            "colour_ok": False,
            "shape_ok": False,
            "motion_ok": False,
            "details": {**details, "found": False},
        }
    wanted = _target_colour(target)

    def size(colour: str) -> int:
        return sum(b.area for b in tracks[colour] if b is not None)

    colour = wanted if wanted in objects else max(objects, key=size)
    hues = np.deg2rad([b.hue for b in tracks[colour] if b is not None])
    hue = math.degrees(math.atan2(np.sin(hues).mean(), np.cos(hues).mean())) % 360.0
    details.update(found=True, colour=colour, hue=round(hue, 1), **_measure(tracks[colour], distance))
    return {
        "colour_ok": colour == wanted,
        "shape_ok": details["shape"] == target.get("shape"),
        "motion_ok": details["motion"] == target.get("motion"),
        "details": details,
    }


def evaluate_many(videos, targets: Sequence[dict]) -> dict:
    """Per-attribute accuracy over videos and their targets, and every video's result."""
    results = [evaluate_video(video, target) for video, target in zip(videos, targets, strict=True)]
    count = max(len(results), 1)
    summary = {name: sum(r[f"{name}_ok"] for r in results) / count for name in ("colour", "shape", "motion")}
    summary["all"] = sum(r["colour_ok"] and r["shape_ok"] and r["motion_ok"] for r in results) / count
    return {"count": len(results), **summary, "results": results}


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of frames against reference frames (floats in 0..1; 100 when equal)."""
    mse = float(np.mean((np.asarray(frames, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change from each frame to the next (F-1 values for F frames)."""
    frames = np.asarray(frames, np.float64)
    return np.abs(np.diff(frames, axis=0)).mean(axis=tuple(range(1, frames.ndim)))


def seam_ratios(frames: np.ndarray, joins: Sequence[int], wrap: bool = False) -> list[float]:
    """At each join j (the step from frame j-1 to j), and from the last frame to the first with `wrap`:
    the change there over the median change between consecutive frames of the clip (1: no seam)."""
    frames = np.asarray(frames, np.float64)
    changes = frame_changes(np.concatenate([frames, frames[:1]]) if wrap else frames)
    median = max(float(np.median(changes)), 1e-6)
    steps = [changes[j - 1] for j in joins] + ([changes[-1]] if wrap else [])
    return [float(step / median) for step in steps]


def load_video(path: str | Path) -> np.ndarray:
    """uint8 RGB frames from a .npy array, a PNG sequence folder, or a video, GIF or WebP file, within the
    readers' memory limits (provenance/frames.py)."""
    from ..provenance.frames import MAX_VIDEO_PIXELS, VIDEO_PIXELS_ENV, pixel_limit, read_video

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.suffix != ".npy":
        return read_video(path)
    try:
        frames = np.load(path, mmap_mode="r")  # the header only, until the size is checked
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} could not be read as a .npy array ({error}).") from None
    limit = pixel_limit(VIDEO_PIXELS_ENV, MAX_VIDEO_PIXELS)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path} holds {frames.dtype} {frames.shape}; expected uint8 frames T×H×W×3.")
    if frames.size // 3 > limit:
        raise ValueError(
            f"{path} holds {frames.size // 3} pixels, more than {limit}: cut it, or set {VIDEO_PIXELS_ENV} "
            "to a larger number of pixels."
        )
    return np.array(frames)


def _ground_truth(count: int, frames: int, size: int, seed: int) -> tuple[list[np.ndarray], list[dict]]:
    from .world import heldout_prompts, render

    prompts = heldout_prompts(count, seed)
    return [render(p.scene, frames, size, size) for p in prompts], [p.target for p in prompts]


def round_trip(videos: Sequence[np.ndarray], folder: str | Path | None = None) -> list[np.ndarray]:
    """The videos encoded and decoded by Tiny World's VAE (the shipped one, or the one in `folder`): scored,
    they are the ceiling any DiT working in that VAE's latents can reach."""
    import torch

    from ..pipeline import TINY_WORLD_DIR, TINY_WORLD_FILES
    from ..vae.loader import load_vae
    from ..vae.video_vae import frames_to_video, video_to_frames

    path = Path(folder or TINY_WORLD_DIR) / TINY_WORLD_FILES["vae"]
    if not path.is_file():
        raise FileNotFoundError(f"No Tiny World VAE at {path}: give the --out folder of a training run.")
    vae = load_vae(path, device="cpu")
    decoded = []
    for video in videos:
        with torch.no_grad():
            frames = video_to_frames(vae.decode(vae.encode(frames_to_video(torch.from_numpy(video) / 255.0))))
        decoded.append(frames.mul(255).round().byte().numpy())
    return decoded


PROMPT_SETS = ("heldout", "plain")  # world.heldout_prompts (the training captions' forms), plain_prompts


def generate_heldout(
    count: int, seed: int = 0, folder: str | Path | None = None, prompt_set: str = "heldout"
) -> tuple[list[np.ndarray], list[dict], list[str]]:
    """Tiny World's videos for `count` held-out prompts (combinations it never saw in training), one seed
    each, at its default settings; `folder` holds other Tiny World weights (a training run's --out).
    `prompt_set`: "heldout" in the training captions' forms, "plain" in the forms people type (every other
    one without a background)."""
    from dataclasses import replace

    import torch

    from ..pipeline import TINY_WORLD_SETTINGS, load_tiny_world, text_to_video
    from .world import heldout_prompts, plain_prompts

    # fp32 on every machine, so that scores compare across machines (auto would be bf16 on some CPUs)
    dit, text_encoder, vae = load_tiny_world(folder=folder, dtype=torch.float32)
    videos, targets, texts = [], [], []
    prompts = (plain_prompts if prompt_set == "plain" else heldout_prompts)(count, seed)
    for index, prompt in enumerate(prompts):
        settings = replace(TINY_WORLD_SETTINGS, seed=seed + index)
        frames = text_to_video(dit, text_encoder, vae, prompt.text, "", settings, progress=lambda *_: None)
        videos.append(frames.mul(255).round().byte().numpy())
        targets.append(prompt.target)
        texts.append(prompt.text)
    return videos, targets, texts


def _manifest(path: Path) -> list[dict]:
    """The entries of a --manifest file, each checked: a "video" and a "prompt" or a "target"."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--manifest {path} could not be read as JSON ({error}).") from None
    example = '[{"video": "a.mp4", "prompt": "a red circle moving left"}]'
    if not isinstance(entries, list):
        raise ValueError(
            f"--manifest {path} holds a {type(entries).__name__}; expected a list like {example}."
        )
    for number, entry in enumerate(entries, start=1):
        if not (isinstance(entry, dict) and isinstance(entry.get("video"), str)
                and (isinstance(entry.get("prompt"), str) or isinstance(entry.get("target"), dict))):  # fmt: skip
            raise ValueError(
                f'--manifest {path}, entry {number}: {str(entry)[:120]} lacks a "video" path and a "prompt" '
                f'(or "target"); each entry is like {example[1:-1]}.'
            )
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """Score videos against prompts (one --prompt per video, or a JSON manifest) and print a JSON summary."""
    parser = argparse.ArgumentParser(prog="evaluate", description=main.__doc__)
    parser.add_argument("videos", nargs="*", help="video files, .npy arrays (T×H×W×3 uint8) or image folders")
    parser.add_argument("--prompt", action="append", default=[], help="the prompt of each video, in order")
    parser.add_argument(
        "--manifest", help='JSON list of {"video": path, "prompt": text} (or "target": {...})'
    )
    parser.add_argument(
        "--ground-truth",
        type=int,
        metavar="N",
        help="score N rendered held-out prompts (checks the evaluator)",
    )
    parser.add_argument(
        "--tiny-world",
        type=int,
        metavar="N",
        help="generate N held-out prompts with Tiny World and score them (the model's evaluation)",
    )
    parser.add_argument(
        "--prompt-set",
        choices=PROMPT_SETS,
        default="heldout",
        help="with --tiny-world: heldout (the training captions' forms, the default) or plain (the forms "
        "people type, every other prompt without a background; scored in both halves too)",
    )
    parser.add_argument(
        "--weights",
        metavar="DIR",
        help="Tiny World files to use instead of the shipped ones (a training run's --out folder)",
    )
    parser.add_argument(
        "--round-trip",
        action="store_true",
        help="with --ground-truth: score the clips after the VAE's encode and decode, the ceiling of any DiT",
    )
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print every video's measurements too")
    args = parser.parse_args(argv)

    for option, count in (("--tiny-world", args.tiny_world), ("--ground-truth", args.ground_truth)):
        if count is not None and count < 1:
            parser.error(f"{option} {count}: give how many prompts to score, at least 1 (e.g. {option} 64).")
    if args.round_trip and not args.ground_truth:
        parser.error("--round-trip scores rendered clips: give --ground-truth N with it.")
    halves = {}
    if args.tiny_world:
        videos, targets, _ = generate_heldout(args.tiny_world, args.seed, args.weights, args.prompt_set)
        if args.prompt_set == "plain":  # plain_prompts alternates: without a background, then with one
            halves = {"without_background": slice(0, None, 2), "with_background": slice(1, None, 2)}
    elif args.ground_truth:
        videos, targets = _ground_truth(args.ground_truth, args.frames, args.size, args.seed)
        if args.round_trip:
            videos = round_trip(videos, args.weights)
    else:
        if len(args.videos) != len(args.prompt):
            parser.error(
                f"got {len(args.videos)} videos but {len(args.prompt)} --prompt: give one prompt per video."
            )
        entries = [{"video": v, "prompt": p} for v, p in zip(args.videos, args.prompt, strict=True)]
        if args.manifest:
            entries += _manifest(Path(args.manifest))
        if not entries:
            parser.error("nothing to score: give videos with --prompt, a --manifest, or --ground-truth N.")
        videos = [load_video(e["video"]) for e in entries]
        targets = [e.get("target") or parse_caption(e["prompt"])[0] for e in entries]
    scores = evaluate_many(videos, targets)
    for name, part in halves.items():
        scores[name] = evaluate_many(videos[part], targets[part])
        scores[name].pop("results")
    if not args.verbose:
        scores.pop("results")
    json.dump(scores, sys.stdout, indent=2, default=float)
    print()
    return 0
