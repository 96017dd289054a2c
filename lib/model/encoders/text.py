"""The text encoder: BERT embeddings and optional text-only BERT layers (LAVENDER's ``enc_txt``)."""

from __future__ import annotations

import torch
from torch import nn

from lib.model.bert import BertEmbeddings, BertEncoder, text_self_mask
from lib.model.config import LavenderConfig
from lib.model.encoders import register_encoder


@register_encoder("text", key_prefix="enc_txt", role="text")
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

    def embed_at(self, ids: torch.Tensor, position_offset: int) -> torch.Tensor:
        """Embeddings of ``ids`` (B, q) at positions ``position_offset..``: the next tokens of a text whose
        earlier ones were embedded before (decoding with a cache); only without text-only layers."""
        if self.txt_trsfr is not None:
            raise ValueError("text-only layers see the whole text: embed it with forward() instead")
        return self.emb_txt(ids, position_offset=position_offset)
