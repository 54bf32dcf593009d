"""What every training stage shares: the log, the CPU cores it runs on, the learning-rate schedule (linear
warmup, then a cosine down to a tenth), and files whose bytes depend only on their contents."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

_threads = 0  # set by use_threads: 0 shares the cores other processes leave free


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def use_threads(threads: int) -> None:
    """A fixed number of torch threads, or 0: the cores other processes leave free, looked at again as
    the loops log (share_cores)."""
    global _threads
    _threads = threads
    if threads:
        torch.set_num_threads(threads)
    share_cores()


def share_cores() -> None:
    """With threads 0: use the cores other processes leave free (oversubscribed OpenMP threads spin and
    slow everything down many times over). A fixed thread count is left as it is."""
    if _threads:
        return
    busy = os.getloadavg()[0] - torch.get_num_threads()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, round((os.cpu_count() or 1) - busy))))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning rate's factor at `step` (from 0) of `total`: warmup over `warmup` steps, then a cosine
    from 1 to 0.1."""
    return min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))


def save_with_metadata(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' save_file with the metadata's keys in sorted order. It writes them in the order of a
    hash map seeded afresh in every process, so the same tensors and metadata gave other bytes each run."""
    save_file(tensors, str(path), metadata=metadata)
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # the same keys and values in another order: never longer
            raise RuntimeError(f"{path}: the re-sorted header is {len(text)} bytes, not {length}")
        handle.seek(8)
        handle.write(text.ljust(length))
