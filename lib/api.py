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

**The checkpoint** (see :mod:`lib.tasks.model_io`) is a folder: ``config.json`` (the model config plus an
``"inference"`` section: frame extraction, clip sampling and transform, and per task kind the trained tasks'
text lengths, layouts, QA answer list, true/false scoring, decoding settings), ``model.safetensors``, the
tokenizer files and a ``README.md`` model card. Every training run writes one (``path_output/model``);
:meth:`Lavender.save_pretrained` writes one. A folder without the "inference" section (e.g. made by
``_tools/convert_checkpoint.py``) takes its settings from ``reference_args`` or its ``args.json``, and a
reference ``.pt`` file loads directly with ``reference_args`` (its args JSON) and ``tokenizer``.

**Tasks.** Each method runs the way its task was evaluated in training (``lib.tasks.*``): ``match`` /
``retrieve`` score "true" vs "false" at a [MASK] after the text (:func:`lib.model.layouts.vtm`);
``answer`` without options ranks the QA task's answer list by mean per-piece log-probability (or takes the
arg-max over the vocabulary when the checkpoint has no list); ``answer`` with options uses the
multiple-choice task's style ("sequence": the option digits at one [MASK]; "retrieval": the true/false
score of each "question option"); ``caption`` decodes greedily or with beam search (:mod:`lib.tasks.decode`).
With several trained tasks of a kind, ``task=NAME`` picks one (default: the first that fits the input). A
kind the checkpoint was not trained for still runs (one MLM head serves all) with default settings, with a
:class:`LavenderWarning` saying the outputs are zero-shot.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from lib.data.extract import extract_one
from lib.data.frames import ClipTransform, load_clip, sample_frame_indices
from lib.data.tsv import frame_columns
from lib.data.video import VideoDecodeError
from lib.engine.checkpointing import replace_dir
from lib.engine.config import Config
from lib.engine.trainer import autocast, resolve_precision
from lib.model import layouts
from lib.model.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    CheckpointError,
    config_from_reference_args,
    load_checkpoint,
)
from lib.model.lavender import LavenderConfig, LavenderModel
from lib.tasks.common import expand_video, load_tokenizer, true_false_pair_scores
from lib.tasks.decode import generate
from lib.tasks.model_io import (
    FORMAT_VERSION,
    INFERENCE_KEY,
    KIND_OF_FAMILY,
    args_config,
    inference_settings,
    task_entry,
    write_checkpoint,
)
from lib.tasks.qa_choice import sequence_option_scores
from lib.tasks.qa_open import TOP_K, masked_logits

VideoInput = Any
"""A path, a frame-TSV row, an RGB array (T, H, W, 3), a list of RGB arrays, or a :class:`Video`."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
FAMILY_OF_KIND = {kind: family for family, kind in reversed(KIND_OF_FAMILY.items())}
_T = TypeVar("_T")


class LavenderWarning(UserWarning):
    """Something the caller should know about the outputs (e.g. a task the checkpoint was not trained for)."""


@dataclass(frozen=True, eq=False)
class Video:
    """One video's stored frames: base64 JPEG columns (a frame-TSV row) or RGB uint8 arrays, and its name."""

    name: str
    jpegs: tuple[bytes | str, ...] = ()
    frames: tuple[np.ndarray, ...] = ()

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


# ------------------------------------------------------------------------------------------ loading


def read_settings(path: Path, reference_args: dict | None) -> tuple[dict[str, Any], str]:
    """The inference settings of a checkpoint folder and where they came from."""
    if reference_args is not None:
        return inference_settings(args_config(reference_args, "reference_args")), "reference_args"
    config = json.loads((path / MODEL_CONFIG).read_text())
    if INFERENCE_KEY in config:
        settings = config[INFERENCE_KEY]
        if int(settings.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path / MODEL_CONFIG}: inference format {settings['format_version']} is newer than this "
                f"code's ({FORMAT_VERSION}); update the code"
            )
        return settings, f"{path / MODEL_CONFIG}"
    args = path / "args.json"
    if args.is_file():
        return inference_settings(args_config(json.loads(args.read_text()), str(args))), str(args)
    return inference_settings(Config()), "defaults"


