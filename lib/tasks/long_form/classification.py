"""Long-video classification (COIN, LVU-style labels) as MLM: the class NAME at the [MASK]s.

Data: ``classification`` annotations (:mod:`lib.data.annotations`: ``{split: [{"video", "label"}]}``, or
COIN's ``COIN.json`` as it is, its CamelCase classes read as words); the clip is ``long_clips`` x
``long_frames_per_clip`` frames over the whole video. The classes are every label of the file (train
first, in order of appearance).

Layout: ``[CLS] long_class_prompt answer : [MASK]xk [SEP]`` (:func:`lib.model.layouts.open_qa`), k = the
class name's wordpieces. Training: cross-entropy at each piece, rows grouped by piece count (one fusion
pass per count). Evaluation: every class name scored by its mean per-piece log-probability (the ``qaoe``
task's predictor with the class list as its answers); accuracy and top-5 accuracy (%).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lib.data.datasets import stack_clips
from lib.engine.config import Config, ConfigError
from lib.model import layouts
from lib.model.mlm import answer_pieces_loss
from lib.tasks.common import Predictor, Task
from lib.tasks.long_form import LongFormTask
from lib.tasks.registry import get_task, register_task

TOP_K = 5


class LongClassPredictor(Predictor):
    """The class of a long video: the class names ranked at the [MASK]s after the prompt.

    Settings: ``size_txt``, ``prompt``, ``classes``."""

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        super().__init__(model, tokenizer, settings)
        if not self.settings.get("classes"):
            raise ValueError("long-classification settings carry no class names")
        answers = {**self.settings, "layout": "open", "answers": list(self.settings["classes"])}
        self.open = get_task("qaoe").predictor(model, tokenizer, answers)

    def ranked(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        top_k: int = TOP_K,
        video_index: torch.Tensor | None = None,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """The ``top_k`` classes of each video (``video_index``: the video of each row, default one row per
        video), best first, with their mean log-probability per piece."""
        n = feat.shape[0] if video_index is None else len(video_index)
        return self.open.ranked(feat, mask, [self.settings["prompt"]] * n, False, top_k, video_index)

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], top_k: int = TOP_K,
        **options: Any,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """``{"label", "top": [(class, score), ...]}`` of each video (inputs are unused: ``{}``)."""
        names, scores = self.ranked(feat, mask, top_k)
        return [{"label": n[0], "top": list(zip(n, s))} for n, s in zip(names, scores)]


@register_task("long-classification", aliases=("long_classification",))
class LongClassificationTask(LongFormTask):
    annotation_format = "classification"
    predictor = LongClassPredictor

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        labels = (
            r.label for split in ("train", "val", "test") if split in self.ann.splits for r in self.ann[split]
        )
        self.classes = list(dict.fromkeys(labels))
        if not self.classes:
            raise ConfigError(f"{self.name}: the annotations hold no labelled video")
        budget = (
            cfg.size_txt
            - 2
            - len(tokenizer(cfg.long_class_prompt + " answer :", add_special_tokens=False)["input_ids"])
        )
        longest = max(len(p) for p in tokenizer(self.classes, add_special_tokens=False)["input_ids"])
        if longest > budget:
            raise ConfigError(
                f"{self.name}: a class name has {longest} wordpieces but size_txt={cfg.size_txt} leaves "
                f"{budget} after the prompt; raise size_txt"
            )

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        return {
            **cls.long_settings(cfg),
            "prompt": cfg.long_class_prompt,
            "classes": list(getattr(task, "classes", [])),
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        return (
            f"long-video classification accuracy (%): each of the {len(entry.get('classes', []))} class "
            "names scored at the [MASK]s after the prompt by its mean per-piece log-probability "
            f"({entry.get('n_clips')} clips x {entry.get('frames_per_clip')} frames over the whole video)"
        )

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows grouped by their class name's piece count: ``groups`` = [(rows, layout with k masks)]."""
        labels = [item["record"].label for item in items]
        counts = [len(p) for p in self.tok(labels, add_special_tokens=False)["input_ids"]]
        rows_of: dict[int, list[int]] = {}
        for row, k in enumerate(counts):
            rows_of.setdefault(k, []).append(row)
        prompt = self.cfg.long_class_prompt
        groups = [
            (
                torch.tensor(rows),
                layouts.open_qa(
                    self.tok, [prompt] * len(rows), self.cfg.size_txt, [labels[i] for i in rows], k
                ),
            )
            for k, rows in sorted(rows_of.items())
        ]
        return {"video": stack_clips(items), "groups": groups, "ids": [item["id"] for item in items]}

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"])
        return answer_pieces_loss(model, feat, mask, batch["groups"])

    # ---- evaluation

    def predict_batch(self, model, feat, mask, records: list, rows: torch.Tensor | None = None) -> list:
        return self.make_predictor(model).ranked(feat, mask, TOP_K, rows)[0]

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        ranked = self.predict(model, split, self.predict_batch)
        n = max(1, len(records))
        return {
            "acc": 100.0 * sum(top[0] == r.label for top, r in zip(ranked, records)) / n,
            f"acc_top{TOP_K}": 100.0 * sum(r.label in top for top, r in zip(ranked, records)) / n,
            "n_items": float(len(records)),
            "n_classes": float(len(self.classes)),
        }
