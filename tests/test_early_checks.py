"""Mistakes refused before any work is done (issue 35, the hostile-input report's S, C, D, R, Q, W, E, X, Y,
V and L rows): `generate` checks every option before a model is loaded, the schedules refuse steps beyond
their resolution, Video Combine and VAE Decode check their widgets when ComfyUI validates the prompt, and
the nodes check the tensors they are given (NaN, dtype, range, shape, keys) before they use them."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import pytest
import torch

from spacetime.cli import main
from spacetime.editing.long_video import window_seed
from spacetime.nodes import NODE_CLASS_MAPPINGS as NODES
from spacetime.pipeline import Settings, load_tiny_world
from spacetime.samplers.noise import MAX_SEED
from spacetime.samplers.schedules import SCHEDULES, check_steps
from spacetime.video.combine import check_output

NAN = float("nan")
SMALL = ["--width", "32", "--height", "32", "--frames", "5", "--steps", "1"]


def node(name: str, *args, **kwargs):
    instance = NODES[name]()
    return getattr(instance, instance.FUNCTION)(*args, **kwargs)


@pytest.fixture(autouse=True)
def console_log_on_this_tests_stderr():
    """The command line logs to the stderr it first saw: each test's main() gets its own (capsys's)."""
    logger = logging.getLogger("spacetime")
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu")


@pytest.fixture
def output(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "output"
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(folder))
    return folder


@pytest.fixture
def no_work(monkeypatch):
    """Every model loader and the denoiser fail the test when called."""
    import spacetime.dit
    import spacetime.editing.long_video
    import spacetime.pipeline
    import spacetime.text_encoders
    import spacetime.vae

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded, or sampling started, before the options were checked")

    for module, name in (
        (spacetime.pipeline, "load_tiny_world"), (spacetime.dit, "load_dit"),
        (spacetime.text_encoders, "load_text_encoder"), (spacetime.vae, "load_vae"),
        (spacetime.pipeline, "denoise"), (spacetime.editing.long_video, "denoise"),
    ):  # fmt: skip
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture
def no_sampling(monkeypatch):
    """The denoiser fails the test when called (models load as usual)."""
    import spacetime.editing.long_video
    import spacetime.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("sampling started before the options were checked")

    monkeypatch.setattr(spacetime.pipeline, "denoise", refuse)
    monkeypatch.setattr(spacetime.editing.long_video, "denoise", refuse)


def generate(capsys, *options: str) -> tuple[int, str]:
    """Exit status and the last line on stderr (before it, the console's notes of where models ran)."""
    code = main(["generate", "a red circle", *options])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


# Item 2: every output option and every setting a widget bounds, before any model is loaded.
@pytest.mark.parametrize(
    "options,message",
    [
        (["--crf", "-1"], "crf=-1 is outside 0..51 for video/h264-mp4"),  # S25
        (["--crf", "100"], "crf=100 is outside 0..51"),  # S26
        (["--format", "video/vp9-webm", "--crf", "64"], "crf=64 is outside 0..63 for video/vp9-webm"),
        (["--format", "image/gif", "--fps", "60"], "frame_rate=60 is too fast for a GIF"),  # S29
        (["--format", "image/gif", "--fps", "0.001"], "frame_rate=0.001 is too slow for a GIF"),
        (
            ["--format", "video/h265-mp4", *SMALL],
            "video/h265-mp4 needs frames of at least 64x64 pixels, got 32x32",
        ),
        (["--fps", "1e-9"], "frame_rate=1e-09 is outside 0.001..1000 frames per second"),  # S24
        (["--fps", "0.0004"], "frame_rate=0.0004 is outside 0.001..1000"),
        (["--fps", "1001"], "frame_rate=1001 is outside 0.001..1000"),
        (["--fps", "0"], "frame_rate=0.0 must be a positive number"),  # S21
        (["--fps", "nan"], "frame_rate=nan must be a positive number"),  # S22
        (["--fps", "inf"], "frame_rate=inf must be a positive number"),  # S23
        (
            ["--format", "image/webp", "--fps", "0.001", "--frames", "2401"],
            "longer than an animated WebP holds",
        ),
        (["--prefix", "../x"], "'..' parts are not allowed"),  # Q11
        (["--prefix", "/tmp/x"], "absolute paths are not allowed"),
        (["--prefix", "a/\x00b"], "filename_prefix='a/\\x00b' contains"),
        (["--cfg", "-5"], "cfg=-5.0 must be a finite number from 0 to 30.0"),  # S14
        (["--cfg", "1e30"], "cfg=1e+30 is above the largest the nodes take, 30.0"),  # S15
        (["--cfg", "nan"], "cfg=nan must be a finite number"),  # S12
        (["--cfg", "inf"], "cfg=inf must be a finite number"),  # S13
        (
            ["--width", "65536", "--height", "65536", "--frames", "1"],
            "width=65536 is above the largest",
        ),  # S42
        (["--height", "8200"], "height=8200 is above the largest the nodes take, 8192"),
        (["--width", "0"], "width=0 must be a whole number from 1 to 8192"),  # S02
        (["--width", "-64"], "width=-64 must be a whole number from 1 to 8192"),  # S03
        (["--frames", "0"], "frames=0 must be a whole number from 1 to 57601"),  # S07
        (["--frames", "-3"], "frames=-3 must be a whole number from 1"),  # S08
        (["--frames", "57605"], "frames=57605 is above the largest the nodes take, 57601"),
        (["--steps", "0"], "steps=0 must be a whole number, at least 1"),  # S10
        (["--steps", "-1"], "steps=-1 must be a whole number, at least 1"),  # S11
        (["--steps", "1001"], "steps=1001 is beyond the schedule's resolution"),  # S45
        (["--steps", str(10**9), "--schedule", "beta"], "at most 1000 steps"),  # C09 from the command line
        (["--seed", "-1"], "seed=-1 must be a whole number from 0"),  # S16
        (["--seed", str(2**64)], f"seed={2**64} is above the largest the nodes take, {MAX_SEED}"),  # S17
        (["--shift", "0"], "shift=0.0 must be a finite number from 0.01 to 100.0"),  # S19
        (["--shift", "nan"], "shift=nan must be a finite number"),  # S20
        (["--shift", "1000"], "shift=1000.0 is above the largest the nodes take, 100.0"),
        (["--tile", "-8"], "tile=-8 must be a whole number from 0 to 8192"),  # S31
        (["--frames", "25", "--correction", "nan"], "correction=nan must be a finite number"),  # S33
        (["--correction", "5"], "correction=5.0 is above the largest the nodes take, 1"),  # S34
        (["--window", "0"], "window=0 must be a whole number from 1 to 4097"),  # S35
        (["--cache", "-1"], "cache=-1.0 must be a finite number from 0 to 1"),
        (["--dit", "x.safetensors"], "also give --text-encoder, --vae"),
        (["--low-noise-lora", "x.safetensors"], "give --low-noise-dit too"),
        (["--lora", "missing.safetensors:0.5"], "Model file not found: --lora missing.safetensors."),
    ],
)
def test_generate_refuses_bad_options_before_loading_a_model(options, message, capsys, output, no_work):
    code, error = generate(capsys, *options)
    assert code == 2 and error.startswith("error: ") and message in error, error
    assert "Traceback" not in error
    assert not output.exists()  # nothing made, not even the output folder


def test_a_read_only_output_folder_is_found_before_loading_a_model(capsys, output, no_work, monkeypatch):
    """W03: the folder's writability is asked of the file system (access(2), which answers a read-only mount
    with EROFS and a folder of another user with EACCES) before any work; here it answers no."""
    output.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        return False if Path(path) == output.resolve() else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    code, error = generate(capsys, *SMALL)
    assert code == 2 and f"error: cannot write in {output}: it is on a read-only file system" in error
    # a subfolder still to be made is made in the nearest folder that exists: that one is asked
    code, error = generate(capsys, *SMALL, "--prefix", "new/deeper/clip")
    assert code == 2 and f"cannot write in {output}:" in error and not (output / "new").exists()


def test_an_output_folder_that_is_a_file_is_named_before_loading_a_model(
    capsys, tmp_path, monkeypatch, no_work
):
    """Q13 (variant): SPACETIME_OUTPUT_DIR naming a file, a folder inside a file, a subfolder that is a file."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "afile"))
    code, error = generate(capsys, *SMALL)
    assert code == 2 and f"the output folder {tmp_path / 'afile'} is a file, not a folder" in error
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "afile" / "out"))
    code, error = generate(capsys, *SMALL)
    assert code == 2 and f"would be made inside {tmp_path / 'afile'}, which is a file" in error
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path))
    code, error = generate(capsys, *SMALL, "--prefix", "afile/clip")
    assert code == 2 and "'afile' exists and is not a folder" in error.replace(str(tmp_path) + os.sep, "")
    (tmp_path / "outside").mkdir()
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "link").symlink_to(tmp_path / "outside")
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "out2"))
    code, error = generate(capsys, *SMALL, "--prefix", "link/clip")
    assert code == 2 and "'link' is a link that leads outside" in error


def test_test_pattern_checks_its_options_and_sizes_before_drawing(capsys, output, monkeypatch):
    """S44: sizes above the nodes' maximum are refused before a frame is drawn; so are the output options."""
    import spacetime.cli

    def refuse(*args):
        raise AssertionError("the pattern was drawn before the options were checked")

    monkeypatch.setattr(spacetime.cli, "moving_pattern", refuse)
    for options, message in (
        (
            ["--width", "65536", "--height", "65536", "--frames", "1"],
            "--width 65536 is above the largest size",
        ),
        (["--height", "9000"], "--height 9000 is above the largest size made, 8192 pixels"),
        (["--frames", "0"], "--frames 0: the test pattern needs at least 1 frame"),  # Q05
        (["--width", "0"], "--width 0: give a size from 1 to 8192 pixels"),  # Q06
        (["--width", "-5"], "--width -5: give a size from 1 to 8192 pixels"),  # Q07
        (["--frames", "-1"], "--frames -1: the test pattern needs at least 1 frame"),  # Q08
        (["--crf", "99"], "crf=99 is outside 0..51"),
        (["--prefix", "../x"], "'..' parts are not allowed"),
        (["--format", "image/gif", "--fps", "60"], "too fast for a GIF"),
    ):
        assert main(["test-pattern", *options]) == 2
        assert message in capsys.readouterr().err
    assert not output.exists()


def test_check_output_writes_nothing_and_accepts_what_combine_writes(tmp_path: Path):
    root = tmp_path / "not" / "yet"
    fmt = check_output("video/h264-mp4", 16.0, video=(5, 17, 33), output_dir=root, filename_prefix="a/b/c")
    assert fmt.name == "video/h264-mp4" and not (tmp_path / "not").exists()
    assert check_output("image/gif", 0.002).name == "image/gif"  # the slowest GIF, without a size or a folder
    with pytest.raises(
        ValueError, match=r"at least 64x64 pixels, got 32x32; upscale the frames or choose video/h264"
    ):
        check_output("video/h265-mp4", 16.0, video=(5, 32, 32))  # S40
    with pytest.raises(ValueError, match=r"at least 1x1 pixels, got 0x32; upscale the frames\.$"):
        check_output("video/h264-mp4", 16.0, video=(5, 32, 0))  # Q06: not "choose video/h264-mp4" again
    with pytest.raises(ValueError, match="Content Credentials are signed into MP4 files only"):
        check_output("image/webp", 16.0, signed=True)
    with pytest.raises(ValueError, match=r"loop_count=101 must be 0 or more, up to 100"):
        from spacetime.video import Encoding

        check_output("video/h264-mp4", 16.0, Encoding(loop_count=101))


@pytest.mark.parametrize("option", ["--tiny-world", "--ground-truth"])
@pytest.mark.parametrize("count", ["0", "-3"])
def test_evaluate_refuses_a_count_below_one_by_its_option(option, count, capsys):  # E10
    """-3 was refused by the function it reached ("heldout_prompts needs n >= 1"), 0 as "nothing to score"."""
    pytest.importorskip("cv2")
    assert main(["evaluate", option, count]) == 2
    assert f"{option} {count}: give how many prompts to score, at least 1" in capsys.readouterr().err


# The schedules: step counts beyond their resolution say so, and cannot hang (C09, S45).
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_steps_beyond_the_schedules_resolution_are_refused_at_once(name):
    started = time.perf_counter()
    with pytest.raises(
        ValueError, match=r"steps=1000000000 is beyond the schedule's resolution: it has 1000 noise"
    ):
        SCHEDULES[name](10**9, 3.0)
    with pytest.raises(ValueError, match=r"steps=1001 is beyond the schedule's resolution"):
        SCHEDULES[name](1001, 3.0)
    # with denoise below 1 the whole schedule counts: 30 steps at 0.01 are the tail of 3000
    with pytest.raises(
        ValueError, match=r"steps=30 at denoise=0.01 is the tail of a 3000-step schedule.*at most 10"
    ):
        SCHEDULES[name](30, 3.0, 0.01)
    assert time.perf_counter() - started < 1.0
    assert len(SCHEDULES[name](10, 3.0, 0.01)) == 11 and len(SCHEDULES["simple"](1000, 3.0)) == 1001
    assert check_steps(300, 0.3) == 1000  # 300 / 0.3 rounds to the table's size, not above it


@pytest.mark.parametrize(
    "args,message",
    [
        (("simple", 0, 3.0, 1.0), r"steps=0 must be a whole number, at least 1"),  # C01
        (("simple", 10, NAN, 1.0), r"shift=nan must be a positive number"),  # C02
        (("simple", 10, 3.0, 0.0), r"denoise=0.0 must be in \(0, 1\]"),  # C03
        (("simple", 10, 3.0, 1.5), r"denoise=1.5 must be in \(0, 1\]"),  # C04
        (("bogus", 10, 3.0, 1.0), r"schedule 'bogus': expected one of simple, linear, beta"),  # C05
        (("simple", 10, math.inf, 1.0), r"shift=inf must be a positive number"),  # C06
        (("simple", 10, -1.0, 1.0), r"shift=-1.0 must be a positive number"),  # C07
        (("simple", 10, 3.0, NAN), r"denoise=nan must be in \(0, 1\]"),  # C08
        (("linear", 10**9, 3.0, 1.0), r"beyond the schedule's resolution"),  # C09
    ],
)
def test_the_scheduler_node_refuses_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        node("SpacetimeScheduler", *args)


# Settings, the library's side of generate's options.
def test_settings_take_the_nodes_bounds():
    assert Settings().cfg == 5.0 and Settings(cfg=0.0, shift=0.01, seed=MAX_SEED, steps=1000).steps == 1000
    with pytest.raises(ValueError, match=r"solver 'rk4': expected one of"):
        Settings(solver="rk4")
    with pytest.raises(ValueError, match=r"unknown schedule 'karras'"):
        Settings(schedule="karras")
    with pytest.raises(ValueError, match=r"boundary=1.5 is above the largest the nodes take, 1"):
        Settings(boundary=1.5)
    with pytest.raises(ValueError, match=r"width=64.0 must be a whole number"):
        Settings(width=64.0)


# The DiT Denoiser (D rows).
@pytest.fixture(scope="module")
def denoiser_inputs(tiny_world):
    dit, text_encoder, vae = tiny_world
    positive, negative = node("SpacetimeTextEncode", text_encoder, "a red ball", "")
    (latent,) = node("SpacetimeEmptyLatentVideo", vae, 32, 32, 5, 1)
    (patches,) = node("SpacetimePatchifier", dit, latent)
    (sigmas,) = node("SpacetimeScheduler", "simple", 2, 3.0, 1.0)
    return dit, positive, negative, patches, sigmas


def nan_conditioning(conditioning):
    return [[torch.full_like(conditioning[0][0], NAN), {}]]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"cfg": -3.0}, r"cfg=-3.0 must be 0 or more"),  # D03
        ({"cfg": -0.5}, r"cfg=-0.5 must be 0 or more"),
        ({"positive": nan_conditioning}, r"positive holds NaN or infinite values: the text encoder"),  # D15
        ({"negative": nan_conditioning}, r"negative holds NaN or infinite values"),
        ({"cfg": NAN}, r"cfg=nan must be a finite number"),  # D01
        ({"cfg": math.inf}, r"cfg=inf must be a finite number"),  # D01
        ({"seed": -1}, r"seed=-1 must be a whole number from 0"),  # D04
        ({"seed": 2**64}, r"seed=18446744073709551616 must be a whole number"),  # D04
        ({"seed": 1.5}, r"seed=1.5 must be a whole number"),  # D04
        ({"solver": "bogus"}, r"solver 'bogus': expected one of"),  # D07
        ({"sigmas": torch.tensor([])}, r"expected at least two strictly descending values"),  # D08
        ({"sigmas": torch.tensor([0.0, 1.0])}, r"expected at least two strictly descending values"),  # D08
        (
            {"sigmas": torch.tensor([1.0, NAN, 0.0])},
            r"expected at least two strictly descending values",
        ),  # D08
        ({"positive": lambda c: [[torch.zeros(1, 8, 7), {}]]}, r"differ in token count or width"),  # D13
        ({"positive": lambda c: []}, r"positive: expected a CONDITIONING .*got an empty list"),  # D14
        ({"positive": lambda c: [["a red ball", {}]]}, r"positive: a CONDITIONING's first entry holds str"),
        ({"negative": lambda c: None}, r"negative: expected a CONDITIONING"),  # D14
    ],
)
def test_the_dit_denoiser_refuses_bad_inputs_before_a_step(change, message, denoiser_inputs, monkeypatch):
    dit, positive, negative, patches, sigmas = denoiser_inputs
    inputs = {
        "positive": positive,
        "negative": negative,
        "sigmas": sigmas,
        "solver": "unipc",
        "cfg": 5.0,
        "seed": 0,
    }
    inputs |= {key: value(inputs[key]) if callable(value) else value for key, value in change.items()}
    monkeypatch.setattr(
        type(dit), "forward_tokens", lambda *args, **kwargs: pytest.fail("the DiT was called")
    )
    with pytest.raises(ValueError, match=message):
        node("SpacetimeDiTDenoiser", dit, patches=patches, **inputs)


