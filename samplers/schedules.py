"""Noise schedules for rectified flow: descending float32 sigmas from 1 (pure noise) to exactly 0.

Every schedule is `fn(steps, shift=1.0, denoise=1.0) -> sigmas` with steps + 1 values (see `beta_schedule`
for its one exception), and SCHEDULES lists them by the name a node shows. A schedule has at most
TRAINING_LEVELS steps (with denoise < 1, its whole schedule of steps / denoise): the models were trained on
that many noise levels, and `simple` and `beta` read them from a table of that many.

Two schedules sample the shifted line, and differ only in rounding:
- `linear` is Wan's: `shift_sigmas(linspace(1, 0, steps + 1))`, as Wan's `get_sampling_sigmas` (its
  DPM++ path) and diffusers' FlowMatchEulerDiscreteScheduler given those sigmas build it. (Wan's UniPC
  path starts the line at 0.999 instead of 1; diffusers' flow-sigma DPM/UniPC schedulers do the same.)
- `simple` is ComfyUI's `simple` scheduler on a flow model (ModelSamplingDiscreteFlow with this shift),
  value for value: it reads the levels from a table of 1000 shifted timesteps, so timestep k/steps is
  rounded to a multiple of 1/1000. The two agree whenever steps divides 1000 (10, 20, 25, 40, 50, ...)
  and otherwise differ by under one table level, e.g. 6 steps, no shift: 0.834 here for 0.8333.
Workflows made with core's KSampler reproduce with `simple`; Wan's reference scripts with `linear`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

TRAINING_LEVELS = 1000  # ComfyUI's flow sigma table, the model's timestep = 1000 * sigma, and the most steps
FULL_DENOISE = 0.9999  # ComfyUI's KSampler treats any denoise above this as 1
MIN_SHIFT, MAX_SHIFT = 0.01, 100.0  # the shift widget's range


def shift_sigmas(sigmas, shift: float):
    """The timestep shift of SD3 / Wan (Esser et al. 2024, eq. 23): shift·s / (1 + (shift - 1)·s),
    which keeps 0 and 1 fixed and spends more steps at high noise when shift > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def linear_schedule(steps: int, shift: float = 1.0, denoise: float = 1.0) -> torch.Tensor:
    """Wan's schedule: `steps` equal strides of the unshifted sigma from 1 to 0, then shifted."""

    def full(total: int) -> torch.Tensor:
        return shift_sigmas(torch.linspace(1.0, 0.0, total + 1, dtype=torch.float64), shift).float()

    return _keep_last(full, steps, shift, denoise)


def simple_schedule(steps: int, shift: float = 1.0, denoise: float = 1.0) -> torch.Tensor:
    """ComfyUI's `simple` scheduler (comfy/samplers.py) on a flow model with this shift: every
    (1000/steps)-th level of the 1000-level table, from the top, then 0."""

    def full(total: int) -> torch.Tensor:
        table = _comfyui_flow_table(shift)
        stride = len(table) / total
        return torch.tensor([*(float(table[-(1 + int(k * stride))]) for k in range(total)), 0.0])

    return _keep_last(full, steps, shift, denoise)


