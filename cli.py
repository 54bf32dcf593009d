"""The command line: `python -m spacetime <command>`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import host
from .checkpoint import convert_pickle_to_safetensors
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
