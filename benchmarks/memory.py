"""Peak memory of a block of code, for benchmarks. On CUDA: the allocator's peak. On the CPU: the peak of
live tensor bytes, replayed from the profiler's allocation and free events (exact, unlike resident memory,
which the C allocator keeps and reuses out of sight)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile


class TensorPeak:
    """`with TensorPeak(device) as peak: ...` then `peak.bytes`: the most tensor memory the block held above
    what was live when it began."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.profiler.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.before
            return
        self.profiler.__exit__(*exc)
        events = sorted(
            (event.start_ns(), event.nbytes())
            for event in self.profiler.profiler.kineto_results.events()
            if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
        )
        live = peak = 0
        for _, change in events:
            live += change
            peak = max(peak, live)
        self.bytes = peak
