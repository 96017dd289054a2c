"""Every task's MLM layout, token by token with the real bert-base-uncased tokenizer."""

from __future__ import annotations

import pytest
import torch

from lib.model import layouts as L
from lib.model.layouts import IGNORE_INDEX


def tokens(tok, row: torch.Tensor) -> list[str]:
    return tok.convert_ids_to_tokens(row.tolist())


def supervised(layout: L.Layout) -> list[dict[int, int]]:
    """Per row: {position: label id} of the supervised positions."""
    return [{int(j): int(row[j]) for j in (row != IGNORE_INDEX).nonzero().flatten()} for row in layout.labels]


# ---------------------------------------------------------------------------------------------------------
# VTM / retrieval


def test_vtm_exact_layout_and_labels(tokenizer):
    lay = L.vtm(tokenizer, ["A man plays the guitar.", "hi"], size_txt=8, matched=[True, False])
    assert tokens(tokenizer, lay.ids[0]) == [
        "[CLS]",
        "a",
        "man",
        "plays",
        "the",
        "guitar",
        ".",
        "[SEP]",
        "[MASK]",
    ]
    assert tokens(tokenizer, lay.ids[1]) == [
        "[CLS]",
        "hi",
        "[SEP]",
        "[PAD]",
        "[PAD]",
        "[PAD]",
        "[PAD]",
        "[PAD]",
        "[MASK]",
    ]
    assert lay.mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 1]
    assert lay.mask_pos.tolist() == [8, 8]
    true_id, false_id = L.true_false_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens([true_id, false_id]) == ["true", "false"]
    expected = torch.full((2, 9), IGNORE_INDEX)
    expected[0, 8], expected[1, 8] = true_id, false_id
    assert torch.equal(lay.labels, expected)
    assert lay.ids.dtype == lay.mask.dtype == lay.labels.dtype == torch.long
    assert (lay.attn, lay.task) == ("full", "vtm")


