"""Checkpoints: reference LAVENDER / VIOLET / SwinBERT layouts, Video Swin 3-D and inflated 2-D weights,
emb_pos / emb_len interpolation, our directory format, and the conversion tool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.model.checkpoint import (
    CheckpointError,
    build_from_pretrained_parts,
    load_checkpoint,
    load_model_dir,
    load_swin_checkpoint,
    prepare_state_dict,
    resize_emb_len,
    resize_emb_pos,
    save_model_dir,
)
from lib.model.lavender import LavenderConfig, LavenderModel
from lib.model.video_swin import SwinTransformer3D, relative_position_index

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "swin_size": "custom",
    "swin_embed_dim": 16,
    "swin_depths": [2, 1, 1, 1],
    "swin_heads": [1, 2, 2, 4],
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 300,
    "max_position_embeddings": 40,
    "max_size_frame": 4,
    "max_size_patch": 4,
}


def tiny_model(seed: int = 0, **kw) -> LavenderModel:
    torch.manual_seed(seed)
    return LavenderModel(LavenderConfig(**{**TINY, **kw})).eval()


def reference_state_dict(model: LavenderModel) -> dict[str, torch.Tensor]:
    """What the reference's ``torch.save(model.state_dict())`` holds: our parameters plus its persistent
    buffers (``position_ids``, ``token_type_ids``, ``relative_position_index`` of the full window)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["enc_txt.emb_txt.position_ids"] = torch.arange(model.config.max_position_embeddings)[None]
    sd["enc_txt.emb_txt.token_type_ids"] = torch.zeros(
        1, model.config.max_position_embeddings, dtype=torch.long
    )
    window = model.config.swin_window
    for key in list(sd):
        if key.endswith("relative_position_bias_table"):
            sd[key.replace("bias_table", "index")] = relative_position_index(window, window)
    return sd


