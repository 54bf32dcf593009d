"""The editing suite: each node places known frames in a LATENT (core's noise_mask) for the Patchifier,
and hands a SPACETIME_CLIP_PLAN to Join Edited Clip, which puts the decoded result together with its
sources. Image to video, video to video, extend forward/backward, connect two clips, seamless loop; and
Long Video, which makes a video of any length window by window."""

from __future__ import annotations

import torch

from .. import editing as edits
from .. import host
from ..editing.storyboard import Storyboard
from ..samplers.denoiser import Sampling
from ..samplers.guidance import MAX_CFG, Guider
from ..samplers.noise import MAX_SEED
from ..samplers.solvers import SOLVERS
from ..vae import MAX_FRAMES, MAX_SIZE, frames_to_video
from .dit import DIT
from .image_encoder import IMAGE_ENCODER
from .vae import VAE

PLAN = "SPACETIME_CLIP_PLAN"
LATENT_TOOLTIP = "The latent to denoise: connect the Patchifier. Known frames are kept by its noise_mask."
PLAN_TOOLTIP = "How the decoded frames join their sources: connect Join Edited Clip."


def _latent_size(vae, height: int, width: int) -> tuple[int, int, int]:
    vae.check_size(1, height, width)
    return vae.latent_channels, height // vae.spatial_stride, width // vae.spatial_stride


