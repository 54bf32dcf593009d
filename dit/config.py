"""Wan DiT configurations: one frozen dataclass, the released presets, and the one function that
reads a checkpoint's tensor names and shapes into a config (never its file name)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ..checkpoint import CheckpointError, check_limits, describe, layer_count
from ..latent_formats import WAN21, WAN22, LatentFormat, identity_format

MASK_CHANNELS = 4  # the concat condition's mask: one channel per frame of a latent frame's group of 4
# Wan 2.2 A14B switches from the high-noise to the low-noise expert below these noise levels (its configs).
WAN22_T2V_BOUNDARY, WAN22_I2V_BOUNDARY = 0.875, 0.9


@dataclass(frozen=True)
class WanConfig:
    dim: int
    ffn_dim: int
    num_layers: int
    in_channels: int
    out_channels: int
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    freq_dim: int = 256
    head_dim: int = 128
    text_len: int = 512  # Wan pads the text to 512 tokens and attends to the padding too
    eps: float = 1e-6
    cross_attn_norm: bool = True
    # How it takes known frames: trained with clean known frames at timestep 0 beside noisy ones (Wan 2.2
    # TI2V, Tiny World), pinned tokens stay clean while sampling; otherwise they are noised with the rest.
    clean_pins: bool = False
    # The latents it denoises: how raw VAE latents map to its space (None: as they are).
    latent_format: LatentFormat | None = None
    # Image to video with concat conditioning (Wan 2.1 I2V / FLF2V, Wan 2.2 I2V A14B): in_channels holds the
    # noisy latent, a 4-channel mask of the known frames and the known frames' latent; those models take
    # the known frames through that condition only, not pinned in the noisy latent.
    # Wan 2.1's also read CLIP image features (`image_dim` wide) through a second key/value pair in every
    # cross-attention; FLF2V adds a positional embedding over the tokens of two images (`image_tokens`).
    image_dim: int = 0
    image_tokens: int = 0
    # Wan 2.2 A14B: the noise level below which the low-noise expert takes over (0.875 for text to video,
    # 0.9 for image to video), when this model is the high-noise expert.
    expert_boundary: float = WAN22_T2V_BOUNDARY
    name: str = "Wan-architecture DiT"

    def __post_init__(self):
        if self.latent_format is None:
            object.__setattr__(self, "latent_format", identity_format(self.out_channels))
        if self.in_channels not in (self.out_channels, 2 * self.out_channels + MASK_CHANNELS):
            raise ValueError(
                f"WanConfig.in_channels={self.in_channels} fits neither text to video ({self.out_channels}, "
                f"the latent's channels) nor image to video ({2 * self.out_channels + MASK_CHANNELS}: latent, "
                f"{MASK_CHANNELS}-channel mask, known frames' latent)"
            )
        if self.image_dim < 0 or self.image_tokens < 0 or (self.image_tokens and not self.image_dim):
            raise ValueError(
                f"image_dim={self.image_dim}, image_tokens={self.image_tokens}: expected image_dim >= 0, and "
                "image tokens only with image features"
            )
        if self.latent_format.channels != self.out_channels:
            raise ValueError(
                f"latent format {self.latent_format.name} has {self.latent_format.channels} channels; "
                f"this DiT denoises {self.out_channels}-channel latents"
            )
        positive = ("dim", "ffn_dim", "num_layers", "in_channels", "out_channels", "text_dim", "freq_dim",
                    "head_dim", "text_len")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"WanConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.head_dim:
            raise ValueError(f"WanConfig.dim={self.dim} must be a multiple of head_dim={self.head_dim}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(
                f"head_dim={self.head_dim} must be even and at least 6 (3D RoPE rotates pairs on 3 axes)"
            )
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim={self.freq_dim} must be even (cos and sin halves)")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints (t, h, w), got {self.patch_size}")

    @property
    def concat_condition(self) -> bool:
        """Takes the known frames as a concat condition (mask and latent) beside the noisy latent."""
        return self.in_channels != self.out_channels

    @property
    def num_heads(self) -> int:
        return self.dim // self.head_dim

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)


PRESETS: dict[str, WanConfig] = {
    "Wan 2.1 T2V 1.3B": WanConfig(
        dim=1536, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16, latent_format=WAN21
    ),
    "Wan 2.1 T2V 14B / Wan 2.2 T2V A14B expert": WanConfig(
        dim=5120, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16, latent_format=WAN21
    ),
    "Wan 2.2 TI2V 5B": WanConfig(
        dim=3072, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48, clean_pins=True,
        latent_format=WAN22,
    ),
    "Wan 2.1 I2V 14B": WanConfig(
        dim=5120, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16, latent_format=WAN21,
        image_dim=1280, expert_boundary=WAN22_I2V_BOUNDARY,
    ),
    "Wan 2.1 FLF2V 14B": WanConfig(
        dim=5120, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16, latent_format=WAN21,
        image_dim=1280, image_tokens=2 * 257, expert_boundary=WAN22_I2V_BOUNDARY,
    ),
    "Wan 2.2 I2V A14B expert": WanConfig(
        dim=5120, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16, latent_format=WAN21,
        expert_boundary=WAN22_I2V_BOUNDARY,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Family:
    """What a Wan model family declares beyond its shapes (ComfyUI's `supported_models.py`): the latents
    it denoises and how it takes known frames."""

    name: str
    latent_format: LatentFormat
    clean_pins: bool
    expert_boundary: float = WAN22_T2V_BOUNDARY


# Wan's families, told apart by the input channels of the patch embedding as ComfyUI's model detection
# does: the Wan 2.1 VAE's 16 channels (Wan 2.1 T2V, Wan 2.2 T2V A14B), the Wan 2.2 VAE's 48 (TI2V 5B,
# trained with a clean first frame), or 16 + 4 + 16 for image to video with concat conditioning (Wan 2.1
# I2V and FLF2V, Wan 2.2 I2V A14B). A model outside these (Tiny World) says what it needs in its metadata.
WAN_FAMILIES = {
    16: Family("Wan text to video", WAN21, clean_pins=False),
    48: Family("Wan 2.2 TI2V", WAN22, clean_pins=True),
    36: Family("Wan image to video", WAN21, clean_pins=False, expert_boundary=WAN22_I2V_BOUNDARY),
}

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# The sizes Wan-architecture models use (Wan 2.1 and 2.2 at every size: PRESETS; Tiny World: 6 layers of width
# 192, heads of 64, 64 text tokens), with room to spare: a file outside them is refused before anything is
# built from it (a block numbered 200000 would otherwise build 200001 blocks).
FAMILY = "Wan-architecture (Wan 2.1, Wan 2.2, Tiny World)"
MAX_LAYERS = 200  # Wan: 30 or 40
LIMITS = {
    "dim": (1, 16384),  # 1536, 3072, 5120
    "ffn_dim": (1, 65536),  # 8960 to 14336
    "in_channels": (1, 1024),  # 16, 36, 48
    "out_channels": (1, 256),  # 16, 48
    "patch_size": (1, 16),  # 1 x 2 x 2
    "text_dim": (1, 16384),  # UMT5-XXL's 4096
    "freq_dim": (2, 4096),  # 256
    "head_dim": (6, 1024),  # 128; Tiny World 64
    "text_len": (1, 4096),  # 512; Tiny World 64
    "image_dim": (0, 16384),  # CLIP ViT-H/14's 1280
    "image_tokens": (0, 4096),  # FLF2V: 2 x 257
}


def config_from_shapes(
    shapes: dict[str, tuple[int, ...]], source: str = "checkpoint", overrides: dict | None = None
) -> WanConfig:
    """Read a Wan DiT config from tensor names and shapes (prefix already stripped), as ComfyUI's
    model_detection does: `head.modulation` marks Wan; the rest follows from the shapes, and
    `overrides` sets the fields shapes cannot tell (head_dim, text_len, clean_pins). The family (WAN_FAMILIES)
    gives the latent format and how known frames are taken; a model of no Wan family denoises its latents
    as they are."""
    if "head.modulation" not in shapes:
        raise CheckpointError(
            f"{source} does not look like a Wan diffusion model: it looks like {describe(shapes)}. "
            "The DiT loader expects a Wan 2.1 / 2.2 diffusion model (the files ComfyUI keeps in "
            "models/diffusion_models, e.g. wan2.1_t2v_1.3B_fp16.safetensors)."
        )
    try:
        dim, in_channels, *patch = shapes["patch_embedding.weight"]
        head_out = shapes["head.head.weight"][0]
        ffn_dim = shapes["blocks.0.ffn.0.weight"][0]
        text_dim = shapes["text_embedding.0.weight"][1]
        freq_dim = shapes["time_embedding.0.weight"][1]
    except (KeyError, ValueError, IndexError) as error:
        raise CheckpointError(
            f"{source} is an incomplete Wan diffusion model (missing or odd {error})."
        ) from None
    num_layers = layer_count(shapes, _BLOCK, source, "transformer blocks", MAX_LAYERS)
    patch_size = tuple(patch)
    if len(patch_size) != 3:
        raise CheckpointError(
            f"{source}: its patch embedding has shape {shapes['patch_embedding.weight']}; a Wan DiT's is "
            "dim x channels x 3 patch sizes (t, h, w)."
        )
    image_dim, image_tokens = _image_fields(shapes, source)
    check_limits(source, {"patch_size": patch_size}, LIMITS, FAMILY)
    out_channels, odd = divmod(head_out, math.prod(patch_size))
    if odd:
        raise CheckpointError(
            f"{source}: its output head's {head_out} channels are not whole patches of {patch_size}; the file "
            "is damaged."
        )
    sizes = dict(dim=dim, ffn_dim=ffn_dim, in_channels=in_channels, out_channels=out_channels, text_dim=text_dim,
                 freq_dim=freq_dim, image_dim=image_dim, image_tokens=image_tokens)  # fmt: skip
    sizes |= {k: v for k, v in (overrides or {}).items() if k in ("head_dim", "text_len")}
    check_limits(source, sizes, LIMITS, FAMILY)
    family = WAN_FAMILIES.get(in_channels)
    fields = dict(
        dim=dim,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        in_channels=in_channels,
        out_channels=out_channels,
        patch_size=patch_size,
        text_dim=text_dim,
        freq_dim=freq_dim,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        clean_pins=family is not None and family.clean_pins,
        latent_format=family.latent_format if family is not None else None,
        expert_boundary=family.expert_boundary if family is not None else WAN22_T2V_BOUNDARY,
        image_dim=image_dim,
        image_tokens=image_tokens,
    )
    try:
        config = WanConfig(**(fields | (overrides or {})))
    except ValueError as error:
        raise CheckpointError(
            f"{source} is not a Wan diffusion model this pack reads: {error}. The file is damaged or crafted."
        ) from None
    name = next((name for name, preset in PRESETS.items() if preset == config), None)
    return config if name is None else replace(config, name=name)


def _image_fields(shapes: dict[str, tuple[int, ...]], source: str) -> tuple[int, int]:
    """(image_dim, image_tokens): the CLIP feature width of Wan 2.1 I2V / FLF2V's image projection
    (`img_emb`) and the token count of FLF2V's positional embedding (0, 0 for other models)."""
    has_projection = "img_emb.proj.1.weight" in shapes
    if has_projection != ("blocks.0.cross_attn.k_img.weight" in shapes):
        raise CheckpointError(
            f"{source} has {'an image projection (img_emb) but no' if has_projection else 'image keys (k_img) but no'} "
            f"{'image key/value pair in its cross-attention (k_img, v_img)' if has_projection else 'image projection (img_emb)'}: "
            "a Wan 2.1 I2V / FLF2V file holds both. The file is damaged or mixed from two models."
        )
    if not has_projection:
        return 0, 0
    projection, position = shapes["img_emb.proj.1.weight"], shapes.get("img_emb.emb_pos", (1, 0))
    if len(projection) != 2 or len(position) < 2:
        raise CheckpointError(
            f"{source}: its image projection has shape {projection} and positions {position}; Wan 2.1 I2V / FLF2V's "
            "are 2-D (out x CLIP width) and 1 x tokens x width. The file is damaged."
        )
    return projection[1], position[1]
