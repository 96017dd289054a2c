"""The video encoder: Video Swin features -> per-frame [CLS] + patch tokens (LAVENDER's ``enc_img``)."""

from __future__ import annotations

import torch
from torch import nn

from lib.data.frames import normalize_frames, resize_frames
from lib.model.config import LavenderConfig
from lib.model.encoders import register_encoder
from lib.model.video_swin import SwinTransformer3D


@register_encoder("video", key_prefix="enc_img", type_embedding=False)
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
            temporal_windows=config.swin_temporal_windows,
            local_window=config.swin_local_window if config.swin_temporal_windows is not None else None,
        )
        self.fc = nn.Linear(config.swin_features, d) if config.swin_features != d else None
        self.emb_cls = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.emb_pos = nn.Parameter(torch.zeros(1, 1, 1 + config.max_size_patch**2, d))
        self.emb_len = nn.Parameter(torch.zeros(1, config.max_size_frame, 1, d))
        # VIOLET's frame-order embedding: kept (frozen) so checkpoints load; no LAVENDER task uses it.
        self.emb_odr = nn.Parameter(torch.zeros(1, 1, 1, d), requires_grad=False)
        self.norm = nn.LayerNorm(d)  # torch's default eps, as in the reference
        self.frame_size = config.frame_size

    def init_embeddings(self, std: float) -> None:
        """normal(0, std) cls / position / frame / order embeddings (called by the model's init)."""
        for p in (self.emb_cls, self.emb_pos, self.emb_len, self.emb_odr):
            p.normal_(std=std)

    def forward(
        self, img: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """img (B, T, 3, H, W) normalised (or uint8 RGB: resized to ``frame_size`` and normalised here) ->
        tokens (B, T*(1+h*w), D) and mask (B, T*(1+h*w)) bool."""
        tokens, mask, _ = self.encode_frames(img, frame_mask)
        return tokens, mask

    def encode_frames(
        self, img: torch.Tensor, frame_mask: torch.Tensor | None = None, local: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`forward`'s tokens and mask, and with ``local`` the HTWA Swin's local tap mean-pooled over
        each frame's patches, (B, T, swin.local_features): per-frame features of short temporal windows only,
        for clip-level features (:func:`lib.model.long_form.clip_pool`)."""
        if local and self.swin.local_stage is None:
            raise ValueError("local frame features need an HTWA Swin (swin_temporal_windows)")
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
        feat, local_map = self.swin.forward_features(img.transpose(1, 2))  # (B, T, h, w, C)
        local_frames = local_map.mean(dim=(2, 3)) if local and local_map is not None else None
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
        return tokens, mask, local_frames
