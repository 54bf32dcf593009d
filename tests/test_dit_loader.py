"""The DiT loader: every file form people have, the configuration read from shapes, and a clear
error for every wrong file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spacetime.checkpoint import CheckpointError
from spacetime.dit import PRESETS, WanDiT, load_dit
from spacetime.dit.config import config_from_shapes
from spacetime.latent_formats import WAN21

from numerics import relative_error
from wan_reference import FLF2V, I2V, I2V_22, T2V, random_wan_state_dict, write


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_wan_state_dict(T2V, seed=11)


@pytest.fixture(scope="module")
def probe():
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 16, 2, 4, 4, generator=generator),
        torch.tensor([400.0]),
        torch.randn(1, 5, T2V.text_dim, generator=generator),
    )


# The same weights read from differently laid-out files may differ in the last bits (memory
# alignment picks CPU kernels), so "the same model" means agreement to float32 precision.
SAME = 1e-6


def run(model, probe) -> torch.Tensor:
    with torch.no_grad():
        return model(*probe)


@pytest.fixture(scope="module")
def reference_output(state, probe, tmp_path_factory) -> torch.Tensor:
    return run(load_dit(write(state, tmp_path_factory.mktemp("ref") / "wan.safetensors")), probe)


@pytest.mark.parametrize("name,preset", list(PRESETS.items()))
def test_released_configs_are_recognised_from_shapes(name, preset):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanDiT(preset).state_dict().items()}
    config = config_from_shapes(shapes)
    assert config.name == name
    assert (config.dim, config.num_layers, config.num_heads, config.in_channels) == (
        preset.dim, preset.num_layers, preset.dim // 128, preset.in_channels,
    )  # fmt: skip


def test_config_comes_from_shapes_not_the_file_name(state, tmp_path: Path):
    model = load_dit(write(state, tmp_path / "wan2.1_t2v_14B_fp16.safetensors"))
    assert (model.config.dim, model.config.num_layers, model.config.num_heads) == (256, 2, 2)
    assert model.config.name == "Wan-architecture DiT"


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_with_or_without_comfyui_prefix(prefix, state, probe, reference_output, tmp_path: Path):
    model = load_dit(write(state, tmp_path / "wan.safetensors", prefix=prefix))
    assert relative_error(run(model, probe), reference_output) < SAME


def test_sharded_with_index(state, probe, reference_output, tmp_path: Path):
    keys = sorted(state)
    halves = {"wan-00001-of-00002.safetensors": keys[::2], "wan-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for file, part in halves.items():
        save_file({k: state[k] for k in part}, str(tmp_path / file))
        weight_map |= {k: file for k in part}
    (tmp_path / "wan.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for chosen in ("wan.safetensors.index.json", "wan-00002-of-00002.safetensors"):  # the index or any shard
        assert relative_error(run(load_dit(tmp_path / chosen), probe), reference_output) < SAME


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_files(dtype, tolerance, state, probe, reference_output, tmp_path: Path):
    path = write({k: v.to(dtype) for k, v in state.items()}, tmp_path / "wan_half.safetensors")
    model = load_dit(path, compute_dtype=torch.float32)
    assert model.blocks[0].ffn[0].weight.dtype == dtype  # kept as stored
    assert relative_error(run(model, probe), reference_output) < tolerance


def test_fp8_storage_from_a_full_precision_file(state, probe, reference_output, tmp_path: Path):
    model = load_dit(write(state, tmp_path / "wan.safetensors"), weight_dtype=torch.float8_e4m3fn)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert model.blocks[0].modulation.dtype == torch.float32  # small tensors keep their precision
    assert model.blocks[0].norm3.weight.dtype == torch.float32
    assert 1e-4 < relative_error(run(model, probe), reference_output) < 0.1


def test_plain_fp8_file_stays_fp8(state, probe, reference_output, tmp_path: Path):
    stored = {
        k: (v.to(torch.float8_e4m3fn) if k.startswith("blocks.") and v.ndim == 2 else v)
        for k, v in state.items()
    }
    model = load_dit(write(stored, tmp_path / "wan_fp8.safetensors"))
    assert model.blocks[1].ffn[2].weight.dtype == torch.float8_e4m3fn
    assert relative_error(run(model, probe), reference_output) < 0.1


def test_compute_dtype_bf16(state, probe, reference_output, tmp_path: Path):
    model = load_dit(write(state, tmp_path / "wan.safetensors"), compute_dtype=torch.bfloat16)
    output = run(model, probe)
    assert output.dtype == torch.float32
    assert 1e-5 < relative_error(output, reference_output) < 5e-2


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickles_are_refused_with_a_safe_conversion(suffix, tmp_path: Path):
    path = tmp_path / f"wan{suffix}"
    path.write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match=r"(?s)pickle checkpoint .* python -m spacetime convert"):
        load_dit(path)


def test_truncated_file(state, tmp_path: Path):
    path = write(state, tmp_path / "wan.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dit(path)


def test_garbage_file(tmp_path: Path):
    path = tmp_path / "wan.safetensors"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_dit(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dit(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize(
    "keys,looks_like",
    [
        ({"decoder.middle.0.residual.0.gamma": [1], "encoder.conv1.weight": [1]}, "a Wan VAE"),
        (
            {"encoder.block.0.layer.0.SelfAttention.q.weight": [1], "spiece_model": [1]},
            "T5/UMT5 text encoder",
        ),
        ({"input_blocks.0.0.weight": [1]}, "Stable Diffusion UNet"),
        ({"condition_embedder.time_embedder.linear_1.weight": [1]}, "diffusers format"),
        ({"something.else": [1]}, "unrecognised model"),
    ],
)
def test_files_of_other_models_say_what_they_are(keys, looks_like, tmp_path: Path):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(v) for k, v in keys.items()}, str(path))
    with pytest.raises(
        CheckpointError, match=f"does not look like a Wan diffusion model: it looks like .*{looks_like}"
    ):
        load_dit(path)


def test_missing_and_unexpected_keys_are_named(state, tmp_path: Path):
    broken = dict(state)
    del broken["blocks.1.cross_attn.o.weight"]
    broken["blocks.1.extra.weight"] = torch.zeros(2)
    with pytest.raises(
        CheckpointError, match=r"1 missing \(first: blocks.1.cross_attn.o.weight\).*1 unexpected"
    ):
        load_dit(write(broken, tmp_path / "wan.safetensors"))


def test_image_to_video_checkpoints_are_read_from_their_tensors(tmp_path: Path):
    """36 input channels: Wan's image-to-video family (Wan 2.1 VAE latents, known frames taken through the
    concat condition); img_emb gives the CLIP feature width, emb_pos FLF2V's image tokens."""
    for config in (I2V_22, I2V, FLF2V):
        model = load_dit(write(random_wan_state_dict(config), tmp_path / "i2v.safetensors"))
        assert model.config.concat_condition and model.latent_format is WAN21 and not model.config.clean_pins
        assert (model.config.image_dim, model.config.image_tokens) == (config.image_dim, config.image_tokens)
    assert not load_dit(
        write(random_wan_state_dict(T2V), tmp_path / "t2v.safetensors")
    ).config.concat_condition


