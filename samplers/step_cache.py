"""Step caching: reuse the model's last transformation instead of calling it when its output is changing
slowly (EasyCache, Zhou et al. 2025: a runtime-adaptive rule, no per-model calibration; TeaCache and MagCache
need fitted curves per model, which a pack running Wan and its own Tiny World cannot carry for every size).

Between two computed calls (x_a -> v_a, x_b -> v_b) the transformation rate k = |v_b - v_a| / |x_b - x_a|
says how strongly the output follows the input. For a later call at x, the output's relative change is
estimated as k·|x - x_prev| / |v_b| (x_prev: the previous call's input); the estimates add up from the last
computed call, and while their sum stays under the threshold the call is skipped and answered with the last transformation, x + (v_b - x_b). The first calls (two, so that k
is known) and the last step's calls are always computed; a threshold of 0 computes every call.

The error a skip admits is bounded by the threshold in this estimate's terms: the output is allowed to
drift by at most `threshold` (relative, in norm) since the last computed call before the model is called again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

RECOMMENDED_THRESHOLD = 0.3  # what `--cache` alone uses; chosen in docs/benchmarks.md (step caching)


@dataclass
class StepCache:
    """One model's run down its sigmas (a new one per expert and per window). `calls` counts the model
    calls made, `skipped` those answered from the cache."""

    threshold: float
    last_sigma: float  # calls at or below this noise level are always computed (the last step's)
    warmup: int = 2
    calls: int = 0
    skipped: int = 0
    _inputs: list[torch.Tensor] = field(default_factory=list, repr=False)
    _outputs: list[torch.Tensor] = field(default_factory=list, repr=False)
    _drift: float = 0.0
    _previous: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"cache threshold {self.threshold!r}: expected 0 (off) or more, e.g. 0.3.")

    def wrap(self, velocity: Velocity) -> Velocity:
        def cached(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            skip = self._can_skip(x, float(sigma))
            self._previous = x
            if skip:
                self.skipped += 1
                return x + (self._outputs[-1] - self._inputs[-1])
            out = velocity(x, sigma)
            self.calls += 1
            self._inputs, self._outputs = [*self._inputs[-1:], x], [*self._outputs[-1:], out]
            self._drift = 0.0
            return out

        return cached

    def _can_skip(self, x: torch.Tensor, sigma: float) -> bool:
        if (
            self.threshold == 0
            or self.calls < self.warmup
            or len(self._inputs) < 2
            or sigma <= self.last_sigma
        ):
            return False
        (x_a, x_b), (v_a, v_b) = self._inputs, self._outputs
        moved = float((x_b - x_a).norm())
        if moved == 0:
            return False
        rate = float((v_b - v_a).norm()) / moved
        self._drift += rate * float((x - self._previous).norm()) / max(float(v_b.norm()), 1e-12)
        return self._drift < self.threshold
