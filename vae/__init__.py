"""Causal video VAEs (Wan 2.1 / 2.2), latent formats and tiling."""
