"""DiT forward time and peak memory: ours against diffusers' WanTransformer3DModel and ComfyUI core's
WanModel, on the same weights and inputs, eager and with regional torch.compile. Prints a Markdown table.

    python benchmarks/dit_forward.py                     # CPU: Wan-1.3B width, 2 layers, 480x832x17
    python benchmarks/dit_forward.py --compile           # also each implementation's blocks compiled
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/dit_forward.py   # also ComfyUI core's WanModel
    python benchmarks/dit_forward.py --device cuda --layers 30 --frames 81 --dtype bf16 --compile

The configuration is Wan 2.1 T2V 1.3B's (width 1536, 12 heads, FFN 8960) with --layers blocks;
the token count is that of a real video: (frames-1)/4+1 latent frames of (height/16)x(width/16)
patches. Each implementation runs in its own process, --rounds times in alternating order, and
the best round is reported (the machine's noise only ever slows a run down). A compiled run is
warmed up (compiled) before it is timed. Ours uses --attention (auto: the best kernel installed);
the others use PyTorch's SDPA, as they do by default. Forward peak memory is what a forward adds
on top of the loaded weights (CUDA's peak allocation on a GPU, sampled resident memory on the
CPU); load peak is the process's peak resident memory after loading (CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.dit import WanConfig, load_dit
from spacetime.dit.attention import BACKENDS
from spacetime.latent_formats import WAN21

from numerics import relative_error
from wan_reference import diffusers_reference, random_wan_state_dict, write

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def config_for(layers: int) -> WanConfig:
    return WanConfig(
        dim=1536, ffn_dim=8960, num_layers=layers, in_channels=16, out_channels=16, latent_format=WAN21
    )


def inputs(args, device):
    generator = torch.Generator().manual_seed(0)
    latent_frames = (args.frames - 1) // 4 + 1
    latent = torch.randn(1, 16, latent_frames, args.height // 8, args.width // 8, generator=generator)
    context = torch.zeros(1, 512, 4096)
    context[:, :40] = torch.randn(1, 40, 4096, generator=generator)
    return latent.to(device), torch.tensor([900.0], device=device), context.to(device)


class ResidentPeak:
    """Peak resident memory while a block runs, sampled from /proc (CPU runs)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = self.now()

    def now(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page

    def __enter__(self):
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def comfy_core(layers: int, device, dtype):
    """ComfyUI core's WanModel (from COMFYUI_PATH) in the benchmark's configuration, empty."""
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    import comfy.cli_args

    comfy.cli_args.args.cpu = device.type == "cpu"
    import comfy.ldm.wan.model
    import comfy.ops

    config = config_for(layers)
    return comfy.ldm.wan.model.WanModel(
        dim=config.dim, ffn_dim=config.ffn_dim, num_heads=config.num_heads, num_layers=layers, in_dim=16,
        out_dim=16, text_dim=4096, freq_dim=256, operations=comfy.ops.disable_weight_init, dtype=dtype, device=device,
    )  # fmt: skip


def worker(args) -> None:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    impl, compiled = args.impl.removesuffix(" compiled"), args.impl.endswith(" compiled")
    if impl == "ours":
        model = load_dit(args.weights, dtype, dtype, device, attention=args.attention, compile=compiled)

        def forward(latent, timestep, context):
            return model(latent, timestep, context)
    else:
        from safetensors.torch import load_file

        state = {k.removeprefix("model.diffusion_model."): v for k, v in load_file(args.weights).items()}
        if impl == "diffusers":
            model = diffusers_reference(config_for(args.layers), state).to(device, dtype)
            if compiled:
                model.compile_repeated_blocks()

            def forward(latent, timestep, context):
                return model(latent.to(dtype), timestep, context.to(dtype), return_dict=False)[0]
        else:
            model = comfy_core(args.layers, device, dtype)
            model.load_state_dict(state)
            model.to(device, dtype).eval()
            if compiled:
                for block in model.blocks:
                    block.compile()

            def forward(latent, timestep, context):
                return model(latent.to(dtype), timestep, context.to(dtype))

        del state

    latent, timestep, context = inputs(args, device)
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    times = []
    with torch.no_grad():
        output = forward(latent, timestep, context)  # warm-up
        del output
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with ResidentPeak() as resident:
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                output = forward(latent, timestep, context)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
    if device.type == "cuda":
        forward_peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        forward_peak = (resident.peak - resident.start) / 2**20
    result = {"seconds": statistics.median(times), "forward_mib": forward_peak, "load_peak_mib": load_peak}
    torch.save(output.float().cpu(), args.output)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per process (median)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per implementation (best is kept)")
    parser.add_argument("--compile", action="store_true", help="also time each implementation compiled")
    parser.add_argument("--attention", choices=BACKENDS, default="auto", help="our attention kernel")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        worker(args)
        return

    tokens = ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16)
    with tempfile.TemporaryDirectory() as folder:
        weights = write(random_wan_state_dict(config_for(args.layers)), Path(folder) / "wan.safetensors")
        impls = ["ours", "diffusers"] + (["comfy"] if os.environ.get("COMFYUI_PATH") else [])
        impls += [f"{impl} compiled" for impl in impls] if args.compile else []
        runs = {impl: [] for impl in impls}
        for round_index in range(args.rounds):  # alternate the order so neither side always runs first
            for index, impl in enumerate(impls if round_index % 2 == 0 else impls[::-1]):
                output = Path(folder) / f"{index}.pt"
                command = [sys.executable, __file__, *sys.argv[1:], "--impl", impl, "--weights", str(weights),
                           "--output", str(output)]  # fmt: skip
                completed = subprocess.run(command, capture_output=True, text=True)
                if completed.returncode:
                    raise RuntimeError(f"{impl} failed:\n{completed.stderr[-3000:]}")
                runs[impl].append(json.loads(completed.stdout.strip().splitlines()[-1]))
                runs[impl][-1]["output"] = torch.load(output, weights_only=True)
        results = {
            impl: {
                "seconds": min(r["seconds"] for r in measured),
                "forward_mib": min(r["forward_mib"] for r in measured),
                "load_peak_mib": min(r["load_peak_mib"] for r in measured),
                "output": measured[-1]["output"],
            }
            for impl, measured in runs.items()
        }
    ours = results["ours"]
    print(
        f"Wan-1.3B width, {args.layers} layers, {args.frames} frames {args.height}x{args.width} "
        f"= {tokens} tokens, {args.dtype} on {args.device} ({torch.get_num_threads()} threads), "
        f"our attention: {args.attention}\n"
    )
    print("| implementation | forward s | ours eager / this | forward peak MiB (above weights) | load peak RSS MiB "
          "| output vs ours eager |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for impl, result in results.items():
        difference = relative_error(result["output"], ours["output"]) if impl != "ours" else 0.0
        print(f"| {impl} | {result['seconds']:.3f} | {ours['seconds'] / result['seconds']:.2f}× "
              f"| {result['forward_mib']:.0f} | {result['load_peak_mib']:.0f} | {difference:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
