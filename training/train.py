"""Train Tiny World: the pack's own small text-to-video model, on the world of `world.py`.

    python -m spacetime.training.train --recipe shipped --out DIR   # the chain that made tiny_world/
    python -m spacetime.training.train --recipe smoke --out DIR     # the same chain in seconds

A recipe (recipe.py) names every setting; a flag given here replaces the recipe's value (a DiT flag in
every DiT run of the chain). Without --recipe: "plain", one run. Stages, each resumable from its file in
--out:
1. VAE (vae_stage.py): three phases; its latent statistics are folded into its weights.
2. Latents (data.py): a fixed set of clips at 64x64 and at 128x128, encoded once, with where their
   objects are, and the primer's clips.
3. Text encoder (text_stage.py): its vocabulary, and reading each scene's attributes back from its caption.
4. Text encoder + DiT (dit_stage.py): rectified flow at 64x64, then 128x128; the state is saved every 500
   steps, and a later run of the chain goes on from it.

Everything is seeded; the files are written in the formats the pack's loaders read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..vae.wan22 import Wan22VAE
from .data import PRIMER_MOTIONS, SIZE, encode_dataset, object_dataset, plain_recaptioned, primer_dataset
from .dit_stage import DiTStage, resumed_step, start_from_finished, train_dit
from .recipe import FLAGS, RECIPES, DiTRecipe, Recipe, setting, values, with_flags
from .runtime import log, use_threads
from .vae_stage import trained_vae

DEFAULT_RECIPE = "plain"
RECIPE_HELP = {
    "plain": "one run, no primer, the text encoder trained at the DiT's rate",
    "shipped": "the base run, then the fine-tune with the primer of all motions (tiny_world/ until 2026-12-07)",
    "smoke": "the shipped chain's shape in seconds",
    "captions": "the chain that made tiny_world/: the shipped recipe, then a fine-tune on captions in the forms "
    "people type (with --init DIR holding the shipped recipe's weights: only the fine-tune)",
    "smoke-captions": "a fine-tune's chain in seconds",
}
HELP = {
    "--seed": "the seed of every draw",
    "--threads": "torch threads (0: the cores other processes leave free, re-picked as it goes)",
    "--vae-steps": "VAE phase 1: steps on 64x64 crops of --vae-frames frames",
    "--vae-long-steps": "VAE phase 2: steps on whole 17-frame clips",
    "--vae-smooth-steps": "VAE phase 3: steps of the decoder alone, steps between frames weighed in the loss",
    "--vae-still-weight": "phase 2 also learns that a still clip's latent frames agree, with this weight (0: off)",
    "--vae-frames": "frames per VAE phase-1 crop (4k+1)",
    "--clips": "128x128 clips encoded for the DiT",
    "--small-clips": "64x64 clips encoded for the DiT",
    "--dit-small-steps": "DiT steps at 64x64",
    "--dit-steps": "DiT steps at 128x128, after those at 64x64",
    "--text-steps": "text encoder steps on the scenes' attributes before the DiT (0: none)",
    "--object-weight": "DiT loss weight on latent cells the objects cover, against 1 for the background (1: plain mean)",
    "--motion-weight": "DiT loss: extra weight on the error's part that changes from latent frame to latent frame (0: off)",
    "--stop-after": "end after DiT step N, its state saved; a later run continues from it, even with other step "
    "counts (0: at the plan's end)",
    "--direction-share": "share of every batch (64x64 and 128x128) given to the primer: one look moving, first "
    "frame given (0: off)",
    "--direction-clips": "primer clips encoded (either kind)",
    "--primer-motions": "what the primer's clips do: left, right, up and down (directions), or those and grow, "
    "shrink and rotate (all; its clips are cached apart)",
    "--text-lr-scale": "the text encoder's learning rate while the DiT trains, against the DiT's (1: the same; 0: "
    "held as its own stage left it)",
    "--small-batch": "clips a batch at 64x64",
    "--batch": "clips a batch at 128x128",
    "--dit-lr": "the DiT's peak learning rate (warmup, then a cosine to a tenth)",
    "--plain-captions": "share of the clips' captions written again in the forms people type, half of those "
    "without the background (0: off)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    recipes = "; ".join(f"{name}: {text}" for name, text in RECIPE_HELP.items())
    parser.add_argument("--recipe", choices=tuple(RECIPES), default=DEFAULT_RECIPE, help=recipes)
    parser.add_argument("--out", type=Path, default=Path("tiny_world"))
    parser.add_argument("--vae-init", type=Path, help="continue the VAE from these weights")
    parser.add_argument("--vae-only", action="store_true", help="stop after the VAE")
    parser.add_argument(
        "--init",
        type=Path,
        metavar="DIR",
        help="begin at the recipe's first restart run (a fine-tune), from the finished Tiny World files in DIR "
        "(e.g. tiny_world): as if the runs before it had made them",
    )
    plain = RECIPES[DEFAULT_RECIPE]
    for flag in FLAGS:
        kind = type(values(plain, flag)[0])
        sets = "; ".join(f"{name} {setting(recipe, flag)}" for name, recipe in RECIPES.items())
        choices = tuple(PRIMER_MOTIONS) if flag == "--primer-motions" else None
        parser.add_argument(flag, type=kind, choices=choices, help=f"{HELP[flag]} (recipes: {sets})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {flag: vars(args)[flag[2:].replace("-", "_")] for flag in FLAGS}
    try:  # refused before anything is trained or written
        recipe = with_flags(RECIPES[args.recipe], {k: v for k, v in given.items() if v is not None})
    except ValueError as error:
        parser.error(str(error))
    if args.init is not None and not any(run.restart for run in recipe.dit):
        parser.error(
            f"--init begins at a fine-tune, and recipe {args.recipe} has none: use --recipe captions."
        )
    log(f"recipe {args.recipe}: {recipe}")
    run_recipe(recipe, args.out, args.vae_init, args.vae_only, args.init)
    return 0


def run_recipe(
    recipe: Recipe, out: Path, vae_init: Path | None = None, vae_only: bool = False, init: Path | None = None
) -> None:
    """The VAE (or the one in `out`), then each DiT run of the chain into `out`; a run the saved state is
    already past is skipped, so a chain that stopped goes on where it stopped. `init`: finished Tiny World
    files that stand for the runs before the chain's first restart run (start_from_finished)."""
    use_threads(recipe.threads)
    out.mkdir(parents=True, exist_ok=True)
    if init is not None:
        first = next(index for index, run in enumerate(recipe.dit) if run.restart)
        start_from_finished(init, out, recipe.dit[first - 1].end if first else 0, recipe.seed)
    begin = time.time()
    vae = trained_vae(out, recipe.vae, recipe.seed, vae_init)
    log(f"VAE done ({time.time() - begin:.0f} s)")
    if vae_only:
        return
    for number, run in enumerate(recipe.dit, start=1):
        resumed = resumed_step(out)
        if resumed >= run.end:
            log(
                f"DiT run {number} of {len(recipe.dit)} ends at step {run.end}: done (the saved state is at {resumed})"
            )
            continue
        log(f"DiT run {number} of {len(recipe.dit)}, to step {run.end}")
        start = recipe.dit[number - 2].end if number > 1 else 0
        train_dit(out, dit_stages(vae, out, run, recipe.seed, resumed), run, recipe.seed, start)
    log(f"all done in {time.time() - begin:.0f} s")


