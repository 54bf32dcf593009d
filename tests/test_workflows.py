"""Every shipped workflow is valid against the registered nodes (statically, without a ComfyUI), and the
validator itself catches each kind of mistake."""

from __future__ import annotations

import copy
import json

import pytest

from spacetime.nodes import NODE_CLASS_MAPPINGS

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
