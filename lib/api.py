"""Use a trained checkpoint on your own videos: captions, answers, retrieval and matching from Python.

    from lib.api import Lavender

    model = Lavender.from_pretrained("_snapshot/demo/run/model")           # device="cuda" for a GPU
    model.caption("clip.mp4")                                             # "two red circles move left"
    model.answer("clip.mp4", "what color are the circles?")               # "red"
    model.answer("clip.mp4", "how do they move?", ["left", "up", "down"])  # "left"
    model.retrieve(["red circles", "a blue square"], ["a.mp4", "b.mp4"], top_k=1)  # [[(0, .93)], [(1, .88)]]
    model.match("clip.mp4", "two red circles move left")                  # 0.97

**A video** is a file path (decoded with exactly the frame extractor's rule and JPEG round trip,
:func:`lib.data.extract.extract_one`, so it gives what the same file gives through a frame TSV), a frame-TSV
row (its base64 JPEG columns, with or without the id column), an RGB uint8 array (T, H, W, 3) or a list of
RGB arrays (the stored frames: the clip's frames are sampled from them by the evaluation rule), or a
:class:`Video` from :meth:`Lavender.read_video`. Every method also takes a list of videos and then returns a
list; work is batched (``batch_size`` clips per pass), each video is encoded once per call, and everything
runs under ``torch.inference_mode`` on the device given to :meth:`Lavender.from_pretrained`.

**The checkpoint** (see :mod:`lib.tasks.checkpoint_folder`) is a folder: ``config.json`` (the model config
plus an ``"inference"`` section: frame extraction, clip sampling and transform, and per registered task the
trained tasks' text lengths, layouts, QA answer list, true/false scoring, decoding settings),
``model.safetensors``, the tokenizer files and a ``README.md`` model card. Every training run writes one
(``path_output/model``); :meth:`Lavender.save_pretrained` writes one. A folder without the "inference"
section (e.g. made by ``_tools/convert_checkpoint.py``) takes its settings from ``reference_args`` or its
``args.json``, and a reference ``.pt`` file loads directly with ``reference_args`` (its args JSON) and
``tokenizer``.

**Tasks.** This module only handles inputs; every score comes from the registered task's own predictor
(:class:`lib.tasks.common.Predictor`), the very code its evaluation runs: ``match`` / ``retrieve`` use
``retrieval``'s ("true" vs "false" at a [MASK] after the text), ``answer`` without options ``qaoe``'s (the
answer list ranked by mean per-piece log-probability, or the arg-max over the vocabulary when the checkpoint
has no list), ``answer`` with options ``qamc``'s (its style: the option digits at one [MASK], or the
true/false score of each "question option"), ``caption`` ``captioning``'s (greedy or beam search), and
:meth:`Lavender.predict` any registered task's. With several trained entries of a task, ``task=NAME`` picks
one (default: the first that fits the input). A task the checkpoint was not trained for still runs (one MLM
head serves all) with default settings, with a :class:`LavenderWarning` saying the outputs are zero-shot.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from lib.data.audio import (
    AudioSettings,
    FbankConfig,
    decode_fbank,
    decode_waveform,
    extract_audio,
    fbank_slices,
    passt_frames,
    stack_audio,
)
from lib.data.extract import extract_one
from lib.data.frames import ClipTransform, load_clip, sample_frame_indices
from lib.data.tsv import frame_columns
from lib.data.video import VideoDecodeError
from lib.engine.checkpointing import replace_dir
from lib.engine.config import Config
from lib.engine.distributed import move_to_device
from lib.engine.precision import autocast, resolve_precision
from lib.model.lavender import LavenderModel
from lib.model.mlm import expand_video
from lib.tasks.checkpoint_folder import (
    args_config,
    find_tokenizer,
    inference_settings,
    load_weights,
    read_settings,
    write_checkpoint,
)
from lib.tasks.common import Predictor
from lib.tasks.qa_open import TOP_K
from lib.tasks.registry import canonical_name, get_task
from lib.utils.files import read_json

FAST_GALLERY = 64
"""Galleries larger than this are ranked two-stage by default when the model has a contrastive head."""
RETRIEVAL_MODES = ("full", "dual", "rerank")
VideoInput = Any
"""A path, a frame-TSV row, an RGB array (T, H, W, 3), a list of RGB arrays, or a :class:`Video`."""
_T = TypeVar("_T")


class LavenderWarning(UserWarning):
    """Something the caller should know about the outputs (e.g. a task the checkpoint was not trained for)."""


@dataclass(frozen=True, eq=False)
class Video:
    """One video's stored frames: base64 JPEG columns (a frame-TSV row) or RGB uint8 arrays, and its name."""

    name: str
    jpegs: tuple[bytes | str, ...] = ()
    frames: tuple[np.ndarray, ...] = ()
    fbank: np.ndarray | None = None  # its sound's filterbank (frames, n_mels); None: no audio (masked)

    def clip(self, size_frame: int, transform: ClipTransform) -> torch.Tensor:
        """(size_frame, 3, S, S): frames sampled by the evaluation rule, transformed (a one-frame video is
        repeated, as one-frame rows are in a video batch)."""
        if self.jpegs:
            try:
                clip = load_clip(self.jpegs, size_frame, transform, train=False)
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from None
        else:
            indices = sample_frame_indices(len(self.frames), size_frame, train=False)
            clip = transform([self.frames[i] for i in indices])
        return clip.expand(size_frame, -1, -1, -1) if clip.shape[0] == 1 else clip


