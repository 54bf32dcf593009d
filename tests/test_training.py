"""Tiny World's training script, a few steps of each stage: the files it writes are read by the pack's
own loaders (the formats the shipped weights use), and the VAE's folded normalisation holds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from spacetime.dit import load_dit
from spacetime.dit.wan import WanDiT
from spacetime.text_encoders import load_text_encoder
from spacetime.text_encoders.tokenizer import SentencePieceTokenizer
from spacetime.text_encoders.umt5 import UMT5Config, UMT5Encoder
from spacetime.training import data, dit_stage, runtime, text_stage, train, vae_stage
from spacetime.training.recipe import RECIPES, DiTRecipe, VAERecipe, with_flags
from spacetime.training.scene import COLOURS, MOVES
from spacetime.training.world import caption, is_heldout, parse_caption, render, sample_scene
from spacetime.vae import load_vae
from spacetime.vae.wan22 import Wan22VAE

TINY_WORLD = Path(__file__).resolve().parents[1] / "tiny_world"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_world")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    vae = vae_stage.train_vae(out, VAERecipe(steps=2, long_steps=1), seed=0)
    small, small_captions = data.encode_dataset(vae, out, count=8, seed=0, size=64)
    latents, captions = data.encode_dataset(vae, out, count=64, seed=0)
    stages = [dit_stage.DiTStage(small, small_captions, 1, 2), dit_stage.DiTStage(latents, captions, 1, 2)]
    dit_stage.train_dit(out, stages, DiTRecipe(), seed=0)
    return out, vae, latents, captions


def test_step_error_scores_jumps_between_frames_not_offsets():
    video = torch.linspace(-0.5, 0.5, 5).view(1, 1, 5, 1, 1).expand(1, 3, 5, 2, 2)  # a steady fade
    assert vae_stage.step_error(video + 0.3, video).item() == pytest.approx(0.0, abs=1e-12)
    jumpy = video.clone()
    jumpy[:, :, 2:] += 0.2  # the same frames, with one step 0.2 too large
    assert vae_stage.step_error(jumpy, video).item() == pytest.approx(0.2**2 / 4, rel=1e-5)


def test_latent_spread_is_zero_for_agreeing_frames_and_scale_free():
    frame = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert vae_stage.latent_spread(frame.expand(2, 3, 5, 4, 4)).item() == pytest.approx(0.0, abs=1e-12)
    two = torch.cat([frame, -frame], dim=2)  # frames +f and -f: mean 0, spread = power
    assert vae_stage.latent_spread(two).item() == pytest.approx(1.0, rel=1e-6)
    assert vae_stage.latent_spread(7 * two).item() == pytest.approx(1.0, rel=1e-6)


def test_the_still_term_teaches_still_clips_agreeing_latent_frames(tmp_path):
    """From the shipped VAE, 3 steps of phase 2 with the still term bring a still clip's latent frames
    closer together than the same 3 steps without it."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    shipped = load_file(str(TINY_WORLD / vae_stage.VAE_FILE))
    still = data.to_video(data.clips(9, 2)[0][:, :1, :64, :64].repeat(9, axis=1))
    spread = {}
    for weight in (0.0, 1.0):
        model = Wan22VAE(vae_stage.VAE_CONFIG)
        model.load_state_dict(shipped)
        vae_stage.vae_phase(model, tmp_path, vae_stage.VAEPhase(2, 3, 9, 3e-3, still_weight=weight), seed=0)
        with torch.no_grad():
            spread[weight] = vae_stage.latent_spread(model.encode(still)).item()
    assert spread[1.0] < 0.7 * spread[0.0], spread


def test_a_still_weight_without_phase_2_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--vae-still-weight", "1", "--vae-long-steps", "0"])
    assert "--vae-long-steps is 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was trained or written


