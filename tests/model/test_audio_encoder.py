"""lib.model.encoders.audio: the AST-style audio encoder as a third modality of the one fusion model, masked
clips without audio, and the public AST checkpoint's key layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lib.model.config import LavenderConfig
from lib.model.encoders.audio import AudioEncoder, AudioEncoderConfig, load_ast_weights
from lib.model.lavender import LavenderModel

VOCAB = 120
AUDIO = {"width": 32, "depth": 2, "heads": 2, "n_mels": 64, "slice_frames": 64, "max_slices": 4}


def tiny_config(**kw) -> LavenderConfig:
    base = {
        "swin_size": "custom",
        "swin_embed_dim": 16,
        "swin_depths": (1, 1),
        "swin_heads": (1, 2),
        "swin_drop_path": 0.0,
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 128,
        "vocab_size": VOCAB,
        "max_position_embeddings": 32,
        "max_size_frame": 4,
        "max_size_patch": 4,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "modalities": ("video", "audio"),
        "encoder_options": {"audio": AUDIO},
    }
    return LavenderConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model() -> LavenderModel:
    torch.manual_seed(0)
    return LavenderModel(tiny_config()).eval()


def batch(audio_fill: float | None = None):
    """3 clips: clip 0 with 2 audio slices, clip 1 WITHOUT audio (its slices filled with ``audio_fill``
    garbage), clip 2 with 1 real slice and 1 padding slice."""
    g = torch.Generator().manual_seed(0)
    video = torch.randn(3, 2, 3, 32, 32, generator=g)
    audio = torch.randn(3, 2, 64, 64, generator=g)
    if audio_fill is not None:
        audio[1] = audio_fill
    valid = torch.tensor([[True, True], [False, False], [True, False]])
    ids = torch.randint(5, VOCAB, (3, 7), generator=g)
    return {"video": video, "audio": audio}, {"audio": valid}, ids, torch.ones_like(ids)


def test_video_and_audio_tokens_enter_the_one_fusion_encoder(model):
    inputs, masks, ids, text_mask = batch()
    with torch.no_grad():
        tokens, valid = model.encode(inputs, masks)
        video_tokens, _ = model.encoder("video")(inputs["video"])
    per_slice = 1 + (64 // 16) * (64 // 16)
    assert tokens.shape == (3, video_tokens.shape[1] + 2 * per_slice, 64)
    audio_valid = valid[:, video_tokens.shape[1] :]
    assert audio_valid.sum(1).tolist() == [2 * per_slice, 0, per_slice]
    with torch.no_grad():
        audio_tokens, _ = model.encoder("audio")(inputs["audio"], masks["audio"])
    assert not audio_tokens[1].any()  # a clip without audio: not computed, zeros, masked
    assert torch.equal(tokens[:, video_tokens.shape[1] :], audio_tokens + model.emb_type["audio"])
    assert set(dict(model.named_parameters())) >= {
        "emb_type.audio",
        "enc_aud.ast.pos_embed",
        "enc_aud.emb_slice",
    }
    assert "emb_type.video" not in dict(model.named_parameters())  # LAVENDER's video layout is unchanged
    with torch.no_grad():
        logits = model(inputs, ids, text_mask, context_masks=masks)
    assert logits.shape == (3, 7, VOCAB) and torch.isfinite(logits).all()


def test_a_clip_without_audio_ignores_whatever_its_audio_input_holds(model):
    with torch.no_grad():
        outputs = []
        for fill in (0.0, 1e6, float("nan")):
            inputs, masks, ids, text_mask = batch(audio_fill=fill)
            outputs.append(model(inputs, ids, text_mask, context_masks=masks))
    assert all(torch.isfinite(o).all() for o in outputs)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_audio_changes_the_output_of_its_own_clip_only(model):
    inputs, masks, ids, text_mask = batch()
    other = {**inputs, "audio": inputs["audio"].clone()}
    other["audio"][0] += 1.0
    other["audio"][2, 1] += 5.0  # clip 2's padding slice: masked
    with torch.no_grad():
        a = model(inputs, ids, text_mask, context_masks=masks)
        b = model(other, ids, text_mask, context_masks=masks)
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_a_model_needs_every_modality_it_fuses(model):
    inputs, masks, ids, text_mask = batch()
    with pytest.raises(ValueError, match="no 'audio'"):
        model({"video": inputs["video"]}, ids, text_mask)


def test_audio_options_are_checked_and_saved_with_the_config():
    config = tiny_config()
    assert LavenderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        LavenderModel(tiny_config(encoder_options={"audio": {**AUDIO, "widht": 8}}))
    with pytest.raises(ValueError, match="whole 16 x 16 patches"):
        AudioEncoderConfig(n_mels=60)
    cls_only = LavenderModel(tiny_config(encoder_options={"audio": {**AUDIO, "tokens": "cls"}})).eval()
    inputs, masks, _, _ = batch()
    with torch.no_grad():
        tokens, valid = cls_only.encoder("audio")(inputs["audio"], masks["audio"])
    assert tokens.shape == (3, 2, 64) and valid.tolist() == masks["audio"].tolist()


def ast_layout(width: int, depth: int, grid=(12, 101)) -> dict[str, torch.Tensor]:
    """Random tensors under the AST AudioSet checkpoint's names (saved from DataParallel: ``module.``)."""
    g = torch.Generator().manual_seed(1)
    sd = {
        "module.v.cls_token": torch.randn(1, 1, width, generator=g),
        "module.v.dist_token": torch.randn(1, 1, width, generator=g),
        "module.v.pos_embed": torch.randn(1, 2 + grid[0] * grid[1], width, generator=g),
        "module.v.patch_embed.proj.weight": torch.randn(width, 1, 16, 16, generator=g),
        "module.v.patch_embed.proj.bias": torch.randn(width, generator=g),
        "module.v.norm.weight": torch.randn(width, generator=g),
        "module.v.norm.bias": torch.randn(width, generator=g),
        "module.mlp_head.0.weight": torch.randn(width, generator=g),
        "module.mlp_head.0.bias": torch.randn(width, generator=g),
        "module.mlp_head.1.weight": torch.randn(527, width, generator=g),
        "module.mlp_head.1.bias": torch.randn(527, generator=g),
    }
    for i in range(depth):
        for name, shape in (
            ("norm1", (width,)),
            ("attn.qkv", (3 * width, width)),
            ("attn.proj", (width, width)),
            ("norm2", (width,)),
            ("mlp.fc1", (4 * width, width)),
            ("mlp.fc2", (width, 4 * width)),
        ):
            sd[f"module.v.blocks.{i}.{name}.weight"] = torch.randn(*shape, generator=g)
            sd[f"module.v.blocks.{i}.{name}.bias"] = torch.randn(shape[0], generator=g)
    return sd


