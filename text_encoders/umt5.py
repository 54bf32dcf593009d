"""The UMT5 encoder (Chung et al. 2023; T5, Raffel et al. 2020) as Wan uses it: pre-RMS-norm blocks,
a relative-position bias in every layer, unscaled dot-product attention and a gated-GELU MLP.
Parameter names are those of transformers' UMT5EncoderModel, which ComfyUI's umt5 files keep.

Axes: B batch, L tokens, D width, N heads, K head dim, F MLP width, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..ops import CastLinear, CastsOnUse, RMSNorm, cast_to


@dataclass(frozen=True)
class UMT5Config:
    vocab_size: int
    dim: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    head_dim: int
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    text_len: int = 512  # Wan cuts and pads prompts to 512 tokens
    name: str = "UMT5 encoder"

    def __post_init__(self):
        for field in ("vocab_size", "dim", "ffn_dim", "num_layers", "num_heads", "head_dim", "num_buckets"):
            if getattr(self, field) <= 0:
                raise ValueError(f"UMT5Config.{field} must be positive, got {getattr(self, field)}")


UMT5_XXL = UMT5Config(vocab_size=256384, dim=4096, ffn_dim=10240, num_layers=24, num_heads=64, head_dim=64,
                      name="UMT5-XXL")  # fmt: skip


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bidirectional buckets: exact for small offsets, logarithmic up to max_distance."""
    num_buckets //= 2
    bucket = (relative_position > 0).long() * num_buckets
    distance = relative_position.abs()
    max_exact = num_buckets // 2
    scaled = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (scaled * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < max_exact, distance, large)


class CastEmbedding(CastsOnUse, nn.Module):
    """A token table kept in its stored dtype (fp8 included) and wherever it was placed (CPU memory when
    the host loads the encoder partially): only the looked-up rows are cast and moved."""

    casts_weight = True

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))
        self.register_parameter("bias", None)

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        table = self.weight  # stays where it is (in CPU memory when partially loaded): only rows move
        fp8 = table.dtype.itemsize == 1  # gather the raw bytes, then upcast
        at = ids.to(table.device)
        rows = (table.view(torch.uint8)[at].view(table.dtype) if fp8 else table[at]).to(ids.device).to(dtype)
        scale = getattr(self, "scale_weight", None)
        return rows if scale is None else rows * cast_to(scale, rows)


class UMT5Attention(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        inner = config.num_heads * config.head_dim
        self.config = config
        self.q, self.k, self.v = (CastLinear(config.dim, inner, bias=False) for _ in range(3))
        self.o = CastLinear(inner, config.dim, bias=False)
        self.relative_attention_bias = nn.Embedding(
            config.num_buckets, config.num_heads, _weight=torch.empty(config.num_buckets, config.num_heads)
        )  # no random init: the checkpoint fills it, and on the meta device that init loads torch's compiler

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """N×L×L additive bias from the (key - query) offsets."""
        positions = torch.arange(length, device=device)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None], self.config.num_buckets, self.config.max_distance
        )
        return rearrange(
            cast_to(self.relative_attention_bias.weight, buckets, torch.float32)[buckets], "q k n -> n q k"
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x: B×L×D, key_mask: B×1×1×L additive (0 or -inf) -> B×L×D."""
        n = self.config.num_heads
        q, k, v = (rearrange(layer(x), "b l (n k) -> b n l k", n=n) for layer in (self.q, self.k, self.v))
        bias = (self.position_bias(x.shape[1], x.device) + key_mask).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, scale=1.0
        )  # T5 does not scale by 1/sqrt(K)
        return self.o(rearrange(out, "b n l k -> b l (n k)"))


class GatedGeluMLP(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.wi_0 = CastLinear(config.dim, config.ffn_dim, bias=False)
        self.wi_1 = CastLinear(config.dim, config.ffn_dim, bias=False)
        self.wo = CastLinear(config.ffn_dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class SelfAttentionLayer(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.SelfAttention = UMT5Attention(config)
        self.layer_norm = RMSNorm(config.dim, config.eps)


class FeedForwardLayer(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.DenseReluDense = GatedGeluMLP(config)
        self.layer_norm = RMSNorm(config.dim, config.eps)


class UMT5Block(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.layer = nn.ModuleList([SelfAttentionLayer(config), FeedForwardLayer(config)])

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x: B×L×D float32 residual stream."""
        attention, feed_forward = self.layer
        x = x + attention.SelfAttention(attention.layer_norm(x).to(dtype), key_mask).float()
        return x + feed_forward.DenseReluDense(feed_forward.layer_norm(x).to(dtype)).float()


class UMT5Stack(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.block = nn.ModuleList(UMT5Block(config) for _ in range(config.num_layers))
        self.final_layer_norm = RMSNorm(config.dim, config.eps)


class UMT5Encoder(nn.Module):
    """Token ids -> per-token embeddings, zero at padded positions (Wan's convention)."""

    def __init__(self, config: UMT5Config, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.shared = CastEmbedding(config.vocab_size, config.dim)
        self.encoder = UMT5Stack(config)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids: B×L token ids, mask: B×L (True for real tokens) -> B×L×D float32."""
        x = self.shared(ids, torch.float32)  # B×L×D
        key_mask = torch.zeros(mask.shape, device=x.device).masked_fill(~mask.bool(), float("-inf"))[
            :, None, None, :
        ]
        for block in self.encoder.block:
            x = block(x, key_mask, self.compute_dtype)
        x = self.encoder.final_layer_norm(x)
        return x * mask[..., None].to(x.dtype)