# VAE nodes and Empty Latent Video (V, E rows).
@pytest.mark.parametrize(
    "latent,error,message",
    [
        (
            {"samples": torch.zeros(1, 12, 0, 4, 4)},
            ValueError,
            r"shape \(1, 12, 0, 4, 4\); expected a latent video",
        ),
        (
            {},
            ValueError,
            r"latent must be a LATENT \(a dict holding the latent under 'samples'\), got a dict",
        ),
        (
            {"samples": torch.zeros(1, 12, 2, 4)},
            ValueError,
            r"shape \(1, 12, 2, 4\); expected a latent video",
        ),
        ({"samples": torch.zeros(1, 12, 2, 4, 4, dtype=torch.int64)}, TypeError, r"must be a float tensor"),
        ({"samples": torch.full((1, 12, 2, 4, 4), NAN)}, ValueError, r"latent holds NaN or infinite values"),
        (None, ValueError, r"latent must be a LATENT .* got NoneType"),
    ],
)
def test_vae_decode_refuses_latents_it_cannot_decode(latent, error, message, tiny_world):
    """V06 (0 frames), V07 (no 'samples'), and their variants."""
    with pytest.raises(error, match=message):
        node("SpacetimeVAEDecode", tiny_world[2], latent)


@pytest.mark.parametrize(
    "images,error,message",
    [
        (
            torch.full((5, 32, 32, 3), NAN),
            ValueError,
            r"images holds 15360 NaN or infinite values in 5 frame",
        ),  # V10
        (
            torch.full((5, 32, 32, 3), 0.5) * 255,
            ValueError,
            r"from 127.5 to 127.5; an IMAGE holds 0..1.*divide",
        ),
        (
            torch.full((5, 32, 32, 3), 200, dtype=torch.uint8),
            TypeError,
            r"dtype torch.uint8; an IMAGE holds floats",
        ),
        (torch.full((5, 32, 32, 3), -1.0), ValueError, r"values from -1 to -1; an IMAGE holds 0..1"),
        (torch.zeros(0, 32, 32, 3), ValueError, r"images holds 0 frames"),
        ([torch.zeros(32, 32, 3)], TypeError, r"images must be an IMAGE tensor"),
    ],
)
def test_vae_encode_refuses_images_that_are_not_an_image(images, error, message, tiny_world):
    """V10 (NaN), V13 (0..255 floats), V14 (uint8), and their variants; a resize's overshoot is taken."""
    with pytest.raises(error, match=message):
        node("SpacetimeVAEEncode", tiny_world[2], images)
    (latent,) = node("SpacetimeVAEEncode", tiny_world[2], torch.full((1, 32, 32, 3), 1.1))
    assert torch.isfinite(latent["samples"]).all()


