"""The command line: `python -m spacetime <command>`."""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from . import host, parallel
from .checkpoint import convert_pickle_to_safetensors
from .dit.attention import BACKENDS
from .editing.storyboard import (
    DEFAULT_TRANSITION,
    MAX_TRANSITION,
    Script,
    fit_shots,
    parse_storyboard,
    read_shot_images,
    read_storyboard,
    storyboard_frames,
)
from .ops import COMPUTE_DTYPES, default_compute_dtype
from .pipeline import TINY_WORLD_SETTINGS, Settings
from .prompting import check_prompt, user_blocklist
from .samplers.schedules import SCHEDULES
from .samplers.solvers import SOLVERS
from .samplers.step_cache import RECOMMENDED_THRESHOLD
from .streaming import DoesNotFit
from .text_encoders import WAN_NEGATIVE_PROMPT, check_text
from .vae import MAX_SIZE
from .video import FORMATS, Encoding, Provenance, combine_video
from .video.combine import FrameStream, check_output
from .video.patterns import moving_pattern

# Tiny World from the command line: its settings with step caching on (benchmarks/tiny_world_speed.py).
TINY_WORLD_COMMAND = replace(TINY_WORLD_SETTINGS, cache=RECOMMENDED_THRESHOLD)
DEFAULT_FORMAT = "video/h264-mp4"

EXIT_DONE, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Stopped by a signal: 128 + its number, as the shell reports a program that the signal ended.
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143
STOPPED_BY = {EXIT_INTERRUPTED: "SIGINT", EXIT_BROKEN_PIPE: "SIGPIPE", EXIT_TERMINATED: "SIGTERM"}
EXIT_STATUSES = (
    "exit status: 0 done; 1 failed while writing (a full disk, a folder that refused the write; verify: "
    "nothing found); 2 bad usage (an option, a file, a name or an output folder that cannot be written, "
    "refused with the reason); 130 or 143 stopped by Ctrl-C or "
    "SIGTERM, the partial file removed; 141 the reader of the output went away (| head), quietly."
)


def _destination(args: argparse.Namespace, video: tuple[int, int, int]) -> tuple[str, Path | None]:
    """The format, and with -o the exact file to write; every output option (video: frames, height, width)
    checked before any work is done."""
    path = None if args.output is None else Path(args.output)
    format = args.format or (DEFAULT_FORMAT if path is None else None)
    encoding, output = Encoding(crf=args.crf), host.output_directory()
    fmt = check_output(
        format, args.fps, encoding, video, output_dir=output, filename_prefix=args.prefix, path=path
    )
    return fmt.name, path


def _write(args: argparse.Namespace, frames, format: str, path, provenance: Provenance) -> None:
    """The frames written as -o's file (`path`) or under --prefix in the output folder; its path printed."""
    encoding = Encoding(crf=args.crf)
    saved = combine_video(
        frames, args.fps, host.output_directory(), path or args.prefix, format, encoding, provenance
    )
    print(saved.path)