def outputs(model: LavenderModel, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(2, 3, 3, 64, 64, generator=g)
    ids = torch.randint(1, 300, (2, 7), generator=g)
    with torch.no_grad():
        return model(img, ids, torch.ones_like(ids), task="vtm" if model.config.enable_task_token else None)


# --------------------------------------------------------------------------------------------------------
# Reference LAVENDER layout
# --------------------------------------------------------------------------------------------------------


def test_reference_geometry_matches_the_documented_keys():
    """The default (base Swin + BERT-base) model has the reference's names and shapes (reference §1.5)."""
    with torch.device("meta"):
        model = LavenderModel(LavenderConfig())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {
        "enc_img.swin.patch_embed.proj.weight": (128, 3, 2, 4, 4),
        "enc_img.swin.layers.0.blocks.1.attn.relative_position_bias_table": (2535, 4),
        "enc_img.swin.layers.2.blocks.17.mlp.fc2.weight": (512, 2048),
        "enc_img.swin.layers.2.downsample.reduction.weight": (1024, 2048),
        "enc_img.swin.norm.weight": (1024,),
        "enc_img.fc.weight": (768, 1024),
        "enc_img.emb_cls": (1, 1, 1, 768),
        "enc_img.emb_pos": (1, 1, 197, 768),
        "enc_img.emb_len": (1, 6, 1, 768),
        "enc_img.emb_odr": (1, 1, 1, 768),
        "enc_img.norm.bias": (768,),
        "enc_txt.emb_txt.word_embeddings.weight": (30522, 768),
        "enc_txt.emb_txt.LayerNorm.weight": (768,),
        "trsfr.layer.11.attention.self.query.weight": (768, 768),
        "trsfr.layer.11.attention.output.LayerNorm.bias": (768,),
        "trsfr.layer.11.intermediate.dense.weight": (3072, 768),
        "trsfr.layer.11.output.dense.weight": (768, 3072),
        "fc_mtm.predictions.transform.dense.weight": (768, 768),
        "fc_mtm.predictions.transform.LayerNorm.weight": (768,),
        "fc_mtm.predictions.decoder.weight": (30522, 768),
        "fc_mtm.predictions.decoder.bias": (30522,),
        "fc_mtm.predictions.bias": (30522,),
        "emb_task": (10, 768),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert (
        "trsfr.layer.12.output.dense.weight" not in shapes
        and "enc_txt.txt_trsfr.layer.0.output.dense.weight" not in shapes
    )
    # the reference's saved buffers are recognised and dropped; everything else maps 1:1
    sd = dict(model.state_dict())
    sd["enc_txt.emb_txt.position_ids"] = torch.empty(1, 512, device="meta")
    sd["enc_img.swin.layers.0.blocks.0.attn.relative_position_index"] = torch.empty(392, 392, device="meta")
    _, report = prepare_state_dict(sd, model, "reference")
    assert report.ok and report.initialised == [] and len(report.dropped) == 2


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_layout_loads_without_missing_or_unexpected_keys(prefix):
    source = tiny_model(seed=1, enable_task_token=True)
    sd = {prefix + k: v for k, v in reference_state_dict(source).items()}
    target = tiny_model(seed=2, enable_task_token=True)
    report = load_checkpoint(target, sd)
    assert report.ok and report.layout == "lavender"
    assert (report.missing, report.unexpected, report.initialised, report.ignored) == ([], [], [], [])
    assert "enc_txt.emb_txt.position_ids" in report.dropped and len(report.dropped) == 2 + 5
    torch.testing.assert_close(outputs(target), outputs(source))


def test_violet_layout_reports_what_it_lacks_and_carries():
    source = tiny_model(seed=1)
    sd = reference_state_dict(source)
    for key in ("enc_img.emb_odr", "emb_task"):
        del sd[key]
    sd["fc_mvm.1.weight"], sd["fc_mvm.3.weight"] = torch.zeros(128, 64), torch.zeros(8192, 128)
    sd["fc.1.weight"] = torch.zeros(128, 64)
    target = tiny_model(seed=2)
    report = load_checkpoint(target, sd)
    assert report.layout == "violet" and report.ok
    assert sorted(report.initialised) == ["emb_task", "enc_img.emb_odr"]
    assert sorted(report.ignored) == ["fc.1.weight", "fc_mvm.1.weight", "fc_mvm.3.weight"]
    torch.testing.assert_close(outputs(target), outputs(source))


def test_unexpected_and_missing_keys_are_errors_unless_relaxed():
    sd = reference_state_dict(tiny_model())
    sd["enc_img.swin.layers.9.blocks.0.attn.qkv.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="layers.9.blocks.0.attn.qkv.weight"):
        load_checkpoint(tiny_model(), sd)
    del sd["enc_img.swin.layers.9.blocks.0.attn.qkv.weight"]
    del sd["trsfr.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"missing \(1\): trsfr.layer.1.output.dense.weight"):
        load_checkpoint(tiny_model(), sd)
    report = load_checkpoint(tiny_model(), sd, strict=False)
    assert report.missing == ["trsfr.layer.1.output.dense.weight"]


def test_shape_mismatch_is_an_error_not_a_skip():
    sd = reference_state_dict(tiny_model())
    with pytest.raises(
        CheckpointError, match="word_embeddings.weight: checkpoint \\(300, 64\\) vs model \\(301, 64\\)"
    ):
        load_checkpoint(tiny_model(vocab_size=301), sd, strict=False)


def test_missing_checkpoint_path_raises(tmp_path):
    missing = tmp_path / "ckpt_violet_msrvtt-retrieval_9.pt"
    with pytest.raises(FileNotFoundError, match="ckpt_violet_msrvtt-retrieval_9.pt"):
        load_checkpoint(tiny_model(), missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="kinetics.pth"):
        load_swin_checkpoint(SwinTransformer3D(16, (1,), (1,)), tmp_path / "kinetics.pth")


def test_decoder_bias_follows_predictions_bias():
    sd = reference_state_dict(tiny_model())
    sd["fc_mtm.predictions.bias"] = torch.full((300,), 0.25)
    target = tiny_model(seed=5)
    report = load_checkpoint(target, sd)
    assert any("differs" in note for note in report.notes)
    assert target.fc_mtm.predictions.decoder.bias is target.fc_mtm.predictions.bias
    assert (target.fc_mtm.predictions.decoder.bias == 0.25).all()


def test_swinbert_layout_is_remapped_and_its_projections_composed():
    source = tiny_model(seed=1)
    ours = source.state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {
        "learn_vid_att.weight": torch.zeros(4, 4),
        "trans_encoder.bert.pooler.dense.weight": torch.zeros(64, 64),
    }
    sd["fc.weight"], sd["fc.bias"] = torch.randn(32, 128, generator=g), torch.randn(32, generator=g)
    sd["trans_encoder.bert.img_embedding.weight"] = torch.randn(64, 32, generator=g)
    sd["trans_encoder.bert.img_embedding.bias"] = torch.randn(64, generator=g)
    renames = {
        "enc_img.swin.": "swin.backbone.",
        "trsfr.": "trans_encoder.bert.encoder.",
        "enc_txt.emb_txt.": "trans_encoder.bert.embeddings.",
        "fc_mtm.": "trans_encoder.cls.",
    }
    for key, value in ours.items():
        for new, old in renames.items():
            if key.startswith(new):
                sd[old + key[len(new) :]] = value
    target = tiny_model(seed=2)
    report = load_checkpoint(target, sd)
    assert report.layout == "swinbert" and report.ok
    assert "enc_img.emb_pos" in report.initialised and "emb_task" in report.initialised
    assert sorted(report.ignored) == ["learn_vid_att.weight", "trans_encoder.bert.pooler.dense.weight"]
    x = torch.randn(5, 128)
    with torch.no_grad():
        expected = torch.nn.functional.linear(
            torch.nn.functional.linear(x, sd["fc.weight"], sd["fc.bias"]),
            sd["trans_encoder.bert.img_embedding.weight"],
            sd["trans_encoder.bert.img_embedding.bias"],
        )
        torch.testing.assert_close(target.enc_img.fc(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(target.trsfr.state_dict(), source.trsfr.state_dict())


# --------------------------------------------------------------------------------------------------------
# emb_pos / emb_len of another resolution or frame count
# --------------------------------------------------------------------------------------------------------


def test_emb_pos_and_emb_len_are_interpolated_on_load():
    source = tiny_model(seed=1, max_size_patch=3, max_size_frame=2)
    target = tiny_model(seed=2, max_size_patch=5, max_size_frame=6)
    report = load_checkpoint(target, reference_state_dict(source))
    assert sorted(r.split(":")[0] for r in report.resized) == ["enc_img.emb_len", "enc_img.emb_pos"]
    pos, len_ = target.enc_img.emb_pos.detach(), target.enc_img.emb_len.detach()
    assert pos.shape == (1, 1, 26, 64) and len_.shape == (1, 6, 1, 64)
    torch.testing.assert_close(pos[:, :, 0], source.enc_img.emb_pos.detach()[:, :, 0])  # cls slot kept
    src_len = source.enc_img.emb_len.detach()
    torch.testing.assert_close(len_[:, 0], src_len[:, 0])
    torch.testing.assert_close(len_[:, -1], src_len[:, -1])
    torch.testing.assert_close(len_[:, 1], src_len[:, 0] * 0.8 + src_len[:, 1] * 0.2)  # linear in between


def test_resize_helpers():
    d = 3
    grid = torch.arange(4.0).repeat_interleave(4).reshape(1, 1, 16, 1).expand(1, 1, 16, d)  # rows 0,1,2,3
    emb = torch.cat([torch.full((1, 1, 1, d), -7.0), grid], dim=2)
    torch.testing.assert_close(resize_emb_pos(emb, 4), emb)  # same size: unchanged
    constant = torch.cat([emb[:, :, :1], torch.ones(1, 1, 16, d)], dim=2)
    torch.testing.assert_close(resize_emb_pos(constant, 7)[:, :, 1:], torch.ones(1, 1, 49, d))
    up = resize_emb_pos(emb, 8)[0, 0, 1:, 0].reshape(8, 8)
    assert (up[:, 0] == up[:, 7]).all() and (up[1:, 0] >= up[:-1, 0]).all()  # rows stay rows, order kept
    # the reference adds only the first 1+h*w slots: resizing just the trained 2x2 block
    trained = resize_emb_pos(emb, 2, trained_grid=2)
    torch.testing.assert_close(trained, emb[:, :, :5])
    frames = torch.arange(4.0).reshape(1, 4, 1, 1)
    torch.testing.assert_close(resize_emb_len(frames, 7).flatten(), torch.arange(7.0) / 2)
    torch.testing.assert_close(
        resize_emb_len(frames, 3, trained_frames=2).flatten(), torch.tensor([0.0, 0.5, 1.0])
    )


# --------------------------------------------------------------------------------------------------------
# Video Swin weights
# --------------------------------------------------------------------------------------------------------


def small_swin(seed: int, window=(2, 7, 7)) -> SwinTransformer3D:
    torch.manual_seed(seed)
    return SwinTransformer3D(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=window).eval()


def test_kinetics_video_swin_checkpoint_loads(tmp_path):
    source = small_swin(1)
    sd = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    sd["backbone.layers.0.blocks.0.attn.relative_position_index"] = relative_position_index(
        (2, 7, 7), (2, 7, 7)
    )
    sd["cls_head.fc_cls.weight"], sd["cls_head.fc_cls.bias"] = torch.zeros(400, 32), torch.zeros(400)
    path = tmp_path / "swin_tiny_patch244_window877_kinetics400_1k.pth"
    torch.save({"meta": {"epoch": 30}, "state_dict": sd}, path)
    target = small_swin(2)
    report = load_swin_checkpoint(target, path, mode="3d")
    assert report.ok and sorted(report.ignored) == ["cls_head.fc_cls.bias", "cls_head.fc_cls.weight"]
    x = torch.randn(1, 3, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
    with pytest.raises(CheckpointError, match="relative_position_bias_table"):
        load_swin_checkpoint(small_swin(2, window=(2, 5, 5)), path, mode="3d")
    with pytest.raises(CheckpointError, match="missing"):
        load_swin_checkpoint(SwinTransformer3D(16, (2, 3), (1, 2), (2, 7, 7)), path, mode="3d")


@pytest.mark.parametrize("window_2d", [7, 12])
def test_imagenet_2d_swin_is_inflated(tmp_path, window_2d):
    """A 2-D Swin in the official key layout (``model`` wrapper, head, buffers) inflates into 3-D."""
    target = small_swin(0)
    g = torch.Generator().manual_seed(4)
    side = 2 * window_2d - 1
    sd = {}
    for key, value in target.state_dict().items():
        if key == "patch_embed.proj.weight":
            sd[key] = torch.randn(16, 3, 4, 4, generator=g)
        elif key.endswith("relative_position_bias_table"):
            sd[key] = torch.randn(side * side, value.shape[1], generator=g)
            sd[key.replace("bias_table", "index")] = torch.zeros(window_2d**2, window_2d**2, dtype=torch.long)
        else:
            sd[key] = torch.randn(value.shape, generator=g)
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    sd["head.weight"], sd["head.bias"] = torch.zeros(1000, 32), torch.zeros(1000)
    path = tmp_path / f"swin_tiny_patch4_window{window_2d}_224.pth"
    torch.save({"model": sd}, path)
    report = load_swin_checkpoint(target, path, mode="2d")
    assert report.ok and sorted(report.ignored) == ["head.bias", "head.weight"]
    assert len(report.resized) == (0 if window_2d == 7 else 4)
    kernel = target.patch_embed.proj.weight.detach()
    torch.testing.assert_close(
        kernel, sd["patch_embed.proj.weight"].unsqueeze(2).expand(-1, -1, 2, -1, -1) / 2
    )
    table = target.layers[1].blocks[0].attn.relative_position_bias_table.detach()
    assert table.shape == (3 * 13 * 13, 2)
    for depth in range(3):  # one copy of the 2-D plane per depth offset
        torch.testing.assert_close(table[depth * 169 : (depth + 1) * 169], table[:169])
    if window_2d == 7:
        torch.testing.assert_close(table[:169], sd["layers.1.blocks.0.attn.relative_position_bias_table"])
    torch.testing.assert_close(target.norm.weight.detach(), sd["norm.weight"])


def test_from_pretrained_parts_with_swin_checkpoint(tmp_path):
    swin = small_swin(1)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in swin.state_dict().items()}}, tmp_path / "k.pth")
    config = LavenderConfig(**{**TINY, "swin_depths": [2, 2], "swin_heads": [1, 2], "swin_window": [2, 7, 7]})
    model = build_from_pretrained_parts(config, swin_ckpt=tmp_path / "k.pth", swin_init="3d")
    torch.testing.assert_close(model.enc_img.swin.state_dict(), swin.state_dict())
    assert model.load_reports["swin"].ok


# --------------------------------------------------------------------------------------------------------
# Our directory format and the conversion tool
# --------------------------------------------------------------------------------------------------------


def test_save_and_load_model_dir(tmp_path):
    model = tiny_model(seed=1, enable_task_token=True, txt_backbone_embed_only=False)
    out = tmp_path / "model"
    out.mkdir()
    (out / "vocab.txt").write_text("[PAD]\n")  # files added later by other steps stay untouched
    save_model_dir(model, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    loaded = load_model_dir(out)
    assert loaded.config == model.config and not loaded.training
    torch.testing.assert_close(outputs(loaded), outputs(model))
    assert loaded.fc_mtm.predictions.decoder.bias is loaded.fc_mtm.predictions.bias


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "_tools" / "convert_checkpoint.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def tool_overrides() -> list[str]:
    """``--key value`` pairs giving the tool the tiny geometry (the args JSON carries max_size_*)."""
    return [
        item for k, v in TINY.items() if not k.startswith("max_size") for item in (f"--{k}", json.dumps(v))
    ]


def test_convert_tool_writes_our_format(tmp_path):
    source = tiny_model(seed=1, max_size_frame=8, max_size_patch=7)
    torch.save(reference_state_dict(source), tmp_path / "lavender.pt")
    args = {"vis_backbone_size": "base", "max_size_frame": 8, "max_size_patch": 4, "size_img": 128}
    args |= {
        "txt_backbone": "bert-base-uncased",
        "txt_backbone_embed_only": True,
        "lr": 2e-5,
        "size_frame": 5,
    }
    (tmp_path / "args.json").write_text(json.dumps(args))
    common = ["--src", str(tmp_path / "lavender.pt"), "--config", str(tmp_path / "args.json")]
    done = run_tool(*common, "--out", str(tmp_path / "out"), *tool_overrides())
    assert done.returncode == 0, done.stderr
    assert (
        "resized (1): enc_img.emb_pos: (1, 1, 50, 64) -> (1, 1, 17, 64), from the 4x4 trained slots"
        in done.stdout
    )
    converted = load_model_dir(tmp_path / "out")
    assert (converted.config.max_size_frame, converted.config.max_size_patch) == (8, 4)
    # size_img 128 -> a 4x4 trained grid: those 16 slots are kept exactly, so outputs do not change
    torch.testing.assert_close(converted.enc_img.emb_pos.detach(), source.enc_img.emb_pos.detach()[:, :, :17])
    torch.testing.assert_close(outputs(converted), outputs(source))


def test_convert_tool_fails_loudly(tmp_path):
    sd = reference_state_dict(tiny_model())
    sd["enc_img.mystery.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "bad.pt")
    (tmp_path / "args.json").write_text(json.dumps({"max_size_frame": 4, "max_size_patch": 4}))
    common = ["--config", str(tmp_path / "args.json"), "--out", str(tmp_path / "out"), *tool_overrides()]
    done = run_tool("--src", str(tmp_path / "bad.pt"), *common)
    assert done.returncode == 1 and "enc_img.mystery.weight" in done.stderr
    assert not (tmp_path / "out").exists()
    done = run_tool("--src", str(tmp_path / "absent.pt"), *common)
    assert done.returncode == 1 and "checkpoint not found" in done.stderr and "absent.pt" in done.stderr