@pytest.mark.parametrize(
    "size,error,message",
    [
        ((64, 64, 5, 0), ValueError, r"batch_size=0 must be a whole number, at least 1"),  # E05
        ((64, 64, 5, -1), ValueError, r"batch_size=-1 must be a whole number, at least 1"),  # E06
        ((64.0, 64, 5, 1), TypeError, r"width=64.0 must be a whole number, got float"),  # E07
        ((64, 64, 5.0, 1), TypeError, r"frames=5.0 must be a whole number"),
        ((16384, 64, 5, 1), ValueError, r"width=16384 is above the largest size made, 8192 pixels"),
        (
            (0, 64, 5, 1),
            ValueError,
            r"width=0 is below the smallest size this VAE makes, 8 pixels \(its stride\): use 8",
        ),  # E01
        (
            (64, -16, 5, 1),
            ValueError,
            r"height=-16 is below the smallest size this VAE makes, 8 pixels",
        ),  # E01
    ],
)
def test_empty_latent_video_refuses_sizes_it_cannot_make(size, error, message, tiny_world):
    with pytest.raises(error, match=message):
        node("SpacetimeEmptyLatentVideo", tiny_world[2], *size)


# The Patchifier (X rows).
@pytest.mark.parametrize(
    "latent,message",
    [
        ({"samples": torch.full((1, 12, 2, 4, 4), NAN)}, r"latent holds NaN or infinite values"),  # X01
        (
            {"samples": torch.zeros(1, 12, 2, 4, 4), "noise_mask": torch.ones(7, 3)},
            r"frames of 3x7 do not have the",
        ),
        (
            {"samples": torch.zeros(1, 12, 2, 4, 8), "noise_mask": torch.ones(2, 8, 8)},
            r"frames of 8x8 do not have",
        ),
        (
            {"samples": torch.zeros(1, 12, 2, 4, 4), "noise_mask": torch.full((1, 1, 2, 4, 4), NAN)},
            r"outside 0..1",
        ),
        ({"samples": torch.zeros(1, 12, 2, 4, 4), "noise_mask": torch.full((4, 4), 2.0)}, r"outside 0..1"),
        ({"samples": torch.zeros(1, 12, 3, 3, 3)}, r"not divisible by the patch size"),  # X02
    ],
)
def test_the_patchifier_refuses_what_it_would_pass_on_silently(latent, message, tiny_world):
    """X01 (NaN latent), X03 (a mask of other proportions), X04 (NaN mask), and their variants; a mask at the
    video's size (8x the latent) or a single value is taken, as core takes it."""
    dit = tiny_world[0]
    with pytest.raises(ValueError, match=message):
        node("SpacetimePatchifier", dit, latent)
    for mask in (torch.zeros(2, 32, 64), torch.zeros(1, 1)):
        (patches,) = node(
            "SpacetimePatchifier", dit, {"samples": torch.zeros(1, 12, 2, 4, 8), "noise_mask": mask}
        )
        assert patches.pinned.all()