def _clip(vae, images, name: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A clip's frames as RGB, and its latent frame size; a size the VAE cannot take is refused."""
    clip = edits.rgb_frames(images, name)
    height, width = clip.shape[1:3]
    try:
        return clip, _latent_size(vae, height, width)
    except ValueError as error:
        raise ValueError(
            f"{name} is {width}x{height}: {error} Resize it first (e.g. core's Upscale Image, or crop), "
            "to a size the model takes."
        ) from None


def _output(edit: edits.EditLatent):
    latent = {"samples": edit.latent.to(host.intermediate_device())}
    if edit.noise_mask is not None:
        latent["noise_mask"] = edit.noise_mask.to(host.intermediate_device())
    return latent, edit.plan


def _frames_widget(default: int, tooltip: str, minimum: int = 1) -> tuple:
    return ("INT", {"default": default, "min": minimum, "max": MAX_FRAMES, "tooltip": tooltip})


OVERLAP_TOOLTIP = (
    "Frames of the clip the model sees and continues from. The VAE groups frames in fours after the first, "
    "so known frames that open the generated part are used as 1, 5, 9, ... and those that close it as 4, 8, "
    "...: the largest such count not above this one. More overlap carries motion on better."
)


class _EditNode:
    """What the editing nodes share: their menu, their function, and (LATENT, plan) out."""

    CATEGORY = "Spacetime/editing"
    FUNCTION = "prepare"
    RETURN_TYPES = ("LATENT", PLAN)
    RETURN_NAMES = ("latent", "plan")
    OUTPUT_TOOLTIPS = (LATENT_TOOLTIP, PLAN_TOOLTIP)


VAE_INPUT = (VAE, {"tooltip": "The VAE of the model that will denoise the latent."})


class SpacetimeImageToVideo(_EditNode):
    DESCRIPTION = (
        "Animates an image: it becomes the first frame of a video the DiT continues under the prompt. Each "
        "image of a batch starts its own video. Works with any IMAGE: Load Image, or an image generator's "
        "output."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": VAE_INPUT,
                "image": ("IMAGE", {"tooltip": "The first frame. An alpha channel is composited over black."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": "Video width in pixels (a multiple of 16; 32 for Wan 2.2 TI2V). Tiny World: 128."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": "Video height in pixels (a multiple of 16; 32 for Wan 2.2 TI2V). Tiny World: 128."}),
                "frames": ("INT", {"default": 81, "min": 5, "max": MAX_FRAMES, "step": 4, "tooltip": "Frames of the video, the image included: 4k+1 (5, 9, ..., 81)."}),
                "fit": (list(edits.FIT_RULES), {"default": "crop", "tooltip": "How an image of another size or shape becomes width x height. crop: scale to cover, cut the centre (nothing stretched, edges lost). pad: scale to fit inside, black bars (nothing lost). stretch: scale each side on its own."}),
            },
            "optional": {
                "opening": (list(edits.OPENINGS), {"default": "image", "tooltip": "image: the image alone is the first latent frame, as in Wan's own image to video. held: the image is held still for 5 frames (the copies are left out of the result), so the video starts from rest. Try held when the first new frame jumps away from the image."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def prepare(self, vae, image, width, height, frames, fit, opening="image", unique_id=None):
        images = edits.fit_frames(edits.rgb_frames(image, "image"), width, height, fit)
        size = _latent_size(vae, height, width)
        encode = edits.clip_encoder(vae, host.progress_bars(unique_id))
        return _output(edits.image_to_video(encode, vae.temporal_stride, size, images, frames, opening))


class SpacetimeVideoToVideo(_EditNode):
    RETURN_TYPES = ("LATENT", "SIGMAS", PLAN)
    RETURN_NAMES = ("latent", "sigmas", "plan")
    OUTPUT_TOOLTIPS = (
        "The source video's latent: connect the Patchifier.",
        "The schedule scaled to start at `strength`: connect the DiT Denoiser.",
        PLAN_TOOLTIP,
    )
    DESCRIPTION = (
        "Re-renders a video under a new prompt (SDEdit): its latent is noised to `strength` and denoised "
        "from there. Low strength keeps layout and motion and changes the look; 1 keeps nothing."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": VAE_INPUT,
                "video": ("IMAGE", {"tooltip": "The frames to re-render (any count: padded to 4k+1 by repeating the last frame, and trimmed back by Join Edited Clip)."}),
                "sigmas": ("SIGMAS", {"tooltip": "A full schedule (from Scheduler (Spacetime), denoise 1): its steps are kept, scaled to start at `strength`."}),
                "strength": ("FLOAT", {"default": 0.6, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "The noise level the source is taken to (0..1): how much is redrawn. 0.3 restyles, 0.6 keeps the layout, 1 starts from pure noise."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def prepare(self, vae, video, sigmas, strength, unique_id=None):
        clip, _ = _clip(vae, video, "video")
        scaled = edits.strength_sigmas(sigmas, strength)
        encode = edits.clip_encoder(vae, host.progress_bars(unique_id))
        latent, plan = _output(edits.video_to_video(encode, vae.temporal_stride, clip))
        return latent, scaled, plan


class SpacetimeExtendVideo(_EditNode):
    DESCRIPTION = (
        "Continues a clip past its end (forward) or invents what came before its start (backward), from its "
        "last or first `overlap` frames. Join Edited Clip returns the whole clip with the new frames joined on."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": VAE_INPUT,
                "video": ("IMAGE", {"tooltip": "The clip to extend (its frames, at a size the model takes)."}),
                "direction": (["forward", "backward"], {"tooltip": "forward: after the last frame. backward: before the first."}),
                "new_frames": _frames_widget(12, "Frames to add, rounded up to whole latent frames (forward: a multiple of 4; backward: 4k+1)."),
                "overlap": _frames_widget(5, OVERLAP_TOOLTIP),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def prepare(self, vae, video, direction, new_frames, overlap, unique_id=None):
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction {direction!r}: expected forward or backward.")
        clip, size = _clip(vae, video, "video")
        encode = edits.clip_encoder(vae, host.progress_bars(unique_id))
        backward = direction == "backward"
        return _output(edits.extend(encode, vae.temporal_stride, size, clip, new_frames, overlap, backward))


class SpacetimeConnectVideos(_EditNode):
    DESCRIPTION = (
        "Generates the bridge from the end of one clip to the start of another. Join Edited Clip returns "
        "the joined result (first clip, bridge, second clip) and the bridge alone."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": VAE_INPUT,
                "first": ("IMAGE", {"tooltip": "The clip that comes first; the bridge starts from its last frames."}),
                "second": ("IMAGE", {"tooltip": "The clip that comes after; the bridge leads into its first frames. Same size as the first."}),
                "bridge_frames": _frames_widget(8, "New frames between the two clips, rounded up to a multiple of 4."),
                "overlap": _frames_widget(5, OVERLAP_TOOLTIP),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def prepare(self, vae, first, second, bridge_frames, overlap, unique_id=None):
        a, size = _clip(vae, first, "first")
        b = edits.rgb_frames(second, "second")
        encode = edits.clip_encoder(vae, host.progress_bars(unique_id))
        return _output(edits.connect(encode, vae.temporal_stride, size, a, b, bridge_frames, overlap))


class SpacetimeLoopVideo(_EditNode):
    DESCRIPTION = (
        "Makes a clip loop seamlessly: generates a bridge from its last frames back to its first, so the "
        "last frame of the result flows into the first. Join Edited Clip returns the clip with the bridge."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": VAE_INPUT,
                "video": ("IMAGE", {"tooltip": "The clip to loop."}),
                "bridge_frames": _frames_widget(8, "New frames that lead from the end back to the start, rounded up to a multiple of 4."),
                "overlap": _frames_widget(5, OVERLAP_TOOLTIP),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def prepare(self, vae, video, bridge_frames, overlap, unique_id=None):
        clip, size = _clip(vae, video, "video")
        encode = edits.clip_encoder(vae, host.progress_bars(unique_id))
        return _output(
            edits.connect(encode, vae.temporal_stride, size, clip, clip, bridge_frames, overlap, loop=True)
        )


class SpacetimeJoinEditedClip:
    CATEGORY = "Spacetime/editing"
    FUNCTION = "join"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("video", "new_frames")
    OUTPUT_TOOLTIPS = (
        "The whole result: the source frames joined with the generated ones (for a loop, ready to repeat).",
        "Only the generated frames (a bridge, an extension, the animation after the first frame).",
    )
    DESCRIPTION = (
        "Puts an edit together after VAE Decode: known source frames come back exactly as given, the jump "
        "where source and generated frames meet is spread over the next `blend` new frames (no step stands "
        "out at the join), and the rest of the source clip is joined on."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "plan": (PLAN, {"tooltip": "From the editing node that made the latent."}),
                "images": ("IMAGE", {"tooltip": "VAE Decode's frames of the denoised latent."}),
                "blend": ("INT", {"default": edits.DEFAULT_BLEND, "min": 0, "max": 64, "tooltip": "New frames next to a known frame over which the jump at the join is spread (the VAE's loss at the known frame, and any step beyond the generated motion). 0: none."}),
            }
        }  # fmt: skip

    def join(self, plan, images, blend):
        video, new = edits.assemble(plan, images, blend)
        device = host.intermediate_device()
        return video.to(device), new.to(device)


class SpacetimeLongVideo:
    CATEGORY = "Spacetime/editing"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (
        "The whole video's latent, with each window's opening. Connect it with the VAE to Video Combine's "
        "latent and vae inputs: it is decoded window by window as it is written, never held as frames, and "
        "the step at each window join is spread over the frames after it (VAE Decode (Spacetime) decodes "
        "it the same way, holding every frame; other decoders see one latent video, whose windows open with "
        "a tint).",
    )
    DESCRIPTION = (
        "A video of any length (a minute or more) in the memory of one window: the first window is made from "
        "the prompt, each next one continues from the last frames of the one before (overlap_frames - 3 of "
        "them), with a colour-drift correction between windows. Give it a storyboard (Storyboard (Spacetime)) "
        "as the positive prompt, and each window follows the shots it covers."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "The DiT: a text-to-video model, Wan 2.2 TI2V 5B, or Wan 2.2 I2V A14B (with an image)."}),
                "vae": (VAE, {"tooltip": "Sets the latent channels and strides, and opens each window after the first: the last frames of the window before are decoded and encoded again as the start of a clip, the way every clip the model learnt from starts."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt, from Text Encode (Spacetime); or a storyboard of timed shots, from Storyboard (Spacetime), which the windows follow."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (unused when cfg is 1)."}),
                "sigmas": ("SIGMAS", {"tooltip": "Each window's schedule, from Scheduler (Spacetime)."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": "Pixels; a multiple of 16 (32 for Wan 2.2 TI2V). Tiny World: 128."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": "Pixels; a multiple of 16 (32 for Wan 2.2 TI2V). Tiny World: 128."}),
                "frames": ("INT", {"default": 961, "min": 1, "max": edits.MAX_LONG_FRAMES, "step": 4, "tooltip": "Frames of the whole video, 4k+1: 961 is a minute at 16 fps."}),
                "window_frames": ("INT", {"default": 81, "min": 9, "max": MAX_FRAMES, "step": 4, "tooltip": "Frames the DiT makes at once, 4k+1: the length the model was trained at (Wan: 81, Tiny World: 17). Memory depends on this, not on the length."}),
                "overlap_frames": ("INT", {"default": 16, "min": 4, "max": MAX_FRAMES, "step": 4, "tooltip": "How much each window continues from, a multiple of 4 (rounded down): overlap / 4 latent frames, which hold the last overlap - 3 frames of the window before (16: 13 frames). More carries motion on better; each window adds window - overlap frames."}),
                "correction": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Colour-drift correction: how far each window's latent mean per channel is moved towards the first window's (from nothing at the join, rising over the window). 0: off."}),
                "solver": (list(SOLVERS), {"default": "unipc", "tooltip": "As in the DiT Denoiser."}),
                "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01, "tooltip": "Classifier-free guidance (1: off)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": "Window k uses seed + k (wrapping past the largest seed to 0)."}),
            },
            "optional": {
                "low_noise_dit": (DIT, {"tooltip": "Wan 2.2 A14B: the low-noise expert, which takes over below the boundary."}),
                "boundary": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.005, "tooltip": "The noise level below which the low-noise expert takes over; 0: the model's own (Wan 2.2 A14B: 0.875 for text to video, 0.9 for image to video). Change it only to move the switch. Unused without a low-noise DiT."}),
                "image": ("IMAGE", {"tooltip": "Optional: the video's first frame (cropped to width x height), which the first window continues. Image-to-video models (Wan 2.2 I2V A14B, Wan 2.1 I2V) need it."}),
                "image_encoder": (IMAGE_ENCODER, {"tooltip": "Wan 2.1 I2V: the CLIP vision encoder (clip_vision_h), for each window's first frame. Other models need none."}),
                "cache": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Step caching, as in the DiT Denoiser: skip DiT calls while the output changes by less than this; 0: off, 0.3 a good start. Each window starts its own cache."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def sample(
        self, dit, vae, positive, negative, sigmas, width, height, frames, window_frames, overlap_frames,
        correction, solver, cfg, seed, low_noise_dit=None, boundary=0.0, image=None, image_encoder=None,
        cache=0.0, unique_id=None,
    ):  # fmt: skip
        storyboard = Storyboard.from_conditioning(positive)
        if storyboard is not None:  # the guider's prompt: the first shot's (each window has its own)
            positive = [[storyboard.contexts[:1], {}]]
        guider = Guider.from_conditioning(
            dit, positive, negative, cfg, low_noise_dit=low_noise_dit, boundary=boundary or None
        )
        windows = edits.Windows.from_frames(window_frames, overlap_frames, vae.temporal_stride, correction)
        start = None
        if image is not None:
            start = frames_to_video(
                edits.fit_frames(edits.rgb_frames(image, "image")[:1], width, height, "crop")
            )
        size = (frames, height, width)
        sampling = Sampling(sigmas, solver, seed, cache)
        made = edits.LongVideo(guider, sampling, vae, size, windows, start, image_encoder, storyboard)
        latent = made.latent(host.progress_bars(unique_id))
        return ({**latent, "samples": latent["samples"].to(host.intermediate_device())},)
