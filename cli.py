"""The command line: `python -m spacetime <command>`."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from . import host
from .checkpoint import convert_pickle_to_safetensors
from .dit.attention import BACKENDS
from .ops import COMPUTE_DTYPES, default_compute_dtype
from .pipeline import TINY_WORLD_SETTINGS, Settings
from .samplers.schedules import SCHEDULES
from .samplers.solvers import SOLVERS
from .samplers.step_cache import RECOMMENDED_THRESHOLD
from .streaming import DoesNotFit
from .text_encoders import WAN_NEGATIVE_PROMPT
from .video import FORMATS, Encoding, Provenance, combine_video
from .video.patterns import moving_pattern

# Tiny World from the command line: its settings with step caching on (benchmarks/tiny_world_speed.py).
TINY_WORLD_COMMAND = replace(TINY_WORLD_SETTINGS, cache=RECOMMENDED_THRESHOLD)


def _test_pattern(args: argparse.Namespace) -> int:
    frames = moving_pattern(args.frames, args.height, args.width)
    saved = combine_video(
        frames, args.fps, host.output_directory(), args.prefix, args.format, encoding=Encoding(crf=args.crf)
    )
    print(saved.path)
    return 0


def _lora_argument(text: str) -> tuple[str, float]:
    """FILE or FILE:STRENGTH -> (file, strength)."""
    path, _, strength = text.rpartition(":")
    if path and strength:
        try:
            return path, float(strength)
        except ValueError:
            pass
    return text, 1.0


def _with_loras(dit, loras: list[tuple[str, float]]):
    from .lora import load_lora

    for path, strength in loras or ():
        dit = dit.with_lora(load_lora(path, dit), strength)
    return dit


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .dit import load_dit
    from .pipeline import load_tiny_world, long_video, text_to_video
    from .text_encoders import load_text_encoder
    from .vae import load_vae

    host.set_memory_budget(args.vram)
    given = [name for name in ("dit", "text_encoder", "vae") if getattr(args, name) is not None]
    device = torch.device(args.device) if args.device else None
    if not given:  # Tiny World, shipped with the pack
        dit, text_encoder, vae = load_tiny_world(vae_device=device, dtype=COMPUTE_DTYPES[args.dtype])
        preset, negative = TINY_WORLD_COMMAND, ""
    elif len(given) < 3:
        missing = ", ".join(
            "--" + n.replace("_", "-") for n in ("dit", "text_encoder", "vae") if n not in given
        )
        raise ValueError(f"generate needs all three model files, or none (Tiny World): also give {missing}.")
    else:
        # weights wait in CPU memory, work on the GPU
        compute = COMPUTE_DTYPES[args.dtype] or default_compute_dtype(host.compute_device())
        dit = load_dit(args.dit, compute_dtype=compute, device=host.offload_device())
        text_encoder = load_text_encoder(
            args.text_encoder, compute_dtype=compute, device=host.offload_device()
        )
        vae = load_vae(args.vae, device=device or host.offload_device())
        vae = vae if device is None else replace(vae, device=device)
        preset, negative = Settings(), WAN_NEGATIVE_PROMPT
    low_noise = (
        load_dit(args.low_noise_dit, compute_dtype=dit.compute_dtype, device=host.offload_device())
        if args.low_noise_dit
        else None
    )
    if args.low_noise_lora and low_noise is None:
        raise ValueError("--low-noise-lora is for Wan 2.2 A14B's low-noise expert: give --low-noise-dit too.")
    for model in (dit, low_noise):
        if model is not None:
            model.attention = args.attention
            if args.compile:
                model.compile_blocks()
    dit = _with_loras(dit, args.lora)
    low_noise = _with_loras(low_noise, args.low_noise_lora) if low_noise is not None else None
    chosen = {name: getattr(args, name) for name in vars(preset) if getattr(args, name, None) is not None}
    settings = replace(preset, **chosen)
    negative = negative if args.negative_prompt is None else args.negative_prompt
    make = long_video if settings.frames > settings.window else text_to_video
    frames = make(dit, text_encoder, vae, args.prompt, negative, settings, low_noise)
    saved = combine_video(
        frames,
        args.fps,
        host.output_directory(),
        args.prefix,
        args.format,
        encoding=Encoding(crf=args.crf),
        provenance=Provenance(watermark=not args.no_watermark),
    )
    print(saved.path)
    return 0


def _evaluate(arguments: list[str]) -> int:
    """`evaluate` hands its arguments to the evaluator's own parser (its --help lists them)."""
    try:
        from .training.evaluate import main as evaluate
    except ImportError as error:
        raise ValueError(
            f"evaluate needs OpenCV ({error}): pip install opencv-python-headless (or the test extras)."
        ) from None
    return evaluate(arguments)


