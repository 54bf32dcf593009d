"""Patchify and unpatchify: an exact round trip for any shape and patch size; clear errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spacetime.dit.patchify import SpacetimePatches, patchify, unpatchify
from spacetime.latent_formats import WAN21, WAN22


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 6),
    patch=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    grid=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
)
def test_round_trip_is_exact(batch, channels, patch, grid):
    shape = (batch, channels, *(g * p for g, p in zip(grid, patch, strict=True)))
    latent = torch.randn(shape)
    tokens, found_grid = patchify(latent, patch)
    assert found_grid == grid
    assert tokens.shape == (batch, grid[0] * grid[1] * grid[2], channels * patch[0] * patch[1] * patch[2])
    assert torch.equal(unpatchify(tokens, grid, patch), latent)


def test_token_layout_is_wan_conv_order():
    """A token is one (pt, ph, pw) block flattened channels-outermost, like Conv3d weights."""
    latent = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).view(1, 2, 2, 4, 4)
    tokens, grid = patchify(latent, (1, 2, 2))
    assert grid == (2, 2, 2)
    expected_first = latent[0, :, 0, 0:2, 0:2].flatten()
    assert torch.equal(tokens[0, 0], expected_first)
    assert torch.equal(tokens[0, 1], latent[0, :, 0, 0:2, 2:4].flatten())  # then along width


@pytest.mark.parametrize(
    "shape,patch,message",
    [
        (
            (1, 16, 3, 7, 8),
            (1, 2, 2),
            r"height \(H\) = 7 is not divisible by the patch size 2: use a latent of 6 or 8",
        ),
        ((1, 16, 3, 8, 9), (1, 2, 2), r"width \(W\) = 9 .* 8 or 10"),
        ((1, 16, 5, 8, 8), (2, 2, 2), r"frames \(T\) = 5 .* 4 or 6"),
        ((16, 3, 8, 8), (1, 2, 2), "B×C×T×H×W"),
    ],
)
def test_indivisible_shapes_name_the_axis_and_the_fix(shape, patch, message):
    with pytest.raises(ValueError, match=message):
        patchify(torch.zeros(shape), patch)


def test_unpatchify_refuses_tokens_of_another_grid():
    with pytest.raises(ValueError, match="do not fit grid"):
        unpatchify(torch.zeros(1, 10, 64), (2, 2, 2), (1, 2, 2))


@pytest.mark.parametrize("latent_format", [WAN21, WAN22])
def test_spacetime_patches_carry_normalised_tokens_and_invert(latent_format):
    raw = torch.randn(1, latent_format.channels, 2, 4, 6) * 2 + 0.5
    patches = SpacetimePatches.from_latent(raw, (1, 2, 2), latent_format)
    normalised = latent_format.normalize(raw)
    assert torch.equal(patches.tokens, patchify(normalised, (1, 2, 2))[0])
    torch.testing.assert_close(patches.to_latent(), raw, rtol=0, atol=1e-5)
    assert patches.pinned is None and patches.known is None


def test_pinned_tokens_must_match_the_tokens():
    patches = SpacetimePatches.from_latent(torch.zeros(1, 16, 1, 2, 2), (1, 2, 2), WAN21)
    with pytest.raises(ValueError, match="pinned and known go together"):
        SpacetimePatches(
            patches.tokens, patches.grid, patches.patch_size, WAN21, pinned=torch.ones(1, 1, dtype=bool)
        )
    with pytest.raises(ValueError, match="pinned has shape"):
        SpacetimePatches(
            patches.tokens, patches.grid, patches.patch_size, WAN21,
            pinned=torch.ones(1, 2, dtype=torch.bool), known=patches.tokens,
        )  # fmt: skip


def test_latent_of_the_other_vae_is_named():
    with pytest.raises(ValueError, match=r"Wan 2\.2 VAE latent"):
        WAN21.normalize(torch.zeros(1, 48, 1, 2, 2))