def test_vtm_matches_the_tokenizers_own_padding_and_truncation(tokenizer):
    texts = ["a very long caption " * 10, "short one", ""]
    lay = L.vtm(tokenizer, texts, size_txt=12)
    ref = tokenizer(texts, padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    assert torch.equal(lay.ids[:, :12], ref["input_ids"])
    assert torch.equal(lay.mask[:, :12], ref["attention_mask"])
    assert (lay.ids[:, 12] == tokenizer.mask_token_id).all() and (lay.mask[:, 12] == 1).all()
    assert tokens(tokenizer, lay.ids[0])[11] == "[SEP]"  # truncated text still ends with [SEP]
    assert (lay.labels == IGNORE_INDEX).all()  # no supervision without `matched`


def test_vtm_rejects_bad_input(tokenizer):
    with pytest.raises(TypeError, match="list of strings"):
        L.vtm(tokenizer, "a caption", 8)
    with pytest.raises(ValueError, match="matched has 1 entries for 2 texts"):
        L.vtm(tokenizer, ["a", "b"], 8, matched=[True])
    with pytest.raises(ValueError, match="size_txt=1"):
        L.vtm(tokenizer, ["a"], 1)


def test_retrieval_mc_is_one_vtm_row_per_option(tokenizer):
    lay = L.retrieval_mc(tokenizer, ["", "who?"], [["a dog runs", "a cat"], ["he", "she"]], 6, answers=[1, 0])
    assert lay.ids.shape == (4, 7)
    expected = L.vtm(tokenizer, ["a dog runs", "a cat", "who? he", "who? she"], 6, [False, True, True, False])
    for name in ("ids", "mask", "labels", "mask_pos"):
        assert torch.equal(getattr(lay, name), getattr(expected, name)), name
    with pytest.raises(ValueError, match="row 1 has 1 options"):
        L.retrieval_mc(tokenizer, ["", ""], [["a", "b"], ["c"]], 6)
    with pytest.raises(ValueError, match="answer index 2"):
        L.retrieval_mc(tokenizer, [""], [["a", "b"]], 6, answers=[2])


def test_true_false_prob_is_the_two_way_softmax(tokenizer):
    true_id, false_id = L.true_false_ids(tokenizer)
    logits = torch.randn(3, 4, 30522, generator=torch.Generator().manual_seed(0))
    pair = torch.stack([logits[..., true_id], logits[..., false_id]], dim=-1).softmax(dim=-1)[..., 0]
    assert torch.allclose(L.true_false_prob(logits, true_id, false_id), pair, atol=1e-6)
    assert torch.allclose(L.true_false_prob(logits.half(), true_id, false_id), pair, atol=2e-3)


def test_softmax_and_reference_ratio_can_rank_differently():
    # candidate A: l_true=2, l_false=1; candidate B: l_true=10, l_false=8 (vocab of 2: id 0=true, 1=false)
    logits = torch.tensor([[2.0, 1.0], [10.0, 8.0]])
    prob = L.true_false_prob(logits, 0, 1)
    ratio = L.true_false_ratio(logits, 0, 1)
    assert prob.tolist() == pytest.approx([0.7310586, 0.8807971], abs=1e-6)  # sigmoid(1), sigmoid(2)
    assert ratio.tolist() == pytest.approx([2 / 3, 10 / 18], abs=1e-6)
    assert prob.argmax() == 1 and ratio.argmax() == 0  # B wins under the softmax, A under the ratio
    # with logits of mixed sign the ratio leaves [0, 1] altogether
    assert L.true_false_ratio(torch.tensor([[1.0, -3.0]]), 0, 1).item() == pytest.approx(-0.5)


# ---------------------------------------------------------------------------------------------------------
# Open-ended QA and fill-in-the-blank


def test_open_qa_exact_layout(tokenizer):
    lay = L.open_qa(tokenizer, ["What is he doing?", "who"], size_txt=10, answers=["cooking", "ice cream"])
    assert tokens(tokenizer, lay.ids[0]) == [
        "[CLS]",
        "what",
        "is",
        "he",
        "doing",
        "?",
        "answer",
        ":",
        "[MASK]",
        "[SEP]",
    ]
    assert tokens(tokenizer, lay.ids[1]) == [
        "[CLS]",
        "who",
        "answer",
        ":",
        "[MASK]",
        "[SEP]",
        "[PAD]",
        "[PAD]",
        "[PAD]",
        "[PAD]",
    ]
    assert lay.mask[1].tolist() == [1] * 6 + [0] * 4
    assert lay.mask_pos.tolist() == [8, 4]
    cooking = tokenizer.convert_tokens_to_ids("cooking")
    # "ice cream" is two wordpieces: no label with one [MASK] (not a silent [UNK] label)
    assert supervised(lay) == [{8: cooking}, {}]
    assert (lay.task, lay.n_masks, lay.mask_index().tolist()) == ("oe", 1, [[8], [4]])


@pytest.mark.parametrize(("n_words", "kept"), [(4, 4), (5, 5), (6, 5), (40, 5)])
def test_open_qa_truncates_the_question_so_everything_fits(tokenizer, n_words, kept):
    question = " ".join(["dog"] * n_words)
    lay = L.open_qa(tokenizer, [question], size_txt=10)  # 10 = [CLS] + 5 question + answer : [MASK] [SEP]
    assert lay.ids.shape == (1, 10)
    expected = ["[CLS]", *["dog"] * kept, "answer", ":", "[MASK]", "[SEP]"]
    assert tokens(tokenizer, lay.ids[0])[: 1 + kept + 4] == expected
    assert lay.mask_pos.item() == 1 + kept + 2


def test_open_qa_multi_piece_answers_use_k_masks(tokenizer):
    lay = L.open_qa(tokenizer, ["what is it", "what"], 12, answers=["ice cream", "dog"], n_masks=2)
    assert tokens(tokenizer, lay.ids[0])[:9] == [
        "[CLS]",
        "what",
        "is",
        "it",
        "answer",
        ":",
        "[MASK]",
        "[MASK]",
        "[SEP]",
    ]
    ice, cream = tokenizer.convert_tokens_to_ids(["ice", "cream"])
    assert supervised(lay) == [{6: ice, 7: cream}, {}]  # "dog" has one piece, not two
    assert lay.mask_index().tolist() == [[6, 7], [4, 5]]
    with pytest.raises(ValueError, match="needs >= 6"):
        L.open_qa(tokenizer, ["q"], 5, n_masks=2)


def test_answer_candidates_and_scoring(tokenizer):
    cands = L.answer_candidates(tokenizer, ["yes", "ice cream", "Playing", "basketball court"])
    assert cands.single == {"yes": 2748, "Playing": tokenizer.convert_tokens_to_ids("playing")}
    assert cands.n_multi == 2
    groups = cands.by_length()
    assert sorted(groups) == [1, 2] and groups[2][0] == [1, 3]
    assert groups[2][1].tolist() == [
        tokenizer.convert_tokens_to_ids(["ice", "cream"]),
        tokenizer.convert_tokens_to_ids(["basketball", "court"]),
    ]
    with pytest.raises(ValueError, match="no wordpieces"):
        L.answer_candidates(tokenizer, ["ok", " "])
    # hand-computed: vocab of 4, k=2 masks, candidates (0,1) and (2,3)
    log_probs = torch.log(torch.tensor([[[0.5, 0.1, 0.2, 0.2], [0.1, 0.25, 0.05, 0.6]]]))
    scores = L.score_candidates(log_probs, torch.tensor([[0, 1], [2, 3]]))
    expected = [
        (torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.25))) / 2,
        (torch.log(torch.tensor(0.2)) + torch.log(torch.tensor(0.6))) / 2,
    ]
    assert scores.shape == (1, 2) and scores[0].tolist() == pytest.approx([float(e) for e in expected])
    with pytest.raises(ValueError, match="same k"):
        L.score_candidates(log_probs, torch.tensor([[0], [2]]))