def _convert(args: argparse.Namespace) -> int:
    count = convert_pickle_to_safetensors(Path(args.source), Path(args.destination))
    print(f"wrote {count} tensors to {args.destination}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 when the watermark or valid Content Credentials are found, 1 when neither is."""
    from .provenance.credentials import read_credentials
    from .provenance.frames import read_frames
    from .provenance.watermark import detect, read_key

    path = Path(args.file)
    key = read_key(args.key) if args.key else None
    found = detect(read_frames(path), key)
    print(f"{path}: {found}")
    credentials = None
    if path.is_file() and path.suffix.lower() in (".mp4", ".m4v", ".mov"):
        anchors = Path(args.trust).read_bytes() if args.trust else None
        try:
            credentials = read_credentials(path, anchors)
        except ValueError as error:  # c2pa-python is not installed, or the manifest is unreadable
            print(f"Content Credentials: not checked ({error})")
        else:
            print(credentials or "Content Credentials: none")
    credited = credentials is not None and credentials.state in ("Valid", "Trusted")
    return 0 if found.detected or credited else 1


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

    generate = commands.add_parser(
        "generate",
        help="text to video: write a video for a prompt (Tiny World, built in, unless model files are given)",
    )
    generate.add_argument("prompt", help="what the video shows")
    generate.add_argument("--negative-prompt", help="what to avoid (default: Wan's own; none for Tiny World)")
    generate.add_argument(
        "--dit", help="the diffusion model (.safetensors), e.g. wan2.1_t2v_1.3B_fp16.safetensors"
    )
    generate.add_argument("--low-noise-dit", help="Wan 2.2 A14B: the low-noise expert (.safetensors)")
    generate.add_argument(
        "--lora",
        type=_lora_argument,
        action="append",
        metavar="FILE[:STRENGTH]",
        help="a LoRA for the DiT (Wan 2.2 A14B: the high-noise expert), strength 1 unless given; repeatable",
    )
    generate.add_argument(
        "--low-noise-lora",
        type=_lora_argument,
        action="append",
        metavar="FILE[:STRENGTH]",
        help="a LoRA for Wan 2.2 A14B's low-noise expert; repeatable",
    )
    generate.add_argument("--text-encoder", help="the UMT5 text encoder (.safetensors), e.g. umt5_xxl_fp16")
    generate.add_argument("--vae", help="the VAE (.safetensors), e.g. wan_2.1_vae.safetensors")
    wan, tiny = Settings(), TINY_WORLD_COMMAND
    for name, kind, text in (
        ("width", int, "pixels"), ("height", int, "pixels"), ("frames", int, "4k+1"), ("steps", int, ""),
        ("cfg", float, "guidance"), ("shift", float, "schedule shift"), ("seed", int, ""),
        ("tile", int, "decode in spatial tiles of this many pixels (0: whole frames)"),
        ("overlap", int, "tile overlap in pixels"),
        ("window", int, "longer videos are made in windows of this many frames, 4k+1, and streamed to the file"),
        ("window_overlap", int, "how much each window continues from, a multiple of 4: the last overlap - 3 frames"),
        ("correction", float, "colour-drift correction between windows, 0 (off) to 1"),
    ):  # fmt: skip
        defaults = f"default {getattr(tiny, name)} for Tiny World, {getattr(wan, name)} for Wan"
        generate.add_argument(
            f"--{name.replace('_', '-')}", type=kind, help=f"{text}; {defaults}".lstrip("; ")
        )
    generate.add_argument(
        "--cache",
        type=float,
        nargs="?",
        const=RECOMMENDED_THRESHOLD,
        metavar="THRESHOLD",
        help=f"step caching: skip DiT calls while the output changes by less than THRESHOLD (alone: "
        f"{RECOMMENDED_THRESHOLD}); faster, slightly less faithful; 0: off; default {tiny.cache} for Tiny World "
        "(its scores are unchanged there), off for Wan",
    )
    generate.add_argument(
        "--dtype",
        choices=list(COMPUTE_DTYPES),
        default="auto",
        help="precision of the models' matrix multiplications (and of Tiny World's VAE); auto: bf16 on GPUs "
        "and on CPUs with native bf16, else fp32 (default auto)",
    )
    generate.add_argument(
        "--attention", choices=BACKENDS, default="auto", help="the DiT's attention kernel (default auto)"
    )
    generate.add_argument(
        "--compile",
        action="store_true",
        help="compile the DiT's blocks with torch.compile: the first steps wait for the compile, later ones "
        "are faster (pays off for long runs)",
    )
    generate.add_argument("--solver", choices=list(SOLVERS), help=f"default {wan.solver}")
    generate.add_argument("--schedule", choices=list(SCHEDULES), help=f"default {wan.schedule}")
    generate.add_argument("--device", help="where the VAE decodes (default: the GPU when there is one)")
    generate.add_argument(
        "--vram",
        type=_gigabytes,
        metavar="GB",
        help="GPU memory the models and their work may use (default: what is free); a model that does not "
        "fit streams its blocks from CPU memory",
    )
    generate.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16)")
    generate.add_argument("--format", choices=list(FORMATS), default="video/h264-mp4", help="output format")
    generate.add_argument("--crf", type=int, default=19, help="quality for H.264/H.265/VP9, lower is better")
    generate.add_argument(
        "--prefix", default="spacetime/video", help="file name prefix inside the output folder"
    )
    generate.add_argument(
        "--no-watermark", action="store_true", help="leave out the invisible watermark (on by default)"
    )
    generate.set_defaults(run=_generate)

    commands.add_parser(
        "evaluate",
        help="score videos against their prompts with OpenCV (colour, shape, motion); --tiny-world N "
        "generates N held-out prompts with Tiny World and scores them",
        add_help=False,
    )

    convert = commands.add_parser(
        "convert",
        help="turn a pickle checkpoint (.pth/.pt/.ckpt) into .safetensors, loading tensors only (no code runs)",
    )
    convert.add_argument("source", help="the .pth / .pt / .ckpt / .bin file")
    convert.add_argument("destination", help="the .safetensors file to write (must not exist)")
    convert.set_defaults(run=_convert)

    verify = commands.add_parser(
        "verify",
        help="look for the pack's invisible watermark in a video, GIF, WebP or PNG-sequence folder, and read "
        "an MP4's C2PA Content Credentials (exit 0 when either is found)",
    )
    verify.add_argument("file", help="the video file (or PNG sequence folder) to check")
    verify.add_argument(
        "--trust",
        help="a PEM file of trusted root certificates (e.g. user/spacetime_c2pa/ca.pem) to report Trusted",
    )
    verify.add_argument(
        "--key",
        help="the watermark key of the installation that made the video (its user/spacetime_c2pa/watermark.key, "
        "shared by its owner); default: this installation's",
    )
    verify.set_defaults(run=_verify)

    formats = commands.add_parser("formats", help="list the video formats Video Combine writes")
    formats.set_defaults(run=_formats)
    return parser


def _gigabytes(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give the memory in GB, a number above 0 (e.g. 12).")
    return value


def _console_log() -> None:
    """The pack's notes (where each model ran, automatic tiles) on stderr, one line each."""
    logger = logging.getLogger("spacetime")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        try:
            return _evaluate(argv[1:])
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _console_log()
    try:
        return args.run(args)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        DoesNotFit,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
