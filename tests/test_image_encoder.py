"""The CLIP vision encoder Wan 2.1's image-to-video models read: parity with transformers'
CLIPVisionModelWithProjection (the layout of ComfyUI's clip_vision_h), ComfyUI's preprocessing, storage
dtypes, clear refusals of other files, and the nodes called as ComfyUI calls them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spacetime.checkpoint import CheckpointError
from spacetime.image_encoders import (
    VIT_H_14,
    CLIPVisionEncoder,
    encode_images,
    load_image_encoder,
    preprocess,
)
from spacetime.image_encoders import loader as image_encoder_loader
from spacetime.image_encoders.loader import HEAD_DIM_KEY, config_from_shapes
from spacetime.nodes.image_encoder import SpacetimeImageEncode, SpacetimeImageEncoderLoader

from clip_reference import checkpoint_state, reference_model, write_file
from numerics import relative_error

pytest.importorskip("transformers", reason="parity tests need transformers (test extra)")
TOLERANCE = 1e-5  # float32 against float32


def normalised_pixels(batch: int = 2, size: int = 28, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_outputs(model, pixels: torch.Tensor):
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True)


@pytest.fixture(scope="module")
def reference():
    return reference_model()


@pytest.fixture(scope="module")
def clip_file(reference, tmp_path_factory) -> Path:
    return write_file(
        checkpoint_state(reference), tmp_path_factory.mktemp("clip") / "clip_vision_tiny.safetensors"
    )


def test_matches_transformers_penultimate_and_last_hidden_states(clip_file, reference):
    encoder = load_image_encoder(clip_file)
    config = encoder.config
    assert (config.width, config.num_layers, config.num_heads, config.mlp_dim) == (64, 3, 4, 128)
    assert (config.image_size, config.patch_size, config.projection_dim) == (28, 14, 16)
    pixels = normalised_pixels()
    with torch.no_grad():
        penultimate, last = encoder(pixels, after_blocks=(2, 3))
        embeds = encoder.image_embeds(last)
    expected = reference_outputs(reference, pixels)
    assert penultimate.shape == last.shape == (2, 5, 64)  # class token + 2×2 patches
    assert relative_error(penultimate, expected.hidden_states[-2]) <= TOLERANCE
    assert relative_error(last, expected.last_hidden_state) <= TOLERANCE
    assert relative_error(embeds, expected.image_embeds) <= TOLERANCE
    assert relative_error(penultimate, last) > 0.05  # the block count matters: an off-by-one cannot pass


def test_hidden_states_after_every_block_count(clip_file, reference):
    encoder = load_image_encoder(clip_file)
    pixels = normalised_pixels(batch=1, seed=2)
    with torch.no_grad():
        ours = encoder(pixels, after_blocks=(0, 1, 2, 3))
    for count, (state, expected) in enumerate(
        zip(ours, reference_outputs(reference, pixels).hidden_states, strict=True)
    ):
        assert relative_error(state, expected) <= TOLERANCE, f"after {count} blocks"
    with pytest.raises(ValueError, match=r"within 0\.\.3"):
        encoder(pixels, after_blocks=(4,))
    with pytest.raises(ValueError, match=r"expected B×3×28×28.*preprocess"):
        encoder(torch.zeros(1, 3, 32, 32))


def test_encode_images_is_preprocess_then_the_model(clip_file, reference):
    encoder = load_image_encoder(clip_file)
    images = torch.rand(2, 40, 60, 3, generator=torch.Generator().manual_seed(3))
    for crop in (True, False):
        features = encode_images(encoder, images, crop=crop)
        expected = reference_outputs(reference, preprocess(images, 28, crop))
        assert relative_error(features.penultimate_hidden_states, expected.hidden_states[-2]) <= TOLERANCE
        assert relative_error(features.last_hidden_state, expected.last_hidden_state) <= TOLERANCE
        assert relative_error(features.image_embeds, expected.image_embeds) <= TOLERANCE
        assert features.image_sizes == [(3, 28, 28)] * 2


@pytest.mark.parametrize(
    ("stored", "weight_dtype", "tolerance"),
    [
        (torch.float16, None, 2e-3),
        (torch.bfloat16, None, 2e-2),
        (None, torch.float16, 2e-3),
        (None, torch.bfloat16, 2e-2),
        (None, torch.float8_e4m3fn, 0.15),
    ],
)
def test_half_and_fp8_storage(reference, tmp_path: Path, stored, weight_dtype, tolerance):
    path = write_file(checkpoint_state(reference, stored), tmp_path / "clip_vision.safetensors")
    encoder = load_image_encoder(path, weight_dtype=weight_dtype, compute_dtype=torch.float32)
    fc2 = encoder.vision_model.encoder.layers[2].mlp.fc2.weight
    assert fc2.dtype == (weight_dtype or stored)
    pixels = normalised_pixels()
    with torch.no_grad():
        penultimate, last = encoder(pixels, after_blocks=(2, 3))
    expected = reference_outputs(reference, pixels)
    assert relative_error(penultimate, expected.hidden_states[-2]) < tolerance
    assert relative_error(last, expected.last_hidden_state) < tolerance


def test_half_compute_runs_and_stays_close(clip_file, reference):
    encoder = load_image_encoder(clip_file, weight_dtype=torch.bfloat16, compute_dtype=torch.bfloat16)
    pixels = normalised_pixels()
    with torch.no_grad():
        (penultimate,) = encoder(pixels, after_blocks=(2,))
    assert penultimate.dtype == torch.float32  # the residual stream stays float32
    assert relative_error(penultimate, reference_outputs(reference, pixels).hidden_states[-2]) < 3e-2


def test_a_full_clip_model_file_loads_its_vision_half(reference, tmp_path: Path):
    """A transformers CLIPModel file (text and vision) loads as ComfyUI's CLIPVisionLoader loads it."""
    text_half = {
        "text_model.embeddings.token_embedding.weight": torch.randn(10, 8),
        "text_projection.weight": torch.randn(16, 8),
        "logit_scale": torch.tensor(2.6),
        "vision_model.embeddings.position_ids": torch.arange(5)[None],  # saved by older transformers
    }
    path = write_file(checkpoint_state(reference) | text_half, tmp_path / "clip_full.safetensors")
    pixels = normalised_pixels()
    with torch.no_grad():
        (penultimate,) = load_image_encoder(path)(pixels, after_blocks=(2,))
    assert relative_error(penultimate, reference_outputs(reference, pixels).hidden_states[-2]) <= TOLERANCE


