"""The audio demo suite: demo videos with sound, and ONE model that must hear to answer.

    python -m lib.demo.suites.audio               # data -> extractor (frames + audio) -> one model -> report
    python -m lib.demo.suites.audio --steps 300   # shorter

Every demo video (the main demo's moving shapes, :mod:`lib.demo.synthetic`) gets a sound that cannot be
seen: a kind (``hum`` a sine, ``buzz`` a square wave, ``whistle`` a sine with vibrato, ``hiss`` band-limited
noise), a pitch (``low`` 220 Hz, ``medium`` 700 Hz, ``high`` 2,200 Hz) and a rhythm (``steady``, or
``pulsing`` on and off four times a second), 24 combinations, drawn independently of what is seen. The
sound is encoded into the file as real AAC (``.mp4``) or Opus (``.mkv``, every third video), and the real
extractor stores frames and VALOR's filterbank by video id.

Tasks, one model (``main_multi_task_mlm``'s code), on the held-out test split:

* audio questions (``qaoe``, group ``tva``): "what sound does the red circle make?" (kind), "is the sound of
  the red circle low, medium or high?" (pitch), "is the sound of the red circle steady or pulsing?";
  target accuracy >= 0.90;
* text -> audio retrieval (``retrieval``, group ``ta``: the model hears the clips and sees nothing):
  "a pulsing high whistle"; target R@1 >= 0.30;
* captions that mention the sound (``captioning``, group ``tva``): "a small red circle moves left with a
  steady low hum"; reported: CIDEr and the fraction of captions naming the clip's sound right;
* the same checkpoint on the audio questions with its audio tokens masked (group ``tv``: a masked token is
  never attended to, which is the same as leaving it out): target at chance (the majority answer per
  question type, ``chance`` in the report), i.e. the answers really come from the sound.

Writes ``OUT/metrics.json`` and prints each number beside its target and chance level. The lead's demo
(``lib/demo/run.py``) is untouched: this suite runs on its own.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib.data.annotations import write_json_atomic
from lib.data.audio import AudioSettings
from lib.data.extract import extract_videos
from lib.data.video_write import write_av_video
from lib.demo.synthetic import VideoSpec, render_frames, sample_specs

DATASET = "audiodemo"
KINDS = ("hum", "buzz", "whistle", "hiss")
PITCHES = {"low": 220.0, "medium": 700.0, "high": 2200.0}
RHYTHMS = ("steady", "pulsing")
SOURCE_RATE = 48000  # the files' sampling rate (Opus takes 48 kHz); the store resamples once
AUDIO_RATE = 16000
QUESTION_TYPES = ("kind", "pitch", "rhythm")
ANSWERS = (*KINDS, *PITCHES, *RHYTHMS)
TARGETS = {"audio_qa": 0.90, "text_to_audio_R1": 0.30}


@dataclass(frozen=True)
class Sound:
    """What a video's object sounds like (none of it can be seen)."""

    kind: str
    pitch: str
    rhythm: str

    def phrase(self) -> str:
        """ "a pulsing high whistle" """
        return f"a {self.rhythm} {self.pitch} {self.kind}"

    def answer(self, question_type: str) -> str:
        return getattr(self, question_type)


ALL_SOUNDS = tuple(Sound(*combo) for combo in itertools.product(KINDS, PITCHES, RHYTHMS))