def load_weights(path: Path, reference_args: dict | None) -> LavenderModel:
    """The model of a checkpoint folder (strict: every key must fit) or of a reference ``.pt`` file."""
    if path.is_dir():
        config_path = path / MODEL_CONFIG
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{path} is not a checkpoint folder: it has no {MODEL_CONFIG} (expected a folder written by "
                "save_pretrained or a training run's model/ folder)"
            )
        fields = json.loads(config_path.read_text())
        fields.pop(INFERENCE_KEY, None)
        model = LavenderModel(LavenderConfig.from_dict(fields, source=str(config_path)))
        report = load_checkpoint(model, path / MODEL_WEIGHTS, strict=True)
    else:
        if reference_args is None:
            raise ValueError(
                f"{path} is a checkpoint file: pass reference_args (its reference args JSON, which fixes the "
                "model size), or convert it once with _tools/convert_checkpoint.py"
            )
        model = LavenderModel(config_from_reference_args(reference_args))
        size_img, size_frame = reference_args.get("size_img"), reference_args.get("size_frame")
        report = load_checkpoint(
            model,
            path,
            strict=True,
            trained_grid=int(size_img) // 32 if size_img else None,
            trained_frames=int(size_frame) if size_frame else None,
        )
    if report.initialised and path.is_dir():
        raise CheckpointError(f"{path}: incomplete model weights:\n{report}")
    return model


