"""Video Swin Transformer (3D shifted-window attention) as used by VIOLET / LAVENDER.

Layout convention: the backbone takes a clip as (B, 3, T, H, W) and returns channel-last features
(B, T, H/32, W/32, C_final); inside, every stage works channel-last (B, D, H, W, C).

Differences from the upstream mmaction Video Swin that matter for users:

* Patch embedding follows VIOLET: Conv3d kernel (2, 4, 4) with stride (1, 4, 4) after padding ONE zero frame
  at the end of time, so T frames give T temporal tokens (T=1 works). Time is never merged.
* When a window is clipped to a smaller feature map, the relative-position index is computed for the ACTUAL
  window (offsets looked up in the full-size bias table). Upstream slices the full window's index
  ``[:N, :N]``, which is only right when the depth alone is clipped (e.g. a 6x6 last stage at 192 px gets
  wrong biases upstream); both agree in every other case, including 224 px with T <= 8.
* Tokens added by padding a feature map to a multiple of the window are masked out as attention keys
  (upstream lets the zero-padded tokens take part). At 224 px with window (8, 7, 7) and T <= 8 nothing is
  padded, so pretrained weights behave exactly as upstream there.
* Attention uses ``F.scaled_dot_product_attention`` with relative-position bias + shift mask as
  ``attn_mask``, except when training on CPU (see :meth:`WindowAttention3D.forward`);
  ``attn_impl="eager"`` keeps the explicit softmax(QK^T) path everywhere as a baseline.

Hierarchical temporal window attention (HTWA, LF-VILA) is an option: ``temporal_windows`` gives each stage
its own temporal window (e.g. ``[2, 4, 8, 16]``: short windows low, long ones high, so early stages model
short clips and only the top sees the whole video), shifted blocks shift in space only (never in time), and
``local_window`` taps the "local" feature map: the input of the first stage whose temporal window exceeds
it, LayerNorm-ed (:meth:`SwinTransformer3D.forward_features`), for clip-level features. LF-VILA's released
code computes that tap and then returns the global map in its place; here the tap is what is returned.
``temporal_windows=None`` is the plain Video Swin, bit for bit. Each stage's bias table is sized by its
own window, so Kinetics weights (window 8) are re-sized in time when loaded
(:func:`lib.model.checkpoint.resize_temporal_bias`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

Triple = tuple[int, int, int]

SWIN_SIZES: dict[str, dict[str, object]] = {
    "tiny": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24)},
    "small": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24)},
    "base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32)},
    "large": {"embed_dim": 192, "depths": (2, 2, 18, 2), "num_heads": (6, 12, 24, 48)},
    "violet": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24)},  # VIOLET's (= small)
}
"""The reference's backbone sizes (window (8, 7, 7), patch (2, 4, 4), mlp_ratio 4 for all)."""

ATTN_IMPLS = ("sdpa", "eager")
MASKED = -1.0e4
"""Additive value for forbidden (query, key) pairs: finite (no NaN in fp16/bf16); exp() underflows to 0."""


# ----------------------------------------------------------------------------------------------------
# Window geometry (pure functions, cached)
# ----------------------------------------------------------------------------------------------------


def clip_window(size: Triple, window: Triple, shift: Triple) -> tuple[Triple, Triple]:
    """Window and shift used on a (D, H, W) map: an axis not above the window is one unshifted window."""
    used_window = tuple(min(s, w) for s, w in zip(size, window))
    used_shift = tuple(0 if s <= w else sh for s, w, sh in zip(size, window, shift))
    return used_window, used_shift  # type: ignore[return-value]


def relative_position_index(window: Triple, table_window: Triple) -> torch.Tensor:
    """(N, N) rows of a bias table built for ``table_window``, for every token pair of a ``window``."""
    if any(w > t for w, t in zip(window, table_window)):
        raise ValueError(f"window {window} is larger than the bias table's window {table_window}")
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N) offsets query - key
    td, th, tw = table_window
    return (
        (rel[0] + td - 1) * (2 * th - 1) * (2 * tw - 1) + (rel[1] + th - 1) * (2 * tw - 1) + (rel[2] + tw - 1)
    )


