"""The audio demo suite's data: sounds that cannot be seen, encoded as real AAC / Opus, stored by the
extractor, and annotations whose answers are the sounds' attributes."""

from __future__ import annotations

import json

import numpy as np

from lib.data.audio import AudioStore, FbankConfig, kaldi_fbank
from lib.demo.suites.audio import (
    AUDIO_RATE,
    DATASET,
    PITCHES,
    SOURCE_RATE,
    Sound,
    chance_levels,
    make_audio_demo,
    render_sound,
)


def fbank(sound: Sound, seed: int = 0) -> np.ndarray:
    return kaldi_fbank(render_sound(sound, 1.0, np.random.default_rng(seed)), SOURCE_RATE, 64)


def test_each_attribute_of_a_sound_is_audible():
    peak = {p: int(np.argmax(fbank(Sound("hum", p, "steady")).mean(0))) for p in PITCHES}
    assert peak["low"] < peak["medium"] < peak["high"]
    hiss = {p: int(np.argmax(fbank(Sound("hiss", p, "steady")).mean(0))) for p in PITCHES}
    assert abs(hiss["high"] - peak["high"]) <= 3 and hiss["low"] < hiss["high"]  # band noise at the pitch
    energy = {r: fbank(Sound("buzz", "medium", r)).max(1) for r in ("steady", "pulsing")}
    assert energy["pulsing"].std() > 4 * energy["steady"].std()  # on and off, 4 times a second
    hum, whistle = fbank(Sound("hum", "high", "steady")), fbank(Sound("whistle", "high", "steady"))
    assert len(set(hum.argmax(1))) == 1 and len(set(whistle.argmax(1))) >= 3  # its vibrato moves the peak


def test_the_audio_demo_stores_sounds_by_id_with_annotations_about_them(tmp_path):
    made = make_audio_demo(tmp_path, seed=0, n_train=4, n_val=1, n_test=4, frame_size=32, fps=4, sample=2)
    suffixes = {p.suffix for p in (tmp_path / "videos").iterdir()}
    assert suffixes == {".mp4", ".mkv"}  # AAC and Opus
    store = AudioStore.beside(tmp_path / f"img_{DATASET}.tsv")
    assert store.ids() == set(made["sounds"])
    qa = json.loads((tmp_path / f"txt_{DATASET}-aqa.json").read_text())
    for item in qa["test"]:
        phrase = made["sounds"][item["video"]]  # "a steady low hum"
        assert item["answer_text"] in phrase.split() and item["answer_text"] in qa["vocab"]
        assert store.fbank(item["video"], FbankConfig(rate=AUDIO_RATE)) is not None
    retrieval = json.loads((tmp_path / f"txt_{DATASET}-aret.json").read_text())
    assert [r["caption"] for r in retrieval["test"]] == [
        made["sounds"][r["video"]] for r in retrieval["test"]
    ]
    captions = json.loads((tmp_path / f"txt_{DATASET}-acap.json").read_text())["train"]
    assert all(c["caption"].endswith("with " + made["sounds"][c["video"]]) for c in captions)
    chance = chance_levels(tmp_path)
    assert 0.33 <= chance["audio_qa"] <= 0.75 and chance["text_to_audio_R1"] == 0.25
    again = make_audio_demo(tmp_path, seed=0, n_train=4, n_val=1, n_test=4, frame_size=32, fps=4, sample=2)
    assert again == made  # reused, not rebuilt
