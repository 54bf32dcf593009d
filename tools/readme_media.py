"""Writes the README's pictures into docs/media/, so they can be made again after any change:

    python tools/readme_media.py            # about 3 minutes on 2 CPU cores (7.5 when they are busy)
    python tools/readme_media.py --long-frames 961   # the long video at the workflow's full minute

- `text_to_video.webp`: what the README's first command makes. It runs that command,
  `python -m spacetime generate "a red circle moving left"` (Tiny World: 17 frames at 128x128, 20 steps),
  in a subprocess writing into a temporary output folder, reads the MP4 back with PyAV and writes it as
  an animated WebP at twice the size (256x256, 16 fps, looping; about 50 KB where a GIF takes 600).
- One PNG strip of frames per capability, each from a shipped Tiny World workflow run as it is:
  `text_to_video.png`, `image_to_video.png`, `video_to_video.png`, `extend_video.png`,
  `connect_videos.png`, `loop_video.png`, `long_video.png` and `storyboard.png`, from
  `workflows/<name>_tiny_world.json`.
  Frames of an edit that are its source's frames, returned unchanged, are marked `source` (grey); the
  generated ones `new` (orange). The video-to-video strip shows its source above the result. The strips
  are saved with a 256-colour palette (about 100 KB each).

How a workflow runs here without ComfyUI: the UI-format JSON (what the frontend saves) is executed
in-process with the pack's registered node classes (`spacetime.nodes.NODE_CLASS_MAPPINGS`), each node's
FUNCTION called in dependency order with its linked inputs and its widget values mapped onto its
declared inputs (required, then optional) in declaration order, skipping the extra value the frontend
stores after a seed (`fixed`, `randomize`, ...). Notes are skipped. What differs from a run in ComfyUI:
- the Tiny World workflows make their own source clips and images by text to video, so no file is
  loaded; the script stops with a message if a workflow uses another node type;
- Video Combine writes into a temporary folder (`SPACETIME_OUTPUT_DIR`), deleted at the end; the
  strips are the frames it was given (the IMAGE before encoding) or, where it decodes a latent itself
  (long video), the frames of the file it wrote;
- the long-video workflow asks for 961 frames (a minute: over 5 minutes at its 20 steps on 2 CPU cores);
  the script makes 81 (5 s) unless `--long-frames` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from spacetime.nodes import NODE_CLASS_MAPPINGS  # the pack, installed (pip install -e .)

ROOT = Path(__file__).resolve().parents[1]
FIRST_COMMAND = "a red circle moving left"  # the README's first command
STRIPS = (  # (picture, workflow, what the strip shows)
    ("text_to_video", "text_to_video_tiny_world", "text to video"),
    ("image_to_video", "image_to_video_tiny_world", "image to video (frame 0 is the given image)"),
    ("video_to_video", "video_to_video_tiny_world", "video to video: source (top), re-rendered (bottom)"),
    ("extend_video", "extend_video_tiny_world", "extend forward by 12 frames"),
    ("connect_videos", "connect_videos_tiny_world", "connect two clips with an 8-frame bridge"),
    ("loop_video", "loop_video_tiny_world", "loop: an 8-frame bridge from the end back to the start"),
    ("long_video", "long_video_tiny_world", "long video, windows of 17 frames"),
    (
        "storyboard",
        "storyboard_tiny_world",
        "storyboard: 4 shots of 4 s, each giving way to the next over 1 s",
    ),
)
NOTE_TYPES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
EDIT_NODES = {
    "SpacetimeImageToVideo",
    "SpacetimeVideoToVideo",
    "SpacetimeExtendVideo",
    "SpacetimeConnectVideos",
    "SpacetimeLoopVideo",
}
EDIT_SOURCES = {"image", "video", "first", "second"}  # their IMAGE inputs: the source frames
FRAMES_IN_STRIP = 8
GAP, LABEL = 4, 16
SOURCE_COLOUR, NEW_COLOUR = (150, 150, 150), (240, 140, 30)


def _is_widget(spec: tuple) -> bool:
    return isinstance(spec[0], list | tuple) or spec[0] in WIDGET_TYPES


def _has_seed_control(name: str, spec: tuple) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and bool(options.get("control_after_generate") or name in ("seed", "noise_seed"))


def node_inputs(node: dict, declared: dict, links: dict) -> tuple[dict, dict]:
    """A UI-format node's widget values by input name, and its linked inputs as (source node id, slot)."""
    values = list(node.get("widgets_values") or [])
    inputs, linked = {}, {}
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            if not _is_widget(spec):
                continue
            if not values:
                raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}")
            inputs[name] = values.pop(0)
            if _has_seed_control(name, spec) and values:
                values.pop(0)  # the frontend's control_after_generate value
    for entry in node.get("inputs", []):
        if entry.get("link") is not None:
            _, source, slot, *_ = links[entry["link"]]
            linked[entry["name"]] = (source, slot)
    return inputs, linked


