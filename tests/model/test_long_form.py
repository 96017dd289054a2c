"""Long-form pieces of the one model: clip pooling, MTC targets / plans / loss (and over 2 gloo ranks), packed
hierarchical paragraphs, and LF-VILA's stage-1 losses end to end on a tiny HTWA model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gloo_ranks import run_two_ranks

from lib.model import long_form as LF
from lib.model.bert import text_self_mask
from lib.model.lavender import LavenderConfig, LavenderModel

IGNORE = LF.IGNORE_INDEX


def test_clip_pool_averages_each_clips_frames_and_skips_padding():
    frames = torch.arange(12.0).view(1, 6, 2)  # frame t has features (2t, 2t + 1)
    clip_index = torch.tensor([[0, 0, 1, 1, 1, -1]])
    pooled, valid = LF.clip_pool(frames, clip_index, n_clips=3)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(pooled[0, 1], torch.tensor([6.0, 7.0]))
    assert valid.tolist() == [[True, True, False]] and pooled[0, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="n_clips"):
        LF.clip_pool(frames, clip_index, n_clips=1)


# --------------------------------------------------------------------------------------------------------
# MTC: targets, plans, loss
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "values", "labels"),
    [
        ([0, 3], [1, 2], [0, 1]),  # nearest clip: 1 for query 0, 2 for query 3
        ([2, 1], [1, 3], [IGNORE, 0]),  # query 2 is as near to 1 as to 3: tie masked
        ([2], [0, 1, 3], [IGNORE]),  # a tie between the 2nd and 3rd of three (LF-VILA compares 1st / last)
        ([2], [0, 2, 4], [1]),  # unique nearest between two equal distances (LF-VILA masks it)
        ([1, -1], [1, -1], [0, IGNORE]),  # absent candidate ignored, absent query not scored
    ],
)
def test_mtc_targets_are_the_temporally_nearest_candidate_with_ties_masked(keys, values, labels):
    got = LF.mtc_targets(torch.tensor([keys]), torch.tensor([values]))
    assert got.tolist() == [labels]


def test_mtc_plan_draws_valid_distinct_positions_and_negatives_from_other_samples_only():
    valid = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        plan = LF.sample_mtc_plan(valid, num_key=2, num_value=3, num_other=3, generator=g)
        for b, row in enumerate(valid):
            for drawn in (plan.keys[b], plan.values[b]):
                present = drawn[drawn >= 0]
                assert len(set(present.tolist())) == len(present) == min(len(drawn), int(row.sum()))
                assert row[present].all()
            sources = plan.other_samples[b][plan.other_samples[b] >= 0]
            assert b not in sources.tolist() and 2 not in sources.tolist()  # never own, never an empty one
            assert len(set(sources.tolist())) == len(sources) == min(3, 4 - (b != 2))
            for s, p in zip(sources.tolist(), plan.other_positions[b].tolist()):
                assert valid[s, p]
    alone = LF.sample_mtc_plan(valid[:1], generator=g)
    assert (alone.other_samples == -1).all()  # one sample: no extra negatives at all


def brute_mtc(clips, sentences, plan, temp):
    """The loss one query at a time (both directions averaged, over scored queries)."""
    losses = []
    labels = plan.labels
    for b in range(len(clips)):
        for k, key in enumerate(plan.keys[b].tolist()):
            if labels[b, k] == IGNORE:
                continue
            for queries, cands in ((sentences, clips), (clips, sentences)):
                pool = [cands[b, v] for v in plan.values[b].tolist() if v >= 0]
                others = zip(plan.other_samples[b].tolist(), plan.other_positions[b].tolist())
                pool += [cands[s, p] for s, p in others if s >= 0]
                logits = torch.stack([queries[b, key] @ c for c in pool]) / temp
                losses.append(-logits.log_softmax(0)[labels[b, k]] / 2)
    return torch.stack(losses).sum() / (len(losses) / 2)


def test_mtc_loss_equals_the_query_by_query_cross_entropy():
    g = torch.Generator().manual_seed(3)
    clips = F.normalize(torch.randn(4, 4, 8, generator=g), dim=-1)
    sentences = F.normalize(torch.randn(4, 4, 8, generator=g), dim=-1)
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    plan = LF.sample_mtc_plan(valid, 2, 3, 2, torch.Generator().manual_seed(0))
    out = LF.mtc_loss(clips, sentences, valid, torch.tensor(0.05), plan=plan)
    assert int(out["n_targets"]) == int((plan.labels != IGNORE).sum()) > 0
    torch.testing.assert_close(out["loss"], brute_mtc(clips, sentences, plan, 0.05))
    aligned = LF.mtc_loss(clips, clips, valid, torch.tensor(0.05), plan=plan)
    assert aligned["loss"] < out["loss"]


def test_mtc_loss_with_nothing_to_score_is_a_zero_with_gradients():
    clips = torch.randn(2, 3, 4, requires_grad=True)
    out = LF.mtc_loss(clips, clips, torch.zeros(2, 3, dtype=torch.bool), torch.tensor(0.05))
    out["loss"].backward()
    assert out["loss"].item() == 0.0 and torch.equal(clips.grad, torch.zeros_like(clips))


# --------------------------------------------------------------------------------------------------------
# Hierarchical paragraphs
# --------------------------------------------------------------------------------------------------------

PARAGRAPHS = [["a man walks in.", "he sits down on a wooden chair.", "then he stands up."], ["a dog runs."]]


def test_paragraph_text_packs_sentences_with_their_own_positions(tokenizer):
    text = LF.paragraph_text(tokenizer, PARAGRAPHS, size_sentence=6, max_sentences=4)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    row = text.ids[0].tolist()
    assert row[0] == cls and row[1] == cls and row.count(cls) == 4 and row.count(sep) == 3
    assert text.starts.tolist() == [[1, 7, 13, -1], [1, -1, -1, -1]]  # each sentence cut to 6 tokens
    assert text.sentence[0].tolist() == [-2] + [0] * 6 + [1] * 6 + [2] * 6
    assert text.positions[0].tolist() == [0] + list(range(6)) * 3
    assert text.ids[1, 7:].eq(pad).all() and text.mask[1].tolist() == [1] * 7 + [0] * 12
    assert text.sentence[1, 7:].eq(-1).all() and text.sentence_valid[1].tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="merge"):
        LF.paragraph_text(tokenizer, [["a"] * 5], size_sentence=6, max_sentences=4)


def test_sentence_mask_keeps_each_sentence_to_itself():
    sentence = torch.tensor([[-2, 0, 0, 1, 1, 1, -1]])
    allowed = LF.sentence_attention_mask(sentence)[0, 0]
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[0, 0] = expected[6, 6] = True  # the paragraph [CLS] and a padding row: themselves only
    expected[1:3, 1:3] = expected[3:6, 3:6] = True
    assert torch.equal(allowed, expected)
    assert LF.paragraph_attention_mask(torch.tensor([[1, 1, 0]])).tolist() == [[[[True, True, False]]]]


def tiny_long_model(**kw) -> LavenderModel:
    config = {
        "swin_size": "custom", "swin_embed_dim": 16, "swin_depths": (2, 1, 1, 1), "swin_heads": (1, 2, 2, 4),
        "swin_window": (8, 4, 4), "swin_drop_path": 0.0, "hidden_size": 32, "num_layers": 4, "num_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64, "max_size_frame": 16, "max_size_patch": 2,
        "hidden_dropout": 0.0, "attention_dropout": 0.0, "swin_temporal_windows": (2, 4, 8, 8),
        "swin_local_window": 4, "contrastive_dim": 16, "long_form_dim": 16, "max_sentences": 4,
    }  # fmt: skip
    torch.manual_seed(0)
    return LavenderModel(LavenderConfig(**{**config, **kw}))


@pytest.fixture(scope="module")
def long_model() -> LavenderModel:
    return tiny_long_model().eval()


def test_sentence_layers_encode_each_sentence_as_if_alone(long_model, tokenizer):
    """The packed paragraph under the sentence mask, with positions restarting per sentence, gives each
    sentence [CLS] the state of that sentence encoded on its own through the same layers."""
    text = LF.paragraph_text(tokenizer, PARAGRAPHS, size_sentence=8, max_sentences=4)
    with torch.no_grad():
        sentences, _ = LF.encode_paragraph(long_model, text)
        for b, paragraph in enumerate(PARAGRAPHS):
            for k, sentence in enumerate(paragraph):
                ids = tokenizer([sentence], truncation=True, max_length=8, return_tensors="pt")["input_ids"]
                alone = long_model.enc_txt.emb_txt(ids)
                alone = long_model.trsfr(alone, text_self_mask(torch.ones_like(ids, dtype=torch.bool), False),
                                         layers=slice(0, 2))  # fmt: skip
                torch.testing.assert_close(sentences[b, k], alone[0, 0], rtol=1e-5, atol=1e-5)
        assert sentences[1, 1:].abs().sum() == 0  # absent sentences are zeros


def test_paragraph_ignores_padding_and_takes_order_from_positions_and_sentence_ids(long_model, tokenizer):
    def paragraph(model, paragraphs):
        with torch.no_grad():
            return LF.encode_paragraph(model, LF.paragraph_text(tokenizer, paragraphs, 8, 4))[1]

    batched = paragraph(long_model, PARAGRAPHS)
    torch.testing.assert_close(batched[1], paragraph(long_model, PARAGRAPHS[1:])[0], rtol=1e-5, atol=1e-5)
    model = copy.deepcopy(long_model)
    with torch.no_grad():  # without the two sources of order, the paragraph is a set of sentences
        model.long_form.emb_sentence.weight.zero_()
        model.enc_txt.emb_txt.position_embeddings.weight.zero_()
    forward, backward = PARAGRAPHS[:1], [PARAGRAPHS[0][::-1]]
    torch.testing.assert_close(paragraph(model, backward), paragraph(model, forward), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.long_form.emb_sentence.weight.normal_()
    # far above the invariant case's rounding (the mean [CLS] sums the same embeddings: a weak signal at init)
    assert (paragraph(model, backward) - paragraph(model, forward)).abs().max() > 1e-4


def test_long_form_losses_train_every_part(tokenizer):
    model = tiny_long_model().train()
    b, m, t = 3, 2, 4
    img = torch.randn(b, m * t, 3, 32, 32)
    clip_index = torch.arange(m).repeat_interleave(t).expand(b, -1)
    video = LF.encode_long_video(model, img, clip_index, m)
    assert video.clips.shape == (b, m, 16) and video.clip_valid.all()
    paragraphs = [["a man walks.", "he sits."], ["a dog runs.", "it stops."], ["rain falls."]]
    text = LF.paragraph_text(tokenizer, paragraphs, 8, 4)
    out = LF.long_form_losses(model, video, text, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["mtc_loss"] > 0 and out["global_loss"] > 0
    out["loss"].backward()
    trained = ["long_form.proj_video", "long_form.proj_text", "long_form.emb_sentence", "vtc.proj_video",
               "enc_img.swin.norm_local", "enc_img.swin.layers.0.blocks.0.attn.qkv"]  # fmt: skip
    for name in (f"{module}.weight" for module in trained):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


# --------------------------------------------------------------------------------------------------------
# Two gloo ranks of B samples == one rank of 2B
# --------------------------------------------------------------------------------------------------------

GATHER_SCRIPT = """
import json, sys
import torch
import torch.nn.functional as F
from lib.engine import distributed as D
from lib.model.contrastive import ContrastiveHead, info_nce
from lib.model.long_form import mtc_loss

