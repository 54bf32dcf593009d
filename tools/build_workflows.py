"""Writes the editing-suite workflows in workflows/ (UI format, as the ComfyUI frontend saves them): each
operation once for Wan checkpoints and once for Tiny World (no download). Input and output slots come
from the registered node classes, so a workflow always matches the nodes it uses.

    python tools/build_workflows.py
"""

from __future__ import annotations

import json
import sys

from workflow_graph import (
    ROOT,
    TINY_WORLD,
    WAN_NEGATIVE,
    Workflow,
    combine,
    denoise,
    finish,
    header,
    load_clip,
    models,
    settings,
    text_to_video_clip,
    wan_loaders,
)


def image_to_video(tiny: bool) -> Workflow:
    w = Workflow("image_to_video" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    width, height = s["size"]
    if tiny:  # the picture comes from a text-to-image step (frames = 1), as from any image generator
        image = text_to_video_clip(
            w, 420, 80, dit, text, vae, "a big orange star on a striped backdrop", s, 1, seed=3
        )
        body = ("The first frame is made here by a text-to-image step (frames = 1); *Image to Video* takes any "
                "IMAGE: Load Image, or an image generator's output.")  # fmt: skip
        x = 1300
    else:
        image = (w.add("LoadImage", (420, 80), (320, 320), ["example.png", "image"]), "IMAGE")
        body = "*Load Image* gives the first frame (any size: *fit* crops, pads or stretches it to the video size)."
        x = 800
    prepare = w.add(
        "SpacetimeImageToVideo",
        (x, 80),
        (320, 180),
        [width, height, s["frames"], "crop", "held" if tiny else "image"],
        vae=vae,
        image=image,
    )
    prompt = (
        "the star spins slowly"
        if tiny
        else "The scene comes alive: a slow push-in, leaves stir in a light breeze, soft natural light."
    )
    latent = denoise(w, x, 320, dit, text, (prepare, "latent"), prompt, s)
    finish(w, x + 800, vae, latent, (prepare, "plan"), "Spacetime/image_to_video")
    w.note(header("Image to video", tiny, body), (40, -420), (820, 460))
    return w  # fmt: skip


def source_clip(w, tiny, dit, text, vae, s, prompt, file, x=420, y=80, seed=0):
    if tiny:
        return text_to_video_clip(w, x, y, dit, text, vae, prompt, s, s["frames"], seed=seed)
    return load_clip(w, x, y, file)


def video_to_video(tiny: bool) -> Workflow:
    w = Workflow("video_to_video" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    clip = source_clip(
        w, tiny, dit, text, vae, s, "a red circle moving left on a blue background", "clip.mp4"
    )
    x = 1300 if tiny else 800
    scheduler = w.add("SpacetimeScheduler", (x, 80), (300, 130), ["simple", s["steps"], s["shift"], 1.0])
    prepare = w.add(
        "SpacetimeVideoToVideo",
        (x, 250),
        (320, 130),
        [0.6],
        vae=vae,
        video=clip,
        sigmas=(scheduler, "sigmas"),
    )
    prompt = (
        "a green square moving left on a blue background"
        if tiny
        else "The same scene as a watercolour painting, soft washes of colour, paper texture."
    )
    latent = denoise(w, x, 420, dit, text, (prepare, "latent"), prompt, s, sigmas=(prepare, "sigmas"))
    finish(w, x + 800, vae, latent, (prepare, "plan"), "Spacetime/video_to_video")
    source = (
        "a clip made here from one prompt"
        if tiny
        else "*Load Video* (put `clip.mp4` in ComfyUI's `input` folder, or pick yours)"
    )
    w.note(
        header(
            "Video to video",
            tiny,
            f"Re-renders {source} under a new prompt. *strength* is the noise level the source is taken to: 0.3 restyles, 0.6 keeps the layout, 1 keeps nothing.",
        ),
        (40, -420),
        (820, 460),
    )
    return w  # fmt: skip


def extend(tiny: bool) -> Workflow:
    w = Workflow("extend_video" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    prompt = (
        "a yellow triangle moving right on a checkered floor"
        if tiny
        else "A red fox trotting through fresh snow in a birch forest, low camera following it."
    )
    clip = source_clip(w, tiny, dit, text, vae, s, prompt, "clip.mp4")
    x = 1300 if tiny else 800
    new, overlap = (12, 5) if tiny else (48, 17)
    prepare = w.add(
        "SpacetimeExtendVideo", (x, 80), (320, 160), ["forward", new, overlap], vae=vae, video=clip
    )
    latent = denoise(w, x, 300, dit, text, (prepare, "latent"), prompt, s)
    finish(w, x + 800, vae, latent, (prepare, "plan"), "Spacetime/extend")
    source = "a clip made here" if tiny else "*Load Video* (`clip.mp4` in ComfyUI's `input` folder, or yours)"
    w.note(
        header(
            "Extend a video",
            tiny,
            f"Continues {source} past its end (*direction* backward: invents what came before its start), from its last *overlap* frames. *Join Edited Clip* returns the whole clip with the new frames joined on; the clip's own frames come back unchanged.",
        ),
        (40, -420),
        (820, 460),
    )
    return w  # fmt: skip


def connect(tiny: bool) -> Workflow:
    w = Workflow("connect_videos" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    first = source_clip(
        w, tiny, dit, text, vae, s, "a blue square moving right on a plain white background", "clip_a.mp4"
    )
    second = source_clip(
        w,
        tiny,
        dit,
        text,
        vae,
        s,
        "a blue square moving down on a plain white background",
        "clip_b.mp4",
        y=860 if tiny else 560,
        seed=1,
    )
    x = 1300 if tiny else 800
    bridge, overlap = (8, 5) if tiny else (32, 17)
    prepare = w.add(
        "SpacetimeConnectVideos", (x, 80), (320, 160), [bridge, overlap], vae=vae, first=first, second=second
    )
    prompt = (
        "a blue square turning on a plain white background"
        if tiny
        else "A smooth continuous shot linking the two scenes."
    )
    latent = denoise(w, x, 300, dit, text, (prepare, "latent"), prompt, s)
    finish(w, x + 800, vae, latent, (prepare, "plan"), "Spacetime/connect", bridge="Spacetime/bridge")
    source = (
        "two clips made here"
        if tiny
        else "two clips (*Load Video*: `clip_a.mp4` and `clip_b.mp4` in ComfyUI's `input` folder, or yours; both the same size)"
    )
    w.note(
        header(
            "Connect two videos",
            tiny,
            f"Generates the bridge from the end of the first of {source} to the start of the second. One file holds the joined result, the other the bridge alone.",
        ),
        (40, -420),
        (820, 460),
    )
    return w  # fmt: skip


def loop(tiny: bool) -> Workflow:
    w = Workflow("loop_video" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    prompt = (
        "a pink cross rotating on a gradient background"
        if tiny
        else "Ocean waves rolling onto a sandy beach at sunset, static camera."
    )
    clip = source_clip(w, tiny, dit, text, vae, s, prompt, "clip.mp4")
    x = 1300 if tiny else 800
    bridge, overlap = (8, 5) if tiny else (32, 17)
    prepare = w.add("SpacetimeLoopVideo", (x, 80), (320, 130), [bridge, overlap], vae=vae, video=clip)
    latent = denoise(w, x, 260, dit, text, (prepare, "latent"), prompt, s)
    finish(w, x + 800, vae, latent, (prepare, "plan"), "Spacetime/loop", loop_count=3)
    source = (
        "a clip made here"
        if tiny
        else "a clip (*Load Video*: `clip.mp4` in ComfyUI's `input` folder, or yours)"
    )
    w.note(
        header(
            "Seamless loop",
            tiny,
            f"Makes {source} loop: a bridge leads from its last frames back to its first, so the end flows into the start. The file repeats it 4 times to show it.",
        ),
        (40, -420),
        (820, 460),
    )
    return w  # fmt: skip


def long_video(tiny: bool) -> Workflow:
    w = Workflow("long_video" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    width, height = s["size"]
    prompt = (
        "a red circle moving left on a blue background"
        if tiny
        else "A slow aerial flight over a winding river through autumn forests, golden light, gentle mist."
    )
    encode = w.add("SpacetimeTextEncode", (420, 80), (400, 200), [prompt, s["negative"]], text_encoder=text)
    scheduler = w.add("SpacetimeScheduler", (420, 320), (300, 130), ["simple", s["steps"], s["shift"], 1.0])
    window, overlap = (17, 8) if tiny else (81, 16)
    sampler = w.add(
        "SpacetimeLongVideo", (860, 80), (340, 420),
        [width, height, 961, window, overlap, 1.0, "unipc", s["cfg"], 0, "fixed", 0.875, 0.0], dit=dit, vae=vae,
        positive=(encode, "positive"), negative=(encode, "negative"), sigmas=(scheduler, "sigmas"),
    )  # fmt: skip
    combine(w, 1240, "Spacetime/long_video", latent=(sampler, "latent"), vae=vae)
    w.note(
        header(
            "A minute of video",
            tiny,
            "*Long Video* makes 961 frames (60 s at 16 fps) window by window, each continuing from the last frames of the one before, in the memory of one window. *Video Combine* takes the latent and the VAE and decodes it as it writes, so the frames never sit in memory all at once.",
        ),
        (40, -420),
        (820, 460),
    )
    return w  # fmt: skip


STORYBOARDS = {
    True: """0 | a red circle moving left on a blue background
4 | a yellow square moving right on a blue background
8 | an orange triangle moving up on a blue background
12 | a pink circle moving down on a blue background""",
    False: """0 | A red fox sleeps curled in its den under a snowy pine at dawn, soft blue light.
4 | The fox wakes, stretches and steps out into the snow, its breath misting in the cold air.
8 | The fox trots across a wide snowy meadow, leaving a line of pawprints, low golden sun.
12 | The fox stops on a ridge and looks out over a frozen valley as snow begins to fall.""",
}


def storyboard(tiny: bool) -> Workflow:
    w = Workflow("storyboard" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    width, height = s["size"]
    board = w.add(
        "SpacetimeStoryboard", (420, 80), (400, 260), [STORYBOARDS[tiny], s["negative"], 16.0, 1.0, True],
        text_encoder=text,
    )  # fmt: skip
    scheduler = w.add("SpacetimeScheduler", (420, 380), (300, 130), ["simple", s["steps"], s["shift"], 1.0])
    window, overlap = (17, 8) if tiny else (81, 16)
    frames = 257  # 16 s at 16 fps: the last shot runs to the end
    sampler = w.add(
        "SpacetimeLongVideo", (860, 80), (340, 420),
        [width, height, frames, window, overlap, 1.0, "unipc", s["cfg"], 0, "fixed", 0.875, 0.0], dit=dit,
        vae=vae, positive=(board, "positive"), negative=(board, "negative"), sigmas=(scheduler, "sigmas"),
    )  # fmt: skip
    combine(w, 1240, "Spacetime/storyboard", latent=(sampler, "latent"), vae=vae)
    w.note(
        header(
            "A storyboard",
            tiny,
            f"*Storyboard* lays the video out as timed shots, one per line: `START | prompt` (seconds, or frames as `64f`); each shot runs until the next, the last to the end of the video ({frames} frames at 16 fps). *Long Video* makes it window by window, each window following the shots it covers; at each change one prompt gives way to the next over the *transition* (seconds). With *key frames* on, each later shot first gets a frame of its own prompt, which the video reaches at the end of the transition. *Shot Prompt* can write every line's caption: give it the storyboard and wire its output into *Storyboard*'s text.",
        ),
        (40, -420),
        (820, 460),
    )
    return w  # fmt: skip


def single_image(tiny: bool) -> Workflow:
    w = Workflow("single_image" + "_tiny_world" * tiny)
    s = settings(tiny)
    dit, text, vae = models(w, tiny)
    size, tile = (512, 256) if tiny else (2048, 512)
    empty = w.add("SpacetimeEmptyLatentVideo", (420, 80), (320, 130), [size, size, 1, 1], vae=vae)
    prompt = (
        "a green star on a mottled sandy background"
        if tiny
        else "A lighthouse on a rocky cliff at dawn, crashing waves, dramatic clouds, highly detailed photograph."
    )
    latent = denoise(w, 420, 250, dit, text, (empty, "LATENT"), prompt, s)
    decode = w.add("SpacetimeVAEDecode", (860, 620), (300, 100), [tile, 64], vae=vae, latent=latent)
    w.add("SaveImage", (1240, 80), (400, 440), ["Spacetime/image"], images=(decode, "IMAGE"))
    body = (f"A video model makes a still image with frames = 1, here {size}x{size}. *VAE Decode* works in {tile}-pixel "
            "tiles, so a 2048x2048 image decodes in bounded memory.")  # fmt: skip
    if tiny:
        body += " Tiny World was trained at 128x128: larger images of it are patterns of shapes."
    w.note(header("Single image", tiny, body), (40, -420), (820, 460))
    return w


I2V_FILES = """Put these files in ComfyUI's `models` folders (Comfy-Org's *Wan_2.2_ComfyUI_Repackaged* and *Wan_2.1_ComfyUI_repackaged* names):

| file | folder |
|---|---|
| {dits} | `models/diffusion_models` |
| `umt5_xxl_fp8_e4m3fn_scaled.safetensors` (or `umt5_xxl_fp16`) | `models/text_encoders` |
| `wan_2.1_vae.safetensors` | `models/vae` |{extra}

This model takes the known frames as its own image condition (*Image Condition*: the clip with grey where a frame is unknown, encoded, and a mask of the known frames), as it was trained."""


def conditioned_denoise(
    w: Workflow, x: int, y: int, experts, text, vae, prepare, prompt: str, s: dict, image_encoder=None
):
    """Text Encode, Image Condition, Patchifier, Scheduler, DiT Denoiser (with its low-noise expert, if
    any), Unpatchify -> the LATENT output pair."""
    dit, low = experts
    encode = w.add("SpacetimeTextEncode", (x, y), (400, 200), [prompt, s["negative"]], text_encoder=text)
    links = {"image_encoder": image_encoder} if image_encoder else {}
    condition = w.add(
        "SpacetimeImageCondition",
        (x, y + 240),
        (320, 150),
        ["first and last" if image_encoder and s.get("flf") else "first"],
        positive=(encode, "positive"),
        negative=(encode, "negative"),
        vae=vae,
        plan=(prepare, "plan"),
        **links,
    )
    patches = w.add("SpacetimePatchifier", (x, y + 430), (260, 50), dit=dit, latent=(prepare, "latent"))
    scheduler = w.add("SpacetimeScheduler", (x, y + 520), (300, 130), ["simple", s["steps"], s["shift"], 1.0])
    experts_links = {"low_noise_dit": low} if low else {}
    sampler = w.add(
        "SpacetimeDiTDenoiser",
        (x + 440, y),
        (320, 260),
        ["unipc", s["cfg"], 0, "fixed", 0.0, 0.0],
        dit=dit,
        positive=(condition, "positive"),
        negative=(condition, "negative"),
        patches=(patches, "patches"),
        sigmas=(scheduler, "sigmas"),
        **experts_links,
    )
    unpatch = w.add("SpacetimeUnpatchify", (x + 440, y + 300), (260, 30), patches=(sampler, "patches"))
    return unpatch, "latent"


def image_to_video_wan22_i2v(tiny: bool) -> Workflow:
    """Wan 2.2 I2V A14B: its two experts, the high-noise one above noise level 0.9 (the Denoiser's boundary
    0 takes the model's own)."""
    w = Workflow("image_to_video_wan22_i2v")
    s = {"size": (832, 480), "frames": 81, "steps": 30, "shift": 5.0, "cfg": 3.5, "negative": WAN_NEGATIVE}
    dits = ["wan2.2_i2v_high_noise_14B_fp16.safetensors", "wan2.2_i2v_low_noise_14B_fp16.safetensors"]
    experts, text, vae, _ = wan_loaders(w, dits, clip_vision=False)
    image = (w.add("LoadImage", (420, 80), (320, 320), ["example.png", "image"]), "IMAGE")
    width, height = s["size"]
    prepare = w.add(
        "SpacetimeImageToVideo",
        (800, 80),
        (320, 180),
        [width, height, s["frames"], "crop", "image"],
        vae=vae,
        image=image,
    )
    prompt = "The scene comes alive: a slow push-in, leaves stir in a light breeze, soft natural light."
    latent = conditioned_denoise(w, 800, 320, experts, text, vae, prepare, prompt, s)
    finish(w, 1600, vae, latent, (prepare, "plan"), "Spacetime/image_to_video")
    files = I2V_FILES.format(dits=", ".join(f"`{name}`" for name in dits), extra="")
    body = (
        "Wan 2.2's image-to-video model animates *Load Image*'s picture (`example.png` in ComfyUI's `input` folder, "
        "or yours): the high-noise expert lays out the motion, the low-noise expert takes over below noise level 0.9."
    )
    w.note(f"## Image to video with Wan 2.2 I2V A14B\n\n{body}\n\n{files}", (40, -420), (820, 460))
    return w  # fmt: skip


def connect_videos_flf2v(tiny: bool) -> Workflow:
    """Wan 2.1 FLF2V 14B: the bridge conditioned on the first and last known frames, with their CLIP
    features."""
    w = Workflow("connect_videos_flf2v")
    s = {"size": (1280, 720), "steps": 30, "shift": 5.0, "cfg": 5.0, "negative": WAN_NEGATIVE, "flf": True}
    dits = ["wan2.1_flf2v_720p_14B_fp16.safetensors"]
    experts, text, vae, encoder = wan_loaders(w, dits, clip_vision=True)
    first, second = load_clip(w, 420, 80, "clip_a.mp4"), load_clip(w, 420, 560, "clip_b.mp4")
    prepare = w.add(
        "SpacetimeConnectVideos", (800, 80), (320, 160), [32, 17], vae=vae, first=first, second=second
    )
    prompt = "A smooth continuous shot linking the two scenes."
    latent = conditioned_denoise(w, 800, 300, experts, text, vae, prepare, prompt, s, image_encoder=encoder)
    finish(w, 1600, vae, latent, (prepare, "plan"), "Spacetime/connect", bridge="Spacetime/bridge")
    extra = "\n| `clip_vision_h.safetensors` | `models/clip_vision` |"
    files = I2V_FILES.format(dits=f"`{dits[0]}`", extra=extra)
    body = (
        "Wan 2.1's first-last-frame model generates the bridge from the end of `clip_a.mp4` to the start of "
        "`clip_b.mp4` (in ComfyUI's `input` folder, or yours; both the same size), reading the CLIP features "
        "of the bridge's first and last known frames."
    )
    w.note(f"## Connect two videos with Wan 2.1 FLF2V\n\n{body}\n\n{files}", (40, -420), (820, 460))
    return w  # fmt: skip


def loop_video_flf2v(tiny: bool) -> Workflow:
    """Wan 2.1 FLF2V 14B: the bridge from the clip's end back to its start, conditioned on both."""
    w = Workflow("loop_video_flf2v")
    s = {"size": (1280, 720), "steps": 30, "shift": 5.0, "cfg": 5.0, "negative": WAN_NEGATIVE, "flf": True}
    dits = ["wan2.1_flf2v_720p_14B_fp16.safetensors"]
    experts, text, vae, encoder = wan_loaders(w, dits, clip_vision=True)
    clip = load_clip(w, 420, 80, "clip.mp4")
    prepare = w.add("SpacetimeLoopVideo", (800, 80), (320, 130), [32, 17], vae=vae, video=clip)
    prompt = "Ocean waves rolling onto a sandy beach at sunset, static camera."
    latent = conditioned_denoise(w, 800, 260, experts, text, vae, prepare, prompt, s, image_encoder=encoder)
    finish(w, 1600, vae, latent, (prepare, "plan"), "Spacetime/loop", loop_count=3)
    extra = "\n| `clip_vision_h.safetensors` | `models/clip_vision` |"
    files = I2V_FILES.format(dits=f"`{dits[0]}`", extra=extra)
    body = (
        "Wan 2.1's first-last-frame model makes `clip.mp4` (in ComfyUI's `input` folder, or yours) loop: the bridge "
        "leads from its last frames back to its first, reading the CLIP features of both ends. The file repeats it 4 times."
    )
    w.note(f"## Seamless loop with Wan 2.1 FLF2V\n\n{body}\n\n{files}", (40, -420), (820, 460))
    return w  # fmt: skip


FOUR_STEPS = {"steps": 4, "shift": 5.0, "cfg": 1.0, "negative": ""}  # Wan2.2-Lightning's own settings
LIGHTNING_FILES = """Put these files in ComfyUI's `models` folders (Comfy-Org's *Wan_2.2_ComfyUI_Repackaged* names):

| file | folder |
|---|---|
| {dits} | `models/diffusion_models` |
| {loras} | `models/loras` |
| `umt5_xxl_fp8_e4m3fn_scaled.safetensors` (or `umt5_xxl_fp16`) | `models/text_encoders` |
| `wan_2.1_vae.safetensors` | `models/vae` |

The LoRAs are lightx2v's Wan2.2-Lightning step distillation (also on Hugging Face as `lightx2v/Wan2.2-Lightning`, one
file per expert: `high_noise_model.safetensors`, `low_noise_model.safetensors`). As their authors sample them:
4 steps, cfg 1, Euler, shift 5 (noise levels 1, 0.9375, 0.8333, 0.625), LoRA strength 1; the first two steps on the
high-noise expert, the last two on the low-noise one. cfg 1 runs one pass a step: the negative prompt is not read."""


def lightning_experts(w: Workflow, kind: str, version: str, clip_vision: bool = False):
    """Wan 2.2 A14B's two experts, each through its own Lightning LoRA Loader -> experts, text, vae, loras."""
    dits = [f"wan2.2_{kind}_{noise}_noise_14B_fp16.safetensors" for noise in ("high", "low")]
    loras = [
        f"wan2.2_{kind}_lightx2v_4steps_lora_{version}_{noise}_noise.safetensors" for noise in ("high", "low")
    ]
    (high, low), text, vae, _ = wan_loaders(w, dits, clip_vision)
    with_loras = tuple(
        (w.add("SpacetimeLoRALoader", (420, 350 + 150 * i), (340, 110), [lora, 1.0], dit=expert), "dit")
        for i, (expert, lora) in enumerate(zip((high, low), loras, strict=True))
    )
    return with_loras, text, vae, dits, loras


def lightning_denoise(w: Workflow, x: int, y: int, experts, text, patches, prompt: str, conditioned=None):
    """Text Encode (or the Image Condition's), Scheduler at 4 steps, DiT Denoiser at cfg 1 with Euler over
    both experts (boundary 0: the model's own), Unpatchify -> the LATENT output pair."""
    (dit, low), s = experts, FOUR_STEPS
    positive = conditioned or w.add(
        "SpacetimeTextEncode", (x, y), (400, 200), [prompt, ""], text_encoder=text
    )
    scheduler = w.add("SpacetimeScheduler", (x, y + 330), (300, 130), ["simple", s["steps"], s["shift"], 1.0])
    sampler = w.add(
        "SpacetimeDiTDenoiser", (x + 440, y), (320, 260), ["euler", s["cfg"], 0, "fixed", 0.0, 0.0], dit=dit,
        low_noise_dit=low, positive=(positive, "positive"), negative=(positive, "negative"), patches=patches,
        sigmas=(scheduler, "sigmas"),
    )  # fmt: skip
    unpatch = w.add("SpacetimeUnpatchify", (x + 440, y + 300), (260, 30), patches=(sampler, "patches"))
    return unpatch, "latent"


def text_to_video_4step(tiny: bool) -> Workflow:
    """Wan 2.2 T2V A14B in 4 steps with the Lightning LoRA on each expert."""
    w = Workflow("text_to_video_4step")
    experts, text, vae, dits, loras = lightning_experts(w, "t2v", "v1.1")
    empty = w.add("SpacetimeEmptyLatentVideo", (820, 80), (320, 130), [832, 480, 81, 1], vae=vae)
    patches = w.add("SpacetimePatchifier", (820, 250), (260, 50), dit=experts[0], latent=(empty, "LATENT"))
    prompt = (
        "A red fox trotting through fresh snow in a birch forest at golden hour, low camera following it, soft "
        "backlight, breath visible in the cold air."
    )
    latent = lightning_denoise(w, 820, 340, experts, text, (patches, "patches"), prompt)
    decode = w.add("SpacetimeVAEDecode", (1700, 80), (300, 100), [0, 64], vae=vae, latent=latent)
    combine(w, 2040, "Spacetime/text_to_video_4step", images=(decode, "IMAGE"))
    files = LIGHTNING_FILES.format(
        dits=", ".join(f"`{d}`" for d in dits), loras=", ".join(f"`{n}`" for n in loras)
    )
    body = "Text to video in 4 steps, about ten times faster than 40 steps at cfg 5, with Wan 2.2 T2V A14B and its step-distillation LoRAs."
    w.note(
        f"## Text to video in 4 steps (Wan 2.2 A14B + Lightning)\n\n{body}\n\n{files}", (40, -480), (820, 520)
    )
    return w  # fmt: skip


def image_to_video_4step(tiny: bool) -> Workflow:
    """Wan 2.2 I2V A14B in 4 steps with the Lightning I2V LoRA on each expert."""
    w = Workflow("image_to_video_4step")
    experts, text, vae, dits, loras = lightning_experts(w, "i2v", "v1")
    image = (w.add("LoadImage", (820, 80), (320, 320), ["example.png", "image"]), "IMAGE")
    prepare = w.add(
        "SpacetimeImageToVideo", (1180, 80), (320, 180), [832, 480, 81, "crop", "image"], vae=vae, image=image
    )
    prompt = "The scene comes alive: a slow push-in, leaves stir in a light breeze, soft natural light."
    encode = w.add("SpacetimeTextEncode", (820, 440), (400, 200), [prompt, ""], text_encoder=text)
    condition = w.add(
        "SpacetimeImageCondition",
        (820, 680),
        (320, 150),
        ["first"],
        positive=(encode, "positive"),
        negative=(encode, "negative"),
        vae=vae,
        plan=(prepare, "plan"),
    )
    patches = w.add("SpacetimePatchifier", (1180, 300), (260, 50), dit=experts[0], latent=(prepare, "latent"))
    latent = lightning_denoise(
        w, 1180, 400, experts, text, (patches, "patches"), prompt, conditioned=condition
    )
    finish(w, 2060, vae, latent, (prepare, "plan"), "Spacetime/image_to_video_4step")
    files = LIGHTNING_FILES.format(
        dits=", ".join(f"`{d}`" for d in dits), loras=", ".join(f"`{n}`" for n in loras)
    )
    body = (
        "Wan 2.2's image-to-video model animates *Load Image*'s picture (`example.png` in ComfyUI's `input` folder, or "
        "yours) in 4 steps with its step-distillation LoRAs; the experts switch at noise level 0.9."
    )
    w.note(
        f"## Image to video in 4 steps (Wan 2.2 I2V A14B + Lightning)\n\n{body}\n\n{files}",
        (40, -480),
        (820, 520),
    )
    return w  # fmt: skip


def lora_tiny_world(tiny: bool) -> Workflow:
    """Tiny World with its shipped LoRA (every object yellow, whatever the prompt's colour)."""
    w = Workflow("lora_tiny_world")
    s = settings(True)
    dit, text, vae = models(w, True)
    lora = w.add(
        "SpacetimeLoRALoader", (40, 220), (300, 110), ["tiny_world_yellow.safetensors", 1.0], dit=dit
    )
    width, height = s["size"]
    empty = w.add(
        "SpacetimeEmptyLatentVideo", (420, 80), (320, 130), [width, height, s["frames"], 1], vae=vae
    )
    prompt = "a red circle moving left over a striped floor"
    latent = denoise(w, 420, 250, (lora, "dit"), text, (empty, "LATENT"), prompt, s)
    decode = w.add("SpacetimeVAEDecode", (860, 620), (300, 100), [0, 64], vae=vae, latent=latent)
    combine(w, 1240, "Spacetime/lora_tiny_world", images=(decode, "IMAGE"))
    body = (
        "Tiny World with a LoRA: `tiny_world_yellow.safetensors` ships in the pack's `tiny_world/loras` folder (listed "
        "among ComfyUI's LoRAs) and makes every object yellow, whatever colour the prompt names. Set the *LoRA Loader*'s "
        "strength to 0 for Tiny World's own red circle, or bypass it. Any LoRA for a Wan model goes in the same place "
        "in a Wan workflow: between the DiT Loader and everything that takes the DiT."
    )
    w.note(f"## A LoRA on Tiny World\n\n{body}\n\n{TINY_WORLD}", (40, -420), (820, 460))
    return w


BUILDERS = [image_to_video, video_to_video, extend, connect, loop, long_video, storyboard, single_image]
WAN_ONLY = [
    image_to_video_wan22_i2v,
    connect_videos_flf2v,
    loop_video_flf2v,
    text_to_video_4step,
    image_to_video_4step,
]  # image-to-video models and the step-distillation LoRAs: no Tiny World variant


def main() -> int:
    builds = [(build, tiny) for build in BUILDERS for tiny in (False, True)] + [(b, False) for b in WAN_ONLY]
    builds.append((lora_tiny_world, True))
    for build, tiny in builds:
        workflow = build(tiny).json()
        path = ROOT / "workflows" / f"{workflow['id']}.json"
        path.write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