def test_a_file_without_visual_projection_embeds_the_normed_class_token(reference, tmp_path: Path):
    state = {k: v for k, v in checkpoint_state(reference).items() if k != "visual_projection.weight"}
    encoder = load_image_encoder(write_file(state, tmp_path / "clip_no_projection.safetensors"))
    assert encoder.config.projection_dim is None
    pixels = normalised_pixels()
    with torch.no_grad():
        embeds = encoder.image_embeds(encoder(pixels)[0])
        expected = reference.vision_model(pixel_values=pixels).pooler_output
    assert embeds.shape == (2, 64) and relative_error(embeds, expected) <= TOLERANCE


def test_vit_h_14_is_read_from_its_shapes():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in CLIPVisionEncoder(VIT_H_14).state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (257, 1280)
    assert config_from_shapes(shapes, "clip_vision_h.safetensors") == VIT_H_14
    assert (VIT_H_14.num_heads, VIT_H_14.num_layers, VIT_H_14.mlp_dim, VIT_H_14.eps) == (16, 32, 5120, 1e-5)


def test_a_vit_l_file_is_refused_for_wan(tmp_path: Path):
    vit_l = reference_model(
        hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, intermediate_size=32
    )
    path = write_file(
        checkpoint_state(vit_l, torch.float16), tmp_path / "clip_vision_l.safetensors", metadata=None
    )
    with pytest.raises(
        CheckpointError,
        match=r"clip_vision_l\.safetensors is a ViT-L/14 \(e\.g\. clip_vision_l / SD 1\.5's\): Wan's image-to-video "
        r"models need clip_vision_h\.safetensors \(ViT-H/14\)",
    ):
        load_image_encoder(path)


