"""The Tiny World: seeded captioned clips of shapes, held-out combinations kept out of training, and an
OpenCV evaluator that names a video's colour, shape and motion back."""

from __future__ import annotations

import ast
import json

import cv2
import numpy as np
import pytest

from spacetime.training.captions import TONE_WORDS, parse_pan
from spacetime.training.evaluate import evaluate_many, evaluate_video, main
from spacetime.training.scene import (
    COLOURS,
    MOTIONS,
    PAN_DIRECTIONS,
    PATTERNS,
    SHAPES,
    SIZES,
    TONES,
    Background,
    CameraPan,
    ObjectSpec,
    Scene,
    reach,
    trajectory,
)
from spacetime.training.world import (
    HELDOUT,
    HELDOUT_TRIPLES,
    MARGIN,
    OBJECT_GAP,
    batches,
    caption,
    heldout_prompts,
    is_heldout,
    parse_caption,
    render,
    sample_scene,
)

from media import PACK_ROOT

EVALUATION_PROMPTS = 60
GROUND_TRUTH_ACCURACY = 0.97
WRONG_TARGET_ACCEPTANCE = 0.05


@pytest.fixture(scope="module")
def train_scenes() -> list[Scene]:
    rng = np.random.default_rng(0)
    return [sample_scene(rng, "train") for _ in range(2000)]


@pytest.fixture(scope="module")
def prompts():
    return heldout_prompts(EVALUATION_PROMPTS, seed=0)


@pytest.fixture(scope="module")
def ground_truth(prompts):
    """The evaluation prompts' videos, rendered from their scenes, by frame size."""
    return {size: [render(p.scene, 17, size, size) for p in prompts] for size in (128, 64)}


def _first(clips):
    return next(clips)


def test_same_seed_same_bytes_and_clips_do_not_depend_on_the_batch_size():
    a_videos, a_captions = _first(batches(seed=3, batch=4, frames=5, height=32, width=48))
    b_videos, b_captions = _first(batches(seed=3, batch=4, frames=5, height=32, width=48))
    assert a_videos.shape == (4, 5, 32, 48, 3) and a_videos.dtype == np.uint8
    assert a_videos.tobytes() == b_videos.tobytes() and a_captions == b_captions
    later = batches(seed=3, batch=2, frames=5, height=32, width=48, start=2)
    assert np.array_equal(_first(later)[0], a_videos[2:])
    other_videos, other_captions = _first(batches(seed=4, batch=4, frames=5, height=32, width=48))
    assert other_captions != a_captions and not np.array_equal(other_videos, a_videos)


def test_every_attribute_is_produced(train_scenes):
    objects = [obj for scene in train_scenes for obj in scene.objects]
    assert {obj.colour for obj in objects} == set(COLOURS)
    assert {obj.shape for obj in objects} == set(SHAPES)
    assert {obj.motion for obj in objects} == set(MOTIONS)
    assert {obj.size for obj in objects} == set(SIZES)
    assert {scene.background.pattern for scene in train_scenes} == set(PATTERNS)
    assert {scene.background.tone for scene in train_scenes} == set(TONES)
    assert {scene.pan.direction for scene in train_scenes if scene.pan} == set(PAN_DIRECTIONS)
    assert {len(scene.objects) for scene in train_scenes} == {1, 2}


def test_training_never_shows_a_heldout_pair(train_scenes):
    assert len(HELDOUT_TRIPLES) >= EVALUATION_PROMPTS
    seen = {(obj.colour, obj.shape, obj.motion) for scene in train_scenes for obj in scene.objects}
    assert not seen & set(HELDOUT_TRIPLES)
    for (
        pairs
    ) in HELDOUT.values():  # and every held-out attribute still appears in training, only not together
        for a, b in pairs:
            assert any(a in triple for triple in seen) and any(b in triple for triple in seen)
    rng = np.random.default_rng(1)
    assert all(is_heldout(*_attributes(sample_scene(rng, "heldout").objects[0])) for _ in range(200))


def _attributes(obj: ObjectSpec) -> tuple[str, str, str]:
    return obj.colour, obj.shape, obj.motion


