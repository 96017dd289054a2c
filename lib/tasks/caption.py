"""Video captioning with the MLM head (reference §1.9).

Data: ``txt_{task}.json`` in the retrieval format (``[{"video", "caption"}]`` per split) and the frames in
``img_{dataset}.tsv``; or, when any of ``train_yaml`` / ``val_yaml`` / ``test_yaml`` is set, LAVENDER's own
captioning data as it is: SwinBERT's split YAMLs (e.g. ``MSRVTT-v2/train_32frames.yaml`` under
``data_dir``) naming a frame TSV, a caption TSV, a linelist of training pairs and COCO-format references
(:mod:`lib.data.swinbert`). Training items are the linelist's (video, caption) pairs; evaluation scores each
video of a split against its references. A caption whose video has no frame row is an error naming the
files, or skipped and counted with ``on_bad_item: skip``.

Training: ``[CLS] w… [SEP] [PAD]…`` (``size_txt``) with ``p_mask`` of the non-[PAD] tokens replaced by
``[MASK]`` (``[SEP]`` included, so the model learns where a caption ends;
:func:`lib.model.layouts.caption_train`), attention "seq2seq" (causal over the text, full view of the
video), cross-entropy at the masked positions only (the head runs on those rows alone). Captioning always
uses "seq2seq": decoding appends one ``[MASK]`` after the prefix, which only matches training when no
position sees the words after it (``attn_mask_type`` is not read). ``caption_loss`` lm trains next-token
prediction at every caption position instead (:func:`lib.model.layouts.caption_lm`, read at the last word
when decoding), and lm+mlm AVLFormer's mix ``caption_lm_weight * LM + (1 - caption_lm_weight) * MLM``
(:func:`lib.model.mlm.lm_mlm_loss`; decoding as for mlm). A model with a learned sparse mask
(``sparse_mask``) adds its L1 loss times ``sparse_mask_weight`` (logged as ``sparse_loss``).

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lib.data.annotations import (
    AnnotationError,
    AnnotationFile,
    CaptionItem,
    RecordList,
    caption_text,
    write_json_atomic,
)
from lib.data.datasets import VideoStore, stack_clips_padded
from lib.data.swinbert import evaluation_references, read_split, resolve_yaml, training_pairs
from lib.engine import distributed as D
from lib.engine.config import Config
from lib.metrics.caption import coco_scores
from lib.model import layouts
from lib.model.mlm import lm_mlm_loss, masked_token_loss
from lib.tasks.common import (
    AnnotatedTask,
    Predictor,
    Task,
    clip_dataset,
    eval_batches,
    model_device,
    on_device,
    resolve_pretrained_dir,
)
from lib.tasks.decode import Caption, generate
from lib.tasks.registry import register_task


class CaptionPredictor(Predictor):
    """Captions decoded with the MLM head (:mod:`lib.tasks.decode`): greedy, or beam search.

    Settings: ``size_txt``, ``beam_size``, ``max_gen_length``, ``length_penalty``, ``read`` (where the next
    word is read: "mask", or "last" for a model trained with the LM loss alone)."""

    def captions(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        beam_size: int | None = None,
        max_gen_length: int | None = None,
    ) -> list[Caption]:
        """One caption per video (``beam_size`` / ``max_gen_length`` override the settings)."""
        return generate(
            self.model,
            self.tok,
            feat,
            mask,
            beam_size=beam_size or int(self.settings["beam_size"]),
            max_gen_length=max_gen_length or int(self.settings["max_gen_length"]),
            size_txt=int(self.settings["size_txt"]),
            length_penalty=float(self.settings.get("length_penalty", 1.0)),
            read=str(self.settings.get("read", "mask")),
        )

    def predict(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        inputs: Sequence[Mapping[str, Any]],
        beam_size: int | None = None,
        max_gen_length: int | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """``{"caption", "score"}`` per video (score: mean log-probability per generated token)."""
        found = self.captions(feat, mask, beam_size, max_gen_length)
        return [{"caption": c.text(self.tok), "score": c.score} for c in found]


YAML_KEYS = ("train_yaml", "val_yaml", "test_yaml")


def swinbert_captions(cfg: Config) -> tuple[VideoStore, AnnotationFile]:
    """The frame store and the records per split of the config's SwinBERT split YAMLs (:data:`YAML_KEYS`)."""
    splits, records = {}, {}
    for key in YAML_KEYS:
        if cfg[key]:
            split = key.removesuffix("_yaml")
            splits[split] = read_split(resolve_yaml(cfg[key], cfg.data_dir))
            read = training_pairs if split == "train" else evaluation_references
            records[split] = read(splits[split])
    store = VideoStore(list(dict.fromkeys(s.img for s in splits.values())))
    stored, skipped = store.ids(), {}
    for split, items in records.items():
        missing = [r for r in items if r.video not in stored]
        if missing and cfg.on_bad_item == "raise":
            where = splits[split].caption or splits[split].yaml
            raise AnnotationError(
                where, f"video {missing[0].video!r} has no row in the frame TSV {splits[split].img} "
                f"({len(missing)} such captions; on_bad_item skip leaves them out)", split=split,
            )  # fmt: skip
        if missing:
            skipped[split] = len(missing)
            records[split] = [r for r in items if r.video in stored]
    first = next(iter(splits.values())).yaml
    packed = {split: RecordList(CaptionItem, items) for split, items in records.items()}
    return store, AnnotationFile(first, "caption", packed, skipped)


