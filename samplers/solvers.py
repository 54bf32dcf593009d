"""ODE solvers for rectified-flow sampling, in k-diffusion's form (crowsonkb/k-diffusion `sampling.py`).

Each `sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None)` is a stateless
function that moves x from noise level sigmas[0] down to sigmas[-1] using a denoiser
`model(x, sigma, **extra_args) -> x0`, where sigma is the step's level as a scalar (0-dim) tensor, in the
sigmas' dtype on x's device. `disable` (k-diffusion's progress-bar switch) is accepted and unused: no
progress bar is drawn here.

`callback`, if given, is called once per step after the model call with k-diffusion's dict
{"i", "x", "sigma", "sigma_hat", "denoised"}: a node ticks its progress bar there, and an exception
raised there (cancellation) stops sampling. When the last sigma is 0 the last step returns the model's x0.

The flow is x_sigma = (1 - sigma)·x0 + sigma·noise: alpha = 1 - sigma, and the multistep solvers work in
the log signal-to-noise ratio lambda = log(alpha / sigma), which is -inf at sigma = 1 (pure noise) and
+inf at sigma = 0; their coefficients take their limits there, so schedules may start at exactly 1.

Axes: B batch; x may have any shape B×... .
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict], None]


def append_dims(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """A scalar or a per-batch value (B,), with trailing unit axes so that it broadcasts over B×... ."""
    return value.reshape(*value.shape, *(1,) * (ndim - value.ndim))


def denoiser_from_velocity(velocity: Callable[..., torch.Tensor]) -> Denoiser:
    """The x0 prediction of a velocity model v = noise - x0 (rectified flow): x0 = x - sigma·v."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        return x - append_dims(sigma, x.ndim) * velocity(x, sigma, **extra_args)

    return denoise


def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Euler's method on dx/dsigma = (x - x0) / sigma, the flow's velocity (Karras et al. 2022, Alg. 2
    without churn); diffusers' FlowMatchEulerDiscreteScheduler."""
    extra_args = extra_args or {}
    levels, sigma_in = _prepare(x, sigmas)
    for i in range(len(levels) - 1):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = model(x, sigma_in(i), **extra_args)
        _report(callback, i, x, sigmas, denoised)
        x = denoised if sigma_next == 0 else x + (sigma_next - sigma) * _derivative(x, sigma, denoised)
    return x


def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1): an Euler step, corrected by the mean of the slopes
    at both ends; two model calls a step, one for the step to sigma = 0. diffusers'
    FlowMatchHeunDiscreteScheduler."""
    extra_args = extra_args or {}
    levels, sigma_in = _prepare(x, sigmas)
    for i in range(len(levels) - 1):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = model(x, sigma_in(i), **extra_args)
        _report(callback, i, x, sigmas, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        slope = _derivative(x, sigma, denoised)
        x_euler = x + (sigma_next - sigma) * slope
        slope_next = _derivative(x_euler, sigma_next, model(x_euler, sigma_in(i + 1), **extra_args))
        x = x + (sigma_next - sigma) * (slope + slope_next) / 2
    return x


def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) for rectified flow: the exact solution of the linear
    part in lambda, with x0 extrapolated linearly from the last two steps; first order on the first
    step and on the step to sigma = 0. diffusers' DPMSolverMultistepScheduler(use_flow_sigmas=True,
    algorithm_type="dpmsolver++", solver_order=2)."""
    extra_args = extra_args or {}
    levels, sigma_in = _prepare(x, sigmas)
    previous = None
    for i in range(len(levels) - 1):
        denoised = model(x, sigma_in(i), **extra_args)
        _report(callback, i, x, sigmas, denoised)
        x = _dpmpp_2m_step(x, levels[i], levels[i + 1], denoised, previous)
        previous = (log_snr(levels[i]), denoised)
    return x


def sample_unipc(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023) of order 2 with B(h) = e^h - 1 ("bh2"), on x0, as Wan samples
    (Wan2.2 `FlowUniPCMultistepScheduler`; diffusers' UniPCMultistepScheduler(use_flow_sigmas=True,
    solver_order=2, solver_type="bh2", predict_x0=True)). The predictor UniP-2 is the DPM-Solver++(2M)
    step; before each step the corrector UniC re-takes the previous step with the model call just made
    at its end, at no extra model call. Order 1 on the first and the last step (lower_order_final).

    Where a schedule starts at sigma = 1, the differences against that level vanish (its lambda is
    -inf); diffusers instead moves such a first sigma to 1 - 1e-6, and Wan starts its line at 0.999."""
    extra_args = extra_args or {}
    levels, sigma_in = _prepare(x, sigmas)
    steps = len(levels) - 1
    history: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) of the steps taken, newest last
    x_start = order = None  # the previous step's starting point and order, for its correction
    for i in range(steps):
        denoised = model(x, sigma_in(i), **extra_args)
        if i > 0:
            x = _unic(x_start, levels[i - 1], levels[i], denoised, history, order)
        _report(callback, i, x, sigmas, denoised)
        order = 1 if i in (0, steps - 1) else 2
        x_start = x
        x = _dpmpp_2m_step(x, levels[i], levels[i + 1], denoised, history[-1] if order == 2 else None)
        history = [*history[-1:], (log_snr(levels[i]), denoised)]
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
}


def solver_by_name(name: str) -> Callable[..., torch.Tensor]:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}: choose one of {', '.join(SOLVERS)}.")
    return SOLVERS[name]


def log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) = log((1 - sigma) / sigma), from -inf at sigma = 1 to +inf at 0."""
    if sigma == 0:
        return math.inf
    if sigma == 1:
        return -math.inf
    return math.log1p(-sigma) - math.log(sigma)


