"""The command line: `python -m spacetime <command>`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import host
from .checkpoint import convert_pickle_to_safetensors
from .pipeline import Settings
from .samplers.schedules import SCHEDULES
from .samplers.solvers import SOLVERS
from .text_encoders import WAN_NEGATIVE_PROMPT
from .video import FORMATS, combine_video
from .video.patterns import moving_pattern


def _test_pattern(args: argparse.Namespace) -> int:
    frames = moving_pattern(args.frames, args.height, args.width)
    saved = combine_video(
        frames,
        args.fps,
        host.output_directory(),
        args.prefix,
        args.format,
        crf=args.crf,
    )
    print(saved.path)
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .dit import load_dit
    from .pipeline import text_to_video
    from .text_encoders import load_text_encoder
    from .vae import load_vae

    missing = [name for name in ("dit", "text_encoder", "vae") if getattr(args, name) is None]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ValueError(f"generate needs model files: give {flags} (paths to .safetensors files).")
    device = torch.device(args.device) if args.device else host.compute_device()
    dit = load_dit(args.dit, device=host.offload_device())
    low_noise = load_dit(args.low_noise_dit, device=host.offload_device()) if args.low_noise_dit else None
    text_encoder = load_text_encoder(args.text_encoder, device=host.offload_device())
    vae = load_vae(args.vae, device=device)
    settings = Settings(
        width=args.width, height=args.height, frames=args.frames, steps=args.steps, cfg=args.cfg,
        shift=args.shift, seed=args.seed, solver=args.solver, schedule=args.schedule, tile=args.tile,
        overlap=args.overlap,
    )  # fmt: skip
    frames = text_to_video(dit, text_encoder, vae, args.prompt, args.negative_prompt, settings, low_noise)
    saved = combine_video(frames, args.fps, host.output_directory(), args.prefix, args.format, crf=args.crf)
    print(saved.path)
    return 0


def _convert(args: argparse.Namespace) -> int:
    count = convert_pickle_to_safetensors(Path(args.source), Path(args.destination))
    print(f"wrote {count} tensors to {args.destination}")
    return 0


def _formats(_args: argparse.Namespace) -> int:
    for fmt in FORMATS.values():
        print(f"{fmt.name:20} {fmt.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spacetime",
        description="ComfyUI-Spacetime: Sora-style text-to-video nodes for ComfyUI, and their command line.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    pattern = commands.add_parser(
        "test-pattern", help="write a moving test-pattern video (checks the encoders and the output folder)"
    )
    pattern.add_argument("--frames", type=int, default=49, help="number of frames (default 49)")
    pattern.add_argument("--width", type=int, default=832, help="width in pixels (default 832)")
    pattern.add_argument("--height", type=int, default=480, help="height in pixels (default 480)")
    pattern.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16)")
    pattern.add_argument("--format", choices=list(FORMATS), default="video/h264-mp4", help="output format")
    pattern.add_argument("--crf", type=int, default=19, help="quality for H.264/H.265/VP9, lower is better")
    pattern.add_argument(
        "--prefix",
        default="spacetime/test_pattern",
        help=f"file name prefix inside the output folder (./output, or ${host.OUTPUT_DIR_ENV})",
    )
    pattern.set_defaults(run=_test_pattern)

    generate = commands.add_parser("generate", help="text to video: write a video for a prompt")
    generate.add_argument("prompt", help="what the video shows")
    generate.add_argument(
        "--negative-prompt", default=WAN_NEGATIVE_PROMPT, help="what to avoid (default: Wan's)"
    )
    generate.add_argument(
        "--dit", help="the diffusion model (.safetensors), e.g. wan2.1_t2v_1.3B_fp16.safetensors"
    )
    generate.add_argument("--low-noise-dit", help="Wan 2.2 A14B: the low-noise expert (.safetensors)")
    generate.add_argument("--text-encoder", help="the UMT5 text encoder (.safetensors), e.g. umt5_xxl_fp16")
    generate.add_argument("--vae", help="the VAE (.safetensors), e.g. wan_2.1_vae.safetensors")
    defaults = Settings()
    generate.add_argument("--width", type=int, default=defaults.width, help=f"default {defaults.width}")
    generate.add_argument("--height", type=int, default=defaults.height, help=f"default {defaults.height}")
    generate.add_argument(
        "--frames", type=int, default=defaults.frames, help=f"4k+1, default {defaults.frames}"
    )
    generate.add_argument("--steps", type=int, default=defaults.steps, help=f"default {defaults.steps}")
    generate.add_argument("--cfg", type=float, default=defaults.cfg, help=f"guidance, default {defaults.cfg}")
    generate.add_argument("--shift", type=float, default=defaults.shift, help=f"default {defaults.shift}")
    generate.add_argument("--seed", type=int, default=defaults.seed, help=f"default {defaults.seed}")
    generate.add_argument("--solver", choices=list(SOLVERS), default=defaults.solver)
    generate.add_argument("--schedule", choices=list(SCHEDULES), default=defaults.schedule)
    generate.add_argument("--tile", type=int, default=0, help="decode in spatial tiles of this many pixels")
    generate.add_argument("--overlap", type=int, default=0, help="tile overlap in pixels")
    generate.add_argument("--device", help="where the VAE decodes (default: the GPU when there is one)")
    generate.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16)")
    generate.add_argument("--format", choices=list(FORMATS), default="video/h264-mp4", help="output format")
    generate.add_argument("--crf", type=int, default=19, help="quality for H.264/H.265/VP9, lower is better")
    generate.add_argument(
        "--prefix", default="spacetime/video", help="file name prefix inside the output folder"
    )
    generate.set_defaults(run=_generate)

    convert = commands.add_parser(
        "convert",
        help="turn a pickle checkpoint (.pth/.pt/.ckpt) into .safetensors, loading tensors only (no code runs)",
    )
    convert.add_argument("source", help="the .pth / .pt / .ckpt / .bin file")
    convert.add_argument("destination", help="the .safetensors file to write (must not exist)")
    convert.set_defaults(run=_convert)

    formats = commands.add_parser("formats", help="list the video formats Video Combine writes")
    formats.set_defaults(run=_formats)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
