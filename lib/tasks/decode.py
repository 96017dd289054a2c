"""Caption decoding with the MLM head: greedy search and beam search over the [MASK]-append scheme.

Every step feeds ``[CLS] w1 … wt [MASK]`` (:func:`lib.model.layouts.caption_step`, attention "seq2seq")
and reads the next word from the MLM logits at the ``[MASK]``; a caption ends at ``[SEP]`` or after
``max_gen_length`` words (reference §1.9). The video is encoded ONCE per batch by the caller
(:func:`caption_videos` does it); its tokens are reused for every step and every beam.

Caching. Under the "seq2seq" mask video tokens attend only to video, so their fused states (every layer's
keys and values, :class:`lib.model.bert.FusionContext`) are computed once per batch and shared by every
step and every beam. A text position attends only to the video and to earlier text positions, so the
prefix's keys and values do not depend on what follows either: with ``cache=True`` (the default) they are
kept per fusion layer (:class:`lib.model.bert.TextCache`) and each step runs two new positions (the word
chosen last and the ``[MASK]`` after it) instead of the whole prefix, which makes a caption of n tokens cost
O(n) positions instead of O(n^2). Greedy search drops a row from the cache when it finishes; beam search
copies each surviving beam's prefix from its parent and drops a video once all its beams have finished.
``cache=False`` re-runs the whole prefix at every step (the same captions; ``bench/decode_cache.py``
compares the two), and so does a model whose text passes through text-only layers before the fusion
(``txt_backbone_embed_only`` false: those layers are not cached) or any model without
``supports_text_cache``.

Scores. A hypothesis of ``n`` generated tokens (its ``[SEP]`` included when it has one) with summed
log-probability ``S`` scores ``S / n ** length_penalty``; the default ``length_penalty = 1`` is the mean
log-probability per token (the confidence the reference reported), ``0`` the raw sum (which favours short
captions). Greedy and beam search use the same score, so their results compare.

Beam search keeps ``beam_size`` hypotheses per video, batched over videos × beams. At every step the
candidates are each live beam extended by each word, plus each finished beam kept as it is; the top
``beam_size`` by score survive, so a finished hypothesis stays until ``beam_size`` better ones displace
it. A video is done when all its beams are finished; at ``max_gen_length`` the unfinished beams count as
hypotheses too. The best-scoring beam is returned. With ``beam_size = 1`` this is exactly greedy search
(every candidate extends the same beam, so the score ranks like the log-probability). Like any beam search
it is approximate: a wider beam usually, but not provably, finds a better-scoring caption.

``[CLS]``, ``[PAD]`` and ``[MASK]`` are never generated (their log-probabilities are set to -inf after the
softmax, so the others keep their true values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lib.model import layouts
from lib.model.bert import FusionContext
from lib.model.mlm import logits_at

CAPTION_TASK = "cap"  # the task token of the caption layouts (lib.model.layouts.caption_step)
READ_AT = ("mask", "last")  # where the next word is read: an appended [MASK], or the last word (LM)


@dataclass(frozen=True)
class Caption:
    """One decoded caption: generated wordpieces (``[CLS]`` excluded; ends with ``[SEP]`` when finished)."""

    ids: tuple[int, ...]
    log_prob: float
    score: float
    finished: bool

    def text(self, tok) -> str:
        """The caption as a string (special tokens dropped, wordpieces joined)."""
        return tok.decode(list(self.ids), skip_special_tokens=True).strip()


def length_normalised(
    log_prob: torch.Tensor, length: torch.Tensor | int, length_penalty: float
) -> torch.Tensor:
    """``log_prob / length ** length_penalty`` (length clamped to >= 1)."""
    length = torch.as_tensor(length, device=log_prob.device).clamp(min=1).to(log_prob.dtype)
    return log_prob / length**length_penalty


def n_decode_steps(max_gen_length: int, size_txt: int | None) -> int:
    """Tokens that may be generated: ``max_gen_length``, and at most ``size_txt - 1`` ([CLS] + words fit)."""
    if max_gen_length < 1:
        raise ValueError(f"max_gen_length={max_gen_length}; it must be >= 1")
    return max_gen_length if size_txt is None else max(0, min(max_gen_length, size_txt - 1))


def _can_cache(model) -> bool:
    supports = getattr(model, "supports_text_cache", None)
    return callable(supports) and bool(supports())


def _allowed_log_probs(tok, logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the vocabulary with ``[CLS]``, ``[PAD]`` and ``[MASK]`` set to -inf afterwards."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    log_probs[:, [tok.cls_token_id, tok.pad_token_id, tok.mask_token_id]] = float("-inf")
    return log_probs


def _cached_step(model, tok, cache, new_ids: torch.Tensor, read: str = "mask") -> torch.Tensor:
    """(rows, V) log-probabilities of the next word of every cached row, given its ``new_ids`` (rows, q):
    the tokens not cached yet; a ``[MASK]`` follows them and is read (``read`` "last": no [MASK], the last
    new token is read)."""
    if read == "mask":
        new_ids = torch.cat([new_ids, torch.full_like(new_ids[:, :1], tok.mask_token_id)], dim=1)
    hidden = model.fuse_cached(new_ids, cache, keep=new_ids.shape[1] - int(read == "mask"))
    return _allowed_log_probs(tok, model.mlm_logits(hidden[:, -1]))


def next_token_log_probs(
    model,
    tok,
    video_feat: torch.Tensor | FusionContext,
    video_mask: torch.Tensor | None,
    prefix: torch.Tensor,
    video_index: torch.Tensor | None = None,
    read: str = "mask",
) -> torch.Tensor:
    """(N, V) log-probabilities of the word after ``prefix`` (N, t), row i given video ``video_index[i]``
    (default: video i): video tokens and mask, or their :class:`FusionContext`. ``read``: at the [MASK]
    appended after the prefix, or ("last") at the prefix's last token (a model trained with the LM loss
    alone; under the causal mask the [MASK] after it changes nothing there)."""
    layout = layouts.caption_step(tok, prefix, prefix.shape[1] + 1)
    position = layout.mask_pos - int(read == "last")
    return _allowed_log_probs(tok, logits_at(model, video_feat, video_mask, layout, position, video_index))


def greedy(
    model,
    tok,
    video_feat: torch.Tensor,
    video_mask: torch.Tensor,
    max_gen_length: int = 20,
    size_txt: int | None = None,
    length_penalty: float = 1.0,
    cache: bool = True,
    read: str = "mask",
) -> list[Caption]:
    """The most probable word at every step, for a batch of encoded videos (B, Nv, D) / (B, Nv)."""
    n, device = video_feat.shape[0], video_feat.device
    steps = n_decode_steps(max_gen_length, size_txt)
    video = model.fusion_context(video_feat, video_mask, task=CAPTION_TASK)  # fused once for every step
    prefix = layouts.caption_start(tok, n).to(device)
    log_prob = torch.zeros(n, dtype=torch.float32, device=device)
    length = torch.zeros(n, dtype=torch.long, device=device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    cached = (
        model.start_text_cache(video, torch.arange(n, device=device), steps + 1)
        if cache and _can_cache(model)
        else None
    )
    cached_rows = torch.arange(n, device=device)  # the row of each cache row (the live ones, in order)
    for _ in range(steps):
        rows = alive.nonzero().squeeze(1)
        if len(rows) == 0:
            break
        if cached is None:
            step_lp = next_token_log_probs(model, tok, video, None, prefix[rows], rows, read)
        else:
            if len(rows) < len(cached_rows):  # rows finished last step: drop them from the cache
                cached = cached.select(torch.searchsorted(cached_rows, rows))
                cached_rows = rows
            step_lp = _cached_step(model, tok, cached, prefix[rows, cached.length :], read)
        best_lp, best = step_lp.max(dim=-1)
        token = torch.full((n,), tok.pad_token_id, dtype=torch.long, device=device)
        token[rows] = best
        log_prob[rows] += best_lp
        length[rows] += 1
        alive[rows[best == tok.sep_token_id]] = False
        prefix = torch.cat([prefix, token[:, None]], dim=1)
    score = length_normalised(log_prob, length, length_penalty)
    return [
        Caption(
            tuple(prefix[i, 1 : 1 + int(length[i])].tolist()),
            float(log_prob[i]),
            float(score[i]),
            not bool(alive[i]),
        )
        for i in range(n)
    ]


def beam_search(
    model,
    tok,
    video_feat: torch.Tensor,
    video_mask: torch.Tensor,
    beam_size: int,
    max_gen_length: int = 20,
    size_txt: int | None = None,
    length_penalty: float = 1.0,
    cache: bool = True,
    read: str = "mask",
) -> list[Caption]:
    """Length-normalised beam search (see the module docstring), batched over videos × beams."""
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size}; it must be >= 1")
    b, k, device = video_feat.shape[0], beam_size, video_feat.device
    steps = n_decode_steps(max_gen_length, size_txt)
    beam_video = torch.arange(b, device=device).repeat_interleave(k)  # row b*K + j is beam j of video b
    video = model.fusion_context(video_feat, video_mask, task=CAPTION_TASK)  # fused once for every step
    tokens = torch.full((b, k, steps), tok.pad_token_id, dtype=torch.long, device=device)
    log_prob = torch.full((b, k), float("-inf"), device=device)
    log_prob[:, 0] = 0.0  # one live beam per video to start from; the others are empty slots
    length = torch.zeros((b, k), dtype=torch.long, device=device)
    finished = torch.zeros((b, k), dtype=torch.bool, device=device)
    cls = layouts.caption_start(tok, b * k).to(device)
    cached = model.start_text_cache(video, beam_video, steps + 1) if cache and _can_cache(model) else None
    active = torch.arange(b, device=device)  # videos in the cache (k rows each), while any beam is live
    beams = torch.arange(k, device=device)
    for step in range(steps):
        alive = ~finished & torch.isfinite(log_prob)
        rows = alive.view(-1).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        if cached is None:
            prefix = torch.cat([cls[rows], tokens.view(b * k, steps)[rows, :step]], dim=1)
            step_lp = next_token_log_probs(model, tok, video, None, prefix, beam_video[rows], read)
        else:
            live_video = alive.any(dim=1)
            if not live_video[active].all():  # a video's beams have all finished: drop it from the cache
                keep = live_video[active].nonzero().squeeze(1)
                cached = cached.select((keep[:, None] * k + beams).view(-1))
                active = active[keep]
            cache_rows = (active[:, None] * k + beams).view(-1)  # rows b*K + j in cache order
            new = cls[cache_rows] if step == 0 else tokens.view(b * k, steps)[cache_rows, step - 1 : step]
            live = alive.view(-1)[cache_rows]
            step_lp = _cached_step(model, tok, cached, new, read)[live]  # the same rows, in the same order
        vocab = step_lp.shape[1]
        extended = torch.full((b * k, vocab), float("-inf"), device=device)
        extended[rows] = log_prob.view(-1)[rows, None] + step_lp
        extended = extended.view(b, k * vocab)
        kept = torch.where(finished, length_normalised(log_prob, length, length_penalty), float("-inf"))
        candidates = torch.cat([length_normalised(extended, step + 1, length_penalty), kept], dim=1)
        top = candidates.topk(k, dim=1).indices  # (B, K)
        is_kept = top >= k * vocab
        parent = torch.where(is_kept, top - k * vocab, top // vocab)
        word = torch.where(is_kept, tok.pad_token_id, top % vocab)
        tokens = tokens.gather(1, parent[..., None].expand(-1, -1, steps)).clone()
        tokens[..., step] = torch.where(is_kept, tokens[..., step], word)
        log_prob = torch.where(
            is_kept, log_prob.gather(1, parent), extended.gather(1, top.clamp(max=k * vocab - 1))
        )
        length = torch.where(is_kept, length.gather(1, parent), step + 1)
        finished = is_kept | (word == tok.sep_token_id)
        if cached is not None:  # each beam continues its parent's prefix
            cached.reorder_text(
                (torch.arange(len(active), device=device)[:, None] * k + parent[active]).view(-1)
            )
    score = length_normalised(log_prob, length, length_penalty)
    best = score.argmax(dim=1)
    out = []
    for i in range(b):
        j = int(best[i])
        out.append(
            Caption(
                tuple(tokens[i, j, : int(length[i, j])].tolist()),
                float(log_prob[i, j]),
                float(score[i, j]),
                bool(finished[i, j]),
            )
        )
    return out


def generate(
    model,
    tok,
    video_feat: torch.Tensor,
    video_mask: torch.Tensor,
    beam_size: int = 1,
    max_gen_length: int = 20,
    size_txt: int | None = None,
    length_penalty: float = 1.0,
    cache: bool = True,
    read: str = "mask",
) -> list[Caption]:
    """Captions for encoded videos: greedy search for ``beam_size == 1``, else beam search. ``cache``: keep
    the text prefix's keys and values (see the module docstring); False re-runs the prefix every step.
    ``read``: where the next word is read, at an appended ``[MASK]`` or ("last", a model trained with the
    LM loss alone, ``caption_loss`` lm) at the last word."""
    if read not in READ_AT:
        raise ValueError(f"read must be one of {READ_AT}, got {read!r}")
    if beam_size == 1:
        return greedy(
            model, tok, video_feat, video_mask, max_gen_length, size_txt, length_penalty, cache, read
        )
    return beam_search(
        model, tok, video_feat, video_mask, beam_size, max_gen_length, size_txt, length_penalty, cache, read
    )


def caption_videos(model, tok, video: torch.Tensor, **kwargs) -> list[Caption]:
    """Encode clips (B, T, 3, H, W) once and decode a caption for each (``kwargs``: see :func:`generate`)."""
    feat, mask = model.encode_video(video)
    return generate(model, tok, feat, mask, **kwargs)
