"""ALPRO's prompting entity modelling (PEM) as masked-token prediction.

A frozen *prompter* (a dual-encoder checkpoint of this project trained with contrastive alignment alone, e.g.
the ``vtc`` task; ``pem_prompter``) scores a random region of each clip against a bank of entity prompts;
its softmax over entities is a soft pseudo-label. The model being trained pools its fused video tokens inside
that region and predicts the distribution with the ONE MLM head, read at the entities' word ids (soft
cross-entropy): no head of its own.

* Entities: a list file (``pem_entities``, one per line) or the ``pem_n_entities`` most frequent words of
  the training captions (stop-words and numbers left out: a stand-in for ALPRO's noun list, which needs a
  POS tagger and its data). Only entities that are ONE wordpiece are kept (the head predicts one token).
* Prompt bank: every entity in every template of :data:`TEMPLATES` ("A video of a {}.", …), embedded by the
  prompter's text tower and averaged per entity (built once, frozen).
* Regions: a rectangle of the token grid aligned to the visual tokens, 30–50 % of the area (``pem_region``),
  the same in every frame; the prompter sees that crop of the clip, resized to the clip's size.
* Confidence: rows whose pseudo-label's largest probability is below ``pem_threshold`` (0.2) are left out.
  ALPRO compared the arg-max *index* with 0.2 (so only index 0 was ever dropped); this is what it meant.

Evaluation: agreement of the model's region prediction with the prompter's arg-max, and the prompter's
confidence, on held-out clips.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lib.data.datasets import stack_clips
from lib.data.frames import resize_frames
from lib.engine import distributed as D
from lib.engine.config import Config, ConfigError
from lib.model import layouts
from lib.tasks.checkpoint_folder import load_weights
from lib.tasks.common import AnnotatedTask, clip_dataset, eval_batches, model_device
from lib.tasks.registry import register_task

TEMPLATES = (
    "A video of a {}.",
    "A footage of a {}.",
    "A clip of a {}.",
    "A video of the {}.",
    "A video showing a {}.",
    "A {} in the video.",
)
STOP_WORDS = frozenset((
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "with", "from", "by", "for", "is", "are",
    "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "there", "their", "they",
    "he", "she", "his", "her", "him", "them", "who", "what", "which", "while", "as", "into", "out", "up",
    "down", "left", "right", "one", "two", "three", "some", "other", "another", "over", "under", "then",
    "than",
))  # fmt: skip


def caption_entities(captions: Sequence[str], n: int) -> list[str]:
    """The ``n`` most frequent words of ``captions`` (lower-cased letters; stop-words and numbers dropped)."""
    words = Counter(w for c in captions for w in re.findall(r"[a-z]+", c.lower()) if w not in STOP_WORDS)
    return [w for w, _ in words.most_common(n)]


def sample_region(h: int, w: int, area: Sequence[float], rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a rectangle of an h x w token grid covering a fraction of the grid in
    ``area`` (closest achievable when the grid is small), placed uniformly."""
    shapes = [(a, b) for a in range(1, h + 1) for b in range(1, w + 1)]
    low, high = area
    fitting = [s for s in shapes if low <= s[0] * s[1] / (h * w) <= high]
    if not fitting:  # a coarse grid: the sizes nearest to the range's middle
        middle = (low + high) / 2
        best = min(abs(a * b / (h * w) - middle) for a, b in shapes)
        fitting = [s for s in shapes if abs(s[0] * s[1] / (h * w) - middle) == best]
    rh, rw = rng.choice(fitting)
    return rng.randrange(h - rh + 1), rng.randrange(w - rw + 1), rh, rw


