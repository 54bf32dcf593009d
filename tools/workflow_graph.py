"""The workflow graph the builders write (UI format, as the ComfyUI frontend saves it): nodes whose input
and output slots come from the registered node classes, links between them, and the pieces the shipped
workflows share (model loaders, the denoising chain, Video Combine, the notes' file lists)."""

from __future__ import annotations

from pathlib import Path

from spacetime.editing import DEFAULT_BLEND
from spacetime.nodes import NODE_CLASS_MAPPINGS  # the pack, installed (pip install -e .)

ROOT = Path(__file__).resolve().parents[1]

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# Core nodes the workflows use, as ComfyUI 0.3.x declares them: (link inputs, outputs).
CORE = {
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "SaveImage": ([("images", "IMAGE")], []),
}
WAN_NEGATIVE = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，"
    "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
WAN_FILES = """Put these files in ComfyUI's `models` folders (Comfy-Org's *Wan_2.1_ComfyUI_repackaged* names):

| file | folder |
|---|---|
| `wan2.1_t2v_1.3B_fp16.safetensors` (or the 14B) | `models/diffusion_models` |
| `umt5_xxl_fp8_e4m3fn_scaled.safetensors` (or `umt5_xxl_fp16`) | `models/text_encoders` |
| `wan_2.1_vae.safetensors` | `models/vae` |

Wan 2.1 T2V holds known frames by re-noising them at every step. **Wan 2.2 TI2V 5B** (`wan2.2_ti2v_5B_fp16.safetensors` with `wan2.2_vae.safetensors`, sizes in multiples of 32) was trained to keep them clean and holds them better: pick it in the loaders."""
TINY_WORLD = (
    "Tiny World is the pack's own small model (shapes, colours, motions, backgrounds); its weights ship with "
    "the pack, so this runs as it is, on any machine, in seconds. Preview weights: scores in the README."
)


def _spec(node_type: str):
    if node_type in CORE:
        inputs, outputs = CORE[node_type]
        return inputs, outputs
    cls = NODE_CLASS_MAPPINGS[node_type]
    declared = cls.INPUT_TYPES()
    inputs = [
        (name, spec[0])
        for section in ("required", "optional")
        for name, spec in declared.get(section, {}).items()
        if not isinstance(spec[0], list | tuple) and spec[0] not in WIDGETS
    ]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return inputs, list(zip(names, cls.RETURN_TYPES, strict=True))


class Workflow:
    def __init__(self, name: str):
        self.name, self.nodes, self.links = name, [], []

    def note(self, text: str, pos, size) -> None:
        self.nodes.append({
            "id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": list(pos), "size": list(size), "flags": {},
            "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [text], "color": "#432", "bgcolor": "#653",
        })  # fmt: skip

    def add(self, node_type: str, pos, size, widgets=(), **links) -> dict:
        node = new_node(len(self.nodes) + 1, node_type, pos, size, widgets)
        self.nodes.append(node)
        for name, (source, output) in links.items():
            connect(self.links, source, output, node, name)
        return node

    def connect(self, source: dict, output: str, target: dict, name: str) -> None:
        connect(self.links, source, output, target, name)

    def json(self) -> dict:
        """The workflow with a Prompt Guard where each prompt enters."""
        workflow = {
            "id": self.name, "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.7, "offset": [0, 0]}}, "version": 0.4,
        }  # fmt: skip
        guard_prompts(workflow)
        return workflow


def new_node(node_id: int, node_type: str, pos, size, widgets=()) -> dict:
    inputs, outputs = _spec(node_type)
    return {
        "id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {},
        "order": node_id - 1, "mode": 0,
        "inputs": [{"name": name, "type": kind, "link": None} for name, kind in inputs],
        "outputs": [
            {"name": name, "type": kind, "links": [], "slot_index": slot}
            for slot, (name, kind) in enumerate(outputs)
        ],
        "properties": {"Node name for S&R": node_type}, "widgets_values": list(widgets),
    }  # fmt: skip


def connect(links: list, source: dict, output: str, target: dict, name: str) -> None:
    """Link `source`'s output to `target`'s input `name` (a widget input becomes a socket, as in the frontend)."""
    slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == output)
    kind = source["outputs"][slot]["type"]
    if not any(entry["name"] == name for entry in target["inputs"]):
        target["inputs"].append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
    target_slot = next(i for i, entry in enumerate(target["inputs"]) if entry["name"] == name)
    link_id = max((link[0] for link in links), default=0) + 1
    links.append([link_id, source["id"], slot, target["id"], target_slot, kind])
    source["outputs"][slot]["links"].append(link_id)
    target["inputs"][target_slot]["link"] = link_id


