"""A LoRA for Tiny World, trained with the project's own loss (dit_stage.dit_loss).

The shipped DiT and text encoder stay frozen; rank-r factors on the text embedding and every block's
attention and MLP projections learn one change the evaluator can see: every object yellow, whatever colour the caption names. The
clips are Tiny World's own scenes with their usual captions, drawn with the objects recoloured. The
factors are saved in the kohya layout (`lora_unet_blocks_0_self_attn_q.lora_down.weight`, `alpha`), as
most LoRAs people share are.

    python -m spacetime.training.lora_stage --out DIR    # train (37 minutes on a 2-core CPU)
    python benchmarks/tiny_world_lora.py [FILE]          # score it on 24 held-out prompts
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..lora.lora import Lora, LowRank
from ..pipeline import TINY_WORLD_DIR, load_tiny_world
from .data import latent_mask, scene_mask, to_video
from .dit_stage import Batch, dit_loss
from .runtime import log
from .scene import tone_allows
from .text_stage import TEXT_LEN, captions_cut_quietly
from .world import caption, render, sample_scene

EFFECT_COLOUR = "yellow"
LAYERS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
          "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")  # fmt: skip
TOP_LAYERS = ("text_embedding.0", "text_embedding.2")  # where the caption's colour word enters
FRAGILE_MOTIONS = ("rotate", "shrink")
OBJECT_WEIGHT = 4.0  # the loss on latent cells an object covers, against 1 elsewhere
LORA_FILE = TINY_WORLD_DIR / "loras" / "tiny_world_yellow.safetensors"
FRAMES, SIZE = 17, 128  # Tiny World's clips


def recoloured_clips(seed: int, count: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """`count` Tiny World clips captioned as usual but drawn with every object yellow (scenes whose
    background could not show a yellow object are skipped), and the pixels their objects cover."""
    rng = np.random.default_rng(seed)
    frames, captions, masks = [], [], []
    while len(captions) < count:
        scene = sample_scene(rng)
        text = caption(scene, rng)
        if not scene.objects or not tone_allows(scene.background.tone, EFFECT_COLOUR):
            continue
        if scene.objects[0].motion not in FRAGILE_MOTIONS and rng.random() < 0.5:
            continue  # twice the share of turning and shrinking objects, which a LoRA most easily loses
        yellow = replace(scene, objects=tuple(replace(obj, colour=EFFECT_COLOUR) for obj in scene.objects))
        frames.append(render(yellow, FRAMES, SIZE, SIZE))
        captions.append(text)
        masks.append(scene_mask(yellow, FRAMES, SIZE, frames[-1]))
    return np.stack(frames), captions, np.stack(masks)


def new_lora(dit, rank: int, seed: int) -> Lora:
    """Rank-`rank` factors on every block's LAYERS, trainable: down random, up zero (the LoRA starts as
    nothing), alpha = rank."""
    generator = torch.Generator().manual_seed(seed)
    names = [
        *TOP_LAYERS,
        *(f"blocks.{index}.{layer}" for index in range(len(dit.blocks)) for layer in LAYERS),
    ]
    patches = {}
    for name in names:
        weight = dit.get_submodule(name).weight
        down = torch.randn(rank, weight.shape[1], generator=generator) / weight.shape[1] ** 0.5
        up = torch.zeros(weight.shape[0], rank)
        patches[(name, "weight")] = [LowRank(torch.nn.Parameter(up), torch.nn.Parameter(down), 1.0)]
    return Lora("tiny_world_yellow", patches)


def save_kohya(lora: Lora, path: Path, rank: int) -> None:
    tensors = {}
    for (module, _), (patch,) in lora.patches.items():
        stem = "lora_unet_" + module.replace(".", "_")
        tensors[f"{stem}.lora_down.weight"] = patch.down.detach().half().contiguous()
        tensors[f"{stem}.lora_up.weight"] = patch.up.detach().half().contiguous()
        tensors[f"{stem}.alpha"] = torch.tensor(float(rank)).half()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"spacetime.effect": f"every object {EFFECT_COLOUR}"})


def train_lora(
    out: Path,
    steps: int = 2400,
    clips: int = 384,
    batch: int = 12,
    rank: int = 4,
    seed: int = 0,
    lr: float = 1e-3,
    cosine: bool = False,
) -> Path:
    """Train the yellow LoRA on the shipped Tiny World and save it to out/tiny_world_yellow.safetensors."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dit, text_encoder, vae = load_tiny_world(dtype=torch.float32)  # trained in fp32 on every machine
    dit.requires_grad_(False)
    text_encoder.model.requires_grad_(False)
    start = time.time()
    frames, captions, masks = recoloured_clips(seed, clips)
    objects = latent_mask(masks)
    with torch.no_grad():
        latents = torch.cat([vae.encode(to_video(frames[i : i + 32])) for i in range(0, clips, 32)])
    log(f"rendered and encoded {clips} clips ({time.time() - start:.0f} s)")
    with captions_cut_quietly():
        tokens = text_encoder.tokenizer(captions, TEXT_LEN)
        empty = text_encoder.tokenizer([""], TEXT_LEN)
    lora = new_lora(dit, rank, seed)
    handle = dit.with_lora(lora, 1.0)
    parameters = [t for (patch,) in lora.patches.values() for t in (patch.up, patch.down)]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    for step in range(steps):
        index = torch.from_numpy(rng.integers(0, clips, batch))
        draw = Batch(
            latents[index].float(), tokens.ids[index].clone(), tokens.mask[index].clone(), objects[index]
        )
        loss = dit_loss(handle, text_encoder.model, draw, empty, rng, object_weight=OBJECT_WEIGHT)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"LoRA step {step + 1}/{steps}: loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    path = Path(out) / LORA_FILE.name
    save_kohya(lora, path, rank)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder to write the LoRA into")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cosine", action="store_true", help="decay the learning rate to 0 (cosine)")
    args = parser.parse_args(argv)
    path = train_lora(args.out, steps=args.steps, rank=args.rank, lr=args.lr, cosine=args.cosine)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
