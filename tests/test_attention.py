"""Attention backends (dit/attention.py) and regional torch.compile: the choice, the fallback, the plumbing
of an optional kernel through the DiT, and compiled equal to eager."""

from __future__ import annotations

import logging
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from spacetime import ops
from spacetime.dit import attention, load_dit

from numerics import relative_error
from wan_reference import T2V, random_wan_state_dict, write


@pytest.fixture(autouse=True)
def fresh_choice():
    attention._resolve.cache_clear()
    yield
    attention._resolve.cache_clear()


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory) -> Path:
    return write(random_wan_state_dict(T2V, seed=5), tmp_path_factory.mktemp("dit") / "wan.safetensors")


@pytest.fixture(scope="module")
def probe():
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(2, 16, 3, 4, 6, generator=generator),
        torch.tensor([700.0, 300.0]),
        torch.randn(2, 7, T2V.text_dim, generator=generator),
    )


def qkv(seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 9, 3, 16, generator=generator).to(dtype) for _ in range(3)]


def test_sdpa_is_softmax_attention():
    q, k, v = qkv()
    scores = torch.einsum("blnk,bsnk->bnls", q, k) / math.sqrt(q.shape[-1])
    expected = torch.einsum("bnls,bsnk->blnk", scores.softmax(-1), v)
    assert relative_error(attention.sdpa(q, k, v), expected) < 1e-6


def test_auto_is_sdpa_on_the_cpu_without_a_word(caplog):
    with caplog.at_level(logging.WARNING, logger="spacetime"):
        for dtype in (torch.float32, torch.bfloat16):
            assert attention.kernel_name("auto", torch.device("cpu"), dtype, 64) == "sdpa"
    assert not caplog.records


@pytest.mark.parametrize("backend", ["flash", "sage"])
def test_a_kernel_that_cannot_run_falls_back_with_one_console_line(backend, caplog):
    q, k, v = qkv()
    with caplog.at_level(logging.WARNING, logger="spacetime"):
        for _ in range(3):
            fn = attention.kernel(backend, q.device, q.dtype, q.shape[-1])
            assert torch.equal(fn(q, k, v), attention.sdpa(q, k, v))
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and f"{backend} is not used because" in notes[0] and "SDPA" in notes[0]


def test_the_fallback_says_why(monkeypatch):
    monkeypatch.setattr(attention, "installed", lambda backend: True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "NVIDIA GPUs only" in attention._unusable("sage", cpu, torch.bfloat16, 128)
    assert "bf16 or fp16" in attention._unusable("flash", cuda, torch.float32, 128)
    assert "heads 80 wide" in attention._unusable("sage", cuda, torch.bfloat16, 80)
    assert attention._unusable("flash", cuda, torch.bfloat16, 128) is None
    monkeypatch.setattr(attention, "installed", lambda backend: False)
    assert "pip install sageattention" in attention._unusable("sage", cuda, torch.bfloat16, 128)


def test_an_unknown_backend_is_refused_by_name(dit_file):
    with pytest.raises(ValueError, match=r"'xformers'.*auto, sdpa, flash, sage"):
        load_dit(dit_file, attention="xformers")


def fake_flash(monkeypatch, calls: list):
    """A stand-in FlashAttention 3 module (it returns (out, lse), as some builds do) computing with SDPA,
    made usable on this CPU: what is checked is that the DiT routes every attention through the kernel in
    its layout, and unwraps the tuple."""

    def flash_attn_func(q, k, v):
        calls.append(q.shape)
        return attention.sdpa(q, k, v), torch.zeros(q.shape[:3])

    module = types.ModuleType("flash_attn_interface")
    module.flash_attn_func = flash_attn_func
    monkeypatch.setitem(sys.modules, "flash_attn_interface", module)
    monkeypatch.setattr(attention, "_unusable", lambda *_: None)


def test_an_installed_kernel_serves_every_attention_of_the_dit(monkeypatch, dit_file, probe):
    calls = []
    fake_flash(monkeypatch, calls)
    reference = load_dit(dit_file, attention="sdpa")
    chosen = load_dit(dit_file, attention="flash")
    with torch.no_grad():
        expected, got = reference(*probe), chosen(*probe)
    assert len(calls) == 2 * T2V.num_layers  # self- and cross-attention in every block
    assert calls[0] == (2, 3 * 2 * 3, T2V.num_heads, T2V.head_dim)  # B×L×N×K
    assert relative_error(got, expected) < 1e-6


def test_auto_prefers_sage_then_flash_where_they_run(monkeypatch):
    for name in ("flash", "sage"):
        module, takes, _ = attention.OPTIONAL[name]
        monkeypatch.setitem(attention.OPTIONAL, name, (module, takes, lambda name=name: f"{name} kernel"))
    monkeypatch.setattr(attention, "_unusable", lambda backend, *_: None if backend == "flash" else "no")
    assert attention._resolve("auto", "cuda", torch.bfloat16, 128) == ("flash", "flash kernel")
    attention._resolve.cache_clear()
    monkeypatch.setattr(attention, "_unusable", lambda *_: None)
    assert attention._resolve("auto", "cuda", torch.bfloat16, 128) == ("sage", "sage kernel")
    attention._resolve.cache_clear()
    monkeypatch.setattr(attention, "_unusable", lambda *_: "no")
    assert attention._resolve("auto", "cuda", torch.bfloat16, 128) == ("sdpa", attention.sdpa)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="FlashAttention and SageAttention run on NVIDIA GPUs"
)
@pytest.mark.parametrize("backend,tolerance", [("flash", 1e-2), ("sage", 5e-2)])
def test_optional_kernels_match_sdpa_on_the_gpu(backend, tolerance):
    if not attention.installed(backend):
        pytest.skip(f"{backend} is not installed")
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4096, 12, 128, generator=generator).cuda().bfloat16() for _ in range(3))
    assert attention.kernel_name(backend, q.device, q.dtype, 128) == backend
    got = attention.kernel(backend, q.device, q.dtype, 128)(q, k, v)
    assert relative_error(got.float(), attention.sdpa(q, k, v).float()) < tolerance


