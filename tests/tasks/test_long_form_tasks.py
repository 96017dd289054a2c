"""The long-form tasks (lib/tasks/long_form): paragraph retrieval, long-video QA and classification trained
for two steps and evaluated through ``lib.tasks.run`` on real 4-segment videos, their annotations read as
the public releases lay them (ActivityNet Captions' folder, How2QA-style rows, COIN.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from long_form_data import LONG_COLORS, LONG_ORDERS

from lib.api import Lavender
from lib.engine.config import ConfigError, load_config
from lib.predict import main as predict_main
from lib.tasks.long_form.paragraph_retrieval import ParagraphRetrievalTask
from lib.tasks.run import run


def test_long_form_keys_are_validated_and_documented(long_args, tokenizer):
    from lib.engine.config import help_text

    for bad, message in (
        (["--long_stage", "3"], "long_stage"),
        (["--mtc_weight", "-1"], "mtc_weight"),
        (["--long_sampling", "random"], "long_sampling"),
        (["--long_clips", "0"], "long_clips"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(bad)
    assert "--long_frames_per_clip" in help_text("main.py", "paragraph-retrieval")
    cfg = load_config([*long_args, "--task", "long-para", "--size_frame", "6"])
    with pytest.raises(ConfigError, match=r"size_frame=6.*2 x 4 = 8"):
        ParagraphRetrievalTask(cfg, tokenizer)
    with pytest.raises(ConfigError, match="contrastive_dim"):
        ParagraphRetrievalTask(
            load_config([*long_args, "--task", "long-para", "--long_form_dim", "0"]), tokenizer
        )


def test_paragraph_retrieval_trains_both_paths_and_ranks_dual_and_reranked(
    long_args, long_data, tmp_path, capsys
):
    args = [*long_args, "--type", "paragraph-retrieval", "--task", "long-para", "--long_stage", "0",
            "--retrieval_mode", "rerank", "--rerank_k", "1"]  # fmt: skip
    final = run("paragraph-retrieval", args)
    prefix = "long-para/test/"
    assert final[prefix + "n_texts"] == final[prefix + "n_videos"] == 2
    for mode in ("dual", "rerank"):
        for k in ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_R50", "t2v_MedR", "t2v_MeanR", "v2t_R1"):
            assert f"{prefix}{mode}/{k}" in final, (mode, k)
    assert final[prefix + "dual/fusion_pairs"] == 0 and final[prefix + "rerank/fusion_pairs"] == 2  # k=1
    assert final[prefix + "t2v_R1"] == final[prefix + "rerank/t2v_R1"]  # retrieval_mode's numbers unprefixed
    assert final[prefix + "t2v_R5"] == 100.0 and 1 <= final[prefix + "t2v_MeanR"] <= 2  # 2 videos
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if any(k.endswith("mtc_loss") for k in r)]
    assert len(train) == 2 and all(r["vtm_loss"] > 0 and r["global_loss"] > 0 for r in train)  # stage 0: both

    # the checkpoint predicts from video files through the API and the command line ...
    folder = tmp_path / "out" / "model"
    api = Lavender.from_pretrained(folder, device="cpu")
    assert api.tasks["paragraph-retrieval"] == ["long-para"]
    files = [long_data / "videos" / f"long_{i}.mp4" for i in (4, 5)]
    paragraphs = [{"paragraph": [f"the screen turns {c}." for c in LONG_ORDERS[i]]} for i in (4, 5)]
    outputs = api.predict("paragraph-retrieval", files, paragraphs)
    assert all(-1 <= o["similarity"] <= 1 and 0 <= o["score"] <= 1 for o in outputs)
    # ... with what the task's evaluation computes from the frame store's rows of the same videos
    cfg = load_config([*args, "--path_ckpt", str(folder)])
    task = ParagraphRetrievalTask(cfg, api.tok)
    with torch.no_grad():
        _, feats, masks = task.encode_videos(api.model, task.ann["test"])
        direct = task.make_predictor(api.model).predict(feats, masks, paragraphs)
    for got, want in zip(outputs, direct):
        assert got == pytest.approx(want, abs=1e-5)
    argv = ["--ckpt", str(folder), "--device", "cpu", "run", "paragraph-retrieval", str(files[0])]
    assert predict_main([*argv, "--input", json.dumps(paragraphs[0])]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["task"] == "paragraph-retrieval" and line["score"] == pytest.approx(
        outputs[0]["score"], abs=1e-5
    )


def test_long_qa_reads_how2qa_rows_with_subtitles_and_answers_at_the_mask(
    long_args, long_data, tokenizer, tmp_path
):
    from lib.tasks.long_form.qa import LongQATask, with_subtitle

    args = [*long_args, "--task", "long-qa", "--size_option", "3", "--size_txt", "40"]
    final = run("long-qa", [*args, "--type", "long-qa"])
    assert final["long-qa/test/n_items"] == 2 and final["long-qa/test/acc"] in (0.0, 50.0, 100.0)
    task = LongQATask(load_config(args), tokenizer)
    first = task.ann["train"][0]
    assert (first.video, first.options, first.answer) == ("long_0", ("green", "blue", "yellow"), 0)
    assert first.subtitle == "now watch closely"
    row = tokenizer.decode(task.layout([first], [0]).ids[0])
    assert "subtitles : now watch closely" in row and "option 2 : yellow" in row
    # a long subtitle is cut, never an option
    cut = with_subtitle(tokenizer, "what?", ["a", "b"], "word " * 100, 20)
    assert len(tokenizer(cut + " [SEP] option 0: a [SEP] option 1: b")["input_ids"]) - 2 <= 19
    assert cut.startswith("what? [SEP] subtitles: word")
    api = Lavender.from_pretrained(tmp_path / "out" / "model", device="cpu")
    video = long_data / "videos" / "long_4.mp4"
    question = {"question": "what colour comes after red?", "options": ["blue", "red", "green"]}
    out = api.predict("long-qa", video, {**question, "subtitle": "now watch closely"})
    assert out["answer"] in ("blue", "red", "green") and sum(out["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_long_classification_reads_coin_and_predicts_class_names(long_args, long_data, tokenizer, tmp_path):
    from lib.tasks.long_form.classification import LongClassificationTask

    final = run("long-classification", [*long_args, "--type", "long-classification", "--task", "long-cls"])
    assert final["long-cls/test/n_items"] == 2 and final["long-cls/test/n_classes"] == 4
    assert 0 <= final["long-cls/test/acc"] <= final["long-cls/test/acc_top5"] == 100.0  # 4 classes
    task = LongClassificationTask(load_config([*long_args, "--task", "long-cls"]), tokenizer)
    assert task.classes == [
        "red opening",
        "yellow opening",
        "green opening",
        "blue opening",
    ]  # COIN's CamelCase
    assert [r.video for r in task.ann["test"]] == ["long_4", "long_5"]  # subset testing -> test
    api = Lavender.from_pretrained(tmp_path / "out" / "model", device="cpu")
    outputs = api.predict("long-classification", [long_data / "videos" / f"long_{i}.mp4" for i in (4, 5)])
    assert all(o["label"] in task.classes and len(o["top"]) == 4 for o in outputs)


def test_stage_two_trains_the_matching_head_on_frozen_stage_one_weights(long_args, tmp_path):
    from safetensors.torch import load_file

    from lib.tasks.build import build_model

    text_layers = ["--txt_backbone_embed_only", "false", "--txt_layers", "2", "--steps_per_epoch", "1"]
    base = [*long_args, *text_layers, "--type", "paragraph-retrieval", "--task", "long-para"]
    one = tmp_path / "one"
    stage1 = run("paragraph-retrieval", [*base, "--long_stage", "1", "--path_output", str(one)])
    assert "long-para/test/rerank/t2v_R1" not in stage1  # stage 1 trains no matching head: dual only
    with pytest.raises(ConfigError, match="path_ckpt"):
        build_model(load_config([*base, "--long_stage", "2"]))
    with pytest.raises(ConfigError, match="text-only layers"):
        build_model(load_config([*long_args, "--long_stage", "2", "--path_ckpt", str(one / "model")]))
    two = tmp_path / "two"
    args = [*base, "--long_stage", "2", "--path_ckpt", str(one / "model"), "--retrieval_mode", "rerank"]
    final = run("paragraph-retrieval", [*args, "--path_output", str(two)])
    assert "long-para/test/rerank/t2v_R1" in final
    before, after = (
        load_file(one / "model" / "model.safetensors"),
        load_file(two / "model" / "model.safetensors"),
    )
    stage_one = [k for k in before if k.split(".")[0] in ("enc_img", "enc_txt", "vtc", "long_form")]
    assert any(k.startswith("enc_txt.txt_trsfr.") for k in stage_one) and any(
        k.startswith("long_form.") for k in stage_one
    )
    assert all(torch.equal(before[k], after[k]) for k in stage_one)  # frozen
    assert not torch.equal(
        before["trsfr.layer.0.attention.self.query.weight"],
        after["trsfr.layer.0.attention.self.query.weight"],
    )


def test_clips_within_activitynet_timestamps_show_their_sentences_segment(long_args, tokenizer):
    """4 clips x 2 frames, ``long_sampling timestamps``: clip k's frames lie in sentence k's span, so they
    show segment k's colour (the row's frame times come from the long-video extractor)."""
    four = [
        "--long_clips",
        "4",
        "--long_frames_per_clip",
        "2",
        "--long_sampling",
        "timestamps",
        "--long_stage",
        "0",
    ]
    cfg = load_config([*long_args, "--task", "long-para", *four])
    task = ParagraphRetrievalTask(cfg, tokenizer)
    records = task.ann["train"]
    batch = task.collate_train([task.dataset(records, train=True)[i] for i in range(len(records))])
    assert batch["clip_index"].tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]] * 4
    for b, record in enumerate(records):
        order = LONG_ORDERS[int(record.video.split("_")[1])]
        assert record.sentences == tuple(f"the screen turns {c}." for c in order)  # read as it is
        colours = batch["video"][b].float().mean(dim=(2, 3))  # (frames, 3)
        for t, k in enumerate(batch["clip_index"][b].tolist()):
            assert torch.allclose(colours[t], torch.tensor(LONG_COLORS[order[k]], dtype=torch.float), atol=12)
    assert batch["paragraph"].sentence_valid.sum().item() == 16 and batch["layout"].ids.shape[0] == 16


# --------------------------------------------------------------------------------------------------------
# 2 gloo ranks == 1 rank on paragraph retrieval (stage 1: the losses gathered over ranks; the evaluation)
# --------------------------------------------------------------------------------------------------------

TWO_RANKS = """
import json, random, sys
import torch
from lib.engine import distributed as D
from lib.engine.config import load_config
from lib.tasks.build import build_model
from lib.tasks.common import load_tokenizer
from lib.tasks.long_form.paragraph_retrieval import ParagraphRetrievalTask