def test_a_negative_motion_weight_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--motion-weight", "-1"])
    assert "--motion-weight -1.0 is negative" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_decoder_smoothing_keeps_the_encoder_and_so_the_latents(tmp_path):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    first = vae_stage.train_vae(tmp_path, VAERecipe(steps=1), seed=0)
    path = tmp_path / "first.safetensors"
    (tmp_path / vae_stage.VAE_FILE).rename(path)
    video = data.to_video(data.clips(5, 1)[0][:, :5, :64, :64])
    smoothed = vae_stage.train_vae(tmp_path, VAERecipe(smooth_steps=2), seed=0, init=path)
    before, after = first.state_dict(), smoothed.state_dict()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == (not name.startswith(("decoder.", "conv2."))), name  # decoder trained, rest kept
    with torch.no_grad():
        assert torch.equal(first.encode(video), smoothed.encode(video))
    assert load_file(str(tmp_path / vae_stage.VAE_FILE)).keys() == before.keys()


def test_vae_init_keeps_the_signal():
    """Convs N(0, 1/fan_in), residual branches zero, time convs passing the frame through: a fresh VAE's
    latent is neither vanishing nor constant across different inputs (the collapse the init avoids)."""
    model = Wan22VAE(vae_stage.VAE_CONFIG)
    vae_stage.init_vae(model, seed=0)
    videos = data.to_video(data.clips(1, 4, frames=9, size=64)[0])
    with torch.no_grad():
        latent = model.encode(videos)
    per_clip = latent.flatten(1)
    assert 0.05 < float(latent.std()) < 20
    assert float((per_clip - per_clip.mean(0)).std()) > 0.2 * float(per_clip.std())
    assert all(not p.detach().any() for n, p in model.named_parameters() if n.endswith("bias"))


def test_files_load_through_the_pack_loaders(trained):
    out, model, latents, captions = trained
    vae = load_vae(out / vae_stage.VAE_FILE)
    assert type(vae.model).__name__ == "Wan22VAE" and vae.latent_channels == vae_stage.VAE_CONFIG.z_dim
    channels = vae.latent_channels  # no preset latent format: the latents come out normalised already
    assert vae.latent_format.mean == (0.0,) * channels and vae.latent_format.std == (1.0,) * channels
    dit = load_dit(out / dit_stage.DIT_FILE)
    assert dit.config.clean_pins and dit.config.text_len == text_stage.TEXT_LEN and dit.config.head_dim == 64
    assert dit.config.in_channels == vae_stage.VAE_CONFIG.z_dim
    text_encoder = load_text_encoder(out / text_stage.TEXT_FILE)
    ids = text_encoder.tokenizer([captions[0]], text_stage.TEXT_LEN).ids
    assert int(ids[0, 0]) != 0 and ids.shape[1] == text_stage.TEXT_LEN
    assert latents.shape == (64, vae_stage.VAE_CONFIG.z_dim, 5, 16, 16) and latents.dtype == torch.float16
    small = data.encode_dataset(model, out, count=8, seed=0, size=64)[0]  # the 64x64 stage's cache
    assert small.shape == (8, vae_stage.VAE_CONFIG.z_dim, 5, 8, 8)


def test_latents_are_normalised_by_the_folded_statistics(trained):
    """normalise_latents folds mean and std into the convs around the latent: encoded clips come out
    near zero mean and unit spread per channel, and decoding is unchanged by the fold."""
    _, _, latents, _ = trained
    per_channel = latents.float().transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 0.5
    assert ((per_channel.std(1) - 1).abs() < 0.5).all()


def test_pin_mask_kinds():
    mask = dit_stage.pin_mask(2000, 5, np.random.default_rng(0)).numpy()
    none = ~mask.any(1)
    assert 0.45 < none.mean() < 0.55  # half the clips have no pinned frame
    assert not mask.all(1).any()  # never every frame: something is always left to learn
    prefix = mask[:, 0] & ~mask[:, -1]
    assert 0.2 < prefix.mean() < 0.3


