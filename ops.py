"""Layers whose stored weights may be smaller than their compute dtype (bf16, fp16, fp8, ComfyUI's
scaled fp8): the weight is cast per call, so fp8 stays fp8 in memory and is upcast layer by layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import host
from .checkpoint import CheckpointError, read_tensors

SCALED_FP8_MARKER = "scaled_fp8"  # ComfyUI's scaled-fp8 files carry this (empty) tensor
SCALE_SUFFIX = ".scale_weight"  # per-layer dequantisation scale in scaled-fp8 files
INPUT_SCALE_SUFFIX = ".scale_input"  # for fp8 matmuls; not needed when upcasting

WEIGHT_DTYPES = {
    "default": None,  # as stored in the file
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
COMPUTE_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def dtype_choice(choices: dict[str, torch.dtype | None], value: str, setting: str) -> torch.dtype | None:
    """A dtype widget's value as a dtype (ComfyUI checks it against the list; other callers get this
    message instead of a KeyError)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{setting}={value!r}: choose one of {', '.join(choices)}.")
    return choices[value]


def loader_dtypes(weight_dtype: str, compute_dtype: str) -> tuple[torch.dtype | None, torch.dtype]:
    """A loader node's weight_dtype and compute_dtype widgets as dtypes, auto resolved for the compute device."""
    weights = dtype_choice(WEIGHT_DTYPES, weight_dtype, "weight_dtype")
    compute = dtype_choice(COMPUTE_DTYPES, compute_dtype, "compute_dtype")
    return weights, compute or default_compute_dtype(host.compute_device())


# CPU features that make bf16 matmuls and convolutions faster than fp32 (oneDNN uses them).
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "sve_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16, AMX or SVE-BF16), as torch reports it."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.8
    if capabilities is None:
        return False
    found = capabilities()
    return any(found.get(feature) for feature in NATIVE_BF16_FEATURES)


