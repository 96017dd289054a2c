"""The audio encoder: an AST-style ViT over filterbank slices (VALOR's audio branch), registered as ``audio``.

Input: ``(B, S, n_mels, frames)`` slices of a normalised filterbank (:func:`lib.data.audio.valor_slices`:
S slices of 64 mel bins x 512 frames) and their validity ``(B, S)``. Each slice is cut into non-overlapping
16 x 16 patches (a 4 x 32 grid for 64 x 512: AST used stride 10, VALOR 16), gets a [CLS] token and AST's
position embeddings and runs through pre-norm ViT blocks; its 1 + 4 x 32 = 129 tokens are projected to
the fusion width, get a learned slice-position embedding and a LayerNorm, and enter the ONE fusion encoder
after the video tokens, with the modality-type embedding ``emb_type.audio`` the model adds. Invalid slices
(a clip without audio: VALOR fed an all-zero spectrogram instead) are not computed at all: their tokens are
zeros and masked, so no garbage in them can reach any output.

Its options live in ``LavenderConfig.encoder_options["audio"]`` (:class:`AudioEncoderConfig`), so adding
the modality touches no other field of the model config::

    LavenderConfig(modalities=("video", "audio"), encoder_options={"audio": {"depth": 12}})

Parameters sit under ``enc_aud.ast.*`` with the public AST checkpoint's names (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so
:func:`load_ast_weights` reads ``audioset_10_10_0.4593.pth`` (``module.v.*``) as VALOR did: the
distillation token dropped, the 12 x 101 position grid resized bilinearly to this encoder's grid, the
classifier (``mlp_head``) left out.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lib.model.config import LavenderConfig
from lib.model.encoders import register_encoder

AST_AUDIOSET_GRID = (12, 101)  # AST's patch grid for 128 mel x 1024 frames at stride 10
AST_CLASSIFIER_PREFIXES = ("mlp_head.", "v.head.", "v.head_dist.")


@dataclass(frozen=True)
class AudioEncoderConfig:
    """The audio encoder's geometry (``LavenderConfig.encoder_options["audio"]``); defaults: AST-base as
    VALOR uses it (768 wide, 12 layers, 12 heads, 64 mel x 512 frames, 16 x 16 patches)."""

    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch: int = 16
    n_mels: int = 64
    slice_frames: int = 512
    max_slices: int = 8  # slice-position embeddings (VALOR sampled 1-8 slices per clip)
    layer_norm_eps: float = 1e-6  # AST's (VALOR ran these LayerNorms at 1e-12)
    tokens: str = "all"  # "all": every slice token enters the fusion; "cls": one [CLS] per slice

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"audio width {self.width} is not divisible by its {self.heads} heads")
        if self.n_mels % self.patch or self.slice_frames % self.patch:
            raise ValueError(
                f"audio slices of {self.n_mels} x {self.slice_frames} are not whole "
                f"{self.patch} x {self.patch} patches"
            )
        if self.tokens not in ("all", "cls"):
            raise ValueError(f"audio tokens must be 'all' or 'cls', got {self.tokens!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per slice along (mel, time)."""
        return self.n_mels // self.patch, self.slice_frames // self.patch

    @property
    def tokens_per_slice(self) -> int:
        return 1 if self.tokens == "cls" else 1 + self.grid[0] * self.grid[1]

    @classmethod
    def of(cls, config: LavenderConfig) -> AudioEncoderConfig:
        options = dict(config.encoder_options.get("audio", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"encoder_options['audio']: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**options)


# ---------------------------------------------------------------------------------------------- AST


class PatchEmbed(nn.Module):
    def __init__(self, c: AudioEncoderConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, c.width, kernel_size=c.patch, stride=c.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_mels, frames) -> (N, grid_f * grid_t, width), mel-major like AST."""
        return self.proj(x[:, None]).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, c: AudioEncoderConfig):
        super().__init__()
        self.heads = c.heads
        self.qkv = nn.Linear(c.width, 3 * c.width)
        self.proj = nn.Linear(c.width, c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, width))


class Mlp(nn.Module):
    def __init__(self, c: AudioEncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(c.width, int(c.width * c.mlp_ratio))
        self.fc2 = nn.Linear(int(c.width * c.mlp_ratio), c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block (timm / AST names)."""

    def __init__(self, c: AudioEncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.attn = Attention(c)
        self.norm2 = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.mlp = Mlp(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AST(nn.Module):
    """The ViT of the Audio Spectrogram Transformer without its distillation token and classifier."""

    keeps_own_init = True  # ViT init (truncated normal), not the fusion model's BERT init

    def __init__(self, c: AudioEncoderConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.grid[0] * c.grid[1], c.width))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.use_checkpoint = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, n_mels, frames) -> (N, 1 + patches, width)."""
        x = self.patch_embed(slices)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1).to(x.dtype), x], dim=1) + self.pos_embed
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)


# ---------------------------------------------------------------------------------------------- encoder


@register_encoder("audio", key_prefix="enc_aud", type_embedding=True)
class AudioEncoder(nn.Module):
    """Filterbank slices -> AST tokens per slice -> fusion width, slice positions, LayerNorm."""

    def __init__(self, config: LavenderConfig):
        super().__init__()
        self.options = c = AudioEncoderConfig.of(config)
        self.ast = AST(c)
        self.ast.use_checkpoint = config.use_checkpoint
        d = config.hidden_size
        self.proj = nn.Linear(c.width, d)
        self.emb_slice = nn.Parameter(torch.zeros(1, c.max_slices, 1, d))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def init_embeddings(self, std: float) -> None:
        """normal(0, std) slice-position embeddings (called by the model's init)."""
        self.emb_slice.normal_(std=std)

    def forward(
        self, audio: torch.Tensor, slice_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, S, n_mels, frames), slice_mask (B, S) True = a real slice -> tokens (B, S * n, D) and
        their validity (B, S * n), n = tokens per slice. Invalid slices are skipped: zero tokens, masked."""
        c = self.options
        if audio.ndim != 4 or tuple(audio.shape[2:]) != (c.n_mels, c.slice_frames):
            raise ValueError(
                f"expected audio (B, S, {c.n_mels}, {c.slice_frames}) filterbank slices, "
                f"got {tuple(audio.shape)}"
            )
        b, s = audio.shape[:2]
        if s > c.max_slices:
            raise ValueError(f"{s} audio slices exceed max_slices={c.max_slices} (encoder_options['audio'])")
        valid = (
            torch.ones(b, s, dtype=torch.bool, device=audio.device)
            if slice_mask is None
            else slice_mask.to(audio.device).bool()
        )
        n, d = c.tokens_per_slice, self.proj.out_features
        flat = valid.view(-1)
        if flat.any():
            x = self.ast(audio.reshape(b * s, c.n_mels, c.slice_frames)[flat].to(self.proj.weight.dtype))
            x = self.proj(x[:, :1] if c.tokens == "cls" else x)  # (valid slices, n, D)
            position = self.emb_slice[0, :s, 0].repeat(b, 1)[flat]  # each valid slice's position
            x = self.norm(x + position[:, None].to(x.dtype))
            tokens = x.new_zeros(b * s, n, d)
            tokens[flat] = x
        else:  # no audio in the whole batch
            device = audio.device.type
            autocast = torch.is_autocast_enabled(device)
            dtype = torch.get_autocast_dtype(device) if autocast else self.proj.weight.dtype
            tokens = audio.new_zeros(b * s, n, d, dtype=dtype)
        return tokens.view(b, s * n, d), valid.repeat_interleave(n, dim=1)


# ---------------------------------------------------------------------------------------------- weights


def ast_state_dict(
    source: dict[str, torch.Tensor], encoder: AudioEncoder, source_grid: tuple[int, int] = AST_AUDIOSET_GRID
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AST's ``v.*`` tensors (``module.`` already stripped) as ``encoder.ast``'s state dict, and a report:
    the dropped distillation token, the classifier keys left out, the resized position grid."""
    report: dict[str, Any] = {"dropped": [], "left_out": [], "resized": {}}
    out: dict[str, torch.Tensor] = {}
    grid = encoder.options.grid
    for key, value in source.items():
        if key.startswith(AST_CLASSIFIER_PREFIXES):
            report["left_out"].append(key)
        elif key == "v.dist_token":
            report["dropped"].append(key)
        elif key == "v.pos_embed":
            patches = value.shape[1] - 2  # [CLS], [DIST], then the grid
            if patches != source_grid[0] * source_grid[1]:
                raise ValueError(
                    f"v.pos_embed holds {patches} patch positions, not the {source_grid} grid; "
                    "pass source_grid"
                )
            table = value[:, 2:].reshape(1, *source_grid, -1).permute(0, 3, 1, 2)
            if tuple(grid) != tuple(source_grid):
                table = F.interpolate(table.float(), size=grid, mode="bilinear").to(value.dtype)
                report["resized"][key] = f"{source_grid[0]}x{source_grid[1]} -> {grid[0]}x{grid[1]}"
            out["pos_embed"] = torch.cat([value[:, :1], table.flatten(2).transpose(1, 2)], dim=1)
        elif key.startswith("v."):
            out[key[2:]] = value
        else:
            out[key] = value  # not AST's: load_state_dict reports it as unexpected
    return out, report


def load_ast_weights(
    target: nn.Module, source: str | os.PathLike | dict[str, torch.Tensor], source_grid=AST_AUDIOSET_GRID
) -> dict[str, Any]:
    """Load the public AST checkpoint (a file read with ``torch.load(weights_only=True)`` or safetensors, or
    its tensors) into ``target``'s audio encoder (an :class:`AudioEncoder` or a model that has one); return
    the report with ``missing`` and ``unexpected`` keys (both empty for the AST layout)."""
    from lib.model.checkpoint import read_state_dict, strip_module_prefix

    encoder = target if isinstance(target, AudioEncoder) else target.encoder("audio")  # type: ignore[operator]
    tensors = strip_module_prefix(dict(source)) if isinstance(source, dict) else read_state_dict(source)
    state, report = ast_state_dict(tensors, encoder, source_grid)
    result = encoder.ast.load_state_dict(state, strict=False)
    report["missing"], report["unexpected"] = list(result.missing_keys), list(result.unexpected_keys)
    return report


__all__ = ["AST_AUDIOSET_GRID", "AudioEncoder", "AudioEncoderConfig", "ast_state_dict", "load_ast_weights"]
