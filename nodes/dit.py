"""DiT loading and spacetime patches: SpacetimeDiTLoader, SpacetimePatchifier, SpacetimeUnpatchify."""

from __future__ import annotations

from .. import host
from ..dit import SpacetimePatches, load_dit
from ..dit.attention import BACKEND_HELP, BACKENDS
from ..inputs import latent_samples
from ..ops import COMPUTE_DTYPES, WEIGHT_DTYPES, loader_dtypes

DIT = "SPACETIME_DIT"
PATCHES = "SPACETIME_PATCHES"


class SpacetimeDiTLoader:
    CATEGORY = "Spacetime/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (DIT,)
    RETURN_NAMES = ("dit",)
    DESCRIPTION = (
        "Loads a Wan 2.1 / 2.2 diffusion transformer (T2V 1.3B, 14B, A14B experts, TI2V 5B) from "
        "models/diffusion_models. The architecture is read from the file's tensors; only safetensors are loaded."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    host.model_filenames("diffusion_models"),
                    {
                        "tooltip": "A Wan diffusion model in ComfyUI's models/diffusion_models folder (.safetensors)."
                    },
                ),
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "default",
                        "tooltip": "How weights are kept in memory. default: as stored in the file (fp8 files stay "
                        "fp8). fp8_e4m3fn halves bf16 memory at a small quality cost; only the large projection "
                        "weights become fp8, and they are upcast layer by layer when used.",
                    },
                ),
                "compute_dtype": (
                    list(COMPUTE_DTYPES),
                    {
                        "default": "auto",
                        "tooltip": "Precision of the matrix multiplications. auto: bf16 on GPUs that support it, "
                        "fp16 on older GPUs; on the CPU bf16 where it is native (AVX512-BF16, AMX), else fp32. "
                        "Norms, modulation and the residual stream always run in fp32, as in the reference.",
                    },
                ),
            },
            "optional": {
                "attention": (list(BACKENDS), {"default": "auto", "tooltip": BACKEND_HELP}),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Compile the transformer blocks with torch.compile (one block's code, reused "
                        "for all). The first run waits for the compile (a minute or more), later runs are "
                        "faster. Needs Triton on the GPU, a C++ compiler on the CPU.",
                    },
                ),
            },
        }

    def load(self, model_name, weight_dtype, compute_dtype, attention="auto", compile=False):
        weights, compute = loader_dtypes(weight_dtype, compute_dtype)
        path = host.model_path("diffusion_models", model_name)
        return (load_dit(path, weights, compute, host.offload_device(), attention, compile),)


class SpacetimePatchifier:
    CATEGORY = "Spacetime/patches"
    FUNCTION = "patchify"
    RETURN_TYPES = (PATCHES,)
    RETURN_NAMES = ("patches",)
    DESCRIPTION = "Cuts a latent video into the DiT's spacetime patches (tokens), in the model's normalised latent space."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (DIT, {"tooltip": "The model whose patch size and latent space the tokens use."}),
                "latent": (
                    "LATENT",
                    {
                        "tooltip": "A latent video (B×C×T×H×W), e.g. from Empty Latent Video or VAE Encode. "
                        "Its noise_mask, if any (core's meaning: 1 denoise, 0 keep), pins the tokens it keeps "
                        "to their values here."
                    },
                ),
            }
        }

    def patchify(self, dit, latent):
        raw = latent_samples(latent)
        dit.check_latent(raw)
        mask = latent.get("noise_mask")
        return (SpacetimePatches.from_latent(raw, dit.config.patch_size, dit.latent_format, mask),)


class SpacetimeUnpatchify:
    CATEGORY = "Spacetime/patches"
    FUNCTION = "unpatchify"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    DESCRIPTION = (
        "Puts spacetime patches back together as a LATENT (raw VAE latents, as ComfyUI core keeps them)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"patches": (PATCHES, {"tooltip": "Tokens from the Patchifier or the DiT Denoiser."})}
        }

    def unpatchify(self, patches):
        latent = {"samples": patches.to_latent()}
        if patches.pinned is not None:  # pinned tokens go back out as core's noise_mask
            latent["noise_mask"] = patches.noise_mask()
        return (latent,)
