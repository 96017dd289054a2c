"""Long-form video-language (LF-VILA) in the ONE model: clip features, hierarchical paragraphs, and the two
losses of LF-VILA's first stage (global video-paragraph InfoNCE and the multimodal temporal contrastive loss).

A long-form sample is M consecutive clips of T frames (LF-VILA: 4 x 8 = 32 frames) with a clip index per
frame (:mod:`lib.data.multi_clip`), and a paragraph of up to M sentences, sentence k describing clip k.

**Video** (:func:`encode_long_video`). The HTWA Swin (``LavenderConfig.swin_temporal_windows``) computes in
ONE pass the usual video tokens and its local tap, features of short temporal windows only. The tap is
mean-pooled over each frame's patches, then over each clip's frames (:func:`clip_pool`), and projected
(:class:`LongFormHead`, ``proj_video``). The global video embedding is the model's own
(:meth:`LavenderModel.video_embedding` of the tokens), so every task keeps one video path.

**Text** (:func:`paragraph_text`, :func:`encode_paragraph`). A paragraph is ONE packed sequence::

    [CLS]   [CLS] w w [SEP]   [CLS] w w w [SEP]   ...   [PAD] ...
    para    sentence 0        sentence 1

Each sentence's positions restart at 0, so under :func:`sentence_attention_mask` (a token attends within
its own sentence, the paragraph [CLS] to itself) the first ``sentence_layers`` layers of the text stack
encode each sentence exactly as if it were alone (LF-VILA's local text layers: a per-sentence BERT run, here
one masked pass). Then every token gets its position in the packed paragraph (BERT's position embeddings)
and its sentence-index embedding (``LongFormHead.emb_sentence``) and a LayerNorm (LF-VILA's sentence
embedding), the paragraph [CLS] becomes the mean of the sentence [CLS]s, and the remaining layers attend over
the whole paragraph. The sentence [CLS] states after the sentence layers are MTC's sentence features; the
paragraph [CLS] at the end is the paragraph's feature (projected like any text by the contrastive head).
No second BERT: masks, positions and one embedding table. The text stack is the text-only layers when the
model has them, else the fusion layers on the text alone (as :meth:`LavenderModel.text_embedding`).

**Losses.** Global: :func:`lib.model.contrastive.info_nce` of video and paragraph embeddings. MTC
(:func:`mtc_loss`): per sample, ``num_key`` query positions (sentences; clips the other way) and
``num_value`` candidate positions of the other modality are drawn among its valid positions; the target is
the candidate temporally nearest to the query (smallest ``|i - j|``), and a query with two equally near
candidates is left out (:func:`mtc_targets`); ``num_other`` extra negatives come from OTHER samples of every
rank's batch. Symmetric (sentence -> clip and clip -> sentence, averaged). Where LF-VILA's released code
differs (``other-systems.md`` §2.5), this follows its paper: clip features from the local tap (the code
returns the global map there), extra negatives never from the query's own sample (the code's batch roll
includes shift 0), ties found among all candidates (the code compares the first and last only), and no NaN
when nothing is left to score.

Across ranks, features are gathered with their gradients, rank 0's draw is broadcast so every rank uses the
same plan, and each rank divides the sum over its own queries by the global number of targets / world size:
2 ranks x B samples give the loss and (DDP-averaged) gradients of 1 rank x 2B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .bert import text_self_mask
from .config import LavenderConfig
from .contrastive import ContrastiveHead, distributed, gather_with_grad, info_nce

if TYPE_CHECKING:
    from .lavender import LavenderModel

IGNORE_INDEX = -100
"""Label of an MTC query that is not scored (no query there, or two candidates equally near)."""
PARAGRAPH = -2
"""Sentence index of the paragraph [CLS] (position 0 of a packed paragraph)."""
PADDING = -1
"""Sentence index of padding tokens (and position of absent sentences / plan entries)."""


class LongFormHead(ContrastiveHead):
    """Clip / sentence projections into MTC's space (``proj_video`` / ``proj_text``) and its temperature,
    the sentence-index embeddings and the LayerNorm that start the paragraph layers."""

    def __init__(self, clip_features: int, config: LavenderConfig):
        super().__init__(config.hidden_size, config.long_form_dim, config.contrastive_temp)
        self.proj_video = nn.Linear(clip_features, config.long_form_dim)  # clips: the Swin's local tap
        self.emb_sentence = nn.Embedding(config.max_sentences, config.hidden_size)
        self.norm_paragraph = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.sentence_layers = config.sentence_layers


def long_form_head(model: LavenderModel) -> LongFormHead:
    head = getattr(model, "long_form", None)
    if head is None:
        raise ValueError("this model has no long-form head: build it with long_form_dim > 0 (and HTWA)")
    return head


# ----------------------------------------------------------------------------------------------- video


def clip_pool(
    frames: torch.Tensor, clip_index: torch.Tensor, n_clips: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame features (B, T, C) averaged per clip -> (B, n_clips, C), and which clips have frames (B,
    n_clips). ``clip_index`` (B, T): each frame's clip in [0, n_clips), or -1 for a padded frame."""
    if clip_index.shape != frames.shape[:2]:
        raise ValueError(f"clip_index {tuple(clip_index.shape)} does not match frames {tuple(frames.shape)}")
    if clip_index.numel() and int(clip_index.max()) >= n_clips:
        raise ValueError(f"clip index {int(clip_index.max())} is not below n_clips={n_clips}")
    index = clip_index.to(frames.device)
    member = F.one_hot(index.clamp(min=0), n_clips).to(frames.dtype) * (index >= 0).unsqueeze(-1)
    counts = member.sum(dim=1)  # (B, M)
    pooled = member.transpose(1, 2) @ frames / counts.clamp(min=1).unsqueeze(-1)
    return pooled, counts > 0


