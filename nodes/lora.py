"""SpacetimeLoRALoader: a LoRA on a DiT."""

from __future__ import annotations

from .. import host
from ..lora import load_lora
from .dit import DIT


class SpacetimeLoRALoader:
    CATEGORY = "Spacetime/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (DIT,)
    RETURN_NAMES = ("dit",)
    OUTPUT_TOOLTIPS = (
        "The DiT with this LoRA after any it already had (the same weights; nothing is copied).",
    )
    DESCRIPTION = (
        "Adds a LoRA from models/loras to a DiT: styles, characters, camera moves, and the step-distillation "
        "LoRAs (lightx2v, Lightning, CausVid) that sample in 4 steps at cfg 1. Chain several, each with its "
        "strength. For Wan 2.2 A14B, give each expert its own chain (each expert has its own LoRA file). "
        "Reads the original Wan / ComfyUI, kohya / musubi-tuner and diffusers / PEFT layouts."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "The DiT (from DiT Loader, or another LoRA Loader)."}),
                "lora_name": (
                    host.model_filenames("loras"),
                    {"tooltip": "A LoRA for this Wan model in ComfyUI's models/loras folder (.safetensors)."},
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "How much of the LoRA to add: 1 as trained, 0 none (the DiT unchanged), "
                        "negative to push away from it. Changing it never alters the loaded model.",
                    },
                ),
            }
        }

    def load(self, dit, lora_name, strength):
        lora = load_lora(host.model_path("loras", lora_name), dit)
        return (dit.with_lora(lora, strength),)
