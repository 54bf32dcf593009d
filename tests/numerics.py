"""Shared numeric helpers for the parity tests."""

from __future__ import annotations

from collections.abc import Callable

import torch


def relative_error(test: torch.Tensor, reference: torch.Tensor) -> float:
    """Norm of the difference over the norm of the reference, in float64."""
    return float((test.double() - reference.double()).norm() / reference.double().norm())


def scaled_fp8(
    state: dict[str, torch.Tensor], quantise: Callable[[str, torch.Tensor], bool]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ComfyUI's scaled fp8: chosen weights as fp8 / absmax-scale with a `scale_weight` each, plus the
    `scaled_fp8` marker. Returns the file's tensors and the dequantised weights they stand for."""
    file, dequantised = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for key, value in state.items():
        if quantise(key, value):
            scale = value.abs().max() / 448.0
            quantised = (value / scale).to(torch.float8_e4m3fn)
            file[key], file[key.removesuffix(".weight") + ".scale_weight"] = quantised, scale.reshape(1)
            dequantised[key] = quantised.float() * scale
        else:
            file[key] = dequantised[key] = value
    return file, dequantised
