"""Storyboard key frames: each later shot without an image first gets a frame of its own prompt (the first
frame of one window made from that prompt alone), which Long Video holds where an image would be held."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_long_video import tiny
from test_storyboard_images import QUIET, SETTINGS, _long_video

from spacetime.cli import _read_storyboard, build_parser
from spacetime.editing.long_video import Windows, held_latent
from spacetime.editing.storyboard import Script, Storyboard, parse_storyboard, shot_images
from spacetime.nodes.text import SpacetimeStoryboard
from spacetime.pipeline import edit_video, encode_storyboard, load_tiny_world, settings_sampling
from spacetime.samplers.guidance import Guider
from spacetime.vae import frames_to_video

BOARD = "0 | a red circle on a blue background\n16f | a green square on a blue background | image: 1\n" + (
    "32f | a yellow star on a blue background\n48f | a white cross on a blue background"
)


def _storyboard(key_frames: bool, transition: float = 8.0) -> Storyboard:
    shots = parse_storyboard(BOARD, fps=16)
    script = Script(tuple(shots), transition, 16.0, shot_images(shots, torch.rand(1, 4, 4, 3)), key_frames)
    return Storyboard(script, torch.zeros(4, 2, 4))


def test_key_frames_go_to_later_shots_without_an_image_where_an_image_would_be_held():
    # shot 1 has its image, held from 16 + 4 = frame 20 (latent frame 6: frames 21..24); shots 2 and 3 from
    # 32 + 4 and 48 + 4: latent frames 10 and 14
    windows = Windows(window=30, overlap=2, stride=4)  # one window of up to 30 latent frames: nothing moves
    assert _storyboard(True).image_frames(windows, 21) == {6: 1}
    assert _storyboard(True).key_frames(windows, 21) == {10: 2, 14: 3}
    assert _storyboard(True).key_frames(windows, 14) == {10: 2}  # the last one would be past the video's end
    assert _storyboard(False).key_frames(windows, 21) == {}
    # in Tiny World's windows (new latent frames 0-4, 5-7, 8-10, 11-13, ...) 10 is a window's last new frame
    # and 14 one's first: held at 9 and 15, which the windows that reach them also move on from
    assert _storyboard(True).key_frames(Windows(5, 2, 4), 21) == {9: 2, 15: 3}
    # the first shot never gets one: it opens the video from its own prompt
    alone = Storyboard(
        Script(tuple(parse_storyboard("0 | a", fps=16)), key_frames=True), torch.zeros(1, 2, 4)
    )
    assert alone.key_frames(windows, 21) == {}


def test_the_key_frames_setting_travels_with_the_timed_conditioning():
    for key_frames in (True, False):
        back = Storyboard.from_conditioning(_storyboard(key_frames).conditioning())
        assert back.script.key_frames is key_frames
    legacy = _storyboard(True).conditioning()
    for entry in legacy:  # a conditioning written before the setting existed: no key frames
        del entry[1]["spacetime_shot"]["key_frames"]
    assert Storyboard.from_conditioning(legacy).script.key_frames is False


def test_generate_makes_key_frames_unless_told_not_to(tmp_path):
    board = tmp_path / "board.txt"
    board.write_text("0 | a\n1 | b\n")
    for extra, expected in (([], True), (["--no-key-frames"], False)):
        args = build_parser().parse_args(["generate", "--storyboard", str(board), *extra])
        assert _read_storyboard(args).key_frames is expected


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu", dtype=torch.float32)


@tiny
def test_a_key_frame_is_the_first_frame_of_its_prompt_made_alone_and_long_video_holds_it(tiny_world):
    dit, text_encoder, vae = tiny_world
    board = "0 | a red circle on a blue background\n1s | a green square on a blue background"
    made = _long_video(tiny_world, board, None, frames=57)
    made = replace(
        made, storyboard=replace(made.storyboard, script=replace(made.storyboard.script, key_frames=True))
    )
    # the shot at 16 with a 4-frame transition: meant for frame 18, latent frame 5 (frames 17..20), the
    # second window's first new frame, so held at its next: latent frame 6 (frames 21..24)
    frame = 6
    assert list(made.key_frame_shots) == [frame]
    keys = made._key_frames(vae.decode, lambda: None)
    # the second prompt alone, one window (17 frames) from the video's seed and settings
    script = Script(tuple(parse_storyboard("0 | a green square on a blue background", fps=16)))
    storyboard, negative = encode_storyboard(text_encoder, script, "")
    alone = Guider(dit, storyboard.contexts, negative, SETTINGS.cfg)
    first = edit_video(alone, settings_sampling(SETTINGS), vae, torch.zeros(1, 12, 5, 8, 8), progress=QUIET)[
        :1
    ]
    assert torch.allclose(keys[frame], frames_to_video(first), atol=1 / 255)
    latent = made.latent(QUIET)["samples"]
    assert torch.equal(latent[:, :, frame : frame + 1], held_latent(keys[frame], 4, vae.encode))
    plain = _long_video(tiny_world, board, None, frames=57).latent(QUIET)["samples"]
    assert torch.equal(plain[:, :, :5], latent[:, :, :5])  # the first window does not see it
    assert (plain[:, :, frame] - latent[:, :, frame]).abs().mean() > 0.1


@tiny
def test_the_storyboard_node_turns_key_frames_on_by_default(tiny_world):
    text_encoder = tiny_world[1]
    board = "0 | a red circle\n1 | a green square"
    on, _ = SpacetimeStoryboard().encode(text_encoder, board, "", 16.0, 1.0)
    off, _ = SpacetimeStoryboard().encode(text_encoder, board, "", 16.0, 1.0, key_frames=False)
    assert Storyboard.from_conditioning(on).script.key_frames is True
    assert Storyboard.from_conditioning(off).script.key_frames is False
