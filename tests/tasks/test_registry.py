"""Tasks and encoders by registration: a new task is ONE module, registered here in the test itself.

The toy task below ("what is the caption's first word?", answered at a [MASK]) lives only in this file. It is
trained for two steps through ``main_multi_task_mlm.py``'s code path, saved by the engine, loaded with
``Lavender.from_pretrained`` and run on a real video file, and no library file knows about it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lib.api import Lavender
from lib.data.annotations import load_annotations
from lib.data.datasets import stack_clips
from lib.engine.config import Config
from lib.model import layouts
from lib.model.mlm import logits_at
from lib.tasks.common import Predictor, Task, clip_dataset, model_device, open_store, txt_path
from lib.tasks.registry import (
    UnknownTaskError,
    canonical_name,
    get_task,
    register_task,
    task_names,
)

TOY = "toy-first-word"
PROMPT = "the first word is"


def toy_layout(tok, n: int, size_txt: int, words: list[str] | None = None) -> layouts.Layout:
    """``[CLS] the first word is [MASK] [SEP] [PAD]…``, the word's id as the label at the [MASK]."""
    body = tok(PROMPT, add_special_tokens=False)["input_ids"]
    row = [tok.cls_token_id, *body, tok.mask_token_id, tok.sep_token_id]
    row += [tok.pad_token_id] * (size_txt - len(row))
    ids = torch.tensor([row] * n)
    mask = (ids != tok.pad_token_id).long()
    labels = torch.full_like(ids, layouts.IGNORE_INDEX)
    pos = torch.full((n,), len(body) + 1)
    if words is not None:
        labels[torch.arange(n), pos] = torch.tensor(tok.convert_tokens_to_ids(words))
    return layouts.Layout(ids, mask, labels, mask_pos=pos, task="oe")


class ToyPredictor(Predictor):
    """The most probable word at the [MASK], from encoded videos alone (no annotation file, no TSV)."""

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        layout = toy_layout(self.tok, len(inputs), int(self.settings["size_txt"]))
        logits = logits_at(self.model, feat, mask, layout)
        words = self.tok.convert_ids_to_tokens(logits.argmax(-1).tolist())
        return [{"word": w} for w in words]


@register_task(TOY, aliases=("first-word",))
class ToyFirstWordTask(Task):
    predictor = ToyPredictor

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.store = open_store(cfg, cfg.dataset)
        self.ann = load_annotations(txt_path(cfg, cfg.task), "retrieval", video_ids=self.store.ids())

    def train_stream(self):
        return self.make_stream(self.name, clip_dataset(self.cfg, self.store, self.ann["train"], train=True))

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        words = [item["record"].text.split()[0] for item in items]
        layout = toy_layout(self.tok, len(items), self.cfg.size_txt, words)
        return {"video": stack_clips(items), "layout": layout, "ids": [i["id"] for i in items]}

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"].to(model_device(model)))
        layout = batch["layout"]
        logits = logits_at(model, feat, mask, layout)
        labels = layout.labels[torch.arange(len(logits)), layout.mask_pos]
        return {"loss": F.cross_entropy(logits.float(), labels)}

    def eval_splits(self) -> list[str]:
        return ["test"]

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        dataset = clip_dataset(self.cfg, self.store, records, train=False)
        clips = stack_clips([dataset[i] for i in range(len(records))]).to(model_device(model))
        feat, mask = model.encode_video(clips)
        found = self.make_predictor(model).predict(feat, mask, [{}] * len(records))
        hits = [f["word"] == r.text.split()[0] for f, r in zip(found, records)]
        return {"acc": 100.0 * sum(hits) / len(hits)}


def test_the_registry_finds_tasks_by_name_and_alias():
    assert {"pretrain", "retrieval", "qaoe", "qamc", "captioning", TOY} <= set(task_names())
    assert get_task("qa_open") is get_task("qaoe")  # a version-1 checkpoint key
    assert canonical_name("caption") == "captioning" and canonical_name("match") == "retrieval"
    assert get_task("first-word") is ToyFirstWordTask and ToyFirstWordTask.type_name == TOY
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'.*captioning.*qaoe"):
        get_task("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_task("qaoe")(type("Other", (Task,), {}))
    with pytest.raises(ValueError, match="reserved"):
        register_task("multi-task")


def test_a_task_registered_in_one_module_trains_saves_loads_and_predicts(
    demo_data: Path, tiny_args: list[str], tmp_path: Path
):
    from lib.tasks.run import run  # main_multi_task_mlm.py's code path

    out = tmp_path / "run"
    entries = [{"type": TOY, "task": "demo-retrieval"}, {"type": "qaoe", "task": "demo-qa"}]
    args = [*tiny_args, "--type", "multi-task", "--task", "toy-and-qa", "--datasets", json.dumps(entries)]
    args += ["--steps_per_epoch", "2", "--path_output", str(out)]
    random.seed(0)
    final = run("multi-task", args)
    assert 0.0 <= final[f"{TOY}_demo-retrieval/test/acc"] <= 100.0
    assert "qaoe_demo-qa/test/acc" in final
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in log) == 2  # two optimizer steps

    folder = out / "model"
    config = json.loads((folder / "config.json").read_text())
    assert [e["name"] for e in config["inference"]["tasks"][TOY]] == ["demo-retrieval"]
    assert f"- {TOY} (demo-retrieval)" in (folder / "README.md").read_text()

    api = Lavender.from_pretrained(folder, device="cpu")
    assert api.tasks[TOY] == ["demo-retrieval"] and api.tasks["qaoe"] == ["demo-qa"]
    videos = sorted((demo_data / "videos").glob("demo_test_*.mp4"))[:3]
    outputs = api.predict(TOY, videos)
    assert len(outputs) == 3 and all(isinstance(o["word"], str) and o["word"] for o in outputs)
    # the same predictor as the task's evaluation: the API on the files = the predictor on the TSV rows
    task = ToyFirstWordTask(Config({**_cfg_values(out), "type": TOY, "task": "demo-retrieval"}), api.tok)
    ids = [v.stem for v in videos]
    dataset = clip_dataset(task.cfg, task.store, [type("R", (), {"video": i})() for i in ids], train=False)
    with torch.no_grad():
        feat, mask = api.model.encode_video(stack_clips([dataset[i] for i in range(len(ids))]))
        direct = ToyPredictor(api.model, api.tok, api.settings["tasks"][TOY][0]).predict(feat, mask, [{}] * 3)
    assert outputs == direct
    assert api.predict("first-word", videos[0]) == outputs[0]  # an alias, one video


def _cfg_values(out: Path) -> dict[str, Any]:
    args = json.loads((out / "args.json").read_text())
    return {k: v for k, v in args.items() if k not in ("datasets", "type", "task")}
