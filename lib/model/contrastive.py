"""Contrastive alignment (ALPRO's VTC, VALOR's MGA, LF-VILA stage 1): the dual-encoder path of the ONE model.

Unimodal features come from the same weights as every other task (:meth:`LavenderModel.video_embedding`,
:meth:`LavenderModel.text_embedding`): the video tokens through the fusion encoder on their own (what a
prefix-masked fusion computes anyway, :class:`lib.model.bert.FusionContext`), mean-pooled; the text through
its text-only layers when the model has them (ALPRO's split of BERT at ``fusion_layer``), else through the
fusion layers on its own, its [CLS] taken. :class:`ContrastiveHead` projects both into a shared space
(ALPRO: 256-d), L2-normalised, with a learnable temperature (init 0.07, clamped to [0.001, 0.5] as ALPRO).

:func:`info_nce` is the symmetric InfoNCE with in-batch negatives gathered from every rank WITH their
gradients (:func:`gather_with_grad`), so 2 ranks x B items give the loss and gradients of 1 rank x 2B.
:func:`sample_hard_negatives` draws ALPRO's VTM negatives from the contrastive similarities.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

TEMP_RANGE = (0.001, 0.5)
"""ALPRO's clamp of the learnable temperature."""


class ContrastiveHead(nn.Module):
    """Linear projections of pooled video / text features into the contrastive space, and the temperature."""

    def __init__(self, hidden_size: int, dim: int = 256, temp: float = 0.07):
        super().__init__()
        self.proj_video = nn.Linear(hidden_size, dim)
        self.proj_text = nn.Linear(hidden_size, dim)
        self.temp = nn.Parameter(torch.tensor(float(temp)))

    def temperature(self) -> torch.Tensor:
        """The temperature, clamped to :data:`TEMP_RANGE` (the clamp is also applied to the stored value)."""
        with torch.no_grad():
            self.temp.clamp_(*TEMP_RANGE)
        return self.temp

    def video(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj_video(pooled).float(), dim=-1)

    def text(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj_text(pooled).float(), dim=-1)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (equal sizes) concatenated in rank order; gradients flow back to their owner."""
    if not distributed():
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(f"contrastive batches differ across ranks: {[int(s) for s in sizes]}")
    return _GatherWithGrad.apply(x)


def info_nce(
    video: torch.Tensor, text: torch.Tensor, temp: torch.Tensor, gather: bool = True
) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE of matched rows (video i <-> text i), negatives = every other row of every rank.

    ``video``, ``text``: (B, d) L2-normalised. Each rank's loss is the mean over its own rows of the
    video->text and text->video cross-entropies (their average); with DDP averaging the gradients over
    ranks this is exactly the loss of one process holding every rank's rows."""
    offset = 0
    all_video, all_text = video, text
    if gather and distributed():
        all_video, all_text = gather_with_grad(video), gather_with_grad(text)
        offset = dist.get_rank() * video.shape[0]
    labels = torch.arange(video.shape[0], device=video.device) + offset
    v2t = video @ all_text.T / temp
    t2v = text @ all_video.T / temp
    loss = (F.cross_entropy(v2t, labels) + F.cross_entropy(t2v, labels)) / 2
    acc = (t2v.argmax(-1) == labels).float().mean()
    return {"loss": loss, "acc": acc, "temp": temp.detach()}


def sample_hard_negatives(similarity: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ALPRO's VTM mining: for each row i of a (B, B) similarity (rows: queries, columns: candidates, i <-> i
    matched), a candidate j != i drawn with probability softmax(similarity[i]) over the others."""
    weights = similarity.float().softmax(dim=-1).clone()
    weights.fill_diagonal_(0)
    off_diagonal = 1 - torch.eye(len(weights), device=weights.device)
    weights = weights + 1e-12 * off_diagonal  # a row that underflowed to zeros stays a valid distribution
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


__all__ = ["TEMP_RANGE", "ContrastiveHead", "gather_with_grad", "info_nce", "sample_hard_negatives"]