def test_dit_training_resumes_exactly(tmp_path):
    """Stopping after step 1 and running again to step 2 gives the very state of one 2-step run: the
    state file carries live and EMA weights, Adam's moments and both random generators."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]  # enough for the vocabulary
    latents = torch.from_numpy(rng.normal(size=(300, vae_stage.VAE_CONFIG.z_dim, 2, 4, 4))).half()
    stage = dit_stage.DiTStage(latents, captions, steps=1, batch=2)
    once, twice = tmp_path / "once", tmp_path / "twice"
    once.mkdir(), twice.mkdir()
    dit_stage.train_dit(once, [stage, stage], DiTRecipe(), seed=0)
    dit_stage.train_dit(twice, [stage, stage], DiTRecipe(stop_after=1), seed=0)
    halfway = load_file(twice / dit_stage.STATE_FILE)
    dit_stage.train_dit(twice, [stage, stage], DiTRecipe(), seed=0)
    stopped = tmp_path / "stopped"  # --stop-after 1 of a planned 3 steps, then a plan of 2 continues it
    stopped.mkdir()  # (the same stages, so the same captions and vocabulary: only the step counts differ)
    dit_stage.train_dit(stopped, [replace(stage, steps=2), stage], DiTRecipe(stop_after=1), seed=0)
    assert int(safe_open(stopped / dit_stage.STATE_FILE, "pt").metadata()["step"]) == 1
    dit_stage.train_dit(stopped, [stage, stage], DiTRecipe(), seed=0)
    whole, resumed = load_file(once / dit_stage.STATE_FILE), load_file(twice / dit_stage.STATE_FILE)
    assert whole.keys() == resumed.keys() and any(k.startswith("adam.") for k in whole)
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
    replanned = load_file(stopped / dit_stage.STATE_FILE)  # step 0's lr (warmup) is the same under any plan
    assert [k for k in whole if not torch.equal(whole[k], replanned[k])] == []
    assert any(not torch.equal(halfway[k], whole[k]) for k in whole if k.startswith("dit."))


def test_a_resumed_run_needs_no_data_for_a_stage_an_earlier_run_finished(tmp_path):
    """main leaves a finished stage's latents, masks and primer unloaded (DiTStage with no data): going on
    from the state it saved gives the same state as going on with that stage's data."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]
    latents = torch.from_numpy(rng.normal(size=(300, vae_stage.VAE_CONFIG.z_dim, 2, 4, 4))).half()
    stage = dit_stage.DiTStage(latents, captions, steps=1, batch=2)
    full, lean = tmp_path / "full", tmp_path / "lean"
    for out in (full, lean):
        out.mkdir()
        assert dit_stage.resumed_step(out) == 0
        dit_stage.train_dit(out, [stage, stage], DiTRecipe(stop_after=1), seed=0)
        assert dit_stage.resumed_step(out) == 1
    dit_stage.train_dit(full, [stage, stage], DiTRecipe(), seed=0)
    dit_stage.train_dit(
        lean, [dit_stage.DiTStage(torch.empty(0), [], steps=1, batch=2), stage], DiTRecipe(), seed=0
    )
    assert dit_stage.resumed_step(lean) == 2
    with_data, without = load_file(full / dit_stage.STATE_FILE), load_file(lean / dit_stage.STATE_FILE)
    assert [k for k in with_data if not torch.equal(with_data[k], without[k])] == []
    (lean / text_stage.TEXT_FILE).unlink()  # no text encoder saved: the vocabulary cannot be read back
    assert dit_stage.resumed_step(lean) == 0


def tiny_text_encoder():
    """300 captions, a sentencepiece vocabulary learnt from them, and a one-layer UMT5 of width 32."""
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]
    tokenizer = SentencePieceTokenizer(text_stage.train_tokenizer(captions))
    config = UMT5Config(
        vocab_size=tokenizer.vocab_size, dim=32, ffn_dim=64, num_layers=1, num_heads=2, head_dim=16, name="t"
    )
    return captions, tokenizer, UMT5Encoder(config)


