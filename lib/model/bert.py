"""BERT building blocks with Hugging Face parameter names and our own forward (SDPA): embeddings, layers, the
encoder (with a once-per-video prefix path, :class:`FusionContext`, and a key/value cache of a growing text
prefix for decoding, :class:`TextCache`), the MLM head, and the boolean attention masks they use. Shared by
the text encoder (``lib.model.encoders.text``) and the fusion encoder
(:class:`lib.model.lavender.LavenderModel`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import LavenderConfig

ATTN_MASK_TYPES = ("full", "seq2seq", "prefix")

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

    def forward(
        self,
        ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        position_offset: int = 0,
    ) -> torch.Tensor:
        """``ids`` (B, L) at positions ``position_offset .. position_offset + L - 1`` (a decoding step with
        a key/value cache), or at ``position_ids`` (B, L) (sentences of a packed paragraph restart at 0,
        ``lib.model.long_form``)."""
        if position_ids is None:
            end = position_offset + ids.shape[1]
            if end > self.position_ids.shape[1]:
                limit = self.position_ids.shape[1]
                raise ValueError(f"text length {end} exceeds max_position_embeddings={limit}")
            position_ids = self.position_ids[:, position_offset:end]
        x = self.word_embeddings(ids) + self.position_embeddings(position_ids)
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
        """x (B, N, D); mask broadcastable to (B, heads, N, N): bool (True = may attend) or an additive float
        bias (a learned sparse mask, :class:`lib.model.lavender.LearnedSparseMask`)."""
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
        if mask.dtype != torch.bool:  # an additive bias, in the scores' dtype
            mask = mask.to(q.dtype)
        if self.attn_impl == "sdpa" and not cpu_slow:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
            if mask.dtype == torch.bool:
                scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + mask
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
        context (V, Nc, D); mask (V, 1, 1 or Nc, Nc): bool, True = may attend, or an additive bias."""
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

    def forward_cached(
        self, text: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int, mask: torch.Tensor
    ) -> torch.Tensor:
        """The layer on ``text`` (B, q, D), the next q text rows under a prefix mask: their keys and values
        are written into this layer's cache ``keys`` / ``values`` (B, heads, capacity, d) at ``start``, and
        they attend to the cache up to themselves. mask (B, 1, q, start + q)."""
        attention = self.attention.self
        q, k, v = attention.project(text)
        end = start + text.shape[1]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        text = self.attention.output(attention.attend(q, keys[:, :, :end], values[:, :, :end], mask), text)
        return self.output(self.intermediate(text), text)


@dataclass
class TextCache:
    """Keys and values of a growing text prefix for step-by-step decoding under the "seq2seq" mask, where a
    text position attends to the context and to earlier text only, so its keys and values never change once
    computed: per fusion layer one buffer (rows, heads, Nc + capacity, d) holding each row's context keys
    (copied once from a :class:`FusionContext`) followed by the cached text positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    context_mask: torch.Tensor  # (rows, Nc) bool, True = a valid context token
    length: int = 0  # text positions cached (the next ones are written after them)

    @property
    def context_len(self) -> int:
        return self.context_mask.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] - self.context_len if self.keys else 0

    def __len__(self) -> int:
        return self.context_mask.shape[0]

    def select(self, rows: torch.Tensor) -> TextCache:
        """A cache of ``rows`` only (e.g. the rows still decoding): copies everything those rows hold."""
        keys = [k.index_select(0, rows) for k in self.keys]
        values = [v.index_select(0, rows) for v in self.values]
        return TextCache(keys, values, self.context_mask.index_select(0, rows), self.length)

    def reorder_text(self, rows: torch.Tensor) -> None:
        """Row i's text positions become those of row ``rows[i]`` (beam search: each beam takes its parent's
        prefix), in place. Only valid between rows with the same context (the beams of one video), which
        therefore stays where it is: only the text part is copied."""
        text = slice(self.context_len, self.context_len + self.length)
        for buffer in (*self.keys, *self.values):
            buffer[:, :, text] = buffer[rows, :, text]


@dataclass
class FusionContext:
    """The video side of a prefix-masked fusion (video attends to video only), computed once for any number
    of text rows: per fusion layer the keys and values of every context token (video + task token)."""

    keys: list[torch.Tensor]  # per layer (V, heads, Nc, D / heads)
    values: list[torch.Tensor]
    mask: torch.Tensor  # (V, Nc) bool, True = a valid context token
    states: torch.Tensor | None = None  # (V, Nc, D) the last layer's output: the context encoded on its own

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, layers: slice | None = None) -> torch.Tensor:
        """Every layer, or the ``layers`` slice of them (a hierarchical text runs two slices, two masks)."""
        for layer in self.layer if layers is None else self.layer[layers]:
            x = self._run(layer, x, mask)
        return x

    def _run(self, fn, *args):
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def encode_context(
        self, context: torch.Tensor, context_mask: torch.Tensor, own: torch.Tensor | None = None
    ) -> FusionContext:
        """Every layer's keys and values of context rows that attend only to the context: to every valid
        context token, or as ``own`` (V, 1, Nc, Nc) says (a learned sparse mask's bias)."""
        if own is None:
            own = fusion_mask(context_mask, context_mask.new_zeros(context_mask.shape[0], 0), "full")
        keys, values = [], []
        for layer in self.layer:
            context, k, v = self._run(layer.forward_context, context, own)
            keys.append(k)
            values.append(v)
        return FusionContext(keys, values, context_mask, context)

    def forward_text(
        self, text: torch.Tensor, context: FusionContext, index: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Text rows through every layer, row i attending to context ``index[i]`` (mask: see
        :meth:`BertLayer.forward_text`)."""
        for layer, keys, values in zip(self.layer, context.keys, context.values):
            text = self._run(layer.forward_text, text, keys, values, index, mask)
        return text

    def start_text_cache(self, context: FusionContext, index: torch.Tensor, capacity: int) -> TextCache:
        """An empty :class:`TextCache` of ``len(index)`` rows, row i on context ``index[i]``, with room for
        ``capacity`` text positions."""
        n_ctx, n = context.mask.shape[1], len(index)
        keys, values = [], []
        for k, v in zip(context.keys, context.values):
            shape = (n, k.shape[1], n_ctx + capacity, k.shape[3])
            keys.append(k.new_empty(shape))
            values.append(v.new_empty(shape))
            keys[-1][:, :, :n_ctx] = k.index_select(0, index)
            values[-1][:, :, :n_ctx] = v.index_select(0, index)
        return TextCache(keys, values, context.mask.index_select(0, index))

    def forward_cached(self, text: torch.Tensor, cache: TextCache, keep: int) -> torch.Tensor:
        """The next q text positions (B, q, D) of every cached row through every layer, each attending to its
        context, the cached text and the new positions at or before it; the first ``keep`` of them stay in
        the cache (the rest, e.g. a trailing [MASK], are overwritten by the next call)."""
        n, q = text.shape[:2]
        if cache.length + q > cache.capacity:
            raise ValueError(f"text cache of {cache.capacity} positions cannot take {cache.length} + {q}")
        start = cache.context_len + cache.length
        causal = torch.ones(q, q, dtype=torch.bool, device=text.device).tril()
        mask = torch.cat(
            [
                cache.context_mask[:, None, :].expand(n, q, -1),
                causal.new_ones(n, q, cache.length),
                causal.expand(n, q, q),
            ],
            dim=2,
        )[:, None]
        for layer, keys, values in zip(self.layer, cache.keys, cache.values):
            text = layer.forward_cached(text, keys, values, start, mask)
        cache.length += keep
        return text


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