def test_fill_blank_exact_layout(tokenizer):
    sentences = ["A man [MASK] the guitar.", "[MASK] is here"]
    lay = L.fill_blank(tokenizer, sentences, 9, answers=["plays", "ice cream"])
    assert tokens(tokenizer, lay.ids[0]) == [
        "[CLS]",
        "a",
        "man",
        "[MASK]",
        "the",
        "guitar",
        ".",
        "[SEP]",
        "[PAD]",
    ]
    assert tokens(tokenizer, lay.ids[1])[:5] == ["[CLS]", "[MASK]", "is", "here", "[SEP]"]
    assert lay.mask_pos.tolist() == [3, 1]
    assert supervised(lay) == [{3: tokenizer.convert_tokens_to_ids("plays")}, {}]


def test_fill_blank_keeps_the_blank_when_truncating(tokenizer):
    words = [str(i) for i in range(20)]
    early = " ".join(words[:2] + ["[MASK]"] + words[2:])
    late = " ".join(words[:15] + ["[MASK]"] + words[15:])
    lay = L.fill_blank(tokenizer, [early, late], 8, answers=["x", "y"])  # budget: 6 pieces
    # the blank fits the first 6 pieces: the tail is cut as in the reference
    assert tokens(tokenizer, lay.ids[0]) == ["[CLS]", "0", "1", "[MASK]", "2", "3", "4", "[SEP]"]
    # the blank would be cut: a window around it is kept instead
    assert tokens(tokenizer, lay.ids[1]) == ["[CLS]", "13", "14", "[MASK]", "15", "16", "17", "[SEP]"]
    assert lay.mask_pos.tolist() == [3, 3]
    assert (lay.ids.gather(1, lay.mask_pos[:, None]) == tokenizer.mask_token_id).all()
    two = L.fill_blank(tokenizer, [late], 8, n_masks=2)
    assert tokens(tokenizer, two.ids[0]) == ["[CLS]", "13", "14", "[MASK]", "[MASK]", "15", "16", "[SEP]"]
    for bad in ("no blank here", "[MASK] and [MASK]"):
        with pytest.raises(ValueError, match="sentence 0 has"):
            L.fill_blank(tokenizer, [bad], 8)


# ---------------------------------------------------------------------------------------------------------
# Multiple choice (TGIF)


def test_multiple_choice_exact_layout(tokenizer):
    options = [["run", "jump", "sit", "eat", "sleep"]]
    lay = L.multiple_choice(tokenizer, ["What does he do?"], options, size_txt=40, answers=[3])
    body = ["what", "does", "he", "do", "?"]
    for k, word in enumerate(options[0]):
        body += ["[SEP]", "option", str(k), ":", word]
    assert tokens(tokenizer, lay.ids[0]) == ["[CLS]", *body, "[MASK]", "[SEP]"] + ["[PAD]"] * (43 - 33)
    assert lay.ids.shape == (1, 43)  # size_txt + 3, the reference's geometry
    assert lay.mask_pos.tolist() == [31]
    assert supervised(lay) == [{31: tokenizer.convert_tokens_to_ids("3")}]
    assert L.choice_ids(tokenizer, 5) == tokenizer.convert_tokens_to_ids(["0", "1", "2", "3", "4"])
    assert lay.task == "mc"


