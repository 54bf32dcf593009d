"""UI-format workflows (what users share) to the API format ComfyUI's /prompt queues, using /object_info.

The frontend does this in graphToPrompt; this covers what our workflows use: links, widget values in
declaration order, the hidden `control_after_generate` value after seed widgets and the upload
widget after image pickers, and skipping notes and muted or bypassed nodes.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_TYPES = {"Note", "MarkdownNote"}
MUTED_OR_BYPASSED = {2, 4}


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _extra_widget_values(name: str, spec: list) -> int:
    """Values the frontend stores after an input's own: seed control, image upload button."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = 0
    if spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
        extra += 1
    if options.get("image_upload") or options.get("video_upload"):
        extra += 1
    return extra


def widget_layout(declared: dict) -> tuple[dict[str, int], int]:
    """Each widget's index in a node's widgets_values, and how many values the frontend stores in all."""
    positions, count = {}, 0
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            if _is_widget(spec):
                positions[name] = count
                count += 1 + _extra_widget_values(name, spec)
    return positions, count


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in NOTE_TYPES or node.get("mode", 0) in MUTED_OR_BYPASSED:
            continue
        if node["type"] not in object_info:
            raise KeyError(f"node {node['id']}: type {node['type']!r} is not registered in this ComfyUI")
        declared = object_info[node["type"]]["input"]
        positions, count = widget_layout(declared)
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for section in ("required", "optional"):
            for name in declared.get(section, {}):
                if name in positions:
                    if positions[name] >= len(values):
                        raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}")
                    inputs[name] = values[positions[name]]
                if name in linked:
                    _, source_node, source_slot, *_ = links[linked[name]]
                    inputs[name] = [str(source_node), source_slot]
        if len(values) > count:
            raise ValueError(
                f"node {node['id']} ({node['type']}): {len(values) - count} widget values left over: "
                f"{values[count:]}"
            )
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