@dataclass
class LongVideo:
    """One pass of the HTWA Swin over a batch of long-form samples."""

    tokens: torch.Tensor  # (B, T*(1+h*w), D) video tokens (fusion, global embedding)
    mask: torch.Tensor  # (B, T*(1+h*w)) bool
    clips: torch.Tensor  # (B, M, long_form_dim) L2-normalised clip embeddings
    clip_valid: torch.Tensor  # (B, M) bool: the clip has frames


def encode_long_video(
    model: LavenderModel,
    img: torch.Tensor,
    clip_index: torch.Tensor,
    n_clips: int,
    frame_mask: torch.Tensor | None = None,
) -> LongVideo:
    """Frames (B, T, 3, H, W) of ``n_clips`` clips (``clip_index`` (B, T)) -> tokens, clip embeddings."""
    head = long_form_head(model)
    tokens, mask, local = model.encoder("video").encode_frames(img, frame_mask, local=True)
    pooled, valid = clip_pool(local, clip_index, n_clips)
    return LongVideo(tokens, mask, head.video(pooled), valid)


# ------------------------------------------------------------------------------------------------ text


@dataclass
class ParagraphText:
    """Packed paragraphs (module docstring). All (B, L) long unless said otherwise."""

    ids: torch.Tensor
    mask: torch.Tensor  # 1 = a token (not padding)
    sentence: torch.Tensor  # sentence index of each token; PARAGRAPH at position 0, PADDING for padding
    positions: torch.Tensor  # position within its sentence (the paragraph [CLS]: 0)
    starts: torch.Tensor  # (B, max_sentences): each sentence's [CLS] position, PADDING where absent

    @property
    def sentence_valid(self) -> torch.Tensor:
        """(B, max_sentences) bool: the paragraph has that sentence."""
        return self.starts >= 0

    def to(self, device: torch.device | str) -> ParagraphText:
        return ParagraphText(*(getattr(self, f.name).to(device) for f in fields(self)))


