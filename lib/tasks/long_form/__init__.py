"""Long-form video tasks (LF-VILA, issue #27): one task family, one registered module per task.

* ``paragraph-retrieval`` (:mod:`.paragraph_retrieval`): paragraph-to-video retrieval, LF-VILA's stage 1
  (global InfoNCE + MTC on the dual path) and the paragraph-level matching [MASK] of the one MLM head;
  ranked by the dual path and by the two-stage re-rank.
* ``long-qa`` (:mod:`.qa`): How2QA-style multiple choice over the whole video, subtitles beside the question.
* ``long-classification`` (:mod:`.classification`): COIN / LVU-style labels, the class name at the [MASK]s.

A long-form sample is ``long_clips`` consecutive clips of ``long_frames_per_clip`` frames; ``size_frame``
must be their product: it is what the model's frame slots and a checkpoint's inference clip are sized by,
so the API samples the same frames from a video file (spread over the whole video) as the evaluation does.
``long_stage`` picks LF-VILA's stage: 1 = the dual path, 2 = the MLM head with the stage-1 weights frozen
(:func:`lib.tasks.build.long_form_stage_frozen`), 0 = both at once. The dual path needs an HTWA Swin
(``vis_temporal_windows``), ``long_form_dim`` and ``contrastive_dim``.

Annotations are read as they are: ``txt_{task}.json``, else the folder ``{txt_dir or data_dir}/{task}``
(e.g. ActivityNet Captions' ``train.json`` / ``val_1.json`` / ``val_2.json``), else the file
``{txt_dir or data_dir}/{task}.json`` (e.g. COIN's ``COIN.json`` named after the task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.data.annotations import load_annotations
from lib.engine.config import Config, ConfigError
from lib.tasks.common import AnnotatedTask, Task, clip_settings, open_store, txt_path


def long_frames(cfg: Config, name: str) -> tuple[int, int]:
    """(clips, frames per clip) of a long-form sample; ``size_frame`` must be their product."""
    m, t = cfg.long_clips, cfg.long_frames_per_clip
    if cfg.size_frame != m * t:
        raise ConfigError(
            f"{name}: size_frame={cfg.size_frame}, but a long-form sample is long_clips x "
            f"long_frames_per_clip = {m} x {t} = {m * t} frames: set size_frame {m * t} (and "
            f"max_size_frame >= {m * t})"
        )
    return m, t


def annotation_source(cfg: Config) -> Path:
    """Where the task's annotations are (module docstring)."""
    lavender = txt_path(cfg, cfg.task)
    folder = Path(cfg.txt_dir or cfg.data_dir)
    candidates = [lavender, folder / cfg.task, folder / f"{cfg.task}.json"]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise FileNotFoundError(
            f"{cfg.task}: no annotations at {', '.join(map(str, candidates))} (txt_{cfg.task}.json, or a "
            "folder / file of the public release named after the task)"
        )
    return found


class LongFormTask(AnnotatedTask):
    """An annotated task whose clip is a long-form sample (``size_frame`` = clips x frames per clip) and
    whose annotations may be a public release's folder (:func:`annotation_source`)."""

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        self.n_clips, self.frames_per_clip = long_frames(cfg, name or cfg.task)
        Task.__init__(self, cfg, tokenizer, name)
        self.on_bad_item = cfg.on_bad_item
        self.store = open_store(cfg, cfg.dataset)
        self.ann = load_annotations(
            annotation_source(cfg),
            self.annotation_format,
            video_ids=self.store.ids(),
            on_error=self.on_bad_item,
            **self.annotation_options(),
        )

    @classmethod
    def long_settings(cls, cfg: Config) -> dict[str, Any]:
        """The part of a checkpoint entry every long-form predictor reads."""
        return {
            "name": cfg.task or cfg.type or cls.type_name,
            "size_txt": cfg.size_txt,
            "video": clip_settings(cfg),
            "n_clips": cfg.long_clips,
            "frames_per_clip": cfg.long_frames_per_clip,
            "stage": cfg.long_stage,
        }

    def trains_dual(self) -> bool:
        """Whether this stage trains the dual path (stage 1, or both at once)."""
        return self.cfg.long_stage in (0, 1)

    def trains_mlm(self) -> bool:
        """Whether this stage trains the MLM head on the fusion (stage 2, or both at once)."""
        return self.cfg.long_stage in (0, 2)


__all__ = ["LongFormTask", "annotation_source", "long_frames"]