GUARD_SIZE = (400, 200)
GUARD_NOTE = (
    "Type the prompt in *Prompt Guard*: it passes the prompt on, or stops the run when the prompt names a term "
    "of your blocklist (`ComfyUI/user/spacetime_blocklist.txt`, one term per line; empty until you create it "
    "from this pack's `prompting/blocklist.example.txt`)."
)
PROMPT_INPUTS = {"SpacetimeTextEncode": "prompt", "SpacetimeStoryboard": "storyboard"}  # first widget each
TITLE_HEIGHT, MARGIN = 30, 20  # the frontend draws a node's title above its position


def guard_prompts(workflow: dict) -> None:
    """Put a Prompt Guard where each prompt enters (UI format, in place): the prompt moves to the guard,
    whose output feeds the Text Encode's prompt, at the free place nearest to the left of the encoder;
    the note says so. Encoders whose prompt is already linked are left as they are."""
    encoders = [
        node
        for node in workflow["nodes"]
        if node["type"] in PROMPT_INPUTS
        and not any(
            entry["name"] == PROMPT_INPUTS[node["type"]] and entry.get("link") for entry in node["inputs"]
        )
    ]
    notes = [node for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    if encoders and notes:
        notes[0]["widgets_values"][0] += "\n\n" + GUARD_NOTE
    for encode in encoders:
        prompt = encode["widgets_values"][0]
        node_id = max(node["id"] for node in workflow["nodes"]) + 1
        guard = new_node(
            node_id, "SpacetimePromptGuard", _free_place(workflow, encode), GUARD_SIZE, [prompt, True, ""]
        )
        workflow["nodes"].append(guard)
        connect(workflow["links"], guard, "prompt", encode, PROMPT_INPUTS[encode["type"]])
        workflow["last_node_id"], workflow["last_link_id"] = node_id, workflow["links"][-1][0]


def _free_place(workflow: dict, beside: dict) -> list[int]:
    """The grid point nearest to the left of `beside` where a guard overlaps no node."""
    width, height = GUARD_SIZE

    def box(x, y, w, h):
        return x - MARGIN, y - TITLE_HEIGHT - MARGIN, x + w + MARGIN, y + h + MARGIN

    taken = [box(*node["pos"], *node["size"]) for node in workflow["nodes"]]
    x0, y0 = beside["pos"][0] - width - 2 * MARGIN, beside["pos"][1]
    places = sorted(
        ((x0 + dx, y0 + dy) for dx in range(-2000, 2001, 20) for dy in range(-2000, 2001, 20)),
        key=lambda place: ((place[0] - x0) ** 2 + (place[1] - y0) ** 2, place),
    )
    for x, y in places:
        a = box(x, y, width, height)
        if not any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] for b in taken):
            return [x, y]
    raise ValueError(f"no free place for a Prompt Guard near node {beside['id']}")


def models(w: Workflow, tiny: bool):
    """-> (dit, text_encoder, vae) as (node, output) pairs."""
    if tiny:
        loader = w.add("SpacetimeTinyWorldLoader", (40, 80), (300, 90))
        return (loader, "dit"), (loader, "text_encoder"), (loader, "vae")
    (dit, _), text, vae, _ = wan_loaders(w, ["wan2.1_t2v_1.3B_fp16.safetensors"], clip_vision=False)
    return dit, text, vae


def settings(tiny: bool) -> dict:
    if tiny:
        return {"size": (128, 128), "frames": 17, "steps": 20, "shift": 3.0, "cfg": 5.0, "negative": ""}
    return {"size": (832, 480), "frames": 81, "steps": 30, "shift": 8.0, "cfg": 6.0, "negative": WAN_NEGATIVE}


