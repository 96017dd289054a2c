"""Pretraining (lib.tasks.pretrain): frames from shards or one table, one stream per dataset, MTM + VTM,
validation accuracies counted once per item (also on two gloo ranks, with captioning evaluated there too).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quick_training import freeze_for_speed

from lib.data.datasets import stack_clips_padded
from lib.data.tsv import TSVFile, TSVWriter, frame_columns
from lib.engine.config import Config, load_config
from lib.engine.distributed import find_free_port
from lib.model.layouts import IGNORE_INDEX, special_ids, true_false_ids
from lib.tasks.build import build_model
from lib.tasks.common import clip_transform
from lib.tasks.pretrain import (
    PretrainSource,
    PretrainTask,
    global_vtm_pairs,
    matching_candidates,
    open_frames,
)
from lib.tasks.run import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pretrain_data(demo_data, tmp_path_factory) -> Path:
    """``demo``: train rows in 2 shards + a val table; ``demoimg``: every video's first frame (an image
    dataset) in one table; both with the demo's pretraining captions."""
    out = tmp_path_factory.mktemp("pretrain")
    captions = json.loads((demo_data / "txt_demo-pretrain.json").read_text())
    for name in ("demo", "demoimg"):
        (out / f"txt_{name}.json").write_text(json.dumps(captions))
    with TSVFile(demo_data / "img_demo.tsv") as table:
        rows = [table.row(i) for i in range(len(table))]
    train = [r for r in rows if r[0].decode() in captions["train"]]
    tables = {
        "demo_train_0": train[0::2],
        "demo_train_1": train[1::2],
        "demo_val": [r for r in rows if r[0].decode() in captions["val"]],
        "img_demoimg": [[r[0], frame_columns(r)[0]] for r in rows],
    }
    for prefix, table_rows in tables.items():
        with TSVWriter(out / prefix) as writer:
            for row in table_rows:
                writer.write(row)
    return out


def pretrain_config(tiny_args: list[str], data: Path, *extra: str) -> Config:
    return load_config(
        [*tiny_args, "--type", "pretrain", "--data_dir", str(data), "--size_part", "2", *extra]
    )


def batch_items(stream, n: int = 4) -> list[dict]:
    return [stream.dataset[i] for i in range(n)]


# ------------------------------------------------------------------------------------------------ data


def test_frames_come_from_shards_or_from_one_table(tiny_args, pretrain_data):
    cfg = pretrain_config(tiny_args, pretrain_data)
    shards = open_frames(cfg, "demo")
    assert [p.name for p in shards.paths] == ["demo_train_0.tsv", "demo_train_1.tsv", "demo_val.tsv"]
    assert len(shards) == 24 + 6
    images = open_frames(cfg, "demoimg")
    assert [p.name for p in images.paths] == ["img_demoimg.tsv"]
    clip = images.clip("demo_val_00000", cfg.size_frame, clip_transform(cfg, train=False))
    assert clip.shape == (1, 3, 64, 64)  # an image row is a one-frame clip, whatever size_frame says
    with pytest.raises(FileNotFoundError, match="--size_part 2"):
        open_frames(pretrain_config(tiny_args, pretrain_data, "--size_part", "3"), "demo")
    with pytest.raises(FileNotFoundError, match="nowhere_train_0.*img_nowhere.tsv"):
        open_frames(cfg, "nowhere")


def test_violet_shard_names_work_too_and_a_miss_says_what_was_looked_for(tiny_args, pretrain_data, tmp_path):
    """VIOLET names its shards img_{dataset}_train_{k}.tsv / img_{dataset}_val.tsv (issue #28, item 4)."""
    for ours, violet in (("demo_train_0", "img_vt_train_0"), ("demo_train_1", "img_vt_train_1"),
                         ("demo_val", "img_vt_val")):  # fmt: skip
        for suffix in (".tsv", ".lineidx"):
            shutil.copy(pretrain_data / f"{ours}{suffix}", tmp_path / f"{violet}{suffix}")
    cfg = pretrain_config(tiny_args, tmp_path)
    store = open_frames(cfg, "vt")
    assert [p.name for p in store.paths] == ["img_vt_train_0.tsv", "img_vt_train_1.tsv", "img_vt_val.tsv"]
    assert len(store) == 24 + 6
    with pytest.raises(FileNotFoundError) as e:
        open_frames(cfg, "nowhere")
    assert "nowhere_train_0..1.tsv, VIOLET's img_nowhere_train_0..1.tsv and one table img_nowhere.tsv" in str(
        e.value
    )


def test_annotated_videos_without_frames_are_left_out(tiny_args, pretrain_data, tmp_path, caplog):
    captions = json.loads((pretrain_data / "txt_demo.json").read_text())
    captions["train"]["ghost_video"] = ["a video that was never extracted"]
    (tmp_path / "txt_demo.json").write_text(json.dumps(captions))
    cfg = pretrain_config(tiny_args, pretrain_data, "--txt_dir", str(tmp_path))
    source = PretrainSource.open(cfg, "demo")
    assert len(source.splits["train"]) == 24 and len(source.splits["val"]) == 6
    assert "ghost_video" in caplog.text


