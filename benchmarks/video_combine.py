"""Video Combine encode speed, size and fidelity per format: prints a Markdown table.

    python benchmarks/video_combine.py [--frames 81 --width 832 --height 480]

Frames are the moving test pattern (Wan's default 832x480, 81 frames at 16 fps); PSNR is measured
against the input after decoding with PyAV (Pillow for WebP).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.video import FORMATS, combine_video
from spacetime.video.patterns import moving_pattern

from media import decode, psnr, to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()

    clip = moving_pattern(args.frames, args.height, args.width)
    reference = to_uint8(clip)
    print(
        f"{args.frames} frames, {args.width}x{args.height}, 16 fps, default settings (crf 19, preset medium)\n"
    )
    print("| format | encode s | frames/s | size KiB | PSNR dB |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name in FORMATS:
            start = time.perf_counter()
            saved = combine_video(clip, 16.0, Path(folder), "bench", name)
            seconds = time.perf_counter() - start
            files = list(saved.path.iterdir()) if saved.path.is_dir() else [saved.path]
            size = sum(f.stat().st_size for f in files) / 1024
            decoded = decode(saved.path).frames[:, : args.height, : args.width]
            quality = psnr(reference, decoded)
            shown = "lossless" if quality == float("inf") else f"{quality:.1f}"
            print(f"| {name} | {seconds:.2f} | {args.frames / seconds:.0f} | {size:.0f} | {shown} |")


if __name__ == "__main__":
    main()