def run_workflow(workflow: dict, overrides: dict | None = None) -> dict:
    """Execute a UI-format workflow with the pack's node classes. Returns, per node id, its type, the
    inputs it was called with (linked ones resolved to the values) and its outputs."""
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {node["id"]: node for node in workflow["nodes"] if node["type"] not in NOTE_TYPES}
    unknown = sorted({node["type"] for node in nodes.values()} - set(NODE_CLASS_MAPPINGS))
    if unknown:
        raise SystemExit(f"this script runs the pack's nodes only; the workflow also uses {unknown}")
    widgets, linked = {}, {}
    for node_id, node in nodes.items():
        declared = NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
        widgets[node_id], linked[node_id] = node_inputs(node, declared, links)
        widgets[node_id].update((overrides or {}).get(node["type"], {}))

    order, seen = [], set()

    def visit(node_id: int) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for source, _ in linked[node_id].values():
            visit(source)
        order.append(node_id)

    for node_id in sorted(nodes):
        visit(node_id)

    results = {}
    for node_id in order:
        node, cls = nodes[node_id], NODE_CLASS_MAPPINGS[nodes[node_id]["type"]]
        kwargs = dict(widgets[node_id])  # a widget turned into an input is overridden by its link
        for name, (source, slot) in linked[node_id].items():
            kwargs[name] = results[source]["outputs"][slot]
        hidden = cls.INPUT_TYPES().get("hidden", {})
        context = {"unique_id": str(node_id), "prompt": {}, "extra_pnginfo": {"workflow": workflow}}
        kwargs.update({name: value for name, value in context.items() if name in hidden})
        started = time.perf_counter()
        outputs = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(outputs, dict):
            outputs = outputs.get("result", ())
        results[node_id] = {"type": node["type"], "inputs": kwargs, "outputs": tuple(outputs)}
        print(f"  {node_id:>3} {node['type']:<28} {time.perf_counter() - started:5.1f} s", flush=True)
    return results


