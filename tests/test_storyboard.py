"""Storyboards: the parser (valid and invalid scripts), which shots each Long Video window sees and with
what weights, guidance towards a prompt that changes along the frames, and that a one-line storyboard
makes today's Long Video bit for bit."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_long_video import tiny

from spacetime.editing.long_video import LongVideo, Windows
from spacetime.editing.storyboard import (
    Script,
    Shot,
    Storyboard,
    fit_shots,
    latent_frame_times,
    parse_storyboard,
    shot_weights,
    storyboard_frames,
)
from spacetime.nodes.editing import SpacetimeLongVideo
from spacetime.nodes.prompting import SpacetimeShotPrompt
from spacetime.nodes.text import SpacetimeStoryboard
from spacetime.pipeline import (
    TINY_WORLD_SETTINGS,
    encode_storyboard,
    load_tiny_world,
    long_video,
    prompt_guider,
)
from spacetime.samplers.guidance import (
    Timeline,
    classifier_free_guidance,
    conditioning_context,
    timed_guidance,
)
from spacetime.samplers.schedules import schedule_by_name

from media import decode
from test_cli import run

SCRIPT = """
# a comment, and a blank line above
0 | a red circle moving left
4s | a green square moving up
130f-12 | a yellow star turning
12 | a blue triangle shrinking
"""


def test_parser_reads_seconds_frames_and_minutes_and_fills_each_end_from_the_next_start():
    shots = parse_storyboard(SCRIPT, fps=16)
    assert [(s.start, s.end, s.line) for s in shots] == [
        (0, 64, 3),
        (64, 130, 4),
        (130, 192, 5),
        (192, None, 6),
    ]
    assert shots[2].prompt == "a yellow star turning"
    assert parse_storyboard("0-1:30 | a long shot", fps=10)[0].end == 900
    assert parse_storyboard("0 | a | b", fps=16)[0].prompt == "a | b"  # only the first bar splits
    assert storyboard_frames(parse_storyboard("0-16 | x", fps=16)) == 257
    assert storyboard_frames(parse_storyboard("0-15f | x", fps=16)) == 17  # rounded up to 4k+1
    assert storyboard_frames(shots) is None


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("", "has no shots"),
        ("# only a comment", "has no shots"),
        ("0 a red circle", "line 1: '0 a red circle' has no prompt"),
        ("0 |   ", "line 1: .* has no prompt"),
        ("2 | late start", "line 1: the first shot starts at frame 32"),
        ("0 | a\nsoon | b", "line 2: cannot read the time 'soon'"),
        ("0 | a\n4.5f | b", "line 2: '4.5f' is not a whole number of frames"),
        ("0-5 | a\n4 | b", "line 1: ends at frame 80, which overlaps line 2"),
        ("0-3 | a\n4 | b", "line 1: ends at frame 48, which leaves a gap before line 2"),
        ("0 | a\n4 | b\n2 | c", "line 3: starts at frame 32, not after line 2's start"),
        ("0-0 | a", "line 1: the shot ends .* before it starts"),
        ("\n".join(f"{n}f | shot {n}" for n in range(300)), "has 300 shots; at most 256"),
    ],
)
def test_parser_names_the_line_of_each_bad_script(script, message):
    with pytest.raises(ValueError, match=message):
        parse_storyboard(script, fps=16)


def test_fitting_to_the_video_closes_the_last_shot_and_refuses_times_past_its_end():
    shots = parse_storyboard(SCRIPT, fps=16)
    assert fit_shots(shots, 257)[-1] == Shot(192, 257, "a blue triangle shrinking", 6)
    with pytest.raises(
        ValueError, match=r"line 6 starts at frame 192 \(12 s at 16 fps\), past the video's 161"
    ):
        fit_shots(shots, 161, fps=16)
    closed = parse_storyboard("0 | a\n4-8 | b", fps=16)
    assert fit_shots(closed, 129)[-1].end == 129  # 128 rounded up to 4k+1: the last frame belongs to it
    with pytest.raises(ValueError, match="line 2 ends at frame 128, past the video's 81"):
        fit_shots(closed, 81)
    with pytest.raises(ValueError, match=r"the storyboard ends at frame 128 .*line 2.* runs 161 frames"):
        fit_shots(closed, 161)


def test_weights_move_linearly_over_the_transition_centred_on_each_change():
    times = torch.tensor([0.0, 10, 14, 16, 18, 22, 40], dtype=torch.float64)
    weights = shot_weights([0, 16, 40], times, transition=8)
    assert torch.allclose(weights.sum(0), torch.ones(7, dtype=torch.float64))
    assert weights[:, 0].tolist() == [1, 0, 0] and weights[:, 2].tolist() == [0.75, 0.25, 0]
    assert weights[:, 3].tolist() == [0.5, 0.5, 0] and weights[:, 5].tolist() == [0, 1, 0]
    assert weights[:, 6].tolist() == [0, 0.5, 0.5]
    cut = shot_weights([0, 16], times, transition=0)  # no transition: the new shot from its first frame
    assert cut[1].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert latent_frame_times(0, 3, 4).tolist() == [0.0, 2.5, 6.5]  # frame 0, then the middle of each 4


def test_each_window_sees_the_shots_its_latent_frames_fall_in():
    contexts = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)
    shots = tuple(
        Shot(start, end, p, n)
        for n, (start, end, p) in enumerate([(0, 40, "a"), (40, 80, "b"), (80, 97, "c")])
    )
    storyboard = Storyboard(Script(shots, transition=8), contexts)
    inside = storyboard.window(0, 5, 4)  # frames 0..16: the first shot alone
    assert inside.contexts.shape[0] == 1 and torch.equal(inside.contexts[0], contexts[0])
    crossing = storyboard.window(8, 5, 4)  # latent frames 8..12 at frames 30.5 .. 46.5: a then b
    assert crossing.contexts[:, 0, 0].tolist() == [0.0, 1.0]
    assert torch.allclose(crossing.weights.sum(0), torch.ones(5, dtype=torch.float64))
    assert crossing.weights[1].tolist() == [0.0, 0.0, 0.3125, 0.8125, 1.0]
    last = storyboard.window(20, 5, 4)  # frames 78.5 .. 94.5: the change at 80 falls inside
    assert last.contexts[:, 0, 0].tolist() == [1.0, 2.0]


def test_timed_guidance_blends_each_prompt_velocity_per_token_and_guides_once():
    def velocity(x, sigma, context):  # a velocity that depends on the context's first value
        return x * context[:, :1, :1] + sigma.view(-1, 1, 1)

    x = torch.randn(1, 6, 2)
    sigma = torch.tensor([0.5])
    conds = torch.tensor([1.0, 3.0]).view(2, 1, 1).expand(2, 2, 3)
    uncond = torch.full((1, 2, 3), -1.0)
    weights = torch.tensor([[1, 1, 0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5, 1, 1]]).unsqueeze(-1)
    for batched in (True, False):
        guided = timed_guidance(velocity, conds, weights, uncond, 4.0, batched)(x, sigma)
        v = [velocity(x, sigma, c[None]) for c in conds]
        v_uncond = velocity(x, sigma, uncond)
        expected = v_uncond + 4.0 * (weights[0] * v[0] + weights[1] * v[1] - v_uncond)
        assert torch.allclose(guided, expected)
    one = timed_guidance(velocity, conds[:1], torch.ones(1, 6, 1), uncond, 4.0)(x, sigma)
    assert torch.allclose(one, classifier_free_guidance(velocity, conds[:1], uncond, 4.0)(x, sigma))
    no_guidance = timed_guidance(velocity, conds, weights, None, 1.0)(x, sigma)
    assert torch.allclose(
        no_guidance, weights[0] * velocity(x, sigma, conds[:1]) + weights[1] * velocity(x, sigma, conds[1:])
    )


def test_timeline_refuses_a_window_of_another_length():
    timeline = Timeline(torch.zeros(2, 3, 4), torch.full((2, 5), 0.5))
    assert timeline.token_weights(5, 4).shape == (2, 20, 1)
    with pytest.raises(ValueError, match="a timeline of 5 latent frames cannot weigh a window of 6"):
        timeline.token_weights(6, 4)


def test_storyboard_travels_as_a_timed_conditioning_and_is_read_back():
    shots = (Shot(0, 16, "a", 1), Shot(16, None, "b", 2))
    storyboard = Storyboard(Script(shots, 4.0, 16.0), torch.randn(2, 5, 8))
    conditioning = storyboard.conditioning()
    assert len(conditioning) == 2 and conditioning[1][1]["spacetime_shot"]["start"] == 16
    back = Storyboard.from_conditioning(conditioning)
    assert back.shots == (Shot(0, 16, "", 1), Shot(16, None, "", 2)) and back.transition == 4.0
    assert torch.equal(back.contexts, storyboard.contexts) and back.fps == 16.0
    assert Storyboard.from_conditioning([[torch.zeros(1, 5, 8), {}]]) is None  # any other prompt
    with pytest.raises(ValueError, match="lacks start, end or line"):
        Storyboard.from_conditioning([[torch.zeros(1, 5, 8), {"spacetime_shot": {"start": 0}}]])
    with pytest.raises(ValueError, match="mixes a storyboard's shots with other prompts"):
        Storyboard.from_conditioning([*conditioning, [torch.zeros(1, 5, 8), {}]])


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu", dtype=torch.float32)


def QUIET(*_):
    return lambda: None


SETTINGS = replace(TINY_WORLD_SETTINGS, steps=2, solver="euler", frames=33, seed=3, width=64, height=64)


def _frames(stream) -> torch.Tensor:
    return torch.cat(list(stream.chunks))


@tiny
def test_a_one_line_storyboard_is_todays_long_video_bit_for_bit(tiny_world):
    dit, text_encoder, vae = tiny_world
    prompt = "a red circle moving left on a blue background"
    today = _frames(long_video(dit, text_encoder, vae, prompt, "", SETTINGS, progress=QUIET))
    shots = parse_storyboard(f"0 | {prompt}", fps=16)
    made = long_video(dit, text_encoder, vae, Script(tuple(shots)), "", SETTINGS, progress=QUIET)
    assert today.shape[0] == 33 and torch.equal(_frames(made), today)


@tiny
def test_windows_follow_their_shots_and_a_change_costs_one_extra_pass_only_where_it_falls(tiny_world):
    dit, text_encoder, vae = tiny_world
    shots = parse_storyboard(
        "0 | a red circle on a blue background\n1s | a green square on a blue background", fps=16
    )
    storyboard, negative = encode_storyboard(text_encoder, Script(tuple(shots), 4.0, 16), "")
    guider = prompt_guider(dit, text_encoder, "", "", SETTINGS)
    guider = replace(guider, positive=storyboard.contexts[:1], negative=negative)
    batches = []
    original = dit.forward_tokens

    def counting(tokens, *args, **kwargs):
        batches.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    windows = Windows.from_frames(17, 8, vae.temporal_stride)
    sampling = replace(SETTINGS, frames=41)
    made = LongVideo(guider, _sampling(sampling), vae, (41, 64, 64), windows, storyboard=storyboard)
    assert made.count == 3 and made.storyboard.shots[-1].end == 41
    dit.forward_tokens = counting
    try:
        frames = _frames(made.frames(lambda *_: lambda: None))
    finally:
        del dit.forward_tokens
    # the change at frame 16 ramps over frames 14..18. Window 1: latent frames 0..4 (frames 0..14.5, the
    # last inside the ramp) and window 2: 3..7 (frames 10.5..26.5) run both prompts and the negative;
    # window 3: 6..10 (frames 22.5..38.5) the second shot alone.
    assert batches == [3] * 4 + [2] * 2 and frames.shape[0] == 41


def _sampling(settings):
    from spacetime.pipeline import settings_sampling

    return settings_sampling(settings)


@tiny
def test_storyboard_node_feeds_long_video_which_follows_its_shots(tiny_world):
    dit, text_encoder, vae = tiny_world
    script = "0 | a red circle on a blue background\n8f | a green square on a blue background"
    positive, negative = SpacetimeStoryboard().encode(text_encoder, script, "", 16.0, 0.25)
    assert [entry[1]["spacetime_shot"]["start"] for entry in positive] == [0, 8]
    assert positive[0][1]["spacetime_shot"]["transition"] == 4.0  # 0.25 s at 16 fps
    contexts = text_encoder.encode(
        ["a red circle on a blue background", "a green square on a blue background", ""]
    )
    torch.testing.assert_close(torch.cat([positive[0][0], positive[1][0], negative[0][0]]), contexts)
    sigmas = schedule_by_name("simple")(2, shift=3.0)
    node = SpacetimeLongVideo()
    arguments = dict(dit=dit, vae=vae, negative=negative, sigmas=sigmas, width=64, height=64, frames=25,
                     window_frames=17, overlap_frames=8, correction=1.0, solver="euler", cfg=5.0, seed=1)  # fmt: skip
    (latent,) = node.sample(positive=positive, **arguments)
    assert latent["samples"].shape == (1, 12, 7, 8, 8)
    (first_only,) = node.sample(positive=[[positive[0][0], {}]], **arguments)  # the first prompt alone
    (second_only,) = node.sample(positive=[[positive[1][0], {}]], **arguments)  # a plain prompt
    # window 1 (frames 0..14.5, the change at 8 inside it) differs from both; nothing is a copy
    assert not torch.equal(latent["samples"][:, :, :5], first_only["samples"][:, :, :5])
    assert not torch.equal(latent["samples"][:, :, :5], second_only["samples"][:, :, :5])
    with pytest.raises(
        ValueError, match=r"storyboard line 2 starts at frame 64 .* past the video's 25 frames"
    ):
        late = SpacetimeStoryboard().encode(text_encoder, script.replace("8f", "4"), "", 16.0, 1.0)[0]
        node.sample(positive=late, **arguments)


def test_dit_denoiser_sends_a_storyboard_to_long_video():
    storyboard = Storyboard(Script((Shot(0, 8, "a", 1), Shot(8, None, "b", 2))), torch.zeros(2, 4, 8))
    with pytest.raises(ValueError, match=r"a storyboard of 2 shots.*connect it to Long Video"):
        conditioning_context(storyboard.conditioning(), 1, "positive")


def test_shot_prompt_writes_each_line_of_a_storyboard_and_keeps_its_times():
    required = SpacetimeShotPrompt.INPUT_TYPES()["required"]
    inputs = {name: spec[1].get("default", "none") for name, spec in required.items()}
    inputs.update(shot_size="wide shot", lighting="golden hour")
    script = "# the fox\n0 | a fox sleeping in its den\n\n4.5-9 | a fox trotting through snow\n9 | a fox on a ridge"
    (written,) = SpacetimeShotPrompt().write(**inputs, storyboard=script)
    lines = written.splitlines()
    assert lines[0] == "# the fox" and lines[2] == ""
    (caption,) = SpacetimeShotPrompt().write(**{**inputs, "idea": "a fox trotting through snow"})
    assert lines[3] == f"4.5-9 | {caption}" and "wide shot" in caption and "golden" in caption
    assert [shot.start for shot in parse_storyboard(written, 16)] == [0, 72, 144]
    with pytest.raises(ValueError, match=r"storyboard line 2: .* has no prompt"):
        SpacetimeShotPrompt().write(**inputs, storyboard="0 | fine\n4 no bar")


def test_generate_storyboard_checks_its_file_before_loading_anything(tmp_path):
    board = tmp_path / "board.txt"
    board.write_text("0 | a red circle moving left\n2 | a green square moving up\n")
    both = run("generate", "a prompt", "--storyboard", str(board), output=tmp_path)
    neither = run("generate", output=tmp_path)
    for result in (both, neither):
        assert (
            result.returncode == 2 and "needs a prompt or --storyboard FILE (one of the two)" in result.stderr
        )
    short = run("generate", "--storyboard", str(board), "--frames", "17", output=tmp_path)
    assert (
        short.returncode == 2
        and "line 2 starts at frame 32 (2 s at 16 fps), past the video's 17" in short.stderr
    )
    assert "Loading" not in short.stderr and not list(tmp_path.glob("**/*.mp4"))
    board.write_text("0 | a\nlater | b\n")
    unreadable = run("generate", "--storyboard", str(board), output=tmp_path)
    assert (
        unreadable.returncode == 2 and "storyboard line 2: cannot read the time 'later'" in unreadable.stderr
    )
    board.write_bytes(b"0 | caf\xe9\n")
    latin = run("generate", "--storyboard", str(board), output=tmp_path)
    assert latin.returncode == 2 and "is not UTF-8 text" in latin.stderr
    missing = run("generate", "--storyboard", str(tmp_path / "none.txt"), output=tmp_path)
    assert missing.returncode == 2 and "none.txt: no such file" in missing.stderr


@tiny
def test_generate_storyboard_writes_a_video_as_long_as_its_last_shot(tmp_path):
    board = tmp_path / "board.txt"
    board.write_text("0 | a red circle on a blue background\n12f-20f | a green square on a blue background\n")
    result = run("generate", "--storyboard", str(board), "--width", "64", "--height", "64", "--steps", "2",
                 "--dtype", "fp32", "-o", str(tmp_path / "board.mp4"), output=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    video = decode(tmp_path / "board.mp4")
    assert video.frames.shape == (21, 64, 64, 3)  # 20 frames rounded up to 4k+1


@tiny
def test_colour_correction_takes_each_shots_first_window_as_its_reference(tiny_world, monkeypatch):
    """Another shot's colours are not drift: windows inside a shot are corrected towards that shot's first
    window, and a window two shots share is left as it is made."""
    import spacetime.editing.long_video as module

    dit, text_encoder, vae = tiny_world
    shots = parse_storyboard(
        "0 | a red circle on a blue background\n24f | a green square on a blue background", 16
    )
    storyboard, negative = encode_storyboard(text_encoder, Script(tuple(shots), 4.0, 16), "")
    storyboard = storyboard.fitted(65)
    guider = replace(prompt_guider(dit, text_encoder, "", "", SETTINGS), positive=storyboard.contexts[:1])
    guider = replace(guider, negative=negative)
    references = []
    original = module.match_mean

    def recording(new, reference, amount):
        references.append(reference)
        return original(new, reference, amount)

    monkeypatch.setattr(module, "match_mean", recording)
    windows = Windows.from_frames(17, 8, vae.temporal_stride)
    codec = module.Codec(vae.encode, vae.decode)
    made = list(
        module.long_video_windows(
            guider, _sampling(SETTINGS), (1, 12, 17, 8, 8), windows, codec, storyboard=storyboard
        )
    )
    # windows' latent frames 0-4 (frames 0-14.5: shot 1), 3-7 and 6-10 (10.5-26.5, 22.5-38.5: the change at
    # 24 ramps over 22..26), 9-13 (34.5-50.5: shot 2's first), 12-16 (shot 2, corrected towards it)
    seen = [storyboard.seen(first, 5, 4) for first in (0, 3, 6, 9, 12)]
    assert seen == [[0], [0, 1], [0, 1], [1], [1]] and len(made) == 5
    assert len(references) == 1 and references[0] is made[3].new
