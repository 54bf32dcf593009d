"""Tiny World's training recipes, as data: `python -m spacetime.training.train --recipe NAME --out DIR`.

A recipe is the VAE's three phases and a chain of DiT runs into one --out: the first run trains the text
encoder and the DiT from scratch, each later one goes on from the state the run before saved (live and
EMA weights, Adam's moments, both random generators, the vocabulary), with its own options. "shipped" is
the chain that made `tiny_world/`: the base run (VAE phases 1-3, 12000 + 6000 clips encoded, 1500 text
steps, 3000 DiT steps at 64x64 and 4000 at 128x128 with the direction primer at 0.25 and the text
encoder at 0.1x the DiT's learning rate), then the fine-tune (the primer of all motions at 0.375, the
128x128 stage planned to 6000 steps, stopped after DiT step 8500).

How long each stage takes on a 2-core CPU: docs/tiny-world.md.

A rerun is bit-exact with itself on one machine and torch build: every draw is seeded (numpy generators,
the torch generator, sentencepiece on one thread), clips are rendered in order, a chain goes on from a
state holding Adam's moments and both generators, files are written with sorted metadata, and the recipe
fixes the thread count (another count sums floats in another order: "smoke" on 2 threads instead of 1
gives other weights; 0 re-picks the count from the load as it goes). The shipped files are not reproduced bit for bit: they came from
earlier code versions in several commands (VAE phase 3 run on the saved phase-1-2 VAE, 64x64 latents
cached from an earlier run, the DiT resumed after a restart: each exact in itself), on thread counts
(0 was the default) and a torch build that were not recorded, and Adam turns the smallest difference
into full-size steps that compound over 8500. A rerun matches them in recipe and in expected quality,
not in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .data import FRAMES, PRIMER_MOTIONS


@dataclass(frozen=True)
class VAERecipe:
    """The VAE's phases (vae_stage): 1 on 64x64 crops of `frames` frames, 2 on whole 17-frame clips, 3 the
    decoder alone; the latent statistics of `stats_clips` clips are folded in after phases 1-2."""

    steps: int = 0
    frames: int = 9
    long_steps: int = 0
    smooth_steps: int = 0
    still_weight: float = 0.0
    stats_clips: int = 32

    def __post_init__(self):
        _refuse_negative(
            self, ("--vae-steps", "--vae-long-steps", "--vae-smooth-steps", "--vae-still-weight")
        )
        if (self.frames - 1) % 4 or not 1 <= self.frames <= FRAMES:
            raise ValueError(
                f"--vae-frames {self.frames} is not a crop the causal VAE encodes whole: give 4k+1 frames up "
                f"to the clips' {FRAMES}, e.g. 9."
            )
        if self.stats_clips < 1:
            raise ValueError(
                f"VAERecipe.stats_clips is {self.stats_clips}: give 1 or more clips (32 by default)."
            )
        if self.still_weight and self.long_steps <= 0:
            raise ValueError(
                f"--vae-still-weight {self.still_weight} acts in phase 2, but --vae-long-steps is "
                f"{self.long_steps}: give phase 2 some steps, or leave the weight at 0."
            )


@dataclass(frozen=True)
class DiTRecipe:
    """One run of the text encoder and DiT (dit_stage) and the data it reads: `small_steps` at 64x64 on
    `small_clips` clips, batch `small_batch`, then `steps` at 128x128 on `clips`, batch `batch`, counted
    from the chain's start (a run that goes on from a saved state skips what is done). `stop_after` N > 0:
    end after DiT step N with the state saved. `plain_captions`: the share of the clips' captions written
    again in the forms people type (data.plain_recaptioned). `restart`: a fine-tune of finished weights, which
    starts from the saved state's EMA weights (live and EMA) with a new optimizer and learning-rate schedule
    (warmup and cosine over this run's own steps). The defaults train nothing and add nothing (no steps, no text
    stage, no primer, a plain loss): a preset names what it uses."""

    small_clips: int = 0
    clips: int = 0
    small_steps: int = 0
    steps: int = 0
    small_batch: int = 32
    batch: int = 8
    lr: float = 1e-3
    text_steps: int = 0
    text_lr_scale: float = 1.0
    object_weight: float = 1.0
    motion_weight: float = 0.0
    direction_share: float = 0.0
    direction_clips: int = 1024
    primer_motions: str = "directions"
    stop_after: int = 0
    plain_captions: float = 0.0
    restart: bool = False

    def __post_init__(self):
        if not 0 <= self.direction_share < 1:
            raise ValueError(
                f"--direction-share {self.direction_share} is not a share of a batch: give 0 (off) up to "
                "below 1, e.g. 0.25."
            )
        if self.direction_share and self.direction_clips < 1:
            raise ValueError(
                f"--direction-share {self.direction_share} needs primer clips, but --direction-clips is "
                f"{self.direction_clips}: give 1 or more (1024 by default)."
            )
        if self.direction_share and self.small_steps <= 0 and self.steps <= 0:
            raise ValueError(
                f"--direction-share {self.direction_share} acts while the DiT trains, but --dit-small-steps "
                f"and --dit-steps are {self.small_steps} and {self.steps}: give a stage some steps, or leave "
                "the share at 0."
            )
        if self.text_lr_scale < 0:
            raise ValueError(
                f"--text-lr-scale {self.text_lr_scale} is negative: give 0 (text encoder held) up to 1 "
                "(trained with the DiT at its learning rate)."
            )
        if not 0 <= self.plain_captions <= 1:
            raise ValueError(
                f"--plain-captions {self.plain_captions} is not a share of the captions: give 0 (off) to 1, e.g. 0.5."
            )
        if self.motion_weight < 0:
            raise ValueError(
                f"--motion-weight {self.motion_weight} is negative: give 0 (off) or more, e.g. 3."
            )
        if self.primer_motions not in PRIMER_MOTIONS:
            raise ValueError(
                f"--primer-motions {self.primer_motions!r} is not a primer: give one of {', '.join(PRIMER_MOTIONS)}."
            )
        counts = ("--small-clips", "--clips", "--dit-small-steps", "--dit-steps", "--text-steps", "--stop-after")  # fmt: skip
        _refuse_negative(self, counts)
        for flag in ("--small-batch", "--batch", "--dit-lr"):
            if getattr(self, _FIELD[flag]) <= 0:
                example = getattr(DiTRecipe, _FIELD[flag])  # the field's default
                raise ValueError(f"{flag} {getattr(self, _FIELD[flag])} must be positive, e.g. {example}.")

    @property
    def end(self) -> int:
        """The DiT step this run ends after."""
        total = self.small_steps + self.steps
        return min(total, self.stop_after) if self.stop_after else total


@dataclass(frozen=True)
class Recipe:
    """The VAE, then DiT runs in order into one --out (each after the first goes on from the state of the
    run before); the seed of every draw, and the torch threads (0: the cores other processes leave free)."""

    vae: VAERecipe
    dit: tuple[DiTRecipe, ...]
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        if not self.dit:
            raise ValueError("a recipe needs a DiT run: give dit=(DiTRecipe(...),).")
        _refuse_negative(self, ("--seed", "--threads"))
        for index, (before, run) in enumerate(zip(self.dit, self.dit[1:], strict=False), start=2):
            if run.end <= before.end:
                raise ValueError(
                    f"DiT run {index} ends after step {run.end}, no later than run {index - 1} ({before.end}): "
                    "it would train nothing. Raise its --dit-steps or --stop-after."
                )


# Each command-line flag and the recipe field it sets: "" the recipe's own, "vae" its VAE's, "dit" the
# field of every DiT run. Error messages name fields by their flag.
FLAGS: dict[str, tuple[str, str]] = {
    "--seed": ("", "seed"),
    "--threads": ("", "threads"),
    "--vae-steps": ("vae", "steps"),
    "--vae-long-steps": ("vae", "long_steps"),
    "--vae-smooth-steps": ("vae", "smooth_steps"),
    "--vae-still-weight": ("vae", "still_weight"),
    "--vae-frames": ("vae", "frames"),
    "--clips": ("dit", "clips"),
    "--small-clips": ("dit", "small_clips"),
    "--dit-small-steps": ("dit", "small_steps"),
    "--dit-steps": ("dit", "steps"),
    "--text-steps": ("dit", "text_steps"),
    "--object-weight": ("dit", "object_weight"),
    "--motion-weight": ("dit", "motion_weight"),
    "--stop-after": ("dit", "stop_after"),
    "--direction-share": ("dit", "direction_share"),
    "--direction-clips": ("dit", "direction_clips"),
    "--primer-motions": ("dit", "primer_motions"),
    "--text-lr-scale": ("dit", "text_lr_scale"),
    "--small-batch": ("dit", "small_batch"),
    "--batch": ("dit", "batch"),
    "--dit-lr": ("dit", "lr"),
    "--plain-captions": ("dit", "plain_captions"),
}
_FIELD = {flag: name for flag, (_, name) in FLAGS.items()}


def _refuse_negative(settings, flags: tuple[str, ...]) -> None:
    for flag in flags:
        if getattr(settings, _FIELD[flag]) < 0:
            raise ValueError(f"{flag} {getattr(settings, _FIELD[flag])} is negative: give 0 or more.")


def with_flags(recipe: Recipe, given: dict[str, object]) -> Recipe:
    """`recipe` with the value of each flag in `given` (FLAGS), a DiT flag in every DiT run."""
    own = {FLAGS[flag][1]: value for flag, value in given.items() if FLAGS[flag][0] == ""}
    vae = {FLAGS[flag][1]: value for flag, value in given.items() if FLAGS[flag][0] == "vae"}
    dit = {FLAGS[flag][1]: value for flag, value in given.items() if FLAGS[flag][0] == "dit"}
    runs = tuple(replace(run, **dit) for run in recipe.dit)
    return replace(recipe, vae=replace(recipe.vae, **vae), dit=runs, **own)


def values(recipe: Recipe, flag: str) -> list:
    """What `recipe` sets `flag` to: one value, or each DiT run's in turn."""
    part, name = FLAGS[flag]
    if part == "dit":
        return [getattr(run, name) for run in recipe.dit]
    return [getattr(recipe.vae if part == "vae" else recipe, name)]


