"""Every shipped workflow (workflows/*.json) runs unchanged in a real ComfyUI, but for its sizes: on tiny
random-weight models under the file names it expects, shrunk to a few frames and steps, it writes an
MP4 that plays, with the frames asked for and the workflow embedded."""

from __future__ import annotations

import copy
import json

import pytest

from comfyui_host.comfy_workflow import MUTED_OR_BYPASSED, widget_layout
from media import PACK_ROOT, decode

SHIPPED = sorted((PACK_ROOT / "workflows").glob("*.json"))
FRAMES, HEIGHT, WIDTH = 5, 32, 32
# Widget values that make a workflow run in seconds on CPU, by node type and widget name; a workflow
# gets those of its own nodes. A workflow whose size no node here sets fails until its node is added.
SMALL = {
    "SpacetimeEmptyLatentVideo": {"width": WIDTH, "height": HEIGHT, "frames": FRAMES, "batch_size": 1},
    "SpacetimeScheduler": {"steps": 2},
}
SIZE_WIDGETS = {"width", "height", "frames"}


def widgets(node: dict, object_info: dict) -> dict:
    """A node's widget values by name."""
    positions, _ = widget_layout(object_info[node["type"]]["input"])
    return {name: node["widgets_values"][index] for name, index in positions.items()}


def shrink(workflow: dict, object_info: dict) -> dict:
    small = copy.deepcopy(workflow)
    sized = False
    for node in small["nodes"]:
        if node["type"] not in SMALL:
            continue
        positions, _ = widget_layout(object_info[node["type"]]["input"])
        for name, value in SMALL[node["type"]].items():
            if name in positions:
                node["widgets_values"][positions[name]] = value
                sized |= name in SIZE_WIDGETS
    assert sized, "no node of this workflow sets its video size: add its type and size widgets to SMALL"
    return small


def expected_frames(combine: dict) -> int:
    """What Video Combine writes for FRAMES frames: pingpong drops the repeated ends, loops repeat."""
    frames = 2 * FRAMES - 2 if combine["pingpong"] else FRAMES
    return frames * (combine["loop_count"] + 1)


def test_workflows_are_found():
    assert "text_to_video.json" in {path.name for path in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_shipped_workflow_runs_and_writes_a_playable_mp4_with_the_workflow(comfyui, path):
    object_info = comfyui.request("/object_info")
    workflow = shrink(json.loads(path.read_text()), object_info)

    entry = comfyui.run_workflow(workflow)

    combines = [
        node
        for node in workflow["nodes"]
        if node["type"] == "SpacetimeVideoCombine" and node.get("mode", 0) not in MUTED_OR_BYPASSED
    ]
    assert combines, "a shipped workflow ends in Video Combine"
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