def test_multiple_choice_truncates_to_size_txt_minus_one_pieces(tokenizer):
    lay = L.multiple_choice(tokenizer, ["q"], [["a", "b", "c", "d", "e"]], size_txt=8, answers=[0])
    assert tokens(tokenizer, lay.ids[0]) == [
        "[CLS]",
        "q",
        "[SEP]",
        "option",
        "0",
        ":",
        "a",
        "[SEP]",
        "[MASK]",
        "[SEP]",
        "[PAD]",
    ]
    assert lay.mask.tolist() == [[1] * 10 + [0]]
    with pytest.raises(ValueError, match="1 <= n <= 10"):
        L.choice_ids(tokenizer, 11)


# ---------------------------------------------------------------------------------------------------------
# MLM masking and captioning


def random_batch(tokenizer, n: int = 200, seed: int = 0) -> torch.Tensor:
    """vtm ids (n, 33) of random texts of 0-29 words (some truncated, some empty)."""
    words = ["a", "man", "woman", "dog", "plays", "runs", "on", "the", "in", "kitchen", "guitar", "street"]
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 30, (n,), generator=g).tolist()
    picks = [torch.randint(len(words), (k,), generator=g).tolist() for k in lengths]
    texts = [" ".join(words[i] for i in pick) for pick in picks]
    return L.vtm(tokenizer, texts, 32).ids


def test_mlm_mask_rate_specials_and_labels(tokenizer):
    ids = random_batch(tokenizer)
    specials = L.special_ids(tokenizer)
    g = torch.Generator().manual_seed(1)
    corrupted, labels = L.mlm_mask(ids, specials, tokenizer.mask_token_id, 0.15, g)
    maskable = ~torch.isin(ids, torch.tensor(specials))
    selected = labels != IGNORE_INDEX
    assert not (selected & ~maskable).any()  # [CLS]/[SEP]/[PAD]/appended [MASK] never chosen
    assert torch.equal(labels[selected], ids[selected])
    assert (corrupted[selected] == tokenizer.mask_token_id).all()  # reference mode: always [MASK]
    assert torch.equal(corrupted[~selected], ids[~selected])
    rate = selected.sum().item() / maskable.sum().item()
    assert 0.13 < rate < 0.18, rate  # ~2900 maskable tokens: sd 0.007, plus the >= 1 per row guarantee
    per_row = selected.sum(1)
    assert ((per_row >= 1) | (maskable.sum(1) == 0)).all()