def _test_pattern(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ValueError(f"--frames {args.frames}: the test pattern needs at least 1 frame (default 49).")
    for name, value in (("width", args.width), ("height", args.height)):
        if value < 1:
            raise ValueError(f"--{name} {value}: give a size from 1 to {MAX_SIZE} pixels.")
        if value > MAX_SIZE:
            raise ValueError(f"--{name} {value} is above the largest size made, {MAX_SIZE} pixels.")
    format, path = _destination(args, (args.frames, args.height, args.width))
    frames = moving_pattern(args.frames, args.height, args.width)
    _write(args, frames, format, path, Provenance())
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


def _run_settings(args: argparse.Namespace) -> tuple[Settings, str, bool]:
    """The run's settings (Tiny World's or Wan's, with the options given), its negative prompt, and whether it
    is Tiny World's: all checked before any model is loaded."""
    given = [name for name in ("dit", "text_encoder", "vae") if getattr(args, name) is not None]
    if given and len(given) < 3:
        missing = ", ".join(
            "--" + n.replace("_", "-") for n in ("dit", "text_encoder", "vae") if n not in given
        )
        raise ValueError(f"generate needs all three model files, or none (Tiny World): also give {missing}.")
    if args.low_noise_lora and not args.low_noise_dit:
        raise ValueError("--low-noise-lora is for Wan 2.2 A14B's low-noise expert: give --low-noise-dit too.")
    files = [(name, getattr(args, name)) for name in (*given, "low_noise_dit")]
    files += [(name, path) for name in ("lora", "low_noise_lora") for path, _ in getattr(args, name) or ()]
    missing = [
        f"--{name.replace('_', '-')} {path}" for name, path in files if path and not Path(path).is_file()
    ]
    if missing:  # found before the others load
        raise FileNotFoundError(f"Model file not found: {', '.join(missing)}.")
    preset, negative = (Settings(), WAN_NEGATIVE_PROMPT) if given else (TINY_WORLD_COMMAND, "")
    chosen = {name: getattr(args, name) for name in vars(preset) if getattr(args, name, None) is not None}
    settings = replace(preset, **chosen)
    negative = negative if args.negative_prompt is None else args.negative_prompt
    return settings, negative, not given


def _read_storyboard(args: argparse.Namespace) -> Script | None:
    """--storyboard's shots and their images (None without it), with --frames set to its length when not
    given; exactly one of the prompt and --storyboard."""
    if (args.prompt is None) == (args.storyboard is None):
        raise ValueError(
            'generate needs a prompt or --storyboard FILE (one of the two): e.g. generate "a red circle '
            'moving left", or generate --storyboard shots.txt.'
        )
    if args.storyboard is None:
        return None
    if not (math.isfinite(args.transition) and 0 <= args.transition <= MAX_TRANSITION):
        raise ValueError(f"--transition {args.transition:g}: expected 0 to {MAX_TRANSITION:g} seconds.")
    shots = parse_storyboard(read_storyboard(Path(args.storyboard), "--storyboard"), args.fps)
    if args.frames is None:
        args.frames = storyboard_frames(shots)
    images = read_shot_images(shots, Path(args.storyboard).parent)
    return Script(tuple(shots), args.transition * args.fps, args.fps, images, args.key_frames)


def _generate(args: argparse.Namespace) -> int:
    script = _read_storyboard(args)
    shots = None if script is None else script.shots
    prompts = [args.prompt] if shots is None else [shot.prompt for shot in shots]
    names = ["the prompt"] if shots is None else [f"storyboard line {shot.line}" for shot in shots]
    blocklist = user_blocklist()  # the user's blocklist, as the Prompt Guard node reads it
    for prompt, name in zip(prompts, names, strict=True):
        check_text(prompt, name)
        check_prompt(prompt, blocklist)
    if args.negative_prompt is not None:
        check_text(args.negative_prompt, "--negative-prompt")
    settings, negative, tiny_world = _run_settings(args)
    if shots is not None:
        fit_shots(shots, settings.frames, args.fps)  # a shot past the video's end is found before loading
    destination = _destination(args, (settings.frames, settings.height, settings.width))
    if args.parallel_guidance and settings.cfg == 1.0:
        raise ValueError("--parallel-guidance splits guidance's two passes, and cfg 1 has one: leave it out.")
    split, device = parallel.start(args.device, 2 if args.parallel_guidance else 1)  # torchrun's processes
    try:
        return _generate_on(args, settings, negative, tiny_world, script, destination, split, device)
    finally:
        parallel.finish()


def _generate_on(
    args, settings: Settings, negative: str, tiny_world: bool, script, destination, split, device
) -> int:
    """generate's work once its options are checked (`destination`: _destination's): the VAE on `device` (None:
    the host's choice), over torchrun's processes with `split`; the main process writes the file."""
    from .dit import load_dit
    from .pipeline import load_tiny_world, long_video, text_to_video
    from .text_encoders import load_text_encoder
    from .vae import load_vae

    main, (format, path) = parallel.main_process(), destination
    if not main:
        host.show_console(False)  # one process reports
    elif not args.no_watermark:
        from .provenance.watermark import installation_key

        installation_key()  # made or read now: a user folder where it cannot be is found before sampling
    host.set_memory_budget(args.vram)
    if tiny_world:  # shipped with the pack
        dit, text_encoder, vae = load_tiny_world(vae_device=device, dtype=COMPUTE_DTYPES[args.dtype])
    else:
        # weights wait in CPU memory, work on the GPU
        compute = COMPUTE_DTYPES[args.dtype] or default_compute_dtype(host.compute_device())
        dit = load_dit(args.dit, compute_dtype=compute, device=host.offload_device())
        text_encoder = load_text_encoder(
            args.text_encoder, compute_dtype=compute, device=host.offload_device()
        )
        vae = load_vae(args.vae, device=device or host.offload_device())
        vae = vae if device is None else replace(vae, device=device)
    low_noise = (
        load_dit(args.low_noise_dit, compute_dtype=dit.compute_dtype, device=host.offload_device())
        if args.low_noise_dit
        else None
    )
    vae.parallel = split.decode_group(device) if split is not None else None
    for model in (dit, low_noise):
        if model is not None:
            if split is not None:  # found before sampling
                parallel.check_heads(model.config.num_heads, split.sequence.size, model.config.name)
            model.attention, model.parallel = args.attention, split
            if args.compile:
                model.compile_blocks()
    dit = _with_loras(dit, args.lora)
    low_noise = _with_loras(low_noise, args.low_noise_lora) if low_noise is not None else None
    if script is not None:  # the storyboard's windows, however long
        frames = long_video(dit, text_encoder, vae, script, negative, settings, low_noise)
    else:
        make = long_video if settings.frames > settings.window else text_to_video
        frames = make(dit, text_encoder, vae, args.prompt, negative, settings, low_noise)
    if main:
        _write(args, frames, format, path, Provenance(watermark=not args.no_watermark))
    else:  # the others decode their share of the tiles (and make a long video's windows) as the file is written
        for _ in frames.chunks if isinstance(frames, FrameStream) else ():
            pass
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
    try:
        count = convert_pickle_to_safetensors(Path(args.source), Path(args.destination))
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError as error:  # the destination could not be written (disk full, no permission)
        print(f"error: {error}", file=sys.stderr)
        return 1
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


def _add_output_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """--format, and where the video goes: the next free name for a prefix in the output folder, or -o FILE."""
    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        help=f"output format (default: the one -o FILE's extension names, .mp4 being H.264; else {DEFAULT_FORMAT})",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write exactly FILE, in any folder that exists (the output folder is for --prefix); it must not "
        "exist. Its extension picks the format, or must be --format's (image/png-sequence: a folder, no "
        "extension). Written under a hidden partial name beside it, then renamed",
    )
    where.add_argument(
        "--prefix",
        default=prefix,
        help=f"file name prefix inside the output folder (./output, or ${host.OUTPUT_DIR_ENV}): the file is "
        f"PREFIX_00001_.mp4, the next free number (default {prefix})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spacetime",
        description="ComfyUI-Spacetime: Sora-style text-to-video nodes for ComfyUI, and their command line.",
        epilog=EXIT_STATUSES,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    pattern = commands.add_parser(
        "test-pattern", help="write a moving test-pattern video (checks the encoders and the output folder)"
    )
    pattern.add_argument("--frames", type=int, default=49, help="number of frames (default 49)")
    pattern.add_argument("--width", type=int, default=832, help="width in pixels (default 832)")
    pattern.add_argument("--height", type=int, default=480, help="height in pixels (default 480)")
    pattern.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16)")
    pattern.add_argument("--crf", type=int, default=19, help="quality for H.264/H.265/VP9, lower is better")
    _add_output_options(pattern, "spacetime/test_pattern")
    pattern.set_defaults(run=_test_pattern)

    generate = commands.add_parser(
        "generate",
        help="text to video: write a video for a prompt (Tiny World, built in, unless model files are given)",
    )
    generate.add_argument("prompt", nargs="?", help="what the video shows (left out with --storyboard)")
    generate.add_argument(
        "--storyboard",
        metavar="FILE",
        help="a text file of timed prompts, one shot per line, `START[-END] | prompt` (seconds, or frames as "
        "64f, at --fps), `... | prompt | image: FILE` for a shot from an image (a file beside the storyboard's); "
        "the video is as long as the last shot's end unless --frames is given",
    )
    generate.add_argument(
        "--transition",
        type=float,
        default=DEFAULT_TRANSITION,
        help=f"with --storyboard: seconds over which each shot's prompt gives way to the next (default "
        f"{DEFAULT_TRANSITION:g}; 0: at once)",
    )
    generate.add_argument("--no-key-frames", dest="key_frames", action="store_false",
                          help="with --storyboard: no key frames (a shot without an image then continues "
                          "the last one's scene)")  # fmt: skip
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
    generate.add_argument(
        "--device", type=_device, help="where the VAE decodes (default: the GPU when there is one)"
    )
    generate.add_argument(
        "--parallel-guidance",
        action="store_true",
        help="under torchrun: guidance's conditional and unconditional passes on two halves of the processes, "
        "each half splitting the tokens (default: all processes split the tokens of both passes)",
    )
    generate.add_argument(
        "--vram",
        type=_gigabytes,
        metavar="GB",
        help="GPU memory the models and their work may use (default: what is free); a model that does not "
        "fit streams its blocks from CPU memory",
    )
    generate.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16)")
    generate.add_argument("--crf", type=int, default=19, help="quality for H.264/H.265/VP9, lower is better")
    _add_output_options(generate, "spacetime/video")
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
    for command in commands.choices.values():
        command.epilog = command.epilog or EXIT_STATUSES
    return parser


