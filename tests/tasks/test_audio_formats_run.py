"""A MUSIC-AVQA-format annotation folder (``avqa-{split}.json`` as released) drives a real short run of the
open-ended QA task on the audio-visual group: the templated questions reach the task filled."""

from __future__ import annotations

import json

import pytest
from audio_data import DATASET, SPLITS, av_args, video_id

from lib.engine.config import load_config
from lib.tasks.qa_open import OpenQATask
from lib.tasks.run import run


@pytest.mark.slow  # the shared audio-visual dataset is built once per session; the run itself is short
def test_music_avqa_folder_drives_an_audio_qa_run(minilm_dir, av_data, tmp_path, tokenizer):
    data = tmp_path / "data"
    data.mkdir()
    for path in av_data.glob(f"img_{DATASET}.*"):
        (data / path.name).symlink_to(path)
    task = f"{DATASET}-avqa"
    for split, clips in SPLITS.items():
        rows = [{"video_id": video_id(split, i, pitch), "question_id": i, "type": '["Audio", "Existential"]',
                 "question_content": "Is the <Object> making a <Sound> sound?",
                 "templ_values": f'["square", "{pitch or "any"}"]', "anser": "yes" if pitch else "no"}
                for i, (_, pitch) in enumerate(clips)]  # fmt: skip
        (data / task).mkdir(exist_ok=True)
        (data / task / f"avqa-{split}.json").write_text(json.dumps(rows))
    steps = ["--steps_per_epoch", "2", "--size_epoch", "1", "--eval_every", "0"]
    argv = [*av_args(minilm_dir, data, tmp_path / "out"), "--type", "qaoe", "--task", task,
            "--modality_groups", '["tva"]', *steps]  # fmt: skip
    ann = OpenQATask(load_config(argv), tokenizer).ann
    first = ann["train"][0]
    assert first.question == "Is the square making a low sound?" and first.qtype == "Audio_Existential"
    metrics = run("qaoe", argv)
    assert metrics[f"{task}%tva/test/n_items"] == len(SPLITS["test"])
    assert f"{task}%tva/test/acc_type/Audio_Existential" in metrics