def denoise(w: Workflow, x: int, y: int, dit, text, latent, prompt: str, s: dict, sigmas=None, seed: int = 0):
    """Text Encode, Patchifier, (Scheduler,) DiT Denoiser, Unpatchify -> the LATENT output pair."""
    encode = w.add("SpacetimeTextEncode", (x, y), (400, 200), [prompt, s["negative"]], text_encoder=text)
    patches = w.add("SpacetimePatchifier", (x, y + 240), (260, 50), dit=dit, latent=latent)
    if sigmas is None:
        scheduler = w.add(
            "SpacetimeScheduler", (x, y + 330), (300, 130), ["simple", s["steps"], s["shift"], 1.0]
        )
        sigmas = (scheduler, "sigmas")
    sampler = w.add(
        "SpacetimeDiTDenoiser", (x + 440, y), (320, 260), ["unipc", s["cfg"], seed, "fixed", 0.875, 0.0], dit=dit,
        positive=(encode, "positive"), negative=(encode, "negative"), patches=(patches, "patches"), sigmas=sigmas,
    )  # fmt: skip
    unpatch = w.add("SpacetimeUnpatchify", (x + 440, y + 300), (260, 30), patches=(sampler, "patches"))
    return unpatch, "latent"


def text_to_video_clip(
    w: Workflow, x: int, y: int, dit, text, vae, prompt: str, s: dict, frames: int, seed: int = 0
):
    """A clip made in the workflow itself (Tiny World variants need no input file) -> its IMAGE frames."""
    width, height = s["size"]
    empty = w.add("SpacetimeEmptyLatentVideo", (x, y), (320, 130), [width, height, frames, 1], vae=vae)
    latent = denoise(w, x, y + 170, dit, text, (empty, "LATENT"), prompt, s, seed=seed)
    decode = w.add("SpacetimeVAEDecode", (x + 440, y + 520), (300, 100), [0, 64], vae=vae, latent=latent)
    return decode, "IMAGE"


def load_clip(w: Workflow, x: int, y: int, file: str):
    video = w.add("LoadVideo", (x, y), (320, 300), [file, "image"])
    parts = w.add("GetVideoComponents", (x, y + 340), (260, 70), video=(video, "VIDEO"))
    return parts, "images"


def combine(w: Workflow, x: int, prefix: str, loop_count: int = 0, **frames) -> None:
    """Video Combine at the pack's defaults, writing `frames` (images=..., or latent=... with vae=...)."""
    values = [16.0, loop_count, prefix, "video/h264-mp4", False, 19, "medium", True, True, "off"]
    w.add("SpacetimeVideoCombine", (x, 80), (360, 560), values, **frames)


def finish(
    w: Workflow, x: int, vae, latent, plan, prefix: str, loop_count: int = 0, bridge: str = ""
) -> None:
    """VAE Decode -> Join Edited Clip -> Video Combine (and a second one for the new frames alone)."""
    decode = w.add("SpacetimeVAEDecode", (x, 80), (300, 100), [0, 64], vae=vae, latent=latent)
    join = w.add(
        "SpacetimeJoinEditedClip", (x, 220), (300, 100), [DEFAULT_BLEND], plan=plan, images=(decode, "IMAGE")
    )
    combine(w, x + 340, prefix, loop_count, images=(join, "video"))
    if bridge:
        combine(w, x + 740, bridge, images=(join, "new_frames"))


def header(title: str, tiny: bool, body: str) -> str:
    files = TINY_WORLD if tiny else WAN_FILES
    other = "the same without `_tiny_world`" if tiny else "the `_tiny_world` variant"
    return f"## {title}\n\n{body}\n\n{files}\n\nFor {'Wan checkpoints' if tiny else 'a version that needs no download'}, open {other}."


def wan_loaders(w: Workflow, dits: list[str], clip_vision: bool):
    """Text encoder, VAE, the DiT (and a second expert) and the image encoder loaders."""
    text = w.add(
        "SpacetimeTextEncoderLoader",
        (40, 80),
        (340, 110),
        ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "default", "auto"],
    )
    vae = w.add("SpacetimeVAELoader", (40, 230), (340, 82), ["wan_2.1_vae.safetensors", "fp32"])
    loaders = [
        w.add("SpacetimeDiTLoader", (40, 350 + 150 * i), (340, 160), [name, "default", "auto", "auto", False])
        for i, name in enumerate(dits)
    ]
    experts = ((loaders[0], "dit"), (loaders[1], "dit") if len(loaders) > 1 else None)  # high, low noise
    encoder = None
    if clip_vision:
        node = w.add(
            "SpacetimeImageEncoderLoader",
            (40, 650),
            (340, 110),
            ["clip_vision_h.safetensors", "default", "auto"],
        )
        encoder = (node, "image_encoder")
    return experts, (text, "text_encoder"), (vae, "vae"), encoder