def test_mlm_mask_is_reproducible_and_guarantees_one_per_row(tokenizer):
    ids = random_batch(tokenizer, n=50)
    args = (ids, L.special_ids(tokenizer), tokenizer.mask_token_id, 0.15)
    a = L.mlm_mask(*args, torch.Generator().manual_seed(7))
    b = L.mlm_mask(*args, torch.Generator().manual_seed(7))
    c = L.mlm_mask(*args, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    _, labels = L.mlm_mask(
        ids, L.special_ids(tokenizer), tokenizer.mask_token_id, 1e-9, torch.Generator().manual_seed(0)
    )
    has_words = (~torch.isin(ids, torch.tensor(L.special_ids(tokenizer)))).any(1)
    assert torch.equal((labels != IGNORE_INDEX).sum(1), has_words.long())  # exactly one where possible
    _, none = L.mlm_mask(ids, L.special_ids(tokenizer), tokenizer.mask_token_id, 0.0)
    assert (none == IGNORE_INDEX).all()


def test_mlm_mask_bert_mode_80_10_10(tokenizer):
    ids = random_batch(tokenizer, n=600, seed=3)
    corrupted, labels = L.mlm_mask(
        ids,
        L.special_ids(tokenizer),
        tokenizer.mask_token_id,
        0.5,
        torch.Generator().manual_seed(2),
        mode="bert",
        vocab_size=len(tokenizer),
    )
    selected = labels != IGNORE_INDEX
    n = selected.sum().item()
    masked = (corrupted[selected] == tokenizer.mask_token_id).sum().item() / n
    unchanged = (corrupted[selected] == ids[selected]).sum().item() / n
    assert n > 4000
    assert 0.77 < masked < 0.83 and 0.08 < unchanged < 0.12  # random ids rarely equal the original
    with pytest.raises(ValueError, match="vocab_size"):
        L.mlm_mask(ids, L.special_ids(tokenizer), tokenizer.mask_token_id, mode="bert")
    with pytest.raises(ValueError, match="mask mode"):
        L.mlm_mask(ids, L.special_ids(tokenizer), tokenizer.mask_token_id, mode="80/10/10")


def test_caption_train_masks_words_and_sep_but_never_padding(tokenizer):
    captions = ["a man is playing a guitar on stage", "a dog runs", "cars drive down a busy street at night"]
    captions *= 200
    lay = L.caption_train(tokenizer, captions, 12, p=0.15, generator=torch.Generator().manual_seed(0))
    clean = L.vtm(tokenizer, captions, 12).ids[:, :12]
    selected = lay.labels != IGNORE_INDEX
    assert (lay.attn, lay.task, lay.mask_pos) == ("seq2seq", "cap", None)
    assert torch.equal(lay.labels[selected], clean[selected])
    assert (lay.ids[selected] == tokenizer.mask_token_id).all()
    assert torch.equal(lay.ids[~selected], clean[~selected])
    assert torch.equal(lay.mask, (clean != tokenizer.pad_token_id).long())
    assert not (selected & (clean == tokenizer.pad_token_id)).any()
    sep_rate = selected[clean == tokenizer.sep_token_id].float().mean().item()
    cls_rate = selected[:, 0].float().mean().item()
    assert 0.1 < sep_rate < 0.25 and 0.1 < cls_rate < 0.25  # [SEP] (end of caption) and [CLS] learnable
    assert (selected.sum(1) >= 1).all()
    no_cls = L.caption_train(tokenizer, captions, 12, 0.15, torch.Generator().manual_seed(0), mask_cls=False)
    assert (no_cls.labels[:, 0] == IGNORE_INDEX).all() and (no_cls.ids[:, 0] == tokenizer.cls_token_id).all()


def test_caption_step_appends_one_mask(tokenizer):
    prefix = L.caption_start(tokenizer, 2)
    assert prefix.tolist() == [[tokenizer.cls_token_id]] * 2
    step = L.caption_step(tokenizer, torch.cat([prefix, torch.tensor([[1037], [2158]])], dim=1), size_txt=4)
    assert tokens(tokenizer, step.ids[0]) == ["[CLS]", "a", "[MASK]"]
    assert step.mask.tolist() == [[1, 1, 1]] * 2 and step.mask_pos.tolist() == [2, 2]
    assert (step.attn, step.task) == ("seq2seq", "cap")
    with pytest.raises(ValueError, match="exceeds size_txt=3"):
        L.caption_step(tokenizer, torch.ones(1, 3, dtype=torch.long), size_txt=3)
    with pytest.raises(ValueError, match="caption_start"):
        L.caption_step(tokenizer, torch.ones(3, dtype=torch.long), size_txt=3)


def test_layout_to_and_constants(tokenizer):
    lay = L.open_qa(tokenizer, ["q"], 8).to("cpu")
    assert lay.mask_pos.tolist() == [4] and lay.task == "oe"
    with pytest.raises(ValueError, match="no fixed"):
        L.caption_train(tokenizer, ["a"], 4).mask_index()
    assert set(L.TASK_TOKENS) == {"vtm", "mc", "oe", "cap"}
    assert L.PROMPTS["open_qa"] == "answer the question about the video."
    assert set(L.PROMPTS) >= {"vtm", "retrieval_mc", "open_qa", "fill_blank", "multiple_choice", "caption"}


def test_ranking_uses_log_odds_which_keep_the_order_where_the_probability_saturates():
    logits = torch.tensor([[25.0, 0.0], [40.0, 0.0], [1.0, 2.0]])  # margins 25, 40, -1
    prob = L.true_false_prob(logits, 0, 1)
    assert prob[0].item() == prob[1].item() == 1.0  # float32 rounds both to 1: a tie in a ranking
    logodds = L.true_false_ranker("prob")(logits, 0, 1)
    assert logodds.tolist() == [25.0, 40.0, -1.0]
    assert torch.equal(torch.sigmoid(logodds[2]), prob[2])  # same order where the probability is exact
    assert L.true_false_ranker("ratio") is L.true_false_ratio
