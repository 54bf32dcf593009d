"""One video on several processes (parallel.py): two CPU processes on torch.distributed's gloo, spawned once
for the module, split a tiny DiT's tokens (Ulysses) or guidance's batch, and each case equals one process
alone: a forward with a token count that does not divide, a 10-step guided sampling, pinned frames, two Long
Video windows, and a VAE decode whose tiles the processes share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from test_denoiser import TINY, contexts, tiny_dit

from spacetime import parallel
from spacetime.dit import SpacetimePatches
from spacetime.editing.long_video import Codec, Windows, long_video_latent, long_video_windows
from spacetime.samplers.denoiser import Sampling, denoise
from spacetime.samplers.guidance import Guider
from spacetime.samplers.schedules import linear_schedule
from spacetime.vae import load_vae

from media import decode
from tiny_models import TINY_T2V, write_tiny_models
from wan_reference import random_wan_state_dict, write
from wan_vae_reference import TINY_21, random_vae_state_dict

TWO_HEADS = replace(TINY, num_layers=2)  # heads 32 wide, 2 of them: one a process
SPLITS = {"sequence": 1, "guidance": 2}  # guidance groups: 1 (both processes split the tokens) or 2
CASES = ("forward", "per_token", "image", "sampling", "cached", "experts", "pinned", "windows")
IMAGE = replace(TWO_HEADS, in_channels=36, image_dim=40)  # Wan 2.1 I2V's CLIP cross-attention beside the text


def _cases(dit, image_dit, low_noise, vae) -> dict[str, torch.Tensor]:
    """Every case's result on this process, as the DiTs (and the VAE) are split now."""
    generator = torch.Generator().manual_seed(2)
    positive, negative = contexts()
    results = {}
    # 5 tokens, and 9 for the per-token case: neither splits into 2 evenly
    tokens = torch.randn(2, 5, 16 * 4, generator=generator)
    context = torch.randn(2, 7, 32, generator=generator)
    results["forward"] = dit.forward_tokens(tokens, (5, 1, 1), torch.tensor([700.0, 300.0]), context)
    tokens = torch.randn(2, 9, 16 * 4, generator=generator)
    timesteps = torch.rand(2, 9, generator=generator) * 1000  # Wan 2.2's per-token timesteps
    results["per_token"] = dit.forward_tokens(tokens, (3, 1, 3), timesteps, context)
    tokens, features = (
        torch.randn(2, 5, 36 * 4, generator=generator),
        torch.randn(1, 4, 40, generator=generator),
    )
    results["image"] = image_dit.forward_tokens(
        tokens, (5, 1, 1), torch.tensor([900.0, 100.0]), context, features
    )

    patches = SpacetimePatches.from_latent(
        torch.zeros(1, 16, 3, 2, 6), dit.config.patch_size, dit.latent_format
    )
    guider = Guider(dit, positive, negative, cfg=5.0)
    sampling = Sampling(linear_schedule(10, shift=3.0), "unipc", seed=1)
    results["sampling"] = denoise(guider, patches, sampling).tokens
    results["cached"] = denoise(guider, patches, replace(sampling, cache=1.0)).tokens  # step caching
    experts = Guider(dit, positive, negative, cfg=5.0, low_noise_dit=low_noise, boundary=0.5)  # A14B's switch
    results["experts"] = denoise(experts, patches, sampling).tokens
    known = torch.randn(patches.tokens.shape, generator=generator)
    pinned = torch.zeros(patches.tokens.shape[:2], dtype=torch.bool)
    pinned[:, :3] = True  # the first latent frame
    results["pinned"] = denoise(guider, replace(patches, pinned=pinned, known=known), sampling).tokens

    codec = Codec(vae.encode, vae.decode)
    windows = long_video_windows(guider, Sampling(linear_schedule(4), "euler", seed=3), (1, 16, 8, 2, 6),
                                 Windows(5, 2, 4), codec)  # fmt: skip
    results["windows"] = long_video_latent(list(windows))[0]
    return results


