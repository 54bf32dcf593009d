"""Attention behind one function, so faster kernels can be added in one place."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full (unmasked) attention. q: B×L×N×K, k and v: B×S×N×K -> B×L×N×K."""
    q, k, v = (rearrange(t, "b l n k -> b n l k") for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return rearrange(out, "b n l k -> b l n k")
