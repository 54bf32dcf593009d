"""The ComfyUI adapter: defers to ComfyUI when it is there, falls back cleanly when it is not."""

from __future__ import annotations

import io
import logging
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spacetime import host
from spacetime.dit.wan import WanDiT
from spacetime.streaming import DoesNotFit, module_bytes

from wan_reference import T2V, random_wan_state_dict


@pytest.fixture
def no_comfyui(monkeypatch):
    host._comfy_module.cache_clear()
    yield
    host._comfy_module.cache_clear()


@pytest.fixture
def fake_comfyui(monkeypatch, tmp_path: Path):
    """Minimal stand-ins for the ComfyUI modules host.py uses, recording what it asks of them."""
    calls = []
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_output_directory = lambda: str(tmp_path / "comfy-output")
    folder_paths.get_temp_directory = lambda: str(tmp_path / "comfy-temp")
    folder_paths.get_filename_list = lambda kind: [f"{kind}-a.safetensors"]
    folder_paths.get_full_path_or_raise = lambda kind, name: str(tmp_path / kind / name)
    management = types.ModuleType("comfy.model_management")
    management.get_torch_device = lambda: torch.device("meta")
    management.unet_offload_device = lambda: torch.device("cpu")
    management.get_free_memory = lambda device: 123
    management.throw_exception_if_processing_interrupted = lambda: calls.append("interrupt-check")
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            calls.append(("bar", total, node_id))

        def update(self, value):
            calls.append(("update", value))

        def update_absolute(self, value, total=None, preview=None):
            calls.append(("absolute", value, total))

    utils.ProgressBar = ProgressBar
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(disable_metadata=True)
    comfy = types.ModuleType("comfy")
    modules = {"folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": management,
               "comfy.utils": utils, "comfy.cli_args": cli_args}  # fmt: skip
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    host._comfy_module.cache_clear()
    yield calls
    host._comfy_module.cache_clear()


def test_inside_comfyui_everything_defers_to_it(fake_comfyui, tmp_path: Path):
    assert host.in_comfyui()
    assert host.compute_device() == torch.device("meta")
    assert host.offload_device() == torch.device("cpu")
    assert host.free_memory_bytes() == 123
    assert host.output_directory() == tmp_path / "comfy-output"
    assert host.temp_directory() == tmp_path / "comfy-temp"
    assert host.model_filenames("vae") == ["vae-a.safetensors"]
    assert host.model_path("vae", "x.safetensors") == tmp_path / "vae" / "x.safetensors"
    assert host.metadata_disabled()
    host.throw_if_interrupted()
    bar = host.ProgressBar(5, "ignored", node_id="7")
    bar.update(2)
    bar.update_absolute(4)
    assert fake_comfyui == ["interrupt-check", ("bar", 5, "7"), ("update", 2), ("absolute", 4, None)]


def test_outside_comfyui_falls_back(no_comfyui, monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(host.OUTPUT_DIR_ENV, raising=False)
    monkeypatch.delenv(host.MODELS_DIR_ENV, raising=False)
    assert not host.in_comfyui()
    assert host.compute_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert host.output_directory() == tmp_path / "output"
    assert host.free_memory_bytes(torch.device("cpu")) > 0
    assert not host.metadata_disabled()
    host.throw_if_interrupted()  # nothing to interrupt outside ComfyUI


def test_model_folders_outside_comfyui(no_comfyui, monkeypatch, tmp_path: Path):
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(tmp_path))
    assert host.model_filenames("vae") == []
    (tmp_path / "vae" / "wan").mkdir(parents=True)
    (tmp_path / "vae" / "wan" / "b.safetensors").touch()
    (tmp_path / "vae" / "a.safetensors").touch()
    assert host.model_filenames("vae") == ["a.safetensors", "wan/b.safetensors"]
    assert host.model_path("vae", "wan/b.safetensors") == tmp_path / "vae" / "wan" / "b.safetensors"
    with pytest.raises(
        FileNotFoundError, match=r"'missing.safetensors' was not found .* SPACETIME_MODELS_DIR"
    ):
        host.model_path("vae", "missing.safetensors")


def test_console_progress_bar_draws_and_finishes_the_line():
    stream = io.StringIO()
    bar = host.ConsoleProgressBar(4, "Writing", stream=stream)
    for _ in range(4):
        bar.update(1)
    assert stream.getvalue().endswith("Writing [" + "#" * 30 + "] 4/4\n")
    bar.update(3)  # past the end stays at the end
    assert bar.current == 4


def test_intermediate_device(fake_comfyui, monkeypatch):
    sys.modules["comfy.model_management"].intermediate_device = lambda: torch.device("meta")
    assert host.intermediate_device() == torch.device("meta")


class MoveRecorder(torch.nn.Linear):
    """A layer that records where it is asked to move (this machine has only one device)."""

    def __init__(self):
        super().__init__(4, 4)
        self.moves = []

    def to(self, device):
        self.moves.append(torch.device(device))
        return self


def test_models_run_on_the_compute_device_when_they_fit(no_comfyui, monkeypatch):
    module = MoveRecorder()
    monkeypatch.setattr(host, "compute_device", lambda: torch.device("meta"))
    monkeypatch.setattr(host, "free_memory_bytes", lambda device=None: 10**12)
    with host.on_compute_device(module) as device:
        assert device == torch.device("meta")
    assert module.moves == [torch.device("meta"), torch.device("cpu")]  # there and back again


def test_a_model_that_cannot_fit_even_streamed_is_a_clear_error_not_a_cpu_run(no_comfyui, monkeypatch):
    module = MoveRecorder()
    monkeypatch.setattr(host, "compute_device", lambda: torch.device("meta"))
    monkeypatch.setattr(host, "free_memory_bytes", lambda device=None: 10)
    with pytest.raises(DoesNotFit) as error, host.on_compute_device(module, working_bytes=2 * 10**9):
        pass
    message = str(error.value)
    assert "about 2.0 GB" in message and "0.0 GB is available" in message
    assert "shorter or smaller" in message and "fp8" in message and "--vram" in message
    assert module.moves == []


