"""The editing suite: known frames go where each operation puts them, in whole latent frames, with core's
noise_mask; the assembled result gives the source frames back exactly, spreads the jump where known and
new frames meet over the new frames next to it, and joins the rest of the clip; bad input is refused with
a clear message. The library runs on a fake encoder (a latent frame = the mean colour of its pixel
frames), the nodes on Tiny World."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spacetime import editing as edits
from spacetime import host
from spacetime.editing import WINDOWS_KEY
from spacetime.nodes import NODE_CLASS_MAPPINGS
from spacetime.nodes.video_combine import _frames
from spacetime.pipeline import TINY_WORLD_DIR, TINY_WORLD_FILES, load_tiny_world
from spacetime.training.evaluate import psnr, seam_ratios
from spacetime.training.world import caption, render, sample_scene

STRIDE, SIZE = 4, (3, 2, 2)  # latent channels, height, width of 16x16 frames


def fake_encode_clip(frames: torch.Tensor) -> torch.Tensor:
    """Frames F×16×16×3 (F = 4k+1) -> 1×3×(k+1)×2×2: frame 0 alone, then groups of 4, 8x8 mean pooled."""
    assert (len(frames) - 1) % STRIDE == 0
    groups = [frames[:1]] + [frames[i : i + STRIDE] for i in range(1, len(frames), STRIDE)]
    pooled = [g.mean(0).permute(2, 0, 1).reshape(3, 2, 8, 2, 8).mean((2, 4)) for g in groups]
    return torch.stack(pooled, dim=1)[None]


def fake_encode(clips: list[torch.Tensor]) -> list[torch.Tensor]:
    """An edit's clips, each encoded by fake_encode_clip (the library encodes an edit's clips in one call)."""
    return [fake_encode_clip(frames) for frames in clips]


def clip(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 16, 16, 3, generator=torch.Generator().manual_seed(seed))


def known_layout(plan: edits.ClipPlan) -> str:
    return "".join("K" if k else "." for k in plan.known.tolist())


def test_image_to_video_pins_each_image_as_the_first_latent_frame_of_its_own_video():
    images = clip(2)
    edit = edits.image_to_video(fake_encode, STRIDE, SIZE, images, 9)
    assert edit.latent.shape == (2, 3, 3, 2, 2)
    assert torch.equal(edit.latent[1, :, :1], fake_encode_clip(images[1:2])[0])
    assert edit.latent[:, :, 1:].abs().sum() == 0
    assert edit.noise_mask[:, 0, :, 0, 0].tolist() == [[0, 1, 1], [0, 1, 1]]
    assert known_layout(edit.plan) == "K" + "." * 8 and edit.plan.batch == 2
    with pytest.raises(ValueError, match=r"4k\+1 frames with k >= 1"):
        edits.image_to_video(fake_encode, STRIDE, SIZE, images, 8)


def test_a_held_image_opens_two_latent_frames_and_its_copies_are_left_out():
    images = clip(2)
    edit = edits.image_to_video(fake_encode, STRIDE, SIZE, images, 9, opening="held")
    # the image held for 5 frames fills latent frames 0 and 1; 2 latent frames (8 frames) follow
    assert edit.latent.shape == (2, 3, 4, 2, 2)
    assert torch.equal(edit.latent[1, :, :2], fake_encode_clip(images[1:2].expand(5, -1, -1, -1))[0])
    assert edit.latent[:, :, 2:].abs().sum() == 0
    assert edit.noise_mask[:, 0, :, 0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    assert known_layout(edit.plan) == "K" * 5 + "." * 8 and edit.plan.held == 4
    decoded = clip(2 * 13, seed=1)
    result, new = edits.assemble(edit.plan, decoded, blend=0)
    # the image, then the 8 new frames: the 4 held copies are gone, 9 frames as asked
    assert result.shape == (2 * 9, 16, 16, 3) and torch.equal(new, torch.cat([decoded[5:13], decoded[18:]]))
    assert torch.equal(result[0], images[0]) and torch.equal(result[9], images[1])
    assert torch.equal(result[1:9], decoded[5:13]) and torch.equal(result[10:], decoded[18:])
    assert "4 held copies" in edit.plan.describe()
    with pytest.raises(ValueError, match="opening 'still': expected one of image, held"):
        edits.image_to_video(fake_encode, STRIDE, SIZE, images, 9, opening="still")


def test_extend_forward_pins_the_tail_and_joins_the_rest_of_the_clip_before():
    source = clip(11)
    edit = edits.extend(fake_encode, STRIDE, SIZE, source, new_frames=7, overlap=6)  # -> overlap 5, 8 new
    assert known_layout(edit.plan) == "K" * 5 + "." * 8
    assert torch.equal(edit.latent[:, :, :2], fake_encode_clip(source[-5:]))
    assert edit.noise_mask[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1]
    assert torch.equal(edit.plan.before, source[:6])


def test_extend_backward_encodes_the_head_after_a_still_lead_in():
    source = clip(10)
    edit = edits.extend(fake_encode, STRIDE, SIZE, source, new_frames=3, overlap=5, backward=True)
    assert known_layout(edit.plan) == "." * 5 + "K" * 4  # 4k+1 new frames open the clip, 4 known close it
    lead_in = source[:1].expand(9, -1, -1, -1)  # the first frame held for 1 + 2 latent frames
    expected = fake_encode_clip(torch.cat([lead_in, source[:4]]))[:, :, 3:]
    assert torch.equal(edit.latent[:, :, -1:], expected)
    assert edit.noise_mask[0, 0, :, 0, 0].tolist() == [1, 1, 0]
    assert torch.equal(edit.plan.after, source[4:])


def test_connect_and_loop_place_both_ends():
    a, b = clip(9, 1), clip(6, 2)
    edit = edits.connect(fake_encode, STRIDE, SIZE, a, b, bridge_frames=5, overlap=5)
    assert known_layout(edit.plan) == "K" * 5 + "." * 8 + "K" * 4
    assert edit.noise_mask[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 0]
    assert torch.equal(edit.plan.before, a[:4]) and torch.equal(edit.plan.after, b[4:])

    loop = edits.connect(fake_encode, STRIDE, SIZE, a, a, bridge_frames=4, overlap=5, loop=True)
    decoded = torch.rand(loop.plan.frames, 16, 16, 3)
    video, new = edits.assemble(loop.plan, decoded)
    assert len(video) == len(a) + 4 and len(new) == 4  # the clip, then the bridge back to its start
    assert torch.equal(video[: len(a)], a)


def test_bad_clips_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"fewer than the overlap of 5.*at most 1"):
        edits.extend(fake_encode, STRIDE, SIZE, clip(3), 8, 5)
    with pytest.raises(ValueError, match="fewer than the overlap of 8"):
        edits.extend(fake_encode, STRIDE, SIZE, clip(6), 8, 8, backward=True)
    with pytest.raises(ValueError, match="differ in size: 16x16 and 32x16"):
        edits.connect(fake_encode, STRIDE, SIZE, clip(9), torch.rand(9, 16, 32, 3), 4, 5)
    with pytest.raises(ValueError, match="reuse frames at both ends"):
        edits.connect(fake_encode, STRIDE, SIZE, clip(6), clip(6), 4, 5, loop=True)
    with pytest.raises(ValueError, match=r"strength=1.5: expected a value in 0\.\.1"):
        edits.strength_sigmas(torch.tensor([1.0, 0.5, 0.0]), 1.5)
    with pytest.raises(ValueError, match="strength=0"):
        edits.strength_sigmas(torch.tensor([1.0, 0.5, 0.0]), 0.0)


def flat(count: int, level: float) -> torch.Tensor:
    return torch.full((count, 16, 16, 3), level)


def levels(frames: torch.Tensor) -> list[float]:
    return frames.mean(dim=(1, 2, 3)).tolist()


def test_assemble_gives_known_frames_back_and_spreads_the_jump_at_the_join():
    source = flat(9, 0.3)
    edit = edits.extend(fake_encode, STRIDE, SIZE, source, new_frames=8, overlap=5)
    # the VAE's copies of the known frames are 0.1 too dark; the new frames move steadily, +0.02 a frame
    decoded = torch.cat([flat(5, 0.2), *(flat(1, 0.5 + 0.02 * i) for i in range(1, 9))])
    video, new = edits.assemble(edit.plan, decoded, blend=4)
    assert len(video) == 4 + 13 and len(new) == 8
    assert torch.equal(video[:9], source)  # the clip, exactly, overlap included
    # the jump from the source (0.3) to the first new frame (0.52), beyond the generated step (0.02), is
    # 0.2: spread over the join and the 4 steps after it, 0.04 each, on top of the generated step
    steps = np.diff(levels(video[8:]))
    assert steps.tolist() == pytest.approx([0.06] * 5 + [0.02] * 3, abs=1e-6)
    assert torch.equal(new, video[9:])
    plain, _ = edits.assemble(edit.plan, decoded, blend=0)
    assert torch.equal(plain[:9], source) and torch.equal(plain[9:], decoded[5:])
    with pytest.raises(ValueError, match=r"not this plan's decoded clip.*expected 13 frames of 16x16"):
        edits.assemble(edit.plan, decoded[:12])
    with pytest.raises(ValueError, match="blend=-1: expected 0 or more"):
        edits.assemble(edit.plan, decoded, blend=-1)


def test_assemble_spreads_both_joins_of_a_bridge_and_leaves_steady_motion_alone():
    a, b = flat(9, 0.2), flat(8, 0.8)
    edit = edits.connect(fake_encode, STRIDE, SIZE, a, b, 8, 5)
    plan = edit.plan
    decoded = torch.full((plan.frames, 16, 16, 3), 0.5)  # known copies exact, the bridge one flat grey
    _, bridge = edits.assemble(plan, decoded, blend=2)
    # left: 0.2 -> 0.5 over 3 steps; right, walking back from b: 0.8 -> 0.5 over 3 steps
    assert levels(bridge) == pytest.approx([0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7], abs=1e-6)
    # a bridge that already continues both clips' motion is left as it is
    ramp = torch.linspace(0.1, 0.9, plan.frames).view(-1, 1, 1, 1).expand(-1, 16, 16, 3)
    moving = dataclasses.replace(plan, sources=ramp[plan.known][None])
    _, same = edits.assemble(moving, ramp.clone(), blend=2)
    torch.testing.assert_close(same, ramp[~plan.known])


def test_streamed_joins_are_spread_as_assemble_spreads_them_whatever_the_chunks():
    # a steady fade, +0.01 a frame, with jumps of +0.3 into frame 5 and -0.2 into frame 13
    values = 0.2 + 0.01 * torch.arange(20.0)
    values[5:] += 0.3
    values[13:] -= 0.2
    frames = values.view(-1, 1, 1, 1).expand(-1, 4, 4, 3).contiguous()
    expected = [
        torch.cat(list(edits.spread_joins(frames.split(size), [5, 13], blend=3))) for size in (1, 4, 7, 20)
    ]
    for streamed in expected[1:]:
        assert torch.equal(streamed, expected[0])
    steps = np.diff(levels(expected[0]))
    # each jump (beyond the steady 0.01) is carried in quarters by the join and the 3 steps after it
    assert steps[4:8] == pytest.approx([0.01 + 0.075] * 4, abs=1e-6)
    assert steps[12:16] == pytest.approx([0.01 - 0.05] * 4, abs=1e-6)
    assert np.delete(steps, [*range(4, 8), *range(12, 16)]) == pytest.approx([0.01] * 11, abs=1e-6)
    assert torch.equal(torch.cat(list(edits.spread_joins(frames.split(4), [], blend=3))), frames)


def test_video_to_video_pads_to_4k_plus_1_and_trims_back():
    source = clip(7)
    edit = edits.video_to_video(fake_encode, STRIDE, source)
    assert edit.noise_mask is None and edit.latent.shape[2] == 3  # 9 frames after padding
    video, _ = edits.assemble(edit.plan, torch.rand(9, 16, 16, 3))
    assert len(video) == 7
    sigmas = edits.strength_sigmas(torch.tensor([1.0, 0.6, 0.2, 0.0]), 0.5)
    assert sigmas.tolist() == pytest.approx([0.5, 0.3, 0.1, 0.0])


def test_fit_rules_crop_pad_and_stretch():
    image = torch.zeros(1, 20, 40, 3)
    image[:, :, :10] = 1.0  # white left quarter
    crop = edits.fit_frames(image, 16, 16, "crop")  # the centre 20x20, scaled: no white left
    pad = edits.fit_frames(image, 16, 16, "pad")  # 16x8 inside, black bars above and below
    stretch = edits.fit_frames(image, 16, 16, "stretch")
    assert crop.shape == pad.shape == stretch.shape == (1, 16, 16, 3)
    assert crop.max() < 0.05
    assert pad[0, :4].max() == 0 and pad[0, 12:].max() == 0 and pad[0, 8, 0, 0] > 0.95
    assert stretch[0, :, 0].min() > 0.95 and stretch[0, :, 15].max() < 0.05
    rgba = torch.cat([torch.ones(1, 4, 4, 3), torch.full((1, 4, 4, 1), 0.25)], dim=-1)
    assert torch.allclose(edits.rgb_frames(rgba, "image"), torch.full((1, 4, 4, 3), 0.25))
    with pytest.raises(ValueError, match="2 channels"):
        edits.rgb_frames(torch.rand(1, 4, 4, 2), "image")


def test_seam_ratio_is_the_step_at_a_join_over_the_median_step():
    frames = np.cumsum(np.full((9, 2, 2, 3), 0.01), axis=0)
    frames[5:] += 0.05  # a jump into frame 5
    assert seam_ratios(frames, [5]) == pytest.approx([6.0])
    assert seam_ratios(frames, [3]) == pytest.approx([1.0])


tiny = pytest.mark.skipif(
    not all((TINY_WORLD_DIR / name).is_file() for name in TINY_WORLD_FILES.values()),
    reason=f"Tiny World's weights are missing from {TINY_WORLD_DIR}",
)


def node(name: str):
    return NODE_CLASS_MAPPINGS[name]()


def run_graph(models, latent, prompt: str, sigmas=None, steps: int = 6):
    """Patchifier -> DiT Denoiser -> Unpatchify -> VAE Decode, as a workflow wires them."""
    dit, text_encoder, vae = models
    positive, negative = node("SpacetimeTextEncode").encode(text_encoder, prompt, "")
    (patches,) = node("SpacetimePatchifier").patchify(dit, latent)
    if sigmas is None:
        (sigmas,) = node("SpacetimeScheduler").schedule("simple", steps, 3.0, 1.0)
    (patches,) = node("SpacetimeDiTDenoiser").sample(
        dit, positive, negative, patches, sigmas, "euler", 5.0, 0
    )
    (latent,) = node("SpacetimeUnpatchify").unpatchify(patches)
    (frames,) = node("SpacetimeVAEDecode").decode(vae, latent)
    return frames


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu")


def world_clip(seed: int, frames: int) -> tuple[torch.Tensor, str]:
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng)
    return torch.from_numpy(render(scene, frames, 128, 128)).float() / 255, caption(scene, rng)


@tiny
def test_image_to_video_nodes_animate_a_picture_of_another_size(tiny_world):
    source, prompt = world_clip(3, 1)
    picture = torch.nn.functional.pad(source.permute(0, 3, 1, 2), (32, 32, 0, 0)).permute(0, 2, 3, 1)
    latent, plan = node("SpacetimeImageToVideo").prepare(tiny_world[2], picture, 128, 128, 9, "crop")
    frames = run_graph(tiny_world, latent, prompt)
    video, new = node("SpacetimeJoinEditedClip").join(plan, frames, 4)
    assert video.shape == (9, 128, 128, 3) and new.shape == (8, 128, 128, 3)
    assert torch.equal(video[0], edits.fit_frames(picture, 128, 128, "crop")[0])
    assert psnr(frames[:1].numpy(), video[:1].numpy()) > 25  # the model kept the pinned frame (VAE copy)
    assert video[1:].std() > 0.02
    latent, plan = node("SpacetimeImageToVideo").prepare(tiny_world[2], picture, 128, 128, 9, "crop", "held")
    assert latent["samples"].shape[2] == 4 and latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0, 0, 1, 1]
    frames = run_graph(tiny_world, latent, prompt)
    video, new = node("SpacetimeJoinEditedClip").join(plan, frames, 4)
    assert video.shape == (9, 128, 128, 3) and new.shape == (8, 128, 128, 3) and torch.equal(video[1:], new)
    assert torch.equal(video[0], edits.fit_frames(picture, 128, 128, "crop")[0])
    assert psnr(frames[4:5].numpy(), video[:1].numpy()) > 25  # the last held copy, as the model kept it


@tiny
def test_extend_nodes_continue_a_clip_and_return_it_whole(tiny_world):
    source, prompt = world_clip(5, 9)
    latent, plan = node("SpacetimeExtendVideo").prepare(tiny_world[2], source, "forward", 8, 5)
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0, 0, 1, 1]
    frames = run_graph(tiny_world, latent, prompt)
    video, new = node("SpacetimeJoinEditedClip").join(plan, frames, 4)
    assert video.shape == (17, 128, 128, 3) and len(new) == 8
    assert torch.equal(video[:9], source)
    # the decoded copies of the known frames are close to them: the model held them
    assert psnr(frames[:5].numpy(), source[4:].numpy()) > 25


@tiny
def test_video_to_video_redraws_more_at_higher_strength(tiny_world):
    source, _ = world_clip(7, 9)
    _, other = world_clip(8, 1)
    (full,) = node("SpacetimeScheduler").schedule("simple", 6, 3.0, 1.0)
    distances = []
    for strength in (0.2, 0.9):
        latent, sigmas, plan = node("SpacetimeVideoToVideo").prepare(tiny_world[2], source, full, strength)
        assert sigmas[0] == pytest.approx(strength) and len(sigmas) == len(full)
        video, _ = node("SpacetimeJoinEditedClip").join(plan, run_graph(tiny_world, latent, other, sigmas), 4)
        distances.append(float((video - source).abs().mean()))
    # low strength keeps the clip (mean change under a tenth of the range), high strength redraws it
    assert distances[0] < 0.1 and distances[1] > 4 * distances[0], distances


@tiny
def test_long_video_node_makes_a_latent_that_video_combine_and_vae_decode_decode_alike(
    tiny_world, monkeypatch
):
    """Long Video -> Video Combine (streamed) and -> VAE Decode, as the long-video workflow wires them."""
    dit, text_encoder, vae = tiny_world
    positive, negative = node("SpacetimeTextEncode").encode(text_encoder, "a red circle moving left", "")
    (sigmas,) = node("SpacetimeScheduler").schedule("simple", 2, 3.0, 1.0)
    bars, ticks = [], []
    monkeypatch.setattr(
        host, "progress_ticker", lambda total, *a, **k: bars.append(total) or (lambda: ticks.append(1))
    )
    (latent,) = node("SpacetimeLongVideo").sample(
        dit, vae, positive, negative, sigmas, 64, 64, 41, 17, 8, 1.0, "euler", 5.0, 0
    )
    # 41 frames = 11 latent frames: windows of 5 latent frames, each later one opening with 2 and adding 3
    assert latent["samples"].shape == (1, 12, 11, 8, 8)
    # one bar: 2 steps in each of 3 windows, and the 5 latent frames of each of the first 2 windows
    # decoded to open the next (a tick per latent frame, so cancel is heard during the decode too)
    assert bars == [2 * 3 + 2 * 5] and len(ticks) == bars[0]
    assert latent[WINDOWS_KEY]["openings"].shape == (1, 12, 4, 8, 8)
    streamed = torch.cat(list(_frames(None, latent, vae)().chunks))
    (decoded,) = node("SpacetimeVAEDecode").decode(vae, latent)
    assert streamed.shape == (41, 64, 64, 3) and torch.equal(decoded, streamed)
    plain = torch.cat(list(vae.decode_frames(latent["samples"])))  # as one latent: other decoders' view
    assert torch.equal(streamed[:17], plain[:17]) and not torch.equal(streamed[17:], plain[17:])


def test_editing_nodes_refuse_bad_input_clearly():
    class FakeVAE:  # the parts of a VAE the nodes read before encoding
        temporal_stride, spatial_stride, latent_channels = 4, 8, 3

        def check_size(self, frames, height, width):
            if height % 8 or width % 8:
                raise ValueError(f"width={width} must be a multiple of 8 (the VAE's stride).")

    with pytest.raises(
        ValueError, match=r"video is 20x16: width=20 must be a multiple of 8.*Resize it first"
    ):
        node("SpacetimeExtendVideo").prepare(FakeVAE(), torch.rand(9, 16, 20, 3), "forward", 8, 5)
    with pytest.raises(ValueError, match="direction 'sideways'"):
        node("SpacetimeExtendVideo").prepare(FakeVAE(), torch.rand(9, 16, 16, 3), "sideways", 8, 5)


class Bars:
    """Stands in for host.progress_ticker: records each bar's total and the ticks it got."""

    def __init__(self):
        self.bars: list[list[int]] = []  # [total, ticks]

    def ticker(self, total: int, description: str = "", node_id=None):
        bar = [total, 0]
        self.bars.append(bar)

        def tick():
            bar[1] += 1

        return tick


