"""Shared by the short training tests of the tasks: what to freeze so a few CPU steps stay cheap."""

from __future__ import annotations

from torch import nn


def freeze_for_speed(model, video_encoder: bool = True) -> list[nn.Parameter]:
    """Freeze the two vocabulary-sized matrices (text embeddings, the tied MLM decoder) and, with
    ``video_encoder``, the video encoder; return the parameters that still train."""
    frozen = [model.enc_txt, model.fc_mtm.predictions.decoder.weight]
    for part in [model.enc_img, *frozen] if video_encoder else frozen:
        part.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]