def test_each_dataset_is_its_own_stream_and_images_are_one_frame_clips(tiny_args, pretrain_data, tokenizer):
    cfg = pretrain_config(tiny_args, pretrain_data, "--dataset", '["demo", "demoimg"]')
    task = PretrainTask(cfg, tokenizer)
    streams = task.train_streams()
    assert [s.name for s in streams] == ["pretrain/demo", "pretrain/demoimg"]
    videos, images = (s.collate_fn(batch_items(s)) for s in streams)
    assert videos["video"].shape == (4, 4, 3, 64, 64) and images["video"].shape == (4, 1, 3, 64, 64)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    for stream, batch in zip(streams, (videos, images)):
        assert math.isfinite(stream.step_fn(model, batch)["loss"].item())
    with pytest.raises(ValueError, match="train_streams"):
        task.train_stream()
    assert task.eval_splits() == ["val"]


def test_one_frame_clips_are_repeated_to_the_batch_frame_count():
    clips = [torch.rand(4, 3, 8, 8), torch.rand(1, 3, 8, 8)]
    stacked = stack_clips_padded([{"id": str(i), "video": c} for i, c in enumerate(clips)])
    assert stacked.shape == (2, 4, 3, 8, 8)
    assert torch.equal(stacked[0], clips[0]) and all(torch.equal(f, clips[1][0]) for f in stacked[1])


# ------------------------------------------------------------------------------------------ objectives


def test_a_batch_carries_masked_text_and_one_positive_plus_three_negatives_per_video(
    tiny_args, pretrain_data, tokenizer
):
    task = PretrainTask(pretrain_config(tiny_args, pretrain_data), tokenizer)
    (stream,) = task.train_streams()
    items = batch_items(stream)
    batch = stream.collate_fn(items)
    for item, text in zip(items, batch["texts"]):
        assert text in item["record"].captions
    mtm = batch["mtm"]
    supervised = mtm.labels != IGNORE_INDEX
    assert mtm.ids.shape == (4, 16) and (supervised.sum(1) >= 1).all()
    assert (mtm.ids[supervised] == tokenizer.mask_token_id).all()
    assert not torch.isin(mtm.labels[supervised], torch.tensor(special_ids(tokenizer))).any()
    vtm = batch["vtm"]
    true_id, false_id = true_false_ids(tokenizer)
    assert batch["pair_video"].tolist() == [v for v in range(4) for _ in range(4)]
    labels = vtm.labels[torch.arange(16), vtm.mask_pos].view(4, 4)
    assert (labels[:, 0] == true_id).all() and (labels[:, 1:] == false_id).all()
    only_vtm = PretrainTask(
        pretrain_config(tiny_args, pretrain_data, "--pretrain_tasks", '["vtm"]'), tokenizer
    )
    assert "mtm" not in only_vtm.train_streams()[0].collate_fn(items)


def test_the_loss_is_the_sum_of_both_objectives_and_overfitting_lowers_it(
    tiny_args, pretrain_data, tokenizer
):
    task = PretrainTask(pretrain_config(tiny_args, pretrain_data), tokenizer)
    (stream,) = task.train_streams()
    batch = stream.collate_fn(batch_items(stream))  # one fixed batch (masking and negatives included)
    torch.manual_seed(0)
    model = build_model(task.cfg, tokenizer)
    trained = freeze_for_speed(model)
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(20):
        out = stream.step_fn(model, batch)
        assert out["loss"].item() == pytest.approx((out["mtm_loss"] + out["vtm_loss"]).item())
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4


def test_global_negatives_in_one_process_come_from_the_batch():
    texts = ["a", "b", "c", "d", "e"]
    video, pair_texts, matched = global_vtm_pairs(texts, 3, random.Random(0))
    assert video == [v for v in range(5) for _ in range(4)]
    for v in range(5):
        group = pair_texts[4 * v : 4 * v + 4]
        assert group[0] == texts[v] and matched[4 * v : 4 * v + 4] == [True, False, False, False]
        assert len(set(group)) == 4


def test_matching_candidates_are_fixed_and_never_share_the_positive_text():
    texts = ["a", "b", "a", "c", "d", "e"]
    candidates = matching_candidates(texts, 3, seed=5)
    assert candidates == matching_candidates(texts, 3, seed=5)
    for i, group in enumerate(candidates):
        assert group[0] == i and len(group) == 4 and len(set(group)) == 4
        assert all(texts[j] != texts[i] for j in group[1:])
    assert matching_candidates(["same", "same"], 3, seed=0) == [[0], [1]]


# ------------------------------------------------------------------------------------------ evaluation


