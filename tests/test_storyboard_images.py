"""Storyboard shots that start from an image: the `| image: REF` field, finding the images (the node's batch,
the command line's files), where each is held, that Long Video keeps it exactly, that a first shot's image
is Long Video's start image bit for bit, and what an image-to-video model is given for it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image
from test_long_video import tiny

from spacetime.editing.condition import opening_condition
from spacetime.editing.long_video import LongVideo, Windows, held_latent
from spacetime.editing.storyboard import (
    Script,
    Storyboard,
    image_latent_frame,
    parse_storyboard,
    read_shot_images,
    rewrite_storyboard,
    shot_images,
)
from spacetime.nodes.editing import SpacetimeLongVideo
from spacetime.nodes.text import SpacetimeStoryboard
from spacetime.pipeline import (
    TINY_WORLD_SETTINGS,
    encode_storyboard,
    load_tiny_world,
    prompt_guider,
    settings_sampling,
)
from spacetime.samplers.schedules import schedule_by_name
from spacetime.vae import frames_to_video

from media import decode
from test_cli import run

BOARD = "0 | a red circle moving left\n1s | a green square moving up | Image : 2\n2s | a | b | image:fox.png"


def test_an_image_field_ends_a_line_and_a_bar_without_it_stays_in_the_prompt():
    shots = parse_storyboard(BOARD, fps=16)
    assert [(shot.prompt, shot.image) for shot in shots] == [
        ("a red circle moving left", None),
        ("a green square moving up", "2"),
        ("a | b", "fox.png"),
    ]
    with pytest.raises(ValueError, match=r"line 1: `image:` names no image"):
        parse_storyboard("0 | a red circle | image:  ", fps=16)
    with pytest.raises(ValueError, match=r"line 1: .* has no prompt"):
        parse_storyboard("0 | image: 1", fps=16)
    # Shot Prompt rewrites the prompt and keeps the image
    assert rewrite_storyboard(BOARD, str.upper).splitlines()[1:] == [
        "1s | A GREEN SQUARE MOVING UP | image: 2",
        "2s | A | B | image: fox.png",
    ]


def test_images_are_found_by_their_number_in_the_nodes_batch():
    shots = parse_storyboard(BOARD.replace("fox.png", "1"), fps=16)
    batch = torch.rand(2, 8, 8, 3)
    found = shot_images(shots, batch)
    assert found[0] is None and torch.equal(found[1], batch[1:2]) and torch.equal(found[2], batch[:1])
    assert shot_images(parse_storyboard("0 | a", fps=16), None) == ()
    for images, message in ((None, "no images are connected"), (batch[:1], "images holds 1")):
        with pytest.raises(ValueError, match=rf"line 2: image '2': {message}\. Name an image by its number"):
            shot_images(shots, images)
    with pytest.raises(ValueError, match=r"line 3: image 'fox.png': images holds 2"):
        shot_images(parse_storyboard(BOARD, fps=16), batch)


def test_images_are_read_from_files_beside_the_storyboard(tmp_path):
    pixels = torch.randint(0, 256, (6, 10, 3), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "fox.png")
    shots = parse_storyboard("0 | a\n1 | b | image: fox.png", fps=16)
    found = read_shot_images(shots, tmp_path)
    assert found[0] is None and torch.equal(found[1], pixels[None].float() / 255)
    with pytest.raises(FileNotFoundError, match=r"line 2: image 'cat.png': no such file .*cat.png"):
        read_shot_images(parse_storyboard("0 | a\n1 | b | image: cat.png", fps=16), tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"line 2: cannot read the image .*notes.png"):
        read_shot_images(parse_storyboard("0 | a\n1 | b | image: notes.png", fps=16), tmp_path)


def test_an_image_is_held_over_the_latent_frame_nearest_its_shots_start():
    # latent frame j >= 1 holds frames 4j-3 .. 4j
    starts, frames = (0, 1, 2, 3, 4, 5, 16, 62, 64), [0, 1, 1, 2, 2, 2, 5, 16, 17]
    assert [image_latent_frame(start, 4) for start in starts] == frames
    shots = parse_storyboard("0 | a | image: 1\n16f | b\n64f | c | image: 1", fps=16)
    storyboard = Storyboard(
        Script(tuple(shots), 0.0, 16.0, shot_images(shots, torch.rand(1, 4, 4, 3))), torch.zeros(3, 2, 4)
    )
    one_window = Windows(window=40, overlap=2, stride=4)  # one window of 40 latent frames: nothing moves
    assert storyboard.image_frames(one_window, 40) == {0: 0, 17: 2}
    # with a transition, at its end: 64 + 8 / 2 = 68 (frames 69..72)
    assert replace(storyboard, script=replace(storyboard.script, transition=8.0)).image_frames(
        one_window, 40
    ) == {0: 0, 18: 2}
    # in Tiny World's windows (5 latent frames, continuing from 2), latent frame 17 is a window's first new
    # frame (the windows add 5-7, 8-10, ..., 17-19): held at 18 instead, which that window reaches and leaves
    assert storyboard.image_frames(Windows(5, 2, 4), 40) == {0: 0, 18: 2}
    close = parse_storyboard("0 | a\n16f | b | image: 1\n17f | c | image: 1", fps=16)
    storyboard = Storyboard(
        Script(tuple(close), 0.0, 16.0, shot_images(close, torch.rand(1, 4, 4, 3))), torch.zeros(3, 2, 4)
    )
    with pytest.raises(ValueError, match="lines 2 and 3 would hold their images over the same 4 frames"):
        storyboard.image_frames(one_window, 40)


def test_a_shots_image_travels_with_the_timed_conditioning():
    shots = parse_storyboard("0 | a\n1 | b | image: 1", fps=16)
    image = torch.rand(1, 4, 4, 3)
    storyboard = Storyboard(Script(tuple(shots), 4.0, 16.0, (None, image)), torch.randn(2, 3, 8))
    back = Storyboard.from_conditioning(storyboard.conditioning())
    assert back.shots[1].image == "1" and back.script.image(1) is image and back.script.image(0) is None
    with pytest.raises(ValueError, match=r"line 2: its image '1' was not found \(none given\)"):
        Script(tuple(shots), 4.0, 16.0, (None, None))


def test_an_image_to_video_model_is_given_a_held_image_through_its_condition():
    encoded = []

    def encode(video):  # a stand-in VAE: every 4th frame after the first, one channel
        encoded.append(video)
        return torch.cat([video[:, :1, :1], video[:, :1, 1::4]], dim=2)

    known, image = torch.full((1, 3, 1, 2, 2), 0.3), torch.full((1, 3, 1, 2, 2), -0.7)
    condition = opening_condition(known, 5, 4, encode, {3: image})
    frames = encoded[0][0, 0, :, 0, 0]
    assert torch.equal(frames[9:13], torch.full((4,), -0.7)) and frames[0] == 0.3
    assert torch.equal(
        frames[torch.tensor([i for i in range(17) if i not in (0, 9, 10, 11, 12)])], torch.zeros(12)
    )
    # the mask: latent frame 0 (frame 0) and 3 (frames 9..12) known in all four of their channels
    assert condition.mask[0, :, :, 0, 0].T.tolist() == [[1.0] * 4, [0.0] * 4, [0.0] * 4, [1.0] * 4, [0.0] * 4]


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu", dtype=torch.float32)


SETTINGS = replace(TINY_WORLD_SETTINGS, steps=2, solver="euler", frames=41, seed=3, width=64, height=64)
QUIET = lambda *_: lambda: None  # noqa: E731


def _long_video(tiny_world, board: str, images: torch.Tensor | None, start=None, frames: int = 41):
    dit, text_encoder, vae = tiny_world
    shots = parse_storyboard(board, fps=16)
    script = Script(tuple(shots), 4.0, 16.0, shot_images(shots, images))
    storyboard, negative = encode_storyboard(text_encoder, script, "")
    guider = replace(prompt_guider(dit, text_encoder, "", "", SETTINGS), positive=storyboard.contexts[:1])
    windows = Windows.from_frames(17, 8, vae.temporal_stride)
    sampling = settings_sampling(SETTINGS)
    return LongVideo(
        replace(guider, negative=negative), sampling, vae, (frames, 64, 64), windows, start, None, storyboard
    )


@tiny
def test_long_video_holds_a_shots_image_exactly_in_a_window_left_uncorrected(tiny_world, monkeypatch):
    import spacetime.editing.long_video as module

    corrected = []
    original = module.match_mean
    monkeypatch.setattr(
        module, "match_mean", lambda new, *rest: corrected.append(new.shape[2]) or original(new, *rest)
    )
    images = torch.rand(2, 64, 96, 4)  # RGBA, wider: composited over black, its centre cropped to 64×64
    board = "0 | a red circle on a blue background\n2s | a green square on a blue background | image: 2"
    made = _long_video(tiny_world, board, images, frames=57)
    assert list(made.images) == [9] and made.start is None
    latent = made.latent(QUIET)["samples"]
    vae = tiny_world[2]
    held = held_latent(made.images[9], vae.temporal_stride, vae.encode)
    assert torch.equal(latent[:, :, 9:10], held)
    rgb = images[1:2, :, 16:80, :3] * images[1:2, :, 16:80, 3:]
    assert torch.allclose(made.images[9], frames_to_video(rgb))
    # windows make latent frames 0-4, 5-7 (shot 1, corrected), 8-10 (seeing both shots through the change
    # at 32 and the image: left as made), 11-13 (shot 2's first: its reference) and 14 (corrected)
    assert corrected == [3, 1]


@tiny
def test_a_first_shots_image_is_long_videos_start_image_bit_for_bit(tiny_world):
    images = torch.rand(1, 64, 64, 3)
    board = "0 | a red circle on a blue background | image: 1\n1s | a green square on a blue background"
    made = _long_video(tiny_world, board, images)
    plain = _long_video(tiny_world, board.replace(" | image: 1", ""), None, start=frames_to_video(images))
    assert list(made.images) == [0] and torch.equal(made.start, plain.start)
    assert torch.equal(made.latent(QUIET)["samples"], plain.latent(QUIET)["samples"])
    with pytest.raises(
        ValueError, match="line 1 starts the video from an image, and Long Video's image input"
    ):
        _long_video(tiny_world, board, images, start=frames_to_video(images))
    with pytest.raises(
        ValueError,
        match=r"line 2 starts from an image, held from frame 42 \(the end of its transition\), too near",
    ):
        _long_video(tiny_world, "0 | a\n40f | b | image: 1", images)


@tiny
def test_storyboard_node_takes_images_and_long_video_holds_them(tiny_world):
    dit, text_encoder, vae = tiny_world
    images = torch.rand(2, 64, 64, 3)
    board = "0 | a red circle on a blue background\n16f | a green square on a blue background | image: 2"
    positive, negative = SpacetimeStoryboard().encode(text_encoder, board, "", 16.0, 0.25, images=images)
    assert positive[0][1]["spacetime_shot"].get("image") is None
    assert torch.equal(positive[1][1]["spacetime_shot"]["image"], images[1:2])
    with pytest.raises(ValueError, match="line 2: image '2': no images are connected"):
        SpacetimeStoryboard().encode(text_encoder, board, "", 16.0, 0.25)
    arguments = dict(dit=dit, vae=vae, negative=negative, sigmas=schedule_by_name("simple")(2, shift=3.0),
                     width=64, height=64, frames=25, window_frames=17, overlap_frames=8, correction=1.0,
                     solver="euler", cfg=5.0, seed=1)  # fmt: skip
    (latent,) = SpacetimeLongVideo().sample(positive=positive, **arguments)
    held = held_latent(frames_to_video(images[1:2]), vae.temporal_stride, vae.encode)
    # frame 16's image, nearest latent frame 5: the second window's first new frame, so held at its next, 6
    assert torch.equal(latent["samples"][:, :, 6:7], held)


@tiny
def test_generate_storyboard_starts_a_shot_from_an_image_file(tmp_path):
    colour = torch.tensor([230, 200, 40], dtype=torch.uint8)  # a yellow card
    Image.fromarray(colour.expand(64, 64, 3).contiguous().numpy()).save(tmp_path / "card.png")
    board = tmp_path / "board.txt"
    board.write_text(
        "0 | a red circle on a blue background\n20f | a red circle on a blue background | image: card.png\n"
    )
    options = ("--width", "64", "--height", "64", "--steps", "2", "--dtype", "fp32", "--frames", "41")
    outputs = {}
    for name, text in (
        ("card", board.read_text()),
        ("none", board.read_text().replace(" | image: card.png", "")),
    ):
        board.write_text(text)
        result = run(
            "generate",
            "--storyboard",
            str(board),
            *options,
            "-o",
            str(tmp_path / f"{name}.mp4"),
            output=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        outputs[name] = torch.from_numpy(decode(tmp_path / f"{name}.mp4").frames).float()
    assert outputs["card"].shape == (41, 64, 64, 3)
    # the shot at frame 20 holds its image near its 1 s transition's end, frame 28: latent frame 9 (frames
    # 33..36; 8 is a window's first new frame), which the decoder draws a frame or two later: the card is
    # there, near it, and not without it
    card, none = (
        (outputs[name][29:37] - colour.float()).abs().mean((1, 2, 3)).min() for name in ("card", "none")
    )
    assert (
        card < 20 and none > 4 * card
    )  # within 8% of 255 (the VAE at 64×64, H.264), and far from it without
    board.write_text("0 | a\n1 | b | image: missing.png\n")
    missing = run("generate", "--storyboard", str(board), output=tmp_path)
    assert missing.returncode == 2 and "line 2: image 'missing.png': no such file" in missing.stderr
