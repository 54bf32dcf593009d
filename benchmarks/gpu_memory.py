"""Wan on GPUs smaller than the model: peak GPU memory and seconds per denoising step under memory
budgets, through the same placement the command line uses (`generate --vram GB`): whole when it fits,
blocks streamed from pinned CPU memory when it does not, a clear refusal when even that cannot fit.

    python benchmarks/gpu_memory.py [--models 14B 5B] [--budgets 8 12 16 24 0] [--dtypes fp8 bf16]

Wan 2.1 T2V 14B and Wan 2.2 TI2V 5B with random weights (nothing is downloaded), 81 frames at 480x832,
classifier-free guidance, a text context of 512 tokens. Budget 0 is fully resident. One warm-up step
and two timed steps per row. Needs CUDA; refuses to run without it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from spacetime import host
from spacetime.dit.config import PRESETS
from spacetime.dit.patchify import SpacetimePatches, patchify
from spacetime.dit.wan import WanDiT
from spacetime.samplers.denoiser import Sampling, denoise
from spacetime.samplers.guidance import Guider
from spacetime.streaming import DoesNotFit, module_bytes

MODELS = {"14B": "Wan 2.1 T2V 14B / Wan 2.2 T2V A14B expert", "5B": "Wan 2.2 TI2V 5B"}
STRIDES = {"14B": (4, 8), "5B": (4, 16)}  # the VAE's temporal and spatial strides for each model's latent
FRAMES, HEIGHT, WIDTH = 81, 480, 832
WEIGHT_DTYPES = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16}


def random_dit(name: str, weight_dtype: torch.dtype) -> WanDiT:
    """The model at its released size with random weights in CPU memory: the block projections stored in
    `weight_dtype` (fp8 as the fp8 checkpoints store them), everything else in bf16; drawn on the GPU."""
    with torch.device("meta"):
        model = WanDiT(PRESETS[MODELS[name]], compute_dtype=torch.bfloat16)
    for module_name, module in model.named_modules():
        for attribute, parameter in list(module.named_parameters(recurse=False)):
            projection = (
                getattr(module, "casts_weight", False) and attribute == "weight" and parameter.ndim == 2
            )
            dtype = weight_dtype if projection and module_name.startswith("blocks.") else torch.bfloat16
            values = torch.empty(parameter.shape, device="cuda").normal_(0, parameter.shape[-1] ** -0.5)
            setattr(module, attribute, torch.nn.Parameter(values.to(dtype).cpu(), requires_grad=False))
    return model.eval()


def one_row(model: WanDiT, name: str, budget: float) -> tuple[str, str, str]:
    """(placement, peak GB, seconds per step) for one budget (0: fully resident)."""
    t, s = STRIDES[name]
    config = model.config
    latent = torch.zeros(1, config.out_channels, (FRAMES - 1) // t + 1, HEIGHT // s, WIDTH // s)
    tokens, grid = patchify(latent, config.patch_size)
    patches = SpacetimePatches(tokens, grid, config.patch_size, config.latent_format)
    context = torch.randn(1, config.text_len, config.text_dim) * 0.1
    guider = Guider(model, context, context.clone(), cfg=5.0)
    sampling = Sampling(torch.linspace(1.0, 0.0, 4), "euler", seed=0)  # one warm-up step, two timed
    host.set_memory_budget(budget or None)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    marks, placements = [], Placements()
    logger = logging.getLogger("spacetime")
    logger.addHandler(placements)
    logger.setLevel(logging.INFO)

    def step():
        torch.cuda.synchronize()
        marks.append(time.perf_counter())

    try:
        denoise(guider, patches, sampling, step)
    except DoesNotFit as error:
        return "does not fit", "-", str(error).split(". ")[0]
    finally:
        host.set_memory_budget(None)
        logger.removeHandler(placements)
    peak = (torch.cuda.max_memory_allocated() - base) / 1e9
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
    return "; ".join(placements.lines) or "as it was", f"{peak:.2f}", f"{per_step:.2f}"


class Placements(logging.Handler):
    """The placement lines host.on_compute_device writes (all resident, or how many blocks stream)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().rstrip(".").split(", ", 1)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0, 24, 16, 12, 8])
    parser.add_argument("--dtypes", nargs="+", choices=list(WEIGHT_DTYPES), default=list(WEIGHT_DTYPES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_memory.py measures GPU memory and needs CUDA; this machine has no CUDA device.",
            file=sys.stderr,
        )
        return 2
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {FRAMES} frames at {WIDTH}x{HEIGHT}, cfg 5"
    )
    print("| model | weights | GB of weights | budget GB | placement | peak GPU GB | s/step |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for dtype_name in args.dtypes:
            model = random_dit(name, WEIGHT_DTYPES[dtype_name])
            size = module_bytes(model) / 1e9
            for budget in args.budgets:
                placement, peak, per_step = one_row(model, name, budget)
                print(
                    f"| {name} | {dtype_name} | {size:.1f} | {budget or 'all'} | {placement} | {peak} | {per_step} |"
                )
                sys.stdout.flush()
            del model
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
