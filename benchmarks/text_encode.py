"""Text encode time, ours against transformers' UMT5EncoderModel, on the same weights and prompts.
Prints a Markdown table.

    python benchmarks/text_encode.py [--layers 2] [--batch 2] [--device cpu] [--dtype fp32]

UMT5-XXL's width (4096, 64 heads of 64, gated MLP 10240) with --layers of its 24 layers, 512
tokens per prompt as Wan uses; the embedding table is cut to the tiny test vocabulary (a lookup,
it does not change the time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.text_encoders import load_text_encoder

from numerics import relative_error
from umt5_reference import tiny_spiece_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(function, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(vocab_size=448, d_model=4096, d_kv=64, d_ff=10240, num_layers=args.layers, num_heads=64,
                        dropout_rate=0.0, feed_forward_proj="gated-gelu")  # fmt: skip
    reference = UMT5EncoderModel(config).eval()
    prompts = ["a red circle moving left on a blue background, " * 6, "a small green square drifts upward"]
    prompts = (prompts * args.batch)[: args.batch]
    with tempfile.TemporaryDirectory() as folder:
        state = {
            k: v.contiguous() for k, v in reference.state_dict().items() if k != "encoder.embed_tokens.weight"
        }
        state["spiece_model"] = torch.frombuffer(bytearray(tiny_spiece_model()), dtype=torch.uint8)
        save_file(state, str(Path(folder) / "umt5.safetensors"))
        ours = load_text_encoder(Path(folder) / "umt5.safetensors", dtype, dtype, device)
    reference = reference.to(device, dtype)
    tokens = ours.tokenizer(prompts, 512)
    ids, mask = tokens.ids.to(device), tokens.mask.to(device)

    def run_reference():
        with torch.no_grad():
            return reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    ours_runs, reference_runs = [], []
    for _ in range(args.rounds):  # interleaved, so drift in machine speed hits both alike
        ours_runs.append(timed(lambda: ours.encode(prompts), args.repeats, device))
        reference_runs.append(timed(run_reference, args.repeats, device))
    ours_seconds, reference_seconds = min(ours_runs), min(reference_runs)
    difference = relative_error(
        ours.encode(prompts)[tokens.mask].float(), run_reference()[mask].float().cpu()
    )
    print(
        f"UMT5-XXL width, {args.layers} layers, batch {args.batch} x 512 tokens, {args.dtype} on {args.device}\n"
    )
    print("| implementation | encode s |")
    print("|---|---:|")
    print(f"| ours | {ours_seconds:.3f} |")
    print(f"| transformers | {reference_seconds:.3f} |")
    print(
        f"\nours / transformers: {ours_seconds / reference_seconds:.2f}x; relative difference {difference:.1e}"
    )


if __name__ == "__main__":
    main()
