"""Caption decoding (lib.tasks.decode): greedy and beam search.

Exact properties are checked on a Markov captioner (a stand-in for the network whose next-word
distribution is a known table, so every caption's probability can be enumerated); the whole path is
checked on a tiny LAVENDER model overfit on four captions of the demo data.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from quick_training import freeze_for_speed

from lib.engine.config import load_config
from lib.model.config import LavenderConfig
from lib.model.lavender import LavenderModel
from lib.model.mlm import masked_token_loss
from lib.tasks.build import build_model
from lib.tasks.caption import CaptionTask
from lib.tasks.common import clip_dataset
from lib.tasks.decode import Caption, beam_search, caption_videos, generate, greedy, n_decode_steps

WORDS = ("red", "blue", "green")


class MarkovCaptioner(torch.nn.Module):
    """P(next word | video, previous word) from a table; the model interface that decoding uses.

    ``logits``: (n_videos, 1 + len(words), V): row 0 follows [CLS], row 1 + k follows ``words[k]``.
    A "video" is its index (B, 1). The input layout is checked at every call.
    """

    def __init__(self, tok, logits: torch.Tensor, words: tuple[str, ...] = WORDS):
        super().__init__()
        self.tok = tok
        self.logits = logits
        self.state_of = torch.zeros(len(tok), dtype=torch.long)
        for k, word in enumerate(words):
            self.state_of[tok.convert_tokens_to_ids(word)] = 1 + k
        self.n_encoded = 0

    def encode_video(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.n_encoded += 1
        return video.float()[:, :, None], torch.ones(video.shape[0], 1, dtype=torch.bool)

    def embed_text(self, ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        assert (ids[:, 0] == self.tok.cls_token_id).all() and (ids[:, -1] == self.tok.mask_token_id).all()
        assert not (ids[:, 1:-1] == self.tok.mask_token_id).any(), "the prefix holds no [MASK]"
        return ids.float()[..., None]

    def fusion_context(self, video_feat, video_mask, task=None) -> torch.Tensor:
        assert task == "cap"
        return video_feat  # a "video" is its index: nothing to fuse ahead

    def fuse(
        self, video_feat, video_mask, text_emb, text_mask, attn="full", task=None, video_index=None
    ) -> torch.Tensor:
        assert attn == "seq2seq" and bool(text_mask.all())
        if video_index is not None:
            video_feat = video_feat[video_index]
        previous = torch.cat([torch.zeros_like(text_emb[:, :1]), text_emb[:, :-1]], dim=1)[..., 0]
        video = video_feat[:, :1, 0].expand_as(previous)
        return torch.stack([video, previous], dim=-1)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        video, previous = hidden[..., 0].long(), hidden[..., 1].long()
        return self.logits[video, self.state_of[previous]]


def word_ids(tok) -> list[int]:
    return tok.convert_tokens_to_ids(list(WORDS))


def table(tok, probs: dict[str, dict[str, float]]) -> torch.Tensor:
    """One video's logits from {previous: {next: probability}} ("[CLS]", words, "[SEP]")."""
    out = torch.full((1 + len(WORDS), len(tok)), -60.0)
    for previous, nexts in probs.items():
        row = 0 if previous == "[CLS]" else 1 + WORDS.index(previous)
        for word, p in nexts.items():
            out[row, tok.convert_tokens_to_ids(word)] = torch.tensor(p).log()
    return out


def random_tables(tok, n_videos: int, seed: int) -> torch.Tensor:
    """Random next-word distributions over the three words and [SEP] (everything else ~impossible)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.full((n_videos, 1 + len(WORDS), len(tok)), -60.0)
    allowed = torch.tensor([*word_ids(tok), tok.sep_token_id])
    logits[:, :, allowed] = 2.0 * torch.randn(n_videos, 1 + len(WORDS), len(allowed), generator=g)
    return logits


def videos(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded "videos" 0..n-1 as the Markov captioner encodes them."""
    return torch.arange(n, dtype=torch.float)[:, None, None], torch.ones(n, 1, dtype=torch.bool)


