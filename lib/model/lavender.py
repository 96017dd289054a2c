"""LAVENDER: Video Swin video tokens + BERT text embeddings -> one BERT fusion encoder -> ONE MLM head.

Every task is masked-token prediction: the caller puts a ``[MASK]`` where the task asks
(``lib.model.layouts``) and reads the vocabulary logits there; true/false tasks score a pair with
:func:`true_false_score`::

    logits = model(img, ids, mask)                              # (B, L, V): every text position
    at_mask = model(img, ids, mask, positions=ids == mask_id)   # (K, V): only the [MASK] positions
    p_true = true_false_score(at_mask, true_id, false_id)       # (K,): softmax over {"true", "false"}

or step by step: ``encode_video`` -> ``embed_text`` -> ``fuse`` -> ``mlm_logits(hidden, positions)``.

Reading order: config -> video encoder -> text embeddings -> BERT layers (our own, SDPA) -> MLM head -> masks
-> model. Parameter names follow the reference checkpoints (``enc_img.*``, ``enc_txt.emb_txt.*``,
``trsfr.layer.N.*``, ``fc_mtm.predictions.*``, ``emb_task``) so they load unchanged
(``lib.model.checkpoint``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lib.data.frames import normalize_frames, resize_frames

from .video_swin import ATTN_IMPLS, SWIN_SIZES, SwinTransformer3D

TASK_TOKEN_IDS: dict[str, int] = {"vtm": 0, "mc": 1, "oe": 2, "cap": 3}
"""Rows of ``emb_task`` used as a pre-text token per task family (reference ``task_tok2id``)."""

ATTN_MASK_TYPES = ("full", "seq2seq", "prefix")


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


@dataclass
class LavenderConfig:
    """Everything that fixes the architecture; saved as ``config.json`` next to the weights."""

    # Video Swin: a named size fills the fields left as None; "custom" needs all three.
    swin_size: str = "base"
    swin_embed_dim: int | None = None
    swin_depths: tuple[int, ...] | None = None
    swin_heads: tuple[int, ...] | None = None
    swin_window: tuple[int, int, int] = (8, 7, 7)
    swin_patch_size: tuple[int, int, int] = (2, 4, 4)  # patch embedding kernel (T, H, W); VIOLET's (2, 4, 4)
    swin_stem_convs: int = 0  # stride-2 3x3 convolutions before the patch projection (0 = reference layout)
    swin_drop_path: float = 0.2
    # Visual token geometry: frames and (H/32)x(W/32) patches supported by emb_len / emb_pos.
    max_size_frame: int = 6
    max_size_patch: int = 14
    # uint8 frames of another size are resized to this square side on the model's device: train crops the
    # loader left at the stored resolution (config key resize_on, ClipTransform(defer_resize=True)).
    # None: frames are used as given.
    frame_size: int | None = None
    # Text embeddings and the fusion encoder (BERT-base by default; from_pretrained_parts copies a BERT
    # config).
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    txt_backbone_embed_only: bool = True
    # Text-only BERT layers before the fusion when txt_backbone_embed_only is False (0: num_layers).
    num_text_layers: int = 0
    # Fusion attention of the full-attention tasks: True (the reference) lets video tokens attend to the text;
    # False gives them the prefix mask captioning's "seq2seq" already uses (video attends to video only), so
    # a video's fused tokens do not depend on its texts and are computed ONCE for all of them (QA questions,
    # true/false options, retrieval pairs): fusion work per extra text falls from video + text tokens to
    # text tokens.
    video_attends_text: bool = True
    # Pre-text task token (emb_task row added before the text when enabled).
    enable_task_token: bool = False
    num_task_tokens: int = 10
    # Compute.
    attn_impl: str = "sdpa"  # "sdpa" | "eager" (explicit softmax(QK^T), the reference's formulation)
    use_checkpoint: bool = False  # gradient checkpointing of every Swin block and fusion layer
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.swin_size != "custom":
            if self.swin_size not in SWIN_SIZES:
                raise ValueError(
                    f"swin_size must be one of {[*SWIN_SIZES, 'custom']}, got {self.swin_size!r}"
                )
            preset = SWIN_SIZES[self.swin_size]
            self.swin_embed_dim = self.swin_embed_dim or preset["embed_dim"]  # type: ignore[assignment]
            self.swin_depths = self.swin_depths or preset["depths"]  # type: ignore[assignment]
            self.swin_heads = self.swin_heads or preset["num_heads"]  # type: ignore[assignment]
        if not (self.swin_embed_dim and self.swin_depths and self.swin_heads):
            raise ValueError("swin_size='custom' needs swin_embed_dim, swin_depths and swin_heads")
        self.swin_depths = tuple(int(d) for d in self.swin_depths)
        self.swin_heads = tuple(int(h) for h in self.swin_heads)
        self.swin_window = tuple(int(w) for w in self.swin_window)  # type: ignore[assignment]
        self.swin_patch_size = tuple(int(p) for p in self.swin_patch_size)  # type: ignore[assignment]
        if (
            len(self.swin_depths) != len(self.swin_heads)
            or len(self.swin_window) != 3
            or len(self.swin_patch_size) != 3
        ):
            raise ValueError(
                f"swin_depths {self.swin_depths} / swin_heads {self.swin_heads} lengths differ or "
                f"swin_window {self.swin_window} / swin_patch_size {self.swin_patch_size} is not (D, H, W)"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        if self.num_task_tokens <= max(TASK_TOKEN_IDS.values()):
            raise ValueError(f"num_task_tokens must exceed {max(TASK_TOKEN_IDS.values())}")

    @property
    def swin_features(self) -> int:
        """Channels of the last Swin stage (768 tiny/small, 1024 base, 1536 large)."""
        return self.swin_embed_dim * 2 ** (len(self.swin_depths) - 1)  # type: ignore[operator]

    @property
    def text_layers(self) -> int:
        """Number of text-only BERT layers (0 when the text backbone is embeddings only)."""
        return 0 if self.txt_backbone_embed_only else (self.num_text_layers or self.num_layers)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> LavenderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown LavenderConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> LavenderConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config not found: {path}")
        fields = json.loads(path.read_text())
        fields.pop("inference", None)  # a checkpoint folder's inference settings (lib.api), not geometry
        return cls.from_dict(fields, source=str(path))


# ----------------------------------------------------------------------------------------------------
# Attention masks (boolean, True = may attend; no row is ever fully masked, so no NaN under any dtype)
# ----------------------------------------------------------------------------------------------------


def _never_empty(allowed: torch.Tensor) -> torch.Tensor:
    """Rows with nothing to attend to (an all-padding sample) attend everywhere instead of yielding NaN."""
    return allowed | ~allowed.any(dim=-1, keepdim=True)


def text_self_mask(text_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """Mask for text-only layers: (B, 1, 1, L) padding, or (B, 1, L, L) padding & lower-triangular."""
    allowed = text_mask[:, None, None, :]
    if causal:
        n = text_mask.shape[1]
        allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=text_mask.device).tril()
    return _never_empty(allowed)


def fusion_mask(context_mask: torch.Tensor, text_mask: torch.Tensor, attn: str) -> torch.Tensor:
    """Mask over [context (video + pre-text) ; text] for the fusion encoder.

    ``full``: every row sees every valid column -> (B, 1, 1, N).
    ``seq2seq``: every row sees all valid context columns; text rows also see text columns at or before them
    (and not padding); context rows see no text -> (B, 1, N, N).
    ``prefix``: as ``seq2seq`` but text rows see every valid text column (UniLM's prefix mask).
    """
    if attn not in ATTN_MASK_TYPES:
        raise ValueError(f"attn must be one of {ATTN_MASK_TYPES}, got {attn!r}")
    keys = torch.cat([context_mask, text_mask], dim=1)
    if attn == "full":
        return _never_empty(keys[:, None, None, :])
    b, n_ctx = context_mask.shape
    n_txt = text_mask.shape[1]
    n = n_ctx + n_txt
    allowed = torch.zeros(b, n, n, dtype=torch.bool, device=keys.device)
    allowed[:, :, :n_ctx] = context_mask[:, None, :]
    text_keys = text_mask[:, None, :].expand(b, n_txt, n_txt)
    if attn == "seq2seq":
        text_keys = text_keys & torch.ones(n_txt, n_txt, dtype=torch.bool, device=keys.device).tril()
    allowed[:, n_ctx:, n_ctx:] = text_keys
    return _never_empty(allowed[:, None])


# ----------------------------------------------------------------------------------------------------
# Video tokens
# ----------------------------------------------------------------------------------------------------


class VideoEncoder(nn.Module):
    """Swin features -> per frame [CLS] + h*w patch tokens with learned cls / position / frame embeddings."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        d = config.hidden_size
        self.swin = SwinTransformer3D(
            embed_dim=config.swin_embed_dim,  # type: ignore[arg-type]
            depths=config.swin_depths,  # type: ignore[arg-type]
            num_heads=config.swin_heads,  # type: ignore[arg-type]
            window_size=config.swin_window,
            patch_size=config.swin_patch_size,
            stem_convs=config.swin_stem_convs,
            drop_path_rate=config.swin_drop_path,
            use_checkpoint=config.use_checkpoint,
            attn_impl=config.attn_impl,
        )
        self.fc = nn.Linear(config.swin_features, d) if config.swin_features != d else None
        self.emb_cls = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.emb_pos = nn.Parameter(torch.zeros(1, 1, 1 + config.max_size_patch**2, d))
        self.emb_len = nn.Parameter(torch.zeros(1, config.max_size_frame, 1, d))
        # VIOLET's frame-order embedding: kept (frozen) so checkpoints load; no LAVENDER task uses it.
        self.emb_odr = nn.Parameter(torch.zeros(1, 1, 1, d), requires_grad=False)
        self.norm = nn.LayerNorm(d)  # torch's default eps, as in the reference
        self.frame_size = config.frame_size

    def forward(
        self, img: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """img (B, T, 3, H, W) normalised (or uint8 RGB: resized to ``frame_size`` and normalised here) ->
        tokens (B, T*(1+h*w), D) and mask (B, T*(1+h*w)) bool."""
        if img.ndim != 5:
            raise ValueError(f"expected video (B, T, 3, H, W), got shape {tuple(img.shape)}")
        if img.dtype == torch.uint8:
            size = self.frame_size
            if size is not None and tuple(img.shape[-2:]) != (size, size):
                img = resize_frames(img, size)  # floats in [0, 255]
            img = normalize_frames(img)
        b, t = img.shape[:2]
        if t > self.emb_len.shape[1]:
            raise ValueError(
                f"{t} frames exceed max_size_frame={self.emb_len.shape[1]}; use fewer frames or a model "
                "with a larger max_size_frame (lib.model.checkpoint resizes emb_len when loading into one)"
            )
        feat = self.swin(img.transpose(1, 2))  # (B, T, h, w, C)
        h, w = feat.shape[2:4]
        if 1 + h * w > self.emb_pos.shape[2]:
            side = int((self.emb_pos.shape[2] - 1) ** 0.5)
            raise ValueError(
                f"{h}x{w} patches exceed max_size_patch={side}; use smaller frames or a larger model"
            )
        feat = feat.reshape(b, t, h * w, -1)
        if self.fc is not None:
            feat = self.fc(feat)
        tokens = torch.cat([self.emb_cls.expand(b, t, 1, -1).to(feat.dtype), feat], dim=2)
        tokens = tokens + self.emb_pos[:, :, : 1 + h * w] + self.emb_len[:, :t]
        tokens = self.norm(tokens).reshape(b, t * (1 + h * w), -1)
        if frame_mask is None:
            mask = torch.ones(b, tokens.shape[1], dtype=torch.bool, device=img.device)
        else:
            mask = frame_mask.bool().repeat_interleave(1 + h * w, dim=1)
        return tokens, mask


# ----------------------------------------------------------------------------------------------------
# Text embeddings and BERT layers (HF parameter names, our own forward)
# ----------------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, LayerNorm, dropout (HF ``BertEmbeddings`` names)."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False
        )

    def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.position_ids.shape[1]:
            raise ValueError(
                f"text length {length} exceeds max_position_embeddings={self.position_ids.shape[1]}"
            )
        x = self.word_embeddings(ids) + self.position_embeddings(self.position_ids[:, :length])
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: LavenderConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.attn_impl = config.attn_impl
        self.dropout = config.attention_dropout
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D); mask bool, broadcastable to (B, heads, N, N), True = may attend."""
        return self.attend(*self.project(x), mask)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B, heads, N, D/heads) of x (B, N, D)."""
        b, n, _ = x.shape
        q, k, v = (
            proj(x).view(b, n, self.num_heads, -1).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention of q (B, heads, Nq, d) over k/v (B, heads, Nk, d) -> (B, Nq, heads * d)."""
        p = self.dropout if self.training else 0.0
        # On CPU the explicit path below is faster where SDPA is slow: with dropout (the fused CPU kernel has
        # none; its math fallback measured ~3x slower) and for the backward pass under bf16 autocast (7 ms
        # vs 31 ms for 16x12 heads x 105 tokens, bench/attention.py).
        low_precision_grad = torch.is_grad_enabled() and q.dtype != torch.float32
        cpu_slow = q.device.type == "cpu" and (p > 0 or low_precision_grad)
        if self.attn_impl == "sdpa" and not cpu_slow:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
            scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
            out = torch.matmul(F.dropout(scores.softmax(dim=-1), p, self.training), v)
        b, _, n, _ = q.shape
        return out.transpose(1, 2).reshape(b, n, -1)


class BertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual): HF's ``BertSelfOutput`` and ``BertOutput``."""

    def __init__(self, in_features: int, config: LavenderConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config.hidden_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Post-LayerNorm BERT layer: self-attention block, then feed-forward block."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)

    def forward_context(
        self, context: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer on context rows that attend only to the context (a prefix mask): the output states and
        this layer's keys and values of the context, which text rows attend to (:meth:`forward_text`).
        context (V, Nc, D); mask (V, 1, 1, Nc), True = may attend."""
        attention = self.attention.self
        q, k, v = attention.project(context)
        context = self.attention.output(attention.attend(q, k, v, mask), context)
        return self.output(self.intermediate(context), context), k, v

    def forward_text(
        self,
        text: torch.Tensor,
        context_keys: torch.Tensor,
        context_values: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """The layer on text rows under a prefix mask: row i (of B, Nt tokens) attends to context
        ``index[i]``'s keys/values of this layer and to its own text. mask (B, 1, 1 or Nt, Nc + Nt)."""
        attention = self.attention.self
        q, k, v = attention.project(text)
        # index_select, not keys[index]: its backward (index_add_) is ~4x faster on CPU than index_put_
        keys = torch.cat([context_keys.index_select(0, index), k], dim=2)
        values = torch.cat([context_values.index_select(0, index), v], dim=2)
        text = self.attention.output(attention.attend(q, keys, values, mask), text)
        return self.output(self.intermediate(text), text)


@dataclass
class FusionContext:
    """The video side of a prefix-masked fusion (video attends to video only), computed once for any number
    of text rows: per fusion layer the keys and values of every context token (video + task token)."""

    keys: list[torch.Tensor]  # per layer (V, heads, Nc, D / heads)
    values: list[torch.Tensor]
    mask: torch.Tensor  # (V, Nc) bool, True = a valid context token

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mask.device


class BertEncoder(nn.Module):
    def __init__(self, config: LavenderConfig, num_layers: int):
        super().__init__()
        self.use_checkpoint = config.use_checkpoint
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = self._run(layer, x, mask)
        return x

    def _run(self, fn, *args):
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def encode_context(self, context: torch.Tensor, context_mask: torch.Tensor) -> FusionContext:
        """Every layer's keys and values of context rows that attend only to the context."""
        own = fusion_mask(context_mask, context_mask.new_zeros(context_mask.shape[0], 0), "full")
        keys, values = [], []
        for layer in self.layer:
            context, k, v = self._run(layer.forward_context, context, own)
            keys.append(k)
            values.append(v)
        return FusionContext(keys, values, context_mask)

    def forward_text(
        self, text: torch.Tensor, context: FusionContext, index: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Text rows through every layer, row i attending to context ``index[i]`` (mask: see
        :meth:`BertLayer.forward_text`)."""
        for layer, keys, values in zip(self.layer, context.keys, context.values):
            text = self._run(layer.forward_text, text, keys, values, index, mask)
        return text


class TextEncoder(nn.Module):
    """BERT embeddings (``emb_txt``) and, unless ``txt_backbone_embed_only``, BERT layers (``txt_trsfr``)."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.emb_txt = BertEmbeddings(config)
        self.txt_trsfr = BertEncoder(config, config.text_layers) if config.text_layers else None

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        x = self.emb_txt(ids)
        if self.txt_trsfr is None:
            return x
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        return self.txt_trsfr(x, text_self_mask(mask.bool(), causal))


# ----------------------------------------------------------------------------------------------------
# MLM head (HF ``BertOnlyMLMHead`` names; decoder NOT tied to the word embeddings)
# ----------------------------------------------------------------------------------------------------


class PredictionHeadTransform(nn.Module):
    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMPredictions(nn.Module):
    """transform -> decoder; ``decoder.bias`` IS ``bias`` (one parameter under the two HF names)."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class MLMHead(nn.Module):
    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.predictions = MLMPredictions(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


class LavenderModel(nn.Module):
    """Video tokens + text embeddings -> BERT fusion encoder -> MLM logits (one head for every task)."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.config = config
        self.enc_img = VideoEncoder(config)
        self.enc_txt = TextEncoder(config)
        self.trsfr = BertEncoder(config, config.num_layers)
        self.fc_mtm = MLMHead(config)
        self.emb_task = nn.Parameter(torch.zeros(config.num_task_tokens, config.hidden_size))
        self.emb_task.requires_grad_(config.enable_task_token)
        self.load_reports: dict[str, Any] = {}  # filled by from_pretrained_parts: what came from where
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT init (normal(0, initializer_range), zero biases, unit LayerNorms); the Swin keeps its own."""
        std = self.config.initializer_range
        for name, module in self.named_modules():
            if name.startswith("enc_img.swin"):
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
            for p in (
                self.enc_img.emb_cls,
                self.enc_img.emb_pos,
                self.enc_img.emb_len,
                self.enc_img.emb_odr,
                self.emb_task,
            ):
                p.normal_(std=std)
            self.fc_mtm.predictions.bias.zero_()

    @classmethod
    def from_pretrained_parts(
        cls,
        config: LavenderConfig,
        bert_dir: str | Path | None = None,
        swin_ckpt: str | Path | None = None,
        swin_init: str = "random",
    ) -> LavenderModel:
        """Build from a LOCAL Hugging Face BERT folder and/or a Video Swin checkpoint (see ``checkpoint.py``).

        ``swin_init``: "3d" (Kinetics Video Swin ``.pth``), "2d" (inflate an ImageNet Swin), or "random".
        The BERT folder's config.json sets the fusion width / layers / heads. What was loaded, missing or made
        fresh is in ``model.load_reports``.
        """
        from .checkpoint import build_from_pretrained_parts

        return build_from_pretrained_parts(
            config, bert_dir=bert_dir, swin_ckpt=swin_ckpt, swin_init=swin_init
        )

    # -- the four steps --------------------------------------------------------------------------------

    def encode_video(
        self, img: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) ImageNet-normalised (or uint8 RGB) frames -> video tokens (B, T*(1+h*w), D), mask.

        ``frame_mask`` (B, T), optional, marks padded frames of shorter clips as invalid.
        """
        return self.enc_img(img, frame_mask)

    def embed_text(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """Token ids (B, L) -> (B, L, D); ``mask``/``causal`` matter only with text layers."""
        return self.enc_txt(ids, mask, causal)

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

    def fusion_context(
        self, video_feat: torch.Tensor, video_mask: torch.Tensor, task: str | None = None
    ) -> FusionContext:
        """The fused video side of attention where video ignores text (:meth:`shares_video`), computed once:
        pass it to :meth:`fuse` in place of the video tokens for any number of text rows (every decoding
        step, every retrieval pair)."""
        return self.trsfr.encode_context(*self._context(video_feat, video_mask, task, video_feat.dtype))

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
            return self.trsfr(x, allowed)[:, -n_text:]
        mode = "seq2seq" if attn == "seq2seq" else "prefix"
        allowed = fusion_mask(context.mask.index_select(0, video_index), text_mask.bool(), mode)
        return self.trsfr.forward_text(text_emb, context, video_index, allowed[..., -n_text:, :])

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
        img: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        attn: str = "full",
        task: str | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Frames (B, T, 3, H, W), text ids/mask (B, L) -> MLM logits (B, L, V) or (K, V) at positions."""
        video_feat, video_mask = self.encode_video(img)
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
    "LavenderModel",
    "fusion_mask",
    "text_self_mask",
    "true_false_score",
]