def _dpmpp_2m_step(
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    denoised: torch.Tensor,
    previous: tuple[float, torch.Tensor] | None,
) -> torch.Tensor:
    """x at sigma -> x at sigma_next, from this step's x0 and, when given, the (lambda, x0) of the
    step before, which extrapolates x0 to the middle of the step (DPM-Solver++(2M), midpoint form)."""
    if sigma_next == 0:
        return denoised
    lambda_s, lambda_t = log_snr(sigma), log_snr(sigma_next)
    h = lambda_t - lambda_s
    if previous is not None:
        lambda_previous, denoised_previous = previous
        ratio = h / (lambda_s - lambda_previous)  # 1 / r; 0 after a step that began at sigma = 1
        denoised = denoised + 0.5 * ratio * (denoised - denoised_previous)
    return (sigma_next / sigma) * x - (1 - sigma_next) * math.expm1(-h) * denoised


def _unic(
    x_start: torch.Tensor,
    sigma_start: float,
    sigma: float,
    denoised: torch.Tensor,
    history: list[tuple[float, torch.Tensor]],
    order: int,
) -> torch.Tensor:
    """UniC-`order` (Zhao et al. 2023, Alg. 2 with B(h) = e^h - 1): the step from x_start at
    sigma_start to sigma, re-taken with `denoised`, the x0 predicted at its end."""
    lambda_s, lambda_t = log_snr(sigma_start), log_snr(sigma)
    h = lambda_t - lambda_s
    hh = -h  # the paper's h for data prediction
    b_h = math.expm1(hh)
    lambda_0, denoised_0 = history[-1]  # x0 at sigma_start
    difference = denoised - denoised_0
    if order == 1:
        rho_history, rho_now, history_term = 0.0, 0.5, 0.0
    else:
        # Solve [[1, 1], [r, 1]] (rho_history, rho_now) = (g1, g2) for the weights, where
        # g_k = k!·phi_{k+1}(hh)·hh / B(h) and r is the earlier step's lambda offset in units of h.
        lambda_1, denoised_1 = history[-2]
        r = (lambda_1 - lambda_0) / h
        phi_2 = (b_h / hh - 1) / hh  # phi_1(hh) = (e^hh - 1) / hh; phi_{k+1} = (phi_k - 1/k!) / hh
        phi_3 = (phi_2 - 0.5) / hh
        g1, g2 = phi_2 * hh / b_h, 2 * phi_3 * hh / b_h
        rho_history = (g1 - g2) / (1 - r)
        rho_now = g1 - rho_history
        history_term = (denoised_1 - denoised_0) * (1 / r)
    alpha_t = 1 - sigma
    x_t = (sigma / sigma_start) * x_start - alpha_t * b_h * denoised_0
    return x_t - alpha_t * b_h * (rho_history * history_term + rho_now * difference)


def _derivative(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma = (x - x0) / sigma, which for rectified flow is the velocity noise - x0."""
    return (x - denoised) / sigma


def _prepare(x: torch.Tensor, sigmas: torch.Tensor) -> tuple[list[float], Callable[[int], torch.Tensor]]:
    """The sigmas as Python floats for the step arithmetic, and level i as the model's scalar input."""
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas has shape {tuple(sigmas.shape)}; expected a 1-D tensor of noise levels.")
    levels = sigmas.tolist()
    if any(not 0 <= level <= 1 for level in levels) or any(a <= b for a, b in itertools.pairwise(levels)):
        shown = ", ".join(f"{level:.4g}" for level in levels[:8]) + (", ..." if len(levels) > 8 else "")
        raise ValueError(
            f"sigmas [{shown}] must descend strictly within [0, 1] (rectified flow: 1 is pure noise, "
            "0 the clean latent); build them with a schedule from samplers.schedules."
        )
    on_device = sigmas.to(x.device)
    return levels, lambda i: on_device[i]


def _report(callback: Callback | None, i: int, x: torch.Tensor, sigmas: torch.Tensor, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
