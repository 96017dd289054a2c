"""The long-form demo suite's data (lib/demo/suites/long.py): order-swapped test groups, order questions
whose answers follow the videos, annotations read by the long-form tasks' own readers."""

from __future__ import annotations

from lib.data.annotations import load_annotations
from lib.data.tsv import TSVFile
from lib.demo.suites import long as suite


def test_long_demo_data_holds_order_swapped_groups_and_order_questions(tmp_path):
    summary = suite.build_data(tmp_path, seed=0, n_train=2, n_groups=1, n_orders=3)
    assert summary["videos"] == {"train": 2, "val": 3, "test": 3}
    test = load_annotations(tmp_path / suite.PARAGRAPH_TASK, "paragraph")["test"]  # ActivityNet's val_2.json
    paragraphs = [r.sentences for r in test]
    assert len({frozenset(p) for p in paragraphs}) == 1 and len(set(paragraphs)) == 3  # same events, 3 orders
    assert all(len(r.timestamps) == 4 and r.duration == 4.0 for r in test)
    qa = load_annotations(tmp_path / f"txt_{suite.QA_TASK}.json", "long_qa")
    paragraph_of = {r.video: r.sentences for r in test}
    for item in qa["test"]:
        events = [s.removeprefix("a ").removesuffix(" appears") for s in paragraph_of[item.video]]
        word, event = item.question.removeprefix("what happens ").removesuffix("?").split(" the ")
        k = events.index(event)
        assert item.options[item.answer] == events[k + 1 if word == "after" else k - 1]
        assert event not in item.options and len(set(item.options)) == 3
    assert len(qa["test"]) == 3 * 6  # 3 "after" + 3 "before" per video
    with TSVFile(tmp_path / f"img_{suite.DATASET}.tsv") as rows:
        assert len(rows) == 8 and len(rows.row(0)) == 2 + 32  # id, times, 32 frames