def test_text_pretraining_learns_to_read_the_scene_from_its_caption():
    """The text encoder's stage before the DiT: the scene's attributes, read back from a caption's token
    vectors, get easier to name within a few dozen steps (a tiny encoder, small batches)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    _, tokenizer, text = tiny_text_encoder()
    dit_stage.init_weights(text, 0)
    before = {k: v.clone() for k, v in text.state_dict().items()}
    torch.manual_seed(0)  # the heads start from the global generator, as in train_dit
    losses = text_stage.pretrain_text(text, tokenizer, steps=101, seed=0, batch=16)
    assert len(losses) == 2 and losses[-1] < 0.75 * losses[0], losses
    assert any(not torch.equal(before[k], v) for k, v in text.state_dict().items())
    assert text_stage.pretrain_text(text, tokenizer, steps=0, seed=0) == []


def test_object_masks_mark_the_objects_of_the_clips_drawn():
    """object_masks draws the same scenes as clips(): the masked pixels carry the objects' colours, the
    rest match the clip drawn without objects; latent_mask puts a pixel in its causal VAE cell."""
    videos, _ = data.clips(5, 3, frames=9, size=64)
    masks = data.object_masks(5, 3, frames=9, size=64)
    assert masks.shape == videos.shape[:-1] and 0.001 < masks.mean() < 0.2
    rng = np.random.default_rng(5)
    scene = sample_scene(rng)
    colours = [np.array(COLOURS[obj.colour]) for obj in scene.objects]
    core = masks[0] & (np.abs(videos[0].astype(int) - colours[0]).max(-1) < 4)  # pure object colour
    assert core.sum() > 10
    empty = render(replace(scene, objects=()), 9, 64, 64).astype(int)
    assert np.abs(videos[0] - empty)[~masks[0]].max() <= data.OBJECT_PIXEL_CHANGE
    pixels = np.zeros((1, 9, 64, 64), bool)
    pixels[0, 5, 17, 40] = True  # frame 5: the second 4-frame group, latent frame 2
    cells = data.latent_mask(pixels)
    assert cells.shape == (1, 3, 8, 8) and cells.sum() == 1 and bool(cells[0, 2, 2, 5])
    pixels[0, 5, 17, 40], pixels[0, 0, 0, 0] = False, True  # frame 0 has a latent frame of its own
    assert data.latent_mask(pixels).nonzero().tolist() == [[0, 0, 0, 0]]


def tiny_dit_batch(clips: int, latent_frames: int):
    """A one-layer DiT, a tiny text encoder and a random batch of clean latents with their captions."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    captions, tokenizer, text = tiny_text_encoder()
    dit_config = replace(dit_stage.DIT_CONFIG, dim=32, ffn_dim=64, num_layers=1, text_dim=32, head_dim=16)
    dit = WanDiT(dit_config)
    dit_stage.init_weights(text, 0)
    dit_stage.init_weights(dit, 1)
    torch.manual_seed(0)
    x0 = torch.randn(clips, vae_stage.VAE_CONFIG.z_dim, latent_frames, 4, 4)
    return (
        dit,
        text,
        x0,
        tokenizer(captions[:clips], text_stage.TEXT_LEN),
        tokenizer([""], text_stage.TEXT_LEN),
    )


def test_object_weight_reweights_the_mean_over_cells():
    """dit_loss with objects weighs the covered cells `object_weight` times: all-covered or weight 1 is the
    plain mean; one covered cell moves the loss towards that cell's error."""
    dit, text, x0, tokens, empty = tiny_dit_batch(2, 2)

    def loss(objects=None, weight=1.0):
        torch.manual_seed(1)
        ids, mask, rng = tokens.ids.clone(), tokens.mask.clone(), np.random.default_rng(3)
        with torch.no_grad():
            return float(
                dit_stage.dit_loss(dit, text, dit_stage.Batch(x0, ids, mask, objects), empty, rng, weight)
            )

    plain = loss()
    everywhere = torch.ones(2, 2, 4, 4, dtype=torch.bool)
    assert loss(everywhere, 5.0) == pytest.approx(plain, rel=1e-6)
    one = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    one[0, 1, 1, 1] = True
    assert loss(one, 1.0) == pytest.approx(plain, rel=1e-6)
    assert loss(one, 50.0) != pytest.approx(plain, rel=1e-3)


