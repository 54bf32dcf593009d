"""In a real ComfyUI: the pack loads cleanly, every node is listed, workflows execute."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spacetime.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

from comfyui_host.comfy_workflow import ui_to_api
from comfyui_host.conftest import load_workflow
from media import decode


def test_every_node_is_listed_and_the_pack_imports_cleanly(comfyui):
    info = comfyui.request("/object_info")
    for node_id in NODE_CLASS_MAPPINGS:
        assert node_id in info, f"{node_id} missing from /object_info"
        assert info[node_id]["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert info[node_id]["python_module"].startswith("custom_nodes.ComfyUI-Spacetime")
    log = comfyui.log_text()
    assert "ComfyUI-Spacetime" in log  # the loader reported our folder
    failures = [
        line
        for line in log.splitlines()
        if "Spacetime" in line and ("IMPORT FAILED" in line or "Cannot import" in line)
    ]
    assert failures == []


def test_load_image_repeat_combine_writes_a_playable_mp4_with_the_workflow(comfyui):
    workflow = load_workflow("still_image_to_video.json")
    entry = comfyui.run_workflow(workflow)

    (preview,) = entry["outputs"]["3"]["images"]
    assert preview["type"] == "output" and preview["filename"].endswith(".mp4")
    path = comfyui.base / "output" / preview["subfolder"] / preview["filename"]
    decoded = decode(Path(path))
    assert decoded.codec == "h264" and decoded.pix_fmt == "yuv420p"
    assert decoded.frames.shape == (17, 96, 128, 3)
    assert decoded.frame_rate == 16.0
    assert json.loads(decoded.metadata["workflow"]) == workflow
    prompt = json.loads(decoded.metadata["prompt"])
    assert prompt["3"]["class_type"] == "SpacetimeVideoCombine"


def test_a_bad_output_option_is_refused_when_the_prompt_is_queued(comfyui):
    """Video Combine's options are checked as ComfyUI validates the prompt, before any node runs (issue 35:
    no sampling is thrown away for them); the good prompt beside it still runs."""
    prompt = ui_to_api(load_workflow("still_image_to_video.json"), comfyui.request("/object_info"))
    for change, message in (
        ({"crf": 99}, "crf=99 is outside 0..51"),
        ({"format": "image/gif", "frame_rate": 60.0}, "too fast for a GIF"),
        ({"filename_prefix": "../escape"}, "'..' parts are not allowed"),
    ):
        bad = json.loads(json.dumps(prompt))
        bad["3"]["inputs"] |= change
        with pytest.raises(AssertionError, match=r"/prompt answered 400") as refused:
            comfyui.queue_prompt(bad)
        assert message in str(refused.value)
    assert not (comfyui.base / "escape_00001_.mp4").exists()
    comfyui.run_prompt(prompt)


def test_cancel_stops_the_encode_within_a_frame_and_leaves_no_file(comfyui):
    folder = comfyui.base / "output" / "spacetime"
    prompt_id = comfyui.queue_workflow(load_workflow("long_encode_to_cancel.json"))
    deadline = time.monotonic() + 120
    while not list(folder.glob(".spacetime.*.partial.mp4")):  # the encoder is mid-file
        assert time.monotonic() < deadline, "the encode never started"
        time.sleep(0.05)
    comfyui.request("/interrupt", {})
    interrupted_at = time.monotonic()
    entry = comfyui.wait_for(prompt_id)
    assert time.monotonic() - interrupted_at < 10
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in [message[0] for message in entry["status"]["messages"]]
    assert list(folder.glob("*host_cancel*")) == [] and list(folder.glob(".spacetime.*.partial*")) == []


def test_dit_nodes_run_on_core_latents(comfyui):
    """DiT Loader + core's EmptyHunyuanLatentVideo -> Patchifier -> Unpatchify -> core's SaveLatent."""
    from safetensors.torch import load_file

    entry = comfyui.run_workflow(load_workflow("dit_patch_round_trip.json"))
    (saved,) = entry["outputs"]["5"]["latents"]
    latent = load_file(comfyui.base / "output" / saved["subfolder"] / saved["filename"])["latent_tensor"]
    assert latent.shape == (1, 16, 3, 8, 8)  # 9 frames of 64x64 through the Wan 2.1 VAE's strides
    assert latent.abs().max() < 1e-5  # the empty latent came back unchanged


def test_vae_nodes_encode_and_decode_core_images(comfyui):
    """LoadImage -> RepeatImageBatch(5) -> VAE Encode -> VAE Decode (tiled) -> Video Combine (lossless)."""
    entry = comfyui.run_workflow(load_workflow("vae_round_trip.json"))
    (file,) = [i for i in entry["outputs"]["3"]["images"] if i["type"] == "temp"]  # MKV previews as H.264
    written = sorted((comfyui.base / "output" / "spacetime").glob("host_vae_*.mkv"))
    assert len(written) == 1 and file["filename"].endswith(".mp4")
    decoded = decode(written[0])
    assert decoded.frames.shape == (5, 96, 128, 3)  # 5 frames -> 2 latent frames -> 5 frames
