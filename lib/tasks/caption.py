"""Video captioning with the MLM head (reference §1.9).

Data: ``txt_{task}.json`` in the retrieval format (``[{"video", "caption"}]`` per split) and the frames in
``img_{dataset}.tsv``.

Training: ``[CLS] w… [SEP] [PAD]…`` (``size_txt``) with ``p_mask`` of the non-[PAD] tokens replaced by
``[MASK]`` (``[SEP]`` included, so the model learns where a caption ends;
:func:`lib.model.layouts.caption_train`), attention "seq2seq" (causal over the text, full view of the
video), cross-entropy at the masked positions only (the head runs on those rows alone). Captioning always
uses "seq2seq": decoding appends one ``[MASK]`` after the prefix, which only matches training when no
position sees the words after it (``attn_mask_type`` is not read).

Evaluation: one caption per distinct video of the split (greedy, or beam search with ``beam_size`` > 1;
:mod:`lib.tasks.decode`), scored against ALL captions of that video in the split with
:func:`lib.metrics.caption.coco_scores` (BLEU-1..4, METEOR, ROUGE-L, CIDEr with Java; the Java-free
fallback otherwise, or always with ``caption_eval_backend: python``). Videos are spread over the ranks,
each decoded on exactly one; rank 0 scores them and writes ``{path_output}/captions_{split}.json``
(``[{"video", "caption", "score"}]`` in the split's video order; ``score`` is the length-normalised
log-probability).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from lib.data.annotations import write_json_atomic
from lib.engine import distributed as D
from lib.metrics.caption import coco_scores
from lib.model import layouts
from lib.tasks.common import AnnotatedTask, clip_dataset, eval_batches, model_device
from lib.tasks.decode import caption_videos
from lib.tasks.pretrain import masked_token_loss, stack_clips_padded
from lib.tasks.retrieval import caption_text


class CaptionTask(AnnotatedTask):
    family = "captioning"
    kind = "caption"

    def __init__(self, cfg, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.beam_size = cfg.beam_size
        self.backend = cfg.caption_eval_backend
        self.val_backend = cfg.caption_val_backend or cfg.caption_eval_backend

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        texts = [caption_text(item["record"], True, rng) for item in items]
        return {
            "video": stack_clips_padded(items),
            "layout": layouts.caption_train(self.tok, texts, self.cfg.size_txt, self.cfg.p_mask),
            "ids": [item["id"] for item in items],
        }

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"].to(model_device(model)))
        return masked_token_loss(model, feat, mask, batch["layout"])

    # ---- evaluation

    def references(self, split: str) -> dict[str, list[str]]:
        """Every caption of each video of the split (the references of its one prediction)."""
        refs: dict[str, list[str]] = {}
        for record in self.ann[split]:
            refs.setdefault(record.video, []).append(record.text)
        return refs

    def predict(self, model, split: str) -> list[dict[str, Any]]:
        """``{"video", "caption", "score"}`` for every distinct video of the split, from all ranks."""
        dataset = clip_dataset(self.cfg, self.store, self.ann[split], train=False, videos_only=True)
        device = model_device(model)
        local = []
        for batch in eval_batches(dataset, self.cfg.size_batch, lambda b: b, self.cfg.n_workers):
            captions = caption_videos(
                model,
                self.tok,
                stack_clips_padded(batch).to(device),
                beam_size=self.beam_size,
                max_gen_length=self.cfg.max_gen_length,
                size_txt=self.cfg.size_txt,
            )
            local += [
                {"video": item["id"], "caption": c.text(self.tok), "score": c.score}
                for item, c in zip(batch, captions)
            ]
        return D.gather_eval(local)

    def evaluate(self, model, split: str) -> dict[str, float]:
        started = time.perf_counter()
        predictions = self.predict(model, split)
        decoded = time.perf_counter() - started
        scores = None
        if D.is_main():
            references = self.references(split)
            backend = self.backend if split == "test" else self.val_backend
            scores = coco_scores({p["video"]: p["caption"] for p in predictions}, references, backend)
            out = Path(self.cfg.path_output)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / f"captions_{split}.json", predictions, indent=1)
        scores = D.all_gather_object(scores)[0]
        n = len(predictions)
        return {**scores, "n_videos": float(n), "decode_s_per_video": decoded / max(1, n)}
