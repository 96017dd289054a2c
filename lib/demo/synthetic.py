"""Synthetic but real demo data: small H.264 videos of moving shapes, annotated in the reference formats.

A video shows a group of one or two identical objects (shape, color, size) moving together left, right,
up or down, or standing still, over a mildly textured dark background; 1-4 s at 10 fps, 64x64 pixels by
default. The five attributes are read off the pixels, so a model that learns shows it on every task: a
canonical caption ("two large red circles move left") names the attribute combination, and the val/test
videos get distinct combinations (sampled without replacement), so each of their captions fits exactly one
video of its split. Objects are 15-23 px wide and travel 30-45 % of the frame, so that a small Video Swin
trained from scratch learns shape and motion within the demo's CPU budget.
Train videos cycle through all combinations, rendered with new positions, speeds, lengths and backgrounds.

Everything is a deterministic function of the seed: scene attributes and geometry come from numpy
Generators seeded by ``(seed, stream, index)``, so a split's videos do not change when another split grows.
:func:`make_demo_dataset` writes ``videos/*.mp4``, the frame TSV (through :mod:`lib.data.extract`) and the
``txt_demo-*.json`` files; see its docstring for the layout.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from tqdm import tqdm

from lib.data.annotations import SPLITS, read_json_object, write_json_atomic
from lib.data.extract import OutputPaths as ExtractorOutputs
from lib.data.extract import extract_videos
from lib.data.tsv import INPROGRESS_SUFFIX, TSVFile, frame_columns
from lib.data.video_write import write_video

logger = logging.getLogger(__name__)

DATASET = "demo"
RECIPE = 4  # bump when what a spec renders to changes: datasets built by another recipe are rebuilt
# (4: recipe 3 reused the files of ids whose scene changed with the split sizes; such folders are rebuilt)

# ---------------------------------------------------------------------------------------- the vocabulary
# Every word below is a single bert-base-uncased wordpiece (checked by tests/demo/test_synthetic.py).

SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "white": (235, 235, 235),
    "purple": (150, 50, 205),
}
SIZES = {"small": 0.12, "large": 0.18}  # object radius as a fraction of the frame side
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}
COUNT_WORDS = {1: "one", 2: "two"}  # three large objects cannot move freely in a 64-px frame
ATTRIBUTES: dict[str, tuple[Any, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": tuple(SIZES),
    "direction": tuple(DIRECTIONS),
    "count": tuple(COUNT_WORDS),
}

# open-ended QA: question type -> templates (filled by Scene.words()); the answer is the attribute's word
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": ("what color {is} the {size} {noun}?", "what is the color of the {size} {noun}?"),
    "shape": ("what shape {is} the {color} {object}?", "which shape {is} {color}?"),
    "size": ("what size {is} the {color} {noun}?", "{is} the {color} {noun} small or large?"),
    "direction": ("which way {does} the {color} {noun} move?", "where {does} the {size} {color} {noun} go?"),
    "count": ("how many {color} {plural} are there?", "how many objects are there?"),
}
QUESTION_TYPES = tuple(QUESTION_TEMPLATES)
ANSWERS: tuple[str, ...] = (*COLORS, *SHAPES, *SIZES, *DIRECTIONS, *COUNT_WORDS.values())
MC_QUESTIONS = (
    "what happens in the video?",
    "which sentence describes the video?",
    "what does the video show?",
)
N_OPTIONS = 5
# One-sequence multiple choice learns from many items: each train video gets this many (other distractors,
# other order; its clip is encoded once for all of them with items_per_video), val videos one.
MC_TRAIN_ITEMS = 8
# Each test video gets this many questions of both multiple-choice kinds (other distractors and order), as
# open-ended QA has five per test video: with one per video, 60 test questions measured an accuracy near the
# 0.90 target to +-0.076 (95 %), as much as the random distractors of the draw happened to be hard.
MC_TEST_ITEMS = 5
MC_ITEMS = {"train": MC_TRAIN_ITEMS, "val": 1, "test": MC_TEST_ITEMS}  # per video of each split
RETMC_ITEMS = {"train": 1, "val": 1, "test": MC_TEST_ITEMS}

# file name -> annotation kind for lib.data.annotations.load_annotations
ANNOTATION_FILES: dict[str, str] = {
    f"txt_{DATASET}-pretrain.json": "pretrain",
    f"txt_{DATASET}-retrieval.json": "retrieval",
    f"txt_{DATASET}-captioning.json": "caption",
    f"txt_{DATASET}-qa.json": "qa_open",
    f"txt_{DATASET}-mc.json": "qa_choice",
    f"txt_{DATASET}-retmc.json": "qa_choice",
}

# ------------------------------------------------------------------------------------------------ scenes


@dataclass(frozen=True)
class Scene:
    """The five attributes a video shows (and its captions and answers describe)."""

    shape: str
    color: str
    size: str
    direction: str
    count: int

    def words(self) -> dict[str, str]:
        """Template fields with number agreement for the object count."""
        one = self.count == 1
        return {
            "det": "a" if one else COUNT_WORDS[self.count],
            "number": COUNT_WORDS[self.count],
            "noun": self.shape if one else PLURALS[self.shape],
            "plural": PLURALS[self.shape],
            "object": "object" if one else "objects",
            "is": "is" if one else "are",
            "does": "does" if one else "do",
            "color": self.color,
            "size": self.size,
        }

    def caption(self) -> str:
        """The canonical caption, e.g. "a large red circle moves left", "two small red squares stay still"."""
        w = self.words()
        one = self.count == 1
        if self.direction == "still":
            motion = "stays still" if one else "stay still"
        else:
            motion = f"{'moves' if one else 'move'} {self.direction}"
        return f"{w['det']} {self.size} {self.color} {w['noun']} {motion}"

    def phrasings(self) -> list[str]:
        """The canonical caption and three paraphrases (used for training captions)."""
        w = self.words()
        one = self.count == 1
        to_dir = f"to the {self.direction}" if self.direction in ("left", "right") else self.direction
        if self.direction == "still":
            moving, moving_to, goes = "staying still", "not moving", "does not move" if one else "do not move"
        else:
            moving, moving_to = f"moving {self.direction}", f"moving {to_dir}"
            goes = f"{'goes' if one else 'go'} {to_dir}"
        return [
            self.caption(),
            f"{w['det']} {self.color} {w['noun']} {moving}",
            f"there {w['is']} {w['det']} {self.size} {self.color} {w['noun']} {moving_to}",
            f"{w['number']} {self.size} {self.color} {w['noun']} {goes}",
        ]

    def answer(self, question_type: str) -> str:
        """The one-word answer to a question of the given type."""
        return COUNT_WORDS[self.count] if question_type == "count" else getattr(self, question_type)


@functools.cache
def all_scenes() -> tuple[Scene, ...]:
    """Every attribute combination in a fixed order (4 shapes x 6 colors x 2 sizes x 5 motions x 2 counts)."""
    return tuple(Scene(*combo) for combo in itertools.product(*ATTRIBUTES.values()))


# -------------------------------------------------------------------------------------------------- specs

STREAMS = {"test": 0, "val": 1, "train": 2, "qa": 10, "mc": 11, "retmc": 12}
EXTENT = 1.25  # every shape fits in a disc of EXTENT x its radius
MIN_FRAME_SIZE = 32


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render one video (a pure function of the spec)."""

    video: str
    split: str
    scene: Scene
    frame_size: int
    fps: int
    n_frames: int
    rgb: tuple[int, int, int]
    centres: tuple[tuple[float, float], ...]  # object centres (x, y) in pixels at frame 0
    step: tuple[float, float]  # displacement (dx, dy) in pixels per frame
    background_seed: int