@pytest.fixture
def second_device(no_comfyui, monkeypatch):
    """`cpu:0` as the compute device: a device other than the models' `cpu` that this machine has, so
    placement (move, stream) runs for real."""
    monkeypatch.setattr(host, "compute_device", lambda: torch.device("cpu", 0))
    yield
    host.set_memory_budget(None)


def test_under_a_budget_the_blocks_stream_and_the_output_is_the_same(second_device, caplog):
    config = replace(T2V, num_layers=4)
    model = WanDiT(config)
    model.load_state_dict(random_wan_state_dict(config, seed=1))
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 16, 1, 4, 4, generator=generator), torch.tensor([500.0]),
              torch.randn(1, 5, config.text_dim, generator=generator))  # fmt: skip
    with torch.no_grad():
        expected = model(*inputs)
        block = module_bytes(model.blocks[0])
        host.set_memory_budget((module_bytes(model) - block) / 1e9)  # one block short of resident
        with caplog.at_level(logging.INFO, logger="spacetime"), host.on_compute_device(model, 0) as device:
            assert device == torch.device("cpu", 0)
            streamed = model(*inputs)
    assert torch.equal(streamed, expected)
    assert "1 of 4 blocks resident, 3 streamed" in caplog.text


def test_the_budget_counts_the_work_beside_the_weights(second_device, caplog):
    module = torch.nn.Linear(1000, 1000)
    host.set_memory_budget(module_bytes(module) * 1.5 / 1e9)
    with caplog.at_level(logging.INFO, logger="spacetime"), host.on_compute_device(module, 0):
        pass
    assert "all resident on cpu:0" in caplog.text
    with (
        pytest.raises(DoesNotFit, match="no repeated blocks"),
        host.on_compute_device(module, module_bytes(module)),
    ):
        pass


def test_models_already_on_the_compute_device_stay(no_comfyui):
    module = torch.nn.Linear(4, 4)
    with host.on_compute_device(module) as device:
        assert device == module.weight.device == host.compute_device()


def _two_block_dit_and_patches():
    """A 2-block Wan DiT with random weights, the patches of a 2×8×8 latent, and a seeded generator."""
    from spacetime.dit.patchify import SpacetimePatches, patchify

    config = replace(T2V, num_layers=2)
    model = WanDiT(config)
    model.load_state_dict(random_wan_state_dict(config, seed=4))
    model.requires_grad_(False)
    tokens, grid = patchify(torch.zeros(1, 16, 2, 8, 8), config.patch_size)
    patches = SpacetimePatches(tokens, grid, config.patch_size, config.latent_format)
    return model, patches, torch.Generator().manual_seed(1)


def test_guidance_runs_its_passes_one_at_a_time_when_only_one_fits(second_device, caplog):
    """Under a budget that holds the weights and one pass's work but not both passes at once, sampling
    runs the conditional and unconditional passes one after the other: the same result."""
    from spacetime.samplers.denoiser import Sampling, denoise
    from spacetime.samplers.guidance import Guider

    model, patches, generator = _two_block_dit_and_patches()
    config, tokens = model.config, patches.tokens
    guider = Guider(model, torch.randn(1, 5, config.text_dim, generator=generator),
                    torch.randn(1, 5, config.text_dim, generator=generator), cfg=4.0)  # fmt: skip
    sampling = Sampling(torch.linspace(1.0, 0.0, 3), "euler", seed=3)
    expected = denoise(guider, patches, sampling).tokens  # no budget: both passes at once
    one_pass = model.activation_bytes(1, tokens.shape[1])
    host.set_memory_budget((module_bytes(model) + one_pass * 1.5) / 1e9)
    with caplog.at_level(logging.INFO, logger="spacetime"):
        split = denoise(guider, patches, sampling).tokens
    assert "2 passes run one after the other" in caplog.text
    torch.testing.assert_close(split, expected, rtol=1e-5, atol=1e-5)


def test_a_storyboard_window_counts_a_pass_per_prompt_and_splits_them_when_they_do_not_fit(
    second_device, caplog
):
    """A window that two shots share runs three passes (two prompts and the negative): as one batch when
    they fit, one after the other when only one does, with the same result."""
    from spacetime.samplers.denoiser import Sampling, denoise
    from spacetime.samplers.guidance import Guider, Timeline

    model, patches, generator = _two_block_dit_and_patches()
    config, tokens = model.config, patches.tokens
    contexts = torch.randn(2, 5, config.text_dim, generator=generator)
    timeline = Timeline(contexts, torch.tensor([[1.0, 0.25], [0.0, 0.75]]))
    guider = Guider(model, contexts[:1], torch.randn(1, 5, config.text_dim, generator=generator), cfg=4.0,
                    timeline=timeline)  # fmt: skip
    sampling = Sampling(torch.linspace(1.0, 0.0, 3), "euler", seed=3)
    expected = denoise(guider, patches, sampling).tokens
    assert not torch.equal(expected, denoise(replace(guider, timeline=None), patches, sampling).tokens)
    two_passes = model.activation_bytes(2, tokens.shape[1])
    host.set_memory_budget((module_bytes(model) + two_passes * 1.2) / 1e9)  # two fit, three do not
    with caplog.at_level(logging.INFO, logger="spacetime"):
        split = denoise(guider, patches, sampling).tokens
    assert "3 passes run one after the other" in caplog.text
    torch.testing.assert_close(split, expected, rtol=1e-5, atol=1e-5)
