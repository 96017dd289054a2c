"""LAVENDER model: token geometry, masks (full / seq2seq / padding), task tokens, gradients, autocast,
SDPA vs eager, and building from the local MiniLM folder (checked against transformers' own BertModel)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lib.model.checkpoint import build_from_pretrained_parts
from lib.model.lavender import (
    TASK_TOKEN_IDS,
    LavenderConfig,
    LavenderModel,
    fusion_mask,
    true_false_score,
)

VOCAB = 500


def tiny_config(**kw) -> LavenderConfig:
    base = {
        "swin_size": "custom",
        "swin_embed_dim": 16,
        "swin_depths": (2, 1, 1, 1),
        "swin_heads": (1, 2, 2, 4),
        "swin_drop_path": 0.0,
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 128,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
        "max_size_frame": 8,
        "max_size_patch": 4,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
    }
    return LavenderConfig(**{**base, **kw})


def tiny_model(**kw) -> LavenderModel:
    torch.manual_seed(0)
    return LavenderModel(tiny_config(**kw)).eval()


@pytest.fixture(scope="module")
def model() -> LavenderModel:
    return tiny_model()


def text_batch(batch: int = 2, length: int = 10, pad_from: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask; the second sample is padded from ``pad_from`` on."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1:, pad_from:] = 0
    ids[mask == 0] = 0
    return ids, mask


def clip(batch: int = 2, frames: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(2))


# --------------------------------------------------------------------------------------------------------
# Geometry and API
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 4, 5, 8])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_video_tokens_per_frame_are_cls_plus_patches(model, frames, size):
    with torch.no_grad():
        feat, mask = model.encode_video(clip(2, frames, size))
    side = size // 32
    assert feat.shape == (2, frames * (1 + side * side), 64)
    assert mask.dtype == torch.bool and mask.all() and mask.shape == feat.shape[:2]
    # the LayerNorm over tokens is the last step
    torch.testing.assert_close(feat.mean(-1), torch.zeros(feat.shape[:2]), atol=1e-5, rtol=0)


def test_frame_mask_marks_whole_frames(model):
    with torch.no_grad():
        _, mask = model.encode_video(clip(2, 3, 64), frame_mask=torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert mask.tolist()[0] == [True] * 10 + [False] * 5 and mask[1].sum() == 5


def test_limits_raise_clear_errors(model):
    with pytest.raises(ValueError, match="max_size_frame=8"):
        model.encode_video(clip(1, 9, 32))
    with pytest.raises(ValueError, match="max_size_patch=4"):
        model.encode_video(clip(1, 1, 160))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model.encode_video(torch.randn(1, 3, 32, 32))


def test_forward_and_logits_at_positions(model):
    ids, mask = text_batch()
    img = clip()
    with torch.no_grad():
        logits = model(img, ids, mask)
        positions = torch.zeros_like(mask, dtype=torch.bool)
        positions[0, 3] = positions[1, 5] = True
        picked = model(img, ids, mask, positions=positions)
    assert logits.shape == (2, 10, VOCAB)
    torch.testing.assert_close(picked, logits[positions])


def test_one_clip_scored_against_several_texts(model):
    ids, mask = text_batch(batch=4)
    with torch.no_grad():
        feat, vmask = model.encode_video(clip(1))
        text = model.embed_text(ids)
        shared = model.fuse(feat, vmask, text, mask)
        repeated = model.fuse(feat.expand(4, -1, -1), vmask.expand(4, -1), text, mask)
    torch.testing.assert_close(shared, repeated)


def test_uint8_frames_are_normalised_on_the_model_s_device(model):
    from lib.data.frames import ClipTransform

    g = torch.Generator().manual_seed(3)
    frames = [torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g).numpy() for _ in range(4)]
    as_float = ClipTransform(32, train=False)(frames)
    as_uint8 = ClipTransform(32, train=False, normalize=False)(frames)
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == as_float.shape == (4, 3, 32, 32)
    with torch.no_grad():
        a, mask_a = model.encode_video(as_float[None])
        b, mask_b = model.encode_video(as_uint8[None])
    assert torch.equal(mask_a, mask_b) and torch.allclose(a, b, atol=1e-5)


def test_uint8_frames_of_another_size_are_resized_to_frame_size_on_the_device(model):
    """A model with frame_size resizes uint8 clips the loader left at the stored resolution (defer_resize)
    before normalising them: the tokens equal those of the same frames resized first; without frame_size
    the frames are used as given (more patches)."""
    from lib.data.frames import ClipTransform, normalize_frames, resize_frames

    g = torch.Generator().manual_seed(4)
    frames = [torch.randint(0, 256, (64, 80, 3), dtype=torch.uint8, generator=g).numpy() for _ in range(4)]
    stored = ClipTransform(32, train=True, normalize=False, defer_resize=True)(frames)[None]
    assert stored.shape == (1, 4, 3, 64, 64)
    resizing = tiny_model(frame_size=32)  # the same weights as the fixture's model (seed 0)
    with torch.no_grad():
        tokens, mask = resizing.encode_video(stored)
        expected, _ = model.encode_video(normalize_frames(resize_frames(stored, 32)))
        as_given, _ = model.encode_video(stored)
        unchanged, _ = resizing.encode_video(stored[..., :32, :32].contiguous())
    assert torch.allclose(tokens, expected, atol=1e-5) and mask.all()
    assert as_given.shape[1] > tokens.shape[1]  # 64 px frames as given: more patches
    assert unchanged.shape == tokens.shape


def test_exact_head_under_autocast_gives_float32_logits_without_bf16_rounding(model):
    hidden = torch.randn(6, model.config.hidden_size)
    reference = model.mlm_logits(hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded, exact = model.mlm_logits(hidden), model.mlm_logits(hidden, exact=True)
    assert rounded.dtype == torch.bfloat16 and exact.dtype == torch.float32
    assert torch.allclose(exact, reference, atol=1e-5)
    assert rounded.float().unique().numel() < exact.unique().numel()  # bf16 merges close logits


def test_head_on_a_vocabulary_subset_equals_those_columns(model):
    hidden = torch.randn(3, 64)
    vocab = torch.tensor([7, 3, 450])
    with torch.no_grad():
        for exact in (False, True):
            full = model.mlm_logits(hidden, exact=exact)
            torch.testing.assert_close(model.mlm_logits(hidden, exact=exact, vocab=vocab), full[:, vocab])


def test_true_false_score_is_two_way_softmax():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    p = true_false_score(logits, true_id=0, false_id=2)
    torch.testing.assert_close(p, torch.sigmoid(logits[:, 0] - logits[:, 2]))
    assert p[0] > 0.5 > p[1]


def test_config_roundtrip_and_validation():
    config = tiny_config(enable_task_token=True)
    assert LavenderConfig.from_dict(config.to_dict()) == config
    assert LavenderConfig(swin_size="tiny").swin_features == 768
    assert LavenderConfig(swin_size="base").swin_features == 1024
    with pytest.raises(ValueError, match="unknown LavenderConfig keys"):
        LavenderConfig.from_dict({**config.to_dict(), "hiden_size": 3})
    with pytest.raises(ValueError, match="swin_size"):
        LavenderConfig(swin_size="huge")
    with pytest.raises(ValueError, match="attn_impl"):
        tiny_config(attn_impl="flash")


# --------------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------------


def test_seq2seq_mask_layout():
    context = torch.tensor([[1, 1, 0]], dtype=torch.bool)  # 2 valid video tokens + 1 masked
    text = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    allowed = fusion_mask(context, text, "seq2seq")[0, 0].int()
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0, 0],  # video rows: valid video only, no text
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 0, 1, 0, 0, 0],  # text rows: all valid context + causal text
            [1, 1, 0, 1, 1, 0, 0],
            [1, 1, 0, 1, 1, 1, 0],
            [1, 1, 0, 1, 1, 1, 0],  # padded text row: still sees only valid, earlier columns
        ]
    )
    assert torch.equal(allowed, expected)
    full = fusion_mask(context, text, "full")
    assert full.shape == (1, 1, 1, 7) and full[0, 0, 0].int().tolist() == [1, 1, 0, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="attn must be"):
        fusion_mask(context, text, "causal")


def test_fully_masked_rows_fall_back_to_attending_everywhere():
    allowed = fusion_mask(torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool), "full")
    assert allowed.all()


@pytest.mark.parametrize("attn", ["full", "seq2seq"])
def test_padding_does_not_leak(model, attn):
    ids, mask = text_batch(pad_from=6)
    other = ids.clone()
    other[1, 6:] = torch.arange(7, 11)
    with torch.no_grad():
        a, b = model(clip(), ids, mask, attn=attn), model(clip(), other, mask, attn=attn)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    torch.testing.assert_close(a[0], b[0])


def test_seq2seq_is_causal_over_text_and_video_ignores_text(model):
    """Changing text token j leaves every earlier text position unchanged.

    With 2 layers, position 0 would also change if video rows could see text (through the video tokens).
    """
    ids, mask = text_batch(pad_from=10)
    for j in (1, 5, 9):
        other = ids.clone()
        other[:, j] = (other[:, j] + 1) % VOCAB
        with torch.no_grad():
            a, b = model(clip(), ids, mask, attn="seq2seq"), model(clip(), other, mask, attn="seq2seq")
        torch.testing.assert_close(a[:, :j], b[:, :j])
        assert not torch.allclose(a[:, j], b[:, j])
    with torch.no_grad():
        a, b = model(clip(), ids, mask, attn="full"), model(clip(), other, mask, attn="full")
    assert not torch.allclose(a[:, 0], b[:, 0])  # in "full" everything sees everything


def test_prefix_mask_layout():
    context = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    text = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    allowed = fusion_mask(context, text, "prefix")[0, 0].int()
    assert allowed[:3].tolist() == [[1, 1, 0, 0, 0, 0, 0]] * 3  # video rows: valid video, never text
    assert allowed[3:].tolist() == [[1, 1, 0, 1, 1, 1, 0]] * 4  # text rows: valid video and ALL valid text


def reference_fuse(model, feat, vmask, text, tmask, attn, index, task=None):
    """The fusion as one pass over concatenated [video ; task token ; text] rows (no sharing)."""
    context, cmask = feat[index], vmask[index].bool()
    token = model.task_token(task, len(index))
    if token is not None:
        context, cmask = torch.cat([context, token], 1), F.pad(cmask, (0, 1), value=True)
    x = torch.cat([context, text], dim=1)
    return model.trsfr(x, fusion_mask(cmask, tmask.bool(), attn))[:, -text.shape[1] :]


@pytest.mark.parametrize("attn", ["seq2seq", "prefix", "full-no-video-to-text"])
@pytest.mark.parametrize("task_token", [False, True])
def test_shared_video_fusion_equals_the_concatenated_pass(attn, task_token):
    """Where video does not attend to text, each video is fused once and shared by its rows: same outputs
    and gradients as fusing every (video, text) row in full."""
    shared = attn == "full-no-video-to-text"
    model = tiny_model(enable_task_token=task_token, video_attends_text=not shared).train()
    ids, mask = text_batch(batch=4, pad_from=5)
    index = torch.tensor([1, 0, 1, 1])  # rows 0, 2, 3 share video 1
    feat, vmask = model.encode_video(clip(batch=2))
    vmask = vmask.clone()
    vmask[0, -3:] = False  # padded video tokens in video 0
    task = "vtm" if task_token else None
    call = "full" if shared else attn
    text = model.embed_text(ids, mask, causal=attn == "seq2seq")
    got = model.fuse(feat, vmask, text, mask, attn=call, task=task, video_index=index)
    want = reference_fuse(model, feat, vmask, text, mask, "prefix" if shared else attn, index, task)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    weight = model.trsfr.layer[0].intermediate.dense.weight
    (g_got,) = torch.autograd.grad(got.square().sum(), weight, retain_graph=True)
    (g_want,) = torch.autograd.grad(want.square().sum(), weight)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attn", ["seq2seq", "prefix"])
def test_a_fusion_context_is_reused_with_the_same_results(attn):
    model = tiny_model(enable_task_token=True)
    ids, mask = text_batch(batch=4, pad_from=5)
    index = torch.tensor([1, 1, 0, 1])
    with torch.no_grad():
        feat, vmask = model.encode_video(clip(batch=2))
        text = model.embed_text(ids, mask, causal=attn == "seq2seq")
        context = model.fusion_context(feat, vmask, task="cap")
        assert len(context) == 2 and len(context.keys) == len(model.trsfr.layer)
        once = model.fuse(context, None, text, mask, attn=attn, task="cap", video_index=index)
        again = model.fuse(feat, vmask, text, mask, attn=attn, task="cap", video_index=index)
        torch.testing.assert_close(once, again)
        with pytest.raises(ValueError, match="FusionContext serves"):
            model.fuse(context, None, text, mask, attn="full", task="cap", video_index=index)


def test_video_attends_text_switch_changes_full_attention_only(model):
    ids, mask = text_batch()
    prefix_model = copy.deepcopy(model)
    prefix_model.config = dataclasses.replace(model.config, video_attends_text=False)
    with torch.no_grad():
        for attn in ("full", "seq2seq"):
            a, b = model(clip(), ids, mask, attn=attn), prefix_model(clip(), ids, mask, attn=attn)
            assert torch.allclose(a, b) is (attn == "seq2seq")


# --------------------------------------------------------------------------------------------------------
# Task tokens, text layers, gradients
# --------------------------------------------------------------------------------------------------------


def test_task_token_changes_outputs_only_when_enabled():
    ids, mask = text_batch()
    with_token = tiny_model(enable_task_token=True)
    with torch.no_grad():
        feat, vmask = with_token.encode_video(clip())
        text = with_token.embed_text(ids)
        out = {t: with_token.fuse(feat, vmask, text, mask, task=t) for t in TASK_TOKEN_IDS}
        assert out["vtm"].shape == (2, 10, 64)
        assert not torch.allclose(out["vtm"], out["cap"])
        plain = tiny_model()
        torch.testing.assert_close(
            plain.fuse(feat, vmask, text, mask, task="vtm"), plain.fuse(feat, vmask, text, mask, task=None)
        )
    with pytest.raises(ValueError, match="task must be one of"):
        with_token.fuse(feat, vmask, text, mask, task=None)
    assert with_token.emb_task.requires_grad and not plain.emb_task.requires_grad


@pytest.mark.parametrize("attn", ["full", "seq2seq"])
def test_gradients_reach_every_parameter_in_use(attn):
    model = tiny_model(enable_task_token=True, txt_backbone_embed_only=False).train()
    ids, mask = text_batch()
    model(clip(), ids, mask, attn=attn, task="cap").square().mean().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert "enc_txt.txt_trsfr.layer.1.output.dense.weight" in trainable
    assert "enc_img.emb_odr" not in trainable  # VIOLET-only, kept frozen for checkpoint compatibility
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_text_layers_follow_causal_mask():
    model = tiny_model(txt_backbone_embed_only=False)
    ids, mask = text_batch(pad_from=10)
    other = ids.clone()
    other[:, 4] = (other[:, 4] + 1) % VOCAB
    with torch.no_grad():
        a, b = model.embed_text(ids, mask, causal=True), model.embed_text(other, mask, causal=True)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


# --------------------------------------------------------------------------------------------------------
# Numerics: autocast, SDPA vs eager
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attn_impl", "dtype"), [("sdpa", torch.bfloat16), ("eager", torch.bfloat16), ("sdpa", torch.float16)]
)
def test_autocast_is_finite_with_padding_and_seq2seq(attn_impl, dtype):
    model = tiny_model(attn_impl=attn_impl, enable_task_token=True).train()
    ids, mask = text_batch(batch=3)
    mask[2] = 0  # a sample with no text at all
    img = clip(3, 2, 64)
    for attn in ("full", "seq2seq"):
        with torch.autocast("cpu", dtype=dtype):
            logits = model(img, ids, mask, attn=attn, task="oe")
        assert logits.dtype == dtype and torch.isfinite(logits).all()
        logits.float().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.autocast("cpu", dtype=dtype), torch.no_grad():
        feat, _ = model.encode_video(img, frame_mask=torch.zeros(3, 2))  # no valid video token either
        no_video = torch.zeros(3, feat.shape[1], dtype=torch.bool)
        hidden = model.fuse(feat, no_video, model.embed_text(ids), mask * 0, attn="seq2seq", task="oe")
    assert torch.isfinite(hidden).all()


@pytest.mark.parametrize("attn", ["full", "seq2seq"])
def test_sdpa_and_eager_agree(model, attn):
    eager = LavenderModel(dataclasses.replace(model.config, attn_impl="eager")).eval()
    eager.load_state_dict(model.state_dict())
    ids, mask = text_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            model(clip(), ids, mask, attn=attn), eager(clip(), ids, mask, attn=attn), rtol=1e-4, atol=1e-4
        )


def test_gradient_checkpointing_matches(model):
    ckpt = LavenderModel(dataclasses.replace(model.config, use_checkpoint=True))
    ckpt.load_state_dict(model.state_dict())
    plain = copy.deepcopy(model)
    ids, mask = text_batch()
    for m in (plain.train(), ckpt.train()):
        m(clip(), ids, mask).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------------------
# Pretrained parts from a local Hugging Face folder
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_model(minilm_dir) -> LavenderModel:
    return build_from_pretrained_parts(tiny_config(), bert_dir=minilm_dir).eval()


def test_minilm_sets_fusion_geometry_and_weights(minilm_model, minilm_dir):
    config = minilm_model.config
    assert (config.hidden_size, config.num_layers, config.num_heads, config.intermediate_size) == (
        384,
        6,
        12,
        1536,
    )
    assert config.vocab_size == 30522 and config.max_position_embeddings == 512
    ref = load_file(str(minilm_dir / "model.safetensors"))
    sd = minilm_model.state_dict()
    torch.testing.assert_close(
        sd["enc_txt.emb_txt.word_embeddings.weight"], ref["embeddings.word_embeddings.weight"]
    )
    torch.testing.assert_close(
        sd["trsfr.layer.5.output.LayerNorm.bias"], ref["encoder.layer.5.output.LayerNorm.bias"]
    )
    decoder = minilm_model.fc_mtm.predictions.decoder.weight
    word = minilm_model.enc_txt.emb_txt.word_embeddings.weight
    torch.testing.assert_close(decoder, word)
    assert decoder.data_ptr() != word.data_ptr()  # copied, not tied
    report = minilm_model.load_reports["bert"]
    assert report.ok and any("word embeddings" in n for n in report.notes)
    assert minilm_model.enc_img.fc.weight.shape == (384, 128)


def test_our_bert_layers_match_transformers(minilm_model, minilm_dir, tokenizer):
    """Text through our embeddings + fusion layers == transformers' BertModel on the same folder."""
    from transformers import BertModel

    hf = BertModel.from_pretrained(str(minilm_dir)).eval()
    batch = tokenizer(["a man is playing a guitar", "two dogs run"], padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        text = minilm_model.embed_text(batch["input_ids"])
        ours = minilm_model.trsfr(text, fusion_mask(mask[:, :0].bool(), mask.bool(), "full"))
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], expected[valid], rtol=1e-4, atol=1e-4)