def test_other_files_say_what_they_look_like(reference, tmp_path: Path):
    save_file({"head.modulation": torch.zeros(1, 2, 4)}, str(tmp_path / "wan.safetensors"))
    with pytest.raises(
        CheckpointError, match="not look like a CLIP vision encoder: it looks like a Wan diffusion"
    ):
        load_image_encoder(tmp_path / "wan.safetensors")
    save_file(
        {"visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(6, 2)},
        str(tmp_path / "oc.safetensors"),
    )
    with pytest.raises(CheckpointError, match="OpenCLIP's layout"):
        load_image_encoder(tmp_path / "oc.safetensors")
    siglip = {k: v for k, v in checkpoint_state(reference).items() if "class_embedding" not in k}
    with pytest.raises(CheckpointError, match="without a class token"):
        load_image_encoder(write_file(siglip, tmp_path / "siglip.safetensors"))
    (tmp_path / "clip_vision_h.pth").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="pickle"):
        load_image_encoder(tmp_path / "clip_vision_h.pth")


def test_a_gap_in_the_layers_is_refused_before_anything_is_allocated(reference, tmp_path: Path, monkeypatch):
    state = {k: v for k, v in checkpoint_state(reference).items() if ".layers.1." not in k}
    path = write_file(state, tmp_path / "clip_gap.safetensors")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was built or read before the gap was found")

    monkeypatch.setattr(image_encoder_loader, "CLIPVisionEncoder", must_not_run)
    monkeypatch.setattr(image_encoder_loader, "assign_checkpoint", must_not_run)
    with pytest.raises(
        CheckpointError, match=r"encoder layers up to 2 but none numbered 1: the file is damaged"
    ):
        load_image_encoder(path)


def test_heads_of_another_width_must_be_declared(reference, tmp_path: Path):
    """The tensors cannot say the head count: ViT-H/14's 80-wide heads unless the metadata says otherwise."""
    path = write_file(checkpoint_state(reference), tmp_path / "clip_tiny.safetensors", metadata=None)
    with pytest.raises(
        CheckpointError, match=f"not a multiple of the 80-wide attention heads.*{HEAD_DIM_KEY}"
    ):
        load_image_encoder(path)


# Preprocessing: ComfyUI's clip_preprocess, at the 224 size of ViT-H/14.
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def normalised(rgb) -> torch.Tensor:
    return torch.tensor([(value - m) / s for value, m, s in zip(rgb, MEAN, STD, strict=True)])


def test_preprocessing_normalises_with_clip_mean_and_std():
    white = preprocess(torch.ones(1, 224, 224, 3), 224, crop=True)
    torch.testing.assert_close(white[0, :, 100, 100], torch.tensor([1.9303361, 2.0748837, 2.1458917]))
    images = torch.rand(2, 224, 224, 4, generator=torch.Generator().manual_seed(4))  # alpha is dropped
    pixels = preprocess(images, 224, crop=False)
    levels = (images[..., :3] * 255).round() / 255  # 8-bit levels, as ComfyUI rounds
    expected = (levels - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(pixels, expected.permute(0, 3, 1, 2), rtol=0, atol=1e-6)


def test_center_crop_keeps_the_middle_and_none_squeezes_the_whole_image():
    """A 224×448 frame: red left quarter, blue right quarter, grey middle half."""
    red, grey, blue = (0.8, 0.1, 0.1), (0.5, 0.5, 0.5), (0.1, 0.1, 0.8)
    image = torch.tensor(grey).repeat(1, 224, 448, 1)
    image[:, :, :112], image[:, :, 336:] = torch.tensor(red), torch.tensor(blue)
    center, none = preprocess(image, 224, crop=True), preprocess(image, 224, crop=False)
    assert center.shape == none.shape == (1, 3, 224, 224)
    grey_level = normalised([round(v * 255) / 255 for v in grey])
    torch.testing.assert_close(center, grey_level[None, :, None, None].expand_as(center), rtol=0, atol=1e-5)
    red_level, blue_level = (normalised([round(v * 255) / 255 for v in c]) for c in (red, blue))
    torch.testing.assert_close(
        none[0, :, :, :20], red_level[:, None, None].expand(3, 224, 20), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        none[0, :, :, -20:], blue_level[:, None, None].expand(3, 224, 20), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        none[0, :, :, 100:124], grey_level[:, None, None].expand(3, 224, 24), rtol=0, atol=1e-5
    )


def test_downscaling_is_antialiased_as_comfyui_does():
    """Every third column white: squeezed 3:1, each pixel averages a period (grey), where plain bicubic
    sampling would land on the black columns."""
    image = torch.zeros(1, 224, 672, 3)
    image[:, :, ::3] = 1.0
    pixels = preprocess(image, 224, crop=False)[0, :, :, 8:-8]
    grey = pixels * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    assert grey.amax() - grey.amin() < 1e-5  # uniform
    assert abs(float(grey.mean()) - 1 / 3) < 0.05


def test_preprocess_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match=r"expected B×H×W×C with C 3 \(RGB\) or 4"):
        preprocess(torch.zeros(1, 3, 224, 224), 224, crop=True)


