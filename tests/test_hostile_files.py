"""Hostile and damaged model files, and the diagnoses around loading them (issue 35; the ids are the
reliability report's rows): every file is refused at once, before anything is built from what it names,
with a message that says what was found; NaN weights are called NaN weights as they load; a device this
machine lacks is not blamed on the file; `convert` refuses what it cannot convert without a traceback and
never repeats torch's advice to let a file's code run; loader nodes read nothing outside the model folders."""

from __future__ import annotations

import json
import pickle
import re
import signal
import sys
import types
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spacetime import cli, host
from spacetime.checkpoint import CheckpointError, convert_pickle_to_safetensors, read_tensors
from spacetime.dit import load_dit
from spacetime.dit import loader as dit_loader
from spacetime.image_encoders import load_image_encoder
from spacetime.image_encoders.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from spacetime.image_encoders.loader import config_from_shapes as clip_config
from spacetime.lora import load_lora
from spacetime.nodes import NODE_CLASS_MAPPINGS as NODES
from spacetime.text_encoders.loader import config_from_shapes as umt5_config
from spacetime.text_encoders.umt5 import UMT5Config, UMT5Encoder
from spacetime.vae import load_vae
from spacetime.vae import loader as vae_loader
from spacetime.vae.wan21 import Wan21VAE
from spacetime.vae.wan22 import Wan22VAE

from tiny_models import random_lora
from wan_reference import T2V, random_wan_state_dict, write
from wan_vae_reference import TINY_21, TINY_22, random_vae_state_dict

TINY_WORLD_DIT = Path(__file__).resolve().parent.parent / "tiny_world" / "tiny_world_dit.safetensors"


@pytest.fixture(autouse=True)
def refused_at_once():
    """A file must be refused at once: a loader that builds what a crafted file names fails here instead
    of running for minutes (the 200000-block DiT of M41 grew by 17 MB/s)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def too_slow(*_):
        raise TimeoutError("still loading after 60 s: something was built from what the file names")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_wan_state_dict(T2V, seed=3)


def nothing_built(monkeypatch, module) -> None:
    """Fail the test if `module`'s loader builds a model or reads tensors before refusing the file."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was built or its tensors read before the file was refused")

    for name in ("WanDiT", "Wan21VAE", "Wan22VAE", "assign_checkpoint"):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, must_not_run)


