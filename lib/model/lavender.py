"""LAVENDER: registered encoders (Video Swin for video, BERT embeddings for text) -> ONE BERT fusion encoder
-> ONE MLM head.

Every task is masked-token prediction: the caller puts a ``[MASK]`` where the task asks
(``lib.model.layouts``) and reads the vocabulary logits there (the head's operations per task are in
:mod:`lib.model.mlm`); true/false tasks score a pair with :func:`true_false_score`::

    logits = model(img, ids, mask)                              # (B, L, V): every text position
    at_mask = model(img, ids, mask, positions=ids == mask_id)   # (K, V): only the [MASK] positions
    p_true = true_false_score(at_mask, true_id, false_id)       # (K,): softmax over {"true", "false"}

or step by step: ``encode_video`` (or ``encode`` for every context modality) -> ``embed_text`` -> ``fuse``
-> ``mlm_logits(hidden, positions)``.

Reading order: the architecture as data (:mod:`lib.model.config`) -> the encoders of each modality
(:mod:`lib.model.encoders`: ``video``, ``text``, each registered with its checkpoint key prefix) -> BERT
layers and the MLM head (:mod:`lib.model.bert`) -> this model, which composes them: context tokens (video,
and any other modality in ``config.modalities``, each with its modality-type embedding where its encoder
declares one) then the text, through the one fusion encoder ``trsfr`` and the one head ``fc_mtm``; with
``config.sparse_mask_tokens`` a learned mask over the context-context attention (:class:`LearnedSparseMask`,
SwinBERT / AVLFormer) whose L1 loss the captioning task adds.
Parameter names follow the reference checkpoints (``enc_img.*``, ``enc_txt.emb_txt.*``, ``trsfr.layer.N.*``,
``fc_mtm.predictions.*``, ``emb_task``) so they load unchanged (``lib.model.checkpoint``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bert import ATTN_MASK_TYPES, BertEncoder, FusionContext, MLMHead, TextCache, fusion_mask, text_self_mask
from .config import TASK_TOKEN_IDS, LavenderConfig
from .contrastive import ContrastiveHead
from .encoders import EncoderSpec, encoder_spec
from .long_form import LongFormHead

# ----------------------------------------------------------------------------------------------------
# The learned sparse attention mask (SwinBERT; AVLFormer over video + audio tokens)
# ----------------------------------------------------------------------------------------------------

SPARSE_MASK_BIAS = -10000.0
"""The score a mask value of 0 adds: BERT's extended mask ``(1 - m) * -10000``, through which SwinBERT's soft
mask acts."""


class LearnedSparseMask(nn.Module):
    """SwinBERT's learned attention mask over the N context (video + audio) tokens, as AVLFormer uses it.

    An N x N logit matrix; ``mask = sigmoid(logits)`` off the diagonal and 1 on it. It replaces the
    context-context block of the fusion mask as BERT's additive bias ``(1 - mask) * -10000`` on the valid
    tokens (padding and a clip's missing audio stay masked); text rows keep their own rules. ``hard``
    binarises it at 0.5, without gradient (SwinBERT's ``sparse_mask_soft2hard``). :meth:`sparsity_loss` is
    the L1 term, the mean of the off-diagonal part (SwinBERT's ``get_loss_sparsity``).
    """

    keeps_own_init = True  # normal(0, 1), SwinBERT's nn.Embedding

    def __init__(self, n_tokens: int, hard: bool = False):
        super().__init__()
        self.hard = hard
        self.logits = nn.Parameter(torch.empty(n_tokens, n_tokens))
        nn.init.normal_(self.logits)

    @property
    def n_tokens(self) -> int:
        return self.logits.shape[0]

    def off_diagonal(self) -> torch.Tensor:
        """(N, N) ``sigmoid(logits)`` with a zero diagonal."""
        eye = torch.eye(self.n_tokens, device=self.logits.device, dtype=self.logits.dtype)
        return torch.sigmoid(self.logits) * (1 - eye)

    def mask(self) -> torch.Tensor:
        """(N, N) the soft mask in [0, 1], diagonal 1."""
        return self.off_diagonal() + torch.eye(self.n_tokens, device=self.logits.device)

    def sparsity_loss(self) -> torch.Tensor:
        """The L1 sparsity loss: mean of |off-diagonal mask| over the N x N matrix."""
        return self.off_diagonal().abs().mean()

    def forward(self, allowed: torch.Tensor, n_context: int) -> torch.Tensor:
        """The fusion mask ``allowed`` (B, 1, 1 or N', N') bool over [context ; rest], whose first
        ``n_context`` rows and columns are the context tokens, with the learned block applied: (B, 1, N', N')
        bool (``hard``) or an additive float bias."""
        n = self.n_tokens
        if n_context != n:
            raise ValueError(
                f"the learned sparse mask covers {n} context tokens; this input has {n_context} (another "
                "frame count, frame size, audio slices or modality group than the model was built for)"
            )
        b, n_keys = allowed.shape[0], allowed.shape[-1]
        allowed = allowed.expand(b, 1, n_keys, n_keys)
        pad = (0, n_keys - n, 0, n_keys - n)
        if self.hard:
            keep = F.pad(self.mask().detach() >= 0.5, pad, value=True)
            return allowed & keep
        bias = F.pad((1 - self.mask()) * SPARSE_MASK_BIAS, pad)
        return bias.masked_fill(~allowed, float("-inf"))


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


class LavenderModel(nn.Module):
    """Video tokens + text embeddings -> BERT fusion encoder -> MLM logits (one head for every task)."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.config = config
        self.context_encoders: tuple[EncoderSpec, ...] = tuple(encoder_spec(m) for m in config.modalities)
        for spec in self.context_encoders:  # video first: enc_img
            if spec.role != "context":
                raise ValueError(f"modality {spec.modality!r} has role {spec.role!r}, not a context modality")
            self.add_module(spec.key_prefix, spec.build(config))
        text = encoder_spec("text")
        self.text_key = text.key_prefix
        self.add_module(text.key_prefix, text.build(config))  # enc_txt
        self.trsfr = BertEncoder(config, config.num_layers)
        self.fc_mtm = MLMHead(config)
        self.emb_task = nn.Parameter(torch.zeros(config.num_task_tokens, config.hidden_size))
        self.emb_task.requires_grad_(config.enable_task_token)
        self.emb_type = nn.ParameterDict(
            {
                spec.modality: nn.Parameter(torch.zeros(1, 1, config.hidden_size))
                for spec in self.context_encoders
                if spec.type_embedding
            }
        )
        # The dual-encoder path (lib.model.contrastive): vtc.proj_video / vtc.proj_text / vtc.temp.
        self.vtc = (
            ContrastiveHead(config.hidden_size, config.contrastive_dim, config.contrastive_temp)
            if config.contrastive_dim
            else None
        )
        # Long-form video (lib.model.long_form): clip / sentence projections, sentence-index embeddings.
        self.long_form = (
            LongFormHead(self.encoder("video").swin.local_features, config) if config.long_form_dim else None
        )
        # SwinBERT / AVLFormer: a learned mask over the context-context attention (video + audio tokens).
        self.sparse_mask = (
            LearnedSparseMask(config.sparse_mask_tokens, config.sparse_mask_hard)
            if config.sparse_mask_tokens
            else None
        )
        self.load_reports: dict[str, Any] = {}  # filled by build_from_pretrained_parts: what came from where
        self.reset_parameters()

    def encoder(self, modality: str) -> nn.Module:
        """The encoder module of ``modality`` (e.g. ``model.encoder("video") is model.enc_img``)."""
        return getattr(self, encoder_spec(modality).key_prefix)

    def reset_parameters(self) -> None:
        """BERT init (normal(0, initializer_range), zero biases, unit LayerNorms); a module that sets
        ``keeps_own_init`` (the Swin) keeps its own; each encoder initialises its own extra embeddings."""
        std = self.config.initializer_range
        own = [name + "." for name, m in self.named_modules() if getattr(m, "keeps_own_init", False)]
        for name, module in self.named_modules():
            if any((name + ".").startswith(prefix) for prefix in own):
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            for spec in self.context_encoders:
                init = getattr(getattr(self, spec.key_prefix), "init_embeddings", None)
                if init is not None:
                    init(std)
            for p in (self.emb_task, *self.emb_type.values()):
                p.normal_(std=std)
            self.fc_mtm.predictions.bias.zero_()
            for head in (self.vtc, self.long_form):
                if head is not None:
                    head.temp.fill_(self.config.contrastive_temp)

    # -- the four steps --------------------------------------------------------------------------------

    def encode(
        self,
        inputs: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor | None] | None = None,
        modalities: tuple[str, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens (B, N, D) and their validity (B, N) of every modality of ``config.modalities`` (or
        of those of ``modalities`` only: a task's modality group, e.g. audio alone), in that order, each with
        its modality-type embedding where its encoder declares one. ``inputs`` maps a modality to its input
        (video: frames (B, T, 3, H, W)); ``masks`` optionally to its own validity (video: padded frames
        (B, T); audio: slices (B, S), False for a clip without audio)."""
        if modalities is not None:
            unknown = sorted(set(modalities) - set(self.config.modalities))
            if unknown or not modalities:
                raise ValueError(
                    f"modalities {list(modalities)}: this model fuses {list(self.config.modalities)}"
                )
        parts = []
        for spec in self.context_encoders:
            if modalities is not None and spec.modality not in modalities:
                continue
            if spec.modality not in inputs:
                raise ValueError(
                    f"this model fuses {list(self.config.modalities)}; the input has no {spec.modality!r}"
                )
            mask = (masks or {}).get(spec.modality)
            tokens, valid = getattr(self, spec.key_prefix)(inputs[spec.modality], mask)
            if spec.type_embedding:
                tokens = tokens + self.emb_type[spec.modality].to(tokens.dtype)
            parts.append((tokens, valid))
        if len(parts) == 1:
            return parts[0]
        return torch.cat([t for t, _ in parts], dim=1), torch.cat([v for _, v in parts], dim=1)

    def encode_video(
        self, img: torch.Tensor | Mapping[str, Any], frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) ImageNet-normalised (or uint8 RGB) frames -> video tokens (B, T*(1+h*w), D), mask.

        ``frame_mask`` (B, T), optional, marks padded frames of shorter clips as invalid. ``img`` may also be
        a batch of several modalities (:func:`lib.data.datasets.stack_clips` of items with audio): each
        modality's input under its name and their validity under ``"masks"``; the modalities present are
        encoded (a task's modality group), in the order of ``config.modalities``.
        """
        if isinstance(img, Mapping):
            present = tuple(m for m in self.config.modalities if m in img)
            if not present:
                raise ValueError(
                    f"the batch holds none of this model's modalities {list(self.config.modalities)}"
                )
            masks = dict(img.get("masks") or {})
            return self.encode({m: img[m] for m in present}, masks, present)
        return self.encode({"video": img}, {"video": frame_mask}, ("video",))

    def embed_text(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """Token ids (B, L) -> (B, L, D); ``mask``/``causal`` matter only with text layers."""
        return getattr(self, self.text_key)(ids, mask, causal)

    def shares_video(self, attn: str) -> bool:
        """Whether video tokens ignore the text under ``attn`` ("seq2seq", "prefix", or "full" with
        ``config.video_attends_text`` False): then each video is fused once for all of its texts."""
        return attn in ("seq2seq", "prefix") or not self.config.video_attends_text

    def _context(
        self, video_feat: torch.Tensor, video_mask: torch.Tensor, task: str | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[video ; task token?] tokens and their validity mask."""
        context, mask = video_feat.to(dtype), video_mask.bool()
        pretext = self.task_token(task, context.shape[0])
        if pretext is not None:
            context = torch.cat([context, pretext.to(dtype)], dim=1)
            mask = F.pad(mask, (0, 1), value=True)
        return context, mask

    def _context_attention(self, allowed: torch.Tensor, n_context: int) -> torch.Tensor:
        """The fusion mask ``allowed`` with the learned sparse mask over its first ``n_context`` (video +
        audio) rows and columns, when the model has one."""
        return allowed if self.sparse_mask is None else self.sparse_mask(allowed, n_context)

    def sparsity_loss(self) -> torch.Tensor | None:
        """The learned sparse mask's L1 loss (:meth:`LearnedSparseMask.sparsity_loss`); None without one."""
        return None if self.sparse_mask is None else self.sparse_mask.sparsity_loss()

    def fusion_context(
        self, video_feat: torch.Tensor, video_mask: torch.Tensor, task: str | None = None
    ) -> FusionContext:
        """The fused video side of attention where video ignores text (:meth:`shares_video`), computed once:
        pass it to :meth:`fuse` in place of the video tokens for any number of text rows (every decoding
        step, every retrieval pair)."""
        context, mask = self._context(video_feat, video_mask, task, video_feat.dtype)
        own = None
        if self.sparse_mask is not None:
            own = fusion_mask(mask, mask.new_zeros(mask.shape[0], 0), "full")
            own = self._context_attention(own, video_feat.shape[1])
        return self.trsfr.encode_context(context, mask, own)

    def fuse(
        self,
        video_feat: torch.Tensor | FusionContext,
        video_mask: torch.Tensor | None,
        text_emb: torch.Tensor,
        text_mask: torch.Tensor,
        attn: str = "full",
        task: str | None = None,
        video_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the fusion encoder over [video ; task token? ; text]; return the text positions (B, L, D).

        ``video_feat``: video tokens (V, Nv, D) with ``video_mask`` (V, Nv), or a :class:`FusionContext` of
        V videos (``video_mask`` unused). Text row i is fused with video ``video_index[i]`` (default: row i,
        or each video repeated for an equal share of consecutive rows when there are fewer videos than
        texts, e.g. one clip and its options). Where video tokens ignore the text (:meth:`shares_video`)
        each video is fused once and shared by its rows.
        """
        b, n_videos, n_text = text_emb.shape[0], len(video_feat), text_emb.shape[1]
        if video_index is None:
            if b % n_videos:
                raise ValueError(f"video batch {n_videos} does not divide text batch {b}")
            video_index = torch.arange(n_videos).repeat_interleave(b // n_videos)
        video_index = video_index.to(text_emb.device)
        if isinstance(video_feat, FusionContext):
            if not self.shares_video(attn):
                raise ValueError(f"a FusionContext serves attention where video ignores text, not {attn!r}")
            context = video_feat
        elif self.shares_video(attn):
            used, video_index = torch.unique(video_index, return_inverse=True)  # fuse the videos in use
            if len(used) < n_videos:
                video_feat, video_mask = video_feat.index_select(0, used), video_mask.index_select(0, used)
            context = self.fusion_context(video_feat.to(text_emb.dtype), video_mask, task)
        else:  # full attention: every (video, text) row is fused whole
            tokens, mask = self._context(video_feat, video_mask, task, text_emb.dtype)
            x = torch.cat([tokens.index_select(0, video_index), text_emb], dim=1)
            allowed = fusion_mask(mask.index_select(0, video_index), text_mask.bool(), "full")
            return self.trsfr(x, self._context_attention(allowed, video_feat.shape[1]))[:, -n_text:]
        mode = "seq2seq" if attn == "seq2seq" else "prefix"
        allowed = fusion_mask(context.mask.index_select(0, video_index), text_mask.bool(), mode)
        return self.trsfr.forward_text(text_emb, context, video_index, allowed[..., -n_text:, :])

    # -- decoding with a key/value cache of the text prefix (lib.tasks.decode) ----------------------------

    def supports_text_cache(self) -> bool:
        """Whether decoding can cache the text prefix (:meth:`start_text_cache`): the text enters the fusion
        as embeddings only. Text-only layers (``txt_backbone_embed_only`` false) keep the recomputing path."""
        return self.config.text_layers == 0

    def start_text_cache(self, context: FusionContext, video_index: torch.Tensor, capacity: int) -> TextCache:
        """An empty cache for ``len(video_index)`` texts decoded on the videos of ``context`` (row i on video
        ``video_index[i]``), ``capacity`` text positions long."""
        if not self.supports_text_cache():
            raise ValueError("a model with text-only layers cannot cache its text prefix")
        return self.trsfr.start_text_cache(context, video_index.to(context.device), capacity)

    def fuse_cached(self, ids: torch.Tensor, cache: TextCache, keep: int) -> torch.Tensor:
        """The fused states (B, q, D) of the next q text tokens ``ids`` of every cached row under the
        "seq2seq" mask, as :meth:`fuse` gives them for the whole text; the first ``keep`` stay cached."""
        text = getattr(self, self.text_key).embed_at(ids, cache.length)
        return self.trsfr.forward_cached(text, cache, keep)

    # -- the dual-encoder path (lib.model.contrastive) ----------------------------------------------------

    def _contrastive_head(self) -> ContrastiveHead:
        if self.vtc is None:
            raise ValueError("this model has no contrastive head: build it with contrastive_dim > 0")
        return self.vtc

    def video_embedding(
        self, video: torch.Tensor | FusionContext, video_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(V, d) L2-normalised: the video tokens through the fusion encoder on their own (or a
        :class:`FusionContext` that holds them), mean-pooled over valid tokens, projected."""
        head = self._contrastive_head()
        if not isinstance(video, FusionContext) or video.states is None:
            video = self.fusion_context(video, video_mask, task="vtm")  # type: ignore[arg-type]
        states, valid = video.states, video.mask.to(video.states.dtype).unsqueeze(-1)
        pooled = (states * valid).sum(1) / valid.sum(1).clamp(min=1)
        return head.video(pooled)

    def text_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, d) L2-normalised: the [CLS] of the text (or, with ``contrastive_text_pool`` "mean", the mean
        of its valid token states) through its text-only layers (ALPRO's unimodal text encoder) or, when the
        model has none, through the fusion layers on its own; projected."""
        head = self._contrastive_head()
        text = self.embed_text(ids, mask)
        if self.config.text_layers == 0:
            text = self.trsfr(text, text_self_mask(mask.bool(), causal=False))
        if self.config.contrastive_text_pool == "mean":
            valid = mask.to(text.dtype).unsqueeze(-1)
            return head.text((text * valid).sum(1) / valid.sum(1).clamp(min=1))
        return head.text(text[:, 0])

    def task_token(self, task: str | None, batch: int) -> torch.Tensor | None:
        """(B, 1, D) ``emb_task`` row for ``task`` when ``config.enable_task_token``, else None."""
        if not self.config.enable_task_token:
            return None
        if task not in TASK_TOKEN_IDS:
            raise ValueError(
                f"config.enable_task_token is set: task must be one of {list(TASK_TOKEN_IDS)}, got {task!r}"
            )
        return self.emb_task[TASK_TOKEN_IDS[task]].expand(batch, 1, -1)

    def mlm_logits(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor | None = None,
        exact: bool = False,
        vocab: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vocabulary logits (B, L, V), or (K, V) for the K True entries of ``positions`` (B, L) only.

        Apply the head only where a label or prediction is needed (e.g. the [MASK] of VTM/QA) to save the
        (B, L, V) matmul. ``exact=True`` runs the head in its weights' dtype even under autocast: bf16
        logits (8-bit mantissa) round close scores to ties, which matters when ranking many candidates.
        ``vocab`` (ids): only those columns, e.g. "true"/"false" to rank pairs (the same values as the full
        logits, without computing the other 30k).
        """
        if positions is not None:
            hidden = hidden[positions.bool()]
        head = self.fc_mtm.predictions
        with torch.autocast(hidden.device.type, enabled=False) if exact else contextlib.nullcontext():
            if exact:
                hidden = hidden.to(head.decoder.weight.dtype)
            if vocab is None:
                return self.fc_mtm(hidden)
            vocab = vocab.to(hidden.device)
            return F.linear(head.transform(hidden), head.decoder.weight[vocab], head.bias[vocab])

    def forward(
        self,
        img: torch.Tensor | Mapping[str, torch.Tensor],
        ids: torch.Tensor,
        mask: torch.Tensor,
        attn: str = "full",
        task: str | None = None,
        positions: torch.Tensor | None = None,
        context_masks: Mapping[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Frames (B, T, 3, H, W), text ids/mask (B, L) -> MLM logits (B, L, V) or (K, V) at positions.

        ``img`` may map every modality of ``config.modalities`` to its input (``{"video": frames, "audio":
        slices}``), with ``context_masks`` their validity (e.g. audio (B, S): False for a clip without audio).
        """
        inputs = img if isinstance(img, Mapping) else {"video": img}
        video_feat, video_mask = self.encode(inputs, context_masks)
        text = self.embed_text(ids, mask, causal=attn == "seq2seq")
        return self.mlm_logits(self.fuse(video_feat, video_mask, text, mask, attn, task), positions)


def true_false_score(logits_at_mask: torch.Tensor, true_id: int, false_id: int) -> torch.Tensor:
    """P(true): two-way softmax over the "true"/"false" logits at a [MASK] (= sigmoid of the difference)."""
    pair = logits_at_mask[..., [true_id, false_id]].float()
    return pair.softmax(dim=-1)[..., 0]


__all__ = [
    "ATTN_MASK_TYPES",
    "TASK_TOKEN_IDS",
    "FusionContext",
    "LavenderConfig",
    "LearnedSparseMask",
    "LavenderModel",
    "TextCache",
    "fusion_mask",
    "text_self_mask",
    "true_false_score",
]
