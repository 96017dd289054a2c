"""HTWA (LF-VILA's hierarchical temporal window attention) as an option of our Video Swin: windows per stage,
no temporal shift, the local tap, 32+ frames, and Kinetics / ImageNet weights re-sized into its stages."""

from __future__ import annotations

import pytest
import torch

from lib.model.checkpoint import load_swin_checkpoint, resize_temporal_bias
from lib.model.config import LavenderConfig
from lib.model.video_swin import SwinTransformer3D, htwa_layout, relative_position_index

ARGS = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "drop_path_rate": 0.0}


def swin(seed: int = 0, **kw) -> SwinTransformer3D:
    torch.manual_seed(seed)
    return SwinTransformer3D(**{**ARGS, **kw}).eval()


@pytest.mark.parametrize(("frames", "window"), [(8, 8), (12, 16), (32, 32)])
def test_one_window_over_all_frames_equals_full_temporal_attention_exactly(frames, window):
    """Every stage's temporal window covers the clip: HTWA is the Swin whose window covers all frames (its
    temporal shift then vanishes): the same weights give the same outputs, bit for bit."""
    full = swin(window_size=(window, 4, 4))
    htwa = swin(1, window_size=(8, 4, 4), temporal_windows=[window] * 4, local_window=window)
    missing = htwa.load_state_dict(full.state_dict(), strict=False).missing_keys
    assert missing == ["norm_local.weight", "norm_local.bias"]  # the local tap's own LayerNorm, only
    x = torch.randn(2, 3, frames, 64, 32)
    with torch.no_grad():
        global_map, local = htwa.forward_features(x)
        assert torch.equal(full(x), global_map)
        assert torch.equal(htwa(x), global_map)
    assert local.shape == global_map.shape  # no stage exceeds the local window: the tap is the last output


def test_without_temporal_windows_the_swin_is_unchanged():
    plain = swin()
    assert plain.stage_windows == [(8, 7, 7)] * 4 and plain.local_stage is None and plain.norm_local is None
    assert all(b.shift_size == (4, 3, 3) for stage in plain.layers for b in stage.blocks[1::2])
    assert set(plain.state_dict()) == set(swin(window_size=(8, 7, 7)).state_dict())
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        out, local = plain.forward_features(x)
        assert local is None and torch.equal(out, plain(x))


def test_windows_grow_per_stage_and_shift_in_space_only():
    model = swin(temporal_windows=[2, 4, 8, 16], local_window=8)
    assert model.stage_windows == [(2, 7, 7), (4, 7, 7), (8, 7, 7), (16, 7, 7)]
    for stage, depth in zip(model.layers, (2, 4, 8, 16)):
        assert [b.shift_size for b in stage.blocks] == [(0, 0, 0), (0, 3, 3)]
        table = stage.blocks[0].attn.relative_position_bias_table
        assert table.shape[0] == (2 * depth - 1) * 13 * 13
    # the tap: the input of the first stage whose window exceeds 8 frames (stage 3), LayerNorm-ed
    assert model.local_stage == 3 and model.local_features == 16 * 8


def test_no_temporal_shift_keeps_windows_apart():
    """Windows of 2 frames in every stage: a change to frame 3 (tokens 2-3: the patch kernel spans frames
    t, t+1) never reaches tokens 0-1. The plain Swin with the same window shifts in time and leaks."""
    x = torch.randn(1, 3, 4, 64, 64)
    y = x.clone()
    y[:, :, 3] += 1.0
    htwa = swin(window_size=(2, 7, 7), temporal_windows=[2, 2, 2, 2])
    plain = swin(window_size=(2, 7, 7))
    with torch.no_grad():
        a, b = htwa(x), htwa(y)
        assert torch.equal(a[:, :2], b[:, :2]) and not torch.allclose(a[:, 2:], b[:, 2:])
        assert not torch.allclose(plain(x)[:, :2], plain(y)[:, :2])


def test_local_tap_is_the_normalised_input_of_its_stage():
    model = swin(temporal_windows=[2, 4, 8, 16], local_window=2)  # stage 1 (window 4) is the first above 2
    seen = {}
    model.layers[1].register_forward_pre_hook(lambda module, args: seen.setdefault("input", args[0]))
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        _, local = model.forward_features(x)
        torch.testing.assert_close(local, model.norm_local(seen["input"]))
    assert local.shape == (1, 8, 8, 8, 32)  # H/8, channels of stage 1


@pytest.mark.parametrize("frames", [32, 64])
def test_32_and_more_frames_train(frames):
    model = swin(window_size=(8, 4, 4), temporal_windows=[2, 4, 8, 16], local_window=8).train()
    out, local = model.forward_features(torch.randn(1, 3, frames, 32, 32))
    (out.mean() + local.mean()).backward()
    assert out.shape[1] == frames and all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()
    )