def write_zeros(shapes: dict[str, tuple[int, ...]], folder: Path) -> Path:
    save_file({k: torch.zeros(v) for k, v in shapes.items()}, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def shapes_of(model_class, config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}


# The DiT: metadata, block numbers and sizes -------------------------------------------------------


@pytest.mark.parametrize(
    "metadata,message",
    [
        ({"spacetime.head_dim": "0"}, r"head_dim=0 is outside what Wan-architecture .* models use \(6 to 1024\)"),  # M37
        ({"spacetime.text_len": "1000000000"}, r"text_len=1000000000 is outside .* \(1 to 4096\)"),  # M39
        ({"spacetime.text_len": "-5"}, r"unusable metadata spacetime.text_len='-5': expected a whole number"),  # M40
        ({"spacetime.head_dim": "2"}, r"head_dim=2 is outside"),
        ({"spacetime.head_dim": "96"}, r"dim=256 must be a multiple of head_dim=96"),
        ({"spacetime.head_dim": "²"}, r"unusable metadata spacetime.head_dim='²'"),
        ({"spacetime.text_len": "9" * 5000}, r"unusable metadata spacetime.text_len='9999.*\.\.\.'"),
        ({"spacetime.text_len": "0"}, r"text_len=0 is outside"),
        ({"spacetime.clean_pins": "yes"}, r"unusable metadata spacetime.clean_pins='yes': expected true or false"),
    ],
)  # fmt: skip
def test_dit_metadata_is_checked_before_anything_is_built(metadata, message, state, tmp_path, monkeypatch):
    path = tmp_path / "dit.safetensors"
    save_file(state, str(path), metadata=metadata)
    nothing_built(monkeypatch, dit_loader)
    with pytest.raises(CheckpointError, match=f"^dit.safetensors:? .*{message}"):
        load_dit(path)


def test_report_files_made_from_tiny_world(tmp_path, monkeypatch):
    """mkfiles.py's crafted DiTs: Tiny World's own tensors with head_dim 0 (M37), text_len 1e9 (M39) and
    -5 (M40), and one 4-byte tensor named block 200000 (M41), which once built 200001 blocks."""
    tensors = load_file(TINY_WORLD_DIT)
    metadata = {"spacetime.text_len": "64", "spacetime.clean_pins": "true", "spacetime.head_dim": "64"}
    crafted = {
        "headdim0": (tensors, metadata | {"spacetime.head_dim": "0"}, "head_dim=0 is outside"),
        "textlen_huge": (tensors, metadata | {"spacetime.text_len": "1000000000"}, "text_len=1000000000"),
        "textlen_neg": (tensors, metadata | {"spacetime.text_len": "-5"}, "spacetime.text_len='-5'"),
        "200k_layers": (
            tensors | {"blocks.200000.norm3.weight": torch.zeros(1)},
            metadata,
            "transformer blocks numbered up to 200000; the models this pack reads have at most 200",
        ),
    }
    nothing_built(monkeypatch, dit_loader)
    for name, (contents, meta, message) in crafted.items():
        path = tmp_path / f"dit_{name}.safetensors"
        save_file(contents, str(path), metadata=meta)
        with pytest.raises(CheckpointError, match=message):
            load_dit(path)


@pytest.mark.parametrize(
    "renamed,message",
    [
        ("blocks.200000.", "numbered up to 200000; the models this pack reads have at most 200"),
        ("blocks." + "7" * 5000 + ".", r"numbered up to 77777777777777777777\.\.\. \(5000 digits\)"),
        ("blocks.2.", "transformer blocks up to 2 but none numbered 1: the file is damaged"),
    ],
    ids=["200000", "5000-digits", "gap"],
)
def test_dit_block_numbers_must_run_from_zero_without_a_gap(renamed, message, state, tmp_path, monkeypatch):
    moved = {k.replace("blocks.1.", renamed): v for k, v in state.items()}
    nothing_built(monkeypatch, dit_loader)
    with pytest.raises(CheckpointError, match=message):
        load_dit(write(moved, tmp_path / "dit.safetensors"))


@pytest.mark.parametrize(
    "key,empty,message",
    [
        ("text_embedding.0.weight", (0, 10**6), r"text_dim=1000000 is outside .* \(1 to 16384\)"),
        ("blocks.0.ffn.0.weight", (10**7, 0), r"ffn_dim=10000000 is outside"),
        ("patch_embedding.weight", (256, 16, 1, 2, 0), r"patch_size=\(1, 2, 0\) is outside"),
        ("head.head.weight", (10**6, 0), r"out_channels=250000 is outside"),
        ("patch_embedding.weight", (256,), r"incomplete Wan diffusion model"),
    ],
)
def test_dit_sizes_beyond_the_family_are_refused(key, empty, message, state, tmp_path, monkeypatch):
    """Tensors with no elements can claim any width without any data: the widths are bounded."""
    nothing_built(monkeypatch, dit_loader)
    crafted = state | {key: torch.zeros(empty)}
    with pytest.raises(CheckpointError, match=message):
        load_dit(write(crafted, tmp_path / "dit.safetensors"))


def test_a_folder_named_like_a_model_file_is_called_a_folder(tmp_path):  # M29
    (tmp_path / "dit.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"dit.safetensors is a folder, not a model file"):
        load_dit(tmp_path / "dit.safetensors")


@pytest.mark.parametrize("form", ["zip", "legacy", "pickle"])
def test_a_pickle_named_safetensors_is_called_a_pickle(form, tmp_path):  # M01
    marker = tmp_path / "pwned"
    path = hostile(form, tmp_path / "evil.safetensors", marker)
    rename = r"Rename it to evil.pth, then convert it once, safely, with:\n  python -m spacetime convert .*evil.pth"
    with pytest.raises(CheckpointError, match=f"evil.safetensors is a pickle checkpoint .*{rename}"):
        load_dit(path)
    with pytest.raises(CheckpointError, match=rename):
        convert_pickle_to_safetensors(path, tmp_path / "converted.safetensors")
    assert not marker.exists()


def test_an_unreadable_file_is_not_called_corrupt(state, tmp_path, monkeypatch):
    from spacetime import checkpoint

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "safe_open", denied)
    with pytest.raises(
        CheckpointError, match=r"dit.safetensors cannot be read: permission denied"
    ) as refused:
        load_dit(write(state, tmp_path / "dit.safetensors"))
    assert "corrupt" not in str(refused.value)


def test_errors_quote_a_file_s_names_and_metadata_briefly(state, tmp_path):
    """The header may hold 100 MB of names and metadata: messages stay short."""
    path = tmp_path / "dit.safetensors"
    save_file(state, str(path), metadata={"spacetime.head_dim": "x" * 10**6, "other": "y" * 10**6})
    with pytest.raises(CheckpointError) as refused:
        load_dit(path)
    assert len(str(refused.value)) < 300 and "yyy" not in str(refused.value)
    save_file({"n" * 10**5: torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="does not look like a Wan diffusion model") as refused:
        load_dit(path)
    assert len(str(refused.value)) < 500


# The other loaders: the same bounds -------------------------------------------------------------------


def test_vae_sizes_and_block_counts_are_bounded(monkeypatch):
    nothing_built(monkeypatch, vae_loader)
    shapes = shapes_of(Wan21VAE, TINY_21)
    with pytest.raises(CheckpointError, match=r"dim=0 is outside what Wan VAE .* models use \(1 to 1024\)"):
        vae_loader.config_from_shapes(shapes | {"encoder.conv1.weight": (0, 3, 3, 3, 3)}, "vae.safetensors")
    resampling = [k for k in shapes if vae_loader._RESAMPLE_21.match(k)]
    crafted = {k: v for k, v in shapes.items() if k not in resampling}
    crafted["encoder.downsamples.100000.resample.1.weight"] = (8, 8, 3, 3)
    with pytest.raises(CheckpointError, match=r"num_res_blocks=100000 is outside"):
        vae_loader.config_from_shapes(crafted, "vae.safetensors")
    nested = shapes_of(Wan22VAE, TINY_22)
    many = {f"encoder.downsamples.0.downsamples.{i}.residual.0.gamma": (8, 1, 1, 1) for i in range(1000)}
    with pytest.raises(CheckpointError, match=r"num_res_blocks=1000 is outside"):
        vae_loader.config_from_shapes(nested | many, "vae.safetensors")
    with pytest.raises(CheckpointError, match=r"encoder.conv1.weight' has shape \(\): it is damaged"):
        vae_loader.config_from_shapes(nested | {"encoder.conv1.weight": ()}, "vae.safetensors")


def test_a_vae_stage_number_too_long_to_read_is_an_unexpected_tensor(tmp_path):
    long = f"encoder.downsamples.{'9' * 5000}.resample.1.weight"  # once a ValueError from int()
    shapes = shapes_of(Wan21VAE, TINY_21) | {long: (1,)}
    with pytest.raises(CheckpointError, match=r"does not match the Wan 2.1 VAE layout .* 1 unexpected"):
        load_vae(write_zeros(shapes, tmp_path))


def test_text_encoder_sizes_and_block_numbers_are_bounded():
    shapes = shapes_of(
        UMT5Encoder, UMT5Config(vocab_size=64, dim=32, ffn_dim=64, num_layers=2, num_heads=4, head_dim=8)
    )
    bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    with pytest.raises(CheckpointError, match=r"num_heads=0 is outside what UMT5"):  # was a ZeroDivisionError
        umt5_config(shapes | {bias: (32, 0)}, "umt5.safetensors")
    with pytest.raises(CheckpointError, match=r"its attention is 32 wide, which is not 3 heads"):
        umt5_config(shapes | {bias: (32, 3)}, "umt5.safetensors")
    with pytest.raises(CheckpointError, match=r"encoder blocks numbered up to 1000000; .* at most 128"):
        umt5_config(shapes | {"encoder.block.1000000.layer.0.layer_norm.weight": (32,)}, "umt5.safetensors")
    with pytest.raises(CheckpointError, match=r"vocab_size=2000000 is outside"):
        umt5_config(shapes | {"shared.weight": (2_000_000, 32)}, "umt5.safetensors")


TINY_CLIP = CLIPVisionConfig(width=64, num_layers=3, num_heads=4, mlp_dim=128, image_size=28, patch_size=14)


def test_clip_layer_numbers_and_sizes_are_bounded():
    shapes = shapes_of(CLIPVisionEncoder, TINY_CLIP)
    far = "vision_model.encoder.layers.1000000000000.mlp.fc1.weight"  # once a set of 10^12 numbers
    with pytest.raises(CheckpointError, match=r"encoder layers numbered up to 1000000000000; .* at most 128"):
        clip_config(shapes | {far: (128, 64)}, "clip.safetensors", 16)
    with pytest.raises(CheckpointError, match=r"positions=1000001 is outside"):
        clip_config(
            shapes | {"vision_model.embeddings.position_embedding.weight": (1_000_001, 64)},
            "clip.safetensors",
            16,
        )


@pytest.mark.parametrize("value", ["²", "0", "-16", "16.0"])
def test_clip_head_width_metadata_must_be_a_whole_number(value, tmp_path):
    path = tmp_path / "clip.safetensors"
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPVisionEncoder(TINY_CLIP).state_dict().items()}
    save_file(
        {k: torch.zeros(v) for k, v in shapes.items()}, str(path), metadata={"spacetime.head_dim": value}
    )
    message = "head_dim=0 is outside" if value == "0" else f"unusable metadata spacetime.head_dim='{value}'"
    with pytest.raises(CheckpointError, match=message):
        load_image_encoder(path)


def test_lora_factors_of_rank_zero_or_a_wide_alpha_are_refused(state, tmp_path):
    model = load_dit(write(state, tmp_path / "dit.safetensors"))
    lora = random_lora(T2V, seed=1)
    stem = "diffusion_model.blocks.0.self_attn.q"
    for crafted, message in (
        ({f"{stem}.lora_up.weight": torch.zeros(256, 0), f"{stem}.lora_down.weight": torch.zeros(0, 256)},
         r"blocks.0.self_attn.q.weight has factors up \(256, 0\) · down \(0, 256\), not a LoRA pair of rank 1"),
        ({f"{stem}.alpha": torch.ones(2)}, r"alpha of shape \(2,\); alpha is one number"),
    ):  # fmt: skip
        save_file(lora | crafted, str(tmp_path / "lora.safetensors"))
        with pytest.raises(CheckpointError, match=message):  # rank 0 was a ZeroDivisionError
            load_lora(tmp_path / "lora.safetensors", model)
    save_file(lora, str(tmp_path / "lora.safetensors"))
    with pytest.raises(ValueError, match=r"LoRA strength nan for lora.safetensors: give a number"):
        model.with_lora(load_lora(tmp_path / "lora.safetensors", model), float("nan"))


@pytest.mark.parametrize(
    "index,message",
    [
        (
            {"weight_map": {"a": "../outside.safetensors"}},
            r"names a shard '../outside.safetensors' that is not",
        ),
        ({"weight_map": {"a": "/etc/x.safetensors"}}, r"names a shard '/etc/x.safetensors' that is not"),
        ({"weight_map": ["a.safetensors"]}, r"is not a safetensors index \(no readable weight_map\)"),
        ({"weight_map": {"a": 5}}, r"names a shard '5' that is not a file name"),
    ],
)
def test_a_shard_index_names_files_beside_it_only(index, message, tmp_path):
    path = tmp_path / "dit.safetensors.index.json"
    path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=message):
        load_dit(path)