def beta_schedule(
    steps: int, shift: float = 1.0, denoise: float = 1.0, alpha: float = 0.6, beta: float = 0.6
) -> torch.Tensor:
    """ComfyUI's `beta` scheduler (Lee et al. 2024, "Beta Sampling is All You Need"): table levels at
    the Beta(alpha, beta) quantiles of evenly spaced probabilities, so steps crowd at both ends.

    As in ComfyUI, a level that rounds to the same table entry as the one before is used once, so from
    139 steps on (at alpha = beta = 0.6) the schedule has fewer than steps + 1 values."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r} must be a positive number (ComfyUI's default is 0.6).")

    def full(total: int) -> torch.Tensor:
        table = _comfyui_flow_table(shift)
        last = len(table) - 1
        indices = [round(beta_quantile(1.0 - k * (1.0 / total), alpha, beta) * last) for k in range(total)]
        kept = [index for k, index in enumerate(indices) if k == 0 or index != indices[k - 1]]
        return torch.tensor([*(float(table[index]) for index in kept), 0.0])

    return _keep_last(full, steps, shift, denoise)


SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "simple": simple_schedule,
    "linear": linear_schedule,
    "beta": beta_schedule,
}


def schedule_by_name(name: str) -> Callable[..., torch.Tensor]:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}.")
    return SCHEDULES[name]


def _keep_last(full: Callable[[int], torch.Tensor], steps: int, shift: float, denoise: float) -> torch.Tensor:
    """ComfyUI's partial denoise (KSampler.set_steps): build the schedule for int(steps / denoise)
    steps and keep its last steps + 1 sigmas, so sampling starts part-way down from the top."""
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(
            f"shift={shift!r} must be a positive number: 1 leaves the schedule as it is, larger values "
            "spend more steps at high noise (Wan uses 3 to 8)."
        )
    total = check_steps(steps, denoise)
    return full(total) if total == steps else full(total)[-(steps + 1) :]


def check_steps(steps: int, denoise: float = 1.0) -> int:
    """The steps of the whole schedule that `steps` at `denoise` are the tail of (ComfyUI's
    int(steps / denoise)), refused beyond the schedule's resolution: its TRAINING_LEVELS noise levels."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a whole number, at least 1.")
    if not (isinstance(denoise, (int, float)) and 0 < denoise <= 1):
        raise ValueError(
            f"denoise={denoise!r} must be in (0, 1]: 1 starts from pure noise, smaller values keep more "
            "of the input latent."
        )
    total = steps if denoise > FULL_DENOISE else int(steps / denoise)
    if total <= TRAINING_LEVELS:
        return total
    if total == steps:
        raise ValueError(
            f"steps={steps} is beyond the schedule's resolution: it has {TRAINING_LEVELS} noise levels (the "
            f"model's timesteps), so at most {TRAINING_LEVELS} steps; use {TRAINING_LEVELS} or fewer."
        )
    raise ValueError(
        f"steps={steps} at denoise={denoise:g} is the tail of a {total}-step schedule, beyond the schedule's "
        f"resolution of {TRAINING_LEVELS} noise levels (the model's timesteps): use at most "
        f"{int(TRAINING_LEVELS * denoise)} steps at this denoise, or a higher denoise."
    )


def _comfyui_flow_table(shift: float) -> torch.Tensor:
    """ModelSamplingDiscreteFlow's sigmas (comfy/model_sampling.py), with its float32 arithmetic in
    its order: level k of 1000 is shift_sigmas(k / 1000), k = 1..1000."""
    timesteps = torch.arange(1, TRAINING_LEVELS + 1, 1) / TRAINING_LEVELS * TRAINING_LEVELS
    return shift_sigmas(timesteps / TRAINING_LEVELS, shift)


def beta_quantile(p: float, a: float, b: float) -> float:
    """The Beta(a, b) quantile function (the inverse of `regularized_incomplete_beta` in x), by Newton's
    method kept inside a shrinking bracket; scipy's `beta.ppf` without scipy."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if a == b and p == 0.5:
        return 0.5  # the symmetric median, exact, so that rounding 0.5 * levels breaks ties like scipy
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    low, high, x = 0.0, 1.0, 0.5
    for _ in range(200):
        error = regularized_incomplete_beta(x, a, b) - p
        if error == 0:
            return x
        low, high = (x, high) if error < 0 else (low, x)
        density = math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_beta)
        step = x - error / density
        following = step if low < step < high else 0.5 * (low + high)
        if following == x or high - low <= 4 * math.ulp(x):
            return following
        x = following
    return x


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the Beta(a, b) distribution function, by its continued fraction (Numerical Recipes,
    §6.4), evaluated on the side of the mean where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(1.0 - x, b, a) / b


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    tiny = 1e-300

    def nonzero(value: float) -> float:
        return value if abs(value) > tiny else tiny

    c, d = 1.0, 1.0 / nonzero(1.0 - (a + b) * x / (a + 1))
    fraction = d
    for m in range(1, 1000):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d, c = 1.0 / nonzero(1.0 + even * d), nonzero(1.0 + even / c)
        fraction *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d, c = 1.0 / nonzero(1.0 + odd * d), nonzero(1.0 + odd / c)
        fraction *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return fraction