def exhaustive_best(tok, logits: torch.Tensor, max_len: int, length_penalty: float) -> tuple[tuple, float]:
    """The best-scoring caption of one video over every word sequence (ended by [SEP] or cut at max_len)."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    ids = word_ids(tok)
    best = ((), float("-inf"))
    for n in range(max_len + 1):
        for words in itertools.product(ids, repeat=n):
            seq = (*words, tok.sep_token_id) if n < max_len else words
            state, total = 0, 0.0
            for token in seq:
                total += float(log_probs[state, token])
                state = 1 + ids.index(token) if token in ids else 0
            score = total / len(seq) ** length_penalty
            if score > best[1]:
                best = (seq, score)
    return best


def test_beam_of_one_is_exactly_greedy(tokenizer):
    model = MarkovCaptioner(tokenizer, random_tables(tokenizer, 6, seed=1))
    feat, mask = videos(6)
    by_greedy = greedy(model, tokenizer, feat, mask, max_gen_length=5)
    assert by_greedy == beam_search(model, tokenizer, feat, mask, beam_size=1, max_gen_length=5)
    for caption, logits in zip(by_greedy, model.logits):  # greedy = the argmax word at every step
        state = 0
        for token in caption.ids:
            assert token == int(logits[state].argmax())
            state = 1 + word_ids(tokenizer).index(token) if token in word_ids(tokenizer) else 0


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_a_beam_wider_than_the_search_space_finds_the_exhaustive_optimum(tokenizer, length_penalty):
    model = MarkovCaptioner(tokenizer, random_tables(tokenizer, 6, seed=0))
    feat, mask = videos(6)
    # 3 words, 3 steps: at most 27 live + 13 finished hypotheses, so a beam of 48 prunes nothing
    wide = beam_search(model, tokenizer, feat, mask, 48, max_gen_length=3, length_penalty=length_penalty)
    by_greedy = greedy(model, tokenizer, feat, mask, max_gen_length=3, length_penalty=length_penalty)
    for v in range(6):
        ids, score = exhaustive_best(tokenizer, model.logits[v], 3, length_penalty)
        assert wide[v].ids == ids
        assert wide[v].score == pytest.approx(score, abs=1e-5)
        assert by_greedy[v].score <= score + 1e-6
    assert any(g.score < w.score - 1e-3 for g, w in zip(by_greedy, wide)), "greedy should lose somewhere"


def test_beam_search_escapes_the_greedy_trap(tokenizer):
    # greedy takes "red" (0.55) and then wanders; "blue [SEP]" has the best mean log-probability
    trap = table(
        tokenizer,
        {
            "[CLS]": {"red": 0.55, "blue": 0.45},
            "red": {"red": 0.3, "blue": 0.3, "green": 0.3, "[SEP]": 0.1},
            "blue": {"[SEP]": 0.99, "red": 0.01},
            "green": {"[SEP]": 0.5, "red": 0.5},
        },
    )
    model = MarkovCaptioner(tokenizer, trap[None])
    feat, mask = videos(1)
    (g,) = greedy(model, tokenizer, feat, mask, max_gen_length=6)
    (b,) = beam_search(model, tokenizer, feat, mask, beam_size=2, max_gen_length=6)
    red, blue = word_ids(tokenizer)[:2]
    assert g.ids[0] == red
    assert b.ids == (blue, tokenizer.sep_token_id) and b.finished
    assert b.score == pytest.approx(
        (torch.tensor(0.45).log() + torch.tensor(0.99).log()).item() / 2, abs=1e-5
    )
    assert b.score > g.score + 0.3
    assert b.text(tokenizer) == "blue"


@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoding_stops_at_sep_or_at_the_length_limits(tokenizer, beam_size):
    ends_at_once = table(tokenizer, {"[CLS]": {"[SEP]": 0.9, "red": 0.1}, "red": {"[SEP]": 1.0}})
    never_ends = table(tokenizer, {p: {"red": 0.6, "blue": 0.4} for p in ("[CLS]", "red", "blue")})
    model = MarkovCaptioner(tokenizer, torch.stack([ends_at_once, never_ends]))
    feat, mask = videos(2)
    decode = greedy if beam_size == 1 else lambda *a, **k: beam_search(*a[:4], beam_size, **k)
    short, long = decode(model, tokenizer, feat, mask, max_gen_length=7)
    assert short.ids == (tokenizer.sep_token_id,) and short.finished and short.text(tokenizer) == ""
    assert len(long.ids) == 7 and not long.finished and tokenizer.sep_token_id not in long.ids
    _, capped = decode(model, tokenizer, feat, mask, max_gen_length=7, size_txt=5)
    assert len(capped.ids) == n_decode_steps(7, 5) == 4  # [CLS] + 4 words fill size_txt = 5


def test_special_tokens_are_never_generated(tokenizer):
    logits = table(tokenizer, {p: {"red": 0.2, "[SEP]": 0.1} for p in ("[CLS]", "red")})
    for special in (tokenizer.mask_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id):
        logits[:, special] = 10.0  # the most likely tokens by far
    model = MarkovCaptioner(tokenizer, logits[None])
    feat, mask = videos(1)
    for caption in (*greedy(model, tokenizer, feat, mask), *beam_search(model, tokenizer, feat, mask, 3)):
        assert caption.ids and caption.ids[0] in (word_ids(tokenizer)[0], tokenizer.sep_token_id)


def test_videos_are_encoded_once_and_decoded_as_if_alone(tokenizer):
    model = MarkovCaptioner(tokenizer, random_tables(tokenizer, 5, seed=7))
    together = caption_videos(model, tokenizer, torch.arange(5)[:, None], beam_size=3, max_gen_length=6)
    assert model.n_encoded == 1
    feat, mask = videos(5)
    for v in range(5):
        (alone,) = beam_search(model, tokenizer, feat[v : v + 1], mask[v : v + 1], 3, max_gen_length=6)
        assert together[v].ids == alone.ids
        assert together[v].score == pytest.approx(alone.score, abs=1e-6)


def test_beam_size_must_be_positive(tokenizer):
    model = MarkovCaptioner(tokenizer, random_tables(tokenizer, 1, seed=0))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, tokenizer, *videos(1), beam_size=0)


# ---------------------------------------------------------------------------------- a real tiny model


@pytest.fixture
def overfit_captioner(tiny_args, tokenizer):
    """A tiny LAVENDER model trained on four demo videos' captions and what it was trained on.

    The video encoder is frozen and its features computed once, so only the fusion encoder and head
    learn; every step sees each caption four times under different random masks (60 steps suffice for
    every seed tried)."""
    cfg = load_config([*tiny_args, "--type", "captioning", "--task", "demo-captioning", "--p_mask", "0.25"])
    task = CaptionTask(cfg, tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    items = [clip_dataset(cfg, task.store, task.ann["train"], train=False)[i] for i in range(4)]
    video = torch.stack([item["video"] for item in items])
    model.eval()
    with torch.no_grad():
        feat, mask = model.encode_video(video)
    optimizer = torch.optim.AdamW(freeze_for_speed(model), lr=1e-3, weight_decay=0)
    model.train()
    for _ in range(60):
        layout = task.collate_train(items * 4)["layout"]
        loss = masked_token_loss(model, feat.repeat(4, 1, 1), mask.repeat(4, 1), layout)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, video, [item["record"].text for item in items]


def test_an_overfit_model_decodes_its_training_captions(overfit_captioner, tokenizer):
    model, video, captions = overfit_captioner
    assert len(set(captions)) == 4
    with torch.no_grad():
        feat, mask = model.encode_video(video)
        by_greedy = greedy(model, tokenizer, feat, mask, max_gen_length=20, size_txt=16)
        by_beam1 = beam_search(model, tokenizer, feat, mask, 1, max_gen_length=20, size_txt=16)
        by_beam3 = beam_search(model, tokenizer, feat, mask, 3, max_gen_length=20, size_txt=16)
    assert [c.text(tokenizer) for c in by_greedy] == captions
    assert all(c.finished and c.ids[-1] == tokenizer.sep_token_id for c in by_greedy)
    assert [c.ids for c in by_beam1] == [c.ids for c in by_greedy]
    assert [c.score for c in by_beam1] == pytest.approx([c.score for c in by_greedy], abs=1e-6)
    for b, g in zip(by_beam3, by_greedy):
        assert b.score >= g.score - 1e-6
        assert isinstance(b, Caption) and b.finished


# ---------------------------------------------------------------------------------- the key/value cache


def random_captioner(tokenizer, sep_bias: float = 30.0, **kw) -> LavenderModel:
    """A random tiny model whose captions depend on the video (fusion weights larger than BERT's init),
    whose next-word logits are spread wide (no near-ties for float noise to flip) and whose [SEP] logit is
    a constant that beats the best word now and then, so captions end at many different lengths."""
    torch.manual_seed(0)
    config = LavenderConfig(
        swin_size="custom",
        swin_embed_dim=8,
        swin_depths=(1, 1),
        swin_heads=(1, 1),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        vocab_size=2000,  # the tokenizer's special ids are below 2000; the words need not be real
        max_position_embeddings=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **kw,
    )
    model = LavenderModel(config).eval()
    with torch.no_grad():
        for weight in (p for p in model.trsfr.parameters() if p.dim() == 2):
            weight.normal_(std=0.15)
        model.fc_mtm.predictions.decoder.weight.normal_(std=1.0)
        model.fc_mtm.predictions.decoder.weight[tokenizer.sep_token_id] = 0.0
        model.fc_mtm.predictions.bias[tokenizer.sep_token_id] = sep_bias
    return model


def random_video(n: int, tokens: int = 12, hidden: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(n, tokens, hidden, generator=g)
    mask = torch.ones(n, tokens, dtype=torch.bool)
    mask[1, tokens // 2 :] = False  # a shorter clip
    return feat, mask


@pytest.mark.parametrize("task_token", [False, True])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_cache_gives_the_captions_of_recomputation(tokenizer, beam_size, task_token):
    model = random_captioner(tokenizer, enable_task_token=task_token)
    feat, mask = random_video(6)
    ended_at = set()
    for max_len in (1, 4, 30):
        with torch.no_grad():
            cached = generate(model, tokenizer, feat, mask, beam_size, max_len, size_txt=48, cache=True)
            recomputed = generate(model, tokenizer, feat, mask, beam_size, max_len, size_txt=48, cache=False)
        assert [c.ids for c in cached] == [c.ids for c in recomputed]
        assert [c.finished for c in cached] == [c.finished for c in recomputed]
        assert [c.score for c in cached] == pytest.approx([c.score for c in recomputed], abs=1e-5)
        assert [c.log_prob for c in cached] == pytest.approx([c.log_prob for c in recomputed], abs=1e-4)
        ended_at |= {len(c.ids) for c in cached if c.finished}
        assert len({c.ids for c in cached}) > 1  # the captions depend on the video
    assert len(ended_at) >= 2, f"captions should end at several lengths, got {sorted(ended_at)}"


def test_models_with_text_layers_keep_the_recomputing_path(tokenizer):
    model = random_captioner(tokenizer, txt_backbone_embed_only=False, num_text_layers=1)
    assert not model.supports_text_cache()
    feat, mask = random_video(2)
    with torch.no_grad():
        fused = model.fusion_context(feat, mask, task="cap")
        with pytest.raises(ValueError, match="text-only layers"):
            model.start_text_cache(fused, torch.arange(2), 4)
        cached = greedy(model, tokenizer, feat, mask, max_gen_length=6, cache=True)
        recomputed = greedy(model, tokenizer, feat, mask, max_gen_length=6, cache=False)
    assert cached == recomputed