def setting(recipe: Recipe, flag: str) -> str:
    """`values` in words: "4000", or "4000, then 6000" where the DiT runs differ."""
    return ", then ".join(str(value) for value in dict.fromkeys(values(recipe, flag)))


# The base run of the shipped weights: VAE phases 1-3, then the text stage and both DiT stages with the
# direction primer in every batch and the text encoder at a tenth of the DiT's learning rate.
SHIPPED_VAE = VAERecipe(
    steps=5000, frames=9, long_steps=600, smooth_steps=600, still_weight=0.0, stats_clips=32
)
SHIPPED_BASE = DiTRecipe(
    small_clips=12000, clips=6000, small_steps=3000, steps=4000, small_batch=32, batch=8, lr=1e-3,
    text_steps=1500, text_lr_scale=0.1, object_weight=4.0, motion_weight=0.0, direction_share=0.25,
    direction_clips=1024, primer_motions="directions",
)  # fmt: skip
# The fine-tune from its state (step 7000): the primer also grows, shrinks and rotates, 3 of 8 clips a
# batch; the 128x128 stage planned to 6000 steps (the cosine replanned for 9000), stopped after 8500.
SHIPPED_FINE_TUNE = replace(
    SHIPPED_BASE, steps=6000, direction_share=0.375, primer_motions="all", stop_after=8500
)

