"""LoRAs on the Wan DiT: every layout equals the hand-merged model, the diffusers / PEFT layout equals
diffusers' own adapter loading, strengths and removal leave the base weights exactly as they were, and
files for other models are refused with what they look like."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spacetime.checkpoint import CheckpointError
from spacetime.dit import load_dit
from spacetime.lora import LoraError, load_lora

from numerics import relative_error
from wan_reference import I2V, T2V, diffusers_reference, random_wan_state_dict, write

RANK = 4
# Wan name -> diffusers name, for the layers the test LoRAs touch (the diffusers / PEFT layout).
DIFFUSERS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}  # fmt: skip
BLOCK_LAYERS = tuple(DIFFUSERS)
TOP_LAYERS = ("patch_embedding", "text_embedding.0", "time_embedding.2", "time_projection.1", "head.head")
DIFFERENCES = (  # (parameter, full name in the file): norms, biases, the modulation and the head
    ("blocks.0.norm3.weight", "blocks.0.norm3.diff"), ("blocks.0.norm3.bias", "blocks.0.norm3.diff_b"),
    ("blocks.1.self_attn.q.bias", "blocks.1.self_attn.q.diff_b"),
    ("blocks.1.self_attn.norm_q.weight", "blocks.1.self_attn.norm_q.diff"),
    ("blocks.0.modulation", "blocks.0.modulation.diff"), ("head.modulation", "head.modulation.diff"),
)  # fmt: skip


def factors(config, layers, seed=0, alpha=True):
    """{layer: (down, up, alpha)} random low-rank factors at a scale that moves the output visibly."""
    state = random_wan_state_dict(config)
    generator = torch.Generator().manual_seed(seed)
    found = {}
    for name in layers:
        weight = state[f"{name}.weight"]
        down = torch.randn(RANK, *weight.shape[1:], generator=generator) * 0.3 / weight[0].numel() ** 0.5
        up = torch.randn(weight.shape[0], RANK, *(1,) * (weight.ndim - 2), generator=generator) * 0.3
        found[name] = (down, up, torch.tensor(2.0) if alpha else None)
    return found


def differences(config, seed=1):
    state = random_wan_state_dict(config)
    generator = torch.Generator().manual_seed(seed)
    return {key: (parameter, torch.randn(state[parameter].shape, generator=generator) * 0.05)
            for parameter, key in DIFFERENCES}  # fmt: skip


def layers_of(config):
    return [f"blocks.{i}.{layer}" for i in range(config.num_layers) for layer in BLOCK_LAYERS
            if config.image_dim or "img" not in layer] + list(TOP_LAYERS)  # fmt: skip


def merged(state, low_rank, diffs, strength):
    """The base weights with the LoRA merged by hand: W + strength·alpha/rank·up·down, W + strength·diff."""
    state = {k: v.clone() for k, v in state.items()}
    for name, (down, up, alpha) in low_rank.items():
        weight = state[f"{name}.weight"]
        scale = (float(alpha) if alpha is not None else RANK) / RANK
        state[f"{name}.weight"] = weight + strength * scale * (up.flatten(1) @ down.flatten(1)).reshape(
            weight.shape
        )
    for parameter, diff in diffs.values():
        state[parameter] = state[parameter] + strength * diff
    return state


def original_layout(low_rank, diffs, spelling=("lora_down", "lora_up"), prefix="diffusion_model."):
    file = {}
    for name, (down, up, alpha) in low_rank.items():
        file[f"{prefix}{name}.{spelling[0]}.weight"] = down
        file[f"{prefix}{name}.{spelling[1]}.weight"] = up
        if alpha is not None:
            file[f"{prefix}{name}.alpha"] = alpha
    file.update({f"{prefix}{key}": diff for key, (_, diff) in diffs.items()})
    return file


def kohya_layout(low_rank):
    file = {}
    for name, (down, up, alpha) in low_rank.items():
        stem = "lora_unet_" + name.replace(".", "_")
        file |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": alpha}
    return file


def diffusers_name(name: str) -> str:
    if name.startswith("blocks."):
        _, index, layer = name.split(".", 2)
        return f"blocks.{index}.{DIFFUSERS[layer]}"
    return {"head.head": "proj_out", "time_projection.1": "condition_embedder.time_proj",
            "text_embedding.0": "condition_embedder.text_embedder.linear_1",
            "time_embedding.2": "condition_embedder.time_embedder.linear_2"}[name]  # fmt: skip


def peft_layout(low_rank, prefix="transformer."):
    file = {}
    for name, (down, up, _) in low_rank.items():
        file[f"{prefix}{diffusers_name(name)}.lora_A.weight"] = down
        file[f"{prefix}{diffusers_name(name)}.lora_B.weight"] = up
    return file


def inputs(config, seed=5):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(2, config.in_channels, 2, 4, 6, generator=generator)
    context = torch.randn(2, 9, config.text_dim, generator=generator)
    image = torch.randn(2, 5, config.image_dim, generator=generator) if config.image_dim else None
    return latent, torch.tensor([900.0, 300.0]), context, image


def run(model, config):
    latent, timestep, context, image = inputs(config)
    with torch.no_grad():
        return model(latent, timestep, context, image)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    state = random_wan_state_dict(T2V)
    return state, load_dit(write(state, folder / "base.safetensors")), folder


@pytest.mark.parametrize(
    "layout",
    ["original", "lora_A/lora_B, no alpha", "no prefix", "kohya", "peft", "peft without prefix"],
)
def test_every_layout_equals_the_hand_merged_model(base, layout):
    state, model, folder = base
    layers = [name for name in layers_of(T2V) if layout.startswith("peft") is False or "patch" not in name]
    low_rank = factors(
        T2V, layers, alpha=layout not in ("lora_A/lora_B, no alpha",) and not layout.startswith("peft")
    )
    diffs = differences(T2V) if not layout.startswith(("kohya", "peft")) else {}
    file = {
        "original": lambda: original_layout(low_rank, diffs),
        "lora_A/lora_B, no alpha": lambda: original_layout(low_rank, diffs, ("lora_A", "lora_B")),
        "no prefix": lambda: original_layout(low_rank, diffs, prefix=""),
        "kohya": lambda: kohya_layout(low_rank),
        "peft": lambda: peft_layout(low_rank),
        "peft without prefix": lambda: peft_layout(low_rank, prefix=""),
    }[layout]()
    path = folder / f"{layout.replace('/', '_').replace(' ', '_')}.safetensors"
    save_file(file, str(path))
    lora = load_lora(path, model)
    assert lora.parameters == len(low_rank) + len(diffs)
    strength = 0.8
    expected = run(
        load_dit(write(merged(state, low_rank, diffs, strength), folder / "merged.safetensors")), T2V
    )
    ours = run(model.with_lora(lora, strength), T2V)
    plain = run(model, T2V)
    assert relative_error(ours, expected) <= 1e-6
    assert relative_error(plain, expected) > 1e-3  # the LoRA changes the output


def test_an_image_to_video_lora_reaches_the_image_cross_attention(tmp_path: Path):
    state = random_wan_state_dict(I2V)
    model = load_dit(write(state, tmp_path / "i2v.safetensors"))
    low_rank = factors(
        I2V, [f"blocks.{i}.cross_attn.{n}" for i in range(2) for n in ("k_img", "v_img")] + ["img_emb.proj.1"]
    )
    save_file(original_layout(low_rank, {}), str(tmp_path / "i2v_lora.safetensors"))
    lora = load_lora(tmp_path / "i2v_lora.safetensors", model)
    expected = run(load_dit(write(merged(state, low_rank, {}, 1.0), tmp_path / "merged.safetensors")), I2V)
    assert relative_error(run(model.with_lora(lora, 1.0), I2V), expected) <= 1e-6


def test_the_peft_layout_equals_diffusers_loading_the_same_adapter(base):
    pytest.importorskip("peft")
    from diffusers.loaders import WanLoraLoaderMixin

    state, model, folder = base
    low_rank = factors(
        T2V, [name for name in layers_of(T2V) if name.startswith("blocks.")], seed=7, alpha=False
    )
    file = peft_layout(low_rank)
    save_file(file, str(folder / "peft.safetensors"))
    strength = 0.6
    reference = diffusers_reference(T2V, state)
    reference.load_lora_adapter(
        WanLoraLoaderMixin.lora_state_dict(dict(file)), adapter_name="test", prefix="transformer"
    )
    reference.set_adapters(["test"], weights=[strength])
    latent, timestep, context, _ = inputs(T2V)
    padded = torch.nn.functional.pad(context, (0, 0, 0, 512 - context.shape[1]))
    with torch.no_grad():
        expected = reference(latent, timestep, padded, return_dict=False)[0]
    ours = run(model.with_lora(load_lora(folder / "peft.safetensors", model), strength), T2V)
    assert relative_error(ours, expected) <= 1e-5


def test_strengths_and_removal_leave_the_base_weights_exactly_as_they_were(base):
    _, model, folder = base
    low_rank, diffs = factors(T2V, layers_of(T2V)), differences(T2V)
    save_file(original_layout(low_rank, diffs), str(folder / "restore.safetensors"))
    lora = load_lora(folder / "restore.safetensors", model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = run(model, T2V)
    outputs = [run(model.with_lora(lora, s), T2V) for s in (1.0, 0.5, 1.0, -0.7)]
    stacked = run(model.with_lora(lora, 0.5).with_lora(lora, 0.5), T2V)  # two at 0.5: one at 1.0
    assert torch.equal(outputs[0], outputs[2])  # the same strength again: the same output, no drift
    assert relative_error(stacked, outputs[0]) <= 1e-6
    assert torch.equal(run(model.with_lora(lora, 0.0), T2V), plain)  # strength 0 is the model itself
    assert torch.equal(run(model, T2V), plain)  # the base handle never saw the LoRA
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert not any("spacetime_patches" in m.__dict__ for m in model.modules())


def test_lora_on_fp8_weights_adds_the_difference_in_float32(tmp_path: Path):
    state = random_wan_state_dict(T2V)
    model = load_dit(write(state, tmp_path / "base.safetensors"), weight_dtype=torch.float8_e4m3fn)
    low_rank = factors(T2V, ["blocks.0.self_attn.q"])
    save_file(original_layout(low_rank, {}), str(tmp_path / "fp8.safetensors"))
    lora = load_lora(tmp_path / "fp8.safetensors", model)
    stored = model.blocks[0].self_attn.q.weight.clone()
    # What the layer computes with: the fp8 weight upcast, plus the LoRA's difference, in float32.
    down, up, alpha = low_rank["blocks.0.self_attn.q"]
    expected = stored.float() + float(alpha) / RANK * (up @ down)
    x = torch.eye(T2V.dim)
    handle = model.with_lora(lora, 1.0)
    from spacetime.lora import active

    with active(handle, handle.loras), torch.no_grad():
        seen = handle.blocks[0].self_attn.q(x) - model.blocks[0].self_attn.q.bias
    torch.testing.assert_close(seen.T, expected, rtol=0, atol=1e-6)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(model.blocks[0].self_attn.q.weight.view(torch.uint8), stored.view(torch.uint8))


def save(tmp_path: Path, name: str, tensors: dict) -> Path:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_a_lora_for_another_model_is_refused_with_what_it_looks_like(base, tmp_path: Path):
    _, model, _ = base
    flux = save(tmp_path, "flux.safetensors", {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8),
                                                "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(8, 4)})  # fmt: skip
    with pytest.raises(LoraError, match=r"none of its 2 tensors fits .* looks made for Flux"):
        load_lora(flux, model)
    sdxl = save(
        tmp_path,
        "sdxl.safetensors",
        {"lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(1.0)},
    )
    with pytest.raises(LoraError, match=r"Stable Diffusion 1\.5 / SDXL"):
        load_lora(sdxl, model)


def test_a_lora_for_another_wan_size_names_the_shapes(base, tmp_path: Path):
    _, model, _ = base
    wide = save(tmp_path, "wide.safetensors", {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 1536),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(1536, 4),
    })  # fmt: skip
    with pytest.raises(
        LoraError, match=r"for blocks.0.self_attn.q.weight it holds up \(1536, 4\).*is \(256, 256\).*1.3B"
    ):
        load_lora(wide, model)


def test_keys_that_fit_nothing_are_counted_in_a_warning(base, tmp_path: Path, caplog):
    _, model, _ = base
    low_rank = factors(T2V, ["blocks.0.self_attn.q"])
    file = original_layout(low_rank, {}) | {
        "diffusion_model.blocks.9.self_attn.q.lora_down.weight": torch.zeros(4, 256)
    }
    with caplog.at_level(logging.WARNING):
        lora = load_lora(save(tmp_path, "extra.safetensors", file), model)
    assert lora.parameters == 1
    assert (
        "3 of 4 tensors fit" in caplog.text and "1 fit nothing" in caplog.text and "blocks.9" in caplog.text
    )


def test_lycoris_and_pickles_are_refused(base, tmp_path: Path):
    _, model, _ = base
    loha = save(tmp_path, "loha.safetensors", {"lora_unet_blocks_0_self_attn_q.hada_w1_a": torch.zeros(4, 4)})
    with pytest.raises(LoraError, match="LyCORIS LoHa"):
        load_lora(loha, model)
    pickle = tmp_path / "lora.pt"
    pickle.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="pickle"):
        load_lora(pickle, model)
    half = save(
        tmp_path,
        "half.safetensors",
        {"diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(256, 4)},
    )
    with pytest.raises(LoraError, match="only half a LoRA pair"):
        load_lora(half, model)


def test_the_lora_loader_node_chains_on_the_models_folder(base, tmp_path: Path, monkeypatch):
    from spacetime.nodes.lora import SpacetimeLoRALoader

    state, model, _ = base
    folder = tmp_path / "models" / "loras"
    folder.mkdir(parents=True)
    first, second = factors(T2V, ["blocks.0.ffn.0"], seed=2), factors(T2V, ["blocks.1.self_attn.o"], seed=3)
    save_file(original_layout(first, {}), str(folder / "style.safetensors"))
    save_file(kohya_layout(second), str(folder / "camera.safetensors"))
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(tmp_path / "models"))
    listed = SpacetimeLoRALoader.INPUT_TYPES()["required"]["lora_name"][0]
    assert {"camera.safetensors", "style.safetensors"} <= set(listed)
    (styled,) = SpacetimeLoRALoader().load(model, "style.safetensors", 0.7)
    (both,) = SpacetimeLoRALoader().load(styled, "camera.safetensors", 1.3)
    expected = merged(merged(state, first, {}, 0.7), second, {}, 1.3)
    assert (
        relative_error(run(both, T2V), run(load_dit(write(expected, tmp_path / "m.safetensors")), T2V))
        <= 1e-6
    )
    assert (
        [strength for _, strength in both.loras] == [0.7, 1.3]
        and model.loras == ()
        and len(styled.loras) == 1
    )


def test_generate_takes_loras_from_the_command_line(tmp_path: Path, monkeypatch):
    """Tiny World with a LoRA at strength 0 makes exactly the image it makes without; at strength 1 another."""
    from PIL import Image

    from spacetime.cli import _lora_argument, main
    from spacetime.pipeline import load_tiny_world

    assert _lora_argument("a/b.safetensors:0.5") == ("a/b.safetensors", 0.5)
    assert _lora_argument("C:/x/b.safetensors") == ("C:/x/b.safetensors", 1.0)
    dit = load_tiny_world()[0]
    layer = dit.blocks[0].ffn[0]
    generator = torch.Generator().manual_seed(0)
    file = {"lora_unet_blocks_0_ffn_0.lora_down.weight": torch.randn(RANK, layer.in_features, generator=generator),
            "lora_unet_blocks_0_ffn_0.lora_up.weight": torch.randn(layer.out_features, RANK, generator=generator),
            "lora_unet_blocks_0_ffn_0.alpha": torch.tensor(float(RANK))}  # fmt: skip
    save_file(file, str(tmp_path / "tiny.safetensors"))
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "out"))
    common = ["generate", "a red circle", "--frames", "1", "--width", "64", "--height", "64", "--steps", "3",
              "--format", "image/png-sequence"]  # fmt: skip
    images = []
    for extra, prefix in (([], "none"), (["--lora", f"{tmp_path / 'tiny.safetensors'}:0"], "zero"),
                          (["--lora", str(tmp_path / "tiny.safetensors")], "one")):  # fmt: skip
        assert main([*common, "--prefix", prefix, *extra]) == 0
        (png,) = (tmp_path / "out").glob(f"{prefix}*/*.png")
        images.append(torch.tensor(np.array(Image.open(png)), dtype=torch.float32))
    assert torch.equal(images[0], images[1])
    assert (images[0] - images[2]).abs().mean() > 1.0
    assert main([*common, "--low-noise-lora", str(tmp_path / "tiny.safetensors")]) == 2


def test_a_lora_on_scaled_fp8_equals_the_hand_merged_dequantised_model(tmp_path: Path):
    """ComfyUI's scaled fp8: the weight dequantised with its scale, then the LoRA added (no drift, no copy)."""
    from numerics import scaled_fp8

    state = random_wan_state_dict(T2V, seed=6)
    file_tensors, dequantised = scaled_fp8(
        state, lambda key, value: key.startswith("blocks.") and value.ndim == 2
    )
    model = load_dit(write(file_tensors, tmp_path / "scaled.safetensors"), compute_dtype=torch.float32)
    low_rank = factors(T2V, [f"blocks.{i}.{n}" for i in range(2) for n in ("self_attn.q", "ffn.2")], seed=4)
    save_file(original_layout(low_rank, {}), str(tmp_path / "lora.safetensors"))
    handle = model.with_lora(load_lora(tmp_path / "lora.safetensors", model), 1.0)
    expected = run(load_dit(write(merged(dequantised, low_rank, {}, 1.0), tmp_path / "m.safetensors")), T2V)
    assert relative_error(run(handle, T2V), expected) <= 1e-6
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