def read_video(path: Path) -> np.ndarray:
    """All frames of a video file, F×H×W×3 uint8."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def strip(rows: list[tuple[np.ndarray, list[int], list[str], list[tuple]]], title: str) -> Image.Image:
    """Rows of (frames, indices to show, label per shown frame, colour per shown frame) -> one image."""
    height, width = rows[0][0].shape[1:3]
    columns = max(len(indices) for _, indices, _, _ in rows)
    picture = Image.new(
        "RGB",
        (columns * (width + GAP) + GAP, LABEL + len(rows) * (height + LABEL + GAP) + GAP),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(picture)
    draw.text((GAP, 2), title, fill=(30, 30, 30), font=font(12))
    for row, (frames, indices, labels, colours) in enumerate(rows):
        top = LABEL + row * (height + LABEL + GAP)
        for column, (index, label, colour) in enumerate(zip(indices, labels, colours, strict=True)):
            left = GAP + column * (width + GAP)
            picture.paste(Image.fromarray(frames[index]), (left, top))
            draw.rectangle((left, top + height, left + width - 1, top + height + 2), fill=colour)
            draw.text((left + 2, top + height + 3), label, fill=(30, 30, 30), font=font(11))
    return picture


def frames_to_show(known: list[bool]) -> list[int]:
    """FRAMES_IN_STRIP frame indices spread over the clip. For an edit: the first and last frames, the
    frames on each side of every join between source and new frames, then new frames up to half of
    the strip, then any frames, each time the one farthest from those already chosen."""
    count = len(known)
    new = [index for index in range(count) if not known[index]]
    if len(new) in (0, count):  # not an edit: evenly spaced
        return sorted({round(i * (count - 1) / (FRAMES_IN_STRIP - 1)) for i in range(FRAMES_IN_STRIP)})
    shown = {0, count - 1}
    shown |= {i for i in range(1, count) if known[i] != known[i - 1]}
    shown |= {i - 1 for i in range(1, count) if known[i] != known[i - 1]}

    def add_farthest(pool: list[int]) -> bool:
        candidates = [index for index in pool if index not in shown]
        if not candidates or len(shown) >= FRAMES_IN_STRIP:
            return False
        shown.add(max(candidates, key=lambda index: min(abs(index - other) for other in shown)))
        return True

    while sum(not known[index] for index in shown) < FRAMES_IN_STRIP // 2:
        if not add_farthest(new):
            break
    while add_farthest(list(range(count))):
        pass
    return sorted(shown)


def first_command_animation(out: Path, scratch: Path) -> None:
    output = scratch / "first_command"
    env = {**os.environ, "SPACETIME_OUTPUT_DIR": str(output)}
    command = [sys.executable, "-m", "spacetime", "generate", FIRST_COMMAND]
    print("$ python", shlex.join(command[1:]), flush=True)
    subprocess.run(command, check=True, env=env, cwd=scratch)
    (video,) = output.rglob("*.mp4")
    frames = read_video(video)
    size = (frames.shape[2] * 2, frames.shape[1] * 2)
    images = [Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS) for frame in frames]
    images[0].save(
        out / "text_to_video.webp", save_all=True, append_images=images[1:], duration=62, loop=0, quality=85
    )


def capability_strip(workflow_name: str, title: str, long_frames: int) -> Image.Image:
    workflow = json.loads((ROOT / "workflows" / f"{workflow_name}.json").read_text())
    timed = workflow_name.startswith(("long_video", "storyboard"))
    # the long video shortened to `long_frames`; a storyboard as long as its shots
    overrides = (
        {"SpacetimeLongVideo": {"frames": long_frames}} if workflow_name.startswith("long_video") else {}
    )
    results = run_workflow(workflow, overrides)
    combine = min(node_id for node_id, result in results.items() if result["type"] == "SpacetimeVideoCombine")
    given = results[combine]["inputs"]
    if given.get("images") is not None:
        frames = to_uint8(given["images"])
    else:  # a latent Video Combine decoded as it wrote
        frames = read_video(Path(results[combine]["outputs"][0]))
    sources = [
        value
        for result in results.values()
        if result["type"] in EDIT_NODES
        for name, value in result["inputs"].items()
        if name in EDIT_SOURCES
    ]
    known = [
        any(np.array_equal(frame, source_frame) for source in sources for source_frame in to_uint8(source))
        for frame in frames
    ]
    shown = frames_to_show(known)
    if timed:
        labels = [f"{index / given['frame_rate']:.1f} s" for index in shown]
        colours = [NEW_COLOUR] * len(shown)
    elif not sources:
        labels = [f"frame {index}" for index in shown]
        colours = [NEW_COLOUR] * len(shown)
    else:
        labels = [f"{index} {'source' if known[index] else 'new'}" for index in shown]
        colours = [SOURCE_COLOUR if known[index] else NEW_COLOUR for index in shown]
    rows = [(frames, shown, labels, colours)]
    if workflow_name.startswith("video_to_video"):
        source = to_uint8(sources[0])
        rows.insert(0, (source, shown, [f"{index} source" for index in shown], [SOURCE_COLOUR] * len(shown)))
    return strip(rows, f"{title}; {len(frames)} frames; workflows/{workflow_name}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "media", help="default docs/media")
    parser.add_argument(
        "--long-frames", type=int, default=81, help="the long video's length, 4k+1 (the workflow's: 961)"
    )
    parser.add_argument("--only", nargs="*", help="pictures to make (default: all), e.g. text_to_video.webp")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["SPACETIME_OUTPUT_DIR"] = str(Path(scratch) / "output")
        if not args.only or "text_to_video.webp" in args.only:
            first_command_animation(args.out, Path(scratch))
        for picture, workflow_name, title in STRIPS:
            if args.only and f"{picture}.png" not in args.only:
                continue
            print(f"{workflow_name}.json -> {picture}.png", flush=True)
            picture_rgb = capability_strip(workflow_name, title, args.long_frames)
            picture_rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
                args.out / f"{picture}.png", optimize=True
            )
    sizes = sum(path.stat().st_size for path in args.out.iterdir() if path.is_file())
    print(f"wrote {args.out} ({sizes / 1024:.0f} KiB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
