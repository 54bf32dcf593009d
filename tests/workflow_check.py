"""Static validation of UI-format workflows (the JSON users share) against node classes' declarations,
without a ComfyUI: node types exist, widget values fit their inputs (count, type, range, combo choices,
the frontend's extra `control_after_generate` value after seed widgets), links join matching types, and
every required socket is connected."""

from __future__ import annotations

import math

from comfyui_host.comfy_workflow import NOTE_TYPES, WIDGET_TYPES

SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
# Combos filled from a model folder: their choices depend on the machine, so only the form is checked.
MODEL_FILE_INPUTS = {
    "model_name",
    "low_noise_model_name",
    "text_encoder_name",
    "vae_name",
    "lora_name",
    "image_encoder_name",
}


def _widget_problem(name: str, spec: tuple, value) -> str | None:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list | tuple):
        if name in MODEL_FILE_INPUTS:
            return (
                None
                if isinstance(value, str) and value.endswith(".safetensors")
                else "not a .safetensors name"
            )
        return None if value in kind else f"not one of {list(kind)}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return "not an integer"
    elif kind == "FLOAT":
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return "not a number"
    elif kind == "STRING":
        return None if isinstance(value, str) else "not a string"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else "not a boolean"
    if "min" in options and value < options["min"]:
        return f"below the minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"above the maximum {options['max']}"
    return None


class _Core:
    """A core ComfyUI node as it declares itself (ComfyUI 0.3.x), for the nodes shipped workflows use."""

    def __init__(self, inputs: dict, returns: tuple):
        self._inputs, self.RETURN_TYPES = inputs, returns

    def INPUT_TYPES(self):
        return {"required": self._inputs}


CORE_NODES = {
    "LoadImage": _Core({"image": ([], {"image_upload": True})}, ("IMAGE", "MASK")),
    "LoadVideo": _Core({"file": ([], {"video_upload": True})}, ("VIDEO",)),
    "GetVideoComponents": _Core({"video": ("VIDEO",)}, ("IMAGE", "AUDIO", "FLOAT")),
    "SaveImage": _Core({"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}, ()),
}
UPLOAD_VALUES = {"image"}  # the upload button's value the frontend stores after a file picker


def _is_widget(spec: tuple) -> bool:
    return isinstance(spec[0], list | tuple) or spec[0] in WIDGET_TYPES


def _has_seed_control(name: str, spec: tuple) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and bool(options.get("control_after_generate") or name in ("seed", "noise_seed"))


def validate_workflow(workflow: dict, node_classes: dict) -> list[str]:
    """Every problem found, as sentences naming the node; an empty list for a valid workflow."""
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    declared_inputs, return_types = {}, {}
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in NOTE_TYPES:
            continue
        cls = node_classes.get(node["type"]) or CORE_NODES.get(node["type"])
        if cls is None:
            problems.append(f"{where}: no such node type is registered")
            continue
        spec = cls.INPUT_TYPES()
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        declared_inputs[node["id"]], return_types[node["id"]] = inputs, cls.RETURN_TYPES

        values = list(node.get("widgets_values") or [])
        for name, input_spec in inputs.items():
            if not _is_widget(input_spec):
                continue
            if not values:
                problems.append(f"{where}: no widget value for {name!r}")
                break
            value = values.pop(0)
            options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
            if options.get("image_upload") or options.get("video_upload"):  # a file name, then the button
                if not isinstance(value, str) or not value:
                    problems.append(f"{where}: {name} = {value!r} is not a file name")
                if (button := values.pop(0) if values else None) not in UPLOAD_VALUES:
                    problems.append(
                        f"{where}: {name} is followed by {button!r}, not the upload value 'image'"
                    )
                continue
            if (problem := _widget_problem(name, input_spec, value)) is not None:
                problems.append(f"{where}: {name} = {value!r} is {problem}")
            if _has_seed_control(name, input_spec):
                control = values.pop(0) if values else None
                if control not in SEED_CONTROLS:
                    problems.append(
                        f"{where}: {name} is followed by {control!r}, not one of {sorted(SEED_CONTROLS)}"
                    )
        if values:
            problems.append(f"{where}: {len(values)} widget values left over: {values}")

        linked = {entry["name"] for entry in node.get("inputs", []) if entry.get("link") is not None}
        for name, input_spec in spec.get("required", {}).items():
            if not _is_widget(input_spec) and name not in linked:
                problems.append(f"{where}: required input {name!r} is not connected")
        for entry in node.get("inputs", []):
            if entry["name"] not in inputs:
                problems.append(f"{where}: has an input {entry['name']!r} that the node does not declare")

    for link_id, source, source_slot, target, target_slot, link_type in workflow.get("links", []):
        where = f"link {link_id} ({source} -> {target})"
        if source not in return_types or target not in declared_inputs:
            if source not in nodes or target not in nodes:
                problems.append(f"{where}: joins a node that does not exist")
            continue
        if source_slot >= len(return_types[source]):
            problems.append(f"{where}: node {source} has no output {source_slot}")
            continue
        produced = return_types[source][source_slot]
        entries = nodes[target].get("inputs", [])
        if target_slot >= len(entries) or entries[target_slot].get("link") != link_id:
            problems.append(f"{where}: input slot {target_slot} of node {target} does not hold this link")
            continue
        name = entries[target_slot]["name"]
        expected = declared_inputs[target][name][0]
        expected = "COMBO" if isinstance(expected, list | tuple) else expected
        if "*" not in (produced, expected) and not {produced, link_type} <= set(str(expected).split(",")):
            problems.append(
                f"{where}: carries {produced} (marked {link_type}) into {name!r}, which takes {expected}"
            )
    return problems