def paragraph_text(
    tok, paragraphs: Sequence[Sequence[str]], size_sentence: int, max_sentences: int
) -> ParagraphText:
    """Pack each paragraph (a list of at most ``max_sentences`` sentences; merge longer ones first with
    :func:`lib.data.multi_clip.merge_segments`) as ``[CLS] ([CLS] pieces [SEP])...``, every sentence cut to
    ``size_sentence`` tokens with its [CLS] and [SEP] (LF-VILA: 50); padded to the batch's longest."""
    if size_sentence < 3:
        raise ValueError(f"size_sentence must leave room for [CLS] w [SEP], got {size_sentence}")
    rows, sentence_rows, position_rows, starts = [], [], [], []
    for p, sentences in enumerate(paragraphs):
        if not 1 <= len(sentences) <= max_sentences:
            raise ValueError(
                f"paragraph {p} has {len(sentences)} sentences; 1 to max_sentences={max_sentences} fit "
                "(merge adjacent ones with lib.data.multi_clip.merge_segments)"
            )
        pieces = tok(list(sentences), add_special_tokens=False)["input_ids"]
        ids, sentence_of, positions, first = [tok.cls_token_id], [PARAGRAPH], [0], []
        for k, piece in enumerate(pieces):
            sentence_ids = [tok.cls_token_id, *piece[: size_sentence - 2], tok.sep_token_id]
            first.append(len(ids))
            ids += sentence_ids
            sentence_of += [k] * len(sentence_ids)
            positions += list(range(len(sentence_ids)))
        rows.append(ids)
        sentence_rows.append(sentence_of)
        position_rows.append(positions)
        starts.append(first + [PADDING] * (max_sentences - len(first)))
    length = max(len(r) for r in rows)

    def pad(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([v + [fill] * (length - len(v)) for v in values], dtype=torch.long)

    ids = pad(rows, tok.pad_token_id)
    mask = pad([[1] * len(r) for r in rows], 0)
    return ParagraphText(
        ids, mask, pad(sentence_rows, PADDING), pad(position_rows, 0), torch.tensor(starts, dtype=torch.long)
    )


def sentence_attention_mask(sentence: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool for the sentence layers: a token attends to the tokens of its own sentence (the
    paragraph [CLS] to itself); no key is padding; a padding row attends to itself only (its output is
    unused, and no row is empty)."""
    same = sentence[:, :, None] == sentence[:, None, :]
    allowed = same & (sentence != PADDING)[:, None, :]
    allowed |= torch.eye(sentence.shape[1], dtype=torch.bool, device=sentence.device)
    return allowed[:, None]


def paragraph_attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, L) bool for the paragraph layers: every token attends to every token of the paragraph."""
    return text_self_mask(mask.bool(), causal=False)


def _text_stack(model: LavenderModel):
    text = model.encoder("text")
    return text, (text.txt_trsfr if text.txt_trsfr is not None else model.trsfr)


def encode_paragraph(model: LavenderModel, text: ParagraphText) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentence states (B, max_sentences, D) after the sentence layers (zeros where a paragraph has fewer
    sentences) and the paragraph [CLS] state (B, D) after the paragraph layers (module docstring); with
    ``contrastive_text_pool`` "mean", each sentence's mean token state and the paragraph's mean token state
    instead (the [CLS] of a sentence-transformer encoder is about the same for every text)."""
    head = long_form_head(model)
    encoder, stack = _text_stack(model)
    n_layers = len(stack.layer)
    k = head.sentence_layers or n_layers // 2
    if not 0 < k < n_layers:
        raise ValueError(f"sentence_layers={k}: the text stack has {n_layers} layers; leave paragraph layers")
    x = encoder.emb_txt(text.ids, position_ids=text.positions)
    x = stack(x, sentence_attention_mask(text.sentence), layers=slice(0, k))
    valid = text.sentence_valid.unsqueeze(-1)
    at_starts = text.starts.clamp(min=0).unsqueeze(-1).expand(-1, -1, x.shape[-1])
    mean = model.config.contrastive_text_pool == "mean"  # sentence-transformer encoders: [CLS] says little
    sentences = sentence_means(x, text.sentence, text.starts.shape[1]) if mean else x.gather(1, at_starts)
    sentences = sentences * valid
    in_sentence = (text.sentence >= 0).unsqueeze(-1)
    packed = encoder.emb_txt.position_embeddings(torch.arange(x.shape[1], device=x.device))
    x = head.norm_paragraph(x + packed + head.emb_sentence(text.sentence.clamp(min=0)) * in_sentence)
    cls = (x.gather(1, at_starts) * valid).sum(1) / valid.sum(1).clamp(min=1)
    x = torch.cat([cls.unsqueeze(1), x[:, 1:]], dim=1)
    x = stack(x, paragraph_attention_mask(text.mask), layers=slice(k, None))
    if mean:
        tokens = in_sentence.to(x.dtype)
        return sentences, (x * tokens).sum(1) / tokens.sum(1).clamp(min=1)
    return sentences, x[:, 0]


def sentence_means(x: torch.Tensor, sentence: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n, D) mean of the token states ``x`` (B, L, D) of each sentence (``sentence``: (B, L) index, -1
    outside any sentence); zeros for a sentence with no tokens."""
    member = (sentence.unsqueeze(-1) == torch.arange(n, device=x.device)).to(x.dtype)  # (B, L, n)
    return member.transpose(1, 2) @ x / member.sum(1).clamp(min=1).unsqueeze(-1)


# ---------------------------------------------------------------------------------------------- stages

STAGE_ONE = ("enc_img", "enc_txt", "vtc", "long_form")
"""LF-VILA's stage-1 modules: the video encoder, the text encoder (embeddings and text-only layers), the
contrastive and long-form heads. Stage 2 freezes them and trains the fusion layers and the MLM head."""


def stage_one_prefixes(model: LavenderModel) -> list[str]:
    """Parameter-name prefixes that stage 2 freezes (those of :data:`STAGE_ONE` the model has). The text
    encoder must be apart from the fusion (text-only layers): else the paragraph layers ARE the fusion
    layers, and stage 2 could not train one without changing the other."""
    if model.config.text_layers == 0:
        raise ValueError(
            "long_stage 2 freezes the stage-1 text encoder, but this model's text runs through the fusion "
            "layers themselves: build it with text-only layers (txt_backbone_embed_only false, txt_layers N)"
        )
    names = [name for name, _ in model.named_parameters()]
    return [p for p in STAGE_ONE if any(n.startswith(p + ".") for n in names)]


# ---------------------------------------------------------------------------------------------- losses


@dataclass
class MTCPlan:
    """Which features MTC compares, for every sample of the (global) batch; PADDING = none."""

    keys: torch.Tensor  # (N, K) query positions
    values: torch.Tensor  # (N, V) candidate positions of the same sample
    other_samples: torch.Tensor  # (N, O) samples the extra negatives come from (never the row's own)
    other_positions: torch.Tensor  # (N, O) their positions

    @property
    def labels(self) -> torch.Tensor:
        """(N, K) targets: index into ``values`` of the nearest candidate (:func:`mtc_targets`)."""
        return mtc_targets(self.keys, self.values)

    def pack(self) -> torch.Tensor:
        return torch.cat([self.keys, self.values, self.other_samples, self.other_positions], dim=1)

    @classmethod
    def unpack(cls, packed: torch.Tensor, k: int, v: int) -> MTCPlan:
        o = (packed.shape[1] - k - v) // 2
        return cls(*packed.split([k, v, o, o], dim=1))


def mtc_targets(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """For query positions ``keys`` (N, K) and candidate positions ``values`` (N, V) (PADDING: absent), the
    index of the candidate nearest in time to each query; IGNORE_INDEX where two candidates are equally
    near (a tie: no single positive) or the query is absent."""
    distance = (values[:, None, :] - keys[:, :, None]).abs().float()
    distance = distance.masked_fill((values < 0)[:, None, :], float("inf"))
    nearest = distance.min(dim=-1, keepdim=True).values
    tied = (distance == nearest).sum(dim=-1) > 1
    unscored = tied | (keys < 0) | torch.isinf(nearest.squeeze(-1))
    return distance.argmin(dim=-1).masked_fill(unscored, IGNORE_INDEX)


def sample_mtc_plan(
    valid: torch.Tensor,
    num_key: int = 2,
    num_value: int = 2,
    num_other: int = 3,
    generator: torch.Generator | None = None,
) -> MTCPlan:
    """Draw LF-VILA's queries and candidates among each sample's valid positions (``valid`` (N, M) bool:
    clip and sentence both present), distinct within a sample, and ``num_other`` extra negatives, each from
    a different OTHER sample, at one of its valid positions (LF-VILA: 2 keys, 2 values, 3 others)."""
    valid = valid.bool().cpu()
    n = valid.shape[0]

    def draw(positions: torch.Tensor, k: int) -> list[int]:
        order = positions[torch.randperm(len(positions), generator=generator)][:k].tolist()
        return order + [PADDING] * (k - len(order))

    positions = [row.nonzero().flatten() for row in valid]
    keys = [draw(p, num_key) for p in positions]
    values = [draw(p, num_value) for p in positions]
    donors = torch.tensor([b for b in range(n) if len(positions[b])], dtype=torch.long)
    other_samples, other_positions = [], []
    for b in range(n):
        others = donors[donors != b]
        picked = draw(others, num_other)
        other_samples.append(picked)
        other_positions.append([draw(positions[s], 1)[0] if s >= 0 else PADDING for s in picked])
    table = [torch.tensor(rows, dtype=torch.long) for rows in (keys, values, other_samples, other_positions)]
    return MTCPlan(*table)


def _gather_plain(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _direction_logits(
    queries: torch.Tensor, candidates: torch.Tensor, plan: MTCPlan, rows: torch.Tensor, temp: torch.Tensor
) -> torch.Tensor:
    """(len(rows) * K, V + O) similarities of each query of ``rows`` to its candidates and extra negatives."""
    keys, values = plan.keys[rows], plan.values[rows]
    own = rows.unsqueeze(1)
    q = queries[own, keys.clamp(min=0)]  # (B, K, d)
    same = candidates[own, values.clamp(min=0)]  # (B, V, d)
    other = candidates[plan.other_samples[rows].clamp(min=0), plan.other_positions[rows].clamp(min=0)]
    logits = torch.einsum("bkd,bcd->bkc", q, torch.cat([same, other], dim=1)) / temp
    absent = torch.cat([values < 0, plan.other_samples[rows] < 0], dim=1)
    return logits.masked_fill(absent.unsqueeze(1), torch.finfo(logits.dtype).min).flatten(0, 1)


def mtc_loss(
    clips: torch.Tensor,
    sentences: torch.Tensor,
    valid: torch.Tensor,
    temp: torch.Tensor,
    num_key: int = 2,
    num_value: int = 2,
    num_other: int = 3,
    generator: torch.Generator | None = None,
    gather: bool = True,
    plan: MTCPlan | None = None,
) -> dict[str, torch.Tensor]:
    """LF-VILA's multimodal temporal contrastive loss (module docstring).

    ``clips``, ``sentences``: (B, M, d) L2-normalised, position k of both describing the same time;
    ``valid`` (B, M): both present. ``plan``: what to compare for the GLOBAL batch (every rank's samples in
    rank order); default drawn by :func:`sample_mtc_plan` with ``generator`` (rank 0's draw, broadcast).
    Returns ``loss``, ``acc`` (the positive ranked first, over scored queries, both directions) and
    ``n_targets`` (scored queries of the global batch, per direction)."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if gather and distributed() else (1, 0)
    all_clips, all_sentences, all_valid = clips, sentences, valid.bool()
    if world > 1:
        all_clips, all_sentences = gather_with_grad(clips), gather_with_grad(sentences)
        all_valid = _gather_plain(valid.to(torch.uint8)).bool()
    if plan is None:
        plan = sample_mtc_plan(all_valid, num_key, num_value, num_other, generator)
        if world > 1:
            packed = plan.pack().to(clips.device)
            dist.broadcast(packed, src=0)
            plan = MTCPlan.unpack(packed, num_key, num_value)
    plan = MTCPlan(*(getattr(plan, f.name).to(clips.device) for f in fields(plan)))
    labels_all = plan.labels
    n_targets = (labels_all != IGNORE_INDEX).sum()
    rows = torch.arange(rank * clips.shape[0], (rank + 1) * clips.shape[0], device=clips.device)
    labels = labels_all[rows].flatten()
    t2v = _direction_logits(all_sentences, all_clips, plan, rows, temp)
    v2t = _direction_logits(all_clips, all_sentences, plan, rows, temp)
    if int(n_targets) == 0:  # nothing to score anywhere: a zero that keeps the graph (no NaN)
        zero = (clips.sum() + sentences.sum()) * 0.0
        return {"loss": zero, "acc": zero.detach(), "n_targets": n_targets}
    summed = sum(F.cross_entropy(x, labels, ignore_index=IGNORE_INDEX, reduction="sum") for x in (t2v, v2t))
    loss = summed / 2 / n_targets * world
    scored = labels != IGNORE_INDEX
    hits = sum(((x.argmax(-1) == labels) & scored).sum() for x in (t2v, v2t))
    acc = hits.float() / (2 * scored.sum()).clamp(min=1)
    return {"loss": loss, "acc": acc.detach(), "n_targets": n_targets}


def long_form_losses(
    model: LavenderModel,
    video: LongVideo,
    text: ParagraphText,
    mtc_weight: float = 0.25,
    gather: bool = True,
    generator: torch.Generator | None = None,
    **mtc: Any,
) -> dict[str, torch.Tensor]:
    """LF-VILA's stage 1 on the one model: global video-paragraph InfoNCE (the contrastive head,
    ``contrastive_dim`` > 0) + ``mtc_weight`` x MTC between clip k and sentence k (LF-VILA: 0.25). ``mtc``:
    :func:`mtc_loss`'s num_key / num_value / num_other. Returns ``loss`` and each part's loss / accuracy."""
    head, vtc = long_form_head(model), model.vtc
    if vtc is None:
        raise ValueError("the global video-paragraph loss needs the contrastive head: contrastive_dim > 0")
    sentences, paragraph = encode_paragraph(model, text)
    video_embedding = model.video_embedding(video.tokens, video.mask)
    global_part = info_nce(video_embedding, vtc.text(paragraph), vtc.temperature(), gather)
    n_clips = video.clips.shape[1]
    if n_clips > sentences.shape[1]:
        raise ValueError(f"{n_clips} clips but room for {sentences.shape[1]} sentences (max_sentences)")
    valid = video.clip_valid & text.sentence_valid[:, :n_clips].to(video.clip_valid.device)
    temporal = mtc_loss(
        video.clips, head.text(sentences[:, :n_clips]), valid, head.temperature(), generator=generator,
        gather=gather, **mtc,
    )  # fmt: skip
    return {
        "loss": global_part["loss"] + mtc_weight * temporal["loss"],
        "global_loss": global_part["loss"].detach(),
        "global_acc": global_part["acc"],
        "mtc_loss": temporal["loss"].detach(),
        "mtc_acc": temporal["acc"],
    }


__all__ = [
    "IGNORE_INDEX",
    "LongFormHead",
    "LongVideo",
    "MTCPlan",
    "ParagraphText",
    "clip_pool",
    "encode_long_video",
    "encode_paragraph",
    "long_form_losses",
    "mtc_loss",
    "mtc_targets",
    "paragraph_attention_mask",
    "paragraph_text",
    "sample_mtc_plan",
    "sentence_attention_mask",
    "stage_one_prefixes",
]
