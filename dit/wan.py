"""The Wan 2.1 / 2.2 diffusion transformer (Wan-Video/Wan2.1 `wan/modules/model.py`; DiT, Peebles &
Xie 2023): adaLN-modulated blocks of 3D-RoPE self-attention, text cross-attention and a GELU MLP.

Parameter names are Wan's own, so checkpoints load without renaming. As in the reference, the
residual stream, the time embedding, the modulation and the head run in float32, RoPE in
float64; the attention and MLP projections run in the compute dtype.

Axes: B batch, C latent channels, T H W latent grid, L tokens, D width, N heads, K head dim,
S text tokens, E text width, P token width (C·pt·ph·pw), F sinusoid width.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..latent_formats import LatentFormat
from ..lora import Lora, active
from ..ops import CastLinear, CastsOnUse, FloatLayerNorm, RMSNorm, cast_parameter, layer_weights
from ..parallel import Parallel, check_heads, ulysses
from .attention import Kernel, kernel, sdpa
from .config import WanConfig
from .patchify import patchify, unpatchify
from .rope import apply_rope, rope_frequencies

log = logging.getLogger(__name__)


def timestep_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of timesteps in 0..1000, computed in float64 (Wan's
    `sinusoidal_embedding_1d`). Any shape -> shape × F, float32."""
    half = dim // 2
    position = timestep.to(torch.float64)
    frequencies = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = position.unsqueeze(-1) * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class PatchEmbedding(CastsOnUse, nn.Module):
    """Wan's Conv3d with kernel = stride = patch, applied to tokens as the linear map it is."""

    casts_weight = True

    def __init__(self, in_channels: int, dim: int, patch_size: tuple[int, int, int]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, in_channels, *patch_size))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with layer_weights(self, tokens) as (weight, bias):
            return F.linear(tokens, weight.flatten(1), bias)


class Attention(nn.Module):
    """Multi-head attention with q and k RMS-normalised across all heads (Wan's qk_norm): self-
    attention with 3D RoPE, or cross-attention to the text when a context is given."""

    def __init__(self, config: WanConfig):
        super().__init__()
        dim, self.num_heads = config.dim, config.num_heads
        self.q, self.k, self.v, self.o = (CastLinear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, config.eps), RMSNorm(dim, config.eps)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope: torch.Tensor | None = None,
        attend: Kernel = sdpa,
    ):
        """x: B×L×D, context: B×S×D (None: attend to x) -> B×L×D; `attend`: the attention kernel."""
        source = x if context is None else context
        q = rearrange(self.norm_q(self.q(x)), "b l (n k) -> b l n k", n=self.num_heads)
        k = rearrange(self.norm_k(self.k(source)), "b s (n k) -> b s n k", n=self.num_heads)
        v = rearrange(self.v(source), "b s (n k) -> b s n k", n=self.num_heads)
        if rope is not None:
            q, k = apply_rope(q, rope).to(x.dtype), apply_rope(k, rope).to(x.dtype)
        return self.o(rearrange(attend(q, k, v), "b l n k -> b l (n k)"))


class ImageCrossAttention(Attention):
    """Cross-attention to the text and, with a second key/value pair, to the CLIP image tokens (Wan 2.1
    I2V / FLF2V): the two attentions share the query and are summed before the output projection."""

    def __init__(self, config: WanConfig):
        super().__init__(config)
        dim = config.dim
        self.k_img, self.v_img = CastLinear(dim, dim), CastLinear(dim, dim)
        self.norm_k_img = RMSNorm(dim, config.eps)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, image: torch.Tensor | None = None, attend: Kernel = sdpa
    ):
        """x: B×L×D, context: B×S×D text, image: B×I×D image tokens -> B×L×D."""
        if image is None:
            raise ValueError("this Wan image-to-video model needs CLIP image features (clip_vision_output).")
        heads = self.num_heads
        q = rearrange(self.norm_q(self.q(x)), "b l (n k) -> b l n k", n=heads)
        k = rearrange(self.norm_k(self.k(context)), "b s (n k) -> b s n k", n=heads)
        v = rearrange(self.v(context), "b s (n k) -> b s n k", n=heads)
        k_img = rearrange(self.norm_k_img(self.k_img(image)), "b i (n k) -> b i n k", n=heads)
        v_img = rearrange(self.v_img(image), "b i (n k) -> b i n k", n=heads)
        out = attend(q, k, v) + attend(q, k_img, v_img)
        return self.o(rearrange(out, "b l n k -> b l (n k)"))