def no_inference_mode() -> contextlib.AbstractContextManager:
    """Context for building cached tensors: never inference tensors, so training may reuse them later."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()


@functools.lru_cache(maxsize=64)
def clipped_position_index(window: Triple, table_window: Triple, device: torch.device) -> torch.Tensor:
    """:func:`relative_position_index` of a clipped window, cached (with T < 8 frames every window is)."""
    with no_inference_mode():
        return relative_position_index(window, table_window).to(device)


def window_partition(x: torch.Tensor, window: Triple) -> torch.Tensor:
    """(B, D, H, W, C) -> (B, nW, N, C): windows in raster order, tokens depth-major inside a window."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, wd * wh * ww, c)


@functools.lru_cache(maxsize=128)
def window_order(
    padded: Triple, window: Triple, shift: Triple, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Token order of the windows of a (D, H, W) map rolled by -shift, and its inverse.

    ``tokens = x.flatten(1, 3)[:, order]`` lists the windows (as :func:`window_partition` of the rolled map);
    ``y[:, inverse]`` puts window outputs back in place. One gather replaces roll + partition (and
    reverse + roll back), about 4x faster than the copies it replaces on CPU.
    """
    with no_inference_mode():
        index = torch.arange(math.prod(padded)).view(1, *padded, 1)
        index = torch.roll(index, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        order = window_partition(index, window).flatten()
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        return order.to(device), inverse.to(device)


class _GatherTokens(torch.autograd.Function):
    """``x.index_select(1, order)`` for a permutation ``order``; the gradient is a gather with its inverse."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def gather_tokens(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Permute the token axis of (B, L, C) by ``order`` (``inverse`` is its inverse permutation)."""
    return _GatherTokens.apply(x, order, inverse)


def _padded(size: Triple, window: Triple) -> Triple:
    return tuple(math.ceil(s / w) * w for s, w in zip(size, window))  # type: ignore[return-value]


def _shift_regions(size: int, window: int, shift: int) -> torch.Tensor:
    """Region label per position of one axis of the rolled map; the wrapped-around strip has its own."""
    labels = torch.zeros(size, dtype=torch.long)
    if shift > 0:
        labels[size - window : size - shift] = 1
        labels[size - shift :] = 2
    return labels


@functools.lru_cache(maxsize=128)
def window_attention_mask(
    size: Triple, window: Triple, shift: Triple, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor | None:
    """Additive (nW, N, N) mask for one block, or None when every pair inside a window may attend.

    A pair is forbidden when the two tokens come from different regions of the cyclic shift, or when the key
    is a padding token. A token may always attend to itself, so no row is ever fully masked.
    """
    padded = _padded(size, window)
    if padded == size and not any(shift):
        return None
    with no_inference_mode():
        return _region_mask(size, padded, window, shift, dtype).to(device)


def _region_mask(
    size: Triple, padded: Triple, window: Triple, shift: Triple, dtype: torch.dtype
) -> torch.Tensor:
    """The mask of :func:`window_attention_mask` on the CPU."""
    labels = [_shift_regions(p, w, s) for p, w, s in zip(padded, window, shift)]
    region = labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :]
    valid = torch.zeros(padded, dtype=torch.bool)
    valid[: size[0], : size[1], : size[2]] = True
    valid = torch.roll(valid, shifts=tuple(-s for s in shift), dims=(0, 1, 2))
    region = window_partition(region[None, ..., None], window)[0, ..., 0]  # (nW, N)
    valid = window_partition(valid[None, ..., None], window)[0, ..., 0]
    allowed = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]
    allowed |= torch.eye(allowed.shape[-1], dtype=torch.bool)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, MASKED)


# ----------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    noise = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
    return x * noise


