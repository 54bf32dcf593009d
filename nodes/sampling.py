"""Sampling: SpacetimeScheduler (SIGMAS) and SpacetimeDiTDenoiser (SPACETIME_PATCHES in and out)."""

from __future__ import annotations

from .. import host
from ..samplers.denoiser import Sampling, denoise
from ..samplers.guidance import MAX_CFG, Guider
from ..samplers.noise import MAX_SEED
from ..samplers.schedules import MAX_SHIFT, MIN_SHIFT, SCHEDULES, TRAINING_LEVELS
from ..samplers.solvers import SOLVERS
from .dit import DIT, PATCHES


class SpacetimeScheduler:
    CATEGORY = "Spacetime/sampling"
    FUNCTION = "schedule"
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("Noise levels from 1 (or less, for denoise < 1) down to 0, for the DiT Denoiser.",)
    DESCRIPTION = (
        "The rectified-flow noise schedule, shifted towards high noise as Wan samples "
        "(shift·s / (1 + (shift - 1)·s)). Core's sigma nodes (Split Sigmas, Flip Sigmas...) work on its output."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "schedule": (
                    list(SCHEDULES),
                    {
                        "default": "simple",
                        "tooltip": "simple: ComfyUI's KSampler schedule for flow models. linear: Wan's own "
                        "(equal to simple when steps divide 1000). beta: more steps at both ends (ComfyUI's beta, "
                        "alpha = beta = 0.6).",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 30,
                        "min": 1,
                        "max": TRAINING_LEVELS,
                        "tooltip": "Denoising steps. Wan uses 40 to 50. At most 1000 (the models' noise levels), "
                        "also for steps / denoise when denoise is below 1.",
                    },
                ),
                "shift": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": MIN_SHIFT,
                        "max": MAX_SHIFT,
                        "step": 0.01,
                        "tooltip": "Moves steps towards high noise, where the layout forms. Wan: 5 for 480p, "
                        "up to 8-12 for 720p and 1.3B; Tiny World: 3. 1 leaves the schedule as is.",
                    },
                ),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "1 starts from pure noise. Below 1 starts part-way (video to video: how much "
                        "of the input latent is redrawn), with ComfyUI's meaning: the last `steps` of a longer "
                        "schedule.",
                    },
                ),
            }
        }

    def schedule(self, schedule, steps, shift, denoise):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}.")
        return (SCHEDULES[schedule](steps, shift=shift, denoise=denoise),)


class SpacetimeDiTDenoiser:
    CATEGORY = "Spacetime/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = (PATCHES,)
    RETURN_NAMES = ("patches",)
    OUTPUT_TOOLTIPS = ("The denoised patches: connect Unpatchify, then VAE Decode.",)
    DESCRIPTION = (
        "Denoises spacetime patches with the DiT down the schedule: classifier-free guidance with the two "
        "passes batched, a seed that gives the same video on any device (noise drawn on the CPU as ComfyUI "
        "core draws it), pinned tokens held to their known values, and Wan 2.2 A14B's switch to a low-noise "
        "expert."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "The DiT (for Wan 2.2 A14B: the high-noise expert)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt, from Text Encode (Spacetime)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt (unused when cfg is 1)."}),
                "patches": (
                    PATCHES,
                    {
                        "tooltip": "From the Patchifier: an empty latent (text to video) or a latent to redraw."
                    },
                ),
                "sigmas": (
                    "SIGMAS",
                    {"tooltip": "The schedule, from Scheduler (Spacetime) or core's sigma nodes."},
                ),
                "solver": (
                    list(SOLVERS),
                    {
                        "default": "unipc",
                        "tooltip": "unipc: Wan's own (2nd order, multistep). dpmpp_2m: DPM-Solver++(2M). euler: "
                        "1st order, one model call per step. heun: 2nd order, two model calls per step.",
                    },
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": 0.0,
                        "max": MAX_CFG,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance: how strongly to follow the prompt (Wan: 5). 1 turns "
                        "guidance off and halves the work.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "The noise seed: the same seed gives the same video on any device.",
                    },
                ),
            },
            "optional": {
                "low_noise_dit": (
                    DIT,
                    {"tooltip": "Wan 2.2 A14B: the low-noise expert, which takes over below the boundary."},
                ),
                "boundary": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.005,
                        "tooltip": "The noise level below which the low-noise expert takes over; 0: the model's own (Wan 2.2 A14B: 0.875 for text to video, 0.9 for image to video). Change it only to move the switch. Unused without a low-noise DiT.",
                    },
                ),
                "cache": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Step caching: skip DiT calls while the model's output is estimated to change by "
                        "less than this (relative) since its last call, reusing that call's change instead. 0: off "
                        "(every step computed). 0.3 is a good start: fewer DiT calls for a small loss of detail; "
                        "higher is faster and less faithful. The first two calls and the last step are always computed.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(
        self,
        dit,
        positive,
        negative,
        patches,
        sigmas,
        solver,
        cfg,
        seed,
        low_noise_dit=None,
        boundary=0.0,
        cache=0.0,
        unique_id=None,
    ):
        guider = Guider.from_conditioning(
            dit,
            positive,
            negative,
            cfg,
            patches.tokens.shape[0],
            low_noise_dit=low_noise_dit,
            boundary=boundary or None,
        )
        sampling = Sampling(sigmas, solver, seed, cache)
        tick = host.progress_ticker(sampling.steps, "Denoising", node_id=unique_id)
        return (denoise(guider, patches, sampling, tick),)
