"""Diffusion transformers over spacetime patches (Wan 2.1 / 2.2 family), patchify and RoPE."""

from .config import PRESETS, WanConfig
from .loader import load_dit
from .patchify import SpacetimePatches, patchify, unpatchify
from .wan import WanDiT

__all__ = ["PRESETS", "SpacetimePatches", "WanConfig", "WanDiT", "load_dit", "patchify", "unpatchify"]
