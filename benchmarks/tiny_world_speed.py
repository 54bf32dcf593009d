"""Tiny World's speed on this machine: what each fast path buys and what it costs, and the README's first
command end to end against an earlier revision. Prints Markdown tables.

    python benchmarks/tiny_world_speed.py variants [--prompts 24]
    python benchmarks/tiny_world_speed.py command --before f9b1a43 [--rounds 7]

`variants` makes the same held-out prompts (same seeds) with the DiT's matmuls and the VAE in fp32 or bf16,
with step caching off or at its recommended threshold, after one warm-up video each: seconds per video
(sampling and decoding), DiT calls, mean PSNR of the frames against the fp32 uncached video, and the
evaluator's colour / shape / motion.

`command` runs `python -m spacetime generate "a red circle moving left"` (the README's first command, as a
user runs it: a fresh process that imports, loads, samples, decodes and writes the MP4) from a checkout of
--before and from this working tree, alternating, --rounds times each; the median and the best wall time
of each are reported (the machine's noise only ever slows a run down).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
README_PROMPT = "a red circle moving left"


def variants(args) -> None:
    import numpy as np
    import torch

    from spacetime.pipeline import TINY_WORLD_SETTINGS, load_tiny_world, text_to_video
    from spacetime.samplers.step_cache import RECOMMENDED_THRESHOLD
    from spacetime.training.evaluate import evaluate_many, psnr
    from spacetime.training.world import heldout_prompts

    prompts = heldout_prompts(args.prompts, 0)
    chosen = [(torch.float32, 0.0), (torch.bfloat16, 0.0), (torch.float32, RECOMMENDED_THRESHOLD)]
    chosen.append((torch.bfloat16, RECOMMENDED_THRESHOLD))
    rows, reference = [], None
    for dtype, threshold in chosen:
        dit, text_encoder, vae = load_tiny_world(device="cpu", vae_device="cpu", dtype=dtype)
        calls = []
        forward = dit.forward_tokens

        def counted(*a, forward=forward, calls=calls, **k):
            calls.append(1)
            return forward(*a, **k)

        dit.forward_tokens = counted
        quiet = {"progress": lambda *_: None}
        text_to_video(dit, text_encoder, vae, "warm-up", "", TINY_WORLD_SETTINGS, **quiet)
        calls.clear()
        videos, seconds = [], 0.0
        for index, prompt in enumerate(prompts):
            settings = replace(TINY_WORLD_SETTINGS, seed=index, cache=threshold)
            start = time.perf_counter()
            frames = text_to_video(dit, text_encoder, vae, prompt.text, "", settings, **quiet)
            seconds += time.perf_counter() - start
            videos.append(frames.mul(255).round().byte().numpy())
        scores = evaluate_many(videos, [p.target for p in prompts])
        reference = reference or videos
        quality = np.mean([psnr(v / 255, r / 255) for v, r in zip(videos, reference, strict=True)])
        name = f"{str(dtype).removeprefix('torch.')}, cache {threshold or 'off'}"
        rows.append((name, seconds / len(prompts), len(calls) / len(prompts), quality, scores))
        print(f"{name}: done", file=sys.stderr)
    base = rows[0][1]
    print(f"{len(prompts)} held-out prompts, seeds 0..{len(prompts) - 1}, Tiny World's settings, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| DiT matmuls and VAE, step cache | s / video | speed-up | DiT calls / video | PSNR vs fp32 uncached "
          "| colour | shape | motion |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds, calls, quality, scores in rows:
        shown = "–" if quality > 99 else f"{quality:.1f} dB"
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}× | {calls:.1f} | {shown} | {scores['colour']:.0%} "
              f"| {scores['shape']:.0%} | {scores['motion']:.0%} |")  # fmt: skip


def _checkout(revision: str, folder: Path) -> Path:
    """`revision` of this repository as an importable `spacetime` package under `folder`."""
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", str(tree), revision],
                   check=True, capture_output=True)  # fmt: skip
    packages = folder / "packages"
    packages.mkdir()
    (packages / "spacetime").symlink_to(tree)
    return packages


def _run(packages: Path | None, out: Path) -> float:
    """Wall seconds of the README's first command in a fresh process (`packages` first on the path)."""
    env = dict(os.environ, SPACETIME_OUTPUT_DIR=str(out))
    if packages is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(packages), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "spacetime", "generate", README_PROMPT], env=env, cwd=out,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"generate failed:\n{done.stderr[-2000:]}")
    return seconds


def command(args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        packages = _checkout(args.before, folder)
        try:
            times = {"before": [], "now": []}
            for _ in range(args.rounds):
                for name, path in (("before", packages), ("now", None)):
                    out = folder / f"out-{name}"
                    out.mkdir(exist_ok=True)
                    times[name].append(_run(path, out))
        finally:
            subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "remove", "--force", str(folder / "tree")],
                           check=False, capture_output=True)  # fmt: skip
    before, now = times["before"], times["now"]
    print(
        f'`python -m spacetime generate "{README_PROMPT}"`, {args.rounds} alternating rounds, {os.cpu_count()} CPUs'
    )
    print("| code | median s | best s |")
    print("|---|---|---|")
    print(f"| {args.before} (before) | {statistics.median(before):.2f} | {min(before):.2f} |")
    print(f"| working tree (now) | {statistics.median(now):.2f} | {min(now):.2f} |")
    print(
        f"| speed-up | {statistics.median(before) / statistics.median(now):.2f}× | {min(before) / min(now):.2f}× |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("variants")
    one.add_argument("--prompts", type=int, default=24)
    two = sub.add_parser("command")
    two.add_argument("--before", required=True, help="a revision of this repository (commit, tag, branch)")
    two.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    (variants if args.what == "variants" else command)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