class ChannelNorm3d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ConvStemLayer(nn.Module):
    """One stride-2 3x3 convolution per frame, channel LayerNorm, GELU (an "early convolution" stem layer)."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.conv = nn.Conv3d(in_chans, out_chans, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.norm = ChannelNorm3d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x)))


class PatchEmbed3D(nn.Module):
    """VIOLET patch embedding: one frame padded at the end, Conv3d k=(2,4,4) s=(1,4,4), LayerNorm.

    ``stem_convs`` > 0 puts that many :class:`ConvStemLayer` (each halving the frame side) before the
    projection, whose spatial kernel and stride shrink to keep the total stride ``patch_size``: convolutions
    before patchifying make a Swin trained from scratch learn local shape much faster (Xiao et al.,
    "Early Convolutions Help Transformers See Better", 2021). 0 (the default) is the reference layout.
    """

    def __init__(
        self, embed_dim: int, patch_size: Triple = (2, 4, 4), in_chans: int = 3, stem_convs: int = 0
    ):
        super().__init__()
        self.patch_size = patch_size
        scale = 2**stem_convs
        if stem_convs < 0 or patch_size[1] % scale or patch_size[2] % scale:
            raise ValueError(f"stem_convs={stem_convs}: patch size {patch_size} is not divisible by {scale}")
        widths = [in_chans] + [max(8, embed_dim // 2 ** (stem_convs - i)) for i in range(stem_convs)]
        self.stem = nn.Sequential(*(ConvStemLayer(a, b) for a, b in zip(widths, widths[1:])))
        kernel = (patch_size[0], patch_size[1] // scale, patch_size[2] // scale)
        self.proj = nn.Conv3d(widths[-1], embed_dim, kernel_size=kernel, stride=(1, *kernel[1:]))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, T, H/4, W/4, C)."""
        x = self.stem(x)
        x = F.pad(x, (0, 0, 0, 0, 0, self.patch_size[0] - 1))
        x = self.proj(x).permute(0, 2, 3, 4, 1)
        return self.norm(x)