def test_objects_stay_in_frame_and_apart(train_scenes):
    times = np.linspace(0.0, 1.0, 17)
    for scene in train_scenes:
        for obj in scene.objects:
            x, y, scale, _ = trajectory(obj, times)
            extent = reach(obj) * scale / max(1.0, obj.scale)
            for centre in (x, y):
                assert np.all(centre - extent >= MARGIN - 1e-9) and np.all(
                    centre + extent <= 1 - MARGIN + 1e-9
                )
        if len(scene.objects) == 2:
            (ax, ay, ascale, _), (bx, by, bscale, _) = (trajectory(obj, times) for obj in scene.objects)
            a, b = scene.objects
            gap = (
                np.hypot(ax - bx, ay - by)
                - reach(a) * ascale / max(1.0, a.scale)
                - reach(b) * bscale / max(1.0, b.scale)
            )
            assert np.all(gap >= OBJECT_GAP - 1e-9)


def test_rendered_objects_leave_the_border_to_the_background(train_scenes):
    for scene in train_scenes[:30]:
        video = render(scene, 9, 64, 80)
        empty = render(Scene((), scene.background, scene.pan), 9, 64, 80)
        ring = np.ones((64, 80), bool)
        ring[1:-1, 1:-1] = False
        assert np.array_equal(video[:, ring], empty[:, ring])
        assert not np.array_equal(video, empty)


def test_same_scene_looks_the_same_at_any_size(train_scenes):
    for scene in train_scenes[:10]:
        large = render(scene, 5, 128, 128).astype(np.float32)
        small = render(scene, 5, 64, 64).astype(np.float32)
        halved = large.reshape(5, 64, 2, 64, 2, 3).mean(axis=(2, 4))
        assert np.abs(halved - small).mean() < 4.0


def test_edges_are_anti_aliased():
    scene = Scene((ObjectSpec("circle", "red", "large", "still"),), Background("plain", "black"))
    frame = render(scene, 1, 64, 64)[0].reshape(-1, 3)
    background, red = np.array(TONES["black"][0]), np.array(COLOURS["red"])
    between = ~np.all(frame == background, axis=1) & ~np.all(frame == red, axis=1)
    assert 40 < between.sum() < 150  # about one ring of partly covered pixels around a 20-pixel disc


def test_render_takes_any_frame_count_and_size():
    scene = sample_scene(np.random.default_rng(5))
    for frames, height, width in ((1, 16, 24), (9, 64, 96), (33, 48, 32)):
        video = render(scene, frames, height, width)
        assert video.shape == (frames, height, width, 3) and video.dtype == np.uint8
    with pytest.raises(ValueError, match="at least 1 frame"):
        render(scene, 0, 64, 64)


def test_scenes_reject_what_cannot_be_seen():
    with pytest.raises(ValueError, match="rotating circle"):
        ObjectSpec("circle", "red", "small", "rotate", turns=0.25)
    with pytest.raises(ValueError, match="colour='teal' is not one of"):
        ObjectSpec("square", "teal", "small", "still")
    with pytest.raises(ValueError, match="too close in hue"):
        Scene((ObjectSpec("square", "blue", "small", "still"),), Background("plain", "blue"))
    with pytest.raises(ValueError, match="would not show"):
        Scene((), Background("plain", "grey"), CameraPan("left", 0.3))


def test_captions_name_every_attribute(train_scenes):
    rng = np.random.default_rng(2)
    texts = set()
    for scene in train_scenes[:500]:
        text = caption(scene, rng)
        texts.add(text)
        expected = [
            {"colour": o.colour, "shape": o.shape, "size": o.size, "motion": o.motion} for o in scene.objects
        ]
        assert parse_caption(text) == expected, text
        assert parse_pan(text) == (scene.pan.direction if scene.pan else None), text
        assert any(word in text for word in TONE_WORDS[scene.background.tone]), text
    assert len(texts) >= 490  # varied templates and synonyms: hardly two captions alike