@tiny
def test_every_editing_node_ends_its_progress_bars_exactly_at_their_total(tiny_world, monkeypatch):
    """Regression: the nodes counted the encode's work themselves and got it wrong (extend backward did 4
    units of work on a bar of 2; connect and loop 6 on a bar of 4); the library now sizes its own bars."""
    dit, text_encoder, vae = tiny_world
    bars = Bars()
    monkeypatch.setattr(host, "progress_ticker", bars.ticker)
    clip9, clip13 = torch.rand(9, 64, 64, 3), torch.rand(13, 64, 64, 3)
    (full,) = node("SpacetimeScheduler").schedule("simple", 2, 3.0, 1.0)
    positive, negative = node("SpacetimeTextEncode").encode(text_encoder, "a red circle moving left", "")
    runs = {
        "image to video": lambda: node("SpacetimeImageToVideo").prepare(vae, clip9[:2], 64, 64, 9, "crop"),
        "image to video, held": lambda: node("SpacetimeImageToVideo").prepare(
            vae, clip9[:2], 64, 64, 9, "crop", "held"
        ),
        "video to video": lambda: node("SpacetimeVideoToVideo").prepare(vae, clip13[:11], full, 0.5),
        "extend forward": lambda: node("SpacetimeExtendVideo").prepare(vae, clip13, "forward", 8, 9),
        "extend backward": lambda: node("SpacetimeExtendVideo").prepare(vae, clip13, "backward", 8, 5),
        "connect": lambda: node("SpacetimeConnectVideos").prepare(vae, clip9, clip13, 8, 5),
        "loop": lambda: node("SpacetimeLoopVideo").prepare(vae, clip13, 8, 5),
        "long video": lambda: node("SpacetimeLongVideo").sample(
            dit, vae, positive, negative, full, 64, 64, 41, 17, 8, 1.0, "euler", 5.0, 0
        ),
    }
    expected_work = {  # latent frames encoded (or steps and decodes, for long video), counted by hand
        "image to video": 2,  # one latent frame for each of the 2 images
        "image to video, held": 4,  # each image held for 5 frames: 2 latent frames each
        "video to video": 4,  # 11 frames padded to 13: 4 latent frames
        "extend forward": 3,  # the last 9 frames
        "extend backward": 4,  # the first 4 frames after a 9-frame still lead-in: 13 frames
        "connect": 2 + 4,  # the first clip's last 5 frames; the second's first 4 after the lead-in
        "loop": 2 + 4,
        "long video": 2 * 3 + 2 * 5,  # 2 steps in each of 3 windows; the 2 decodes for the next openings
    }
    for name, run in runs.items():
        bars.bars.clear()
        run()
        assert bars.bars and all(ticks == total for total, ticks in bars.bars), (name, bars.bars)
        assert sum(total for total, _ in bars.bars) == expected_work[name], (name, bars.bars)
