"""The invisible watermark against real video handling: detection rate on marked clips after H.264 at
crf 28, halving the size, a 10% crop, a mirror, a quarter turn and GIF conversion; false positives on
unmarked clips, as they are and after the same handling; and the PSNR of marked against unmarked frames.

Clips are 2 seconds (32 frames at 16 fps), seeded, of five kinds:
- world: Tiny World scenes at 128x128 (moving shapes over stripes, checks, noise and gradients, pans);
- texture: multi-octave sine textures at 256x256, still or drifting;
- gradient: gradients with a moving soft blob;
- noise: film grain over a gradient, new every frame;
- field: smooth random fields (cloud-like), panning.
Each handled copy goes through the pack's own writers (H.264 via PyAV, GIF via Pillow); resizing is
antialiased bilinear, the crop removes 10% of each side's length at a random offset, the mirror is left
to right, the quarter turn clockwise, and all four are written as H.264 at the pack's default crf 19.
Clips are marked with a key of the benchmark's own (not the installation's, whose folder it leaves alone).

    python benchmarks/watermark.py [--marked 200] [--unmarked 1000] [--seed 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as shift_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.provenance.frames import read_frames
from spacetime.provenance.watermark import THRESHOLD, detect, embed
from spacetime.training.world import render, sample_scene
from spacetime.video import Encoding, Provenance, combine_video

from media import psnr, to_uint8

FRAMES, SIDE = 32, 256
KINDS = ("world", "texture", "gradient", "noise", "field")
KEY = hashlib.sha256(b"watermark benchmark").digest()


def make_clip(kind: str, rng: np.random.Generator) -> torch.Tensor:
    if kind == "world":
        return torch.from_numpy(render(sample_scene(rng), FRAMES, 128, 128)).float() / 255
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    t = np.arange(FRAMES)[:, None, None] / FRAMES
    speed = rng.choice([0.0, 0.05, 0.2])  # frame widths travelled over the clip
    vy, vx = rng.normal(0, 1, 2) / math.sqrt(2) * speed
    if kind == "texture":
        luma = 0.5 + sum(
            0.15 / octave * np.sin(2 * np.pi * octave * (rng.uniform(1, 4) * (x + vx * t) + rng.uniform(1, 4) * (y + vy * t)) + rng.uniform(0, 6))
            for octave in (1, 2, 4, 8)
        )  # fmt: skip
    elif kind == "gradient":
        cy, cx = rng.uniform(0.2, 0.8, 2)
        base = rng.uniform(0.2, 0.8) + 0.4 * (rng.uniform(-1, 1) * (y - 0.5) + rng.uniform(-1, 1) * (x - 0.5))
        blob = np.exp(-((y - cy - 3 * vy * t) ** 2 + (x - cx - 3 * vx * t) ** 2) / rng.uniform(0.005, 0.03))
        luma = base + rng.uniform(-0.4, 0.4) * blob
    elif kind == "noise":
        grain = rng.uniform(0.01, 0.06)
        luma = rng.uniform(0.3, 0.7) + 0.3 * (x - 0.5) + rng.normal(0, grain, (FRAMES, SIDE, SIDE))
    else:  # field
        field = gaussian_filter(rng.normal(0, 1, (SIDE, SIDE)), rng.uniform(4, 16), mode="wrap")
        field = 0.5 + 0.2 * field / field.std()
        luma = np.stack([shift_image(field, (vy * i * SIDE / FRAMES, vx * i * SIDE / FRAMES), order=1, mode="wrap") for i in range(FRAMES)])  # fmt: skip
    tint = rng.uniform(0.75, 1.15, 3)
    return torch.from_numpy(np.clip(np.asarray(luma)[..., None] * tint, 0, 1).astype(np.float32))


def handled(frames: torch.Tensor, how: str, folder: Path, rng: np.random.Generator) -> torch.Tensor:
    if how == "as is":
        return frames
    if how == "h264 crf 28":
        return read_frames(
            combine_video(
                frames,
                16.0,
                folder,
                "b",
                "video/h264-mp4",
                encoding=Encoding(crf=28),
                provenance=Provenance(watermark=False),
            ).path
        )
    if how == "half size":
        small = F.interpolate(frames.permute(0, 3, 1, 2), scale_factor=0.5, mode="bilinear", antialias=True)
        return read_frames(
            combine_video(
                small.permute(0, 2, 3, 1), 16.0, folder, "b", provenance=Provenance(watermark=False)
            ).path
        )
    if how == "10% crop":
        _, height, width, _ = frames.shape
        h, w = round(height * 0.9), round(width * 0.9)
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        cropped = frames[:, top : top + h, left : left + w]
        return read_frames(
            combine_video(cropped, 16.0, folder, "b", provenance=Provenance(watermark=False)).path
        )
    if how in ("mirror", "quarter turn"):
        turned = frames.flip(2) if how == "mirror" else torch.rot90(frames, -1, (1, 2))
        return read_frames(
            combine_video(turned, 16.0, folder, "b", provenance=Provenance(watermark=False)).path
        )
    if how == "gif":
        return read_frames(
            combine_video(frames, 16.0, folder, "b", "image/gif", provenance=Provenance(watermark=False)).path
        )
    raise ValueError(how)


HANDLING = ("as is", "h264 crf 28", "half size", "10% crop", "mirror", "quarter turn", "gif")


def score_clip(job: tuple[int, int, bool]) -> tuple[bool, str, dict[str, float], float | None]:
    """One clip, made from its own seed (so any number of workers gives the same clips), marked or not,
    scored after each handling."""
    seed, index, marked = job
    rng = np.random.default_rng((seed, index))
    kind = KINDS[index % len(KINDS)]
    clip = make_clip(kind, rng)
    clip_psnr = None
    if marked:
        marked_clip = embed(clip, KEY)
        clip_psnr = psnr(to_uint8(clip), to_uint8(marked_clip))
        clip = marked_clip
    scores = {}
    with tempfile.TemporaryDirectory() as scratch:
        for how in HANDLING:
            scores[how] = detect(handled(clip, how, Path(scratch), rng), KEY).score
            for leftover in Path(scratch).iterdir():
                leftover.unlink()
    return marked, kind, scores, clip_psnr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--marked", type=int, default=200)
    parser.add_argument("--unmarked", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--workers", type=int, default=1, help="clips scored in parallel processes")
    parser.add_argument("--seed", type=int, default=1, help="each clip is made from (seed, its index)")
    parser.add_argument("--scores", type=Path, help="write every clip's scores here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    jobs = [(args.seed, index, index < args.marked) for index in range(args.marked + args.unmarked)]
    found = defaultdict(list)  # (marked, handling, kind) -> [score]
    quality = defaultdict(list)  # kind -> [PSNR]
    with multiprocessing.get_context("spawn").Pool(
        args.workers, initializer=torch.set_num_threads, initargs=(args.threads,)
    ) as pool:
        for done, (marked, kind, scores, clip_psnr) in enumerate(pool.imap(score_clip, jobs, chunksize=4), 1):
            for how, score in scores.items():
                found[marked, how, kind].append(score)
            if clip_psnr is not None:
                quality[kind].append(clip_psnr)
            if done % 100 == 0:
                print(f"  {done} clips ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)

    if args.scores:
        args.scores.write_text(json.dumps({f"{m}|{h}|{k}": v for (m, h, k), v in found.items()}))
    print(f"\nthreshold {THRESHOLD}; {args.marked} marked and {args.unmarked} unmarked 2 s clips\n")
    print(
        "| handling | detected (marked) | lowest marked score | false positives (unmarked) | highest unmarked score |"
    )
    print("|---|---|---|---|---|")
    for how in HANDLING:
        hits = [s for kind in KINDS for s in found[True, how, kind]]
        nulls = [s for kind in KINDS for s in found[False, how, kind]]
        detected = sum(s >= THRESHOLD for s in hits)
        false = sum(s >= THRESHOLD for s in nulls)
        print(
            f"| {how} | {detected}/{len(hits)} ({100 * detected / max(1, len(hits)):.1f}%) | {min(hits, default=math.nan):.1f} "
            f"| {false}/{len(nulls)} ({100 * false / max(1, len(nulls)):.2f}%) | {max(nulls, default=math.nan):.1f} |"
        )
    print("\nDetection by kind of content (marked clips):\n")
    print("| kind | " + " | ".join(HANDLING) + " | PSNR min / mean (dB) |")
    print("|---|" + "---|" * (len(HANDLING) + 1))
    for kind in KINDS:
        cells = []
        for how in HANDLING:
            scores = found[True, how, kind]
            cells.append(f"{sum(s >= THRESHOLD for s in scores)}/{len(scores)}")
        psnrs = quality[kind]
        cells.append(f"{min(psnrs, default=math.nan):.1f} / {np.mean(psnrs) if psnrs else math.nan:.1f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
