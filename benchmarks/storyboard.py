"""Storyboards with Tiny World: does each shot show what its prompt asks as well as a video of that prompt
alone, do windows and shots join without a step, and does memory stay that of one window?

    python benchmarks/storyboard.py [--count 24] [--seconds 16] [--transition 1] [--images] [--memory]

- Shots: `count` storyboards of 4 shots of `seconds`/4 each, built from Tiny World's held-out prompts
  (combinations it never saw in training): the 4 shots of a storyboard differ in colour, shape and motion
  and share one background (its captions name it). Made as `generate` makes them (Tiny World's settings:
  20 steps, windows of 17 frames continuing from 8, step caching at 0.3, bf16 on CPUs with native bf16;
  --fp32 for the evaluator's fp32 without caching), 16 fps. --keep DIR writes each storyboard's video.
- Per shot, the evaluator's colour and motion scores on the shot's frames, against single-prompt videos
  of the same prompts, as long as the shot (Long Video, same settings and seed).
- Steps: at every window join and at every shot change, the frame-to-frame change over the video's
  median change (seam_ratios); for a shot change also the largest step over its transition (and, as at
  window joins, the spread after it: assembly.DEFAULT_BLEND frames). `_rhythm`: the step over the median
  step into the frames at the same place in the VAE's groups of 4 (joins left out): the VAE decodes each
  latent frame as 4 frames with a larger step into each group than inside it, and joins fall on groups.
- --key-frames: also made with key frames (Script.key_frames, the node's and generate's default), same
  seeds: each later shot held at the first frame of a window of its prompt alone.
- --images: each shot after the first also starts from an image (`| image: N`): the first frame of the
  single-prompt video of its prompt, made first; the storyboards are made with and without the images,
  same seeds, and both are scored.
- --key-frame-length N (an experiment, with --key-frames): key frames from clips of N latent frames
  instead of a window's.
- --image-offset SECONDS (an experiment, with --images): hold each image that much later than the pack does
  (at the end of its shot's transition); negative: earlier (minus half the transition: at the shot's start).
- --rhythm: the steps of 17-frame clips (rendered, through the VAE, Tiny World's) by their place in the
  VAE's groups of 4 frames: what a join's step is measured against.
- --long-alone: single-prompt videos as long as the storyboards (one shot's prompt of each storyboard, in
  turn; same settings and seed): their joins' steps, the first 4 (all a video as long as a shot has) apart
  from the later ones: what a storyboard's joins are measured against.
- --memory: peak resident memory of `generate --storyboard` (its defaults) for 10 s and 60 s storyboards
  of the same 4 prompts, each in its own process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from spacetime.cli import TINY_WORLD_COMMAND
from spacetime.editing import DEFAULT_BLEND
from spacetime.editing.long_video import join_frames, latent_windows
from spacetime.editing.storyboard import Script, parse_storyboard, shot_images
from spacetime.pipeline import TINY_WORLD_SETTINGS, load_tiny_world, long_video
from spacetime.training.captions import caption
from spacetime.training.evaluate import evaluate_video, frame_changes
from spacetime.training.scene import Scene
from spacetime.training.world import HELDOUT_TRIPLES, _sample_background, sample_object
from spacetime.video import Provenance, combine_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_video import run_generate

FPS, SHOTS, STRIDE = 16, 4, 4


def video_frames(frames: float) -> int:
    """At least `frames` frames, as a video's 4k+1."""
    return 1 + STRIDE * -(-(round(frames) - 1) // STRIDE)


def storyboards(count: int, seconds: float, seed: int = 0) -> list[list[tuple[str, dict]]]:
    """`count` storyboards of SHOTS (prompt, target): held-out combinations, all colours, shapes and
    motions different within a storyboard, over one background."""
    rng = np.random.default_rng([seed, 37])
    made = []
    while len(made) < count:
        picked = []
        for index in rng.permutation(len(HELDOUT_TRIPLES)):
            triple = HELDOUT_TRIPLES[index]
            if all(a != b for other in picked for a, b in zip(triple, other, strict=True)):
                picked.append(triple)
            if len(picked) == SHOTS:
                break
        if len(picked) < SHOTS:
            continue
        objects = [sample_object(rng, *triple) for triple in picked]
        tones_ok = True
        try:
            background, _ = _sample_background(rng, objects)
        except (IndexError, ValueError):  # no background tone shows all four colours
            tones_ok = False
        if not tones_ok:
            continue
        shots = []
        for obj, (colour, shape, motion) in zip(objects, picked, strict=True):
            text = caption(Scene((obj,), background, None), rng)
            shots.append((text, {"colour": colour, "shape": shape, "motion": motion}))
        made.append(shots)
    return made


def script(shots: list[tuple[str, dict]], seconds: float, with_images: bool = False) -> str:
    """The storyboard's text; `with_images`: each shot after the first starts from image N (its number)."""
    length = seconds / len(shots)
    return "\n".join(
        f"{index * length:g} | {text}" + (f" | image: {index + 1}" if with_images and index else "")
        for index, (text, _) in enumerate(shots)
    )


def frames_of(stream) -> np.ndarray:
    return torch.cat(list(stream.chunks)).mul(255).round().byte().numpy()


def quiet(*_):
    return lambda: None


def shot_changes(frames: np.ndarray, changes_at: list[int], transition: int) -> dict:
    """Step ratios at window joins and shot changes (see the module's docstring)."""
    steps = frame_changes(frames.astype(np.float64) / 255)
    median = max(float(np.median(steps)), 1e-9)
    window, overlap = latent_windows(TINY_WORLD_SETTINGS.window, TINY_WORLD_SETTINGS.window_overlap, STRIDE)
    latent = (len(frames) - 1) // STRIDE + 1
    joins = join_frames(latent, window, overlap, STRIDE)
    half = max(transition // 2, 1)

    rhythm = {}  # the median step into the frames at each place in the VAE's groups, joins left out
    for place in range(STRIDE):
        same = [steps[k - 1] for k in range(1, len(frames)) if k % STRIDE == place and k not in joins]
        rhythm[place] = max(float(np.median(same)), 1e-9)

    return {
        "joins": [float(steps[j - 1] / median) for j in joins],
        "joins_rhythm": [float(steps[j - 1] / rhythm[j % STRIDE]) for j in joins],
        "changes_rhythm": [float(steps[c - 1] / rhythm[c % STRIDE]) for c in changes_at],
        "join_spread": [float(steps[j - 1 : j + DEFAULT_BLEND].max() / median) for j in joins],
        "changes": [float(steps[c - 1] / median) for c in changes_at],
        "change_spread": [
            float(steps[max(c - half, 1) - 1 : c + max(half, DEFAULT_BLEND)].max() / median)
            for c in changes_at
        ],
    }


def quality(
    count: int, seconds: float, transition: float, fp32: bool, keep: Path | None, extra: tuple[str, ...]
) -> None:
    dit, text_encoder, vae = load_tiny_world(dtype=torch.float32 if fp32 else None)
    base = TINY_WORLD_COMMAND if not fp32 else TINY_WORLD_SETTINGS
    frames = video_frames(seconds * FPS)
    shot_frames = round(seconds * FPS / SHOTS)
    variants = ("storyboard", *extra)
    rows = {variant: [] for variant in variants}
    steps_of = {variant: [] for variant in variants}
    singles, firsts, alone_joins, alone_rhythm = {}, {}, [], []
    start = time.time()
    for number, board in enumerate(storyboards(count, seconds)):
        for (
            text,
            target,
        ) in board:  # each prompt alone, as long as a shot: the scores to match, and its first frame
            if text not in singles:
                alone = replace(base, frames=video_frames(shot_frames), seed=number)
                single = frames_of(long_video(dit, text_encoder, vae, text, "", alone, None, quiet))
                singles[text], firsts[text] = evaluate_video(single, target), single[:1]
                alone = shot_changes(single, [], 0)
                alone_joins.extend(alone["joins"])
                alone_rhythm.extend(alone["joins_rhythm"])
        for variant in variants:
            written = script(board, seconds, with_images=variant == "with images")
            shots = parse_storyboard(written, FPS)
            pictures = torch.from_numpy(np.concatenate([firsts[text] for text, _ in board])).float() / 255
            found = shot_images(shots, pictures)
            settings = replace(base, frames=frames, seed=number)
            made = Script(tuple(shots), transition * FPS, FPS, found, key_frames=variant == "key frames")
            video = frames_of(long_video(dit, text_encoder, vae, made, "", settings, None, quiet))
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                name = f"storyboard_{number:02d}" + {"storyboard": "", "with images": "_images"}.get(
                    variant, "_key_frames"
                )
                combine_video(torch.from_numpy(video).float() / 255, FPS, keep, name,
                              provenance=Provenance(watermark=False))  # fmt: skip
                (keep / f"{name}.txt").write_text(written + "\n")
            bounds = [shot.start for shot in shots] + [frames]
            half = round(transition * FPS / 2)
            for index, (text, target) in enumerate(board):
                scored = evaluate_video(video[bounds[index] : bounds[index + 1]], target)
                first = bounds[index] + (half if index else 0)
                last = bounds[index + 1] - (half if index < len(board) - 1 else 0)
                # the frames no transition shares (the whole shot when transitions cover it)
                inside = evaluate_video(video[first:last], target) if last - first >= 8 else scored
                rows[variant].append((scored, singles[text], inside))
            steps = shot_changes(video, bounds[1:-1], round(transition * FPS))
            steps_of[variant].append(steps)
            print(
                f"{variant} {number + 1}/{count} ({time.time() - start:.0f} s): worst join "
                f"{max(steps['join_spread']):.2f}, worst change {max(steps['change_spread']):.2f}",
                flush=True,
            )
    print(
        f"\n{count} storyboards of {SHOTS} shots, {seconds:g} s at {FPS} fps, transition {transition:g} s\n"
    )
    print("| per shot | colour | shape | motion |")
    print("| --- | --- | --- | --- |")

    def share(values) -> str:
        return f"{sum(values)}/{len(values)} ({100 * sum(values) / len(values):.0f}%)"

    for variant in variants:
        names = (f"{variant}, the shot's frames", f"{variant}, outside its transitions")
        for name, index in zip(names, (0, 2), strict=True):
            scores = [r[index] for r in rows[variant]]
            print(
                f"| {name} | {share([r['colour_ok'] for r in scores])} | "
                f"{share([r['shape_ok'] for r in scores])} | {share([r['motion_ok'] for r in scores])} |"
            )
    scores = [r[1] for r in rows[variants[0]]]
    n = len(scores)
    print(
        f"| alone, same prompt and length | {sum(r['colour_ok'] for r in scores)}/{n} | "
        f"{sum(r['shape_ok'] for r in scores)}/{n} | {sum(r['motion_ok'] for r in scores)}/{n} |"
    )
    print("\n| step over the video's median change | median | worst | at most 1.5 |")
    print("| --- | --- | --- | --- |")
    for variant in variants:
        for name in ("joins", "join_spread", "joins_rhythm", "changes", "change_spread", "changes_rhythm"):
            print(
                step_row(
                    f"{variant}: {name}", [value for steps in steps_of[variant] for value in steps[name]]
                )
            )
    for name, values in (("joins", alone_joins), ("joins_rhythm", alone_rhythm)):
        if values:
            print(step_row(f"single-prompt videos: {name}", values))


def step_row(name: str, values: list[float]) -> str:
    """A table row: the steps' median, worst, and how many are at most 1.5."""
    if not values:
        return f"| {name} | - | - | 0 of 0 |"
    under = sum(value <= 1.5 for value in values)
    return f"| {name} | {np.median(values):.2f} | {max(values):.2f} | {under} of {len(values)} |"


def rhythm(count: int) -> None:
    """The step into each frame over its clip's median step, by the frame's place in the VAE's groups of 4
    (a join is always at a group's first frame), for `count` 17-frame clips of held-out prompts: rendered
    (no VAE), their round trip through Tiny World's VAE, and Tiny World's own videos of the same prompts
    (fp32, uncached, as the evaluator makes them)."""
    from spacetime.training.evaluate import generate_heldout, round_trip
    from spacetime.training.world import heldout_prompts, render

    rendered = [render(prompt.scene, 17, 128, 128) for prompt in heldout_prompts(count, 0)]
    made, _, _ = generate_heldout(count)
    sets = (("rendered", rendered), ("rendered, through the VAE", round_trip(rendered)), ("Tiny World", made))
    places = ("1st", "2nd", "3rd", "4th")
    print("\n| clips | " + " | ".join(f"into a group's {p} frame" for p in places) + " | every step <= 1.5 |")
    print("| --- " * 6 + "|")
    for name, videos in sets:
        ratios = {place: [] for place in range(STRIDE)}
        calm = 0
        for video in videos:
            steps = frame_changes(video.astype(np.float64) / 255)
            steps = steps / max(float(np.median(steps)), 1e-9)
            calm += bool(steps.max() <= 1.5)
            for frame in range(1, len(video)):  # frame 4k + 1 is a group's first
                ratios[(frame - 1) % STRIDE].append(steps[frame - 1])
        cells = [
            f"{np.mean(values):.2f} ({sum(v <= 1.5 for v in values)} of {len(values)} <= 1.5)"
            for values in ratios.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + f" | {calm} of {len(videos)} |")


def long_alone(count: int, seconds: float) -> None:
    """Joins of single-prompt videos as long as the storyboards (see the module's docstring)."""
    dit, text_encoder, vae = load_tiny_world()
    settings = replace(TINY_WORLD_COMMAND, frames=video_frames(seconds * FPS))
    found = {name: [] for name in ("joins", "joins_rhythm")}
    early = {name: [] for name in found}
    start = time.time()
    for number, board in enumerate(storyboards(count, seconds)):
        text = board[number % SHOTS][0]
        video = frames_of(
            long_video(dit, text_encoder, vae, text, "", replace(settings, seed=number), None, quiet)
        )
        steps = shot_changes(video, [], 0)
        for name in found:
            early[name].extend(steps[name][:4])
            found[name].extend(steps[name][4:])
        print(
            f"{number + 1}/{count} ({time.time() - start:.0f} s): worst join {max(steps['joins']):.2f}",
            flush=True,
        )
    print(f"\n{count} single-prompt videos of {seconds:g} s\n")
    print("| step over the video's median change | median | worst | at most 1.5 |")
    print("| --- | --- | --- | --- |")
    for name in found:
        for part, values in (("first 4 joins", early[name]), ("later joins", found[name])):
            print(step_row(f"{name}, {part}", values))
        print(step_row(f"{name}, all", early[name] + found[name]))


def peak_memory(seconds: float, board: list[tuple[str, dict]], folder: Path) -> tuple[float, float]:
    """(seconds, peak resident MiB) of `generate --storyboard` in its own process."""
    path = folder / f"storyboard_{seconds:g}.txt"
    path.write_text(script(board, seconds) + "\n")
    arguments = ["--storyboard", str(path), "--frames", str(video_frames(seconds * FPS)), "-o",
                 str(folder / f"{seconds:g}.mp4")]  # fmt: skip
    _, took, peak = run_generate(arguments, folder)
    return took, peak


def memory() -> None:
    board = storyboards(1, 16)[0]
    with tempfile.TemporaryDirectory() as folder:
        results = {seconds: peak_memory(seconds, board, Path(folder)) for seconds in (10, 60)}
    print("\n| storyboard | seconds to make | peak resident memory |")
    print("| --- | --- | --- |")
    for seconds, (took, peak) in results.items():
        print(f"| {seconds} s, 4 shots | {took:.0f} | {peak:.0f} MiB |")
    print(f"\n60 s over 10 s: {results[60][1] / results[10][1]:.3f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--transition", type=float, default=1.0, help="seconds")
    parser.add_argument("--memory", action="store_true", help="only the memory of 10 s and 60 s storyboards")
    parser.add_argument(
        "--rhythm", action="store_true", help="only the VAE's rhythm (steps by place in a group)"
    )
    parser.add_argument(
        "--long-alone", action="store_true", help="only single-prompt videos as long as the storyboards"
    )
    parser.add_argument("--fp32", action="store_true", help="fp32 without step caching, as the evaluator")
    parser.add_argument("--keep", type=Path, help="write each storyboard's video and script here")
    parser.add_argument("--images", action="store_true", help="also with each later shot from an image")
    parser.add_argument("--key-frames", action="store_true", help="also with key frames (the pack's default)")
    parser.add_argument(
        "--image-offset", type=float, default=0.0, help="seconds after a shot's start its image is held"
    )
    parser.add_argument(
        "--key-frame-length", type=int, help="an experiment: key frames from clips of this many latent frames"
    )
    args = parser.parse_args(argv)
    if args.key_frame_length:
        import spacetime.editing.long_video as long_video_module

        whole = long_video_module.key_frame
        long_video_module.key_frame = lambda guider, sampling, shape, *rest: whole(
            guider, sampling, (*shape[:2], args.key_frame_length, *shape[3:]), *rest
        )
    if args.image_offset:
        import spacetime.editing.storyboard as storyboard_module

        at_start = storyboard_module.image_latent_frame
        offset = round(args.image_offset * FPS)
        storyboard_module.image_latent_frame = lambda start, stride: at_start(
            start + offset if start else 0, stride
        )
    if args.memory:
        memory()
    elif args.rhythm:
        rhythm(args.count)
    elif args.long_alone:
        long_alone(args.count, args.seconds)
    else:
        extra = ("with images",) * args.images + ("key frames",) * args.key_frames
        quality(args.count, args.seconds, args.transition, args.fp32, args.keep, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