def test_temporal_deviation_keeps_what_changes_over_the_scored_frames():
    """The error's deviation from its mean over a clip's scored latent frames: zero for an error alike in
    every frame, ±d for frames erring by m ± d, zero in unscored frames, which do not enter the mean."""
    per_frame, width = 3, 2
    alike = torch.randn(1, 1, per_frame, width).expand(2, 4, -1, -1).reshape(2, -1, width)
    every = torch.ones(2, 4, dtype=torch.bool)
    assert dit_stage.temporal_deviation(alike, every, per_frame).abs().max() == 0
    error = torch.zeros(1, 4, per_frame, width)
    error[0, 0], error[0, 1], error[0, 2], error[0, 3] = 5.0, 1.0, 3.0, 100.0  # frame 0 pinned, 3 unscored
    scored = torch.tensor([[False, True, True, False]])
    deviation = dit_stage.temporal_deviation(error.view(1, -1, width), scored, per_frame)
    assert deviation.view(4, per_frame, width)[:, 0, 0].tolist() == [0.0, -1.0, 1.0, 0.0]


def test_motion_weight_adds_the_weighted_deviation():
    """dit_loss with motion_weight λ is the plain loss plus λ times the same mean of the squared deviation:
    0 leaves it as it was, the addition is positive and grows linearly with λ."""
    dit, text, x0, tokens, empty = tiny_dit_batch(4, 3)

    def loss(weight):
        torch.manual_seed(1)
        ids, mask, rng = tokens.ids.clone(), tokens.mask.clone(), np.random.default_rng(3)
        with torch.no_grad():
            return float(
                dit_stage.dit_loss(
                    dit, text, dit_stage.Batch(x0, ids, mask), empty, rng, motion_weight=weight
                )
            )

    plain = loss(0.0)
    one, three = loss(1.0) - plain, loss(3.0) - plain
    assert one > 1e-3 * plain
    assert three == pytest.approx(3 * one, rel=1e-4)


def test_primer_scenes_move_one_look_the_way_their_caption_says():
    """The direction primer: one look (never a held-out combination) moving left, right, up and down in
    turn; each caption parses to its scene's motion, and the drawn object's centroid goes that way."""
    drawn = data.primer_scenes(8, seed=0)
    colour, shape, size, tone = data.PRIMER_LOOK
    assert [scene.objects[0].motion for scene, _ in drawn] == ["left", "right", "up", "down"] * 2
    for scene, text in drawn:
        (obj,) = scene.objects
        assert (obj.colour, obj.shape, obj.size, scene.background.tone, scene.pan) == (
            colour, shape, size, tone, None
        )  # fmt: skip
        assert not is_heldout(obj.colour, obj.shape, obj.motion)
        assert parse_caption(text) == [{"colour": colour, "shape": shape, "size": size, "motion": obj.motion}]
        mask = data.scene_mask(scene, 17, 64)
        first, last = (np.argwhere(mask[t]).mean(0) for t in (0, -1))  # (row, column)
        dx, dy = MOVES[obj.motion]
        travel = (last[1] - first[1]) * dx + (last[0] - first[0]) * dy
        assert travel > 0.2 * 64  # at least 0.2 of the frame along the caption's direction
    assert len({(scene.objects[0].x, scene.objects[0].y) for scene, _ in drawn}) == 8  # starts vary


def test_the_all_motions_primer_also_grows_shrinks_and_rotates_one_look():
    """--primer-motions all: the same look and the same direction clips' kind, with growing, shrinking and
    (a cross, as a circle cannot be seen to turn) rotating in the turn; each caption parses to its scene,
    none is a held-out combination, and the rendered clip does what its caption says."""
    from spacetime.training.evaluate import evaluate_video

    drawn = data.primer_scenes(7, seed=0, motions="all")
    motions = [scene.objects[0].motion for scene, _ in drawn]
    assert motions == ["left", "right", "up", "down", "grow", "shrink", "rotate"]
    for scene, text in drawn:
        (obj,) = scene.objects
        assert (obj.colour, obj.size, scene.background.tone, scene.pan) == ("red", "large", "black", None)
        assert obj.shape == ("cross" if obj.motion == "rotate" else "circle")
        assert not is_heldout(obj.colour, obj.shape, obj.motion)
        assert parse_caption(text) == [
            {"colour": "red", "shape": obj.shape, "size": "large", "motion": obj.motion}
        ]
        target = {"colour": "red", "shape": obj.shape, "motion": obj.motion}
        scored = evaluate_video(render(scene, 17, 64, 64), target)
        assert scored["motion_ok"] and scored["colour_ok"], (text, scored)
    directions = data.primer_scenes(4, seed=0)
    assert [t for _, t in directions] == [t for _, t in drawn[:4]]  # the left/right/up/down draws
    assert drawn[4][1] != data.primer_scenes(5, seed=0)[4][1]  # "directions" starts over at left