def _place_objects(
    rng: np.random.Generator, count: int, extent: float, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray | None:
    """Random centres in the box [lo, hi] whose discs of radius ``extent`` do not touch, or None."""
    for _ in range(1000):
        centres = rng.uniform(lo, hi, size=(count, 2))
        gaps = [np.hypot(*(a - b)) for a, b in itertools.combinations(centres, 2)]
        if all(g >= 2 * extent + 1 for g in gaps):
            return centres
    return None


def _sample_spec(
    video: str, split: str, scene: Scene, rng: np.random.Generator, frame_size: int, fps: int
) -> VideoSpec:
    n_frames = int(rng.integers(fps, 4 * fps + 1))
    extent = EXTENT * SIZES[scene.size] * frame_size + 1
    direction = np.array(DIRECTIONS[scene.direction], dtype=np.float64)
    travel = rng.uniform(0.3, 0.45) * frame_size if direction.any() else 0.0

    def start_box(travel: float) -> tuple[np.ndarray, np.ndarray]:  # where the whole path stays in the frame
        lo = np.full(2, extent) + np.maximum(-direction, 0) * travel
        hi = np.full(2, frame_size - extent) - np.maximum(direction, 0) * travel
        return lo, hi

    centres = _place_objects(rng, scene.count, extent, *start_box(travel))
    while centres is None:  # shorten the path until the objects fit (two large ones sometimes need it)
        travel *= 0.9
        centres = _place_objects(rng, scene.count, extent, *start_box(travel))
    step = direction * travel / max(n_frames - 1, 1)
    rgb = np.clip(np.array(COLORS[scene.color]) + rng.integers(-20, 21, size=3), 0, 255)
    return VideoSpec(
        video=video,
        split=split,
        scene=scene,
        frame_size=frame_size,
        fps=fps,
        n_frames=n_frames,
        rgb=tuple(int(c) for c in rgb),
        centres=tuple((float(x), float(y)) for x, y in centres),
        step=(float(step[0]), float(step[1])),
        background_seed=int(rng.integers(2**31)),
    )


def _balanced_pick(order: Sequence[int], scenes: Sequence[Scene], n: int) -> list[int]:
    """``n`` scenes taken greedily in ``order``, skipping those that would push an attribute value past its
    even share (rounded up); places the quotas leave open are filled in ``order``.

    Balanced held-out splits keep per-question-type chance levels plain.
    """
    quota = {name: -(-n // len(values)) for name, values in ATTRIBUTES.items()}
    used: Counter[tuple[str, Any]] = Counter()
    picked: list[int] = []
    for k in order:
        values = [(name, getattr(scenes[k], name)) for name in ATTRIBUTES]
        if len(picked) < n and all(used[v] < quota[v[0]] for v in values):
            picked.append(k)
            used.update(values)
    chosen = set(picked)
    return picked + [k for k in order if k not in chosen][: n - len(picked)]


def sample_specs(
    seed: int, n_train: int, n_val: int, n_test: int, frame_size: int = 64, fps: int = 10
) -> list[VideoSpec]:
    """The videos of all splits (train, val, test); val/test scenes are distinct, balanced combinations.

    Video ids are ``demo_{split}_{index:05d}``, so no video is in two splits.
    """
    scenes = all_scenes()
    if min(n_train, n_val, n_test) < 0 or n_val + n_test > len(scenes):
        raise ValueError(
            f"need 0 <= n_val + n_test <= {len(scenes)} (distinct scenes); got {n_val} + {n_test}"
        )
    if frame_size < MIN_FRAME_SIZE or frame_size % 2:
        raise ValueError(f"frame size must be even and >= {MIN_FRAME_SIZE} (H.264 4:2:0), got {frame_size}")
    if fps < 2:
        raise ValueError(f"fps must be >= 2, got {fps}")
    order = [int(k) for k in np.random.default_rng([seed, STREAMS["test"]]).permutation(len(scenes))]
    test = _balanced_pick(order, scenes, n_test)
    val = _balanced_pick([k for k in order if k not in set(test)], scenes, n_val)
    train_rng = np.random.default_rng([seed, STREAMS["train"]])
    n_cycles = -(-n_train // len(scenes))
    train_order = np.concatenate([train_rng.permutation(len(scenes)) for _ in range(n_cycles)] or [[]])
    scene_indices = {
        "train": train_order[:n_train],
        "val": val,
        "test": test,
    }
    return [
        _sample_spec(
            f"{DATASET}_{split}_{i:05d}",
            split,
            scenes[int(k)],
            np.random.default_rng([seed, STREAMS[split], i]),
            frame_size,
            fps,
        )
        for split in SPLITS
        for i, k in enumerate(scene_indices[split])
    ]


# ---------------------------------------------------------------------------------------------- rendering

_SHIFT = 4  # cv2 fixed-point bits: positions and radii with 1/16 pixel precision


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


def _shape_polygon(shape: str, centre: np.ndarray, radius: float) -> np.ndarray:
    """Polygon vertices (N, 2) of a square, triangle or cross centred at ``centre``."""
    if shape == "square":
        h = 0.85 * radius
        offsets = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        offsets = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 1.15 * radius
    elif shape == "cross":
        a, t = 1.15 * radius, 0.4 * radius
        arm = np.array([(-t, -a), (t, -a), (t, -t)])  # the top arm and the corner to its right
        quarter_turn = np.array([[0.0, -1.0], [1.0, 0.0]])
        offsets = np.concatenate([arm @ np.linalg.matrix_power(quarter_turn, k).T for k in range(4)])
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return centre + np.asarray(offsets, dtype=np.float64)


def _draw(
    image: np.ndarray, shape: str, centre: np.ndarray, radius: float, rgb: tuple[int, int, int]
) -> None:
    if shape == "circle":
        x, y = _fixed(centre)
        cv2.circle(image, (int(x), int(y)), int(_fixed(radius)), rgb, -1, cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillPoly(image, [_fixed(_shape_polygon(shape, centre, radius))], rgb, cv2.LINE_AA, _SHIFT)


def _background(frame_size: int, seed: int) -> np.ndarray:
    """A dark, slightly tinted grey with soft blotches and fine grain (static over the video)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 70) + rng.uniform(-8, 8, size=3)
    blotches = cv2.resize(
        rng.normal(0, 6, size=(6, 6, 3)).astype(np.float32),
        (frame_size, frame_size),
        interpolation=cv2.INTER_CUBIC,
    )
    grain = rng.normal(0, 2, size=(frame_size, frame_size, 3))
    return np.clip(base + blotches + grain, 0, 255).astype(np.uint8)


def render_frames(spec: VideoSpec) -> np.ndarray:
    """The RGB frames (T, H, W, 3) uint8 of a spec."""
    background = _background(spec.frame_size, spec.background_seed)
    frames = np.repeat(background[None], spec.n_frames, axis=0)
    radius = SIZES[spec.scene.size] * spec.frame_size
    centres, step = np.asarray(spec.centres), np.asarray(spec.step)
    for t, frame in enumerate(frames):
        for centre in centres + t * step:
            _draw(frame, spec.scene.shape, centre, radius, spec.rgb)
    return frames


ENCODER_OPTIONS = {"preset": "ultrafast", "threads": "1"}


def write_spec_video(spec: VideoSpec, path: str | os.PathLike) -> Path:
    """Render and encode one video as H.264 (written atomically by ``write_video``)."""
    return write_video(path, render_frames(spec), fps=spec.fps, options=ENCODER_OPTIONS)


def video_is_complete(path: str | os.PathLike, spec: VideoSpec) -> bool:
    """Whether ``path`` is a readable video with the spec's frame count and size (cheap: reads the header)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return (stream.frames, stream.width, stream.height) == (
                spec.n_frames,
                spec.frame_size,
                spec.frame_size,
            )
    except (OSError, av.FFmpegError, IndexError):
        return False


def _write_spec_video_task(job: tuple[VideoSpec, Path]) -> Path:
    return write_spec_video(*job)


def write_demo_videos(
    specs: Sequence[VideoSpec],
    video_dir: str | os.PathLike,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> tuple[list[Path], int]:
    """Write ``{video}.mp4`` for every spec, skipping complete existing files unless ``force``.

    Returns the paths (in spec order) and the number of videos encoded by this call.
    """
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    paths = [video_dir / f"{spec.video}.mp4" for spec in specs]
    todo = [(s, p) for s, p in zip(specs, paths) if force or not video_is_complete(p, s)]
    bar = tqdm(total=len(todo), desc="encoding demo videos", unit="video", disable=not progress or not todo)
    with bar:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_write_spec_video_task, todo, chunksize=8):
                    bar.update()
        else:
            for job in todo:
                _write_spec_video_task(job)
                bar.update()
    return paths, len(todo)


# -------------------------------------------------------------------------------------------- annotations


def _by_split(specs: Sequence[VideoSpec]) -> dict[str, list[VideoSpec]]:
    return {split: [s for s in specs if s.split == split] for split in SPLITS}


def _open_qa_items(spec: VideoSpec, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One question of every type about the video."""
    items = []
    for qtype, templates in QUESTION_TEMPLATES.items():
        question = templates[int(rng.integers(len(templates)))].format(**spec.scene.words())
        answer = spec.scene.answer(qtype)
        items.append(
            {
                "video": spec.video,
                "question": question,
                "answer": ANSWERS.index(answer),
                "answer_text": answer,
                "type": qtype,
            }
        )
    return items


def _choices(scene: Scene, rng: np.random.Generator) -> tuple[list[str], int]:
    """Five caption options and the index of the true one: the video's caption and the captions of four
    other scenes drawn at random (as MSR-VTT-MC and TGIF take other videos' captions and answers)."""
    others = [s for s in all_scenes() if s != scene]
    distractors = [others[int(k)] for k in rng.choice(len(others), N_OPTIONS - 1, replace=False)]
    order = rng.permutation(N_OPTIONS)
    candidates = [scene, *distractors]
    return [candidates[int(k)].caption() for k in order], int(np.flatnonzero(order == 0)[0])


def _choice_item(spec: VideoSpec, question: str, rng: np.random.Generator) -> dict[str, Any]:
    options, answer = _choices(spec.scene, rng)
    return {
        "question": question,
        **{f"option_{k}": o for k, o in enumerate(options)},
        "answer": answer,
        "video": spec.video,
    }


def demo_annotations(specs: Sequence[VideoSpec], seed: int) -> dict[str, dict[str, Any]]:
    """The contents of every ``txt_demo-*.json`` file (see :data:`ANNOTATION_FILES`), keyed by file name."""
    splits = _by_split(specs)
    qa_rng, mc_rng, retmc_rng = (np.random.default_rng([seed, STREAMS[k]]) for k in ("qa", "mc", "retmc"))

    def captions(spec: VideoSpec) -> list[str]:
        return spec.scene.phrasings() if spec.split == "train" else [spec.scene.caption()]

    def mc_question() -> str:
        return MC_QUESTIONS[int(mc_rng.integers(len(MC_QUESTIONS)))]

    files = {
        "pretrain": {split: {s.video: captions(s) for s in splits[split]} for split in ("train", "val")},
        "retrieval": {
            split: [{"video": s.video, "caption": c} for s in v for c in captions(s)]
            for split, v in splits.items()
        },
        "captioning": {
            split: [{"video": s.video, "caption": s.scene.caption()} for s in v]
            for split, v in splits.items()
        },
        "qa": {
            **{split: [q for s in v for q in _open_qa_items(s, qa_rng)] for split, v in splits.items()},
            "vocab": list(ANSWERS),
            "ans2label": {a: i for i, a in enumerate(ANSWERS)},
        },
        "mc": {
            split: [_choice_item(s, mc_question(), mc_rng) for s in v for _ in range(MC_ITEMS[split])]
            for split, v in splits.items()
        },
        "retmc": {
            split: [_choice_item(s, "", retmc_rng) for s in v for _ in range(RETMC_ITEMS[split])]
            for split, v in splits.items()
        },
    }
    return {f"txt_{DATASET}-{task}.json": content for task, content in files.items()}


# -------------------------------------------------------------------------------------- the whole dataset


@dataclass
class DemoDataset:
    """What :func:`make_demo_dataset` produced."""

    output: Path
    specs: list[VideoSpec]
    video_paths: list[Path]
    n_encoded: int
    annotation_paths: list[Path]
    tsv: Path | None
    extracted: bool


def frame_tsv_is_complete(tsv: Path, video_ids: Sequence[str], sample: int) -> bool:
    """Whether ``tsv`` (+ .lineidx) holds exactly ``video_ids`` in order, each row with ``sample`` frames."""
    if not tsv.exists() or not tsv.with_suffix(".lineidx").exists():
        return False
    try:
        with TSVFile(tsv) as table:
            return table.keys() == list(video_ids) and len(frame_columns(table.row(0))) == sample
    except (OSError, ValueError) as e:  # a stale or damaged table is rebuilt, not trusted
        logger.info("rebuilding %s: %s", tsv, e)
        return False


def remove_frame_table(prefix: Path) -> None:
    """Delete every output of an extraction into ``prefix`` (table, index, journals, in-progress files)."""
    out = ExtractorOutputs.of(prefix)
    for path in (out.tsv, out.lineidx, out.summary, out.failed, out.journal):
        path.unlink(missing_ok=True)
        Path(str(path) + INPROGRESS_SUFFIX).unlink(missing_ok=True)


def extract_demo_frames(
    video_paths: Sequence[Path],
    prefix: Path,
    sample: int,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> bool:
    """Build ``{prefix}.tsv`` + ``.lineidx`` with ``sample`` frames per video through the real extractor.

    Skipped (returns False) when the table is already complete and ``force`` is false; otherwise the
    table is rebuilt from scratch (a few seconds for the demo).
    """
    tsv = ExtractorOutputs.of(prefix).tsv
    if not force and frame_tsv_is_complete(tsv, [p.stem for p in video_paths], sample):
        return False
    remove_frame_table(prefix)
    summary = extract_videos(
        [str(p) for p in video_paths],
        sample,
        str(prefix),
        workers=workers,
        size_short=None,
        quality=75,
        ordered=True,
        progress=progress,
    )
    if summary["failures"]:
        raise RuntimeError(
            f"extracting the demo videos failed for {summary['failures'][:3]} (see {prefix}.json)"
        )
    return True


def make_demo_dataset(
    output: str | os.PathLike,
    seed: int = 0,
    n_train: int = 600,
    n_val: int = 60,
    n_test: int = 60,
    frame_size: int = 64,
    fps: int = 10,
    sample: int = 5,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    extract: bool = True,
) -> DemoDataset:
    """Write the demo dataset into ``output``; re-running reuses complete videos and a complete frame table.

    Layout::

        videos/demo_{split}_{i:05d}.mp4   H.264, frame_size x frame_size, fps, 1-4 s
        img_demo.tsv / img_demo.lineidx   rows: video id, ``sample`` base64 JPEG frames (lib.data.extract;
                                          its img_demo.json summary and .jsonl journals lie beside)
        txt_demo-pretrain.json            {"train": {video: [captions]}, "val": {...}}
        txt_demo-retrieval.json           {"train"/"val"/"test": [{"video", "caption"}]}; 4 phrasings per
                                          train video, the canonical caption per val/test video
        txt_demo-captioning.json          same format, canonical captions only
        txt_demo-qa.json                  open-ended QA {"video","question","answer","answer_text","type"},
                                          one per question type and video; top-level "vocab" and "ans2label"
        txt_demo-mc.json                  {"question","option_0".."option_4","answer","video"} (TGIF style);
                                          MC_TRAIN_ITEMS per train video, MC_TEST_ITEMS per test video
                                          (other distractors and order), one per val video
        txt_demo-retmc.json               the same with question "", one per train/val video and
                                          MC_TEST_ITEMS per test video (retrieval-style multiple choice)
        meta_demo.json                    parameters and every video's attributes

    Videos written with other parameters (recipe version, seed, frame size, fps; recorded in meta_demo.json)
    are rebuilt.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    specs = sample_specs(seed, n_train, n_val, n_test, frame_size, fps)
    params = {"recipe": RECIPE, "seed": seed, "frame_size": frame_size, "fps": fps}
    meta_path = output / f"meta_{DATASET}.json"
    previous = read_json_object(meta_path) if meta_path.exists() else {}
    if not force and previous and previous.get("params") != params:
        logger.warning("%s was built with other parameters; rebuilding every video", output)
        force = True
    videos = {s.video: json.loads(json.dumps(asdict(s))) for s in specs}  # as meta_demo.json holds them
    if not force:
        # A video id's scene depends on the split sizes (val/test scenes are drawn without replacement), so
        # a file is reused only where the previous build recorded the same spec for that id.
        recorded = previous.get("videos", {})
        stale = [v for v, spec in videos.items() if recorded.get(v) != spec]
        for video in stale:
            (output / "videos" / f"{video}.mp4").unlink(missing_ok=True)
        if stale and recorded:
            logger.info("%d videos of %s now have another scene; re-encoding them", len(stale), output)
    # recorded before any video is written, so an interrupted rebuild is never mistaken for the old one
    write_json_atomic(meta_path, {"params": params, "videos": videos})

    video_paths, n_encoded = write_demo_videos(specs, output / "videos", workers, force, progress)
    annotation_paths = [
        write_json_atomic(output / name, content) for name, content in demo_annotations(specs, seed).items()
    ]
    tsv, extracted = None, False
    if extract:
        prefix = output / f"img_{DATASET}"
        extracted = extract_demo_frames(
            video_paths, prefix, sample, workers, force or n_encoded > 0, progress
        )
        tsv = ExtractorOutputs.of(prefix).tsv
    return DemoDataset(output, specs, video_paths, n_encoded, annotation_paths, tsv, extracted)