class PatchMerging(nn.Module):
    """2x2 spatial merge: concat the four neighbours (Swin order), LayerNorm, Linear 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"PatchMerging needs an even feature map, got {h}x{w}")
        # channel order of the concat: (h0,w0), (h1,w0), (h0,w1), (h1,w1) as in the Swin papers' code
        x = (
            x.view(b, d, h // 2, 2, w // 2, 2, c)
            .permute(0, 1, 2, 4, 5, 3, 6)
            .reshape(b, d, h // 2, w // 2, 4 * c)
        )
        return self.reduction(self.norm(x))


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside 3D windows with a learned relative-position bias."""

    def __init__(
        self, dim: int, num_heads: int, window_size: Triple, qkv_bias: bool = True, attn_impl: str = "sdpa"
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_impl = attn_impl
        wd, wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size, window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._bias_cache: dict[tuple, tuple[int, torch.Tensor]] = {}

    def _index(self, window: Triple) -> torch.Tensor:
        if window == self.window_size:
            return self.relative_position_index
        return clipped_position_index(window, self.window_size, self.relative_position_index.device)

    def attention_bias(
        self, window: Triple, dtype: torch.dtype, mask: torch.Tensor | None = None, mask_key: tuple = ()
    ) -> torch.Tensor:
        """Relative-position bias (heads, N, N), or (nW, heads, N, N) with the additive ``mask`` folded in.

        Recomputed whenever the bias table needs a gradient; otherwise cached (per window, ``mask_key`` naming
        the mask, and dtype) until the table changes in place.
        """
        table = self.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:
            self._bias_cache.clear()
            return self._bias(window, dtype, mask)
        key = (window, mask_key if mask is not None else None, table.device, dtype)
        version, bias = self._bias_cache.get(key, (-1, None))
        if bias is None or version != table._version:
            if len(self._bias_cache) > 8:  # several input sizes: keep the cache bounded
                self._bias_cache.clear()
            with no_inference_mode():
                bias = self._bias(window, dtype, mask)
            self._bias_cache[key] = (table._version, bias)
        return bias

    def _bias(self, window: Triple, dtype: torch.dtype, mask: torch.Tensor | None) -> torch.Tensor:
        n = math.prod(window)
        bias = self.relative_position_bias_table[self._index(window).reshape(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).to(dtype)
        return (bias if mask is None else bias.unsqueeze(0) + mask.unsqueeze(1)).contiguous()

    def forward(self, x: torch.Tensor, size: Triple, window: Triple, shift: Triple) -> torch.Tensor:
        """x: (B, nW, N, C) tokens of the windows of a (padded, rolled) map of unpadded ``size``."""
        b, nw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(b, nw, n, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, nW, heads, N, hd)
        mask = window_attention_mask(size, window, shift, x.device, q.dtype)
        # PyTorch's fused CPU kernels return no gradient for attn_mask: with a trainable bias SDPA falls back
        # to its math kernel, measured as fast as the explicit path in fp32 and ~2x slower in bf16, so CPU
        # training takes the explicit path.
        bias_grad = torch.is_grad_enabled() and self.relative_position_bias_table.requires_grad
        if self.attn_impl == "sdpa" and not (bias_grad and q.device.type == "cpu"):
            out = windowed_sdpa(q, k, v, self.attention_bias(window, q.dtype, mask, (size, shift)))
        else:
            out = explicit_attention(q, k, v, self.attention_bias(window, q.dtype), mask)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias + mask) v with the scores materialised (the reference's formulation).

    q, k, v: (B, nW, heads, N, hd); bias (heads, N, N); mask (nW, N, N) or None. The additions are done in
    place on the fresh score tensor, so bias and mask are never expanded to the score's size.
    """
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    scores = scores.add_(bias)
    if mask is not None:
        scores = scores.add_(mask.unsqueeze(1))
    return torch.matmul(scores.softmax(dim=-1), v)


def windowed_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SDPA over (B, nW, heads, N, hd) with a (heads, N, N) or (nW, heads, N, N) bias.

    The fused kernels take 4-D inputs only, so the window axis is folded into the batch (shared bias) or into
    the head axis (per-window bias); either way the bias broadcasts over the batch without being copied.
    """
    b, nw, heads, n, hd = q.shape
    if bias.ndim == 3:
        q, k, v = (t.reshape(b * nw, heads, n, hd) for t in (q, k, v))
        mask = bias.unsqueeze(0)
    else:
        q, k, v = (t.reshape(b, nw * heads, n, hd) for t in (q, k, v))
        mask = bias.reshape(1, nw * heads, n, n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).view(b, nw, heads, n, hd)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock3D(nn.Module):
    """Pre-norm block: (shifted) window attention + MLP, each with a residual and drop-path."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Triple,
        shifted: bool,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        attn_impl: str = "sdpa",
        shift_time: bool = True,
    ):
        super().__init__()
        self.window_size = window_size
        shift = tuple(w // 2 for w in window_size) if shifted else (0, 0, 0)
        self.shift_size: Triple = (shift[0] if shift_time else 0, shift[1], shift[2])
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_heads, window_size, attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[-1]
        size: Triple = tuple(x.shape[1:4])  # type: ignore[assignment]
        window, shift = clip_window(size, self.window_size, self.shift_size)
        padded = _padded(size, window)
        pad = [p - s for p, s in zip(padded, size)]
        if any(pad):
            x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        order, inverse = window_order(padded, window, shift, x.device)
        windows = gather_tokens(x.reshape(b, -1, c), order, inverse).view(b, -1, math.prod(window), c)
        x = self.attn(windows, size, window, shift)
        x = gather_tokens(x.view(b, -1, c), inverse, order).view(b, *padded, c)
        if any(pad):
            x = x[:, : size[0], : size[1], : size[2]].contiguous()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W, C) -> same shape."""
        x = x + drop_path(self._attend(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class SwinStage(nn.Module):
    """``depth`` blocks alternating regular / shifted windows (``shift_time=False``: shifted in space only),
    then an optional PatchMerging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Triple,
        drop_paths: Sequence[float],
        downsample: bool,
        mlp_ratio: float = 4.0,
        attn_impl: str = "sdpa",
        shift_time: bool = True,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock3D(
                dim, num_heads, window_size, i % 2 == 1, mlp_ratio, drop_paths[i], attn_impl, shift_time
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        for block in self.blocks:
            if use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinTransformer3D(nn.Module):
    """Video Swin backbone: (B, 3, T, H, W) -> (B, T, H/32, W/32, embed_dim * 2**(stages-1)).

    ``temporal_windows`` (one per stage) turns on HTWA and ``local_window`` its local tap (module docstring).
    """

    keeps_own_init = True  # the fusion model's BERT init leaves the Swin's own init alone

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: Sequence[int] = (8, 7, 7),
        patch_size: Sequence[int] = (2, 4, 4),
        stem_convs: int = 0,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        use_checkpoint: bool = False,
        attn_impl: str = "sdpa",
        temporal_windows: Sequence[int] | None = None,
        local_window: int | None = None,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length"
            )
        self.window_size: Triple = tuple(window_size)  # type: ignore[assignment]
        self.stage_windows, self.local_stage = htwa_layout(
            self.window_size, len(depths), temporal_windows, local_window
        )
        self.patch_size: Triple = tuple(patch_size)  # type: ignore[assignment]
        self.use_checkpoint = use_checkpoint
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.stride = self.patch_size[1] * 2 ** (len(depths) - 1)
        self.patch_embed = PatchEmbed3D(embed_dim, self.patch_size, stem_convs=stem_convs)
        rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    embed_dim * 2**i,
                    depth,
                    heads,
                    self.stage_windows[i],
                    rates[start : start + depth],
                    downsample=i < len(depths) - 1,
                    mlp_ratio=mlp_ratio,
                    attn_impl=attn_impl,
                    shift_time=temporal_windows is None,
                )
            )
        self.norm = nn.LayerNorm(self.num_features)
        # the tap's channels: stage s takes embed_dim * 2**s (past the last stage: its output, the same)
        self.local_features = (
            None if self.local_stage is None else embed_dim * 2 ** min(self.local_stage, len(depths) - 1)
        )
        self.norm_local = nn.LayerNorm(self.local_features) if self.local_features else None
        self.apply(init_swin_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The final map (B, T, H/32, W/32, C) and the local tap (B, T, h, w, local_features), or None
        without one. The tap is LF-VILA's "local" feature: computed by short temporal windows only."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip (B, 3, T, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(
                f"frame size {h}x{w} must be a multiple of {self.stride} (resize/crop the frames)"
            )
        x = self.patch_embed(x)
        local = None
        for i, layer in enumerate(self.layers):
            if i == self.local_stage:
                local = self.norm_local(x)  # type: ignore[misc]
            x = layer(x, self.use_checkpoint)
        if self.local_stage == len(self.layers):
            local = self.norm_local(x)  # type: ignore[misc]
        return self.norm(x), local


def htwa_layout(
    window: Triple, n_stages: int, temporal_windows: Sequence[int] | None, local_window: int | None
) -> tuple[list[Triple], int | None]:
    """Each stage's (D, H, W) window and the stage whose INPUT is the local tap (``n_stages``: the last
    stage's output; None: no tap). Without ``temporal_windows`` every stage has ``window`` (no tap)."""
    if temporal_windows is None:
        if local_window is not None:
            raise ValueError("local_window taps an HTWA Swin: give temporal_windows too")
        return [window] * n_stages, None
    temporal = [int(t) for t in temporal_windows]
    if len(temporal) != n_stages or min(temporal) < 1:
        raise ValueError(f"temporal_windows {temporal}: one positive window per stage ({n_stages} stages)")
    windows: list[Triple] = [(t, window[1], window[2]) for t in temporal]
    if local_window is None:
        return windows, None
    wider = [i for i, t in enumerate(temporal) if t > local_window]
    return windows, wider[0] if wider else n_stages


def init_swin_weights(module: nn.Module) -> None:
    """Upstream Swin init: trunc-normal(0.02) Linear weights and bias tables, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, WindowAttention3D):
        nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)