def test_a_resumed_run_keeps_the_vocabulary_its_text_encoder_learnt(tmp_path):
    """Going on from a saved state with other captions (another primer, say) reads the vocabulary back
    from the text encoder's file instead of learning one from the new captions, which would renumber
    the tokens under the trained embeddings."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]
    others = ["a large red cross rotating on a black background"] * 300
    latents = torch.from_numpy(rng.normal(size=(300, vae_stage.VAE_CONFIG.z_dim, 2, 4, 4))).half()
    first = dit_stage.DiTStage(latents, captions, steps=1, batch=2)
    dit_stage.train_dit(tmp_path, [first], DiTRecipe(), seed=0)
    learnt = load_file(tmp_path / text_stage.TEXT_FILE)["spiece_model"]
    redrawn = text_stage.train_tokenizer(
        captions + others
    )  # what learning it from the new captions would give
    assert redrawn != learnt.numpy().tobytes()
    then = dit_stage.DiTStage(latents, others, steps=1, batch=2)
    dit_stage.train_dit(tmp_path, [first, then], DiTRecipe(), seed=0)
    assert int(safe_open(tmp_path / dit_stage.STATE_FILE, "pt").metadata()["step"]) == 2
    assert torch.equal(load_file(tmp_path / text_stage.TEXT_FILE)["spiece_model"], learnt)


def test_pin_mask_first_only_rows_get_their_first_frame_alone():
    first_only = torch.tensor([True, False] * 50)
    plain = dit_stage.pin_mask(100, 5, np.random.default_rng(0))
    forced = dit_stage.pin_mask(100, 5, np.random.default_rng(0), first_only)
    assert forced[first_only].tolist() == [[True, False, False, False, False]] * 50
    assert torch.equal(forced[~first_only], plain[~first_only])  # the other rows' draws are untouched


def test_the_direction_primer_is_cached_and_mixed_into_batches(trained, tmp_path, monkeypatch):
    """primer_dataset encodes the primer clips with their object masks once; a stage with primer_share
    puts that share of each batch's rows first, from the primer, given their first latent frame alone."""
    _, vae, _, _ = trained
    primer = data.primer_dataset(vae, tmp_path, count=4, seed=0, size=64)
    assert primer.latents.shape == (4, vae_stage.VAE_CONFIG.z_dim, 5, 8, 8)
    assert primer.captions == [text for _, text in data.primer_scenes(4, 0)]
    assert 0.02 < primer.objects.float().mean() < 0.5 and primer.objects[:, 0].any()
    again = data.primer_dataset(vae, tmp_path, count=4, seed=0, size=64)  # from the cache
    assert torch.equal(again.latents, primer.latents) and again.captions == primer.captions
    large = data.primer_dataset(vae, tmp_path, count=2, seed=0, size=128)  # the 128x128 stage's
    assert large.latents.shape == (2, vae_stage.VAE_CONFIG.z_dim, 5, 16, 16)
    assert large.captions == primer.captions[:2]  # the same scenes
    assert 0.02 < large.objects.float().mean() < 0.5 and large.objects[:, 0].any()

    seen = []
    loss = dit_stage.dit_loss

    def spy(dit, text, batch, *args):
        seen.append((batch.x0.clone(), batch.first_only))
        return loss(dit, text, batch, *args)

    monkeypatch.setattr(dit_stage, "dit_loss", spy)
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]
    latents = torch.from_numpy(rng.normal(size=(300, vae_stage.VAE_CONFIG.z_dim, 5, 8, 8))).half()
    stage = dit_stage.DiTStage(latents, captions, steps=2, batch=4, primer=primer, primer_share=0.5)
    dit_stage.train_dit(tmp_path, [stage], DiTRecipe(), seed=0)
    assert len(seen) == 2
    for x0, first_only in seen:
        assert first_only.tolist() == [True, True, False, False]
        assert all(any(torch.equal(row.half(), clip) for clip in primer.latents) for row in x0[:2])
        assert not any(torch.equal(row.half(), clip) for row in x0[2:] for clip in primer.latents)


