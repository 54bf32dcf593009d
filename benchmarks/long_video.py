"""Long video with Tiny World: peak memory against length, seams at window joins, colour drift.

Each run is `python -m spacetime generate PROMPT --frames N` in a fresh process (windows of 17 frames
continuing from 8, decoded straight into the H.264 file), timed, with its peak resident memory (VmHWM,
Linux). Then the file is read back and measured:
- seams: the frame-to-frame change where each window's new frames begin, over the median change of the
  video, and the largest change over the join and the frames its jump is spread over; the same ratio at
  every latent frame boundary (where the VAE's groups of 4 frames meet) is printed beside it, since
  that is the VAE's own flicker, joins or not;
- drift: the largest distance of any 10-second stretch's mean colour from the first 10 seconds', in
  8-bit levels, with the colour-drift correction on (1) and off (0); "-" for a video of one stretch.

    python benchmarks/long_video.py [--steps 10] [--lengths 161 961] [--prompts P ...] [--seeds 0 ...]

With several prompts or seeds, each is run at each length with the correction on; the run with it off
is made for the first prompt and seed at the longest length only. The textured prompts the README
quotes: --lengths 161 --seeds 0 1 2 --prompts "a yellow star growing on a mottled grey background"
"a green square moving right on a checkered background" "a blue triangle moving up on a striped
background".
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.editing import DEFAULT_BLEND
from spacetime.editing.long_video import window_joins
from spacetime.training.evaluate import frame_changes, seam_ratios

from media import decode

PROMPT = "a red circle moving left on a blue background"
WINDOW, OVERLAP, STRIDE = 17, 8, 4


def generate(
    prompt: str, seed: int, frames: int, steps: int, correction: float, output: Path
) -> tuple[Path, float, float]:
    """-> (file, seconds, peak resident MiB) of one `generate` run in its own process."""
    return run_generate([
        prompt, "--frames", str(frames), "--steps", str(steps), "--window", str(WINDOW),
        "--window-overlap", str(OVERLAP), "--correction", str(correction), "--seed", str(seed),
    ], output)  # fmt: skip


def run_generate(arguments: list[str], output: Path) -> tuple[Path, float, float]:
    """-> (file, seconds, peak resident MiB) of `python -m spacetime generate ARGUMENTS` in its own process,
    writing into `output`."""
    # VmHWM: the peak resident memory of this process image (ru_maxrss would also count the parent's,
    # which a child inherits across fork and exec).
    script = (
        "import runpy, sys; sys.argv = ['spacetime', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('spacetime', run_name='__main__')\n"
        "finally:\n    print('PEAK', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
        " file=sys.stderr)\n"
    )
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-c", script, "generate", *arguments],
        capture_output=True, text=True, env={**os.environ, "SPACETIME_OUTPUT_DIR": str(output)},
    )  # fmt: skip
    seconds = time.time() - start
    peak = re.search(r"PEAK (\d+)", result.stderr)
    if result.returncode or peak is None:
        raise RuntimeError(f"generate failed:\n{result.stderr[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1]), seconds, int(peak.group(1)) / 1024


def measure(path: Path) -> dict:
    frames = decode(path).frames.astype(np.float64) / 255
    latent_frames = (len(frames) - 1) // STRIDE + 1
    window, overlap = (WINDOW - 1) // STRIDE + 1, OVERLAP // STRIDE
    at = [STRIDE * start - STRIDE + 1 for start in window_joins(latent_frames, window, overlap)]
    joins = seam_ratios(frames, at)
    groups = seam_ratios(frames, [STRIDE * start - STRIDE + 1 for start in range(1, latent_frames)])
    changes = frame_changes(frames)  # the join's jump is spread over the DEFAULT_BLEND frames after it
    median = max(float(np.median(changes)), 1e-6)
    near = [changes[j - 1 : j + DEFAULT_BLEND].max() / median for j in at]
    stretch = 160  # 10 s at 16 fps
    means = [
        frames[i : i + stretch].mean(axis=(0, 1, 2)) for i in range(0, len(frames) - stretch + 1, stretch)
    ]
    drift = max(float(np.abs(m - means[0]).max()) * 255 for m in means) if len(means) > 1 else None
    return {"frames": len(frames), "joins": joins, "near": near, "groups": groups, "drift": drift}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lengths", type=int, nargs="+", default=[161, 961])
    parser.add_argument("--prompts", nargs="+", default=[PROMPT])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    rows = []
    runs = [
        (prompt, seed, frames, correction)
        for prompt, seed, frames in itertools.product(args.prompts, args.seeds, args.lengths)
        for correction in (1.0, 0.0)
        if correction == 1.0 or (prompt, seed, frames) == (args.prompts[0], args.seeds[0], max(args.lengths))
    ]
    with tempfile.TemporaryDirectory() as folder:
        for prompt, seed, frames, correction in runs:
            path, seconds, peak = generate(prompt, seed, frames, args.steps, correction, Path(folder))
            rows.append((prompt, seed, frames, correction, seconds, peak, measure(path)))
            print(f"{prompt!r} seed {seed}, {frames} frames, correction {correction}: {seconds:.0f} s",
                  file=sys.stderr)  # fmt: skip
    base = next(peak for _, _, frames, _, _, peak, _ in rows if frames == min(args.lengths))
    print(
        f"\nTiny World, 128x128, {args.steps} steps, windows of {WINDOW} frames continuing from {OVERLAP}\n"
    )
    print("| prompt | seed | frames | correction | time | peak memory | vs shortest | window joins: median / max seam ratio "
          "(<= 1.5) | largest step within blend frames of a join: median / max | all latent boundaries: "
          "median / max | drift (8-bit levels) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for prompt, seed, _, correction, seconds, peak, m in rows:
        joins, groups = m["joins"], m["groups"]
        join_text = (
            f"{np.median(joins):.2f} / {max(joins):.2f} ({sum(r <= 1.5 for r in joins)}/{len(joins)})"
            if joins
            else "-"
        )
        near_text = f"{np.median(m['near']):.2f} / {max(m['near']):.2f}" if m["near"] else "-"
        drift_text = "-" if m["drift"] is None else f"{m['drift']:.1f}"
        print(
            f"| {prompt} | {seed} | {m['frames']} ({m['frames'] / 16:.0f} s) | {correction:g} | {seconds:.0f} s | "
            f"{peak:.0f} MiB | "
            f"{peak / base:.2f}x | {join_text} | {near_text} | {np.median(groups):.2f} / {max(groups):.2f} | "
            f"{drift_text} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