def default_compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it, fp16 on older ones; on the CPU bf16 where it is native (faster than
    fp32 there at equal scores, docs/benchmarks.md), else fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cast_to(tensor: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor` on `like`'s device, in `dtype` (default: `like`'s): moved first, so an fp8 weight
    crosses to the GPU at its stored size. A no-op for a weight already there."""
    return tensor.to(device=like.device).to(dtype or like.dtype)


def cast_weight(module: nn.Module, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The module's weight on `like`'s device in `dtype` (default: `like`'s), times its per-layer
    scale when it has one (scaled fp8). Weights left in CPU memory by partial loading or streaming
    come to the input's device here, on each use."""
    return _scaled(module, cast_to(module.weight, like, dtype))


def _scaled(module: nn.Module, weight: torch.Tensor | None) -> torch.Tensor | None:
    """A weight as fetched, times the module's per-layer scale when it has one (scaled fp8)."""
    scale = getattr(module, "scale_weight", None)
    return weight if scale is None or weight is None else weight * cast_to(scale, weight)


def cast_bias(module: nn.Module, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    return None if module.bias is None else cast_to(module.bias, like, dtype)


class CastsOnUse:
    """A leaf layer whose weight and bias are fetched for each call (`layer_weights`). It keeps ComfyUI's
    contract for such layers, so the host's partial loading may leave its weights in CPU memory (setting
    `comfy_cast_weights`) and the host's own cast then brings them in, with its offload streams, dynamic
    VRAM pages and weight patches. Subclasses have `weight` and `bias` (None when there is none)."""

    comfy_cast_weights = False
    weight_function: ClassVar[list] = []  # the host sets its own lists on the layers it patches
    bias_function: ClassVar[list] = []


PATCHES = "spacetime_patches"  # on a module while a LoRA is active: {parameter name: [patch, ...]}


def patched(module: nn.Module, name: str, value: torch.Tensor | None) -> torch.Tensor | None:
    """`value`, the module's parameter `name` as fetched for one call, with the differences of the LoRAs
    active on the module added: summed in float32 and rounded once to `value`'s dtype. The stored
    weight never changes (fp8 stays fp8), so removing a LoRA restores the model exactly."""
    patches = module.__dict__.get(PATCHES, {}).get(name) if value is not None else None
    if not patches:
        return value
    total = value.float()
    for patch in patches:
        total = total + patch.delta(value.shape, value.device)
    return total.to(value.dtype)


def cast_parameter(module: nn.Module, name: str, like: torch.Tensor, dtype: torch.dtype | None = None):
    """A parameter read directly in a forward (not a layer's weight: adaLN's modulation), fetched as
    layers fetch theirs: on `like`'s device in `dtype`, with active LoRA differences."""
    return patched(module, name, cast_to(getattr(module, name), like, dtype))


@contextlib.contextmanager
def layer_weights(
    module: nn.Module, like: torch.Tensor, dtype: torch.dtype | None = None
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """(weight, bias) of a `CastsOnUse` layer for one call, on `like`'s device in `dtype` (default: `like`'s),
    the per-layer scale of scaled fp8 and active LoRAs applied; the host's cast when the host manages the
    layer's weights."""
    if module.comfy_cast_weights or module.weight_function or module.bias_function:
        with host.cast_layer(module, like, dtype) as (weight, bias):
            yield patched(module, "weight", _scaled(module, weight)), patched(module, "bias", bias)
        return
    weight = None if module.weight is None else cast_weight(module, like, dtype)
    yield patched(module, "weight", weight), patched(module, "bias", cast_bias(module, like, dtype))


class CastLinear(CastsOnUse, nn.Linear):
    """nn.Linear computing in the input's dtype whatever dtype its weight is stored in (a
    scaled-fp8 layer also has a `scale_weight` buffer)."""

    casts_weight = True  # its weight may be stored in fp8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with layer_weights(self, x) as (weight, bias):
            return F.linear(x, weight, bias)


class FloatLayerNorm(CastsOnUse, nn.LayerNorm):
    """LayerNorm computed in float32 (weights upcast), returning float32, as Wan's WanLayerNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        with layer_weights(self, x) as (weight, bias):
            return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class RMSNorm(CastsOnUse, nn.Module):
    """Root-mean-square norm over the last axis, in float32, scaled by a learned weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        with layer_weights(self, x) as (weight, _):
            return normed.to(x.dtype) * weight


def cast_for_storage(
    key: str, tensor: torch.Tensor, weight_dtype: torch.dtype | None, castable: set[str]
) -> torch.Tensor:
    """The storage dtype for one tensor as it is read: fp8 only for the weights of `castable` layers
    (the big projections); small tensors keep their precision; fp8 tensors wait for their scale."""
    if (
        weight_dtype is None
        or not tensor.is_floating_point()
        or key.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX))
    ):
        return tensor
    module_name, _, parameter = key.rpartition(".")
    if weight_dtype.itemsize == 1:  # fp8 storage: only the big projection weights
        if parameter == "weight" and module_name in castable and tensor.dtype.itemsize > 1:
            return tensor.to(weight_dtype)
        return tensor
    if tensor.dtype.itemsize == 1:
        return tensor  # fp8: dequantised with its scale once the scales are read (attach_scales)
    return tensor.to(weight_dtype)


def attach_scales(model: nn.Module, scales: dict[str, torch.Tensor], weight_dtype, name: str) -> None:
    """Give each scaled-fp8 layer its scale as a buffer (it moves with the model); for a wider
    storage dtype, dequantise fp8 weights now instead."""
    modules = dict(model.named_modules())
    for module_name, scale in scales.items():
        if not hasattr(modules.get(module_name), "weight"):
            raise CheckpointError(
                f"{name}: scale_weight for {module_name!r}, which is not a layer of this model."
            )
        scale = scale.float().reshape(()) if scale.numel() == 1 else scale.float()
        modules[module_name].register_buffer("scale_weight", scale, persistent=False)
    if weight_dtype is None or weight_dtype.itemsize == 1:
        return
    for module in modules.values():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dtype.itemsize == 1:
            module.weight = nn.Parameter(
                cast_weight(module, module.weight, torch.float32).to(weight_dtype), requires_grad=False
            )
            if getattr(module, "scale_weight", None) is not None:
                del module.scale_weight


def _is_checkpoint_extra(key: str) -> bool:
    return key.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX)) or key == SCALED_FP8_MARKER


def check_layout(model: nn.Module, shapes: dict[str, tuple[int, ...]], source: str, keep=frozenset()) -> None:
    """Missing, unexpected and mis-shaped tensors, named, before any data is read."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    present = {k: tuple(v) for k, v in shapes.items() if not _is_checkpoint_extra(k) and k not in keep}
    missing = sorted(set(expected) - set(present))
    unexpected = sorted(set(present) - set(expected))
    wrong = sorted(k for k in set(expected) & set(present) if expected[k] != present[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {', '.join(k[:80] for k in unexpected[:4])})")
    if wrong:
        first = wrong[0]
        problems.append(
            f"{len(wrong)} with other shapes (first: {first} is {present[first]}, expected {expected[first]})"
        )
    if problems:
        raise CheckpointError(
            f"{source} does not match the {model.config.name} layout its shapes imply: tensors "
            + "; ".join(problems)
            + ". The file may be damaged or a different model variant."
        )


def assign_checkpoint(
    model: nn.Module,
    path: Path,
    names: dict[str, str | None],
    shapes: dict[str, tuple[int, ...]],
    weight_dtype: torch.dtype | None,
    device: torch.device,
    keep=frozenset(),
) -> dict[str, torch.Tensor]:
    """Fill a model built on the meta device from a checkpoint: the layout is checked first, then
    tensors are read one at a time, cast for storage and assigned (never two copies); scaled-fp8
    scales become buffers. `names` maps file keys to model keys (None: not used); the model keys in
    `keep` (e.g. a tokenizer) are returned instead of assigned."""
    if SCALED_FP8_MARKER in shapes and not any(k.endswith(SCALE_SUFFIX) for k in shapes):
        raise CheckpointError(
            f"{path.name} is marked scaled_fp8 but holds no per-layer scale_weight tensors."
        )
    check_layout(model, shapes, path.name, keep)
    castable = {name for name, module in model.named_modules() if getattr(module, "casts_weight", False)}

    def convert(key: str, tensor: torch.Tensor) -> torch.Tensor:
        return cast_for_storage(names[key], tensor, weight_dtype, castable)

    wanted = [key for key, name in names.items() if name is not None]
    tensors = {
        names[k]: v for k, v in read_tensors(path, keys=wanted, convert=convert, device=device).items()
    }
    kept = {key: tensors.pop(key) for key in keep if key in tensors}
    scales = {k.removesuffix(SCALE_SUFFIX): tensors.pop(k) for k in list(tensors) if k.endswith(SCALE_SUFFIX)}
    for key in [k for k in tensors if _is_checkpoint_extra(k)]:
        del tensors[key]
    model.load_state_dict(tensors, strict=True, assign=True)
    attach_scales(model, scales, weight_dtype, path.name)
    return kept
