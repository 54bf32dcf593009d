"""Spatial tiling for the VAE decoder: overlapping latent tiles, each decoded with its own time cache,
blended with linear ramps across the overlaps.

Axes: B batch, C channels, T frames, H W height and width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpatialTiling:
    """Overlapping latent tiles, blended with linear ramps across the overlaps (no visible seams)."""

    tile: int  # latent pixels per tile side
    overlap: int  # latent pixels shared by neighbouring tiles
    stride: int  # pixels per latent pixel

    def __post_init__(self):
        if self.tile < 2 or not 0 <= self.overlap < self.tile:
            raise ValueError(
                f"tiling needs tile >= 2 and 0 <= overlap < tile, got tile={self.tile}, overlap={self.overlap}"
            )

    def starts(self, size: int) -> list[int]:
        if size <= self.tile:
            return [0]
        step = self.tile - self.overlap
        starts = list(range(0, size - self.tile, step))
        return [*starts, size - self.tile]

    def regions(self, height: int, width: int) -> list[tuple[slice, slice]]:
        return [
            (slice(top, min(top + self.tile, height)), slice(left, min(left + self.tile, width)))
            for top in self.starts(height)
            for left in self.starts(width)
        ]

    def _ramp(self, start: int, length: int, size: int, device) -> torch.Tensor:
        """Weights along one axis of a tile (pixels): rising over the overlap where a neighbour precedes,
        falling where one follows, flat at the image borders."""
        pixels = length * self.stride
        ramp = self.overlap * self.stride
        weight = torch.ones(pixels, device=device)
        if ramp:
            rise = torch.arange(1, ramp + 1, device=device, dtype=torch.float32) / (ramp + 1)
            if start > 0:
                weight[:ramp] = torch.minimum(weight[:ramp], rise)
            if start + length < size:
                weight[-ramp:] = torch.minimum(weight[-ramp:], rise.flip(0))
        return weight

    def blend(self, parts: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        b, c, t = parts[0].shape[:3]
        out = parts[0].new_zeros(b, c, t, height * self.stride, width * self.stride)
        total = out.new_zeros(height * self.stride, width * self.stride)
        for (rows, columns), part in zip(self.regions(height, width), parts, strict=True):
            weight = torch.outer(
                self._ramp(rows.start, rows.stop - rows.start, height, out.device),
                self._ramp(columns.start, columns.stop - columns.start, width, out.device),
            )
            pixel_rows = slice(rows.start * self.stride, rows.stop * self.stride)
            pixel_columns = slice(columns.start * self.stride, columns.stop * self.stride)
            out[..., pixel_rows, pixel_columns] += part * weight
            total[pixel_rows, pixel_columns] += weight
        return out / total