def test_layout_rejects_bad_windows():
    with pytest.raises(ValueError, match="one positive window per stage"):
        htwa_layout((8, 7, 7), 4, [2, 4, 8], 8)
    with pytest.raises(ValueError, match="temporal_windows too"):
        htwa_layout((8, 7, 7), 4, None, 8)
    with pytest.raises(ValueError, match="one positive window per stage"):
        LavenderConfig(swin_temporal_windows=(2, 4))
    with pytest.raises(ValueError, match="long_form_dim needs"):
        LavenderConfig(long_form_dim=32)
    assert LavenderConfig(swin_temporal_windows=[2, 4, 8, 16]).swin_temporal_windows == (2, 4, 8, 16)


# --------------------------------------------------------------------------------------------------------
# Weights of another temporal window
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth_to", [2, 8, 32])
def test_temporal_bias_resize_keeps_every_shared_offset(depth_to):
    """Kinetics' window 8 (15 time offsets) into windows 2 / 8 / 32: the bias of every (query, key) pair
    whose time offset both windows have is the same; longer offsets take the outermost one's bias."""
    table = torch.randn(15 * 9, 2)  # spatial window 2x2 (3x3 offsets: a plane of 9), 2 heads
    resized = resize_temporal_bias(table, 2 * depth_to - 1, plane=9)
    assert resized.shape == ((2 * depth_to - 1) * 9, 2)
    source = relative_position_index((8, 2, 2), (8, 2, 2))
    target = relative_position_index((depth_to, 2, 2), (depth_to, 2, 2))
    span = min(8, depth_to) * 4  # the tokens of the first min(8, depth_to) frames
    torch.testing.assert_close(resized[target[:span, :span]], table[source[:span, :span]])
    if depth_to > 8:
        far = resized.view(2 * depth_to - 1, 9, 2)
        torch.testing.assert_close(far[0], table.view(15, 9, 2)[0])


def test_kinetics_weights_load_into_an_htwa_swin(tmp_path):
    source = swin(window_size=(8, 7, 7))
    path = tmp_path / "swin_kinetics.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    target = swin(1, temporal_windows=[2, 4, 8, 16], local_window=8)
    report = load_swin_checkpoint(target, path, mode="3d")
    assert report.ok and report.initialised == ["norm_local.weight", "norm_local.bias"]
    assert sum("temporal offsets" in line for line in report.resized) == 6  # 2 blocks x stages 0, 1, 3
    kept = target.layers[2].blocks[0].attn.relative_position_bias_table
    torch.testing.assert_close(kept, source.layers[2].blocks[0].attn.relative_position_bias_table)
    # a clip of 2 frames: stage windows of 2+ frames see the same offsets as Kinetics' window, the same output
    x = torch.randn(1, 3, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def test_the_model_takes_as_many_frames_as_max_size_frame():
    """emb_len (max_size_frame slots) is the model's frame limit; the HTWA Swin itself has none."""
    from lib.model.lavender import LavenderModel

    config = LavenderConfig(
        swin_size="custom", swin_embed_dim=8, swin_depths=(1, 1, 1, 1), swin_heads=(1, 1, 2, 2),
        swin_window=(8, 4, 4), swin_temporal_windows=(2, 4, 8, 64), hidden_size=16, num_layers=1,
        num_heads=2, intermediate_size=32, max_size_frame=64, max_size_patch=1,
    )  # fmt: skip
    model = LavenderModel(config).eval()
    with torch.no_grad():
        tokens, mask = model.encode_video(torch.randn(1, 64, 3, 32, 32))
        assert tokens.shape == (1, 64 * 2, 16) and mask.all()  # per frame: [CLS] + 1 patch
        with pytest.raises(ValueError, match="max_size_frame=64"):
            model.encode_video(torch.randn(1, 65, 3, 32, 32))


def test_run_config_keys_reach_the_model_config(minilm_dir):
    from lib.engine.config import load_config
    from lib.tasks.build import model_config

    cfg = load_config(["--fusion_encoder", str(minilm_dir), "--size_frame", "32", "--vis_temporal_windows",
                       "[2, 4, 8, 16]", "--long_form_dim", "64", "--contrastive_dim", "64"])  # fmt: skip
    config = model_config(cfg)
    assert config.swin_temporal_windows == (2, 4, 8, 16) and config.swin_local_window == 8
    assert config.long_form_dim == 64 and config.max_sentences == 8 and config.max_size_frame == 32
    assert model_config(load_config(["--fusion_encoder", str(minilm_dir)])).swin_temporal_windows is None