# The editing nodes (Y and R rows).
CLIP = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "name,args,error,message",
    [
        (
            "SpacetimeExtendVideo",
            (CLIP, "forward", 0, 5),
            ValueError,
            r"new_frames=0 must be a whole number",
        ),  # Y02
        ("SpacetimeExtendVideo", (CLIP, "forward", -4, 5), ValueError, r"new_frames=-4 must be"),  # Y02
        ("SpacetimeExtendVideo", (CLIP, "backward", 0, 4), ValueError, r"new_frames=0 must be"),
        (
            "SpacetimeExtendVideo",
            (CLIP, "forward", 4.5, 5),
            ValueError,
            r"new_frames=4.5 must be a whole number",
        ),
        (
            "SpacetimeConnectVideos",
            (CLIP, CLIP, 0, 5),
            ValueError,
            r"bridge_frames=0 must be a whole number",
        ),  # Y09
        ("SpacetimeLoopVideo", (CLIP, -1, 4), ValueError, r"bridge_frames=-1 must be"),
        (
            "SpacetimeImageToVideo",
            (torch.full((1, 32, 32, 3), NAN), 32, 32, 5, "crop"),
            ValueError,
            r"image holds",
        ),
        (
            "SpacetimeExtendVideo",
            (CLIP * 255, "forward", 8, 5),
            ValueError,
            r"video holds values from .* divide by 255",
        ),
        (
            "SpacetimeConnectVideos",
            (CLIP, CLIP.to(torch.uint8), 4, 5),
            TypeError,
            r"second has dtype torch.uint8",
        ),
        (
            "SpacetimeVideoToVideo",
            (CLIP, torch.tensor([1.0, 0.0]), 0.0),
            ValueError,
            r"strength=0.0: expected",
        ),  # R01
        (
            "SpacetimeVideoToVideo",
            (CLIP, torch.tensor([1.0, 0.0]), 1.5),
            ValueError,
            r"strength=1.5: expected",
        ),  # R02
        (
            "SpacetimeVideoToVideo",
            (CLIP, torch.tensor([1.0, 0.0]), -0.1),
            ValueError,
            r"strength=-0.1: expected",
        ),
        (
            "SpacetimeVideoToVideo",
            (CLIP, torch.tensor([1.0, 0.0]), NAN),
            ValueError,
            r"strength=nan: expected",
        ),  # R04
    ],
)
def test_editing_nodes_refuse_bad_inputs_before_encoding(name, args, error, message, tiny_world, monkeypatch):
    """Y02, Y09 (no frames to make), Y17 (a NaN image), R01–R04 (strength), and variants: refused before the
    VAE encodes anything."""
    vae = tiny_world[2]
    monkeypatch.setattr(type(vae), "encode", lambda *args, **kwargs: pytest.fail("the VAE encoded"))
    with pytest.raises(error, match=message):
        node(name, vae, *args)


