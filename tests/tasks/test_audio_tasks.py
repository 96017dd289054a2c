"""Audio as a third modality through the registered tasks: modality groups (VALOR's tv / ta / tva), the audio
read by video id, clips without audio, a run through the entry point, 2 ranks = 1 rank, and the API / CLI
on a user's own video file with sound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_data import DATASET, av_args

from lib.data.audio import AudioStore, audio_slices, audio_tsv_path
from lib.data.tsv import TSVFile, TSVWriter
from lib.engine.config import ConfigError, load_config
from lib.model.checkpoint import CheckpointError
from lib.model.encoders.audio import AudioEncoder
from lib.tasks.build import build_model, model_config
from lib.tasks.caption import CaptionTask
from lib.tasks.common import clip_dataset, context_modalities, fbank_config, open_store
from lib.tasks.qa_open import OpenQATask
from lib.tasks.run import build_tasks, run

REPO = Path(__file__).resolve().parents[2]
MULTI = [
    {"type": "qaoe", "task": f"{DATASET}-qa", "modality_groups": ["tva", "ta"]},
    {"type": "retrieval", "task": f"{DATASET}-retrieval", "modality_groups": ["ta", "tva"]},
    {"type": "qamc", "task": f"{DATASET}-mc", "size_option": 4},
    {"type": "captioning", "task": f"{DATASET}-captioning", "modality_groups": ["tva"]},
]


def config(minilm_dir, av_data, out, *extra):
    return load_config([*av_args(minilm_dir, av_data, out), *map(str, extra)])


@pytest.fixture(scope="module")
def trained(minilm_dir, av_data, tmp_path_factory):
    """3 steps of one multi-task run over every audio task (the main_multi_task_mlm.py code): its output."""
    out = tmp_path_factory.mktemp("av-run")
    argv = [*av_args(minilm_dir, av_data, out), "--type", "multi-task", "--datasets", json.dumps(MULTI),
            "--steps_per_epoch", "3", "--size_epoch", "1", "--eval_every", "0"]  # fmt: skip
    return out, run("multi-task", argv)


def test_modality_groups_make_one_task_per_group(minilm_dir, av_data, tmp_path, tokenizer):
    cfg = config(minilm_dir, av_data, tmp_path, "--type", "qaoe", "--task", f"{DATASET}-qa",
                 "--modality_groups", '["tva", "ta", "tv"]')  # fmt: skip
    tasks = build_tasks(cfg, tokenizer)
    assert [t.name for t in tasks] == [f"{DATASET}-qa%tva", f"{DATASET}-qa%ta", f"{DATASET}-qa%tv"]
    assert [context_modalities(t.cfg) for t in tasks] == [("video", "audio"), ("audio",), ("video",)]
    items = [t.train_stream().dataset[0] for t in tasks]
    assert {"video", "audio"} <= set(items[0]) and "video" not in items[1] and "audio" not in items[2]
    with pytest.raises(ConfigError, match="modality group 'ta' needs \\['audio'\\] in modalities"):
        build_tasks(cfg.override({"modalities": ["video"], "modality_groups": ["ta"]}), tokenizer)
    with pytest.raises(ConfigError, match="'tav' is not one of"):
        cfg.override({"modality_groups": ["tav"]})
    with pytest.raises(ConfigError, match="audio_encoder .*unexpected keyword argument 'depht'"):
        build_model(cfg.override({"audio_encoder": {"depht": 2}}))


def test_audio_ckpt_loads_the_public_ast_layout_and_a_wrong_one_is_named(minilm_dir, av_data, tmp_path):
    cfg = config(minilm_dir, av_data, tmp_path)
    ast = AudioEncoder(model_config(cfg)).ast  # the shapes of the run's audio encoder
    width = ast.cls_token.shape[-1]
    g = torch.Generator().manual_seed(0)
    sd = {f"module.v.{k}": torch.randn(v.shape, generator=g) for k, v in ast.state_dict().items()}
    sd["module.v.pos_embed"] = torch.randn(1, 2 + 12 * 101, width, generator=g)  # AST's [CLS], [DIST], 12x101
    sd["module.v.dist_token"] = torch.randn(1, 1, width, generator=g)
    sd["mlp_head.1.weight"] = torch.randn(527, width, generator=g)
    torch.save(sd, tmp_path / "audioset_10_10_0.4593.pth")
    loaded = build_model(cfg.override({"audio_ckpt": str(tmp_path / "audioset_10_10_0.4593.pth")}))
    assert torch.equal(loaded.enc_aud.ast.blocks[0].mlp.fc1.weight, sd["module.v.blocks.0.mlp.fc1.weight"])
    assert loaded.load_reports["audio"]["resized"] == {"v.pos_embed": "12x101 -> 2x4"}
    del sd["module.v.norm.weight"]
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="short.pth is not an AST checkpoint.*missing norm.weight"):
        build_model(cfg.override({"audio_ckpt": str(tmp_path / "short.pth")}))


def test_audio_is_read_by_video_id_not_by_row_order(minilm_dir, av_data, tmp_path):
    """The audio table in reverse order (and without one video's row) beside the same frames: every item
    still gets its own video's audio; the video without a row is an error naming it and the store."""
    for name in (f"img_{DATASET}.tsv", f"img_{DATASET}.lineidx"):
        (tmp_path / name).symlink_to(av_data / name)
    with TSVFile(audio_tsv_path(av_data / f"img_{DATASET}.tsv")) as table:
        rows = [table.row(i) for i in range(len(table))]
    with TSVWriter(audio_tsv_path(tmp_path / f"img_{DATASET}.tsv")) as writer:
        for row in rows[::-1]:
            if row[0] != b"av_test_1":
                writer.write(row)
    cfg = config(minilm_dir, tmp_path, tmp_path / "out")
    store = open_store(cfg, DATASET)
    records = [type("R", (), {"video": v})() for v in ("av_train_0", "av_train_1", "av_train_silent")]
    items = [clip_dataset(cfg, store, records, train=False)[i] for i in range(3)]
    original = AudioStore.beside(av_data / f"img_{DATASET}.tsv")
    for item in items:
        expected, has_audio = audio_slices(original, item["id"], fbank_config(cfg))
        assert np.array_equal(item["audio"], expected) and item["has_audio"] == has_audio
    assert [item["has_audio"] for item in items] == [True, True, False]
    assert not np.array_equal(items[0]["audio"], items[1]["audio"])  # a low and a high tone
    with pytest.raises(ValueError, match="'av_test_1' has no row in .*img_av.audio.tsv"):
        clip_dataset(cfg, store, [type("R", (), {"video": "av_test_1"})()], train=False)[0]


def test_a_clip_without_audio_trains_and_is_masked(minilm_dir, av_data, tmp_path, tokenizer):
    cfg = config(minilm_dir, av_data, tmp_path, "--type", "qaoe", "--task", f"{DATASET}-qa")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    task = OpenQATask(cfg, tokenizer)
    dataset = task.train_stream().dataset
    silent = [i for i, r in enumerate(dataset.records) if r.video == "av_train_silent"]
    batch = task.collate_train([dataset[i] for i in silent])  # a batch with no audio at all
    assert not batch["video"]["masks"]["audio"].any() and not batch["video"]["audio"].any()
    out = task.step(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.enc_aud.ast.patch_embed.proj.weight.grad is None  # nothing of its audio was computed
    assert model.enc_img.swin.patch_embed.proj.weight.grad.abs().sum() > 0


def test_audio_tasks_train_and_evaluate_through_the_entry_point(trained):
    out, metrics = trained
    qa, ret, mc, cap = (f"{t['type']}_{t['task']}" for t in MULTI)
    for group in (
        "tva",
        "ta",
    ):  # per group: QA accuracy and R@K, every item counted (clips without audio too)
        assert (
            metrics[f"{qa}%{group}/test/n_items"] == 10 and metrics[f"{qa}%{group}/test/acc_type/sound"] >= 0
        )
        assert metrics[f"{ret}%{group}/test/n_texts"] == metrics[f"{ret}%{group}/test/n_videos"] == 5
        assert 0 <= metrics[f"{ret}%{group}/test/t2v_R1"] <= metrics[f"{ret}%{group}/test/t2v_R5"] == 100
    assert metrics[f"{mc}/test/n_items"] == 5 and metrics[f"{cap}%tva/test/n_videos"] == 5
    captions = json.loads((out / "captions_test.json").read_text())
    assert {c["video"] for c in captions} >= {"av_test_silent", "av_test_0"}
    settings = json.loads((out / "model" / "config.json").read_text())["inference"]
    assert settings["audio"]["rate"] == 16000 and settings["audio"]["n_slices"] == 2
    assert [(e["name"], e["modalities"]) for e in settings["tasks"]["retrieval"]] == [
        (f"{DATASET}-retrieval%ta", ["audio"]), (f"{DATASET}-retrieval%tva", ["video", "audio"])]  # fmt: skip


def test_favd_paragraphs_are_captioning_with_long_texts(minilm_dir, av_data, tmp_path, tokenizer):
    """FAVD's audible paragraphs (captions of up to 300 tokens, decoding up to 115) through the captioning
    task on the audio-visual group, scored with EntityScore too."""
    long = ["--size_txt", "300", "--max_gen_length", "115", "--caption_entity_score", "all-MiniLM-L6-v2"]
    cfg = config(minilm_dir, av_data, tmp_path, "--type", "captioning", "--task", f"{DATASET}-favd", *long)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    task = CaptionTask(cfg, tokenizer)
    dataset = task.train_stream().dataset
    batch = task.collate_train([dataset[0], dataset[1]])
    paragraph = dataset.records[0].text
    n_pieces = len(tokenizer.tokenize(paragraph))
    assert n_pieces > 50 and batch["layout"].ids.shape[1] == 300
    assert batch["layout"].mask.sum(1).tolist()[0] == n_pieces + 2  # the whole paragraph, [CLS] and [SEP]
    assert "beeps" in paragraph and {"video", "audio"} <= set(batch["video"])
    loss = task.step(model, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        feat, mask = model.encode_video(batch["video"])
        found = task.make_predictor(model).captions(feat[:1], mask[:1])
    assert 1 <= len(found[0].ids) <= 115  # cached greedy decoding up to 115 tokens
    scores = task.entity_scores({"av_train_0": paragraph, "av_train_1": found[0].text(tokenizer)},
                                {"av_train_0": [paragraph], "av_train_1": [paragraph]})  # fmt: skip
    assert scores["EntityScore_n_skipped"] <= 1 and 0 < scores["EntityScore"] <= 1 + 1e-3


def test_the_api_and_cli_answer_and_caption_with_sound_on_a_video_file(trained, av_data, capsys):
    from lib.api import Lavender, Video
    from lib.predict import main

    out, _ = trained
    api = Lavender.from_pretrained(out / "model", device="cpu")
    video = av_data / "videos" / "av_test_1.mkv"  # Opus sound
    question = "what sound does the square make?"
    heard = api.answer(str(video), question, task=f"{DATASET}-qa%ta", with_scores=True)
    assert heard["answer"] in {"low", "high", "none", "red", "blue"}
    # the file's sound is what the audio store holds for it: the same scores from its stored row
    with TSVFile(av_data / f"img_{DATASET}.tsv") as table:
        row = table.row(table.index_of("av_test_1"))
    stored = AudioStore.beside(av_data / f"img_{DATASET}.tsv").fbank("av_test_1", api._fbank_config())
    ta = f"{DATASET}-qa%ta"
    from_store = api.answer(
        Video("row", jpegs=tuple(row[1:]), fbank=stored), question, task=ta, with_scores=True
    )
    assert dict(from_store["top"]) == pytest.approx(dict(heard["top"]))
    deaf = api.answer(Video("row", jpegs=tuple(row[1:])), question, task=f"{DATASET}-qa%ta", with_scores=True)
    assert dict(deaf["top"]) != pytest.approx(dict(heard["top"]))  # the answer depends on the sound
    caption = api.caption(str(video), with_scores=True)
    silent_caption = api.caption(Video("row", jpegs=tuple(row[1:])), with_scores=True)
    assert isinstance(caption["caption"], str) and caption["score"] != pytest.approx(silent_caption["score"])

    status = main(["--ckpt", str(out / "model"), "answer", str(video), "--question", question,
                   "--task", f"{DATASET}-qa%ta"])  # fmt: skip
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and records[0]["answer"] == heard["answer"]
    status = main(["--ckpt", str(out / "model"), "caption", str(video)])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and records[0]["caption"] == caption["caption"]


@pytest.mark.distributed
def test_two_gloo_ranks_equal_one_rank_on_an_audio_task(minilm_dir, av_data, tmp_path):
    """main_qaoe_mlm.py on the text-audio-video group: 2 ranks x 2 clips = 1 rank x 4 clips, step for step."""
    settings = ["--type", "qaoe", "--task", f"{DATASET}-qa", "--steps_per_epoch", "2", "--size_epoch", "1",
                "--eval_every", "0", "--save_model_every_epoch", "false"]  # fmt: skip
    one = run("qaoe", [*av_args(minilm_dir, av_data, tmp_path / "one"), *settings])
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "main_qaoe_mlm.py"]
    argv = [*av_args(minilm_dir, av_data, tmp_path / "two"), *settings, "--size_batch", "2"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([*launch, *argv], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = [map(json.loads, (tmp_path / d / "log.jsonl").read_text().splitlines()) for d in ("one", "two")]
    losses = [[(r["step"], r["loss"]) for r in log if r["kind"] == "train"] for log in logs]
    assert len(losses[0]) == 2 and [s for s, _ in losses[0]] == [s for s, _ in losses[1]]
    assert np.allclose([v for _, v in losses[0]], [v for _, v in losses[1]], atol=1e-5), losses
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two == pytest.approx(one, abs=1e-4)