def test_heldout_prompts_cover_unseen_combinations_with_their_truth(prompts):
    assert prompts == heldout_prompts(EVALUATION_PROMPTS, seed=0)
    assert len({tuple(p.target.values()) for p in prompts}) == EVALUATION_PROMPTS
    for p in prompts:
        assert is_heldout(p.target["colour"], p.target["shape"], p.target["motion"])
        assert len(p.scene.objects) == 1 and _attributes(p.scene.objects[0]) == tuple(p.target.values())
        parsed = parse_caption(p.text)[0]
        assert {k: parsed[k] for k in p.target} == p.target


@pytest.mark.parametrize("size", [128, 64])
def test_evaluator_recognises_ground_truth(ground_truth, prompts, size):
    scores = evaluate_many(ground_truth[size], [p.target for p in prompts])
    assert scores["count"] == EVALUATION_PROMPTS
    for attribute in ("colour", "shape", "motion"):
        missed = [p.text for p, r in zip(prompts, scores["results"], strict=True) if not r[f"{attribute}_ok"]]
        assert scores[attribute] >= GROUND_TRUTH_ACCURACY, (size, attribute, missed)


def _another(options, value, step: int) -> str:
    options = list(options)
    return options[(options.index(value) + step) % len(options)]


def test_evaluator_rejects_wrong_targets(ground_truth, prompts):
    wrong = [  # each attribute replaced by another, the nearest or a farther one
        {
            "colour": _another(COLOURS, p.target["colour"], 1 + index % 3),
            "shape": _another(SHAPES, p.target["shape"], 1 + index % 4),
            "motion": _another(MOTIONS, p.target["motion"], 1 + index % 7),
        }
        for index, p in enumerate(prompts)
    ]
    scores = evaluate_many(ground_truth[64], wrong)
    for attribute in ("colour", "shape", "motion"):
        assert scores[attribute] <= WRONG_TARGET_ACCEPTANCE, (attribute, scores[attribute])


def test_evaluator_finds_no_object_in_noise_or_bare_backgrounds():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (17, 96, 96, 3), dtype=np.uint8)
    smooth = np.stack([cv2.GaussianBlur(frame, (0, 0), 3) for frame in noise])
    frozen = np.repeat(noise[:1], 17, axis=0)
    bare = [render(Scene((), Background(pattern, "grey", 45.0, 7)), 17, 96, 96) for pattern in PATTERNS]
    target = {"colour": "red", "shape": "circle", "motion": "still"}
    for video in [noise, smooth, frozen, *bare]:
        result = evaluate_video(video, target)
        assert not (result["colour_ok"] or result["shape_ok"] or result["motion_ok"])
        assert result["details"]["found"] is False


def test_evaluator_picks_the_asked_object_of_two():
    left = ObjectSpec("star", "yellow", "medium", "left", x=0.7, y=0.3, travel=0.35)
    growing = ObjectSpec("square", "blue", "small", "grow", x=0.5, y=0.7, scale=1.8)
    video = render(Scene((left, growing), Background("stripes", "white", 45.0)), 17, 96, 96)
    for obj in (left, growing):
        result = evaluate_video(video, {"colour": obj.colour, "shape": obj.shape, "motion": obj.motion})
        assert result["colour_ok"] and result["shape_ok"] and result["motion_ok"], result["details"]


def test_evaluate_video_says_what_it_expects():
    with pytest.raises(ValueError, match=r"uint8 frames T×H×W×3"):
        evaluate_video(np.zeros((4, 32, 32, 3), np.float32), {})


def test_command_line_scores_files_against_prompts(tmp_path, capsys, prompts):
    path = tmp_path / "clip.npy"
    np.save(path, render(prompts[0].scene, 9, 64, 64))
    assert main([str(path), "--prompt", prompts[0].text]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["count"] == 1 and scores["all"] == 1.0
    assert main(["--ground-truth", "3", "--size", "64", "--frames", "9"]) == 0
    assert json.loads(capsys.readouterr().out)["all"] == 1.0


def test_only_the_evaluator_needs_opencv():
    """ComfyUI users need not install OpenCV: nothing but evaluate.py imports it."""
    importers = []
    for path in (PACK_ROOT / "training").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            if any(name.split(".")[0] in ("cv2", "evaluate") for name in names):
                importers.append(path.name)
    assert importers == ["evaluate.py"]