def test_join_edited_clip_refuses_a_missing_plan_and_nan_frames(tiny_world):
    """Y24 (plan None), Y25 (NaN decoded frames)."""
    _, plan = node("SpacetimeExtendVideo", tiny_world[2], CLIP, "forward", 8, 5)
    with pytest.raises(
        TypeError, match=r"plan must be the SPACETIME_CLIP_PLAN of an editing node .* got NoneType"
    ):
        node("SpacetimeJoinEditedClip", None, torch.rand(plan.frames, 32, 32, 3), 4)
    with pytest.raises(ValueError, match=r"images holds 39936 NaN or infinite values in 13 frame"):
        node("SpacetimeJoinEditedClip", plan, torch.full((plan.frames, 32, 32, 3), NAN), 4)
    video, new = node("SpacetimeJoinEditedClip", plan, torch.rand(plan.frames, 32, 32, 3), 4)
    assert video.shape == (17, 32, 32, 3) and new.shape == (8, 32, 32, 3)


def test_image_condition_and_image_encode_check_their_inputs_first(tiny_world, denoiser_inputs):
    """Y24's class on Image Condition (no plan), Y17's on Image Encode (NaN image): refused before any encode."""
    _, positive, negative, _, _ = denoiser_inputs
    with pytest.raises(TypeError, match=r"plan must be the SPACETIME_CLIP_PLAN .* got NoneType"):
        node("SpacetimeImageCondition", positive, negative, tiny_world[2], None)
    with pytest.raises(ValueError, match=r"image holds 3072 NaN or infinite values"):
        node("SpacetimeImageEncode", None, torch.full((1, 32, 32, 3), NAN), "center")


