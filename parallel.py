"""One video on several processes (`torchrun --nproc-per-node N -m spacetime generate ...`), on
torch.distributed: NCCL between GPUs, gloo between CPU processes.

The DiT's tokens are split across a sequence group (DeepSpeed-Ulysses, Jacobs et al. 2023, as xDiT's unified
sequence parallelism runs it for Wan): every block works on its share of the tokens, and self-attention
exchanges them for a share of the heads (an all-to-all), attends over all tokens, and exchanges them back.
The text, the time embedding and the weights are replicated. With parallel guidance the processes form two
(or more) such groups, and a forward's batch (guidance's conditional and unconditional passes) is split
between them. Every process runs the same sampler on the same noise (drawn from the seed on the CPU), so
each ends every step with the same latent; the VAE's spatial tiles are decoded in turns and gathered.

A token count that does not divide by the group's size is padded, and the padding is left out of every
attention's keys and cropped from the output, so the result is the single process's (within rounding).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # as dit/attention.py's

MAX_DIMS = 8  # of a tensor Group.share passes
TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer means a process has died


@dataclass(frozen=True)
class Group:
    """Processes that share one piece of work: this process's place among them, and torch's group."""

    size: int
    rank: int
    handle: dist.ProcessGroup | None = None  # None: every process (torch's default group)

    def chunk(self, length: int) -> int:
        """Each process's share of `length` items, rounded up (the last one's is padded)."""
        return -(-length // self.size)

    def split(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This process's share of x along `dim`, zero-padded to the common share."""
        chunk = self.chunk(x.shape[dim])
        padding = chunk * self.size - x.shape[dim]
        if padding:
            pad = [0, 0] * (x.ndim - 1 - dim) + [0, padding]
            x = F.pad(x, pad)
        return x.narrow(dim, self.rank * chunk, chunk)

    def gather(self, x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
        """Every process's share along `dim`, in rank order, cropped to `length`: the whole tensor, on all."""
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.handle)
        return torch.cat(parts, dim).narrow(dim, 0, length)

    def share(self, parts: list[torch.Tensor | None], like: torch.Tensor) -> list[torch.Tensor]:
        """Parts made in turns (part i by process i mod size, None on the others) -> every part on every
        process; `like` gives their dtype and device."""
        shared = []
        for index, part in enumerate(parts):
            owner = index % self.size
            source = owner if self.handle is None else dist.get_global_rank(self.handle, owner)
            shape = torch.zeros(MAX_DIMS + 1, dtype=torch.int64, device=like.device)
            if owner == self.rank:
                shape[: part.ndim + 1] = torch.tensor([part.ndim, *part.shape])
            dist.broadcast(shape, source, group=self.handle)
            size = shape[1 : int(shape[0]) + 1].tolist()
            received = part.contiguous() if owner == self.rank else like.new_empty(size)
            dist.broadcast(received, source, group=self.handle)
            shared.append(received)
        return shared

    def all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        """x's first axis holds one slice per process: slice j goes to process j, and the result's slice j
        came from process j."""
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.handle)
        return out


def check_heads(heads: int, size: int, name: str) -> None:
    """Ulysses gives each process whole heads: the sequence group's `size` must divide the head count."""
    if heads % size:
        valid = [n for n in range(1, heads + 1) if heads % n == 0]
        raise ValueError(
            f"{name} has {heads} attention heads, which do not divide among {size} processes (each takes whole "
            f"heads): run {', '.join(map(str, valid))} processes, or twice that with --parallel-guidance (two "
            "groups, each splitting one of guidance's passes)."
        )