def test_mlm_head_loaded_from_bert_for_masked_lm_folder(tmp_path, minilm_dir):
    """A BertForMaskedLM folder (``bert.`` prefix, ``cls.predictions.*``, pytorch_model.bin) is understood."""
    ref = load_file(str(minilm_dir / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    head = {
        "cls.predictions.transform.dense.weight": torch.randn(384, 384, generator=g),
        "cls.predictions.transform.dense.bias": torch.randn(384, generator=g),
        "cls.predictions.transform.LayerNorm.weight": torch.randn(384, generator=g),
        "cls.predictions.transform.LayerNorm.bias": torch.randn(384, generator=g),
        "cls.predictions.decoder.weight": torch.randn(30522, 384, generator=g),
        "cls.predictions.bias": torch.randn(30522, generator=g),
    }
    torch.save({**{f"bert.{k}": v for k, v in ref.items()}, **head}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    model = build_from_pretrained_parts(tiny_config(), bert_dir=tmp_path)
    predictions = model.fc_mtm.predictions
    torch.testing.assert_close(
        predictions.transform.dense.weight.detach(), head["cls.predictions.transform.dense.weight"]
    )
    torch.testing.assert_close(predictions.decoder.weight.detach(), head["cls.predictions.decoder.weight"])
    torch.testing.assert_close(predictions.decoder.bias.detach(), head["cls.predictions.bias"])
    assert model.load_reports["bert"].notes == []


def test_missing_bert_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_from_pretrained_parts(tiny_config(), bert_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="swin_init"):
        build_from_pretrained_parts(tiny_config(), swin_init="3d")