class ImageProjection(nn.Module):
    """CLIP image features (B×I×C, C = image_dim) -> image tokens B×I×D for the cross-attention (Wan's
    MLPProj): LayerNorm, Linear, GELU, Linear, LayerNorm; FLF2V first adds a positional embedding over the
    tokens of both images."""

    def __init__(self, config: WanConfig):
        super().__init__()
        width, dim = config.image_dim, config.dim
        self.proj = nn.Sequential(
            FloatLayerNorm(width, 1e-5, elementwise_affine=True), CastLinear(width, width), nn.GELU(),
            CastLinear(width, dim), FloatLayerNorm(dim, 1e-5, elementwise_affine=True),
        )  # fmt: skip
        if config.image_tokens:
            self.emb_pos = nn.Parameter(torch.empty(1, config.image_tokens, width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "emb_pos"):
            tokens = self.emb_pos.shape[1]
            if features.shape[1] != tokens:
                raise ValueError(
                    f"image features of {features.shape[1]} tokens: this first-last-frame model (FLF2V) takes "
                    f"{tokens}, the features of its first and last images side by side."
                )
            features = features + cast_parameter(self, "emb_pos", features)
        return self.proj(features)


class WanBlock(nn.Module):
    def __init__(self, config: WanConfig):
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = FloatLayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = Attention(config)
        # Wan names the affine pre-cross-attention norm `norm3` and the pre-MLP one `norm2`.
        self.norm3 = (
            FloatLayerNorm(dim, eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = ImageCrossAttention(config) if config.image_dim else Attention(config)
        self.norm2 = FloatLayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            CastLinear(dim, config.ffn_dim), nn.GELU(approximate="tanh"), CastLinear(config.ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, dim))

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        context: torch.Tensor,
        rope: torch.Tensor,
        image: torch.Tensor | None = None,
        attend: Kernel = sdpa,
        self_attend: Kernel | None = None,
    ) -> torch.Tensor:
        """x: B×L×D float32, e0: B×(L or 1)×6×D float32, context: B×S×D, image: B×I×D image tokens (Wan
        2.1 I2V / FLF2V) -> B×L×D float32; `attend`: the attention kernel, `self_attend` the self-attention's
        when it differs (a sequence split's: parallel.ulysses)."""
        dtype = context.dtype
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
            cast_parameter(self, "modulation", e0, torch.float32) + e0
        ).unbind(2)
        x_sa = modulate(self.norm1(x), shift_sa, scale_sa).to(dtype)
        y = self.self_attn(x_sa, rope=rope, attend=self_attend or attend)
        x = x + y.float() * gate_sa
        cross_input = self.norm3(x).to(dtype)
        if isinstance(self.cross_attn, ImageCrossAttention):
            x = x + self.cross_attn(cross_input, context, image, attend).float()
        else:
            x = x + self.cross_attn(cross_input, context, attend=attend).float()
        y = self.ffn(modulate(self.norm2(x), shift_ff, scale_ff).to(dtype))
        return x + y.float() * gate_ff