out = sys.argv[1]
D.init_distributed(force_process_group=True)
rank, world = D.get_rank(), D.get_world_size()
B, M = 3, 4
torch.manual_seed(0)
head = ContrastiveHead(12, 6).double()
feats = torch.randn(world * B, 2 * M + 2, 12).double()  # per sample: M clips, M sentences, video, paragraph
valid = torch.rand(world * B, M) > 0.3
valid[:, 0] = True

def losses(rows, gather):
    x = feats[rows].clone().requires_grad_()
    clips, sentences = head.video(x[:, :M]), head.text(x[:, M : 2 * M])
    temp = head.temperature()  # once: it clamps the parameter in place
    mtc = mtc_loss(clips, sentences, valid[rows], temp, 2, 3, 3,
                   generator=torch.Generator().manual_seed(5), gather=gather)
    glob = info_nce(head.video(x[:, 2 * M]), head.text(x[:, 2 * M + 1]), temp, gather)
    return glob["loss"] + 0.25 * mtc["loss"], x, int(mtc["n_targets"])

mine = slice(rank * B, rank * B + B)
loss, x, n_targets = losses(mine, True)
loss.backward()
grads = {n: p.grad.clone() for n, p in head.named_parameters()}
for g in grads.values():  # DDP's average over ranks
    torch.distributed.all_reduce(g)
    g /= world