def test_a_half_image_to_video_checkpoint_is_refused_clearly(tmp_path: Path):
    state = random_wan_state_dict(I2V)
    without_keys = {k: v for k, v in state.items() if ".k_img." not in k}
    with pytest.raises(CheckpointError, match=r"an image projection \(img_emb\) but no image key/value pair"):
        load_dit(write(without_keys, tmp_path / "wan_i2v.safetensors"))


def test_latent_of_the_wrong_vae_is_refused(state, tmp_path: Path):
    model = load_dit(write(state, tmp_path / "wan.safetensors"))
    with pytest.raises(ValueError, match=r"\(a Wan 2.2 VAE latent\) does not fit .* expects B×16×T×H×W"):
        model(torch.zeros(1, 48, 2, 4, 4), torch.tensor([1.0]), torch.zeros(1, 5, T2V.text_dim))


@pytest.mark.parametrize(
    "timestep,context,message",
    [
        (torch.tensor([1.0, 2.0]), torch.zeros(1, 5, 96), r"timestep of shape \(2,\)"),
        (torch.tensor([1.0]), torch.zeros(1, 5, 32), "text context of shape"),
    ],
)
def test_bad_forward_inputs(timestep, context, message, state, tmp_path: Path):
    model = load_dit(write(state, tmp_path / "wan.safetensors"))
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 16, 2, 4, 4), timestep, context)


def test_token_entry_point_matches_the_latent_one(state, probe, reference_output, tmp_path: Path):
    from spacetime.dit import patchify, unpatchify

    model = load_dit(write(state, tmp_path / "wan.safetensors"))
    latent, timestep, context = probe
    tokens, grid = patchify(latent, model.config.patch_size)
    with torch.no_grad():
        velocity = model.forward_tokens(tokens, grid, timestep, context)
    assert relative_error(unpatchify(velocity, grid, model.config.patch_size), reference_output) < SAME


def test_an_incomplete_wan_file_says_so(tmp_path: Path):
    path = tmp_path / "wan_partial.safetensors"
    save_file(
        {"head.modulation": torch.zeros(1, 2, 8), "patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2)},
        str(path),
    )
    with pytest.raises(CheckpointError, match="incomplete Wan diffusion model"):
        load_dit(path)


def test_metadata_sets_head_width_and_clean_pins(tmp_path: Path):
    config = replace(T2V, head_dim=32, clean_pins=True)
    reference = WanDiT(config).eval()
    reference.load_state_dict(random_wan_state_dict(config, seed=2))
    path = tmp_path / "tiny.safetensors"
    metadata = {"spacetime.head_dim": "32", "spacetime.clean_pins": "true"}
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path), metadata=metadata)
    model = load_dit(path)
    assert model.config.num_heads == 8 and model.config.clean_pins
    latent, context = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 5, 96)
    with torch.no_grad():
        expected = reference(latent, torch.tensor([500.0]), context)
        torch.testing.assert_close(model(latent, torch.tensor([500.0]), context), expected)
    save_file(reference.state_dict(), str(path), metadata={"spacetime.head_dim": "wide"})
    with pytest.raises(
        CheckpointError, match=r"unusable metadata spacetime.head_dim='wide': expected a whole"
    ):
        load_dit(path)


def test_text_longer_than_the_model_reads_is_cut_with_a_warning_only_when_it_loses_text(caplog):
    config = replace(T2V, text_len=8)
    model = WanDiT(config).eval()
    model.load_state_dict(random_wan_state_dict(config, seed=3))
    latent, context = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 5, 96)
    padded = torch.nn.functional.pad(context, (0, 0, 0, 20))  # zeros after the prompt, as encoders give
    with torch.no_grad():
        expected = model(latent, torch.tensor([300.0]), context)
        torch.testing.assert_close(model(latent, torch.tensor([300.0]), padded), expected, rtol=0, atol=0)
        assert "longer than" not in caplog.text
        model(latent, torch.tensor([300.0]), torch.randn(1, 12, 96))
    assert "longer than the 8 text tokens" in caplog.text
