"""The main job end to end, shortened: real videos → extractor → TSV → one multi-task model → report.

This checks the pipeline and the report, not learning: runs short enough for CI do not yet learn reliably
(one 800-step run learned colour questions, a 1,200-step run did not); the full `make demo` run's numbers
are in BENCHMARKS.md and the report it writes.
"""

from __future__ import annotations

import json

import pytest

from lib import demo


@pytest.mark.slow
def test_quick_demo_writes_the_table_report_and_pictures(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--quick", "--data", str(tmp_path / "data"), "--out", str(out), "--n_train", "30",
            "--n_val", "6", "--n_test", "12", "--size_epoch", "1", "--steps_per_epoch", "6"]  # fmt: skip
    assert demo.main(argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    keys = set(summary["metrics"])
    for task, metric, _, _ in demo.ROWS:
        if metric != "METEOR":  # METEOR needs Java; everything else is always reported
            assert f"{task}/test/{metric}" in keys
    for row in summary["metrics"].values():
        assert row["value"] >= 0.0 and (row["chance"] is None or 0.0 <= row["chance"] <= 10.0)
    r1 = summary["metrics"]["retrieval_demo-retrieval/test/t2v_R1"]
    assert r1["chance"] == pytest.approx(1 / 12) and 0.0 <= r1["value"] <= 1.0
    report = (out / "report.md").read_text()
    assert "| metric | test | chance | target |" in report and "![curves](curves.png)" in report
    for png in ("curves.png", "examples.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    printed = capsys.readouterr().out
    assert "retrieval text→video R@1" in printed and "report:" in printed
    # a second run reuses the data and the finished run (no retraining)
    assert demo.main(argv) == 0
    assert "finished run found" in capsys.readouterr().out