def _device(text: str):
    """--device: a device this machine has (checked before any model loads)."""
    try:
        return host.usable_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


# What to do about a system error, by errno; the errors that name a wrong path are bad usage.
_ELSEWHERE = f"(-o FILE, or ${host.OUTPUT_DIR_ENV})"
_ADVICE = {
    errno.ENOSPC: f"the disk is full: free some space, or write elsewhere {_ELSEWHERE}",
    errno.EDQUOT: f"the disk quota is used up: free some space, or write elsewhere {_ELSEWHERE}",
    errno.EROFS: f"the folder is read-only: write elsewhere {_ELSEWHERE}",
    errno.EACCES: f"write to a folder you may write to {_ELSEWHERE}, or ask for access",
    errno.EPERM: f"write to a folder you may write to {_ELSEWHERE}, or ask for access",
    errno.EEXIST: "choose another name, or remove it first",
}
_USAGE_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _os_error(error: OSError) -> tuple[str, int]:
    """The message and exit status for an OSError: the pack's own (no errno) say what to do already."""
    if error.errno is None:
        return str(error), EXIT_USAGE
    where = f": {error.filename}" if error.filename else ""
    advice = _ADVICE.get(error.errno)
    message = f"{error.strerror or error}{where}" + (f"; {advice}." if advice else ".")
    return message, EXIT_USAGE if error.errno in _USAGE_ERRNOS else EXIT_FAILED


