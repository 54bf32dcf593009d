"""Provenance: SpacetimeDetectWatermark (is the pack's invisible watermark in these frames?)."""

from __future__ import annotations

from ..provenance.watermark import KEY_FILE, SHARED_KEYS, THRESHOLD, detect, shared_key, shared_keys

OWN_KEY = "this installation"


class SpacetimeDetectWatermark:
    CATEGORY = "Spacetime/provenance"
    FUNCTION = "detect"
    OUTPUT_NODE = True
    RETURN_TYPES = ("BOOLEAN", "FLOAT", "STRING")
    RETURN_NAMES = ("watermarked", "score", "report")
    OUTPUT_TOOLTIPS = (
        "True when the watermark is found.",
        f"How strongly, in standard deviations of unmarked video (found at {THRESHOLD} or more; unmarked "
        "video scores about 4 to 6).",
        "The verdict as a sentence.",
    )
    DESCRIPTION = (
        "Looks for the invisible watermark that Video Combine (Spacetime) adds, in frames loaded from any "
        "video, GIF or image sequence, re-encoded, resized, cropped, mirrored or turned or not. Give the frames "
        "from the start of the clip, at least 16; 32 or more find it most reliably. Each installation marks "
        "with its own secret key: to check another's videos, its owner shares the key."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, in order, from the first frame of the clip."}),
            },
            "optional": {
                "key": (
                    [OWN_KEY, *shared_keys()],
                    {
                        "default": OWN_KEY,
                        "tooltip": "Whose watermark to look for: this installation's, or one whose owner shared "
                        f"their {KEY_FILE} (put it in user/spacetime_c2pa/{SHARED_KEYS}/ under any name ending "
                        "in .key, then refresh). The workflow stores the file's name, never the key.",
                    },
                ),
            },
        }

    def detect(self, images, key=OWN_KEY):
        found = detect(images, None if key == OWN_KEY else shared_key(key))
        return {"ui": {"text": [str(found)]}, "result": (found.detected, found.score, str(found))}
