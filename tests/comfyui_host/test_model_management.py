"""Our models under the real host's model management, in this process: ComfyUI's own ModelPatcher loads
a DiT partially (the layers left out stay in CPU memory and are fetched by the host's cast on each use)
and its output is exactly the resident output; eviction puts every weight back."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spacetime import host
from spacetime.dit.wan import WanDiT
from spacetime.streaming import module_bytes

from wan_reference import T2V, random_wan_state_dict

CONFIG = replace(T2V, num_layers=3)


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's modules imported here (no server): what the pack's host layer talks to inside ComfyUI."""
    checkout = os.environ.get("COMFYUI_PATH")
    if not checkout:
        pytest.skip(
            "host tests need a ComfyUI checkout: set COMFYUI_PATH=/path/to/ComfyUI (requirements installed)"
        )
    sys.path.insert(0, str(Path(checkout).resolve()))
    host._comfy_module.cache_clear()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as the server under test runs (this machine may have no GPU)
    import comfy.model_management as mm

    yield mm
    mm.unload_all_models()
    sys.path.remove(str(Path(checkout).resolve()))
    host._comfy_module.cache_clear()


def _model_and_inputs():
    model = WanDiT(CONFIG)
    model.load_state_dict(random_wan_state_dict(CONFIG, seed=2))
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 16, 2, 4, 4, generator=generator), torch.tensor([700.0, 200.0]),
              torch.randn(2, 6, CONFIG.text_dim, generator=generator))  # fmt: skip
    return model.eval().requires_grad_(False), inputs


def test_our_models_are_listed_among_the_hosts_loaded_models_and_stay(comfy):
    model, inputs = _model_and_inputs()
    with torch.no_grad(), host.on_compute_device(model, 0) as device:
        model(*(t.to(device) for t in inputs))
    listed = [m.model for m in comfy.current_loaded_models]
    patcher = model.__dict__["_spacetime_patcher"]
    assert patcher in listed
    entry = next(m for m in comfy.current_loaded_models if m.model is patcher)
    with torch.no_grad(), host.on_compute_device(model, 0):
        pass
    # used again: the same entry, not a second load
    assert [m for m in comfy.current_loaded_models if m.model is patcher] == [entry]
    comfy.unload_all_models()
    assert patcher not in [m.model for m in comfy.current_loaded_models]


def test_a_partially_loaded_dit_gives_exactly_the_resident_output(comfy, monkeypatch):
    model, inputs = _model_and_inputs()
    host_casts = []
    cast_layer = host.cast_layer

    def counted(module, like, dtype):
        host_casts.append(module)
        return cast_layer(module, like, dtype)

    monkeypatch.setattr(host, "cast_layer", counted)
    with torch.no_grad():
        expected = model(*inputs)
    patcher = host._host_patcher(model)
    budget = module_bytes(model) // 3
    patcher.load(torch.device("cpu"), lowvram_model_memory=budget)  # the host's partial loading
    try:
        left_out = [name for name, m in model.named_modules() if getattr(m, "comfy_cast_weights", False)]
        assert left_out, "the host left no layer out: the budget did not force a partial load"
        assert any(name.startswith("blocks.") for name in left_out)
        assert 0 < patcher.loaded_size() <= budget
        with torch.no_grad():
            partial = model(*inputs)  # the left-out layers go through the host's cast (comfy.ops)
        assert {id(m) for m in host_casts} == {
            id(m) for _, m in model.named_modules() if getattr(m, "comfy_cast_weights", False)
        }
    finally:
        patcher.detach()
    assert torch.equal(partial, expected)
    assert not any(getattr(m, "comfy_cast_weights", False) for m in model.modules())  # evicted cleanly
    with torch.no_grad():
        assert torch.equal(model(*inputs), expected)


def test_a_lora_on_a_partially_loaded_dit_gives_exactly_the_resident_output(comfy, tmp_path):
    """A LoRA handle shares its model's patcher; the layers the host left out get the LoRA after its cast."""
    from safetensors.torch import save_file

    from spacetime.lora import load_lora

    model, inputs = _model_and_inputs()
    generator = torch.Generator().manual_seed(1)
    file = {}
    for block in range(CONFIG.num_layers):
        stem = f"diffusion_model.blocks.{block}.ffn.0"
        file[f"{stem}.lora_down.weight"] = torch.randn(4, CONFIG.dim, generator=generator) * 0.1
        file[f"{stem}.lora_up.weight"] = torch.randn(CONFIG.ffn_dim, 4, generator=generator) * 0.1
    save_file(file, str(tmp_path / "lora.safetensors"))
    handle = model.with_lora(load_lora(tmp_path / "lora.safetensors", model), 0.9)
    with torch.no_grad():
        expected = handle(*inputs)
    patcher = host._host_patcher(handle)
    assert patcher is host._host_patcher(model)  # one model for the host, whatever LoRAs ride on it
    patcher.load(torch.device("cpu"), lowvram_model_memory=module_bytes(model) // 3)
    try:
        assert any(getattr(m, "comfy_cast_weights", False) for m in model.blocks.modules())
        with torch.no_grad():
            partial = handle(*inputs)
    finally:
        patcher.detach()
    assert torch.equal(partial, expected)