def test_a_direction_share_out_of_range_or_without_a_dit_stage_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--direction-share", "1"])
    assert "--direction-share 1.0 is not a share of a batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        no_stage = ["--dit-small-steps", "0", "--dit-steps", "0"]
        train.main(["--out", str(tmp_path), "--direction-share", "0.25", *no_stage])
    assert "--dit-small-steps and --dit-steps are 0 and 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--direction-share", "0.25", "--direction-clips", "0"])
    assert "--direction-clips is 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_text_lr_scale_0_holds_the_text_encoder_as_its_stage_left_it(tmp_path, monkeypatch, scale):
    """--text-lr-scale 0: the DiT trains and the text encoder stays exactly as the text stage made it; at 1
    (as the shipped weights were made) it trains with the DiT."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    after_stage = {}
    pretrain = dit_stage.pretrain_text

    def spy(text, *args):
        losses = pretrain(text, *args)
        after_stage.update({k: v.clone() for k, v in text.state_dict().items()})
        return losses

    monkeypatch.setattr(dit_stage, "pretrain_text", spy)
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]
    latents = torch.from_numpy(rng.normal(size=(300, vae_stage.VAE_CONFIG.z_dim, 2, 4, 4))).half()
    stage = dit_stage.DiTStage(latents, captions, steps=2, batch=2)
    dit_stage.train_dit(tmp_path, [stage], DiTRecipe(text_steps=1, text_lr_scale=scale), seed=0)
    state = load_file(tmp_path / dit_stage.STATE_FILE)
    changed = [k for k, v in after_stage.items() if not torch.equal(state["text." + k], v)]
    assert (changed == []) == (scale == 0.0)
    assert state["dit.head.head.weight"].abs().sum() > 0  # the DiT trains either way: its head starts at zero


def test_a_negative_text_lr_scale_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--text-lr-scale", "-1"])
    assert "--text-lr-scale -1.0 is negative" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_smoke_recipe_writes_the_shipped_files_and_a_finished_chain_trains_nothing_more(tmp_path):
    """`--recipe smoke`, the shipped chain's shape in seconds: the VAE, a base run and a fine-tune that goes
    on from its state with the primer of all motions and stops at its --stop-after. It writes the three
    files Tiny World ships, with their metadata keys; run again, every run is found done and no byte
    changes (a fine-tune stopped early is not trained on to its plan's end)."""
    threads = torch.get_num_threads()
    try:
        assert train.main(["--recipe", "smoke", "--out", str(tmp_path)]) == 0
        smoke = RECIPES["smoke"]
        assert int(safe_open(tmp_path / dit_stage.STATE_FILE, "pt").metadata()["step"]) == smoke.dit[-1].end
        assert smoke.dit[-1].end < smoke.dit[-1].small_steps + smoke.dit[-1].steps  # stopped before the end
        assert (tmp_path / data.PRIMER_FILES["all"].format(128)).exists()
        written = {}
        for name in (vae_stage.VAE_FILE, text_stage.TEXT_FILE, dit_stage.DIT_FILE):
            with safe_open(tmp_path / name, "pt") as made, safe_open(TINY_WORLD / name, "pt") as shipped:
                assert (made.metadata() or {}).keys() == (shipped.metadata() or {}).keys(), name
                assert set(made.keys()) == set(shipped.keys()), name  # the same tensors, by name
            written[name] = (tmp_path / name).read_bytes()
        assert train.main(["--recipe", "smoke", "--out", str(tmp_path)]) == 0
        assert all((tmp_path / name).read_bytes() == content for name, content in written.items())
    finally:
        runtime.use_threads(0)
        torch.set_num_threads(threads)


def test_a_flag_sets_every_run_of_the_recipe_and_a_run_that_would_train_nothing_is_refused(tmp_path, capsys):
    shipped = RECIPES["shipped"]
    halved = with_flags(shipped, {"--dit-lr": 5e-4, "--seed": 3, "--vae-steps": 10})
    assert [run.lr for run in halved.dit] == [5e-4, 5e-4] and halved.seed == 3 and halved.vae.steps == 10
    assert [run.end for run in shipped.dit] == [7000, 8500]  # the base run's plan, then the fine-tune's stop
    with pytest.raises(SystemExit):
        train.main(["--recipe", "shipped", "--out", str(tmp_path), "--stop-after", "1000"])
    assert "DiT run 2 ends after step 1000, no later than run 1 (1000)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_plain_captions_rewrite_a_share_of_the_captions_of_the_same_clips():
    """The captions of cached clips written again in the forms people type: about the share asked for, half
    of them without the background, each still naming its clip's object; 0 changes nothing."""
    captions = [text for i in range(0, 256, data.CHUNK) for _, text in data.draw_scenes(data._dataset_seed(0, 128, i), data.CHUNK)]  # fmt: skip
    scenes = [scene for i in range(0, 256, data.CHUNK) for scene, _ in data.draw_scenes(data._dataset_seed(0, 128, i), data.CHUNK)]  # fmt: skip
    assert data.plain_recaptioned(captions, 0, 128, 0.0) == captions
    written = data.plain_recaptioned(captions, 0, 128, 0.5)
    changed = [(new, scene) for new, old, scene in zip(written, captions, scenes, strict=True) if new != old]
    assert 0.35 < len(changed) / len(captions) < 0.6
    backgrounds = ("background", "backdrop", "floor", "checkerboard", "gradient")
    without = [new for new, _ in changed if not any(word in new for word in backgrounds)]
    assert 0.3 < len(without) / len(changed) < 0.7
    for new, scene in changed:
        named = parse_caption(new)[0]
        assert (named["colour"], named["shape"]) == (scene.objects[0].colour, scene.objects[0].shape), new


def test_a_fine_tune_from_finished_files_starts_from_them_with_a_fresh_optimizer(tmp_path):
    """`--recipe smoke-captions --init DIR`: the chain begins at its restart run from DIR's finished files
    (copied, standing for the runs before it), trains that run alone with plain captions, and leaves the
    three files in the shipped layout; a restart run's first state has moments only from its own steps."""
    threads = torch.get_num_threads()
    try:
        assert (
            train.main(["--recipe", "smoke-captions", "--out", str(tmp_path), "--init", str(TINY_WORLD)]) == 0
        )
        recipe = RECIPES["smoke-captions"]
        with safe_open(tmp_path / dit_stage.STATE_FILE, "pt") as state:
            assert int(state.metadata()["step"]) == recipe.dit[-1].end
            steps = state.get_tensor("adam.0.step") if "adam.0.step" in state.keys() else None
        assert steps is not None and int(steps) == recipe.dit[-1].end - recipe.dit[0].end  # fresh moments
        assert (tmp_path / vae_stage.VAE_FILE).read_bytes() == (TINY_WORLD / vae_stage.VAE_FILE).read_bytes()
        shipped = load_file(TINY_WORLD / dit_stage.DIT_FILE)
        tuned = load_file(tmp_path / dit_stage.DIT_FILE)
        assert shipped.keys() == tuned.keys()
        moved = max((tuned[k].float() - shipped[k].float()).abs().max().item() for k in shipped)
        assert 0 < moved < 0.05  # trained a little, from the shipped weights (not from a new init)
        assert not (tmp_path / "latents_64.safetensors").exists()  # the 64x64 stage was the runs before
    finally:
        runtime.use_threads(0)
        torch.set_num_threads(threads)


def test_init_without_a_fine_tune_in_the_recipe_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--recipe", "smoke", "--out", str(tmp_path), "--init", str(TINY_WORLD)])
    assert "--init begins at a fine-tune, and recipe smoke has none" in capsys.readouterr().err
