"""A LoRA for the Wan DiT: read from any common layout (layouts.py), checked against the model it is for, and
applied while the model runs, never merged into its weights.

Each patched parameter gets W + strength·(alpha/rank)·up·down (or + strength·diff for full differences), the
sum taken in float32 from the weight as fetched for that call (fp8 upcast with its scale) and rounded once to
the compute dtype (ops.patched). The stored weights never change: removing a LoRA or changing its strength
cannot compound or drift, and no second copy of the model is made.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import CheckpointError, read_keys, read_tensors
from ..ops import PATCHES
from . import layouts

log = logging.getLogger(__name__)


class LoraError(CheckpointError):
    """A LoRA file that does not fit the model, with what it looks like and what to do."""


@dataclass(frozen=True)
class LowRank:
    """(alpha/rank)·up·down, reshaped to the weight (a Conv3d's too)."""

    up: torch.Tensor  # out × rank
    down: torch.Tensor  # rank × in (× kernel)
    scale: float

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        up, down = (t.to(device=device, dtype=torch.float32) for t in (self.up, self.down))
        return (up.flatten(1) @ down.flatten(1)).reshape(shape) * self.scale


@dataclass(frozen=True)
class Difference:
    """A full difference to a parameter (`.diff`, `.diff_b`)."""

    tensor: torch.Tensor

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return self.tensor.to(device=device, dtype=torch.float32).reshape(shape)


@dataclass(frozen=True)
class Scaled:
    """A patch at a strength: what a layer adds to its parameter while the LoRA is active."""

    patch: LowRank | Difference
    strength: float

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return self.patch.delta(shape, device) * self.strength


@dataclass(frozen=True)
class Lora:
    """A LoRA file read for one model: its patches by (module name, parameter name)."""

    name: str
    patches: dict[tuple[str, str], list[LowRank | Difference]] = field(repr=False)

    @property
    def parameters(self) -> int:
        return len(self.patches)


def load_lora(path: str | Path, model: nn.Module) -> Lora:
    """Read a LoRA safetensors file for `model` (a Wan DiT), in any layout layouts.py knows; every factor
    is checked against the parameter it patches. Raises LoraError with what the file looks like when it
    is not a Wan LoRA or does not fit this model; warns when some of its keys fit nothing."""
    path = Path(path)
    keys = read_keys(path)  # refuses pickles, names missing and damaged files
    name = path.name
    unsupported = layouts.unsupported_layout(keys)
    if unsupported:
        raise LoraError(
            f"{name} is a {unsupported} file; this loader reads LoRA (up/down factors) and full differences "
            "(.diff, .diff_b). Convert it to a plain LoRA (e.g. with kohya's or LyCORIS's extraction tools)."
        )
    factors, ignored = _group(keys, model)
    if not factors:
        raise LoraError(_nothing_matched(name, keys, model))
    tensors = read_tensors(path, [key for group in factors.values() for key in group.values()])
    patches = {}
    for target, group in factors.items():
        module_name, parameter = target
        value = getattr(model.get_submodule(module_name), parameter)
        patches[target] = _patches(name, target, group, tensors, value)
    if ignored:
        log.warning(
            "%s: %d of %d tensors fit %s and are applied; %d fit nothing in it and are ignored (first: %s).",
            name, len(keys) - len(ignored), len(keys), _model_name(model), len(ignored), ", ".join(ignored[:3]),
        )  # fmt: skip
    return Lora(name, patches)


def _model_name(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "name", type(model).__name__)


def _group(keys, model: nn.Module) -> tuple[dict[tuple[str, str], dict[str, str]], list[str]]:
    """{(module name, parameter): {kind: key}} for the keys that fit the model, and the keys that fit nothing."""
    modules = dict(model.named_modules())
    kohya_names = {module_name.replace(".", "_"): module_name for module_name in modules}
    kohya_names.update({n.replace(".", "_"): n for n, _ in model.named_parameters()})
    diffusers = layouts.is_diffusers(keys)
    groups: dict[tuple[str, str], dict[str, str]] = {}
    ignored = []
    for key in keys:
        if key in layouts.METADATA_KEYS:
            continue
        split = layouts.split_kind(key)
        target = None
        if split is not None:
            stem, kind = split
            target = _target(layouts.wan_name(stem, kohya_names, diffusers), kind, modules)
        if target is None:
            ignored.append(key)
            continue
        group = groups.setdefault(target, {})
        group[kind if kind != "diff_b" else "diff"] = key
    return groups, ignored


def _target(name: str, kind: str, modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    """The (module, parameter) a factor patches: a layer's weight (its bias for diff_b), or a parameter
    named in full (`blocks.0.modulation.diff`)."""
    if name in modules and kind != "diff_b":
        return (name, "weight") if getattr(modules[name], "weight", None) is not None else None
    if name in modules:
        return (name, "bias") if getattr(modules[name], "bias", None) is not None else None
    module_name, _, parameter = name.rpartition(".")
    if (
        kind == "diff"
        and module_name in modules
        and isinstance(getattr(modules[module_name], parameter, None), nn.Parameter)
    ):
        return module_name, parameter
    return None


def _patches(name, target, group, tensors, value) -> list[LowRank | Difference]:
    """The patches of one parameter, their shapes checked against it."""
    where = ".".join(target)
    patches: list[LowRank | Difference] = []
    if "up" in group or "down" in group:
        if not {"up", "down"} <= group.keys():
            raise LoraError(
                f"{name}: {where} has only half a LoRA pair (up without down, or down without up)."
            )
        up, down = tensors[group["up"]], tensors[group["down"]]
        rank = down.shape[0] if down.ndim else 0
        if rank == 0 or up.ndim < 2:
            raise LoraError(
                f"{name}: {where} has factors up {tuple(up.shape)} · down {tuple(down.shape)}, not a LoRA pair "
                "of rank 1 or more. The file is damaged."
            )
        if (
            up.shape[1] != rank
            or up.shape[0] != value.shape[0]
            or math.prod(down.shape[1:]) != math.prod(value.shape[1:])
        ):
            raise LoraError(
                _shape_error(name, where, f"up {tuple(up.shape)} · down {tuple(down.shape)}", value)
            )
        alpha = tensors[group["alpha"]] if "alpha" in group else torch.tensor(rank)
        if alpha.numel() != 1:
            raise LoraError(
                f"{name}: {where} has an alpha of shape {tuple(alpha.shape)}; alpha is one number (the "
                "LoRA's scale times its rank). The file is damaged."
            )
        patches.append(LowRank(up, down, float(alpha) / rank))
    if "diff" in group:
        diff = tensors[group["diff"]]
        if diff.numel() != value.numel():
            raise LoraError(_shape_error(name, where, f"a difference of shape {tuple(diff.shape)}", value))
        patches.append(Difference(diff))
    return patches


def _shape_error(name: str, where: str, what: str, value: torch.Tensor) -> str:
    return (
        f"{name} does not fit this model: for {where} it holds {what}, and the model's {where} is "
        f"{tuple(value.shape)}. It was made for a Wan model of another size (1.3B: width 1536; 5B: 3072; 14B: "
        "5120): load the LoRA made for this model."
    )


def _nothing_matched(name: str, keys, model: nn.Module) -> str:
    other = layouts.other_model(keys)
    looks = f"it looks made for {other}" if other else f"first keys: {', '.join(sorted(keys)[:3])}"
    return (
        f"{name}: none of its {len(keys)} tensors fits {_model_name(model)} ({looks}). Load a LoRA made for "
        "this Wan model."
    )


@contextlib.contextmanager
def active(model: nn.Module, loras: tuple[tuple[Lora, float], ...]) -> Iterator[None]:
    """The LoRAs (with their strengths) applied while the block runs: each patched module holds its
    patches for the duration only, so other handles on the same weights see none."""
    if not loras:
        yield
        return
    touched = []
    try:
        for lora, strength in loras:
            if strength == 0:
                continue
            for (module_name, parameter), patches in lora.patches.items():
                module = model.get_submodule(module_name)
                table = module.__dict__.setdefault(PATCHES, {})
                table.setdefault(parameter, []).extend(Scaled(patch, strength) for patch in patches)
                touched.append(module)
        yield
    finally:
        for module in touched:
            module.__dict__.pop(PATCHES, None)