def _stop(signum, frame) -> None:
    """SIGTERM and Ctrl-C: stop the run here and at its next progress step (host.Stopped)."""
    name = signal.Signals(signum).name
    host.request_stop(name)
    raise host.Stopped(name)


def _run(argv: list[str]) -> int:
    if argv[:1] == ["evaluate"]:
        try:
            return _evaluate(argv[1:])
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_DONE
    _console_log()
    try:
        return args.run(args)
    except (ValueError, DoesNotFit) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # the reader went away: main ends quietly
    except OSError as error:
        message, status = _os_error(error)
        print(f"error: {message}", file=sys.stderr)
        return status


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status (EXIT_STATUSES). While it runs (in the main thread), SIGTERM
    stops it as Ctrl-C does, removing the partial file; the previous handlers are restored after."""
    argv = sys.argv[1:] if argv is None else argv
    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
        handled.append(signal.SIGINT)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {number: signal.signal(number, _stop) for number in handled} if in_main_thread else {}
    try:
        try:
            status = _run(argv)
        except SystemExit as done:  # argparse: after --help, or on a usage error
            status = done.code
        sys.stdout.flush()  # a reader that went away is found here, not in the flush at exit
        return status
    except BrokenPipeError:
        # Python's advice: point stdout at devnull, so that the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (KeyboardInterrupt, host.Stopped) as stopped:
        terminated = isinstance(stopped, host.Stopped) and stopped.args == ("SIGTERM",)
        print(f"stopped ({'SIGTERM' if terminated else 'Ctrl-C'})", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        host.request_stop(None)
        for number, handler in previous.items():
            signal.signal(number, handler)


def exit_with(status: int) -> None:
    """End the process with `status`; a run stopped by a signal ends by that signal, so that the shell and
    scripts tell it from a failure (a loop over files stops on Ctrl-C)."""
    stopped_by = getattr(signal, STOPPED_BY.get(status, ""), None)  # Windows has no SIGPIPE
    if stopped_by is not None and os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(stopped_by, signal.SIG_DFL)
        os.kill(os.getpid(), stopped_by)
    sys.exit(status)
