"""Video-text contrastive alignment alone (ALPRO's VTC, LF-VILA's stage 1, ALPRO's prompter): the
dual-encoder path of the one model as a task of its own.

Data: the retrieval format (``txt_{task}.json``, captions per split) and the frames of ``img_{dataset}.tsv``.
Training: symmetric InfoNCE between each clip and its caption, negatives from every rank's batch
(:func:`lib.model.contrastive.info_nce`); the model needs ``contrastive_dim`` > 0. In a multi-task run it is
one more stream, so one checkpoint serves dual-encoder retrieval, re-ranked retrieval and every MLM task.
Evaluation: retrieval by embeddings alone (``retrieval_mode`` dual) with the retrieval task's metrics.
Its checkpoint entry is retrieval's in dual mode, so ``Lavender.retrieve`` ranks by embeddings with it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from lib.data.annotations import caption_text
from lib.data.datasets import stack_clips
from lib.engine.config import Config, ConfigError
from lib.model import layouts
from lib.model.contrastive import info_nce
from lib.tasks.common import AnnotatedTask, Task, model_device, on_device
from lib.tasks.registry import get_task, register_task


@register_task("vtc", aliases=("contrastive",))
class ContrastiveTask(AnnotatedTask):
    annotation_format = "retrieval"
    serves = "retrieval"  # its checkpoint entry: retrieval by embeddings (dual)

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        if cfg.contrastive_dim <= 0:
            raise ConfigError("task vtc needs the contrastive head: set contrastive_dim (e.g. 256)")
        super().__init__(cfg, tokenizer, name)
        self._retrieval: Task | None = None

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        dual = cfg.override({"retrieval_mode": "dual"}) if cfg.retrieval_mode == "full" else cfg
        return get_task(cls.serving_name()).inference_entry(dual, None)

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        return get_task(cls.serving_name()).protocol(entry)

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        texts = [caption_text(item["record"], True, rng) for item in items]
        return {
            "video": stack_clips(items),
            "text": layouts.plain_text(self.tok, texts, self.cfg.size_txt),
            "ids": [item["id"] for item in items],
        }

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(on_device(batch["video"], model_device(model)))
        text = batch["text"].to(feat.device)
        video = model.video_embedding(feat, mask)
        return info_nce(
            video, model.text_embedding(text.ids, text.mask), model.vtc.temperature(), self.cfg.vtc_gather
        )

    def evaluate(self, model, split: str) -> dict[str, float]:
        """Retrieval by embeddings (the retrieval task's evaluation in ``dual`` mode, or the configured
        two-stage mode when this run also trains the matching head)."""
        if self._retrieval is None:
            mode = self.cfg.retrieval_mode if self.cfg.retrieval_mode != "full" else "dual"
            cfg = self.cfg.override({"retrieval_mode": mode})
            self._retrieval = get_task(self.serving_name())(cfg, self.tok, self.name)
        return self._retrieval.evaluate(model, split)
