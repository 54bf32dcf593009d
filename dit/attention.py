"""Attention kernels behind one choice: PyTorch's scaled_dot_product_attention (always there), and
FlashAttention and SageAttention when they are installed (`pip install comfyui-spacetime[flash]` or
`[sage]`; both need an NVIDIA GPU). `kernel(backend, ...)` picks the function a forward then calls for all its
attentions; a backend that cannot run here (not installed, on the CPU, fp32) falls back to SDPA with one
console line, never an error.

Every kernel takes and returns B×L×N×K (batch, tokens, heads, head width), unmasked and non-causal.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger("spacetime")

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

BACKENDS = ("auto", "sdpa", "flash", "sage")
BACKEND_HELP = (
    "Attention kernel. auto: SageAttention, else FlashAttention, when installed and on an NVIDIA GPU in "
    "bf16/fp16, else PyTorch's SDPA (which already uses fused kernels). sdpa: always PyTorch's. flash: "
    "FlashAttention (3 on Hopper when installed, else 2), exact up to rounding. sage: SageAttention, "
    "8-bit Q·K, fastest, with a small error. One that cannot run here falls back to sdpa with a console note."
)
HALF = (torch.float16, torch.bfloat16)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's scaled dot-product attention (it picks flash, memory-efficient or cuDNN kernels itself)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _flash() -> Kernel:
    try:  # FlashAttention 3 (Hopper), when built
        from flash_attn_interface import flash_attn_func
    except ImportError:
        from flash_attn import flash_attn_func

    def flash(q, k, v):
        out = flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out  # some FlashAttention 3 builds also return the LSE

    return flash


def _sage() -> Kernel:
    from sageattention import sageattn

    def sage(q, k, v):
        return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)

    return sage


# What each optional kernel needs: its module, the head widths it takes, and how to build the function.
OPTIONAL = {
    "flash": ("flash_attn", lambda width: width <= 256 and width % 8 == 0, _flash),
    "sage": ("sageattention", lambda width: width in (64, 96, 128), _sage),
}
INSTALL = {"flash": "pip install flash-attn --no-build-isolation", "sage": "pip install sageattention"}


def installed(backend: str) -> bool:
    """Whether the optional kernel's package can be imported (FlashAttention: 2 or 3)."""
    modules = [OPTIONAL[backend][0]] + (["flash_attn_interface"] if backend == "flash" else [])
    return any(importlib.util.find_spec(module) is not None for module in modules)


def _unusable(backend: str, device: torch.device, dtype: torch.dtype, width: int) -> str | None:
    """Why `backend` cannot run these inputs (None: it can)."""
    module, takes, _ = OPTIONAL[backend]
    if not installed(backend):
        return f"{module} is not installed ({INSTALL[backend]})"
    if device.type != "cuda":
        return f"it runs on NVIDIA GPUs only and this runs on the {device.type}"
    if dtype not in HALF:
        return f"it takes bf16 or fp16 and this computes in {str(dtype).removeprefix('torch.')}"
    if not takes(width):
        return f"it does not take heads {width} wide"
    return None


@functools.cache
def _resolve(backend: str, device_type: str, dtype: torch.dtype, width: int) -> tuple[str, Kernel]:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r}: choose one of {', '.join(BACKENDS)}.")
    device = torch.device(device_type)
    if backend == "sdpa":
        return "sdpa", sdpa
    for name in ("sage", "flash") if backend == "auto" else (backend,):
        reason = _unusable(name, device, dtype, width)
        if reason is None:
            try:
                return name, OPTIONAL[name][2]()
            except (ImportError, OSError) as error:  # a broken build (missing CUDA library, ABI mismatch)
                reason = f"{OPTIONAL[name][0]} failed to load ({error})"
            log.warning("Attention: %s is not used because %s.", name, reason)
        elif backend != "auto":  # asked for by name: say why not; auto passes over what is not there
            log.warning("Attention: %s is not used because %s; using PyTorch's SDPA.", name, reason)
    return "sdpa", sdpa


def kernel(backend: str, device: torch.device, dtype: torch.dtype, width: int) -> Kernel:
    """The attention function `backend` gives for heads `width` wide in `dtype` on `device`."""
    return _resolve(backend, torch.device(device).type, dtype, width)[1]


def kernel_name(backend: str, device: torch.device, dtype: torch.dtype, width: int) -> str:
    """Which kernel `backend` resolves to for these inputs: "sdpa", "flash" or "sage"."""
    return _resolve(backend, torch.device(device).type, dtype, width)[0]