def _worker(rank: int, size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.set_num_threads(1)
    with torch.no_grad():
        models = tiny_dit(config=TWO_HEADS), tiny_dit(config=IMAGE), tiny_dit(seed=1, config=TWO_HEADS)
        vae = load_vae(Path(folder) / "vae.safetensors")
        results = {f"{case}_alone": value for case, value in _cases(*models, vae).items()}
        latent = torch.randn(1, 16, 2, 6, 10, generator=torch.Generator().manual_seed(4))
        results["tiles_alone"] = vae.decode(latent, tile=32, overlap=8)
        for name, groups in SPLITS.items():
            split = parallel.groups(rank, size, groups)
            for model in models:
                model.parallel = split
            results |= {f"{case}_{name}": value for case, value in _cases(*models, vae).items()}
        vae.parallel = parallel.Group(size, rank)
        results["tiles_shared"] = vae.decode(latent, tile=32, overlap=8)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in results.items()}, str(Path(folder) / "results.safetensors"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, torch.Tensor]:
    folder = tmp_path_factory.mktemp("parallel")
    save_file(random_vae_state_dict(TINY_21), str(folder / "vae.safetensors"))
    mp.spawn(_worker, args=(2, _free_port(), str(folder)), nprocs=2)
    return load_file(str(folder / "results.safetensors"))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", CASES)
def test_two_processes_make_what_one_makes(results, case, split):
    alone, split_result = results[f"{case}_alone"], results[f"{case}_{split}"]
    assert alone.abs().mean() > 0.05  # something was computed
    torch.testing.assert_close(split_result, alone, rtol=1e-5, atol=1e-5)


def test_the_cases_exercise_what_they_name(results):
    """Step caching reused steps, and the low-noise expert took over, so those results differ from sampling's."""
    for case in ("cached", "experts"):
        assert (results[f"{case}_alone"] - results["sampling_alone"]).abs().max() > 1e-3


def test_the_vae_tiles_dealt_between_processes_blend_into_the_same_decode(results):
    assert results["tiles_alone"].shape == (1, 3, 5, 48, 80)
    torch.testing.assert_close(results["tiles_shared"], results["tiles_alone"], rtol=0, atol=1e-6)


def test_token_shares_pad_the_last_and_gather_crops_it():
    group = parallel.Group(4, 3)
    x = torch.arange(10.0).reshape(1, 10)
    assert group.chunk(10) == 3
    assert group.split(x, 1).tolist() == [[9.0, 0.0, 0.0]]  # the last share: one token and padding
    assert parallel.Group(4, 1).split(x, 1).tolist() == [[3.0, 4.0, 5.0]]


def test_heads_that_do_not_divide_name_the_process_counts_that_work():
    parallel.check_heads(40, 8, "Wan 2.1 14B")
    with pytest.raises(
        ValueError, match=r"40 attention heads.* 3 processes.*run 1, 2, 4, 5, 8, 10, 20, 40 proc"
    ):
        parallel.check_heads(40, 3, "Wan 2.1 14B")


def generate(*args: str, output: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """`python -m spacetime generate ...`, or under torchrun with `processes` processes (on the CPU: gloo)."""
    launch = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        if processes > 1
        else []
    )
    env = os.environ | {"SPACETIME_OUTPUT_DIR": str(output), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *launch, "-m", "spacetime", "generate", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_parallel_guidance_needs_torchrun_and_guidance(tmp_path):
    result = generate("a red circle moving left", "--frames", "1", "--parallel-guidance", output=tmp_path)
    assert result.returncode == 2 and "torchrun --nproc-per-node 2" in result.stderr
    result = generate("a red circle", "--cfg", "1", "--parallel-guidance", output=tmp_path)
    assert result.returncode == 2 and "cfg 1 has one" in result.stderr


def test_torchrun_writes_the_single_process_video_once(tmp_path):
    """`torchrun --nproc-per-node 2 -m spacetime generate` on Wan files (a tiny DiT of 2 heads): one file,
    frame for frame the single process's, its tiles decoded by both processes."""
    models = write_tiny_models(tmp_path / "models")
    write(random_wan_state_dict(replace(TINY_T2V, dim=256, ffn_dim=256)), models["dit"])  # 2 heads of 128
    options = ["a red circle", "--dit", str(models["dit"]), "--text-encoder", str(models["text_encoder"]),
               "--vae", str(models["vae"]), "--frames", "5", "--width", "64", "--height", "48", "--steps", "3",
               "--dtype", "fp32", "--tile", "32", "--overlap", "8", "--format", "video/ffv1-mkv", "--no-watermark"]  # fmt: skip
    alone = generate(*options, "--prefix", "one", output=tmp_path)
    assert alone.returncode == 0, alone.stderr
    split = generate(*options, "--prefix", "two", output=tmp_path, processes=2)
    assert split.returncode == 0, split.stderr
    assert split.stdout.count("two_") == 1 and len(list(tmp_path.glob("two_*"))) == 1  # one process wrote
    one, two = decode(Path(alone.stdout.strip())).frames, decode(Path(split.stdout.strip())).frames
    assert one.shape == two.shape == (5, 48, 64, 3) and one.std() > 1
    assert (one.astype(int) - two.astype(int)).max() == 0 and (one.astype(int) - two.astype(int)).min() == 0