def test_the_public_ast_checkpoint_layout_loads_with_nothing_missing(tmp_path):
    torch.manual_seed(0)
    model = LavenderModel(tiny_config(encoder_options={"audio": {**AUDIO, "slice_frames": 512}})).eval()
    sd = ast_layout(width=32, depth=2)
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(sd, path)
    report = load_ast_weights(model, path)  # torch.load(weights_only=True)
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["dropped"] == ["v.dist_token"]
    assert sorted(report["left_out"]) == [f"mlp_head.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")]
    assert report["resized"] == {"v.pos_embed": "12x101 -> 4x32"}  # 64 mel x 512 frames, as VALOR
    ast = model.encoder("audio").ast
    assert torch.equal(ast.blocks[1].mlp.fc2.weight, sd["module.v.blocks.1.mlp.fc2.weight"])
    assert torch.equal(ast.patch_embed.proj.weight, sd["module.v.patch_embed.proj.weight"])
    assert torch.equal(ast.cls_token, sd["module.v.cls_token"])
    pos = ast.pos_embed.detach()
    assert torch.equal(pos[:, 0], sd["module.v.pos_embed"][:, 0])  # [CLS]'s; [DIST]'s dropped
    grid = sd["module.v.pos_embed"][:, 2:].reshape(1, 12, 101, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 32), mode="bilinear").flatten(2).transpose(1, 2)
    assert torch.allclose(pos[:, 1:], expected)
    # the loaded encoder runs
    with torch.no_grad():
        tokens, _ = model.encoder("audio")(torch.randn(1, 1, 64, 512))
    assert tokens.shape == (1, 129, 64) and torch.isfinite(tokens).all()


def test_a_foreign_key_is_reported_not_swallowed():
    torch.manual_seed(0)
    encoder = AudioEncoder(tiny_config())
    sd = ast_layout(width=32, depth=3)  # one block more than the encoder has
    report = load_ast_weights(encoder, sd)
    assert report["missing"] == [] and sorted(report["unexpected"])[0].startswith("blocks.2.")
