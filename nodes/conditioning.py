"""Image Condition: an edit's known frames as the image condition of Wan's image-to-video models, added to
the CONDITIONING under core's keys (as core's WanImageToVideo adds them)."""

from __future__ import annotations

from .. import editing as edits
from .. import host
from ..editing.condition import condition_known, first_and_last, image_condition
from ..image_encoders import encode_images
from .editing import PLAN
from .image_encoder import IMAGE_ENCODER
from .vae import VAE

CLIP_IMAGES = ("first", "first and last")


def _with_options(conditioning: list, options: dict) -> list:
    """CONDITIONING with `options` added to every entry (core's node_helpers.conditioning_set_values)."""
    return [[embeddings, {**entry_options, **options}] for embeddings, entry_options in conditioning]


class SpacetimeImageCondition:
    CATEGORY = "Spacetime/conditioning"
    FUNCTION = "condition"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "The prompt with the image condition: connect the DiT Denoiser (or core's KSampler).",
        "The negative prompt with the same image condition.",
    )
    DESCRIPTION = (
        "For Wan's image-to-video models (Wan 2.2 I2V A14B, Wan 2.1 I2V and FLF2V): gives them an edit's "
        "known frames (from Image to Video, Extend, Connect or Loop; for Video to Video, the source's first "
        "frame) the way they were trained to take them: the clip with its known frames and grey elsewhere, "
        "encoded, and a mask of the known frames; for Wan 2.1, also the CLIP features of the first (and, for "
        "FLF2V, the last) image. Text-to-video models need no such node."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The prompt, from Text Encode (Spacetime)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt."}),
                "vae": (VAE, {"tooltip": "The model's VAE (Wan 2.1 VAE for Wan's image-to-video models)."}),
                "plan": (PLAN, {"tooltip": "From the editing node that placed the known frames."}),
            },
            "optional": {
                "image_encoder": (IMAGE_ENCODER, {"tooltip": "Wan 2.1 I2V / FLF2V: the CLIP vision encoder (clip_vision_h), from Image Encoder Loader (Spacetime). Leave empty for Wan 2.2 I2V A14B, which reads no image features."}),
                "clip_images": (list(CLIP_IMAGES), {"default": "first", "tooltip": "Which known frames the image encoder reads. first: the clip's first frame (Wan 2.1 I2V). first and last: its first and last frames (Wan 2.1 FLF2V, for connect and loop)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def condition(
        self, positive, negative, vae, plan, image_encoder=None, clip_images="first", unique_id=None
    ):
        if clip_images not in CLIP_IMAGES:
            raise ValueError(f"clip_images {clip_images!r}: expected one of {', '.join(CLIP_IMAGES)}.")
        encode = edits.clip_encoder(vae, host.progress_bars(unique_id))
        latent, mask = image_condition(plan, encode, vae.temporal_stride)
        options = {"concat_latent_image": latent, "concat_mask": 1.0 - mask}  # core's mask: 0 where known
        if image_encoder is not None:
            options["clip_vision_output"] = _features(image_encoder, plan, clip_images == "first and last")
        return _with_options(positive, options), _with_options(negative, options)


def _features(image_encoder, plan, last: bool):
    """CLIP features of the clip's first frame (and, with `last`, of its last frame beside them)."""
    known, sources = condition_known(plan)
    if not bool(known[0]):
        raise ValueError(
            f"this clip's first frame is not known ({plan.describe()}): Wan 2.1 I2V reads the CLIP features of "
            "a known first frame. Leave the image encoder out and use Wan 2.2 I2V A14B for this edit."
        )
    if last and not bool(known[-1]):
        raise ValueError(
            f"clip_images is 'first and last' but this clip's last frame is not known ({plan.describe()}): "
            "first and last is for connect and loop (Wan 2.1 FLF2V); use first."
        )
    host.throw_if_interrupted()
    with host.on_compute_device(image_encoder) as device:
        first = encode_images(image_encoder, sources[0, :1], crop=False, device=device)
        features = (
            first_and_last(first, encode_images(image_encoder, sources[0, -1:], crop=False, device=device))
            if last
            else first
        )
    return features.to(host.intermediate_device())
