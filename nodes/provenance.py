"""Provenance: SpacetimeDetectWatermark (is the pack's invisible watermark in these frames?)."""

from __future__ import annotations

from ..provenance.watermark import THRESHOLD, detect


class SpacetimeDetectWatermark:
    CATEGORY = "Spacetime/provenance"
    FUNCTION = "detect"
    OUTPUT_NODE = True
    RETURN_TYPES = ("BOOLEAN", "FLOAT", "STRING")
    RETURN_NAMES = ("watermarked", "score", "report")
    OUTPUT_TOOLTIPS = (
        "True when the watermark is found.",
        f"How strongly, in standard deviations of unmarked video (found at {THRESHOLD} or more; unmarked "
        "video scores about 3 to 5).",
        "The verdict as a sentence.",
    )
    DESCRIPTION = (
        "Looks for the invisible watermark that Video Combine (Spacetime) adds, in frames loaded from any "
        "video, GIF or image sequence, re-encoded, resized or cropped or not. Give the frames from the start "
        "of the clip, at least 16; 32 or more find it most reliably."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, in order, from the first frame of the clip."}),
            }
        }

    def detect(self, images):
        found = detect(images)
        return {"ui": {"text": [str(found)]}, "result": (found.detected, found.score, str(found))}
