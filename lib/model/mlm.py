"""The ONE MLM head at work: every task's forward pass and loss, given a layout (:mod:`lib.model.layouts`).

A task lays out its text with a ``[MASK]`` where it wants a prediction; these functions run the fusion
encoder over (video tokens, text) and the head only where a label or a prediction is needed:

* :func:`logits_at`: logits at the layout's [MASK](s) (QA answers, option digits, "true"/"false", the next
  caption word);
* :func:`masked_logits` / :func:`masked_labels`: every supervised [MASK] of a k-mask layout and its labels;
* :func:`masked_token_logits` / :func:`masked_token_loss`: every supervised position of a corrupted text
  (pretraining's MTM, caption training);
* :func:`lm_mlm_loss`: AVLFormer's captioning mix of next-token (LM) and masked-token (MLM) losses;
* :func:`matching_loss`: cross-entropy at the [MASK] of (video, text) pairs ("true"/"false", VTM);
* :func:`true_false_pair_scores`: the matching score of many (text, video) pairs, batched, in float32.

Tasks import these; no task imports another task. The model is anything with ``embed_text``, ``fuse``,
``mlm_logits``, ``fusion_context`` and ``shares_video`` (:class:`lib.model.lavender.LavenderModel`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from lib.model.bert import FusionContext
from lib.model.layouts import IGNORE_INDEX, Layout


def logits_at(
    model,
    video_feat: torch.Tensor | FusionContext,
    video_mask: torch.Tensor | None,
    layout: Layout,
    positions: torch.Tensor | None = None,
    video_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the fusion encoder on (video, text) and the MLM head at ``positions`` only.

    ``positions``: (B,) or (B, k) token indices into the text; default ``layout.mask_index()``.
    ``video_index``: (B,) the video of each text row (default: see ``LavenderModel.fuse``); rows that share a
    video share its fused tokens where the model's attention allows it.
    Returns (B, V) or (B, k, V) logits.
    """
    device = video_feat.device
    ids, mask = layout.ids.to(device), layout.mask.to(device)
    text = model.embed_text(ids, mask, causal=layout.attn == "seq2seq")
    hidden = model.fuse(
        video_feat, video_mask, text, mask, attn=layout.attn, task=layout.task, video_index=video_index
    )
    if positions is None:
        index, squeeze = layout.mask_index().to(device), layout.n_masks == 1
    else:
        index, squeeze = positions.to(device), positions.dim() == 1
    index = index.view(index.shape[0], -1)
    picked = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = model.mlm_logits(picked)
    return logits[:, 0] if squeeze else logits


def masked_logits(
    model,
    feat: torch.Tensor,
    mask: torch.Tensor,
    layout: Layout,
    video_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n_masks, V) float logits at every supervised [MASK] of ``layout`` (row i on video
    ``video_index[i]``)."""
    return logits_at(model, feat, mask, layout, layout.mask_index(), video_index).float()


def masked_labels(layout: Layout, device: torch.device | None = None) -> torch.Tensor:
    """(B, n_masks) labels at the layout's [MASK]s."""
    return layout.labels.gather(1, layout.mask_index()).to(device)


def supervised_labels(layout: Layout) -> torch.Tensor:
    """The labels at the layout's [MASK] positions: (B,) or (B, n_masks)."""
    labels = layout.labels.gather(1, layout.mask_index())
    return labels[:, 0] if layout.n_masks == 1 else labels


def masked_token_logits(
    model, feat: torch.Tensor, mask: torch.Tensor, layout: Layout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # one text row per video
    """Fusion over (video, text), then the MLM head at the supervised positions only.

    Returns (logits (M, V), labels (M,), row (M,)) for the M positions whose label is not ignored.
    """
    device = feat.device
    ids, text_mask = layout.ids.to(device), layout.mask.to(device)
    text = model.embed_text(ids, text_mask, causal=layout.attn == "seq2seq")
    hidden = model.fuse(feat, mask, text, text_mask, attn=layout.attn, task=layout.task)
    supervised = layout.labels.to(device) != IGNORE_INDEX
    logits = model.mlm_logits(hidden[supervised])
    return logits, layout.labels.to(device)[supervised], supervised.nonzero()[:, 0]


def masked_token_loss(model, feat: torch.Tensor, mask: torch.Tensor, layout: Layout) -> dict:
    """Cross-entropy at the supervised positions of ``layout`` (MTM, caption training) and its accuracy."""
    logits, labels, _ = masked_token_logits(model, feat, mask, layout)
    loss = F.cross_entropy(logits.float(), labels)
    return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}


