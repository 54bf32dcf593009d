"""Diffusion transformers over spacetime patches (Wan 2.1 / 2.2 family), patchify and RoPE."""