def render_sound(
    sound: Sound, seconds: float, rng: np.random.Generator, rate: int = SOURCE_RATE
) -> np.ndarray:
    """Mono float32 samples of a sound (random loudness and phase; loudness is not an attribute)."""
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    f = PITCHES[sound.pitch] * rng.uniform(0.95, 1.05)
    phase = rng.uniform(0, 2 * np.pi)
    if sound.kind == "hum":
        wave = np.sin(2 * np.pi * f * t + phase)
    elif sound.kind == "buzz":
        wave = 0.6 * np.sign(np.sin(2 * np.pi * f * t + phase))
    elif sound.kind == "whistle":  # +-15 % vibrato at 6 Hz
        wave = np.sin(2 * np.pi * f * t + 0.15 * f / 6.0 * np.sin(2 * np.pi * 6.0 * t) + phase)
    else:  # hiss: white noise kept to a band of +-30 % around the pitch
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / rate)
        spectrum[(freqs < 0.7 * f) | (freqs > 1.3 * f)] = 0
        wave = np.fft.irfft(spectrum, n)
        wave /= np.abs(wave).max() + 1e-9
    if sound.rhythm == "pulsing":  # on and off four times a second, with 5 ms ramps (no clicks)
        gate = (np.floor(t * 8.0) % 2 == 0).astype(np.float64)
        ramp = int(0.005 * rate)
        gate = np.convolve(gate, np.ones(ramp) / ramp, mode="same")
        wave = wave * gate
    return (rng.uniform(0.15, 0.35) * wave).astype(np.float32)