total = torch.tensor([loss.item()]).double()
torch.distributed.all_reduce(total)
result = {"loss": total.item() / world, "grads": {n: g.tolist() for n, g in grads.items()},
          "x_grad": (x.grad / world).tolist(), "n_targets": n_targets}
torch.distributed.destroy_process_group()
if rank == 0:  # one process holding every rank's samples, the same draw
    head.zero_grad()
    single, x_all, n_single = losses(slice(0, world * B), False)
    single.backward()
    result.update(single_loss=single.item(), single_n_targets=n_single, single_x_grad=x_all.grad.tolist(),
                  single_grads={n: p.grad.tolist() for n, p in head.named_parameters()})
json.dump(result, open(f"{out}/rank{rank}.json", "w"))
"""


@pytest.mark.distributed
def test_two_gloo_ranks_equal_one_rank_for_the_global_and_temporal_losses(tmp_path):
    ranks = run_two_ranks(GATHER_SCRIPT, tmp_path)
    zero = ranks[0]
    assert zero["n_targets"] == ranks[1]["n_targets"] == zero["single_n_targets"] > 0
    assert zero["loss"] == pytest.approx(zero["single_loss"], abs=1e-6)
    for name, grad in zero["single_grads"].items():
        for r in ranks:
            assert np.allclose(r["grads"][name], grad, atol=1e-6), name
    single = np.array(zero["single_x_grad"])
    for r, result in enumerate(ranks):  # a rank's samples get the gradient of every rank's loss (gathered)
        assert np.allclose(result["x_grad"], single[3 * r : 3 * r + 3], atol=1e-6)


def test_sentence_means_average_each_sentences_tokens_and_leave_empty_ones_zero():
    """contrastive_text_pool "mean" in encode_paragraph: each sentence's feature is the mean of its tokens'
    states (tokens outside every sentence, index -1, are left out; a sentence without tokens is zero)."""
    from lib.model.long_form import sentence_means

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 5, generator=g)
    sentence = torch.tensor([[-1, 0, 0, 1, 1, 1, -1], [-1, 0, 0, 0, -1, -1, -1]])
    out = sentence_means(x, sentence, 3)
    for b in range(2):
        for k in range(3):
            rows = x[b][sentence[b] == k]
            expected = rows.mean(0) if len(rows) else torch.zeros(5)
            assert torch.allclose(out[b, k], expected, atol=1e-6), (b, k)


def test_mean_pooled_paragraphs_use_each_sentences_mean_token_state(tokenizer):
    """With contrastive_text_pool "mean", a sentence's feature is the mean of its tokens' states when it is
    encoded alone (the sentence layers see one sentence at a time); padding does not move the paragraph."""
    torch.manual_seed(0)
    model = tiny_long_model(contrastive_text_pool="mean").eval()
    text = LF.paragraph_text(tokenizer, PARAGRAPHS, size_sentence=8, max_sentences=4)
    with torch.no_grad():
        sentences, paragraphs = LF.encode_paragraph(model, text)
        ids = tokenizer([PARAGRAPHS[0][1]], truncation=True, max_length=8, return_tensors="pt")["input_ids"]
        every = text_self_mask(torch.ones_like(ids, dtype=torch.bool), False)
        alone = model.trsfr(model.enc_txt.emb_txt(ids), every, layers=slice(0, 2))
        torch.testing.assert_close(sentences[0, 1], alone[0].mean(0), rtol=1e-5, atol=1e-5)
        one = LF.encode_paragraph(model, LF.paragraph_text(tokenizer, PARAGRAPHS[1:], 8, 4))[1]
        torch.testing.assert_close(paragraphs[1], one[0], rtol=1e-5, atol=1e-5)