# Long Video's window seeds (L05, Q12): seed + k, wrapping past the largest seed, in the node and in generate.
def test_window_seeds_wrap_past_the_largest_seed():
    assert [window_seed(MAX_SEED - 1, k) for k in range(4)] == [MAX_SEED - 1, MAX_SEED, 0, 1]
    assert window_seed(7, 3) == 10


@pytest.fixture
def window_seeds(monkeypatch) -> list[int]:
    import spacetime.editing.long_video as long_video

    seeds, denoise = [], long_video.denoise

    def recording(guider, patches, sampling, *args):
        seeds.append(sampling.seed)
        return denoise(guider, patches, sampling, *args)

    monkeypatch.setattr(long_video, "denoise", recording)
    return seeds


def test_long_video_node_and_generate_take_the_largest_seed(tiny_world, window_seeds, capsys, output):
    dit, text_encoder, vae = tiny_world
    positive, negative = node("SpacetimeTextEncode", text_encoder, "a red ball", "")
    (sigmas,) = node("SpacetimeScheduler", "simple", 1, 3.0, 1.0)
    (latent,) = node(
        "SpacetimeLongVideo",
        dit,
        vae,
        positive,
        negative,
        sigmas,
        32,
        32,
        25,
        17,
        8,
        1.0,
        "euler",
        1.0,
        MAX_SEED,
    )
    assert latent["samples"].shape[2] == 7 and window_seeds == [MAX_SEED, 0]
    window_seeds.clear()
    code = main(
        ["generate", "a red ball", *SMALL[:4], "--frames", "25", "--steps", "1", "--seed", str(MAX_SEED)]
    )
    assert code == 0, capsys.readouterr().err
    assert window_seeds == [MAX_SEED, 0]