def sounds_for(specs: list[VideoSpec], seed: int) -> dict[str, Sound]:
    """Each video's sound, drawn independently of its scene; each split cycles through every combination."""
    sounds: dict[str, Sound] = {}
    for split in ("train", "val", "test"):
        ids = [s.video for s in specs if s.split == split]
        rng = np.random.default_rng([seed, 77, len(split)])
        cycle = [ALL_SOUNDS[int(k)] for _ in range(-(-len(ids) // len(ALL_SOUNDS))) for k in
                 rng.permutation(len(ALL_SOUNDS))]  # fmt: skip
        sounds.update(zip(ids, cycle))
    return sounds


def questions(spec: VideoSpec, sound: Sound) -> list[dict[str, Any]]:
    w = spec.scene.words()
    subject = f"the {w['color']} {w['noun']}"
    texts = {
        "kind": f"what sound {w['does']} {subject} make?",
        "pitch": f"is the sound of {subject} low, medium or high?",
        "rhythm": f"is the sound of {subject} steady or pulsing?",
    }
    return [
        {"video": spec.video, "question": texts[q], "answer": ANSWERS.index(sound.answer(q)),
         "answer_text": sound.answer(q), "type": q}
        for q in QUESTION_TYPES
    ]  # fmt: skip


def make_audio_demo(
    out: Path, seed: int, n_train: int, n_val: int, n_test: int, frame_size: int = 32, fps: int = 8,
    sample: int = 3,
) -> dict[str, Any]:  # fmt: skip
    """Write the videos (``out/videos``), ``img_audiodemo.tsv`` + ``.audio.tsv`` and the annotations;
    reused when ``out/meta_audiodemo.json`` says the same parameters were built."""
    params = {"seed": seed, "n": [n_train, n_val, n_test], "frame_size": frame_size, "fps": fps, "k": sample}
    meta = out / f"meta_{DATASET}.json"
    if meta.is_file() and json.loads(meta.read_text()).get("params") == params:
        return json.loads(meta.read_text())
    specs = sample_specs(seed, n_train, n_val, n_test, frame_size, fps)
    sounds = sounds_for(specs, seed)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(specs):
        rng = np.random.default_rng([seed, 78, i])
        codec = "libopus" if i % 3 == 2 else "aac"
        path = videos / f"{spec.video}.{'mkv' if codec == 'libopus' else 'mp4'}"
        wave = render_sound(sounds[spec.video], spec.n_frames / spec.fps, rng)
        paths.append(write_av_video(path, render_frames(spec), spec.fps, wave, SOURCE_RATE, codec))
    summary = extract_videos(
        [str(p) for p in paths], sample, str(out / f"img_{DATASET}"), ordered=True, progress=False,
        audio=AudioSettings(kind="fbank", rate=AUDIO_RATE, n_mels=64),
    )  # fmt: skip
    if summary["failures"]:
        raise RuntimeError(f"extracting the audio demo failed: {summary['failures'][:3]}")
    by_split = {split: [s for s in specs if s.split == split] for split in ("train", "val", "test")}
    files = {
        "aqa": {
            **{split: [q for s in v for q in questions(s, sounds[s.video])] for split, v in by_split.items()},
            "vocab": list(ANSWERS),
        },
        "aret": {
            split: [{"video": s.video, "caption": sounds[s.video].phrase()} for s in v]
            for split, v in by_split.items()
        },
        "acap": {
            split: [
                {"video": s.video, "caption": f"{s.scene.caption()} with {sounds[s.video].phrase()}"}
                for s in v
            ]
            for split, v in by_split.items()
        },
    }
    for task, content in files.items():
        write_json_atomic(out / f"txt_{DATASET}-{task}.json", content)
    made = {"params": params, "sounds": {v: s.phrase() for v, s in sounds.items()}}
    write_json_atomic(meta, made)
    return made


def chance_levels(data: Path) -> dict[str, float]:
    """What a model that cannot hear reaches: the majority answer of each question type (test split), and
    1 / videos for retrieval."""
    qa = json.loads((data / f"txt_{DATASET}-aqa.json").read_text())["test"]
    hits = sum(
        Counter(q["answer_text"] for q in qa if q["type"] == t).most_common(1)[0][1] for t in QUESTION_TYPES
    )
    n_videos = len({r["video"] for r in json.loads((data / f"txt_{DATASET}-aret.json").read_text())["test"]})
    return {"audio_qa": hits / len(qa), "text_to_audio_R1": 1 / n_videos}


def run_config(args: argparse.Namespace, data: Path, run: Path) -> list[str]:
    """The multi-task run's arguments: the main demo's text side (all-MiniLM-L6-v2), a small Swin, a small
    AST over one 64 x 128 filterbank slice (1.28 s), the three audio tasks."""
    datasets = [
        {"type": "qaoe", "task": f"{DATASET}-aqa", "modality_groups": ["tva"], "items_per_video": 3},
        {"type": "retrieval", "task": f"{DATASET}-aret", "modality_groups": ["ta"], "vtm_negatives": 3,
         "task_weight": 1.5},
        {"type": "captioning", "task": f"{DATASET}-acap", "modality_groups": ["tva"],
         "attn_mask_type": "seq2seq", "max_gen_length": 16, "p_mask": 0.6, "size_txt": 24, "size_batch": 16,
         "task_weight": 0.5},
    ]  # fmt: skip
    return [
        "--type", "multi-task", "--task", f"{DATASET}-multi-task", "--dataset", DATASET,
        "--data_dir", str(data),
        "--txt_backbone", "all-MiniLM-L6-v2", "--fusion_encoder", "all-MiniLM-L6-v2", "--fusion_layers", "3",
        "--fusion_dropout", "0", "--vis_backbone_size", "custom", "--vis_embed_dim", "32",
        "--vis_depths", "[1, 1]", "--vis_heads", "[2, 4]", "--vis_window", "[3, 4, 4]",
        "--vis_patch_size", "[1, 8, 8]", "--vis_drop_path", "0", "--vis_backbone_init", "random",
        "--kinetics", "-1", "--video_attends_text", "false", "--size_img", str(args.frame_size),
        "--size_frame", "3", "--size_txt", "20", "--size_batch", "8",
        "--modalities", '["video", "audio"]', "--audio_rate", str(AUDIO_RATE), "--audio_mel_bins", "64",
        "--audio_slice_frames", "128", "--audio_slices", "1",
        "--audio_encoder", '{"width": 96, "depth": 3, "heads": 4}',
        "--freeze_params", '["enc_txt.emb_txt.word_embeddings", "fc_mtm.predictions.decoder.weight"]',
        "--lr", str(args.lr), "--warmup_ratio", "0.05", "--size_epoch", str(args.epochs),
        "--steps_per_epoch", str(max(1, args.steps // args.epochs)), "--eval_every", "0",
        "--logging_steps", "25", "--n_workers", "1", "--precision", args.precision, "--seed", str(args.seed),
        "--caption_eval_backend", "python", "--tensorboard", "false", "--save_model_every_epoch", "false",
        "--datasets", json.dumps(datasets), "--path_output", str(run),
    ]  # fmt: skip


def masked_audio_qa(run: Path, argv: list[str]) -> float:
    """The trained checkpoint on the audio questions with its audio tokens masked (group tv)."""
    from lib.engine.config import load_config
    from lib.engine.precision import autocast, resolve_precision
    from lib.tasks.build import build_model
    from lib.tasks.common import load_tokenizer
    from lib.tasks.qa_open import OpenQATask

    cfg = (
        load_config(argv)
        .task_configs()[0]
        .override({"modality_groups": ["tv"], "path_ckpt": str(run / "model"), "type": "qaoe"})
    )
    tok = load_tokenizer(cfg.txt_backbone)
    model = build_model(cfg, tok).eval()
    import torch

    with (
        torch.no_grad(),
        autocast(torch.device("cpu"), resolve_precision(cfg.precision, torch.device("cpu"))),
    ):
        return OpenQATask(cfg, tok).evaluate(model, "test")["acc"] / 100


def sound_mentions(run: Path, data: Path) -> float:
    """The fraction of test captions that name the clip's sound exactly ("a steady low hum")."""
    captions = json.loads((run / "captions_test.json").read_text())
    sounds = json.loads((data / f"meta_{DATASET}.json").read_text())["sounds"]
    return sum(sounds[c["video"]] in c["caption"] for c in captions) / max(1, len(captions))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lib.demo.suites.audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="_datasets/audiodemo", help="dataset folder")
    p.add_argument("--out", default="_snapshot/demo-audio", help="report folder; the run goes to OUT/run")
    p.add_argument("--n_train", type=int, default=960)
    p.add_argument("--n_val", type=int, default=12)
    p.add_argument("--n_test", type=int, default=60)
    p.add_argument("--frame_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps of the one run")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the data, train the one model, evaluate, print and write the report; 0 when every target is
    met, 1 otherwise."""
    from lib.tasks.run import run as run_task

    args = parse_args(argv)
    started = time.time()
    data, out = Path(args.data), Path(args.out)
    make_audio_demo(data, args.seed, args.n_train, args.n_val, args.n_test, args.frame_size)
    built = time.time() - started
    run = out / "run"
    argv_run = run_config(args, data, run)
    final = run_task("multi-task", argv_run)
    qa, ret = f"qaoe_{DATASET}-aqa%tva", f"retrieval_{DATASET}-aret%ta"
    metrics = {
        "audio_qa": final[f"{qa}/test/acc"] / 100,
        **{f"audio_qa/{t}": final[f"{qa}/test/acc_type/{t}"] / 100 for t in QUESTION_TYPES},
        "text_to_audio_R1": final[f"{ret}/test/t2v_R1"] / 100,
        "text_to_audio_R5": final[f"{ret}/test/t2v_R5"] / 100,
        "caption_CIDEr": final[f"captioning_{DATASET}-acap%tva/test/CIDEr"],
        "caption_names_the_sound": sound_mentions(run, data),
        "audio_qa_masked": masked_audio_qa(run, argv_run),
    }
    chance = chance_levels(data)
    chance["audio_qa_masked"] = chance["audio_qa"]
    met = {
        "audio_qa": metrics["audio_qa"] >= TARGETS["audio_qa"],
        "text_to_audio_R1": metrics["text_to_audio_R1"] >= TARGETS["text_to_audio_R1"],
        "audio_qa_masked": metrics["audio_qa_masked"] <= chance["audio_qa"] + 0.10,  # at chance
    }
    report = {
        "metrics": metrics, "chance": chance, "targets": {**TARGETS, "audio_qa_masked": "<= chance + 0.10"},
        "met": met, "seconds": {"data": built, "total": time.time() - started}, "args": vars(args),
    }  # fmt: skip
    write_json_atomic(out / "metrics.json", report, indent=2)
    print(f"\naudio demo suite (test split, {args.n_test} videos; {report['seconds']['total'] / 60:.1f} min)")
    for key, value in metrics.items():
        target = report["targets"].get(key, "")
        level = f"{chance[key]:.3f}" if key in chance else "-"
        line = f"  {key:<26} {value:7.3f}   chance {level:>5}   target {target or '-'}"
        print(line + ("   MET" if met.get(key) else "   missed" if key in met else ""))
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