# Nodes, called as ComfyUI calls them.


@pytest.fixture
def models_dir(reference, tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "models" / "clip_vision"
    folder.mkdir(parents=True)
    write_file(checkpoint_state(reference, torch.float16), folder / "clip_vision_tiny.safetensors")
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(tmp_path / "models"))
    return folder


def call_node(cls, **inputs):
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_nodes_give_core_clip_vision_output(models_dir, reference):
    choices = SpacetimeImageEncoderLoader.INPUT_TYPES()["required"]["image_encoder_name"][0]
    assert choices == ["clip_vision_tiny.safetensors"]
    (encoder,) = call_node(
        SpacetimeImageEncoderLoader,
        image_encoder_name=choices[0],
        weight_dtype="default",
        compute_dtype="auto",
    )
    assert SpacetimeImageEncode.RETURN_TYPES == ("CLIP_VISION_OUTPUT",)
    crop = SpacetimeImageEncode.INPUT_TYPES()["required"]["crop"]
    assert (
        crop[0] == ["center", "none"] and crop[1]["default"] == "none"
    )  # Wan's reference squeezes the frame
    image = torch.rand(2, 40, 60, 3, generator=torch.Generator().manual_seed(5))
    (output,) = call_node(SpacetimeImageEncode, image_encoder=encoder, image=image, crop="none")
    assert output.penultimate_hidden_states.shape == (2, 5, 64)
    assert (
        output["penultimate_hidden_states"] is output.penultimate_hidden_states
    )  # core's Output reads items
    assert output.last_hidden_state.shape == (2, 5, 64) and output.image_embeds.shape == (2, 16)
    stored = copy.deepcopy(reference).half().float()  # the weights as the fp16 file holds them
    expected = reference_outputs(stored, preprocess(image, 28, crop=False))
    assert relative_error(output.penultimate_hidden_states, expected.hidden_states[-2]) <= TOLERANCE
    (centre,) = call_node(SpacetimeImageEncode, image_encoder=encoder, image=image, crop="center")
    assert relative_error(centre.penultimate_hidden_states, output.penultimate_hidden_states) > 1e-3


def test_features_combine_as_core_combines_them(clip_file):
    """Core's WanFirstLastFrameToVideo joins two outputs' penultimate states along the tokens and stores the
    result with item assignment, as on its own Output."""
    encoder = load_image_encoder(clip_file)
    first, last = (encode_images(encoder, torch.full((1, 28, 28, 3), v)) for v in (0.2, 0.9))
    first["penultimate_hidden_states"] = torch.cat(
        [first.penultimate_hidden_states, last.penultimate_hidden_states], dim=-2
    )
    assert first.penultimate_hidden_states.shape == (1, 10, 64)