def ulysses(attend: Kernel, group: Group, length: int) -> Kernel:
    """`attend` over all `length` tokens for inputs that hold this process's share of them (B×L/n×N×K):
    tokens are traded for heads, padding is left out of the keys, and the output is traded back."""
    n = group.size

    def to_heads(x: torch.Tensor) -> torch.Tensor:  # B×l×N×K -> B×(n·l)×N/n×K, every token, our heads
        b, chunk, heads, width = x.shape
        sliced = x.reshape(b, chunk, n, heads // n, width).permute(2, 0, 1, 3, 4)
        return group.all_to_all(sliced).permute(1, 0, 2, 3, 4).reshape(b, n * chunk, heads // n, width)

    def to_tokens(x: torch.Tensor) -> torch.Tensor:  # B×(n·l)×N/n×K -> B×l×N×K, our tokens, every head
        b, total, heads, width = x.shape
        sliced = x.reshape(b, n, total // n, heads, width).permute(1, 0, 2, 3, 4)
        return group.all_to_all(sliced).permute(1, 2, 0, 3, 4).reshape(b, total // n, n * heads, width)

    def attend_all(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (to_heads(t)[:, :length] for t in (q, k, v))
        out = attend(q, k, v)
        padding = n * group.chunk(length) - length
        return to_tokens(F.pad(out, (0, 0, 0, 0, 0, padding)) if padding else out)

    return attend_all


@dataclass(frozen=True)
class Parallel:
    """How a forward is split: its tokens over `sequence`; its batch over `guidance` (the processes holding
    the same share of tokens in each sequence group), when there are several groups and the batch divides."""

    sequence: Group
    guidance: Group | None = None
    backend: str = "gloo"  # torch.distributed's: nccl (tensors on GPUs) or gloo (on the CPU)

    @property
    def everyone(self) -> Group:
        """All the processes (the VAE's tiles are dealt among them)."""
        size = self.sequence.size * (self.guidance.size if self.guidance else 1)
        rank = self.sequence.rank + (self.guidance.rank * self.sequence.size if self.guidance else 0)
        return Group(size, rank)

    def decode_group(self, device: torch.device | None) -> Group | None:
        """Who shares a VAE decode on `device` (None: the compute device): everyone, unless the device is one
        the backend cannot pass tensors from (the CPU under NCCL), where each process decodes alone."""
        on_gpu = device is None or device.type == "cuda"
        return self.everyone if on_gpu == (self.backend == "nccl") else None

    def batch_group(self, batch: int) -> Group | None:
        """The group that splits a batch of `batch` items (None: each sequence group takes it whole)."""
        guidance = self.guidance
        return guidance if guidance is not None and guidance.size > 1 and batch % guidance.size == 0 else None


def world_size() -> int:
    """Processes in this run: torchrun's WORLD_SIZE (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main_process() -> bool:
    """Whether this process writes and prints: rank 0, or the only one."""
    return not dist.is_initialized() or dist.get_rank() == 0


def start(
    device: torch.device | None, guidance_groups: int = 1
) -> tuple[Parallel | None, torch.device | None]:
    """Join the run torchrun started (WORLD_SIZE > 1): NCCL on this process's GPU (LOCAL_RANK) when CUDA is
    there, gloo on the CPU otherwise. -> the split (None alone) and the device the VAE decodes on (`device`,
    which under NCCL is this process's GPU unless another kind was asked for)."""
    size = world_size()
    if size == 1:
        if guidance_groups > 1:
            raise ValueError(
                "--parallel-guidance splits guidance's passes between processes: launch with torchrun "
                "--nproc-per-node 2 (or more) -m spacetime generate ..."
            )
        return None, device
    if guidance_groups < 1 or size % guidance_groups:
        raise ValueError(
            f"{size} processes do not split into {guidance_groups} guidance groups: use an even process count."
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(gpu)  # "cuda" is this process's GPU from here on
        device = gpu if device is None or device.type == "cuda" else device
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return groups(dist.get_rank(), size, guidance_groups, backend), device


def groups(rank: int, size: int, guidance_groups: int, backend: str = "gloo") -> Parallel:
    """The sequence groups (consecutive ranks) and the guidance groups across them; every process makes every
    group, as torch.distributed.new_group requires."""
    width = size // guidance_groups
    if guidance_groups == 1:
        return Parallel(Group(size, rank), backend=backend)
    sequence = _new_groups([range(g * width, (g + 1) * width) for g in range(guidance_groups)], rank)
    guidance = _new_groups([range(r, size, width) for r in range(width)], rank)
    return Parallel(
        Group(width, rank % width, sequence), Group(guidance_groups, rank // width, guidance), backend
    )


def _new_groups(members: Sequence[range], rank: int) -> dist.ProcessGroup:
    mine = None
    for ranks in members:
        handle = dist.new_group(list(ranks))
        if rank in ranks:
            mine = handle
    return mine


def finish() -> None:
    """Leave the run (after the last collective)."""
    if dist.is_initialized():
        dist.destroy_process_group()