# ------------------------------------------------------------------------------------------ input shapes


def _is_jpeg_column(x: Any) -> bool:
    return isinstance(x, bytes | str) and (x[:4] == b"/9j/" or x[:4] == "/9j/")


def is_single_video(x: Any) -> bool:
    """Whether ``x`` is ONE video (else a list of videos)."""
    if isinstance(x, Video | str | os.PathLike | np.ndarray | torch.Tensor):
        return True
    if isinstance(x, Sequence) and len(x) > 0:
        return all(isinstance(f, np.ndarray) and f.ndim == 3 for f in x) or any(map(_is_jpeg_column, x))
    return False


def _as_list(x: Any, single: Callable[[Any], bool]) -> tuple[bool, list]:
    """(was it one item, the items as a list)."""
    if single(x):
        return True, [x]
    if not isinstance(x, Sequence) or isinstance(x, str | bytes):
        raise TypeError(f"expected one input or a list of them, got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError("got an empty list")
    return False, list(x)


def _broadcast(*columns: list) -> int:
    """The common length of input lists, where a list of one is repeated (ValueError otherwise)."""
    n = max(len(c) for c in columns)
    if any(len(c) not in (1, n) for c in columns):
        raise ValueError(f"inputs of lengths {[len(c) for c in columns]}: give equal lengths, or one of each")
    return n


def _at(column: list[_T], i: int) -> _T:
    return column[0] if len(column) == 1 else column[i]


def _batched(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + max(1, size)]


@functools.lru_cache(maxsize=8)
def _eval_transform(size_img: int, mode: str) -> ClipTransform:
    return ClipTransform(size_img, train=False, mode=mode)


def _inference(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a public method under ``torch.inference_mode`` and the model's autocast precision."""

    @functools.wraps(method)
    def wrapper(self: Lavender, *args: Any, **kwargs: Any) -> _T:
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return method(self, *args, **kwargs)

    return wrapper


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------ the API


class Lavender:
    """A loaded checkpoint: ``caption``, ``answer``, ``retrieve``, ``match`` on videos (see the module)."""

    def __init__(
        self,
        model: LavenderModel,
        tokenizer,
        settings: dict[str, Any],
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        precision: str = "fp32",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tok = tokenizer
        self.settings = settings
        self.batch_size = max(1, batch_size)
        self.dtype = resolve_precision(precision, self.device)
        self._predictors: dict[int, Predictor] = {}
        self._warned: set[str] = set()
        self._zero_shot: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        precision: str = "fp32",
        tokenizer: Any = None,
        reference_args: str | os.PathLike | dict | None = None,
    ) -> Lavender:
        """Load a checkpoint folder (or a reference ``.pt`` with ``reference_args``).

        ``device``: default CUDA when available. ``precision``: "fp32", "bf16", "fp16" (CUDA) or "auto".
        ``tokenizer``: a tokenizer or a local BERT folder, for checkpoints without tokenizer files.
        ``reference_args``: a reference args JSON (path or dict) giving the model size and the task settings.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"checkpoint not found: {path} (a folder written by save_pretrained or by a training run, "
                "e.g. _snapshot/<run>/model, or a reference .pt file with reference_args)"
            )
        ref = reference_args
        if ref is not None and not isinstance(ref, dict):
            ref_path = Path(ref)
            if not ref_path.is_file():
                raise FileNotFoundError(f"reference_args file not found: {ref_path}")
            ref = read_json(ref_path, "reference args JSON")
        model = load_weights(path, ref)
        if path.is_dir():
            settings, source = read_settings(path, ref)
        else:
            settings, source = inference_settings(args_config(ref, "reference_args")), "reference_args"  # type: ignore[arg-type]
        api = cls(
            model,
            find_tokenizer(path, tokenizer, ref),
            settings,
            device or default_device(),
            batch_size,
            precision,
        )
        if source == "defaults":
            api._warn(
                "settings",
                f"{path} has no inference settings and no args.json: default frame / text settings are used "
                "(pass reference_args= to set them)",
            )
        return api

    def save_pretrained(
        self, directory: str | os.PathLike, metrics: dict[str, float] | None = None, metrics_label: str = ""
    ) -> Path:
        """Write a complete checkpoint folder (replacing one of that name atomically); ``metrics`` (e.g. a
        run's metrics.json) go into the model card."""
        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_checkpoint(self.model, tmp, self.tok, self.settings, metrics, metrics_label)
        replace_dir(tmp, directory)
        return directory

    @property
    def tasks(self) -> dict[str, list[str]]:
        """The trained entries of each registered task with a predictor (``retrieval``, ``qaoe``, ``qamc``,
        ``captioning``, …)."""
        return {kind: [e["name"] for e in entries] for kind, entries in self.settings["tasks"].items()}

    def __repr__(self) -> str:
        return f"Lavender(tasks={self.tasks}, device={self.device})"

    # ---- videos

    def read_video(self, video: VideoInput, name: str | None = None) -> Video:
        """One video's stored frames. A file goes through the frame extractor's own code (same frames, same
        JPEG bytes as its TSV row); a bad file raises :class:`VideoDecodeError` naming it."""
        if isinstance(video, Video):
            return video
        if isinstance(video, str | os.PathLike):
            spec = self.settings["video"]
            done = extract_one(
                os.fspath(video), spec["frames_per_video"], spec["size_short"], spec["jpeg_quality"]
            )
            if done.status != "ok":
                raise VideoDecodeError(video, done.reason)
            return Video(name or os.fspath(video), jpegs=tuple(done.columns), fbank=self._read_audio(video))
        if isinstance(video, torch.Tensor):
            video = video.cpu().numpy()
        if isinstance(video, np.ndarray):
            video = list(video) if video.ndim == 4 else [video]
        if not isinstance(video, Sequence) or len(video) == 0:
            raise TypeError(f"not a video: {type(video).__name__} (see lib.api for the accepted inputs)")
        if any(map(_is_jpeg_column, video)):
            jpegs = video if _is_jpeg_column(video[0]) else frame_columns(video)
            row_id = video[0] if len(jpegs) < len(video) else None
            label = row_id.decode() if isinstance(row_id, bytes) else row_id
            return Video(name or label or "<row>", jpegs=tuple(jpegs))
        for i, frame in enumerate(video):
            if not (
                isinstance(frame, np.ndarray)
                and frame.dtype == np.uint8
                and frame.ndim == 3
                and frame.shape[2] == 3
            ):
                raise ValueError(
                    f"frame {i}: expected an RGB uint8 array (H, W, 3), "
                    f"got {getattr(frame, 'shape', frame)!r:.80}"
                )
        return Video(name or "<frames>", frames=tuple(video))

    def _read_audio(self, path: str | os.PathLike) -> np.ndarray | None:
        """The filterbank of a file's sound as the training audio store holds it (decoded, downmixed and
        resampled once by the extractor's code), for a checkpoint that hears; None without an audio stream."""
        spec = self.settings.get("audio")
        if spec is None:
            return None
        if spec.get("front_end") == "passt":  # PaSST's log-mel of the waveform a flac store would hold
            meta, data = extract_audio(path, AudioSettings("flac", int(spec["rate"])))
            return None if data is None else passt_frames(decode_waveform(meta, data), self._fbank_config())
        meta, data = extract_audio(path, AudioSettings("fbank", int(spec["rate"]), int(spec["n_mels"])))
        return None if data is None else decode_fbank(meta, data)

    def _encode(
        self, videos: Sequence[VideoInput], entry: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens (N, Nv, D) and mask of every video (of the entry's modalities: its frames and, for
        a checkpoint that hears, its sound), ``batch_size`` clips per pass."""
        spec = {**self.settings["video"], **entry.get("video", {})}
        transform = _eval_transform(int(spec["size_img"]), spec["transform"])
        modalities = entry.get("modalities") or list(self.model.config.modalities)
        feats, masks = [], []
        for chunk in _batched(videos, self.batch_size):
            read = [self.read_video(v) for v in chunk]
            batch: dict[str, Any] = {}
            if "video" in modalities:
                batch["video"] = torch.stack([v.clip(int(spec["size_frame"]), transform) for v in read])
            if "audio" in modalities:
                config = self._fbank_config()
                batch["audio"], valid = stack_audio([fbank_slices(v.fbank, config) for v in read])
                batch["masks"] = {"audio": valid}
            only_video = list(batch) == ["video"]  # a frame tensor, exactly as a video-only model takes it
            feat, mask = self.model.encode_video(
                move_to_device(batch["video"] if only_video else batch, self.device)
            )
            feats.append(feat)
            masks.append(mask)
        return torch.cat(feats), torch.cat(masks)

    def _fbank_config(self) -> FbankConfig:
        spec = self.settings.get("audio")
        if spec is None:
            raise ValueError(
                "this checkpoint's model hears, but its settings hold no 'audio' features (config.json "
                "inference.audio): re-save it from its training run"
            )
        known = {f.name for f in dataclasses.fields(FbankConfig)}
        return FbankConfig(**{k: v for k, v in spec.items() if k in known})

    # ---- task settings and predictors

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, LavenderWarning, stacklevel=4)

    def _entry(self, name: str, task: str | None = None, inputs: dict | None = None) -> dict:
        """The settings of the trained entry of task ``name`` to use: the one called ``task``, else the first
        whose predictor fits ``inputs``, else the first; with none trained, zero-shot defaults (and a
        warning)."""
        entries = self.settings["tasks"].get(name, [])
        if task is not None:
            named = [e for e in entries if e["name"] == task]
            if not named:
                raise ValueError(
                    f"no {name} task named {task!r} in this checkpoint; it has {self.tasks[name]}"
                )
            return named[0]
        if entries:
            fits = get_task(name).predictor.fits
            return next((e for e in entries if inputs is None or fits(e, inputs)), entries[0])
        self._warn(
            name, f"this checkpoint was not trained for {name} (it has {self.tasks}): zero-shot outputs"
        )
        return self._zero_shot_entry(name)

    def _zero_shot_entry(self, name: str) -> dict[str, Any]:
        """Default settings of task ``name`` (matching-based multiple choice where the checkpoint matches)."""
        if name in self._zero_shot:
            return self._zero_shot[name]
        video = self.settings["video"]
        others = [e for entries in self.settings["tasks"].values() for e in entries]
        values: dict[str, Any] = {
            "type": name,
            "size_frame": video["size_frame"],
            "size_img": video["size_img"],
            "img_transform": [video["transform"]],
        }
        if others:
            values["size_txt"] = others[0]["size_txt"]
        if name == "qamc" and self.settings["tasks"].get("retrieval"):
            values.update(mc_style="retrieval", size_txt=self.settings["tasks"]["retrieval"][0]["size_txt"])
        entry = get_task(name).inference_entry(Config(values, source=f"zero-shot {name}"))
        if entry is None:
            raise ValueError(f"task {name!r} has no predictor: it cannot be run on videos")
        self._zero_shot[name] = {**entry, "name": None}
        return self._zero_shot[name]

    def _predictor(self, name: str, entry: dict) -> Predictor:
        """The task's predictor for these settings (built once per entry)."""
        key = id(entry)
        if key not in self._predictors:
            predictor_cls = get_task(name).predictor
            if predictor_cls is None:
                raise ValueError(f"task {name!r} has no predictor: it cannot be run on videos")
            self._predictors[key] = predictor_cls(self.model, self.tok, entry)
        return self._predictors[key]

    def _run(
        self,
        name: str,
        items: list,
        rows: list[tuple[int, dict[str, Any]]],
        task: str | None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Each row ``(video index into items, inputs)`` through the predictor of task ``name``: rows grouped
        by (entry, variant), each group's videos encoded once, ``batch_size`` rows per call."""
        name = canonical_name(name)
        predictor_cls = get_task(name).predictor
        groups: dict[tuple[int, str], tuple[dict, list[int]]] = {}
        for r, (_, inputs) in enumerate(rows):
            entry = self._entry(name, task, inputs)
            variant = predictor_cls.variant(entry, inputs) if predictor_cls is not None else ""
            groups.setdefault((id(entry), variant), (entry, []))[1].append(r)
        results: list[dict | None] = [None] * len(rows)
        for entry, members in groups.values():
            predictor = self._predictor(name, entry)
            videos = sorted({rows[r][0] for r in members})
            column = {v: i for i, v in enumerate(videos)}
            feats, masks = self._encode([items[v] for v in videos], entry)
            for chunk in _batched(members, self.batch_size):
                index = torch.tensor([column[rows[r][0]] for r in chunk], device=feats.device)
                feat, mask = expand_video(feats, masks, index)
                found = predictor.predict(feat, mask, [rows[r][1] for r in chunk], **options)
                for r, result in zip(chunk, found):
                    results[r] = result
        return results  # type: ignore[return-value]

    @_inference
    def predict(
        self,
        task: str,
        videos: VideoInput,
        inputs: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        *,
        entry: str | None = None,
        **options: Any,
    ) -> Any:
        """Any registered task's predictor on ``videos`` with text ``inputs`` (a dict of what the task's
        predictor reads, e.g. ``{"question": ...}``; one, or one per video; a single one is repeated):
        one output dict per video, or the dict for one video and one input. ``entry`` picks a trained entry
        by name; ``options`` go to the predictor (e.g. ``top_k``, ``beam_size``)."""
        one_video, items = _as_list(videos, is_single_video)
        one_input, rows_in = _as_list(inputs or {}, lambda x: isinstance(x, dict))
        n = _broadcast(items, rows_in)
        rows = [(i if len(items) > 1 else 0, _at(rows_in, i)) for i in range(n)]
        out = self._run(task, items, rows, entry, **options)
        return out[0] if one_video and one_input else out

    # ---- captioning

    @_inference
    def caption(
        self,
        videos: VideoInput,
        *,
        task: str | None = None,
        beam_size: int | None = None,
        max_gen_length: int | None = None,
        with_scores: bool = False,
    ) -> Any:
        """A caption per video (str), or ``{"caption", "score"}`` (mean log-probability per token)."""
        single, items = _as_list(videos, is_single_video)
        rows = [(i, {}) for i in range(len(items))]
        found = self._run("captioning", items, rows, task, beam_size=beam_size, max_gen_length=max_gen_length)
        out = found if with_scores else [r["caption"] for r in found]
        return out[0] if single else out

    # ---- question answering

    @_inference
    def answer(
        self,
        videos: VideoInput,
        questions: str | Sequence[str],
        options: Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        task: str | None = None,
        top_k: int = TOP_K,
        with_scores: bool = False,
    ) -> Any:
        """Answer ``questions`` about ``videos`` (one of each, or lists; a single one is repeated).

        Without ``options``: open-ended, the answer (str), or with ``with_scores`` ``{"answer", "top":
        [(answer, log-prob), ...]}``. With ``options`` (one list for every question, or one per question):
        the chosen option (str), or ``{"answer", "index", "scores"}`` (option probabilities in the
        "sequence" style, true/false scores in the "retrieval" style).
        """
        one_video, items = _as_list(videos, is_single_video)
        one_question, qs = _as_list(questions, lambda q: isinstance(q, str))
        n = _broadcast(items, qs)
        video_of = [i if len(items) > 1 else 0 for i in range(n)]
        if options is None:
            rows = [(video_of[i], {"question": _at(qs, i)}) for i in range(n)]
            entries = [self._entry("qaoe", task, inputs) for _, inputs in rows]
            for entry in entries:
                if not entry["answers"]:
                    self._warn(
                        "vocab", f"QA task {entry['name']} has no answer list: arg-max over the vocabulary"
                    )
            results = self._run("qaoe", items, rows, task, top_k=top_k)
        else:
            if isinstance(options, str) or len(options) == 0:
                raise ValueError("options: give a list of option strings (or one list per question)")
            shared = all(isinstance(o, str) for o in options)
            opts = [list(options)] if shared else [list(o) for o in options]
            _broadcast(opts, list(range(n)))
            rows = [(video_of[i], {"question": _at(qs, i), "options": _at(opts, i)}) for i in range(n)]
            results = self._run("qamc", items, rows, task)
        out = [r if with_scores else r["answer"] for r in results]
        return out[0] if one_video and one_question else out

    # ---- matching and retrieval

    @_inference
    def match(self, videos: VideoInput, texts: str | Sequence[str], *, task: str | None = None) -> Any:
        """The true/false score of each (video, text) pair (one of each, or lists; a single one is repeated):
        p("true") by default (the checkpoint's ``tf_score``)."""
        one_video, items = _as_list(videos, is_single_video)
        one_text, ts = _as_list(texts, lambda t: isinstance(t, str))
        n = _broadcast(items, ts)
        entry = self._entry("retrieval", task)
        feats, masks = self._encode(items, entry)
        video_of = torch.arange(n) if len(items) > 1 else torch.zeros(n, dtype=torch.long)
        text_of = torch.arange(n) if len(ts) > 1 else torch.zeros(n, dtype=torch.long)
        predictor = self._predictor("retrieval", entry)
        scores = predictor.pair_scores(ts, feats, masks, text_of, video_of, probability=True).tolist()
        return scores[0] if one_video and one_text else scores

    def retrieval_mode(self, n_videos: int, mode: str | None = None, task: str | None = None) -> str:
        """The ranking mode of ``retrieve``: ``mode`` when given; else "full" (every pair through the
        matching head) up to :data:`FAST_GALLERY` videos and, above, "rerank" (the contrastive embeddings'
        shortlist re-scored by the matching head) when the model has a contrastive head; "dual" when the
        checkpoint (or the entry ``task``) trained only the contrastive head."""
        if mode not in (None, "auto"):
            if mode not in RETRIEVAL_MODES:
                raise ValueError(f"mode {mode!r}; choose one of {RETRIEVAL_MODES} or auto")
            return mode
        entries = [self._entry("retrieval", task)] if task else self.settings["tasks"].get("retrieval", [])
        matching = not entries or any(e.get("retrieval_mode", "full") != "dual" for e in entries)
        if not matching:
            return "dual"
        return "rerank" if self.model.vtc is not None and n_videos > FAST_GALLERY else "full"

    @_inference
    def scores(
        self,
        texts: Sequence[str],
        videos: VideoInput,
        *,
        task: str | None = None,
        mode: str | None = None,
        rerank_k: int | None = None,
    ) -> np.ndarray:
        """(len(texts), len(videos)) scores that rank the videos for each text. ``mode`` "full": the
        true/false ranking score of every pair (the log-odds of "true" by default: the order of p("true"),
        without ties where it rounds to 1.0); "dual": contrastive similarities; "rerank": each text's top
        ``rerank_k`` videos by similarity re-scored by the matching head, above the rest; default: see
        :meth:`retrieval_mode`."""
        _, ts = _as_list(texts, lambda t: isinstance(t, str))
        _, items = _as_list(videos, is_single_video)
        entry = self._entry("retrieval", task)
        feats, masks = self._encode(items, entry)
        predictor = self._predictor("retrieval", entry)
        chosen = self.retrieval_mode(len(items), mode, task)
        return predictor.rank(ts, predictor.video_side(feats, masks), masks, chosen, rerank_k)[0]

    def retrieve(
        self,
        texts: str | Sequence[str],
        videos: VideoInput,
        top_k: int | None = None,
        *,
        task: str | None = None,
        mode: str | None = None,
        rerank_k: int | None = None,
    ) -> Any:
        """For each text, the videos ranked best first as ``(index into videos, score)``, the first ``top_k``
        (all by default). Ties keep the videos' order. ``mode``: see :meth:`scores`."""
        one_text = isinstance(texts, str)
        matrix = self.scores([texts] if one_text else texts, videos, task=task, mode=mode, rerank_k=rerank_k)
        ranked = [
            [(int(j), float(row[j])) for j in np.argsort(-row, kind="stable")[:top_k]] for row in matrix
        ]
        return ranked[0] if one_text else ranked


__all__ = ["Lavender", "LavenderWarning", "Video", "VideoInput", "is_single_video"]