@register_task("captioning", aliases=("caption",))
class CaptionTask(AnnotatedTask):
    annotation_format = "retrieval"
    predictor = CaptionPredictor

    def __init__(self, cfg, tokenizer, name: str | None = None):
        if any(cfg[key] for key in YAML_KEYS):  # SwinBERT's layout, LAVENDER's captioning data
            Task.__init__(self, cfg, tokenizer, name)
            self.on_bad_item = cfg.on_bad_item
            self.store, self.ann = swinbert_captions(cfg)
        else:
            super().__init__(cfg, tokenizer, name)
        self.beam_size = cfg.beam_size
        self.backend = cfg.caption_eval_backend
        self.val_backend = cfg.caption_val_backend or cfg.caption_eval_backend

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        return {
            **(super().inference_entry(cfg, task) or {}),
            "max_gen_length": cfg.max_gen_length,
            "beam_size": cfg.beam_size,
            "length_penalty": 1.0,
            **({"read": "last"} if cfg.caption_loss == "lm" else {}),  # LM alone: no [MASK] to read
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        beam = int(entry.get("beam_size", 1))
        decoding = "greedy" if beam == 1 else f"beam search, {beam} beams"
        return (
            f"one caption per video ({decoding}, at most {entry.get('max_gen_length')} words), BLEU-1..4, "
            "METEOR, ROUGE-L and CIDEr against every reference caption of the video (pycocoevalcap, or its "
            "Java-free fallback)"
        )

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The clips and, per ``caption_loss``, the masked-token layout (``layout``) and / or the next-token
        layout (``lm_layout``) of one caption per clip."""
        rng = random.Random(random.getrandbits(64))
        texts = [caption_text(item["record"], True, rng) for item in items]
        batch = {"video": stack_clips_padded(items), "ids": [item["id"] for item in items]}
        if self.cfg.caption_loss != "lm":
            batch["layout"] = layouts.caption_train(self.tok, texts, self.cfg.size_txt, self.cfg.p_mask)
        if self.cfg.caption_loss != "mlm":
            batch["lm_layout"] = layouts.caption_lm(self.tok, texts, self.cfg.size_txt)
        return batch

    def step(self, model, batch: dict[str, Any]) -> dict:
        """The ``caption_loss`` (masked tokens, next tokens, or AVLFormer's mix), plus the learned sparse
        mask's L1 loss times ``sparse_mask_weight`` when the model has one (logged as ``sparse_loss``)."""
        feat, mask = model.encode_video(on_device(batch["video"], model_device(model)))
        if self.cfg.caption_loss == "mlm":
            out = masked_token_loss(model, feat, mask, batch["layout"])
        else:
            out = lm_mlm_loss(
                model, feat, mask, batch["lm_layout"], batch.get("layout"), self.cfg.caption_lm_weight
            )
        sparse = model.sparsity_loss()
        if sparse is not None:
            out = {
                **out,
                "loss": out["loss"] + self.cfg.sparse_mask_weight * sparse,
                "sparse_loss": sparse.detach(),
            }
        return out

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
        predictor = self.make_predictor(model)
        local = []
        for batch in eval_batches(dataset, self.cfg.size_batch, lambda b: b, self.cfg.n_workers):
            feat, mask = model.encode_video(on_device(stack_clips_padded(batch), device))
            found = predictor.predict(feat, mask, [{}] * len(batch))
            local += [{"video": item["id"], **c} for item, c in zip(batch, found)]
        return D.gather_eval(local)

    def entity_scores(self, captions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
        """FAVDBench's EntityScore (:mod:`lib.metrics.entity_score`; its deviations are named there)."""
        from lib.metrics.entity_score import EntityScorer, entity_score

        scorer = EntityScorer(resolve_pretrained_dir(self.cfg.caption_entity_score))
        found = entity_score(captions, references, scorer)
        return {"EntityScore": found["EntityScore"], "EntityScore_n_skipped": found["n_skipped"]}

    def evaluate(self, model, split: str) -> dict[str, float]:
        started = time.perf_counter()
        predictions = self.predict(model, split)
        decoded = time.perf_counter() - started
        scores = None
        if D.is_main():
            references = self.references(split)
            backend = self.backend if split == "test" else self.val_backend
            captions = {p["video"]: p["caption"] for p in predictions}
            scores = coco_scores(captions, references, backend)
            if self.cfg.caption_entity_score and split == "test":  # FAVDBench's paragraph metric
                scores.update(self.entity_scores(captions, references))
            out = Path(self.cfg.path_output)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / f"captions_{split}.json", predictions, indent=1)
        scores = D.all_gather_object(scores)[0]
        n = len(predictions)
        return {**scores, "n_videos": float(n), "decode_s_per_video": decoded / max(1, n)}
