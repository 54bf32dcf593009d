"""Wan's image-to-video models (Wan 2.2 I2V A14B, Wan 2.1 I2V / FLF2V) on tiny random checkpoints through
the nodes: Image Condition gives them an edit's known frames as Wan builds its condition (the clip with
grey where unknown, encoded, and a 4-channel mask of the known frames), core's WanImageToVideo conditioning
gives the same result, known frames go through the condition and are not pinned, the A14B experts switch
at the image-to-video boundary, and wrong pairings are refused clearly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spacetime.dit import load_dit
from spacetime.dit.patchify import patchify
from spacetime.image_encoders import encode_images, load_image_encoder
from spacetime.nodes import NODE_CLASS_MAPPINGS
from spacetime.vae import frames_to_video, load_vae

from clip_reference import checkpoint_state, reference_model, write_file
from wan_reference import I2V, I2V_22, T2V, random_wan_state_dict, write
from wan_vae_reference import TINY_21, TINY_22, diffusers_vae22, random_vae_state_dict, wan22_state_dict

SIZE, FRAMES = 32, 9  # 4×4 latent frames, 3 of them


def node(name: str):
    return NODE_CLASS_MAPPINGS[name]()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("i2v")
    save_file(random_vae_state_dict(TINY_21), str(folder / "vae.safetensors"))
    paths = {"vae": folder / "vae.safetensors"}
    for name, config, seed in (
        ("i2v_22", I2V_22, 0),
        ("low", I2V_22, 1),
        ("i2v_21", I2V, 2),
        ("t2v", T2V, 3),
    ):
        paths[name] = write(random_wan_state_dict(config, seed), folder / f"{name}.safetensors")
    return paths


def prompts(width: int = T2V.text_dim):
    generator = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 7, width, generator=generator), {}]], [
        [torch.randn(1, 9, width, generator=generator), {}]
    ]


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(seed))


def sample(dit, positive, negative, latent, steps: int = 3, **options):
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", steps, 5.0, 1.0)
    (patches,) = node("SpacetimePatchifier").patchify(dit, latent)
    (patches,) = node("SpacetimeDiTDenoiser").sample(
        dit, positive, negative, patches, sigmas, "euler", 5.0, 0, **options
    )
    (out,) = node("SpacetimeUnpatchify").unpatchify(patches)
    return out["samples"]


class Inputs:
    """Records the tokens (and image features) each forward of a DiT gets."""

    def __init__(self, dit):
        self.calls = []
        forward = dit.forward_tokens

        def logged(tokens, grid, timestep, context, image=None):
            self.calls.append((tokens.clone(), timestep.clone(), image))
            return forward(tokens, grid, timestep, context, image)

        dit.forward_tokens = logged


def test_image_condition_is_the_clip_with_grey_encoded_and_a_mask_of_the_known_frames(files):
    vae = load_vae(files["vae"])
    _, plan = node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")
    positive, negative = prompts()
    positive, negative = node("SpacetimeImageCondition").condition(positive, negative, vae, plan)
    options = positive[0][1]
    assert negative[0][1]["concat_latent_image"] is options["concat_latent_image"]
    clip = torch.full((FRAMES, SIZE, SIZE, 3), 0.5)
    clip[0] = image()[0]
    assert torch.allclose(options["concat_latent_image"], vae.encode(frames_to_video(clip)), atol=1e-6)
    mask = options["concat_mask"]  # core's meaning: 0 where known
    assert mask.shape == (1, 4, 3, 4, 4)
    assert (mask[:, :, 0] == 0).all() and (mask[:, :, 1:] == 1).all()


def test_a_wan22_i2v_model_reads_the_condition_beside_the_noisy_latent_and_core_conditioning_gives_the_same(
    files,
):
    vae, dit = load_vae(files["vae"]), load_dit(files["i2v_22"])
    latent, plan = node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")
    positive, negative = prompts()
    ours = node("SpacetimeImageCondition").condition(positive, negative, vae, plan)
    inputs = Inputs(dit)
    result = sample(dit, *ours, latent)
    tokens = inputs.calls[0][0]
    assert tokens.shape[-1] == 36 * 4  # noisy latent, mask, known frames' latent (patch 1×2×2)
    options = ours[0][0][1]
    expected = torch.cat(
        [1 - options["concat_mask"], dit.latent_format.normalize(options["concat_latent_image"])], dim=1
    )
    condition, _ = patchify(expected, dit.config.patch_size)
    assert torch.allclose(tokens[:1, :, 16 * 4 :], condition, atol=1e-6)  # after the 16-channel noisy latent
    # Core's WanImageToVideo: the same encode, a one-channel latent-frame mask (0 for the image's frame).
    core_mask = torch.ones(1, 1, 3, 4, 4)
    core_mask[:, :, :1] = 0.0
    core = {"concat_latent_image": options["concat_latent_image"], "concat_mask": core_mask}
    from_core = sample(dit, *([[c, dict(core)]] for c in (prompts()[0][0][0], prompts()[1][0][0])), latent)
    assert torch.equal(from_core, result)
    # The known frame is conditioned, not pinned: the model's own first latent frame comes back.
    assert not torch.equal(result[:, :, :1], latent["samples"][:, :, :1])


def test_the_wan22_i2v_experts_switch_at_the_image_to_video_boundary(files):
    vae, high, low = load_vae(files["vae"]), load_dit(files["i2v_22"]), load_dit(files["low"])
    assert high.config.expert_boundary == 0.9
    latent, plan = node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")
    positive, negative = node("SpacetimeImageCondition").condition(*prompts(), vae, plan)
    high_inputs, low_inputs = Inputs(high), Inputs(low)
    sample(high, positive, negative, latent, steps=10, low_noise_dit=low)  # boundary 0: the model's own
    high_sigmas = [float(t[0]) / 1000 for _, t, _ in high_inputs.calls]
    low_sigmas = [float(t[0]) / 1000 for _, t, _ in low_inputs.calls]
    assert high_sigmas and low_sigmas and min(high_sigmas) >= 0.9 > max(low_sigmas)
    assert any(0.875 <= s < 0.9 for s in low_sigmas)  # where text to video would still be on the high expert


def test_wan21_i2v_and_flf2v_read_the_clip_features_of_the_known_frames(files, tmp_path: Path):
    encoder_file = write_file(checkpoint_state(reference_model()), tmp_path / "clip_vision_h.safetensors")
    encoder = load_image_encoder(encoder_file)
    vae = load_vae(files["vae"])
    i2v = load_dit(write(random_wan_state_dict(replace(I2V, image_dim=64), 6), tmp_path / "i2v.safetensors"))
    latent, plan = node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")
    positive, negative = node("SpacetimeImageCondition").condition(*prompts(), vae, plan, encoder, "first")
    features = positive[0][1]["clip_vision_output"].penultimate_hidden_states
    expected = encode_images(encoder, image(), crop=False).penultimate_hidden_states
    assert features.shape == (1, 5, 64) and torch.equal(features, expected)  # the first frame's, Wan's way
    inputs = Inputs(i2v)
    first = sample(i2v, positive, negative, latent)
    assert torch.equal(inputs.calls[0][2][:1], features)
    other = node("SpacetimeImageCondition").condition(*prompts(), vae, plan)
    with pytest.raises(ValueError, match="reads CLIP image features: encode the image"):
        sample(i2v, *other, latent)
    # FLF2V: the first and the last known frames' features side by side, for a bridge.
    flf = load_dit(
        write(
            random_wan_state_dict(replace(I2V, image_dim=64, image_tokens=10), 7), tmp_path / "f.safetensors"
        )
    )
    clip = torch.rand(13, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))
    latent, plan = node("SpacetimeConnectVideos").prepare(vae, clip, clip.flip(0), 4, 5)
    positive, negative = node("SpacetimeImageCondition").condition(
        *prompts(), vae, plan, encoder, "first and last"
    )
    features = positive[0][1]["clip_vision_output"].penultimate_hidden_states
    ends = torch.cat([clip[8:9], clip.flip(0)[3:4]])  # the bridge's first and last known frames
    expected = encode_images(encoder, ends, crop=False).penultimate_hidden_states
    assert torch.allclose(features, expected.reshape(1, 10, 64), atol=1e-5)  # encoded one at a time
    result = sample(flf, positive, negative, latent, steps=2)
    assert torch.isfinite(result).all() and not torch.allclose(result, first[:, :, :1].expand_as(result))
    with pytest.raises(ValueError, match="last frame is not known"):
        node("SpacetimeImageCondition").condition(
            *prompts(),
            vae,
            node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")[1],
            encoder,
            "first and last",
        )


@pytest.mark.parametrize("edit", ["extend forward", "extend backward", "connect", "loop"])
def test_every_editing_node_runs_on_an_image_to_video_model(edit, files):
    vae, dit = load_vae(files["vae"]), load_dit(files["i2v_22"])
    clip = torch.rand(13, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(4))
    prepare = {
        "extend forward": lambda: node("SpacetimeExtendVideo").prepare(vae, clip, "forward", 4, 5),
        "extend backward": lambda: node("SpacetimeExtendVideo").prepare(vae, clip, "backward", 5, 4),
        "connect": lambda: node("SpacetimeConnectVideos").prepare(vae, clip, clip.flip(0), 4, 5),
        "loop": lambda: node("SpacetimeLoopVideo").prepare(vae, clip, 4, 5),
    }[edit]
    latent, plan = prepare()
    positive, negative = node("SpacetimeImageCondition").condition(*prompts(), vae, plan)
    mask = 1 - positive[0][1]["concat_mask"][0, :, :, 0, 0]  # M×T, 1 where known
    index = torch.cat([torch.zeros(4, dtype=torch.long), torch.arange(1, plan.frames)]).view(-1, 4).T
    assert torch.equal(mask.bool(), plan.known[index])  # several known frames of context, not one
    samples = sample(dit, positive, negative, latent, steps=2)
    (frames,) = node("SpacetimeVAEDecode").decode(vae, {"samples": samples})
    video, _ = node("SpacetimeJoinEditedClip").join(plan, frames, 4)
    assert torch.isfinite(video).all() and video.shape[1:] == (SIZE, SIZE, 3)


def test_wrong_pairings_are_refused_clearly(files):
    vae, i2v, t2v = load_vae(files["vae"]), load_dit(files["i2v_22"]), load_dit(files["t2v"])
    latent, plan = node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")
    with pytest.raises(ValueError, match="image-to-video model and the conditioning holds no image"):
        sample(i2v, *prompts(), latent)
    conditioned = node("SpacetimeImageCondition").condition(*prompts(), vae, plan)
    with pytest.raises(ValueError, match=r"holds an image for an image-to-video model, but .* is not one"):
        sample(t2v, *conditioned, latent)
    with pytest.raises(ValueError, match="clip_images 'middle'"):
        node("SpacetimeImageCondition").condition(*prompts(), vae, plan, None, "middle")
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 5.0, 1.0)
    with pytest.raises(ValueError, match=r"its long video starts from an image\. Connect Long Video's image"):
        node("SpacetimeLongVideo").sample(
            i2v, vae, *prompts(), sigmas, SIZE, SIZE, 41, 17, 8, 1.0, "euler", 5.0, 0
        )
    wan21 = load_dit(files["i2v_21"])
    with pytest.raises(ValueError, match="connect Long Video's image_encoder input"):
        node("SpacetimeLongVideo").sample(
            wan21, vae, *prompts(), sigmas, SIZE, SIZE, 41, 17, 8, 1.0, "euler", 5.0, 0, image=image()
        )


class Conditions:
    """Records the image condition and pins of each denoise a Long Video runs."""

    def __init__(self, monkeypatch):
        import spacetime.editing.long_video as long_video

        self.calls = []
        denoise = long_video.denoise

        def logged(guider, patches, sampling, callback=None):
            self.calls.append((guider.image, guider.pins(patches)))
            return denoise(guider, patches, sampling, callback)

        monkeypatch.setattr(long_video, "denoise", logged)


def test_long_video_runs_wan22_i2v_from_an_image_each_window_opened_through_the_condition(files, monkeypatch):
    vae, dit = load_vae(files["vae"]), load_dit(files["i2v_22"])
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 5.0, 1.0)
    conditions = Conditions(monkeypatch)
    (latent,) = node("SpacetimeLongVideo").sample(
        dit, vae, *prompts(), sigmas, SIZE, SIZE, 25, 13, 8, 1.0, "euler", 5.0, 0, image=image()
    )
    assert latent["samples"].shape == (1, 16, 7, 4, 4)  # 25 frames: windows of 4 latent frames, opening 2
    masks = [condition.mask[0, :, :, 0, 0] for condition, _ in conditions.calls]  # M×T each
    assert len(masks) == 3 and all(pins is None for _, pins in conditions.calls)  # conditioned, not pinned
    first = torch.zeros(4, 4)
    first[:, 0] = 1  # the image: latent frame 0, all four channels
    assert torch.equal(masks[0], first)
    opening = torch.zeros(4, 4)
    opening[:, :2] = 1  # the last 5 frames of the window before: frame 0, then a group of 4
    assert torch.equal(masks[1], opening) and torch.equal(masks[2], opening[:, :3])  # the last: 2 + 1
    grey = torch.zeros(1, 3, 13, SIZE, SIZE)
    grey[:, :, :1] = frames_to_video(image())
    assert torch.allclose(conditions.calls[0][0].latent, vae.encode(grey), atol=1e-6)  # the image, then grey


def test_long_video_from_an_image_pins_it_as_the_first_frame_on_text_to_video_models(files):
    vae, dit = load_vae(files["vae"]), load_dit(files["t2v"])
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 5.0, 1.0)
    arguments = (dit, vae, *prompts(), sigmas, SIZE, SIZE, 25, 13, 8, 1.0, "euler", 5.0, 0)
    (latent,) = node("SpacetimeLongVideo").sample(*arguments, image=image())
    (plain,) = node("SpacetimeLongVideo").sample(*arguments)
    expected = vae.encode(frames_to_video(image()))
    assert torch.allclose(latent["samples"][:, :, :1], expected, atol=1e-5)
    assert not torch.allclose(plain["samples"][:, :, :1], expected, atol=1e-2)


def test_long_video_runs_wan21_i2v_with_each_windows_first_frame_through_clip(
    files, monkeypatch, tmp_path: Path
):
    encoder = load_image_encoder(
        write_file(checkpoint_state(reference_model()), tmp_path / "clip.safetensors")
    )
    vae = load_vae(files["vae"])
    dit = load_dit(write(random_wan_state_dict(replace(I2V, image_dim=64), 8), tmp_path / "i2v.safetensors"))
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 5.0, 1.0)
    conditions = Conditions(monkeypatch)
    arguments = (dit, vae, *prompts(), sigmas, SIZE, SIZE, 25, 13, 8, 1.0, "euler", 5.0, 0)
    (latent,) = node("SpacetimeLongVideo").sample(*arguments, image=image(), image_encoder=encoder)
    assert latent["samples"].shape == (1, 16, 7, 4, 4) and len(conditions.calls) == 3
    first = encode_images(encoder, image(), crop=False).penultimate_hidden_states
    assert torch.allclose(conditions.calls[0][0].features, first, atol=1e-5)  # window 0: the image
    assert not torch.allclose(conditions.calls[1][0].features, first, atol=1e-3)  # then each opening's frame
    flf = load_dit(
        write(random_wan_state_dict(replace(I2V, image_dim=64, image_tokens=10)), tmp_path / "f.safetensors")
    )
    with pytest.raises(ValueError, match=r"Long Video does not run Wan 2\.1 FLF2V"):
        node("SpacetimeLongVideo").sample(flf, *arguments[1:], image=image(), image_encoder=encoder)


def test_video_to_video_on_an_image_to_video_model_is_conditioned_on_the_source_first_frame(files):
    vae, dit = load_vae(files["vae"]), load_dit(files["i2v_22"])
    source = torch.rand(11, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(6))
    (full,) = node("SpacetimeScheduler").schedule("simple", 3, 5.0, 1.0)
    latent, sigmas, plan = node("SpacetimeVideoToVideo").prepare(vae, source, full, 0.6)
    positive, negative = node("SpacetimeImageCondition").condition(*prompts(), vae, plan)
    mask = 1 - positive[0][1]["concat_mask"][0, :, :, 0, 0]  # M×T, 1 where known
    assert mask[:, 0].tolist() == [1, 1, 1, 1] and mask[:, 1:].sum() == 0  # the first source frame only
    clip = torch.full((13, SIZE, SIZE, 3), 0.5)
    clip[0] = source[0]
    assert torch.allclose(positive[0][1]["concat_latent_image"], vae.encode(frames_to_video(clip)), atol=1e-6)
    (patches,) = node("SpacetimePatchifier").patchify(dit, latent)
    (patches,) = node("SpacetimeDiTDenoiser").sample(
        dit, positive, negative, patches, sigmas, "euler", 5.0, 0
    )
    (out,) = node("SpacetimeUnpatchify").unpatchify(patches)
    (frames,) = node("SpacetimeVAEDecode").decode(vae, out)
    video, _ = node("SpacetimeJoinEditedClip").join(plan, frames, 4)
    assert video.shape == source.shape and not torch.equal(video[0], source[0])  # redrawn, not put back


def test_a_wan22_vae_with_a_wan21_family_image_to_video_model_is_refused_clearly(files, tmp_path: Path):
    path = tmp_path / "wan2.2_vae.safetensors"
    save_file(wan22_state_dict(diffusers_vae22(TINY_22, seed=0), TINY_22.num_res_blocks), str(path))
    vae, dit = load_vae(path), load_dit(files["i2v_22"])
    latent, plan = node("SpacetimeImageToVideo").prepare(vae, image(), SIZE, SIZE, FRAMES, "crop")
    with pytest.raises(
        ValueError, match=r"\(a Wan 2\.2 VAE latent\) does not fit .* use the VAE that belongs"
    ):
        node("SpacetimePatchifier").patchify(dit, latent)
    positive, negative = node("SpacetimeImageCondition").condition(*prompts(), vae, plan)
    patches = node("SpacetimePatchifier").patchify(dit, {"samples": torch.zeros(1, 16, 3, 4, 4)})[0]
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 5.0, 1.0)
    with pytest.raises(
        ValueError, match=r"It looks like a Wan 2\.2 VAE latent: use the matching VAE and model"
    ):
        node("SpacetimeDiTDenoiser").sample(dit, positive, negative, patches, sigmas, "euler", 5.0, 0)


def test_core_first_last_frame_conditioning_with_clip_features_works_in_our_denoiser(files, tmp_path: Path):
    """As core's WanFirstLastFrameToVideo builds it: the start and end images with grey between, encoded; a
    4-channel mask, 0 where known (frame 0 four times, then the last frame); the two images' CLIP features
    side by side in a CLIP_VISION_OUTPUT (any object with penultimate_hidden_states)."""
    vae = load_vae(files["vae"])
    flf = load_dit(
        write(
            random_wan_state_dict(replace(I2V, image_dim=64, image_tokens=10), 9), tmp_path / "f.safetensors"
        )
    )
    start, end = image(0)[0], image(1)[0]
    clip = torch.full((FRAMES, SIZE, SIZE, 3), 0.5)
    clip[0], clip[-1] = start, end
    mask = torch.ones(1, 1, 3 * 4, 4, 4)
    mask[:, :, : 1 + 3] = 0.0
    mask[:, :, -1:] = 0.0
    mask = mask.view(1, 3, 4, 4, 4).transpose(1, 2)

    class Output:  # core's comfy.clip_vision.Output keeps its tensors as attributes
        penultimate_hidden_states = torch.randn(1, 10, 64, generator=torch.Generator().manual_seed(3))

    options = {
        "concat_latent_image": vae.encode(frames_to_video(clip)),
        "concat_mask": mask,
        "clip_vision_output": Output(),
    }
    positive, negative = ([[c[0][0], dict(options)]] for c in prompts())
    inputs = Inputs(flf)
    result = sample(flf, positive, negative, {"samples": torch.zeros(1, 16, 3, 4, 4)}, steps=2)
    assert torch.isfinite(result).all()
    tokens, _, features = inputs.calls[0]
    assert torch.equal(features[:1], Output.penultimate_hidden_states)
    known = 1 - mask  # what the model reads: 1 where known
    expected = torch.cat([known, flf.latent_format.normalize(options["concat_latent_image"])], dim=1)
    assert torch.allclose(tokens[:1, :, 16 * 4 :], patchify(expected, flf.config.patch_size)[0], atol=1e-6)


def test_a_storyboard_shots_image_reaches_wan22_i2v_through_the_condition_not_pinned(files, monkeypatch):
    from spacetime.editing.storyboard import Script, Storyboard, parse_storyboard

    vae, dit = load_vae(files["vae"]), load_dit(files["i2v_22"])
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 5.0, 1.0)
    positive, negative = prompts()
    shots = parse_storyboard("0 | a\n16f | b | image: 1", fps=16)
    card = image(3)
    script = Script(tuple(shots), 4.0, 16.0, (None, card))
    storyboard = Storyboard(script, torch.cat([positive[0][0], positive[0][0] + 1]))
    conditions = Conditions(monkeypatch)
    node("SpacetimeLongVideo").sample(
        dit, vae, storyboard.conditioning(), negative, sigmas, SIZE, SIZE, 25, 13, 8, 1.0, "euler", 5.0, 0,
        image=image(),
    )  # fmt: skip
    masks = [condition.mask[0, :, :, 0, 0] for condition, _ in conditions.calls]
    assert len(masks) == 3 and all(pins is None for _, pins in conditions.calls)
    # frame 16's image is held over latent frame 5 (frames 17..20): the second window's (latent frames 2..5)
    # fourth, after its opening of two
    held = torch.zeros(4, 4)
    held[:, :2] = 1
    held[:, 3] = 1
    last = torch.zeros(4, 3)
    last[:, :2] = 1  # the last window: its opening alone
    assert torch.equal(masks[1], held) and torch.equal(masks[2], last)
