"""Every shipped workflow is valid against the registered nodes (statically, without a ComfyUI), and the
validator itself catches each kind of mistake."""

from __future__ import annotations

import copy
import json

import pytest

from spacetime import host
from spacetime.nodes import NODE_CLASS_MAPPINGS
from spacetime.prompting import BLOCKLIST_FILENAME, PromptBlocked

from comfyui_host.comfy_workflow import ui_to_api
from media import PACK_ROOT
from workflow_check import validate_workflow

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))


def test_workflows_are_shipped():
    assert "text_to_video.json" in {path.name for path in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_shipped_workflow_is_valid(path):
    workflow = json.loads(path.read_text())
    assert validate_workflow(workflow, NODE_CLASS_MAPPINGS) == []
    notes = [node for node in workflow["nodes"] if node["type"] in ("Note", "MarkdownNote")]
    assert notes, "each workflow tells which model files go where"


def _box(node: dict) -> tuple:
    """Where the frontend draws a node, its title bar (30 px above its position) included."""
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - 30, x + width, y + height


PROMPT_INPUTS = {"SpacetimeTextEncode": "prompt", "SpacetimeStoryboard": "storyboard"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_prompt_enters_through_the_prompt_guard(path):
    """P07: the prompt (or storyboard) is typed in a Prompt Guard (on), whose output is the Text Encode's
    prompt (the Storyboard's text); the guard sits where it hides no other node."""
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    encoders = [node for node in workflow["nodes"] if node["type"] in PROMPT_INPUTS]
    assert encoders, "every shipped workflow takes a prompt"
    for encode in encoders:
        name = PROMPT_INPUTS[encode["type"]]
        (entry,) = [entry for entry in encode["inputs"] if entry["name"] == name]
        guard = nodes[links[entry["link"]][1]]
        assert (guard["type"], entry["widget"]) == ("SpacetimePromptGuard", {"name": name})
        prompt, enabled, extra_terms = guard["widgets_values"]
        assert prompt.strip() and enabled is True and extra_terms == ""
        a = _box(guard)
        for other in workflow["nodes"]:
            b = _box(other)
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert other is guard or not overlap, f"the guard {guard['id']} covers node {other['id']}"


def test_the_guard_feeds_the_encoder_and_stops_a_blocked_prompt(tmp_path, monkeypatch):
    """As ComfyUI queues text_to_video_tiny_world.json: the encoder's prompt is the guard's output, and the
    guard refuses a prompt that names a term of the user's blocklist."""
    (tmp_path / BLOCKLIST_FILENAME).write_text("gore\n", encoding="utf-8")
    monkeypatch.setenv(host.USER_DIR_ENV, str(tmp_path))
    host._comfy_module.cache_clear()
    object_info = {name: {"input": cls.INPUT_TYPES()} for name, cls in NODE_CLASS_MAPPINGS.items()}
    workflow = json.loads((PACK_ROOT / "workflows" / "text_to_video_tiny_world.json").read_text())
    guard, encode = node_of(workflow, "SpacetimePromptGuard"), node_of(workflow, "SpacetimeTextEncode")
    guard["widgets_values"][0] = "a g o r e scene"
    queued = ui_to_api(workflow, object_info)
    assert queued[str(encode["id"])]["inputs"]["prompt"] == [str(guard["id"]), 0]
    inputs = queued[str(guard["id"])]["inputs"]
    assert inputs == {"prompt": "a g o r e scene", "enabled": True, "extra_terms": ""}
    with pytest.raises(PromptBlocked, match="'g o r e' matched 'gore'"):
        NODE_CLASS_MAPPINGS["SpacetimePromptGuard"]().check(**inputs)
    host._comfy_module.cache_clear()


def node_of(workflow, node_type):
    return next(node for node in workflow["nodes"] if node["type"] == node_type)


def broken(change) -> list[str]:
    workflow = json.loads((PACK_ROOT / "workflows" / "text_to_video.json").read_text())
    change(workflow)
    return validate_workflow(workflow, NODE_CLASS_MAPPINGS)


def test_validator_catches_an_unknown_node_type():
    (problem,) = broken(lambda w: node_of(w, "SpacetimeUnpatchify").update(type="SpacetimeUnpatchifyV2"))
    assert "no such node type" in problem


def test_validator_catches_a_missing_seed_control_value():
    problems = broken(lambda w: node_of(w, "SpacetimeDiTDenoiser")["widgets_values"].remove("fixed"))
    assert any("seed is followed by 0.875" in p for p in problems)


def test_validator_catches_values_of_the_wrong_type_range_or_choice():
    def change(workflow):
        node_of(workflow, "SpacetimeEmptyLatentVideo")["widgets_values"][0] = "832"
        node_of(workflow, "SpacetimeScheduler")["widgets_values"][1] = 0
        node_of(workflow, "SpacetimeDiTDenoiser")["widgets_values"][0] = "ddim"
        node_of(workflow, "SpacetimeVAELoader")["widgets_values"][0] = "wan_2.1_vae.pth"

    problems = "\n".join(broken(change))
    assert "width = '832' is not an integer" in problems
    assert "steps = 0 is below the minimum 1" in problems
    assert "solver = 'ddim' is not one of" in problems
    assert "vae_name = 'wan_2.1_vae.pth' is not a .safetensors name" in problems


def test_validator_catches_too_many_or_too_few_values():
    assert any(
        "left over" in p
        for p in broken(lambda w: node_of(w, "SpacetimeScheduler")["widgets_values"].append(1))
    )
    assert any(
        "no widget value" in p
        for p in broken(lambda w: node_of(w, "SpacetimeScheduler")["widgets_values"].pop())
    )


def test_validator_catches_links_between_mismatched_types_and_unconnected_inputs():
    def swap(workflow):  # feed the VAE into the DiT socket of the patchifier
        patchifier = node_of(workflow, "SpacetimePatchifier")
        link_id = patchifier["inputs"][0]["link"]
        link = next(link for link in workflow["links"] if link[0] == link_id)
        link[1] = node_of(workflow, "SpacetimeVAELoader")["id"]

    assert any("carries SPACETIME_VAE" in p for p in broken(swap))

    def unplug(workflow):
        denoiser = node_of(workflow, "SpacetimeDiTDenoiser")
        link_id = denoiser["inputs"][4]["link"]
        denoiser["inputs"][4]["link"] = None
        workflow["links"] = [link for link in workflow["links"] if link[0] != link_id]

    assert any("required input 'sigmas' is not connected" in p for p in broken(unplug))


def test_the_validator_accepts_what_it_rejected_once_fixed():
    workflow = json.loads((PACK_ROOT / "workflows" / "text_to_video.json").read_text())
    again = copy.deepcopy(workflow)
    node_of(again, "SpacetimeScheduler")["widgets_values"][1] = 0
    assert validate_workflow(again, NODE_CLASS_MAPPINGS)
    node_of(again, "SpacetimeScheduler")["widgets_values"][1] = 30
    assert validate_workflow(again, NODE_CLASS_MAPPINGS) == []
