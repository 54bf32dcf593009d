"""Every shipped workflow (workflows/*.json) runs unchanged in a real ComfyUI, but for its sizes: on tiny
random-weight models under the file names it expects, shrunk to a few frames and steps, it writes an
MP4 that plays, with the frames asked for and the workflow embedded."""

from __future__ import annotations

import copy
import json

import pytest
from PIL import Image

from comfyui_host.comfy_workflow import MUTED_OR_BYPASSED, widget_layout
from media import PACK_ROOT, decode

SHIPPED = sorted((PACK_ROOT / "workflows").glob("*.json"))
FRAMES, HEIGHT, WIDTH = 5, 32, 32
# Widget values that make a workflow run in seconds on CPU, by node type and widget name; a workflow
# gets those of its own nodes. A workflow whose size no node here sets fails until its node is added.
SMALL = {
    "SpacetimeEmptyLatentVideo": {"width": WIDTH, "height": HEIGHT, "frames": FRAMES, "batch_size": 1},
    "SpacetimeScheduler": {"steps": 2},
    "SpacetimeImageToVideo": {"width": WIDTH, "height": HEIGHT, "frames": FRAMES},
    "SpacetimeExtendVideo": {"new_frames": 4, "overlap": 1},
    "SpacetimeConnectVideos": {"bridge_frames": 4, "overlap": 1},
    "SpacetimeLoopVideo": {"bridge_frames": 4, "overlap": 1},
    "SpacetimeLongVideo": {
        "width": WIDTH,
        "height": HEIGHT,
        "frames": 13,
        "window_frames": 9,
        "overlap_frames": 4,
    },
    "SpacetimeVAEDecode": {"tile_size": 0},
    "SpacetimeStoryboard": {"fps": 1.0},  # its shots at 0, 4, 8, 12 s fall at frames 0, 4, 8, 12 of 13
}
SIZE_WIDGETS = {"width", "height", "frames"}
# What each Video Combine (by its filename prefix) writes from the shrunk graph, before loop repeats: 5-frame
# sources (made in the graph, or the 5-frame input clips); extend: 4 + 1 known + 4 new; connect: 4 + 1 known +
# 4 new + 4 known + 1; loop: the clip + 4 new; long video: the 13 frames asked for.
FRAMES_WRITTEN = {
    "Spacetime/extend": 9, "Spacetime/connect": 14, "Spacetime/bridge": 4, "Spacetime/loop": 9,
    "Spacetime/long_video": 13, "Spacetime/storyboard": 13,
}  # fmt: skip


def widgets(node: dict, object_info: dict) -> dict:
    """A node's widget values by name."""
    positions, _ = widget_layout(object_info[node["type"]]["input"])
    return {name: node["widgets_values"][index] for name, index in positions.items()}


def shrink(workflow: dict, object_info: dict) -> dict:
    small = copy.deepcopy(workflow)
    sized = False
    for node in small["nodes"]:
        sized |= node["type"] == "LoadVideo"  # the input clips are small already (conftest.INPUT_CLIPS)
        if node["type"] not in SMALL:
            continue
        positions, _ = widget_layout(object_info[node["type"]]["input"])
        for name, value in SMALL[node["type"]].items():
            if name == "frames" and node["widgets_values"][positions[name]] == 1:
                continue  # a single image stays one
            if name in positions:
                node["widgets_values"][positions[name]] = value
                sized |= name in SIZE_WIDGETS
    assert sized, "no node of this workflow sets its video size: add its type and size widgets to SMALL"
    return small


def expected_frames(combine: dict) -> int:
    """What Video Combine writes: pingpong drops the repeated ends, loops repeat."""
    written = FRAMES_WRITTEN.get(combine["filename_prefix"], FRAMES)
    frames = 2 * written - 2 if combine["pingpong"] else written
    return frames * (combine["loop_count"] + 1)


def test_workflows_are_found():
    assert "text_to_video.json" in {path.name for path in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_shipped_workflow_runs_and_writes_a_playable_mp4_with_the_workflow(comfyui, path):
    object_info = comfyui.request("/object_info")
    workflow = shrink(json.loads(path.read_text()), object_info)

    entry = comfyui.run_workflow(workflow)

    active = [node for node in workflow["nodes"] if node.get("mode", 0) not in MUTED_OR_BYPASSED]
    combines = [node for node in active if node["type"] == "SpacetimeVideoCombine"]
    for node in (node for node in active if node["type"] == "SaveImage"):  # a single image
        (image,) = entry["outputs"][str(node["id"])]["images"]
        with Image.open(comfyui.base / "output" / image["subfolder"] / image["filename"]) as saved:
            assert saved.size == (WIDTH, HEIGHT) and json.loads(saved.info["workflow"]) == workflow
    assert combines or any(node["type"] == "SaveImage" for node in active), (
        "a shipped workflow saves its result"
    )
    for node in combines:
        settings = widgets(node, object_info)
        (preview,) = entry["outputs"][str(node["id"])]["images"]
        assert preview["type"] == "output" and preview["filename"].endswith(".mp4")
        decoded = decode(comfyui.base / "output" / preview["subfolder"] / preview["filename"])
        assert decoded.codec == "h264" and decoded.pix_fmt == "yuv420p"
        assert decoded.frames.shape == (expected_frames(settings), HEIGHT, WIDTH, 3)
        assert decoded.frame_rate == pytest.approx(settings["frame_rate"])
        assert json.loads(decoded.metadata["workflow"]) == workflow
        prompt = json.loads(decoded.metadata["prompt"])
        assert prompt[str(node["id"])]["class_type"] == "SpacetimeVideoCombine"
