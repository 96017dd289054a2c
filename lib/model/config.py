"""The model's architecture as data: :class:`LavenderConfig`, saved as ``config.json`` beside the weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.utils.files import read_json

from .video_swin import ATTN_IMPLS, SWIN_SIZES, htwa_layout

INFERENCE_KEY = "inference"
"""The section of a checkpoint's config.json that is not architecture (task settings, ``lib.tasks``)."""

TASK_TOKEN_IDS: dict[str, int] = {"vtm": 0, "mc": 1, "oe": 2, "cap": 3}
"""Rows of ``emb_task`` used as a pre-text token per task family (reference ``task_tok2id``)."""

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
    # LF-VILA's hierarchical temporal window attention: a temporal window per Swin stage (e.g. (2, 4, 8, 16);
    # spatial shifts only), and the local tap's bound (the input of the first stage whose window exceeds it).
    # None: LAVENDER's Swin (swin_window in every stage).
    swin_temporal_windows: tuple[int, ...] | None = None
    swin_local_window: int = 8
    # Context modalities, in the order their tokens enter the fusion encoder (each a registered encoder,
    # lib.model.encoders); the text follows them.
    modalities: tuple[str, ...] = ("video",)
    # Options of a context modality's encoder, owned and checked by that encoder (e.g. {"audio": {"depth":
    # 12}}, lib.model.encoders.audio.AudioEncoderConfig); video keeps its LAVENDER fields below.
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    # Contrastive (dual-encoder) head: projections of the pooled video / text into a space of this size
    # (ALPRO: 256) and a learnable temperature; 0 builds none (LAVENDER's layout).
    contrastive_dim: int = 0
    contrastive_temp: float = 0.07
    # What the contrastive head projects for a text: its [CLS] state (ALPRO, BERT) or the mean of its token
    # states ("mean"; what sentence-transformer encoders such as all-MiniLM-L6-v2 were trained to give: their
    # [CLS] states are nearly the same for every text, cosine ~0.9999, and InfoNCE stays at ln(batch)).
    contrastive_text_pool: str = "cls"
    # Long-form head (lib.model.long_form): clip / sentence projections of this size for LF-VILA's temporal
    # contrastive loss (MTC; clip features from the HTWA local tap) and sentence-index embeddings for
    # hierarchical paragraphs of up to max_sentences sentences whose first sentence_layers text layers run
    # per sentence (0: half of the text layers); 0 builds none.
    long_form_dim: int = 0
    max_sentences: int = 8
    sentence_layers: int = 0
    # Learned sparse attention mask (SwinBERT, AVLFormer; lib.model.lavender.LearnedSparseMask): a learned
    # mask over the context-context block of the fusion attention, sized for this many context (video +
    # audio) tokens (0: none, LAVENDER's layout); sparse_mask_hard binarises it at 0.5.
    sparse_mask_tokens: int = 0
    sparse_mask_hard: bool = False
    # Pre-text task token (emb_task row added before the text when enabled).
    enable_task_token: bool = False
    num_task_tokens: int = 10
    # Compute.
    attn_impl: str = "sdpa"  # "sdpa" | "eager" (explicit softmax(QK^T), the reference's formulation)
    use_checkpoint: bool = False  # gradient checkpointing of every Swin block and fusion layer
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.sparse_mask_tokens < 0 or (self.sparse_mask_hard and not self.sparse_mask_tokens):
            raise ValueError(
                f"sparse_mask_tokens must be >= 0 (got {self.sparse_mask_tokens}); sparse_mask_hard needs "
                "a mask"
            )
        if self.contrastive_text_pool not in ("cls", "mean"):
            raise ValueError(f"contrastive_text_pool: 'cls' or 'mean', got {self.contrastive_text_pool!r}")
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
        self.modalities = tuple(str(m) for m in self.modalities)
        distinct = len(set(self.modalities)) == len(self.modalities)
        if not self.modalities or "text" in self.modalities or not distinct:
            raise ValueError(f"modalities: distinct context modalities, not text; got {self.modalities}")
        if not isinstance(self.encoder_options, dict) or not all(
            isinstance(v, dict) for v in self.encoder_options.values()
        ):
            raise ValueError(f"encoder_options: {{modality: {{option: value}}}}; got {self.encoder_options}")
        self.swin_depths = tuple(int(d) for d in self.swin_depths)
        self.swin_heads = tuple(int(h) for h in self.swin_heads)
        self.swin_window = tuple(int(w) for w in self.swin_window)  # type: ignore[assignment]
        self.swin_patch_size = tuple(int(p) for p in self.swin_patch_size)  # type: ignore[assignment]
        if self.swin_temporal_windows is not None:
            self.swin_temporal_windows = tuple(int(t) for t in self.swin_temporal_windows)
            n_stages = len(self.swin_depths)
            htwa_layout(self.swin_window, n_stages, self.swin_temporal_windows, self.swin_local_window)
        if self.long_form_dim and (self.swin_temporal_windows is None or self.max_sentences < 1):
            raise ValueError(
                "long_form_dim needs swin_temporal_windows (its clip features are the HTWA local tap) and "
                "max_sentences >= 1"
            )
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
        fields = read_json(path, "model config (config.json)")
        fields.pop(INFERENCE_KEY, None)  # a checkpoint folder's task settings (lib.api), not geometry
        return cls.from_dict(fields, source=str(path))
