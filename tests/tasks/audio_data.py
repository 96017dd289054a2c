"""A tiny audio-visual dataset for the audio task tests: real H.264 videos with real AAC / Opus sound, made
with PyAV, extracted by the real extractor into frames + ``img_av.audio.tsv``, and annotations for every task.

Each video shows a red or blue square (the colour can be seen) and plays a low (300 Hz) or high (2,500 Hz)
tone (the pitch can only be heard). ``av_train_silent`` and ``av_test_silent`` have no audio stream at all.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from lib.data.audio import AudioSettings
from lib.data.extract import extract_videos
from lib.data.video_write import write_av_video

DATASET = "av"
RATE = 48000  # the sources' sampling rate (Opus takes 48 kHz); the store resamples to AUDIO_RATE
AUDIO_RATE = 16000
MEL_BINS = 32
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
PITCHES = {"low": 300.0, "high": 2500.0}
SPLITS = {"train": [*itertools.product(COLORS, PITCHES), ("red", "high"), ("blue", None)],
          "val": [("red", "low"), ("blue", "high")],
          "test": [*itertools.product(COLORS, PITCHES), ("red", None)]}  # fmt: skip
TASKS = ("qa", "retrieval", "captioning", "mc", "favd")


def caption(color: str, pitch: str | None) -> str:
    return f"a {color} square beeping {pitch}" if pitch else f"a {color} square in silence"


def paragraph(color: str, pitch: str | None) -> str:
    """A FAVD-style paragraph: a summary, visual detail, then what is heard."""
    sound = (
        f"a {pitch} tone beeps for one second. the {pitch} beep is steady" if pitch else "nothing is heard"
    )
    return (
        f"{caption(color, pitch)}. the {color} square sits in the middle of a grey frame. the square does "
        f"not move and its edges are sharp. {sound}. the grey background stays the same until the end."
    )


def video_id(split: str, i: int, pitch: str | None) -> str:
    return f"av_{split}_silent" if pitch is None else f"av_{split}_{i}"


def write_clip(path: Path, color: str, pitch: str | None, codec: str) -> Path:
    """4 frames at 4 fps (one second) of a coloured square, and a one-second tone (or no audio stream)."""
    frames = np.full((4, 32, 32, 3), 90, np.uint8)
    frames[:, 8:24, 8:24] = COLORS[color]
    t = np.arange(RATE) / RATE
    sound = None if pitch is None else (0.3 * np.sin(2 * np.pi * PITCHES[pitch] * t)).astype(np.float32)
    return write_av_video(path, frames, 4, sound, RATE, codec)


def make_av_dataset(out: Path) -> Path:
    """Videos in ``out/videos``, ``out/img_av.tsv`` (+ ``img_av.audio.tsv``), ``out/txt_av-{task}.json``."""
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    paths, rows = [], {split: [] for split in SPLITS}
    for split, clips in SPLITS.items():
        for i, (color, pitch) in enumerate(clips):
            vid = video_id(split, i, pitch)
            codec = "libopus" if i % 2 else "aac"  # both codecs, as the extractor meets them
            paths.append(
                write_clip(videos / f"{vid}.{'mkv' if codec == 'libopus' else 'mp4'}", color, pitch, codec)
            )
            rows[split].append((vid, color, pitch))
    summary = extract_videos(
        [str(p) for p in paths], 2, str(out / f"img_{DATASET}"), ordered=True, progress=False,
        audio=AudioSettings(kind="fbank", rate=AUDIO_RATE, n_mels=MEL_BINS),
    )  # fmt: skip
    assert not summary["failures"], summary["failures"]
    answers = ["low", "high", "none", "red", "blue"]
    files = {
        "qa": {
            **{
                split: [
                    item
                    for vid, color, pitch in items
                    for item in (
                        {
                            "video": vid,
                            "question": "what sound does the square make?",
                            "answer": answers.index(pitch or "none"),
                            "answer_text": pitch or "none",
                            "type": "sound",
                        },
                        {
                            "video": vid,
                            "question": "what color is the square?",
                            "answer": answers.index(color),
                            "answer_text": color,
                            "type": "color",
                        },
                    )  # fmt: skip
                ]
                for split, items in rows.items()
            },
            "vocab": answers,
        },
        "retrieval": {
            s: [{"video": v, "caption": caption(c, p)} for v, c, p in items] for s, items in rows.items()
        },
        "captioning": {
            s: [{"video": v, "caption": caption(c, p)} for v, c, p in items] for s, items in rows.items()
        },
        "favd": {
            s: [{"video": v, "caption": paragraph(c, p)} for v, c, p in items] for s, items in rows.items()
        },
        "mc": {
            s: [
                {
                    "video": v,
                    "question": "what does the video show?",
                    "answer": i % 4,
                    **{f"option_{k}": caption(*o) for k, o in enumerate(options(c, p, i % 4))},
                }
                for i, (v, c, p) in enumerate(items)
            ]
            for s, items in rows.items()
        },  # fmt: skip
    }
    for task, content in files.items():
        (out / f"txt_{DATASET}-{task}.json").write_text(json.dumps(content))
    return out


def options(color: str, pitch: str | None, at: int) -> list[tuple[str, str | None]]:
    """Four (colour, pitch) options, the video's own at index ``at``."""
    others = [o for o in itertools.product(COLORS, PITCHES) if o != (color, pitch)][:3]
    return [*others[:at], (color, pitch), *others[at:]]


def av_args(minilm_dir: Path, data: Path, out: Path) -> list[str]:
    """A tiny audio-visual model on the dataset: 1 MiniLM fusion layer, an 8-wide Swin, a 32-wide one-layer
    audio encoder over 2 slices of 32 mel bins x 64 frames; fp32, no dropout, so runs compare exactly."""
    return [
        "--data_dir", str(data), "--dataset", DATASET,
        "--txt_backbone", str(minilm_dir), "--fusion_encoder", str(minilm_dir), "--fusion_layers", "1",
        "--fusion_dropout", "0", "--vis_backbone_size", "custom", "--vis_embed_dim", "8",
        "--vis_depths", "[1, 1, 1, 1]", "--vis_heads", "[1, 1, 1, 1]", "--vis_backbone_init", "random",
        "--kinetics", "-1", "--vis_drop_path", "0", "--size_img", "32", "--size_frame", "2",
        "--size_txt", "16", "--size_batch", "4", "--n_workers", "0", "--precision", "fp32",
        "--modalities", '["video", "audio"]', "--audio_rate", str(AUDIO_RATE),
        "--audio_mel_bins", str(MEL_BINS), "--audio_slice_frames", "64", "--audio_slices", "2",
        "--audio_encoder", '{"width": 32, "depth": 1, "heads": 2}',
        "--freeze_params", '["enc_txt.emb_txt.word_embeddings", "fc_mtm.predictions.decoder.weight"]',
        "--lr", "1e-3", "--logging_steps", "1", "--tensorboard", "false", "--save_model_every_epoch", "false",
        "--max_gen_length", "4", "--caption_eval_backend", "python", "--path_output", str(out),
    ]  # fmt: skip