# The command line's other settings: refused after the models load (their multiples depend on the model), and
# before any sampling (S01–S39).
@pytest.mark.parametrize(
    "options,message",
    [
        (["--width", "100"], "width=100 must be a multiple of 8 (the VAE's stride): use 96 or 104"),  # S01
        (["--width", "8"], "latent width (W) = 1 is not divisible by the patch size 2"),  # S04
        (["--width", "24"], "latent width (W) = 3 is not divisible by the patch size 2"),  # S05
        (["--frames", "8"], "frames=8 must be 4k+1 (1, 5, 9, ..., 81, ...): use 5 or 9"),  # S06
        (["--tile", "7"], "tile=7, overlap=0: both must be multiples of 8 pixels"),  # S30
        (["--tile", "16", "--overlap", "32"], "tile=16, overlap=32: both must be multiples of 8"),  # S32
        (["--frames", "25", "--window-overlap", "0"], "window=5, overlap=0 latent frames"),  # S36
        (
            ["--frames", "25", "--window", "9", "--window-overlap", "12"],
            "window=3, overlap=3 latent frames",
        ),  # S37
        (["--frames", "25", "--window", "10"], "window_frames=10 must be 4k+1"),  # S38
        (["--frames", "24"], "frames=24 must be 4k+1 (1, 5, 9, ..., 81, ...): use 21 or 25"),  # S39
    ],
)
def test_generate_refuses_settings_the_model_cannot_take_before_sampling(
    options, message, capsys, output, no_sampling
):
    code, error = generate(capsys, *SMALL, *options)
    assert code == 2 and error.startswith("error: ") and message in error, error
    assert not output.exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--frames", "1"],  # S09
        ["--seed", str(MAX_SEED)],  # S18
        ["--solver", "heun", "--schedule", "beta"],  # S41
        ["--format", "image/gif", "--fps", "0.002"],
    ],
)
def test_generate_takes_the_edges_of_every_range(options, capsys, output):
    code, error = generate(capsys, *SMALL, *options, "--prefix", "edge")
    assert code == 0, error
    assert len(list(output.glob("edge_00001_*"))) == 1