def test_validation_accuracies_do_not_depend_on_batching(tiny_args, pretrain_data, tokenizer):
    cfg = pretrain_config(tiny_args, pretrain_data)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()
    with torch.no_grad():
        by_4 = PretrainTask(cfg, tokenizer).evaluate(model, "val")
        by_5 = PretrainTask(cfg.override({"size_batch": 5}), tokenizer).evaluate(model, "val")
    assert by_4 == by_5
    assert by_4["n_items"] == 6 and by_4["n_matching_items"] == 6 and by_4["n_masked_tokens"] >= 6
    assert 0 <= by_4["masked_token_acc"] <= 1 and 0 <= by_4["matching_acc"] <= 1


def test_entry_point_pretrains_on_two_datasets_as_two_streams(tiny_args, pretrain_data):
    args = ["--data_dir", str(pretrain_data), "--size_part", "2", "--dataset", '["demo", "demoimg"]']
    final = run("pretrain", [*tiny_args, *args, "--steps_per_epoch", "4"])
    out = Path(tiny_args[tiny_args.index("--path_output") + 1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx(final)
    for dataset in ("demo", "demoimg"):
        assert {f"pretrain/val/{dataset}/{k}" for k in ("masked_token_acc", "matching_acc")} <= set(metrics)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 4 and {r["stream"] for r in train} == {"pretrain/demo", "pretrain/demoimg"}
    assert all(math.isfinite(r["loss"]) for r in train)


def test_global_negatives_make_the_pairs_in_the_step(tiny_args, pretrain_data, tokenizer):
    cfg = pretrain_config(tiny_args, pretrain_data, "--vtm_negatives_global", "true")
    (stream,) = PretrainTask(cfg, tokenizer).train_streams()
    batch = stream.collate_fn(batch_items(stream))
    assert "vtm" not in batch  # built in the step, after the texts of every rank are gathered
    torch.manual_seed(0)
    out = stream.step_fn(build_model(cfg, tokenizer), batch)
    assert math.isfinite(out["vtm_loss"].item()) and 0 <= out["vtm_acc"].item() <= 1


# ---------------------------------------------------------------------------------------- two ranks

DISTRIBUTED_SCRIPT = """
import json, random, sys
import torch
import torch.distributed as dist
from lib.engine import distributed as D
from lib.engine.config import load_config
from lib.tasks.caption import CaptionTask
from lib.tasks.common import load_tokenizer
from lib.tasks.build import build_model
from lib.tasks.pretrain import PretrainTask, global_vtm_pairs

out, args = sys.argv[1], json.loads(sys.argv[2])
D.init_distributed()
rank = D.get_rank()
pre_cfg, cap_cfg = load_config(args["pretrain"]), load_config(args["caption"])
tok = load_tokenizer(pre_cfg.txt_backbone)
torch.manual_seed(0)
model = build_model(pre_cfg, tok).eval()
pretrain, caption = PretrainTask(pre_cfg, tok), CaptionTask(cap_cfg, tok)
caption.backend = "python"
result = {"weights": float(sum(p.double().sum() for p in model.parameters()))}
_, result["pairs"], _ = global_vtm_pairs([f"rank{rank} text{i}" for i in range(3)], 3, random.Random(rank))
with torch.no_grad():
    result["pretrain"] = pretrain.evaluate(model, "val")
    result["caption"] = caption.evaluate(model, "test")
    dist.barrier()
    if rank == 0:
        result["captions"] = json.load(open(cap_cfg.path_output + "/captions_test.json"))
    dist.destroy_process_group()
    if rank == 0:  # the same evaluations in one process
        result["single_pretrain"] = pretrain.evaluate(model, "val")
        result["single_caption"] = caption.evaluate(model, "test")
json.dump(result, open(f"{out}/rank{rank}.json", "w"))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_evaluate_every_item_once_and_share_negatives(tiny_args, pretrain_data, tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    args = {
        "pretrain": [*tiny_args, "--type", "pretrain", "--data_dir", str(pretrain_data), "--size_part", "2"],
        "caption": [*tiny_args, "--type", "captioning", "--task", "demo-captioning", "--size_batch", "3"],
    }
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(find_free_port())]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [*launcher, str(script), str(tmp_path), json.dumps(args)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    for r, result in enumerate(ranks):  # each video's negatives are drawn from both ranks' texts
        assert result["pairs"][::4] == [f"rank{r} text{i}" for i in range(3)]
        assert any(t.startswith(f"rank{1 - r}") for t in result["pairs"])
    zero = ranks[0]
    assert zero["pretrain"] == ranks[1]["pretrain"] == zero["single_pretrain"]
    assert zero["pretrain"]["n_items"] == 6
    assert zero["caption"]["n_videos"] == 8
    assert {k: v for k, v in zero["caption"].items() if k != "decode_s_per_video"} == pytest.approx(
        {k: v for k, v in zero["single_caption"].items() if k != "decode_s_per_video"}
    )
    test_videos = [f"demo_test_{i:05d}" for i in range(8)]
    assert [p["video"] for p in zero["captions"]] == test_videos