# NaN weights, named as they load (M46, M47, A06) --------------------------------------------------


def test_a_nan_weight_in_a_dit_is_named_when_it_loads(state, tmp_path):  # M47
    damaged = {k: v.clone() for k, v in state.items()}
    damaged["blocks.0.ffn.0.weight"][0, 0] = float("nan")
    with pytest.raises(
        CheckpointError,
        match=r"blocks.0.ffn.0.weight holds 1 NaN or infinite weights \(of 131,072\)\. No picture can come from "
        r"them: the file is damaged",
    ):
        load_dit(write(damaged, tmp_path / "dit.safetensors"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_nan_and_infinity_are_found_in_every_stored_dtype(dtype, state, tmp_path):
    damaged = {k: v.to(dtype) for k, v in state.items()}
    head = damaged["head.head.weight"].float()
    head[3, 5], head[7, 1] = float("nan"), float("inf") if dtype != torch.float8_e4m3fn else float("nan")
    damaged["head.head.weight"] = head.to(dtype)
    with pytest.raises(CheckpointError, match=r"head.head.weight holds 2 NaN or infinite weights"):
        load_dit(write(damaged, tmp_path / "dit.safetensors"))


def test_an_all_nan_vae_is_refused_when_it_loads(tmp_path):  # M46, A06
    vae = {k: torch.full_like(v, float("nan")) for k, v in random_vae_state_dict(TINY_21).items()}
    save_file(vae, str(tmp_path / "vae.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"vae.safetensors: \S+ holds [\d,]+ NaN or infinite weights"
    ) as refused:
        load_vae(tmp_path / "vae.safetensors")
    assert "fp32" not in str(refused.value)  # not the overflow advice: the file is damaged


def test_weights_that_overflow_the_chosen_dtype_say_so(state, tmp_path):
    large = {k: v.clone() for k, v in state.items()}
    large["blocks.1.ffn.2.weight"][0, 0] = 1e6  # fine in the file's fp32, infinite in fp16
    path = write(large, tmp_path / "dit.safetensors")
    assert load_dit(path).config.num_layers == 2
    with pytest.raises(
        CheckpointError,
        match=r"blocks.1.ffn.2.weight holds values beyond the range of torch.float16 \(1 of 131,072 became NaN or "
        r"infinite when cast from the file's torch.float32\)\. Keep the weights in a wider dtype",
    ):
        load_dit(path, weight_dtype=torch.float16)


# Devices are not blamed on files (S27, S28) ---------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_not_blamed_on_the_file(tmp_path):  # S27
    path = tmp_path / "vae.safetensors"
    save_file(random_vae_state_dict(TINY_21), str(path))
    for load in (lambda: load_vae(path, device="cuda"), lambda: read_tensors(path, device="cuda")):
        with pytest.raises(ValueError, match=r"device 'cuda': this machine has no cuda device") as refused:
            load()
        assert not isinstance(refused.value, CheckpointError) and "truncated" not in str(refused.value)


@pytest.mark.parametrize(
    "device,message",
    [
        ("bogus", r"device 'bogus' is not a device name: use cpu, cuda, cuda:1 \(a GPU by number\) or mps"),
        ("cpu:3", r"device 'cpu:3': the CPU is one device; use cpu"),
        ("cuda:-1", r"device 'cuda:-1' is not a device name"),
    ],
)
def test_device_names_are_checked(device, message, capsys):  # S28
    with pytest.raises(ValueError, match=message):
        host.usable_device(device)
    assert cli.main(["generate", "a red circle", "--device", device]) == 2  # bad usage
    assert "argument --device: " in capsys.readouterr().err


def test_usable_devices_pass():
    assert host.usable_device("cpu") == torch.device("cpu")
    assert host.usable_device(torch.device("meta")) == torch.device("meta")


# convert (M02-M05, M13, M14, M16-M18, F04) ------------------------------------------------------------


class Payload:
    """What a hostile pickle would run: here it leaves a marker file."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile(form: str, path: Path, marker: Path) -> Path:
    payload = Payload()
    payload.marker = marker
    if form == "zip":
        torch.save({"w": torch.zeros(2), "evil": payload}, path)
    elif form == "legacy":
        torch.save({"w": torch.zeros(2), "evil": payload}, path, _use_new_zipfile_serialization=False)
    elif form == "pickle":
        path.write_bytes(pickle.dumps({"w": 1, "evil": payload}, protocol=2))
    else:  # the payload is the whole file
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("form", ["zip", "legacy", "pickle", "top"])
def test_convert_refuses_code_without_repeating_torch_s_advice(form, tmp_path):  # M02-M05
    marker = tmp_path / "pwned"
    source = hostile(form, tmp_path / "evil.pth", marker)
    with pytest.raises(
        CheckpointError, match=r"evil.pth was refused: .* Nothing was written\. Details: "
    ) as refused:
        convert_pickle_to_safetensors(source, tmp_path / "evil.safetensors")
    message = str(refused.value)
    assert not any(advice in message for advice in ("weights_only", "trust", "allowlist", "safe_globals"))
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()


def test_convert_s_refusal_details_say_what_was_refused(tmp_path):
    source = hostile("zip", tmp_path / "evil.pth", tmp_path / "pwned")
    with pytest.raises(
        CheckpointError, match=r"Details: the file asks to run getattr, which a load of tensors"
    ):
        convert_pickle_to_safetensors(source, tmp_path / "evil.safetensors")


def test_convert_s_refusal_of_a_plain_pickle_is_its_one_line(tmp_path, capsys):  # M04
    """A plain pickle (protocol 4, pickle.dump's default) made torch warn about its protocol, printing a
    line of torch's source above the refusal as if it were a traceback."""
    payload = Payload()
    payload.marker = tmp_path / "pwned"
    source = tmp_path / "evil.pth"
    source.write_bytes(pickle.dumps({"w": 1, "evil": payload}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["convert", str(source), str(tmp_path / "evil.safetensors")]) == 2
    assert [str(warning.message) for warning in caught] == []
    err = capsys.readouterr().err
    assert err.startswith("error: evil.pth was refused: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]


def test_convert_checks_its_names_before_reading(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pth")
    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "empty.pth").touch()
    (tmp_path / "empty.safetensors").touch()
    cases = [
        ("model.pth", "missing/model.safetensors", FileNotFoundError, r"the folder .*missing does not exist: create it"),  # M13
        ("folder.pth", "out.safetensors", CheckpointError, r"folder.pth is a folder; give the checkpoint file inside"),  # M14
        ("model.pth", "out.pth", ValueError, r"out.pth: the converted file's name must end in \.safetensors"),  # M16
        ("model.pth", "out", ValueError, r"must end in \.safetensors .* e\.g\. .*out\.safetensors"),
        ("empty.safetensors", "out.safetensors", CheckpointError, r"empty.safetensors is empty \(0 bytes\)"),  # M17
        ("empty.pth", "out.safetensors", CheckpointError, r"empty.pth is empty \(0 bytes\)"),  # M18
        ("nothing.pth", "out.safetensors", FileNotFoundError, r"nothing.pth does not exist"),
        ("model.pth", "model.pth", ValueError, r"must end in \.safetensors"),
    ]  # fmt: skip
    for source, destination, error, message in cases:
        with pytest.raises(error, match=message):
            convert_pickle_to_safetensors(tmp_path / source, tmp_path / destination)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty.pth", "empty.safetensors", "folder.pth", "model.pth",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "failure",
    [IndexError("list index out of range"), KeyError(2), AssertionError("storage key '94' not found")],
)
def test_any_failure_of_a_damaged_file_is_a_refusal(failure, tmp_path, monkeypatch):
    """torch.load fails on damaged files in many ways (a fuzzed .pth gave these): each is a refusal."""
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pth")

    def damaged(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "load", damaged)
    with pytest.raises(CheckpointError, match=r"model.pth was refused: .* Details: \S"):
        convert_pickle_to_safetensors(tmp_path / "model.pth", tmp_path / "model.safetensors")


def test_convert_keeps_string_named_dense_tensors_and_refuses_sparse_ones(tmp_path):
    torch.save({"w": torch.ones(2), 0: torch.zeros(3), "n": None}, tmp_path / "mixed.pth")
    assert convert_pickle_to_safetensors(tmp_path / "mixed.pth", tmp_path / "mixed.safetensors") == 1
    assert list(load_file(tmp_path / "mixed.safetensors")) == ["w"]
    torch.save({"w": torch.eye(3).to_sparse()}, tmp_path / "sparse.pth")
    with pytest.raises(CheckpointError, match=r"'w' is a torch.sparse_coo tensor; safetensors stores dense"):
        convert_pickle_to_safetensors(tmp_path / "sparse.pth", tmp_path / "sparse.safetensors")


def test_a_failed_write_leaves_nothing_and_exits_1(tmp_path, monkeypatch, capsys):  # F04
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pth")

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    status = cli.main(["convert", str(tmp_path / "model.pth"), str(tmp_path / "model.safetensors")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("error: could not write ") and "No space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_convert_on_the_command_line_is_one_line(tmp_path, capsys):
    (tmp_path / "empty.pth").touch()
    assert cli.main(["convert", str(tmp_path / "empty.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert (
        capsys.readouterr().err == "error: empty.pth is empty (0 bytes): there is nothing in it to convert.\n"
    )


# Loader nodes and the Shot Prompt's language model (A01, A04, H11, H12) ---------------------------------


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """A models folder, outside ComfyUI, with a file outside it that nothing may reach."""
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(tmp_path / "models"))
    host._comfy_module.cache_clear()
    for kind in ("diffusion_models", "vae", "LLM"):
        (tmp_path / "models" / kind).mkdir(parents=True)
    (tmp_path / "files").mkdir()
    save_file(random_vae_state_dict(TINY_21), str(tmp_path / "files" / "outside.safetensors"))
    yield tmp_path / "models"
    host._comfy_module.cache_clear()


@pytest.mark.parametrize(
    "name", ["../../files/outside.safetensors", "{root}/files/outside.safetensors", "a/../../x"]
)
def test_loader_nodes_read_nothing_outside_the_model_folders(name, models):  # A01
    name = name.format(root=models.parent)
    for call in (
        lambda: NODES["SpacetimeDiTLoader"]().load(name, "default", "auto"),
        lambda: NODES["SpacetimeVAELoader"]().load(name, "fp32"),
        lambda: host.model_path("loras", name),
    ):
        with pytest.raises(ValueError, match=r"name .* must name something inside the '\w+' models folder"):
            call()


def test_a_model_file_in_a_subfolder_still_loads(models):
    (models / "vae" / "wan").mkdir()
    save_file(random_vae_state_dict(TINY_21), str(models / "vae" / "wan" / "v.safetensors"))
    (vae,) = NODES["SpacetimeVAELoader"]().load("wan/v.safetensors", "fp32")
    assert vae.latent_channels == TINY_21.z_dim


@pytest.mark.parametrize(
    "node,arguments,message",
    [
        ("SpacetimeDiTLoader", ("x.safetensors", "bogus", "auto"), "weight_dtype='bogus': choose one of default, fp8_e4m3fn"),
        ("SpacetimeDiTLoader", ("x.safetensors", "default", "fp64"), "compute_dtype='fp64': choose one of auto, bf16"),
        ("SpacetimeTextEncoderLoader", ("x.safetensors", "int8", "auto"), "weight_dtype='int8'"),
        ("SpacetimeImageEncoderLoader", ("x.safetensors", "default", None), "compute_dtype=None"),
        ("SpacetimeVAELoader", ("x.safetensors", "fp64"), "dtype='fp64': choose one of fp32, bf16, fp16"),
    ],
)  # fmt: skip
def test_loader_nodes_name_a_bogus_dtype(node, arguments, message):  # A04
    with pytest.raises(ValueError, match=message):
        NODES[node]().load(*arguments)


SHOT = dict(idea="a fox", subject="", action="", setting="", time_of_day="none", shot_size="none",
            camera_move="none", lens="none", lighting="none", style="", mood="", template="{idea}")  # fmt: skip


def test_the_language_model_is_looked_up_inside_models_llm_only(models):  # H12
    shot = NODES["SpacetimeShotPrompt"]()
    refusals = {}
    for name in ("/etc", "/no/such/folder", "../files", "../nothing"):
        with pytest.raises(
            ValueError, match=r"LLM name .* must name something inside the 'LLM' models folder"
        ) as e:
            shot.write(**SHOT, language_model=name)
        refusals[name] = str(e.value).replace(repr(name), "NAME")
    assert len(set(refusals.values())) == 1  # the same answer whether the path exists or not
    with pytest.raises(FileNotFoundError, match=r"There is no folder '~root' in .*LLM"):
        shot.write(**SHOT, language_model="~root")


def test_inside_comfyui_language_models_are_looked_up_in_its_llm_folders(tmp_path, monkeypatch):
    folder_paths = types.ModuleType("folder_paths")  # ComfyUI's, as far as model_folder uses it
    folder_paths.models_dir, folder_paths.folder_names_and_paths = str(tmp_path / "models"), {}
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    host._comfy_module.cache_clear()
    try:
        (tmp_path / "models" / "LLM" / "qwen").mkdir(parents=True)
        assert host.model_folder("LLM", "qwen") == tmp_path / "models" / "LLM" / "qwen"
        extra = tmp_path / "extra_llm"  # a folder registered in extra_model_paths.yaml
        (extra / "llama").mkdir(parents=True)
        folder_paths.folder_names_and_paths = {"LLM": ([str(extra)], set())}
        folder_paths.get_folder_paths = lambda kind: list(folder_paths.folder_names_and_paths[kind][0])
        assert host.model_folder("LLM", "llama") == extra / "llama"
        with pytest.raises(ValueError, match="must name something inside the 'LLM' models folder"):
            host.model_folder("LLM", str(tmp_path / "models" / "LLM" / "qwen"))
    finally:
        host._comfy_module.cache_clear()


def test_a_language_model_with_pickled_weights_is_refused_unopened(models):  # H11
    folder = models / "LLM" / "evil_lm"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    hostile("zip", folder / "pytorch_model.bin", models / "pwned")
    with pytest.raises(
        CheckpointError,
        match=r"holds its weights only as pickle files \(pytorch_model.bin\); Spacetime loads only \.safetensors",
    ):
        NODES["SpacetimeShotPrompt"]().write(**SHOT, language_model="evil_lm")
    assert not (models / "pwned").exists()


# evaluate (E11) ---------------------------------------------------------------------------------------


def test_evaluate_of_a_file_without_frames_is_one_line(tmp_path, capsys):
    pytest.importorskip("cv2")
    (tmp_path / "notavideo.mp4").write_text("not a video")
    for name, message in (
        ("notavideo.mp4", "could not be read as a video"),
        ("missing.mp4", "does not exist"),
    ):
        status = cli.main(["evaluate", str(tmp_path / name), "--prompt", "a red circle moving left"])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "manifest, message",
    [
        ('[{"prompt": "a red circle moving left"}]', 'entry 1: .* lacks a "video" path'),
        ('{"video": "a.mp4"}', "holds a dict; expected a list"),
        ("[{", "could not be read as JSON"),
    ],
)
def test_a_bad_evaluate_manifest_is_one_line(manifest, message, tmp_path, capsys):
    pytest.importorskip("cv2")
    (tmp_path / "m.json").write_text(manifest)
    assert cli.main(["evaluate", "--manifest", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err) and "Traceback" not in err