# Video Combine and VAE Decode: what their widgets say, checked when ComfyUI validates the prompt.
def test_video_combine_validates_its_widgets_before_the_prompt_runs(output, monkeypatch):
    validate = NODES["SpacetimeVideoCombine"].VALIDATE_INPUTS
    defaults = {"frame_rate": 16.0, "loop_count": 0, "filename_prefix": "spacetime/video", "format": "video/h264-mp4",
                "crf": 19, "preset": "medium", "content_credentials": "off"}  # fmt: skip
    assert validate(**defaults) is True
    for change, message in (
        ({"crf": 99}, "crf=99 is outside 0..51"),
        ({"format": "image/gif", "frame_rate": 60.0}, "too fast for a GIF"),
        ({"frame_rate": 0.0001}, "frame_rate=0.0001 is outside 0.001..1000"),  # O33
        ({"format": "video/avi"}, "Unknown video format 'video/avi'"),
        ({"preset": "warp"}, "preset='warp' is not an encoder preset"),
        ({"loop_count": 1000}, "loop_count=1000 must be 0 or more, up to 100"),
        ({"content_credentials": "maybe"}, "content_credentials is 'maybe'"),
        ({"format": "image/gif", "content_credentials": "sign"}, "signed into MP4 files only"),
        ({"filename_prefix": "../escape"}, "'..' parts are not allowed"),
        ({"filename_prefix": ""}, "filename_prefix is empty"),
    ):
        result = validate(**(defaults | change))
        assert isinstance(result, str) and message in result, result
    # a linked input is absent: what can be checked without it is
    assert validate(filename_prefix="../x").startswith("filename_prefix='../x' would write outside")
    assert validate(format="image/gif") is True
    assert not output.exists()


def test_video_combine_refuses_a_latent_whose_windows_lack_a_key(tiny_world, output):
    """W20: a 'spacetime_windows' entry for these samples without 'window' (or the others) is named."""
    latent = {"samples": torch.zeros(1, 12, 7, 4, 4), "spacetime_windows": {"latent_frames": 7}}
    with pytest.raises(
        ValueError, match=r"'spacetime_windows' has no usable window, overlap, stride, openings"
    ):
        node("SpacetimeVideoCombine", latent=latent, vae=tiny_world[2])
    entry = {"latent_frames": 7, "window": 5, "overlap": 2, "stride": 4, "openings": "not a tensor"}
    with pytest.raises(ValueError, match=r"has no usable openings"):
        node("SpacetimeVideoCombine", latent={**latent, "spacetime_windows": entry}, vae=tiny_world[2])
    with pytest.raises(ValueError, match=r"latent must be a LATENT"):
        node("SpacetimeVideoCombine", latent={"spacetime_windows": entry}, vae=tiny_world[2])
    assert not output.exists()


def test_vae_decode_validates_its_tiles_before_the_prompt_runs():
    validate = NODES["SpacetimeVAEDecode"].VALIDATE_INPUTS
    assert validate(tile_size=0, overlap=64) is True and validate(tile_size=512, overlap=64) is True
    assert "tile=16, overlap=32: both must be multiples of 8" in validate(tile_size=16, overlap=32)
    assert "tile at least 16" in validate(tile_size=8, overlap=0)
    assert "must be from 0 to 8192 pixels" in validate(tile_size=-8, overlap=0)
    assert validate(tile_size=12) is True  # overlap linked: checked when it decodes