out = sys.argv[1]
cfg = load_config(json.load(open(f"{out}/argv.json")))
D.init_distributed(force_process_group=True)
rank, world = D.get_rank(), D.get_world_size()
tok = load_tokenizer(cfg.txt_backbone)
torch.manual_seed(0)
model = build_model(cfg, tok).eval()  # no dropout / drop path: the torch RNG draws only MTC's plan
task = ParagraphRetrievalTask(cfg, tok)
data = task.dataset(task.ann["train"], train=False)
items = [data[i] for i in range(4)]

def step(part):
    random.seed(1)
    torch.manual_seed(1)  # the plan: rank 0's draw (broadcast) = the one process's draw
    model.zero_grad()
    found = task.step(model, task.collate_train(part))
    found["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return found["loss"].detach(), grads

with torch.no_grad():
    metrics = task.evaluate(model, "train")
loss, grads = step(items[2 * rank : 2 * rank + 2])
for g in grads.values():  # DDP's average
    torch.distributed.all_reduce(g)
    g /= world
torch.distributed.all_reduce(loss)
result = {"loss": loss.item() / world, "metrics": metrics}
torch.distributed.destroy_process_group()
if rank == 0:  # one process, the four samples, the same plan
    with torch.no_grad():
        result["single_metrics"] = task.evaluate(model, "train")
    single, single_grads = step(items)
    result["single_loss"] = single.item()
    result["names"] = sorted(single_grads)
    result["grad_diff"] = max((grads[n] - g).abs().max().item() for n, g in single_grads.items())
    result["grad_norm"] = max(g.abs().max().item() for g in single_grads.values())
json.dump(result, open(f"{out}/rank{rank}.json", "w"))
"""


@pytest.mark.distributed
def test_two_gloo_ranks_equal_one_rank_on_paragraph_retrieval(long_args, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "gloo_ranks", Path(__file__).parents[1] / "model" / "gloo_ranks.py"
    )
    gloo_ranks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gloo_ranks)
    argv = [*long_args, "--type", "paragraph-retrieval", "--task", "long-para", "--long_stage", "1",
            "--retrieval_mode", "rerank", "--rerank_k", "2", "--mtc_num_other", "2"]  # fmt: skip
    (tmp_path / "argv.json").write_text(json.dumps(argv))
    zero, one = gloo_ranks.run_two_ranks(TWO_RANKS, tmp_path)
    assert zero["loss"] == one["loss"] == pytest.approx(zero["single_loss"], abs=1e-5)
    assert any(n.startswith("long_form.proj_video") for n in zero["names"])  # MTC reached the clip features
    assert any(n.startswith("enc_img.swin") for n in zero["names"])
    assert zero["grad_diff"] <= 1e-5 * max(1.0, zero["grad_norm"])
    timeless = [{k: v for k, v in r["metrics"].items() if k != "seconds"} for r in (zero, one)]
    assert timeless[0] == timeless[1] and timeless[0]["n_texts"] == 4
    for key in ("dual/t2v_R1", "rerank/t2v_R1", "t2v_MeanR", "v2t_MeanR", "rerank/fusion_pairs", "n_texts"):
        assert zero["metrics"][key] == pytest.approx(zero["single_metrics"][key]), key