def find_tokenizer(path: Path, tokenizer: Any, reference_args: dict | None):
    """The tokenizer: given (object or folder), the checkpoint folder's files, or the run's txt_backbone."""
    if tokenizer is not None:
        return load_tokenizer(str(tokenizer)) if isinstance(tokenizer, str | os.PathLike) else tokenizer
    if path.is_dir() and any((path / f).is_file() for f in TOKENIZER_FILES):
        from transformers import BertTokenizerFast

        return BertTokenizerFast.from_pretrained(str(path))
    backbone = (reference_args or {}).get("txt_backbone")
    args = path / "args.json"
    if backbone is None and path.is_dir() and args.is_file():
        backbone = json.loads(args.read_text()).get("txt_backbone")
    try:
        if backbone:
            return load_tokenizer(backbone)
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); {e}") from None
    raise FileNotFoundError(
        f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); pass tokenizer= (a local BERT folder "
        "with vocab.txt) or copy the tokenizer files into the checkpoint folder"
    )


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
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)
        self._answer_spaces: dict[tuple[str, ...], dict[int, tuple[list[int], torch.Tensor]]] = {}
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
            ref = json.loads(ref_path.read_text())
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
        """The trained tasks of each kind (``match``, ``qa_open``, ``qa_choice``, ``caption``)."""
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
            return Video(name or os.fspath(video), jpegs=tuple(done.columns))
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

    def _encode(
        self, videos: Sequence[VideoInput], entry: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Video tokens (N, Nv, D) and mask of every video, ``batch_size`` clips per pass."""
        spec = {**self.settings["video"], **entry.get("video", {})}
        transform = _eval_transform(int(spec["size_img"]), spec["transform"])
        feats, masks = [], []
        for chunk in _batched(videos, self.batch_size):
            clips = [self.read_video(v).clip(int(spec["size_frame"]), transform) for v in chunk]
            feat, mask = self.model.encode_video(torch.stack(clips).to(self.device))
            feats.append(feat)
            masks.append(mask)
        return torch.cat(feats), torch.cat(masks)

    # ---- task settings

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, LavenderWarning, stacklevel=4)

    def _entry(self, kind: str, task: str | None = None, fits: Callable[[dict], bool] | None = None) -> dict:
        """The settings of the trained task of ``kind`` to use: by name, else the first that ``fits``, else
        the first; with none trained, zero-shot defaults (and a warning)."""
        entries = self.settings["tasks"].get(kind, [])
        if task is not None:
            named = [e for e in entries if e["name"] == task]
            if not named:
                raise ValueError(
                    f"no {kind} task named {task!r} in this checkpoint; it has {self.tasks[kind]}"
                )
            return named[0]
        if entries:
            return next((e for e in entries if fits is None or fits(e)), entries[0])
        self._warn(
            kind, f"this checkpoint was not trained for {kind} (it has {self.tasks}): zero-shot outputs"
        )
        return self._zero_shot_entry(kind)

    def _zero_shot_entry(self, kind: str) -> dict[str, Any]:
        """Default settings of ``kind`` (matching-based multiple choice when the checkpoint can match)."""
        if kind in self._zero_shot:
            return self._zero_shot[kind]
        video = self.settings["video"]
        others = [e for entries in self.settings["tasks"].values() for e in entries]
        values: dict[str, Any] = {
            "type": FAMILY_OF_KIND[kind],
            "size_frame": video["size_frame"],
            "size_img": video["size_img"],
            "img_transform": [video["transform"]],
        }
        if others:
            values["size_txt"] = others[0]["size_txt"]
        if kind == "qa_choice" and self.settings["tasks"].get("match"):
            values.update(mc_style="retrieval", size_txt=self.settings["tasks"]["match"][0]["size_txt"])
        found = task_entry(Config(values, source=f"zero-shot {kind}"))
        assert found is not None
        self._zero_shot[kind] = {**found[1], "name": None}
        return self._zero_shot[kind]

    def _answer_space(self, entry: dict) -> dict[int, tuple[list[int], torch.Tensor]]:
        """The QA answer list grouped by wordpiece count (as :class:`lib.tasks.qa_open.OpenQATask`)."""
        key = tuple(entry["answers"])
        if key not in self._answer_spaces:
            self._answer_spaces[key] = layouts.answer_candidates(self.tok, list(key)).by_length()
        return self._answer_spaces[key]

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
        entry = self._entry("caption", task)
        out: list[Any] = []
        for chunk in _batched(items, self.batch_size):
            feat, mask = self._encode(chunk, entry)
            captions = generate(
                self.model,
                self.tok,
                feat,
                mask,
                beam_size=beam_size or entry["beam_size"],
                max_gen_length=max_gen_length or entry["max_gen_length"],
                size_txt=entry["size_txt"],
                length_penalty=entry.get("length_penalty", 1.0),
            )
            texts = [c.text(self.tok) for c in captions]
            out += (
                [{"caption": t, "score": c.score} for t, c in zip(texts, captions)] if with_scores else texts
            )
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
        rows = [(i if len(items) > 1 else 0, _at(qs, i)) for i in range(n)]
        if options is None:
            results = self._open_answers(items, rows, task, top_k)
            out = [r if with_scores else r["answer"] for r in results]
        else:
            if isinstance(options, str) or len(options) == 0:
                raise ValueError("options: give a list of option strings (or one list per question)")
            shared = all(isinstance(o, str) for o in options)
            opts = [list(options)] if shared else [list(o) for o in options]
            _broadcast(opts, rows)
            results = self._choice_answers(items, rows, [_at(opts, i) for i in range(n)], task)
            out = [r if with_scores else r["answer"] for r in results]
        return out[0] if one_video and one_question else out

    def _grouped(
        self,
        items: list,
        rows: list[tuple[int, str]],
        pick: Callable[[int], tuple[dict, str]],
        run: Callable[[dict, str, torch.Tensor, torch.Tensor, list[int]], list[dict]],
    ) -> list[dict]:
        """Rows grouped by (settings, layout); each group's videos encoded once; ``run`` on row batches."""
        groups: dict[tuple[int, str], tuple[dict, list[int]]] = {}
        for r in range(len(rows)):
            entry, style = pick(r)
            groups.setdefault((id(entry), style), (entry, []))[1].append(r)
        results: list[dict | None] = [None] * len(rows)
        for (_, style), (entry, members) in groups.items():
            videos = sorted({rows[r][0] for r in members})
            column = {v: i for i, v in enumerate(videos)}
            feats, masks = self._encode([items[v] for v in videos], entry)
            for chunk in _batched(members, self.batch_size):
                index = torch.tensor([column[rows[r][0]] for r in chunk], device=feats.device)
                for r, result in zip(
                    chunk, run(entry, style, *expand_video(feats, masks, index), list(chunk))
                ):
                    results[r] = result
        return results  # type: ignore[return-value]

    def _open_answers(
        self, items: list, rows: list[tuple[int, str]], task: str | None, top_k: int
    ) -> list[dict]:
        def pick(r: int) -> tuple[dict, str]:
            blank = "[MASK]" in rows[r][1]
            entry = self._entry("qa_open", task, lambda e: (e["layout"] == "fill_blank") == blank)
            layout = entry["layout"] if entry["layout"] != "auto" else ("fill_blank" if blank else "open")
            if layout == "fill_blank" and rows[r][1].count("[MASK]") != 1:
                raise ValueError(
                    f"question {rows[r][1]!r}: the QA task {entry['name']} is fill-in-the-blank; the "
                    "question needs exactly one [MASK] blank"
                )
            return entry, layout

        def run(
            entry: dict, layout: str, feat: torch.Tensor, mask: torch.Tensor, chunk: list[int]
        ) -> list[dict]:
            questions = [rows[r][1] for r in chunk]
            build = layouts.fill_blank if layout == "fill_blank" else layouts.open_qa

            def log_probs(k: int) -> torch.Tensor:
                return masked_logits(
                    self.model, feat, mask, build(self.tok, questions, entry["size_txt"], n_masks=k)
                ).log_softmax(-1)

            if not entry["answers"]:
                self._warn(
                    "vocab", f"QA task {entry['name']} has no answer list: arg-max over the vocabulary"
                )
                top = log_probs(1)[:, 0].topk(top_k, dim=-1)
                names = [self.tok.convert_ids_to_tokens(row) for row in top.indices.tolist()]
            else:
                scores = torch.full((len(chunk), len(entry["answers"])), float("-inf"))
                for k, (index, pieces) in self._answer_space(entry).items():
                    lp = log_probs(k)
                    scores[:, index] = layouts.score_candidates(lp, pieces.to(lp.device)).cpu()
                top = scores.topk(min(top_k, scores.shape[1]), dim=-1)
                names = [[entry["answers"][j] for j in row] for row in top.indices.tolist()]
            return [
                {"answer": ns[0], "top": list(zip(ns, map(float, vs)))}
                for ns, vs in zip(names, top.values.tolist())
            ]

        return self._grouped(items, rows, pick, run)

    def _choice_answers(
        self, items: list, rows: list[tuple[int, str]], options: list[list[str]], task: str | None
    ) -> list[dict]:
        def pick(r: int) -> tuple[dict, str]:
            wanted = "sequence" if rows[r][1].strip() else "retrieval"
            entry = self._entry("qa_choice", task, lambda e: e["style"] in (wanted, "auto"))
            style = wanted if entry["style"] == "auto" else entry["style"]
            return entry, f"{style}/{len(options[r])}"

        def run(
            entry: dict, key: str, feat: torch.Tensor, mask: torch.Tensor, chunk: list[int]
        ) -> list[dict]:
            style, n = key.split("/")[0], len(options[chunk[0]])
            questions, opts = [rows[r][1] for r in chunk], [options[r] for r in chunk]
            ratio = entry.get("tf_score") == "ratio"
            if style == "sequence":
                scores = sequence_option_scores(
                    lambda layout: masked_logits(self.model, feat, mask, layout)[:, 0],
                    self.tok,
                    questions,
                    opts,
                    entry["size_txt"],
                    min(entry.get("shifts", 1), n),
                    ratio,
                )
                best = scores.argmax(-1)
            else:
                layout = layouts.retrieval_mc(self.tok, questions, opts, entry["size_txt"])
                feat, mask = expand_video(
                    feat, mask, torch.arange(len(chunk), device=feat.device).repeat_interleave(n)
                )
                logits = masked_logits(self.model, feat, mask, layout)[:, 0]
                ranker = layouts.true_false_ranker(entry.get("tf_score", "prob"))
                rank = ranker(logits, self.true_id, self.false_id).view(-1, n)
                scores = rank if ratio else torch.sigmoid(rank)  # shown as p("true")
                best = rank.argmax(-1)
            return [
                {"answer": o[b], "index": b, "scores": s}
                for o, b, s in zip(opts, best.tolist(), scores.cpu().tolist())
            ]

        return self._grouped(items, rows, pick, run)

    # ---- matching and retrieval

    def _pair_scores(
        self,
        texts: list[str],
        feats: torch.Tensor,
        masks: torch.Tensor,
        text_of: torch.Tensor,
        video_of: torch.Tensor,
        entry: dict,
        probability: bool = False,
    ) -> torch.Tensor:
        """The true/false ranking score of each (text_of[i], video_of[i]) pair, ``pair_batch`` fusion rows
        at a time (as :meth:`lib.tasks.retrieval.RetrievalTask.score_pairs`); p("true") if ``probability``."""
        tf_score = entry.get("tf_score", "prob")
        score = (
            layouts.true_false_prob
            if probability and tf_score == "prob"
            else layouts.true_false_ranker(tf_score)
        )
        layout = layouts.vtm(self.tok, texts, entry["size_txt"])
        return true_false_pair_scores(
            self.model,
            layout,
            feats,
            masks,
            text_of,
            video_of,
            score,
            self.true_id,
            self.false_id,
            int(entry.get("pair_batch", 256)),
        )

    @_inference
    def match(self, videos: VideoInput, texts: str | Sequence[str], *, task: str | None = None) -> Any:
        """The true/false score of each (video, text) pair (one of each, or lists; a single one is repeated):
        p("true") by default (the checkpoint's ``tf_score``)."""
        one_video, items = _as_list(videos, is_single_video)
        one_text, ts = _as_list(texts, lambda t: isinstance(t, str))
        n = _broadcast(items, ts)
        entry = self._entry("match", task)
        feats, masks = self._encode(items, entry)
        video_of = torch.arange(n) if len(items) > 1 else torch.zeros(n, dtype=torch.long)
        text_of = torch.arange(n) if len(ts) > 1 else torch.zeros(n, dtype=torch.long)
        scores = self._pair_scores(ts, feats, masks, text_of, video_of, entry, probability=True).tolist()
        return scores[0] if one_video and one_text else scores

    @_inference
    def scores(self, texts: Sequence[str], videos: VideoInput, *, task: str | None = None) -> np.ndarray:
        """(len(texts), len(videos)) true/false ranking scores of every text against every video (the log-odds
        of "true" by default: the order of p("true"), without ties where it rounds to 1.0)."""
        _, ts = _as_list(texts, lambda t: isinstance(t, str))
        _, items = _as_list(videos, is_single_video)
        entry = self._entry("match", task)
        feats, masks = self._encode(items, entry)
        text_of = torch.arange(len(ts)).repeat_interleave(len(items))
        video_of = torch.arange(len(items)).repeat(len(ts))
        return self._pair_scores(ts, feats, masks, text_of, video_of, entry).view(len(ts), len(items)).numpy()

    def retrieve(
        self,
        texts: str | Sequence[str],
        videos: VideoInput,
        top_k: int | None = None,
        *,
        task: str | None = None,
    ) -> Any:
        """For each text, the videos ranked best first as ``(index into videos, score)``, the first ``top_k``
        (all by default). Ties keep the videos' order."""
        one_text = isinstance(texts, str)
        matrix = self.scores([texts] if one_text else texts, videos, task=task)
        ranked = [
            [(int(j), float(row[j])) for j in np.argsort(-row, kind="stable")[:top_k]] for row in matrix
        ]
        return ranked[0] if one_text else ranked


__all__ = ["Lavender", "LavenderWarning", "Video", "VideoInput", "is_single_video"]