class Head(nn.Module):
    def __init__(self, config: WanConfig):
        super().__init__()
        self.norm = FloatLayerNorm(config.dim, config.eps, elementwise_affine=False)
        self.head = CastLinear(config.dim, config.out_channels * config.patch_volume)
        self.modulation = nn.Parameter(torch.empty(1, 2, config.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: B×L×D, e: B×(L or 1)×D -> B×L×(pt·ph·pw·C), in float32 like the reference."""
        shift, scale = (
            cast_parameter(self, "modulation", e, torch.float32).unsqueeze(0) + e.unsqueeze(2)
        ).unbind(2)
        return self.head(modulate(self.norm(x), shift, scale))


class WanDiT(nn.Module):
    """Predicts the flow-matching velocity (noise - x0) of a normalised latent video."""

    loras: tuple = ()  # (Lora, strength) pairs applied while this handle runs (with_lora)
    attention: str = "auto"  # the attention backend (dit/attention.py's BACKENDS)
    parallel: Parallel | None = None  # a forward split over processes (parallel.py); None: this one alone

    def __init__(self, config: WanConfig, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        dim = config.dim
        self.patch_embedding = PatchEmbedding(config.in_channels, dim, config.patch_size)
        self.text_embedding = nn.Sequential(
            CastLinear(config.text_dim, dim), nn.GELU(approximate="tanh"), CastLinear(dim, dim)
        )
        self.time_embedding = nn.Sequential(CastLinear(config.freq_dim, dim), nn.SiLU(), CastLinear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), CastLinear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        if config.image_dim:
            self.img_emb = ImageProjection(config)

    def with_lora(self, lora: Lora, strength: float) -> WanDiT:
        """This model with `lora` at `strength` after its LoRAs: a new handle on the same weights (nothing is
        copied; the host manages both as one model). The model it came from is unchanged."""
        if not math.isfinite(strength):
            raise ValueError(
                f"LoRA strength {strength!r} for {lora.name}: give a number, 1 as trained, 0 for none."
            )
        handle = copy.copy(self)
        handle.__dict__["loras"] = (*self.loras, (lora, float(strength)))
        handle.__dict__.setdefault("_spacetime_base", self)
        return handle

    def compile_blocks(self) -> None:
        """Regional torch.compile: each block's forward is compiled, and as the blocks share their code they
        share the compiled graph (one compile, not one per block); the rest stays eager, and so do the hooks
        around the blocks (streaming's). The first forward pays the compile."""
        for block in self.blocks:
            block.forward = torch.compile(block.forward)

    @property
    def latent_format(self) -> LatentFormat:
        """How raw VAE latents map to this model's space (its config's, decided by the loader)."""
        return self.config.latent_format

    def forward(
        self,
        latent: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latent B×C×T×H×W (normalised; for image to video, the noisy latent with the concat condition
        after it), timestep B or B×L in 0..1000, context B×S×E, image B×I×image_dim CLIP features (Wan 2.1
        I2V / FLF2V) -> velocity B×C'×T×H×W (C' = out_channels)."""
        self.check_latent(latent, self.config.in_channels)
        tokens, grid = patchify(latent, self.config.patch_size)
        velocity = self.forward_tokens(tokens, grid, timestep, context, image)
        return unpatchify(velocity, grid, self.config.patch_size).to(latent.dtype)

    def forward_tokens(
        self,
        tokens: torch.Tensor,
        grid: tuple[int, int, int],
        timestep: torch.Tensor,
        context: torch.Tensor,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens B×L×P in patchify's layout -> velocity tokens B×L×P' in the same layout (float32)."""
        with active(self, self.loras):
            return self._forward_tokens(tokens, grid, timestep, context, image)

    def _forward_tokens(self, tokens, grid, timestep, context, image) -> torch.Tensor:
        config, dtype = self.config, self.compute_dtype
        timestep = self._check_inputs(tokens, grid, timestep, context)

        batch, length = tokens.shape[:2]
        rope = rope_frequencies(grid, config.head_dim, tokens.device)  # 2×L×K/2
        attend = self_attend = kernel(self.attention, tokens.device, dtype, config.head_dim)
        split = self.parallel
        if split is not None:  # this process's share of the batch and of the tokens
            check_heads(config.num_heads, split.sequence.size, config.name)
            by_batch, sequence = split.batch_group(batch), split.sequence
            if by_batch is not None:
                tokens, timestep, context = (by_batch.split(t, 0) for t in (tokens, timestep, context))
                image = by_batch.split(image, 0) if image is not None and image.shape[0] == batch else image
            if timestep.shape[1] == length:
                timestep = sequence.split(timestep, 1)
            tokens, rope = sequence.split(tokens, 1), sequence.split(rope, 1)
            self_attend = ulysses(attend, sequence, length)

        x = self.patch_embedding(tokens.to(dtype)).float()  # B×L×D
        e = self.time_embedding(timestep_embedding(timestep, config.freq_dim))  # B×(L|1)×D, float32
        e0 = self.time_projection(e).unflatten(-1, (6, config.dim))  # B×(L|1)×6×D
        context = self.text_embedding(self._pad_text(context).to(dtype))  # B×S×D
        image = self._image_tokens(image, tokens.shape[0])  # B×I×D or None

        for block in self.blocks:
            x = block(x, e0, context, rope, image, attend, self_attend)

        out = self.head(x, e)  # B×L×(pt ph pw c), Wan's head order
        if split is not None:  # every process's tokens, then every batch item, on every process
            out = split.sequence.gather(out, 1, length)
            out = by_batch.gather(out, 0, batch) if by_batch is not None else out
        pt, ph, pw = config.patch_size
        return rearrange(out, "b l (pt ph pw c) -> b l (c pt ph pw)", pt=pt, ph=ph, pw=pw)

    def activation_bytes(self, batch: int, tokens: int, per_token_timesteps: bool = False) -> int:
        """About the most one forward over `batch` sequences of `tokens` tokens holds beside the weights, for
        placing the model: in a block, the float32 residual stream, its norm and modulation, the projected
        q, k and v in the compute dtype, and RoPE rotating q and k in float32, or the MLP's hidden layer;
        plus the per-token modulation when timesteps are per token. Split over processes, this process's
        share."""
        config, width = self.config, self.compute_dtype.itemsize
        if self.parallel is not None:
            by_batch = self.parallel.batch_group(batch)
            batch, tokens = batch // (by_batch.size if by_batch else 1), self.parallel.sequence.chunk(tokens)
        attention = 4 * 4 * config.dim + 3 * width * config.dim + 2 * 4 * 2 * config.dim
        mlp = 3 * 4 * config.dim + width * (config.dim + 2 * config.ffn_dim)
        modulation = 6 * 4 * config.dim if per_token_timesteps else 0  # e0 is B×L×6×D then
        return batch * tokens * (max(attention, mlp) + modulation)

    def check_latent(self, latent: torch.Tensor, channels: int | None = None) -> None:
        """A latent this model denoises (B×out_channels×T×H×W, as a LATENT carries it); `channels`: another
        count to expect (forward's input, with the concat condition)."""
        expected = channels or self.config.out_channels
        if latent.ndim != 5 or latent.shape[1] != expected:
            hint = {16: " (a Wan 2.1 VAE latent)", 48: " (a Wan 2.2 VAE latent)"}.get(
                latent.shape[1] if latent.ndim == 5 else 0, ""
            )
            raise ValueError(
                f"latent of shape {tuple(latent.shape)}{hint} does not fit {self.config.name}, which expects "
                f"B×{expected}×T×H×W latents: use the VAE that belongs to this model."
            )

    def _check_inputs(self, tokens, grid, timestep, context) -> torch.Tensor:
        """Validate shapes; return the timestep as B×(L or 1)."""
        config = self.config
        batch, length, width = tokens.shape
        expected_width = config.in_channels * config.patch_volume
        if width != expected_width or length != grid[0] * grid[1] * grid[2]:
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)} for grid {grid} do not fit {config.name}: expected "
                f"B×{grid[0] * grid[1] * grid[2]}×{expected_width} ({config.in_channels} channels × patch "
                f"{config.patch_size})."
            )
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != config.text_dim:
            raise ValueError(
                f"text context of shape {tuple(context.shape)} does not fit: expected {batch}×S×{config.text_dim} "
                "(embeddings from this model's text encoder, one row per batch item)."
            )
        timestep = torch.as_tensor(timestep, device=tokens.device)
        if timestep.shape == (batch,):
            return timestep.unsqueeze(1)
        if timestep.shape == (batch, length):
            return timestep
        raise ValueError(
            f"timestep of shape {tuple(timestep.shape)}: expected ({batch},) or ({batch}, {length})."
        )

    def _image_tokens(self, image: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """CLIP features B×I×image_dim -> image tokens B×I×D in the compute dtype (None without)."""
        config = self.config
        if image is None:
            if config.image_dim:
                raise ValueError(
                    f"{config.name} reads CLIP image features beside the text: encode the image with the "
                    "CLIP vision encoder (clip_vision_h) and pass its output."
                )
            return None
        if not config.image_dim:
            raise ValueError(f"{config.name} takes no CLIP image features (it has no image cross-attention).")
        if image.ndim != 3 or image.shape[0] not in (1, batch) or image.shape[2] != config.image_dim:
            raise ValueError(
                f"image features of shape {tuple(image.shape)}: expected 1×I×{config.image_dim} or "
                f"{batch}×I×{config.image_dim} (a CLIP ViT-H/14 encoder's penultimate hidden states)."
            )
        return self.img_emb(image.float()).to(self.compute_dtype).expand(batch, -1, -1)

    def _pad_text(self, context: torch.Tensor) -> torch.Tensor:
        """Zero-pad the text to the model's length (Wan: 512 tokens): the model attends to the (embedded)
        padding too. A longer context is cut; text encoders zero it after the prompt, so only a prompt
        longer than the model's text length loses anything, with a warning."""
        length = self.config.text_len
        if context.shape[1] > length:
            if context[:, length:].abs().amax() > 0:
                log.warning(
                    "The prompt is longer than the %d text tokens %s reads; the rest is ignored.",
                    length, self.config.name,
                )  # fmt: skip
            return context[:, :length]
        return F.pad(context, (0, 0, 0, length - context.shape[1]))