def dit_stages(vae: Wan22VAE, out: Path, run: DiTRecipe, seed: int, resumed: int) -> list[DiTStage]:
    """The run's stages, 64x64 then 128x128, with their latents, object masks and primer (cached in `out`);
    a stage without steps is left out, and one finished by an earlier run (the state is at `resumed`)
    only counts its steps."""
    stages, end = [], 0
    for size, count, steps, batch in [
        (SIZE // 2, run.small_clips, run.small_steps, run.small_batch),
        (SIZE, run.clips, run.steps, run.batch),
    ]:
        if steps <= 0:
            continue
        end += steps
        if end <= resumed:
            log(f"{size}x{size} stage done in an earlier run (the saved state is at step {resumed})")
            stages.append(DiTStage(torch.empty(0), [], steps, batch))
            continue
        latents, captions = encode_dataset(vae, out, count, seed, size)
        captions = plain_recaptioned(captions, seed, size, run.plain_captions)
        log(f"latents {tuple(latents.shape)}")
        objects = None if run.object_weight == 1.0 else object_dataset(out, count, seed, size)
        primer = None
        if run.direction_share:  # in every stage: taught once and then dropped, it is forgotten
            primer = primer_dataset(vae, out, run.direction_clips, seed, size, run.primer_motions)
        stages.append(DiTStage(latents, captions, steps, batch, objects, primer, run.direction_share))
    return stages


if __name__ == "__main__":
    raise SystemExit(main())