def lm_mlm_loss(
    model, feat: torch.Tensor, mask: torch.Tensor, lm: Layout, mlm: Layout | None, lm_weight: float = 1.0
) -> dict:
    """AVLFormer's captioning loss ``lm_weight * LM + (1 - lm_weight) * MLM`` through the one MLM head: LM is
    the next-token cross-entropy at every caption position of ``lm`` (:func:`lib.model.layouts.caption_lm`),
    MLM the cross-entropy at the masked tokens of ``mlm`` (:func:`lib.model.layouts.caption_train`; None:
    the LM loss alone). Both are "seq2seq", so the video is fused once for the two."""
    video = model.fusion_context(feat, mask, lm.task)
    lm_out = masked_token_loss(model, video, None, lm)
    if mlm is None:
        return lm_out
    mlm_out = masked_token_loss(model, video, None, mlm)
    return {
        "loss": lm_weight * lm_out["loss"] + (1 - lm_weight) * mlm_out["loss"],
        "acc": mlm_out["acc"],
        "lm_loss": lm_out["loss"].detach(),
        "lm_acc": lm_out["acc"],
        "mlm_loss": mlm_out["loss"].detach(),
    }


def answer_pieces_loss(
    model, feat: torch.Tensor, mask: torch.Tensor, groups: Sequence[tuple[torch.Tensor, Layout]]
) -> dict:
    """Answers of k wordpieces on k [MASK]s: ``groups`` = [(the video of each row, a layout with k masks)],
    one fusion pass per k. The loss is the mean over rows of the mean over their pieces; ``acc``: every piece
    right. No group at all (no answer short enough): a zero loss that still touches the graph."""
    losses, hits = [], []
    for rows, layout in groups:
        logits = masked_logits(model, feat, mask, layout, rows.to(feat.device))
        labels = masked_labels(layout, logits.device)
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        losses.append(ce.view_as(labels).mean(dim=1))
        hits.append((logits.argmax(-1) == labels).all(dim=1).float())
    if not losses:
        return {"loss": feat.sum() * 0.0}
    return {"loss": torch.cat(losses).mean(), "acc": torch.cat(hits).mean()}


def matching_loss(
    model, feat: torch.Tensor, mask: torch.Tensor, layout: Layout, pair_video: torch.Tensor
) -> dict:
    """Cross-entropy over the vocabulary at the [MASK] of every (video, text) pair of a true/false layout
    (row i uses video ``pair_video[i]``), and the matching accuracy."""
    logits = logits_at(model, feat, mask, layout, video_index=pair_video.to(feat.device))
    labels = supervised_labels(layout).to(logits.device)
    loss = F.cross_entropy(logits.float(), labels)
    return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}


def true_false_pair_scores(
    model,
    layout: Layout,
    video: torch.Tensor | FusionContext,
    video_mask: torch.Tensor | None,
    text_of: torch.Tensor,
    video_of: torch.Tensor,
    score: Callable[[torch.Tensor, int, int], torch.Tensor],
    true_id: int,
    false_id: int,
    pair_batch: int,
) -> torch.Tensor:
    """``score`` of the "true"/"false" logits of each (text row ``text_of[i]`` of the true/false ``layout``,
    video ``video_of[i]``) pair, ``pair_batch`` fusion rows at a time; (len(text_of),) on the CPU.

    ``video``: video tokens with ``video_mask``, or their :class:`FusionContext` (where video ignores text,
    tokens are fused once here for every pair). The head runs in float32 on the two columns only: ranking
    many videos, bf16 logits would round close scores to ties."""
    if not isinstance(video, FusionContext) and model.shares_video("full"):
        video = model.fusion_context(video, video_mask, layout.task)
    device = video.device
    ids, text_mask, pos = (x.to(device) for x in (layout.ids, layout.mask, layout.mask_pos))
    emb = model.embed_text(ids, text_mask)
    pair = torch.tensor([true_id, false_id], device=device)
    text_of, video_of = text_of.to(device), video_of.to(device)
    out = torch.empty(len(text_of))
    step = max(1, pair_batch)
    for start in range(0, len(out), step):
        t, v = text_of[start : start + step], video_of[start : start + step]
        hidden = model.fuse(
            video, video_mask, emb[t], text_mask[t], attn="full", task=layout.task, video_index=v
        )
        h = hidden[torch.arange(len(t), device=device), pos[t]]
        out[start : start + len(t)] = score(model.mlm_logits(h, exact=True, vocab=pair).float(), 0, 1).cpu()
    return out


def expand_video(
    feat: torch.Tensor, mask: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video features repeated for rows that share a video (``index[i]`` = the video of row i)."""
    index = index.to(feat.device)
    return feat.index_select(0, index), mask.index_select(0, index)