# Tiny World reads prompts the way people type them (the weights shipped since 2026-12-07): a fine-tune of
# the chain's weights on their own clips with half of the captions in the forms people type (a quarter
# without the background), the primer of all motions kept so motion is not forgotten, the text encoder at
# the DiT's rate (it is where a colour word binds). It goes on from the chain's end (step 8500) for 2000
# steps: the 128x128 stage's plan raised to 7500.
CAPTIONS_FINE_TUNE = replace(
    SHIPPED_FINE_TUNE, steps=7500, lr=2e-4, text_lr_scale=1.0, plain_captions=0.5, restart=True, stop_after=0
)

SMOKE_BASE = replace(
    SHIPPED_BASE, small_clips=32, clips=8, small_steps=1, steps=1, small_batch=4, batch=2, text_steps=2,
    direction_share=0.5, direction_clips=4,
)  # fmt: skip

RECIPES: dict[str, Recipe] = {
    # What the command without --recipe trains: the base run with no primer and the text encoder at the
    # DiT's learning rate, one run (the recipe of the weights shipped until 2026-11-23, with VAE phase 3).
    "plain": Recipe(SHIPPED_VAE, (replace(SHIPPED_BASE, text_lr_scale=1.0, direction_share=0.0),)),
    # The base run, then the fine-tune, on 2 threads (tiny_world/ until 2026-12-07).
    "shipped": Recipe(SHIPPED_VAE, (SHIPPED_BASE, SHIPPED_FINE_TUNE), threads=2),
    # The shipped chain's shape in seconds, for tests: every phase and stage, the primer, a fine-tune that
    # goes on with the primer of all motions and stops before its plan's end.
    "smoke": Recipe(
        VAERecipe(steps=1, frames=9, long_steps=1, smooth_steps=1, stats_clips=4),
        (SMOKE_BASE, replace(SMOKE_BASE, steps=3, primer_motions="all", stop_after=3)),
        threads=1,
    ),
    # tiny_world/: the chain above, then the fine-tune on captions in the forms people type (--init DIR
    # with the chain's weights makes it begin at that fine-tune).
    "captions": Recipe(SHIPPED_VAE, (SHIPPED_BASE, SHIPPED_FINE_TUNE, CAPTIONS_FINE_TUNE), threads=2),
    "smoke-captions": Recipe(
        VAERecipe(steps=1, frames=9, long_steps=1, smooth_steps=1, stats_clips=4),
        (SMOKE_BASE, replace(SMOKE_BASE, steps=3, plain_captions=0.5, restart=True, lr=2e-4)),
        threads=1,
    ),
}
