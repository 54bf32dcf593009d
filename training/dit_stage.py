"""Stage 4 of Tiny World's training: the text encoder and a Wan DiT, trained together by rectified flow.

First on 64x64 clips (a quarter of the tokens, so four times the captions per second), then on 128x128,
the size Tiny World generates at; one optimiser, one learning-rate schedule and one EMA (the DiT's saved
weights) over both. Random frame pinning, as Open-Sora trains: some latent frames are given clean, at
timestep 0, and not scored, so the model learns to continue known frames (image to video, extension,
loops). 10% of captions are dropped for classifier-free guidance. The full training state is saved every
500 steps; a later run continues from it exactly (stop_after N ends a run early).

Axes: B clips, C latent channels, T latent frames, H W latent height and width, L tokens, D width.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..dit.config import WanConfig
from ..dit.loader import CLEAN_PINS_KEY, HEAD_DIM_KEY, TEXT_LEN_KEY
from ..dit.patchify import patchify
from ..dit.wan import WanDiT
from ..text_encoders.loader import TOKENIZER_KEY
from ..text_encoders.tokenizer import SentencePieceTokenizer, Tokens
from ..text_encoders.umt5 import UMT5Encoder
from .data import Primer
from .recipe import DiTRecipe
from .runtime import log, save_with_metadata, share_cores, warmup_cosine
from .text_stage import (
    TEXT_DIM,
    TEXT_FILE,
    TEXT_LEN,
    captions_cut_quietly,
    pretrain_text,
    text_encoder,
    train_tokenizer,
)
from .vae_stage import VAE_CONFIG, VAE_FILE

DIT_CONFIG = WanConfig(
    dim=192, ffn_dim=768, num_layers=6, in_channels=VAE_CONFIG.z_dim, out_channels=VAE_CONFIG.z_dim,
    text_dim=TEXT_DIM, head_dim=64, text_len=TEXT_LEN, clean_pins=True, name="Tiny World DiT",
)  # fmt: skip
DIT_WARMUP, DIT_EMA = 200, 0.998
SAVE_EVERY = 500  # steps between saved states
CAPTION_DROP, SHIFT = 0.1, 3  # captions dropped for guidance; noise levels shifted as sampling shifts them
DIT_FILE = "tiny_world_dit.safetensors"
STATE_FILE = "dit_training_state.safetensors"  # resumable state, written beside the weights


@dataclass
class DiTStage:
    """A run of DiT steps on one cached latent set (one resolution)."""

    latents: torch.Tensor
    captions: list[str]
    steps: int
    batch: int
    objects: torch.Tensor | None = None  # B×T×H×W bool on the latent grid: weighted in the loss
    primer: Primer | None = None  # mixed into every batch at primer_share
    primer_share: float = 0.0


@dataclass
class Batch:
    """One DiT training batch: clean latents B×C×T×H×W, their captions' token ids and mask (B×L, changed
    in place by caption dropout), where the objects are (B×T×H×W bool), and the rows given their first
    latent frame clean and no other (B bool: the primer's)."""

    x0: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    objects: torch.Tensor | None = None
    first_only: torch.Tensor | None = None


def init_weights(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        with torch.no_grad():
            if name.endswith("modulation"):
                parameter.normal_(0, 0.02, generator=generator)
            elif parameter.ndim >= 2:
                fan_in = parameter[0].numel()
                parameter.normal_(0, fan_in**-0.5, generator=generator)
            elif "norm" in name or name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.zero_()


def pin_mask(
    batch: int, frames: int, rng: np.random.Generator, first_only: torch.Tensor | None = None
) -> torch.Tensor:
    """B×T bool: latent frames given clean. Half the clips have none; the rest a prefix (image to video,
    extension), a suffix (backward extension), both ends (connect, loop) or random frames. Rows set in
    `first_only` (B bool) are given their first latent frame and nothing else (the draws stay the same)."""
    mask = np.zeros((batch, frames), dtype=bool)
    for row in range(batch):
        kind = rng.random()
        if kind < 0.5:
            continue
        if kind < 0.75:
            mask[row, : rng.integers(1, frames)] = True
        elif kind < 0.85:
            mask[row, rng.integers(1, frames) :] = True
        elif kind < 0.93:
            mask[row, 0] = mask[row, -1] = True
        else:
            mask[row] = rng.random(frames) < 0.4
            mask[row, rng.integers(frames)] = False
    if first_only is not None:
        mask[first_only.numpy()] = False
        mask[first_only.numpy(), 0] = True
    return torch.from_numpy(mask)


def dit_loss(
    dit: WanDiT,
    text: UMT5Encoder,
    batch: Batch,
    empty: Tokens,
    rng: np.random.Generator,
    object_weight: float = 1.0,
    motion_weight: float = 0.0,
) -> torch.Tensor:
    """Rectified flow on a batch of clean latents, with caption dropout and random frame pinning; latent
    cells in `batch.objects` weigh `object_weight` in the mean, the rest 1. `motion_weight` λ adds λ times
    the squared error's part that changes over a clip's (unpinned) latent frames: its deviation from the
    error's mean over them. A wrong look errs alike in every frame; a wrong motion errs differently in
    each, so λ > 0 turns the gradient towards motion. Rows set in `batch.first_only` are given their first
    latent frame clean and no other (see pin_mask)."""
    x0, ids, mask = batch.x0, batch.ids, batch.mask
    clips, latent_frames = x0.shape[0], x0.shape[2]
    drop = torch.from_numpy(rng.random(clips) < CAPTION_DROP)
    ids[drop], mask[drop] = empty.ids, empty.mask
    context = text(ids, mask)

    # Logit-normal noise levels, shifted towards noise as sampling is.
    u = torch.sigmoid(torch.from_numpy(rng.normal(0.0, 1.0, clips)).float())
    sigma = SHIFT * u / (1 + (SHIFT - 1) * u)
    noise = torch.randn_like(x0)
    pinned = pin_mask(clips, latent_frames, rng, batch.first_only)  # B×T
    s = sigma.view(-1, 1, 1, 1, 1)
    frame_pinned = pinned.view(clips, 1, latent_frames, 1, 1)
    x = torch.where(frame_pinned, x0, (1 - s) * x0 + s * noise)
    tokens, grid = patchify(x, DIT_CONFIG.patch_size)
    per_frame = grid[1] * grid[2]
    token_pinned = pinned.repeat_interleave(per_frame, dim=1)  # B×L
    timestep = torch.where(token_pinned, 0.0, 1000 * sigma[:, None])
    velocity = dit.forward_tokens(tokens, grid, timestep, context)
    target, _ = patchify(noise - x0, DIT_CONFIG.patch_size)
    weight = (~token_pinned).float().unsqueeze(-1)
    if batch.objects is not None and object_weight != 1.0:
        cells = 1.0 + (object_weight - 1.0) * batch.objects.float()[:, None].expand_as(x0)
        weight = weight * patchify(cells, DIT_CONFIG.patch_size)[0]
    residual = velocity - target
    error = residual.pow(2)
    if motion_weight:
        error = error + motion_weight * temporal_deviation(residual, ~pinned, per_frame).pow(2)
    return (error * weight).sum() / weight.expand_as(target).sum()


def temporal_deviation(error: torch.Tensor, scored: torch.Tensor, per_frame: int) -> torch.Tensor:
    """B×L×D token errors minus their mean over each clip's scored latent frames (B×T bool), token place
    by token place; zero in unscored frames."""
    batch, length, width = error.shape
    frames = error.view(batch, length // per_frame, per_frame, width)
    keep = scored.to(error.dtype).view(batch, -1, 1, 1)
    mean = (frames * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1.0)
    return ((frames - mean) * keep).view(batch, length, width)


def train_dit(out: Path, stages: list[DiTStage], recipe: DiTRecipe, seed: int = 0, start: int = 0) -> None:
    """Stages share one optimiser, one learning-rate schedule and one EMA: the cheap 64x64 stage teaches
    words, shapes and motion at a quarter of the tokens; the 128x128 stage then adapts it to the size
    Tiny World generates at. From `recipe`: the learning rate, the text stage's steps, the loss's weight
    on latent cells an object covers (stages with `objects`) against 1 elsewhere, `motion_weight` (see
    dit_loss), `stop_after` N > 0 (end after step N with its state saved; a later run, even with other step
    counts, continues from there), and `text_lr_scale`, the text encoder's learning rate against the
    DiT's once its own stage is done (0: it stays as that stage left it, and no gradient reaches it). A
    `restart` run (the chain's run before it ended at `start`) fine-tunes the finished weights instead:
    the saved EMA becomes the live DiT too, with a new optimizer and a schedule over its own steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spiece = vocabulary(out, stages)
    tokenizer = SentencePieceTokenizer(spiece)
    text, dit = new_models(tokenizer.vocab_size, seed)
    ema = copy.deepcopy(dit).requires_grad_(False)
    parameters = [*text.parameters(), *dit.parameters()]  # this order numbers Adam's moments in the state
    optimizer = new_optimizer(text, dit, recipe)
    total = sum(stage.steps for stage in stages)
    begin = load_state(out, text, dit, ema, optimizer, rng)  # 0 unless an earlier run left its state
    if begin == 0:
        pretrain_text(text, tokenizer, recipe.text_steps, seed)
    if recipe.restart and begin == start:  # only the finished weights carry over into a fine-tune
        dit.load_state_dict(ema.state_dict())
        optimizer = new_optimizer(text, dit, recipe)
        log(f"fine-tune of the finished weights from step {start}: a new optimizer and schedule")
    origin = start if recipe.restart else 0
    text.requires_grad_(recipe.text_lr_scale > 0)  # held: Adam skips it, as it has no gradient
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(begin - origin + s, DIT_WARMUP, total - origin)
    )
    empty = tokenizer([""], TEXT_LEN)
    start, step = time.time(), 0
    for stage in stages:
        done = min(stage.steps, max(0, begin - step))  # this stage's steps an earlier run made
        step += done
        if done == stage.steps:
            continue
        draw = BatchDraw(stage, tokenizer)
        for _ in range(done, stage.steps):
            loss = dit_loss(dit, text, draw(rng), empty, rng, recipe.object_weight, recipe.motion_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            update_ema(ema, dit, step)
            if step % 50 == 0 or step == total - 1:
                share_cores()
                size = stage.latents.shape[-1] * 8
                log(
                    f"dit step {step}/{total} ({size}x{size}) loss {loss.item():.4f} ({time.time() - start:.0f} s)"
                )
            stopping = step + 1 == recipe.stop_after
            if (step + 1) % SAVE_EVERY == 0 or step == total - 1 or stopping:
                save_models(out, text, spiece, ema)
                save_state(out, step + 1, text, dit, ema, optimizer, rng)
            step += 1
            if stopping:
                log(f"stopped after step {step}, as --stop-after asks")
                return


def vocabulary(out: Path, stages: list[DiTStage]) -> bytes:
    """The sentencepiece model: learnt from the stages' captions (primers' included), or, going on from a
    saved state, the one its text encoder learnt. Captions added since (another primer's, say) must not
    redraw it, which would renumber the tokens under the trained embeddings."""
    if resumed_step(out):
        with safe_open(str(out / TEXT_FILE), "pt") as handle:
            return handle.get_tensor(TOKENIZER_KEY).numpy().tobytes()
    return train_tokenizer(
        [
            text
            for stage in stages
            for text in (*stage.captions, *(stage.primer.captions if stage.primer else ()))
        ]
    )


def new_models(vocab_size: int, seed: int) -> tuple[UMT5Encoder, WanDiT]:
    """The text encoder and the DiT, initialised (init_weights); adaLN-zero: the DiT's blocks start as the
    identity, its head as zero."""
    text = text_encoder(vocab_size)
    dit = WanDiT(DIT_CONFIG)
    init_weights(text, seed)
    init_weights(dit, seed + 1)
    with torch.no_grad():
        for block in dit.blocks:
            block.modulation.zero_()
        dit.head.head.weight.zero_()
    return text, dit


def new_optimizer(text: UMT5Encoder, dit: WanDiT, recipe: DiTRecipe) -> torch.optim.AdamW:
    groups = [
        {"params": list(text.parameters()), "lr": recipe.lr * recipe.text_lr_scale},
        {"params": list(dit.parameters()), "lr": recipe.lr},
    ]
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.99))


class BatchDraw:
    """Draws a stage's batches: clips at random, and with a primer its share of each batch's rows first,
    primer clips given their first latent frame."""

    def __init__(self, stage: DiTStage, tokenizer: SentencePieceTokenizer):
        self.stage = stage
        with captions_cut_quietly():
            self.tokens = tokenizer(stage.captions, TEXT_LEN)
        self.primed = round(stage.batch * stage.primer_share) if stage.primer is not None else 0
        if self.primed:
            with captions_cut_quietly():
                self.primer_tokens = tokenizer(stage.primer.captions, TEXT_LEN)

    def __call__(self, rng: np.random.Generator) -> Batch:
        stage, primed = self.stage, self.primed
        index = torch.from_numpy(rng.integers(0, len(stage.latents), stage.batch - primed))
        x0, ids, mask = stage.latents[index], self.tokens.ids[index], self.tokens.mask[index]
        objects = None if stage.objects is None else stage.objects[index]
        if not primed:
            return Batch(x0.float(), ids.clone(), mask.clone(), objects)
        chosen = torch.from_numpy(rng.integers(0, len(stage.primer.latents), primed))
        x0 = torch.cat([stage.primer.latents[chosen], x0])
        ids = torch.cat([self.primer_tokens.ids[chosen], ids])
        mask = torch.cat([self.primer_tokens.mask[chosen], mask])
        if objects is not None:
            objects = torch.cat([stage.primer.objects[chosen], objects])
        return Batch(x0.float(), ids.clone(), mask.clone(), objects, torch.arange(stage.batch) < primed)


@torch.no_grad()
def update_ema(ema: WanDiT, dit: WanDiT, step: int) -> None:
    decay = min(DIT_EMA, (1 + step) / (10 + step))
    for kept, live in zip(ema.parameters(), dit.parameters(), strict=True):
        kept.lerp_(live, 1 - decay)


def save_models(out: Path, text: UMT5Encoder, spiece: bytes, dit: WanDiT) -> None:
    """The text encoder (fp32, its vocabulary under TOKENIZER_KEY) and the DiT (fp16, with the metadata the
    pack's loader reads), in the files Tiny World ships."""
    state = {k: v.detach().contiguous() for k, v in text.state_dict().items()}
    state[TOKENIZER_KEY] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(state, str(out / TEXT_FILE))
    metadata = {HEAD_DIM_KEY: str(DIT_CONFIG.head_dim), TEXT_LEN_KEY: str(TEXT_LEN), CLEAN_PINS_KEY: "true"}
    dit_state = {k: v.detach().half().contiguous() for k, v in dit.state_dict().items()}
    save_with_metadata(dit_state, out / DIT_FILE, metadata)


# The training state --------------------------------------------------------------------------------------


def save_state(out: Path, step: int, text, dit, ema, optimizer, rng: np.random.Generator) -> None:
    """Everything a later run needs to go on exactly from `step` (its step counts can then be raised): live
    and EMA weights, Adam's moments and both random generators, in one safetensors file."""
    tensors = {}
    for prefix, module in (("text.", text), ("dit.", dit), ("ema.", ema)):
        tensors.update({prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()})
    for index, state in optimizer.state_dict()["state"].items():  # index: the parameter's place in the list
        tensors.update({f"adam.{index}.{k}": torch.as_tensor(v).contiguous() for k, v in state.items()})
    tensors["torch_rng"] = torch.get_rng_state()
    metadata = {"step": str(step), "numpy_rng": json.dumps(rng.bit_generator.state)}
    partial = out / (STATE_FILE + ".partial")
    save_with_metadata(tensors, partial, metadata)
    partial.replace(out / STATE_FILE)


def start_from_finished(folder: Path, out: Path, step: int, seed: int) -> None:
    """Finished Tiny World files (`folder`: its DiT, text encoder and VAE) copied into `out` with a saved
    state at `step` made from them (live and EMA weights both the saved DiT, no optimizer moments, fresh
    generators), so a chain goes on from them at its restart run as from its own runs' end. Nothing is
    done when `out` already holds a state."""
    if resumed_step(out):
        log(f"{out} already holds a training state: --init {folder} is not used")
        return
    for name in (DIT_FILE, TEXT_FILE, VAE_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} lacks {name}: give a folder with Tiny World's three files (e.g. tiny_world)."
            )
        shutil.copyfile(folder / name, out / name)
    with safe_open(str(out / TEXT_FILE), "pt") as handle:
        spiece = handle.get_tensor(TOKENIZER_KEY).numpy().tobytes()
    text = text_encoder(SentencePieceTokenizer(spiece).vocab_size)
    text.load_state_dict({k: v for k, v in load_file(str(out / TEXT_FILE)).items() if k != TOKENIZER_KEY})
    dit = WanDiT(DIT_CONFIG)
    dit.load_state_dict({k: v.float() for k, v in load_file(str(out / DIT_FILE)).items()})
    optimizer = new_optimizer(text, dit, DiTRecipe())
    save_state(out, step, text, dit, copy.deepcopy(dit), optimizer, np.random.default_rng(seed))
    log(f"starting from {folder}'s finished weights as the state at step {step}")


def resumed_step(out: Path) -> int:
    """The DiT step the state saved in `out` goes on from, if the text encoder (and so the vocabulary) was
    saved beside it; else 0, a fresh start."""
    if not ((out / STATE_FILE).exists() and (out / TEXT_FILE).exists()):
        return 0
    with safe_open(str(out / STATE_FILE), "pt") as handle:
        return int(handle.metadata()["step"])


def load_state(out: Path, text, dit, ema, optimizer, rng: np.random.Generator) -> int:
    path = out / STATE_FILE
    if not path.exists():
        return 0
    with safe_open(str(path), "pt") as handle:  # one read: the tensors and the metadata
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for prefix, module in (("text.", text), ("dit.", dit), ("ema.", ema)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    saved = optimizer.state_dict()  # a parameter that never had a gradient has no moments, and no entry
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".")
            saved["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(saved)
    torch.set_rng_state(tensors["torch_rng"])
    rng.bit_generator.state = json.loads(metadata["numpy_rng"])
    step = int(metadata["step"])
    log(f"DiT training resumes at step {step} ({path.name})")
    return step
