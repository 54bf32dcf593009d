"""The host manages our models: a workflow loads them once (ComfyUI's own "Requested to load" line), a
second run reuses them, and after the host unloads every model (as it does when another model needs the
room) the workflow loads them again and makes the same video."""

from __future__ import annotations

import json
import time

from comfyui_host.comfy_workflow import ui_to_api
from comfyui_host.test_workflows_run import shrink
from media import PACK_ROOT, decode

DENOISER = "9"  # text_to_video.json's SpacetimeDiTDenoiser
OUR_MODELS = ("WanDiT", "UMT5Encoder")


def _loads(comfyui) -> dict[str, int]:
    log = comfyui.log_text()
    return {name: log.count(f"Requested to load {name}") for name in OUR_MODELS}


def _frames(comfyui, entry: dict):
    (video,) = [i for i in entry["outputs"]["12"]["images"] if i["type"] == "output"]
    return decode(comfyui.base / "output" / video["subfolder"] / video["filename"]).frames


def test_our_models_stay_loaded_between_runs_and_reload_cleanly_after_eviction(comfyui):
    object_info = comfyui.request("/object_info")
    workflow = shrink(json.loads((PACK_ROOT / "workflows" / "text_to_video.json").read_text()), object_info)
    prompt = ui_to_api(workflow, object_info)

    def run(seed: int) -> dict:
        prompt[DENOISER]["inputs"]["seed"] = seed
        return comfyui.run_prompt(prompt)

    before = _loads(comfyui)
    first = _frames(comfyui, run(11))
    loaded = _loads(comfyui)
    assert all(loaded[name] == before[name] + 1 for name in OUR_MODELS), (before, loaded)
    assert "(ComfyUI), all resident" in comfyui.log_text()  # our one line per load

    run(12)  # a new seed: the denoiser runs again, on the models still loaded
    assert _loads(comfyui) == loaded

    # the host unloads every model, as it does for a model that needs the room
    comfyui.request("/free", {"unload_models": True})
    # The worker reads the flag after each prompt, before it takes the next; a wake-up it was not waiting
    # for is lost, so a sleep races it. A cached rerun (no model used) makes it read the flag in order.
    run(12)
    again = _frames(comfyui, run(11))  # after the eviction: loaded again, the same video
    reloaded = _loads(comfyui)
    assert reloaded["WanDiT"] == loaded["WanDiT"] + 1, (loaded, reloaded)
    assert (again == first).all()


def test_cancel_stops_sampling_within_a_step(comfyui):
    """Cancel during a long denoise (1000 steps of 512×512, 33 frames) on host-managed models: the prompt
    ends interrupted within seconds."""
    object_info = comfyui.request("/object_info")
    workflow = shrink(json.loads((PACK_ROOT / "workflows" / "text_to_video.json").read_text()), object_info)
    prompt = ui_to_api(workflow, object_info)
    (latent,) = [n for n in prompt.values() if n["class_type"] == "SpacetimeEmptyLatentVideo"]
    latent["inputs"].update(width=512, height=512, frames=33)
    (schedule,) = [n for n in prompt.values() if n["class_type"] == "SpacetimeScheduler"]
    schedule["inputs"]["steps"] = 1000
    prompt[DENOISER]["inputs"]["seed"] = 99
    prompt_id = comfyui.queue_prompt(prompt)
    deadline = time.monotonic() + 60
    while not comfyui.request("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.1)
    time.sleep(3)  # well into the 1000 steps
    comfyui.request("/interrupt", {})
    interrupted_at = time.monotonic()
    entry = comfyui.wait_for(prompt_id)
    assert time.monotonic() - interrupted_at < 5
    assert "execution_interrupted" in [message[0] for message in entry["status"]["messages"]]
    interrupted = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_interrupted")
    assert interrupted["node_type"] == "SpacetimeDiTDenoiser"  # stopped while sampling
