"""The editing suite with Tiny World: known frames come back, joins show no seam, video to video moves
further from its source as strength grows.

Sources are Tiny World scenes rendered at 128x128 (the world the model was trained on), 33 frames each,
captioned as in training, or (--sources generated) Tiny World's own videos of those captions. For each
clip:
- image to video: its first frame, 17 frames; and again with the image held (opening "held");
- extend forward: its first 17 frames, 12 more, overlap 5;
- extend backward: its last 17 frames, 12 before, overlap 4 (backward overlaps are multiples of 4);
- connect: frames 0-12 and 21-32, a bridge of 8, overlap 5;
- loop: its first 17 frames, a bridge of 8 back to the start, overlap 5;
- video to video: its first 17 frames under another clip's caption at strength 0.2 ... 1.
Reported: PSNR of the known frames in the result against the source (exact by construction: the
assembly puts them back) and of their decoded copies (what the VAE round trip alone gives), and the seam
ratio at every join between known and new frames (and a loop's wrap-around): the frame-to-frame change
there over the median change within the result (target <= 1.5), with both in 8-bit levels, since a
still scene has a median change near 0 and a ratio against it means little.

    python benchmarks/editing.py [--clips 6] [--steps 20] [--seed 0] [--sources world|generated] [--weights DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from spacetime import editing as edits
from spacetime.pipeline import (
    TINY_WORLD_SETTINGS,
    edit_video,
    load_tiny_world,
    long_video,
    prompt_guider,
    settings_sampling,
)
from spacetime.samplers.schedules import schedule_by_name
from spacetime.training.evaluate import frame_changes, psnr, seam_ratios
from spacetime.training.world import caption, render, sample_scene
from spacetime.vae import video_to_frames

SIZE, SOURCE_FRAMES = 128, 33


def quiet(_description, _total):
    return lambda: None


def run_edit(models, prompt, edit, settings, sigmas=None):
    dit, text_encoder, vae = models
    guider = prompt_guider(dit, text_encoder, prompt, "", settings)
    sampling = settings_sampling(settings, sigmas)
    decoded = edit_video(
        guider, sampling, vae, edit.latent, edit.noise_mask, quiet, (settings.tile, settings.overlap)
    )
    result, new = edits.assemble(edit.plan, decoded)
    return decoded, result, new


def kept_known(plan: edits.ClipPlan) -> list[bool]:
    """Which of the frames the result keeps of the generated clip were given."""
    return plan.known[plan.kept].tolist()


def joins(plan: edits.ClipPlan) -> list[int]:
    """Indices j of the result where frame j-1 -> j crosses between known and new frames."""
    offset = 0 if plan.before is None else len(plan.before)
    known = kept_known(plan)
    return [offset + i + 1 for i in range(len(known) - 1) if known[i] != known[i + 1]]


def measure(name, plan, decoded, result, sources, loop=False):
    """PSNR of known frames (result and decoded copy) and seam ratios at the joins."""
    offset = 0 if plan.before is None else len(plan.before)
    positions = [offset + i for i in np.flatnonzero(kept_known(plan))]
    positions = [p for p in positions if p < len(result)]
    kept = result[positions]
    decoded_known = decoded[np.flatnonzero(plan.known.numpy())][: len(positions)]
    ratios = seam_ratios(result.numpy(), joins(plan), wrap=loop)
    changes = frame_changes(np.concatenate([result.numpy(), result[:1].numpy()]) if loop else result.numpy())
    # the largest step within `blend` frames of each join, where the join's jump is spread
    ends = [j - 1 for j in joins(plan)] + ([len(changes) - 1] if loop else [])
    around = [
        max(changes[k % len(changes)] for k in range(e - edits.DEFAULT_BLEND, e + edits.DEFAULT_BLEND + 1))
        / max(float(np.median(changes)), 1e-6)
        for e in ends
    ]
    steps = [changes[j - 1] * 255 for j in joins(plan)] + ([changes[-1] * 255] if loop else [])
    return {
        "steps": steps,
        "median_step": float(np.median(changes)) * 255,
        "op": name,
        "psnr": psnr(kept.numpy(), sources[: len(positions)].numpy()),
        "vae_psnr": psnr(decoded_known.numpy(), sources[: len(positions)].numpy()),
        "seam": max(ratios),
        "seams": ratios,
        "around": around,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sources", choices=("world", "generated"), default="world",
        help="world: rendered scenes (clean frames); generated: Tiny World's own videos of the same captions "
        "(33 frames, windows of 17), as the Tiny World workflows edit them",
    )  # fmt: skip
    parser.add_argument(
        "--weights", type=Path, help="a folder with all three Tiny World files (default: the shipped weights)"
    )
    args = parser.parse_args(argv)
    models = load_tiny_world(device="cpu", vae_device="cpu", folder=args.weights)
    vae = models[2]
    settings = replace(TINY_WORLD_SETTINGS, steps=args.steps)
    stride = vae.temporal_stride
    size = (vae.latent_channels, SIZE // vae.spatial_stride, SIZE // vae.spatial_stride)

    encode = edits.clip_encoder(vae, quiet)

    rows, distances, boundaries = [], {}, []
    start = time.time()
    for index in range(args.clips):
        rng = np.random.default_rng(args.seed * 1000 + index)
        scene = sample_scene(rng)
        prompt = caption(scene, rng)
        s = replace(settings, seed=index)
        if args.sources == "world":
            clip = torch.from_numpy(render(scene, SOURCE_FRAMES, SIZE, SIZE)).float() / 255
        else:
            made = long_video(
                *models, prompt, "", replace(s, frames=SOURCE_FRAMES, seed=100 + index), progress=quiet
            )
            clip = torch.cat(list(made.chunks))
        first = clip[:17]
        round_trip = video_to_frames(vae.decode(encode([clip])[0]))
        boundaries.extend(seam_ratios(round_trip.numpy(), list(range(1, SOURCE_FRAMES, stride))))

        e = edits.image_to_video(encode, stride, size, clip[:1], 17)
        decoded, result, _ = run_edit(models, prompt, e, s)
        rows.append(measure("image to video", e.plan, decoded, result, clip[:1]))
        e = edits.image_to_video(encode, stride, size, clip[:1], 17, opening="held")
        decoded, result, _ = run_edit(models, prompt, e, s)
        rows.append(measure("image to video, held", e.plan, decoded, result, clip[:1]))

        e = edits.extend(encode, stride, size, first, 12, 5)
        decoded, result, _ = run_edit(models, prompt, e, s)
        rows.append(measure("extend forward", e.plan, decoded, result, first[-5:]))

        last = clip[-17:]
        e = edits.extend(encode, stride, size, last, 12, 4, backward=True)
        decoded, result, _ = run_edit(models, prompt, e, s)
        rows.append(measure("extend backward", e.plan, decoded, result, last[:4]))

        a, b = clip[:13], clip[21:]
        e = edits.connect(encode, stride, size, a, b, 8, 5)
        decoded, result, _ = run_edit(models, prompt, e, s)
        rows.append(measure("connect", e.plan, decoded, result, torch.cat([a[-5:], b[:4]])))

        e = edits.connect(encode, stride, size, first, first, 8, 5, loop=True)
        decoded, result, _ = run_edit(models, prompt, e, s)
        rows.append(measure("loop", e.plan, decoded, result, first[-5:], loop=True))

        other = caption(sample_scene(np.random.default_rng(10_000 + index)), rng)
        e = edits.video_to_video(encode, stride, first)
        full = schedule_by_name(s.schedule)(s.steps, shift=s.shift)
        for strength in (0.2, 0.4, 0.6, 0.8, 1.0):
            _, result, _ = run_edit(models, other, e, s, edits.strength_sigmas(full, strength))
            distances.setdefault(strength, []).append(float((result - first).abs().mean()))
        print(f"clip {index + 1}/{args.clips} done ({time.time() - start:.0f} s)", file=sys.stderr)

    print(
        f"\n{args.clips} {args.sources} clips, {args.steps} steps, seed {args.seed}, {time.time() - start:.0f} s\n"
    )
    print(
        "| operation | known frames PSNR (result) | (decoded copy) | worst seam ratio | all seam ratios | "
        "largest step within blend frames of a join / median: median, max | "
        "step at the joins / median step (8-bit levels) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(row["op"] for row in rows):
        group = [row for row in rows if row["op"] == name]
        seams = [ratio for row in group for ratio in row["seams"]]
        print(
            f"| {name} | {min(r['psnr'] for r in group):.1f} dB (min) | "
            f"{np.mean([r['vae_psnr'] for r in group]):.1f} dB (mean) | {max(seams):.2f} | "
            f"median {np.median(seams):.2f}, {sum(x <= 1.5 for x in seams)}/{len(seams)} <= 1.5 | "
            f"{np.median([x for r in group for x in r['around']]):.2f}, {max(x for r in group for x in r['around']):.2f} | "
            f"{np.median([x for r in group for x in r['steps']]):.2f} / {np.median([r['median_step'] for r in group]):.2f} |"
        )
    print(
        f"\nFor comparison, the VAE round trip of the sources alone: seam ratio at its latent frame boundaries "
        f"median {np.median(boundaries):.2f}, max {max(boundaries):.2f}, {sum(x <= 1.5 for x in boundaries)}/"
        f"{len(boundaries)} <= 1.5"
    )
    print("\n| video to video strength | mean abs distance from the source |")
    print("|---|---|")
    for strength, values in distances.items():
        print(f"| {strength} | {np.mean(values):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