# Regional compile. Inductor on the CPU builds C++ (tens of seconds on 2 cores): the default run checks
# that dynamo captures the blocks and that the captured graph computes the same (aot_eager); the
# full compile is the slow test.
def compiled_against_eager(dit_file, probe, monkeypatch, backend: str) -> tuple[float, int]:
    eager = load_dit(dit_file)
    compiled = load_dit(dit_file)
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: compile(fn, backend=backend))
    compiled.compile_blocks()
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    with torch.no_grad():
        expected, got = eager(*probe), compiled(*probe)
        again = compiled(*probe)
    assert torch.equal(got, again)
    return relative_error(got, expected), counters["stats"]["unique_graphs"]


def test_regional_compile_captures_the_blocks_and_equals_eager(dit_file, probe, monkeypatch):
    error, graphs = compiled_against_eager(dit_file, probe, monkeypatch, "aot_eager")
    assert error < 1e-5
    assert 1 <= graphs <= 2  # one graph for every block, not one per block (2 with a guard on the first)


@pytest.mark.slow
def test_regional_compile_with_inductor_equals_eager(dit_file, probe, monkeypatch):
    error, graphs = compiled_against_eager(dit_file, probe, monkeypatch, "inductor")
    assert error < 1e-5
    assert 1 <= graphs <= 2


def test_compile_is_a_loader_option(dit_file):
    model = load_dit(dit_file, compile=True)
    assert all(hasattr(block.forward, "_torchdynamo_orig_callable") for block in model.blocks)
    assert not hasattr(load_dit(dit_file).blocks[0].forward, "_torchdynamo_orig_callable")


def test_auto_computes_in_bf16_on_cpus_with_native_bf16(monkeypatch, dit_file):
    monkeypatch.setattr(ops, "cpu_has_native_bf16", lambda: True)
    assert load_dit(dit_file).compute_dtype == torch.bfloat16
    monkeypatch.setattr(ops, "cpu_has_native_bf16", lambda: False)
    assert load_dit(dit_file).compute_dtype == torch.float32


def test_auto_passes_over_a_broken_build_with_one_line(monkeypatch, caplog):
    def broken():
        raise ImportError("libcudart.so.13: cannot open shared object file")

    monkeypatch.setattr(attention, "_unusable", lambda *_: None)
    module, takes, _ = attention.OPTIONAL["sage"]
    monkeypatch.setitem(attention.OPTIONAL, "sage", (module, takes, broken))
    monkeypatch.setitem(attention.OPTIONAL, "flash", ("flash_attn", takes, lambda: "flash kernel"))
    with caplog.at_level(logging.WARNING, logger="spacetime"):
        assert attention._resolve("auto", "cuda", torch.bfloat16, 128) == ("flash", "flash kernel")
    (note,) = [r.getMessage() for r in caplog.records]
    assert "sage is not used because sageattention failed to load (libcudart" in note
