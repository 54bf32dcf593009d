"""The LoRA file layouts people have for Wan, recognised by their keys (never the file name), read into one
form: (target, kind) with the target in Wan's own names (the DiT's module or parameter names) and kind one of
up, down, alpha, diff, diff_b.

- original Wan / ComfyUI: `diffusion_model.blocks.0.self_attn.q.lora_down.weight`, `lora_up`, `alpha`, or
  `lora_A` / `lora_B`; `.diff` and `.diff_b` full differences (norms, biases, modulation, head);
- kohya and musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_down.weight` (dots as underscores);
- diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_A.weight` (with or without the prefix), diffusers'
  module names (attn1, attn2, ffn.net.0.proj, condition_embedder, proj_out) mapped back to Wan's.
"""

from __future__ import annotations

import re

FACTORS = (  # key endings, longest first, and what they hold (ComfyUI's spellings)
    (".lora_linear_layer.up.weight", "up"), (".lora_linear_layer.down.weight", "down"),
    (".lora_B.default.weight", "up"), (".lora_A.default.weight", "down"),
    (".lora_up.weight", "up"), (".lora_down.weight", "down"),
    (".lora_B.weight", "up"), (".lora_A.weight", "down"),
    (".lora.up.weight", "up"), (".lora.down.weight", "down"),
    ("_lora.up.weight", "up"), ("_lora.down.weight", "down"),
    (".lora_B.bias", "diff_b"),  # diffusers' conversion of .diff_b
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)  # fmt: skip
UNSUPPORTED = (  # key fragments of layouts that do not fit cleanly, with their names
    ("hada_w1_a", "LyCORIS LoHa"), ("lokr_w", "LyCORIS LoKr"), ("oft_blocks", "OFT / BOFT"),
    (".a1.weight", "GLoRA"), (".lora_mid.weight", "LoCon with a Tucker middle factor"),
    (".dora_scale", "DoRA"), (".reshape_weight", "a Flux control LoRA"), ("q_loras.", "Stand-In"),
)  # fmt: skip
OTHER_MODELS = (  # key fragments of other model families, checked when nothing is Wan's
    (("double_blocks", "single_blocks"), "Flux or HunyuanVideo"),
    (("single_transformer_blocks",), "Flux (diffusers names)"),
    (("joint_blocks",), "Stable Diffusion 3"),
    (("down_blocks", "input_blocks", "lora_te_", "lora_te1_", "text_model.encoder"), "Stable Diffusion 1.5 / SDXL"),
    (("adaln_single", "caption_projection"), "LTX-Video"),
    (("patch_embed.proj", "transformer_blocks"), "a transformer with diffusers' transformer_blocks (CogVideoX, "
     "LTX-Video, Qwen-Image, SD3, Flux)"),
    (("vace_blocks",), "Wan VACE (its VACE blocks are not part of this pack's Wan DiT)"),
    (("qkv_x", "mod_x"), "Mochi"),
)  # fmt: skip
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.")
KOHYA = re.compile(r"^lora_unet_+")
# diffusers' WanTransformer3DModel names -> Wan's (diffusers' norm2 is Wan's norm3, before cross-attention).
DIFFUSERS_NAMES = (
    (r"^blocks\.(\d+)\.attn1\.to_out\.0$", r"blocks.\1.self_attn.o"),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])$", r"blocks.\1.self_attn.\2"),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])$", r"blocks.\1.self_attn.norm_\2"),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0$", r"blocks.\1.cross_attn.o"),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])$", r"blocks.\1.cross_attn.\2"),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])$", r"blocks.\1.cross_attn.norm_\2"),
    (r"^blocks\.(\d+)\.attn2\.add_([kv])_proj$", r"blocks.\1.cross_attn.\2_img"),
    (r"^blocks\.(\d+)\.attn2\.norm_added_k$", r"blocks.\1.cross_attn.norm_k_img"),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj$", r"blocks.\1.ffn.0"),
    (r"^blocks\.(\d+)\.ffn\.net\.2$", r"blocks.\1.ffn.2"),
    (r"^blocks\.(\d+)\.norm2$", r"blocks.\1.norm3"),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out$", "head.head"),
    (r"^condition_embedder\.text_embedder\.linear_1$", "text_embedding.0"),
    (r"^condition_embedder\.text_embedder\.linear_2$", "text_embedding.2"),
    (r"^condition_embedder\.time_embedder\.linear_1$", "time_embedding.0"),
    (r"^condition_embedder\.time_embedder\.linear_2$", "time_embedding.2"),
    (r"^condition_embedder\.time_proj$", "time_projection.1"),
    (r"^condition_embedder\.image_embedder\.norm1$", "img_emb.proj.0"),
    (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj$", "img_emb.proj.1"),
    (r"^condition_embedder\.image_embedder\.ff\.net\.2$", "img_emb.proj.3"),
    (r"^condition_embedder\.image_embedder\.norm2$", "img_emb.proj.4"),
    (r"^condition_embedder\.image_embedder\.pos_embed$", "img_emb.emb_pos"),
)
DIFFUSERS_MARKERS = (".attn1.", ".attn2.", "ffn.net.", "condition_embedder.", "proj_out", "scale_shift_table")
METADATA_KEYS = ("use_rslora_flag", "use_dora_flag")  # musubi-tuner's flags, saved beside the factors


def split_kind(key: str) -> tuple[str, str] | None:
    """`key` -> (the name before the factor ending, kind), or None for a key that holds no factor."""
    for ending, kind in FACTORS:
        if key.endswith(ending):
            return key[: -len(ending)], kind
    return None


def unsupported_layout(keys) -> str | None:
    """The name of a LyCORIS (or other) layout these keys are in that this loader does not read."""
    for fragment, name in UNSUPPORTED:
        if any(fragment in key for key in keys):
            return name
    return None


def other_model(keys) -> str | None:
    """What model family keys that are not Wan's look made for, if their names say."""
    for fragments, name in OTHER_MODELS:
        if any(fragment in key for key in keys for fragment in fragments):
            return name
    return None


def wan_name(name: str, kohya_names: dict[str, str], diffusers: bool) -> str:
    """A LoRA file's module (or parameter) name -> the Wan DiT's, or the name unchanged when nothing fits
    (matched against the model afterwards)."""
    if KOHYA.match(name):
        return kohya_names.get(KOHYA.sub("", name), name)
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if diffusers:
        for pattern, replacement in DIFFUSERS_NAMES:
            renamed, count = re.subn(pattern, replacement, name)
            if count:
                return renamed
    return name


def is_diffusers(keys) -> bool:
    return any(marker in key for key in keys for marker in DIFFUSERS_MARKERS)
