"""Text: SpacetimeTextEncoderLoader and SpacetimeTextEncode (prompt and negative prompt)."""

from __future__ import annotations

from dataclasses import replace

from .. import host
from ..editing.storyboard import DEFAULT_TRANSITION, MAX_TRANSITION, Script, parse_storyboard, shot_images
from ..inputs import check_image
from ..ops import COMPUTE_DTYPES, WEIGHT_DTYPES, loader_dtypes
from ..pipeline import encode_storyboard
from ..text_encoders import WAN_NEGATIVE_PROMPT, check_text, load_text_encoder

TEXT_ENCODER = "SPACETIME_TEXT_ENCODER"


class SpacetimeTextEncoderLoader:
    CATEGORY = "Spacetime/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    DESCRIPTION = (
        "Loads the UMT5-XXL text encoder Wan uses, from models/text_encoders (umt5_xxl_fp16, fp8_e4m3fn or "
        "fp8_scaled). The tokenizer is read from inside the file."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder_name": (
                    host.model_filenames("text_encoders"),
                    {
                        "tooltip": "A UMT5 encoder in ComfyUI's models/text_encoders folder, e.g. umt5_xxl_fp16.safetensors."
                    },
                ),
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "default",
                        "tooltip": "How weights are kept in memory. default: as stored (fp8 files stay fp8). "
                        "fp8_e4m3fn halves the 11 GB of an fp16 UMT5-XXL.",
                    },
                ),
                "compute_dtype": (
                    list(COMPUTE_DTYPES),
                    {"default": "auto", "tooltip": "Matmul precision. auto: bf16 on GPUs, fp32 on the CPU."},
                ),
            }
        }

    def load(self, text_encoder_name, weight_dtype, compute_dtype):
        weights, compute = loader_dtypes(weight_dtype, compute_dtype)
        path = host.model_path("text_encoders", text_encoder_name)
        return (load_text_encoder(path, weights, compute, device=host.offload_device()),)


class SpacetimeTextEncode:
    CATEGORY = "Spacetime/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "The prompt's embeddings (1×512×4096 for UMT5-XXL, zero after the prompt), in ComfyUI's CONDITIONING format.",
        "The negative prompt's embeddings, the same way.",
    )
    DESCRIPTION = "Encodes a prompt and a negative prompt with the UMT5 text encoder, as Wan does."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "From Text Encoder Loader (Spacetime)."}),
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "What the video shows. Descriptive captions work best; up to 512 tokens "
                        "(longer prompts are cut, with a warning in the console).",
                    },
                ),
                "negative_prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": WAN_NEGATIVE_PROMPT,
                        "tooltip": "What to steer away from. The default is the negative prompt Wan ships with "
                        "(in Chinese, as Wan was trained: oversaturated, overexposed, static, blurry, subtitles, "
                        "worst quality, deformed hands and faces, extra limbs, cluttered background, walking "
                        "backwards...).",
                    },
                ),
            }
        }

    def encode(self, text_encoder, prompt, negative_prompt):
        check_text(prompt, "prompt")
        check_text(negative_prompt, "negative_prompt")
        host.throw_if_interrupted()
        with host.on_compute_device(text_encoder.model) as device:
            embeddings = text_encoder.encode([prompt, negative_prompt], device)
        positive, negative = embeddings.to(host.intermediate_device())
        return ([[positive[None], {"pooled_output": None}]], [[negative[None], {"pooled_output": None}]])


STORYBOARD_EXAMPLE = """0 | a red circle moving left on a blue background
4 | a yellow square moving right on a blue background
8 | an orange triangle moving up on a blue background
12 | a pink circle moving down on a blue background"""


class SpacetimeStoryboard:
    CATEGORY = "Spacetime/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "The shots, each prompt with its timing: connect Long Video (Spacetime)'s positive input, which "
        "follows them window by window.",
        "The negative prompt's embeddings, as Text Encode's.",
    )
    DESCRIPTION = (
        "A video laid out as timed prompts, one shot per line: `START[-END] | prompt`. Times are seconds (4, "
        "4.5, 1:30) or frames (64f); a shot ends where the next starts, the last at the video's end. Long "
        "Video follows the shots, each prompt giving way to the next over the transition. A shot can start "
        "from an image: `4 | it rolls away | image: 1` (the first of the images input); with key_frames, every "
        "other shot after the first starts from a frame of its own prompt, made first."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "From Text Encoder Loader (Spacetime), or Tiny World Loader."}),
                "storyboard": ("STRING", {"multiline": True, "default": STORYBOARD_EXAMPLE, "tooltip": "One shot per line, `START[-END] | prompt`: 0 | a fox wakes in its den, 5 | it trots out into the snow. The first starts at 0; END defaults to the next line's START. # starts a comment. Shot Prompt can write each line's caption."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": WAN_NEGATIVE_PROMPT, "tooltip": "What to steer away from, in every shot (Tiny World: leave it empty)."}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 240.0, "step": 1.0, "tooltip": "Frames per second the times are read at: the frame rate you give Video Combine (Wan and Tiny World: 16)."}),
                "transition": ("FLOAT", {"default": DEFAULT_TRANSITION, "min": 0.0, "max": MAX_TRANSITION, "step": 0.25, "tooltip": "Seconds over which one shot's prompt gives way to the next, centred on the change. 0: the new prompt from the shot's first frame (the picture still changes over a few frames: each window continues the one before)."}),
            },
            "optional": {
                "key_frames": ("BOOLEAN", {"default": True, "tooltip": "On: each later shot without an image gets a key frame first, the first frame of a short clip of its prompt alone (same seed), held near the end of its transition as an image would be: every shot shows its own subject, for one window's sampling per shot, and the way into it is quicker, nearer a cut than a morph. Off: a shot without an image continues the scene the last one left, turning what is there into what its prompt asks."}),
                "images": ("IMAGE", {"tooltip": "Optional: images shots start from. A line ending `| image: 2` starts its shot from the second image of this batch (Batch Images joins several Load Image): the video's first frame for a shot at 0, else held for 4 frames near the end of the shot's transition, the frames before it moving into it. Cropped to Long Video's size."}),
            },
        }  # fmt: skip

    def encode(
        self, text_encoder, storyboard, negative_prompt, fps, transition, key_frames=True, images=None
    ):
        shots = parse_storyboard(storyboard, fps)
        for shot in shots:
            check_text(shot.prompt, f"storyboard line {shot.line}")
        check_text(negative_prompt, "negative_prompt")
        if not (isinstance(transition, int | float) and 0 <= transition <= MAX_TRANSITION):
            raise ValueError(f"transition={transition!r} seconds: expected 0 to {MAX_TRANSITION:g}.")
        host.throw_if_interrupted()
        if images is not None:
            check_image(images, "images")
        script = Script(tuple(shots), transition * fps, fps, shot_images(shots, images), bool(key_frames))
        encoded, negative = encode_storyboard(text_encoder, script, negative_prompt)
        device = host.intermediate_device()
        positive = replace(encoded, contexts=encoded.contexts.to(device)).conditioning()
        return (positive, [[negative.to(device), {"pooled_output": None}]])