@register_task("pem", aliases=("entity_prompts",))
class EntityPromptTask(AnnotatedTask):
    annotation_format = "retrieval"

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        if not cfg.pem_prompter:
            raise ConfigError("task pem needs pem_prompter: a checkpoint folder of a contrastive (vtc) model")
        if cfg.pem_entities:
            entities = [e.strip() for e in Path(cfg.pem_entities).read_text().splitlines() if e.strip()]
        else:
            captions = [r.text for r in self.ann["train"]] if "train" in self.ann.splits else []
            entities = caption_entities(captions, cfg.pem_n_entities)
        pieces = tokenizer(entities, add_special_tokens=False)["input_ids"] if entities else []
        self.entities = [e for e, p in zip(entities, pieces) if len(p) == 1]
        if len(self.entities) < 2:
            raise ConfigError(
                f"{self.name}: pem needs at least 2 one-wordpiece entities, got {self.entities}"
            )
        self.entity_ids = torch.tensor([p[0] for e, p in zip(entities, pieces) if len(p) == 1])
        self._prompter: Any = None
        self._bank: torch.Tensor | None = None

    # ---- the frozen prompter and its prompt bank

    def prompter(self, device: torch.device):
        """The prompter model (frozen, in eval mode) and its prompt bank (E, d), loaded once."""
        if self._prompter is None:
            prompter = load_weights(Path(self.cfg.pem_prompter), None).to(device).eval()
            prompter.requires_grad_(False)
            if prompter.vtc is None:
                raise ConfigError(
                    f"pem_prompter {self.cfg.pem_prompter}: no contrastive head (contrastive_dim)"
                )
            texts = [t.format(e) for e in self.entities for t in TEMPLATES]
            layout = layouts.plain_text(self.tok, texts, self.cfg.size_txt)
            with torch.no_grad():
                emb = prompter.text_embedding(layout.ids.to(device), layout.mask.to(device))
            bank = emb.view(len(self.entities), len(TEMPLATES), -1).mean(1)
            self._prompter, self._bank = prompter, torch.nn.functional.normalize(bank, dim=-1)
        return self._prompter, self._bank

    def pseudo_labels(self, clips: torch.Tensor, regions: list[tuple[int, int, int, int]], grid: int):
        """(B, E) the prompter's softmax over entities for each clip's region (cropped, resized back)."""
        prompter, bank = self.prompter(clips.device)
        b, t, _, height, width = clips.shape
        crops = []
        for clip, (top, left, rh, rw) in zip(clips, regions):
            y0, y1 = top * height // grid, (top + rh) * height // grid
            x0, x1 = left * width // grid, (left + rw) * width // grid
            crop = resize_frames(clip[None, :, :, y0:y1, x0:x1], height)[0]
            crops.append(crop.round().clamp(0, 255).to(torch.uint8) if clips.dtype == torch.uint8 else crop)
        with torch.no_grad():
            feat, mask = prompter.encode_video(torch.stack(crops))
            video = prompter.video_embedding(feat, mask)
            return (video @ bank.T / prompter.vtc.temperature()).float().softmax(-1)

    # ---- the model's region prediction

    def region_logits(self, model, feat: torch.Tensor, mask: torch.Tensor, regions, n_frames: int):
        """(B, E) logits of the MLM head at the mean of each clip's fused video tokens inside its region."""
        context = model.fusion_context(feat, mask, "vtm")
        per_frame = feat.shape[1] // n_frames
        grid = int(round((per_frame - 1) ** 0.5))
        pooled = []
        for i, (top, left, rh, rw) in enumerate(regions):
            cells = [1 + (top + r) * grid + left + c for r in range(rh) for c in range(rw)]
            index = torch.tensor([f * per_frame + cell for f in range(n_frames) for cell in cells])
            pooled.append(context.states[i, index.to(feat.device)].mean(0))
        return model.mlm_logits(torch.stack(pooled))[:, self.entity_ids.to(feat.device)].float()

    def grid_of(self, model, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        feat, mask = model.encode_video(clips)
        per_frame = feat.shape[1] // clips.shape[1]
        return feat, mask, int(round((per_frame - 1) ** 0.5))

    # ---- training and evaluation

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"video": stack_clips(items), "seed": random.getrandbits(64), "ids": [i["id"] for i in items]}

    def step(self, model, batch: dict[str, Any]) -> dict:
        clips = batch["video"].to(model_device(model))
        feat, mask, grid = self.grid_of(model, clips)
        rng = random.Random(batch["seed"])
        regions = [sample_region(grid, grid, self.cfg.pem_region, rng) for _ in range(len(clips))]
        target = self.pseudo_labels(clips, regions, grid)
        confident = target.max(-1).values >= self.cfg.pem_threshold
        logits = self.region_logits(model, feat, mask, regions, clips.shape[1])
        loss_rows = -(target * logits.log_softmax(-1)).sum(-1)
        loss = (loss_rows * confident).sum() / confident.sum().clamp(min=1)
        agree = (logits.argmax(-1) == target.argmax(-1)).float().mean()
        entropy = -(target * target.clamp(min=1e-12).log()).sum(-1)  # the soft CE's floor: KL = CE - H
        kl = ((loss_rows.detach() - entropy) * confident).sum() / confident.sum().clamp(min=1)
        return {"loss": loss, "kl": kl, "acc": agree.detach(), "confident": confident.float().mean()}

    def evaluate(self, model, split: str) -> dict[str, float]:
        dataset = clip_dataset(self.cfg, self.store, self.ann[split], train=False, videos_only=True)
        agree, confidence, n = 0.0, 0.0, 0
        rng = random.Random(self.cfg.seed)
        for batch in eval_batches(dataset, self.cfg.size_batch, lambda b: b, 0):
            clips = stack_clips(batch).to(model_device(model))
            feat, mask, grid = self.grid_of(model, clips)
            regions = [sample_region(grid, grid, self.cfg.pem_region, rng) for _ in range(len(clips))]
            target = self.pseudo_labels(clips, regions, grid)
            logits = self.region_logits(model, feat, mask, regions, clips.shape[1])
            agree += float((logits.argmax(-1) == target.argmax(-1)).sum())
            confidence += float(target.max(-1).values.sum())
            n += len(clips)
        agree, confidence, n = (sum(x) for x in zip(*D.all_gather_object((agree, confidence, n))))
        return {
            "agreement": 100.0 * agree / max(1, n),
            "prompter_confidence": confidence / max(1, n),
            "n": float(n),
        }
