"""SpacetimeTinyWorldLoader: the pack's own small model, which ships with it and needs no download."""

from __future__ import annotations

from ..pipeline import load_tiny_world
from .dit import DIT
from .text import TEXT_ENCODER
from .vae import VAE


class SpacetimeTinyWorldLoader:
    CATEGORY = "Spacetime/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (DIT, TEXT_ENCODER, VAE)
    RETURN_NAMES = ("dit", "text_encoder", "vae")
    OUTPUT_TOOLTIPS = (
        "Tiny World's DiT (6 layers, width 192; trained with clean pinned frames).",
        "Tiny World's text encoder (a small UMT5 with its own vocabulary).",
        "Tiny World's VAE (the Wan 2.2 VAE design at width 16: 4x8x8 compression, 12 latent channels).",
    )
    DESCRIPTION = (
        "Loads Tiny World, the small text-to-video model this pack trains on its own world of coloured shapes "
        "(circles, squares, triangles, stars, crosses in 8 colours moving left, right, up or down, growing, "
        "shrinking, rotating or staying still, over plain and textured backgrounds). It ships with the pack, so "
        "every workflow runs without a download. Best at 128x128, 17 frames, 20 steps, shift 3, cfg 5. These are "
        "preview weights: backgrounds follow the prompt, but the object's colour, shape and motion often do not "
        "yet (docs/tiny-world.md has the measured scores)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return load_tiny_world()
