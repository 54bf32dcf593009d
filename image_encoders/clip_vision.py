"""The CLIP vision transformer (Radford et al. 2021; ViT, Dosovitskiy et al. 2021) as Wan 2.1's
image-to-video models use it: OpenCLIP's ViT-H/14 with a class token, a layer norm before the
blocks, pre-norm blocks with exact GELU, and a projection of the normed class token.

Parameter names are those of transformers' CLIPVisionModelWithProjection, which ComfyUI's
clip_vision files keep (`pre_layrnorm` is upstream's spelling). Wan reads the hidden states after
all but the last block (`use_31_block=True`, ComfyUI's `penultimate_hidden_states`), so `forward`
returns the hidden states after any chosen number of blocks. The residual stream runs in float32,
the projections in the compute dtype.

Axes: B batch, C colour channels, H W patch grid, L tokens (class token + H·W), D width, N heads,
K head dim, P projection width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..ops import CastLinear, CastsOnUse, FloatLayerNorm, cast_to, layer_weights

COLOUR_CHANNELS = 3


@dataclass(frozen=True)
class CLIPVisionConfig:
    width: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    image_size: int = 224
    patch_size: int = 14
    projection_dim: int | None = None  # None: no visual_projection; image_embeds is the normed class token
    eps: float = 1e-5
    name: str = "CLIP vision encoder"

    def __post_init__(self):
        for field in ("width", "num_layers", "num_heads", "mlp_dim", "image_size", "patch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"CLIPVisionConfig.{field} must be positive, got {getattr(self, field)}")
        if self.projection_dim is not None and self.projection_dim <= 0:
            raise ValueError(
                f"CLIPVisionConfig.projection_dim must be positive or None, got {self.projection_dim}"
            )
        if self.width % self.num_heads:
            raise ValueError(
                f"CLIPVisionConfig.width={self.width} must be a multiple of num_heads={self.num_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"CLIPVisionConfig.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )

    @property
    def grid(self) -> int:
        """Patches along each side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """The class token and one token per patch."""
        return 1 + self.grid**2


VIT_H_14 = CLIPVisionConfig(width=1280, num_layers=32, num_heads=16, mlp_dim=5120, image_size=224,
                            patch_size=14, projection_dim=1024, name="CLIP ViT-H/14")  # fmt: skip
PRESETS = {"vit_h_14": VIT_H_14}


class PatchEmbedding(CastsOnUse, nn.Module):
    """CLIP's Conv2d with kernel = stride = patch and no bias, applied to patches as the linear map it is."""

    casts_weight = True

    def __init__(self, width: int, patch_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, COLOUR_CHANNELS, patch_size, patch_size))
        self.register_parameter("bias", None)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: B×L×(C·ph·pw) -> B×L×D."""
        with layer_weights(self, patches) as (weight, _):
            return F.linear(patches, weight.flatten(1))


class Embeddings(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.empty(config.width))
        self.patch_embedding = PatchEmbedding(config.width, config.patch_size)
        self.position_embedding = nn.Embedding(
            config.num_tokens, config.width, _weight=torch.empty(config.num_tokens, config.width)
        )  # no random init: the checkpoint fills it, and on the meta device that init loads torch's compiler

    def forward(self, pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """pixels: B×C×(H ph)×(W pw) -> B×L×D float32, the class token first."""
        p = self.patch_size
        patches = rearrange(pixels, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=p, pw=p)
        tokens = self.patch_embedding(patches.to(dtype)).float()  # B×(H W)×D
        class_token = cast_to(self.class_embedding, tokens).expand(tokens.shape[0], 1, -1)  # B×1×D
        return torch.cat([class_token, tokens], dim=1) + cast_to(self.position_embedding.weight, tokens)


class SelfAttention(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            CastLinear(config.width, config.width) for _ in range(4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×L×D -> B×L×D, every token attending to every token (scaled by 1/sqrt(K))."""
        q, k, v = (
            rearrange(layer(x), "b l (n k) -> b n l k", n=self.num_heads)
            for layer in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b n l k -> b l (n k)"))


class MLP(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.fc1 = CastLinear(config.width, config.mlp_dim)
        self.fc2 = CastLinear(config.mlp_dim, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, OpenCLIP ViT-H's; not OpenAI's quick-GELU


class EncoderLayer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layer_norm1 = FloatLayerNorm(config.width, eps=config.eps)
        self.self_attn = SelfAttention(config)
        self.layer_norm2 = FloatLayerNorm(config.width, eps=config.eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x: B×L×D float32 residual stream."""
        x = x + self.self_attn(self.layer_norm1(x).to(dtype)).float()
        return x + self.mlp(self.layer_norm2(x).to(dtype)).float()


class Encoder(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))


class VisionTransformer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.pre_layrnorm = FloatLayerNorm(config.width, eps=config.eps)
        self.encoder = Encoder(config)
        self.post_layernorm = FloatLayerNorm(config.width, eps=config.eps)


class CLIPVisionEncoder(nn.Module):
    """Normalised pixels -> the hidden states after chosen blocks, and the projected image embedding."""

    def __init__(self, config: CLIPVisionConfig, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.vision_model = VisionTransformer(config)
        self.visual_projection = (
            None
            if config.projection_dim is None
            else CastLinear(config.width, config.projection_dim, bias=False)
        )

    def forward(
        self, pixels: torch.Tensor, after_blocks: tuple[int, ...] | None = None
    ) -> list[torch.Tensor]:
        """pixels: B×C×S×S normalised (see features.preprocess) -> the B×L×D float32 hidden states after
        each block count in `after_blocks` (0: the embeddings after pre_layrnorm; default: all blocks).
        No final norm: as transformers' hidden_states and ComfyUI's penultimate_hidden_states."""
        config = self.config
        wanted = (config.num_layers,) if after_blocks is None else tuple(after_blocks)
        if not wanted or not all(0 <= count <= config.num_layers for count in wanted):
            raise ValueError(
                f"after_blocks={wanted}: each must be within 0..{config.num_layers} ({config.name})."
            )
        size = (config.image_size, config.image_size)
        if pixels.ndim != 4 or pixels.shape[1] != COLOUR_CHANNELS or tuple(pixels.shape[2:]) != size:
            raise ValueError(
                f"pixels of shape {tuple(pixels.shape)}: expected B×{COLOUR_CHANNELS}×{size[0]}×{size[1]} "
                f"({config.name}); resize with preprocess() first."
            )
        model = self.vision_model
        x = model.pre_layrnorm(model.embeddings(pixels, self.compute_dtype))  # B×L×D
        states = {0: x} if 0 in wanted else {}
        for count, layer in enumerate(model.encoder.layers[: max(wanted)], start=1):
            x = layer(x, self.compute_dtype)  # B×L×D
            if count in wanted:
                states[count] = x
        return [states[count] for count in wanted]

    def image_embeds(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """B×L×D after all blocks -> B×P: the class token, normed (post_layernorm), then projected."""
        pooled = self.vision_model.post_layernorm(last_hidden_state[:, 0])  # B×D
        if self.visual_projection is None:
            return pooled
        return self.visual_projection(pooled.to(self.compute_dtype)).float()
