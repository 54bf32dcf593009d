"""Step caching on Tiny World: DiT calls, wall time, PSNR against the uncached video and the evaluator's
scores, over held-out prompts, for a sweep of thresholds (the same seeds for every threshold).

    python benchmarks/step_cache.py [--prompts 24] [--thresholds 0.05 0.1 0.2 0.3]

Threshold 0 is the uncached run every other row is compared with (PSNR is 100 dB for a video unchanged).
The README's first command's settings (17 frames at 128x128, 20 steps, cfg 5), after one warm-up video.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from spacetime.pipeline import TINY_WORLD_SETTINGS, load_tiny_world, text_to_video
from spacetime.training.evaluate import evaluate_many, psnr
from spacetime.training.world import heldout_prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    args = parser.parse_args()
    dit, text_encoder, vae = load_tiny_world(dtype=torch.float32)  # the precision of the documented sweep
    calls = []
    forward = dit.forward_tokens

    def counted(*a, **k):
        calls.append(1)
        return forward(*a, **k)

    dit.forward_tokens = counted
    prompts = heldout_prompts(args.prompts, 0)
    text_to_video(dit, text_encoder, vae, "warm-up", "", TINY_WORLD_SETTINGS, progress=lambda *_: None)
    rows, reference = [], None
    for threshold in [0.0, *args.thresholds]:
        videos, seconds = [], 0.0
        calls.clear()
        for index, prompt in enumerate(prompts):
            settings = replace(TINY_WORLD_SETTINGS, seed=index, cache=threshold)
            start = time.perf_counter()
            frames = text_to_video(
                dit, text_encoder, vae, prompt.text, "", settings, progress=lambda *_: None
            )
            seconds += time.perf_counter() - start
            videos.append(frames.mul(255).round().byte().numpy())
        scores = evaluate_many(videos, [p.target for p in prompts])
        reference = reference or videos
        quality = np.mean([psnr(v / 255, r / 255) for v, r in zip(videos, reference, strict=True)])
        rows.append((threshold, len(calls) / len(prompts), seconds / len(prompts), quality, scores))
        print(f"threshold {threshold}: done", file=sys.stderr)
    base_calls = rows[0][1]
    print(f"{len(prompts)} held-out prompts, Tiny World at {TINY_WORLD_SETTINGS.steps} steps, cfg 5")
    print(
        "| threshold | DiT calls / video | fewer calls | s / video | mean PSNR vs uncached | colour | shape | motion |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for threshold, per_video, seconds, quality, scores in rows:
        shown = "–" if not threshold else f"{quality:.1f} dB"
        print(f"| {threshold or 'off'} | {per_video:.1f} | {base_calls / per_video:.2f}× | {seconds:.2f} | {shown} | "
              f"{scores['colour']:.0%} | {scores['shape']:.0%} | {scores['motion']:.0%} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
