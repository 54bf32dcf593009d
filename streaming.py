"""Run a model larger than the compute device's memory by streaming its blocks (outside ComfyUI;
inside it, the host's partial loading does this job).

The weights outside the repeated blocks and as many blocks as the budget allows are placed on the
device; the other blocks wait in CPU memory (pinned on CUDA) and are copied in just before they
run, the next one on a side CUDA stream while the current one computes, and dropped after. Two
block-sized slots are kept for the streamed blocks (the one running and the one arriving), so
what this places on the device never exceeds the budget. The anchors are diffusers' group
offloading with streams and WanVideoWrapper's block swap.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .host import model_bytes

GB = 1e9


module_bytes = model_bytes  # the host's count: parameters and buffers


def repeated_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's stack of repeated blocks (the largest ModuleList by weight), or None without one."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    return max(lists, key=module_bytes, default=None)


class DoesNotFit(MemoryError):
    """Even streaming cannot fit the work into the device's memory."""


@dataclass
class Placement:
    """Which blocks stay on the device and which stream, for one model and budget (bytes)."""

    rest_bytes: int  # weights outside the blocks, always placed
    block_bytes: list[int]
    resident: int  # blocks 0..resident-1 stay on the device

    @property
    def streamed(self) -> int:
        return len(self.block_bytes) - self.resident

    @property
    def device_bytes(self) -> int:
        """The most this placement puts on the device: the resident part and two streaming slots."""
        slots = sorted(self.block_bytes[self.resident :], reverse=True)[:2]
        return self.rest_bytes + sum(self.block_bytes[: self.resident]) + sum(slots)

    def describe(self) -> str:
        if not self.streamed:
            return "all resident"
        return f"{self.resident} of {len(self.block_bytes)} blocks resident, {self.streamed} streamed"


def plan_placement(model: nn.Module, budget: int) -> Placement:
    """Keep as many leading blocks resident as `budget` bytes allow with two streaming slots free."""
    blocks = repeated_blocks(model)
    if blocks is None:
        raise DoesNotFit(f"{type(model).__name__} has no repeated blocks to stream.")
    sizes = [module_bytes(b) for b in blocks]
    rest = module_bytes(model) - sum(sizes)
    resident = len(sizes)
    if rest + sum(sizes) > budget:  # streaming: find the largest resident prefix that leaves two slots
        resident = 0
        while (
            resident < len(sizes)
            and rest + sum(sizes[: resident + 1]) + sum(sorted(sizes[resident + 1 :], reverse=True)[:2])
            <= budget
        ):
            resident += 1
    placement = Placement(rest, sizes, resident)
    if placement.device_bytes > budget:
        raise DoesNotFit(
            f"{type(model).__name__} needs at least {placement.device_bytes / GB:.2f} GB on the device even "
            f"with its blocks streamed (the weights outside its blocks and two blocks), more than the "
            f"{budget / GB:.2f} GB left for weights."
        )
    return placement


@dataclass
class _Block:
    """A streamed block: its tensors' CPU copies, and their device copies while it is in use."""

    module: nn.Module
    stored: dict[str, torch.Tensor]  # name -> CPU tensor (pinned on CUDA)
    bytes: int
    ready: torch.cuda.Event | None = None
    loaded: bool = False
    copies: dict[str, torch.Tensor] = field(default_factory=dict)


def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(full name, tensor) for every parameter and buffer of `module`."""
    for owner_name, owner in module.named_modules():
        for attribute, tensor in itertools.chain(
            owner.named_parameters(recurse=False), owner.named_buffers(recurse=False)
        ):
            if tensor is not None:
                yield f"{owner_name}.{attribute}", tensor


class BlockStreaming:
    """Place `model` on `device` within `budget` bytes of weights for the duration of a `with` block.

    `placed_bytes` counts the bytes this has put on the device now, `peak_bytes` the most at once.
    """

    def __init__(self, model: nn.Module, device: torch.device, budget: int):
        self.model, self.device = model, torch.device(device)
        self.placement = plan_placement(model, budget)
        self.placed_bytes = self.peak_bytes = 0
        self._streams = self.device.type == "cuda"
        self._side = torch.cuda.Stream(self.device) if self._streams else None
        self._blocks: list[_Block] = []
        self._hooks: list = []

    def __enter__(self) -> BlockStreaming:
        blocks = repeated_blocks(self.model)
        for index in range(self.placement.resident, len(blocks)):
            block = blocks[index]
            stored = {name: t.data for name, t in _tensors(block)}
            if self._streams:  # pinned memory copies to the GPU asynchronously
                stored = {name: t.pin_memory() for name, t in stored.items()}
            slot = len(self._blocks)
            self._blocks.append(_Block(block, stored, self.placement.block_bytes[index]))
            self._show(self._blocks[-1], stored)
            self._hooks += [
                block.register_forward_pre_hook(lambda _m, _a, i=slot: self._before(i)),
                block.register_forward_hook(lambda _m, _a, _o, i=slot: self._after(i)),
            ]
        streamed = {id(t) for b in self._blocks for _, t in _tensors(b.module)}
        self._homes = [(t, t.data) for _, t in _tensors(self.model) if id(t) not in streamed]
        for tensor, data in self._homes:
            tensor.data = data.to(self.device)
        self._add(self.placement.rest_bytes + sum(self.placement.block_bytes[: self.placement.resident]))
        if self._blocks:  # the first streamed block starts arriving now
            self._load(0)
        return self

    def __exit__(self, *_exc) -> None:
        for hook in self._hooks:
            hook.remove()
        for block in self._blocks:
            self._unload(block)
        for tensor, data in self._homes:
            tensor.data = data
        self.placed_bytes = 0
        if self._streams:
            torch.cuda.current_stream(self.device).synchronize()

    # Accounting ---------------------------------------------------------------------------------

    def _add(self, count: int) -> None:
        self.placed_bytes += count
        self.peak_bytes = max(self.peak_bytes, self.placed_bytes)

    # Streaming ----------------------------------------------------------------------------------

    def _load(self, index: int) -> None:
        """Start copying block `index` to the device (on the side stream on CUDA)."""
        block = self._blocks[index]
        if block.loaded:
            return
        self._add(block.bytes)
        context = torch.cuda.stream(self._side) if self._streams else contextlib.nullcontext()
        with context:
            block.copies = {
                name: t.to(self.device, non_blocking=True, copy=True) for name, t in block.stored.items()
            }
            if self._streams:
                block.ready = torch.cuda.Event()
                block.ready.record(self._side)
        block.loaded = True

    def _before(self, index: int) -> None:
        block = self._blocks[index]
        self._load(index)
        if block.ready is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(block.ready)
            for copy in block.copies.values():
                copy.record_stream(compute)  # freed only after the compute that reads it
        self._show(block, block.copies)
        self._load((index + 1) % len(self._blocks))  # the next one arrives while this one runs

    @staticmethod
    def _show(block: _Block, data: dict[str, torch.Tensor]) -> None:
        """Point the block's parameters and buffers at `data` (its CPU copies or its device copies)."""
        for name, tensor in _tensors(block.module):
            tensor.data = data[name]

    def _after(self, index: int) -> None:
        self._unload(self._blocks[index])

    def _unload(self, block: _Block) -> None:
        if not block.loaded:
            return
        self._show(block, block.stored)
        block.copies, block.ready, block.loaded = {}, None, False
        self.placed_bytes -= block.bytes
