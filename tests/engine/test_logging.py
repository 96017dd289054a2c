"""RunLogger: JSONL records, stdout.txt, TensorBoard events, truncation on resume, silent other ranks."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lib.engine.logging import RunLogger, read_jsonl


def test_records_go_to_jsonl_tensorboard_and_stdout_txt(tmp_path, capsys):
    log = RunLogger(tmp_path, is_main=True)
    log.log({"kind": "train", "step": 1, "epoch": 0, "stream": "qa", "lr": 1e-4, "loss": 2.5})
    log.log({"kind": "train", "step": 2, "epoch": 0, "stream": "qa", "lr": 1e-4, "loss": float("nan")})
    log.log({"kind": "eval", "step": 2, "epoch": 1, "acc": 0.75})
    log.info("hello from rank 0")
    log.close()
    assert [r["loss"] for r in read_jsonl(tmp_path / "log.jsonl", "train")][0] == 2.5
    assert read_jsonl(tmp_path / "log.jsonl", "eval") == [
        {"kind": "eval", "step": 2, "epoch": 1, "acc": 0.75}
    ]
    assert "hello from rank 0" in (tmp_path / "stdout.txt").read_text()
    assert "hello from rank 0" in capsys.readouterr().out
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == [2.5]  # the NaN is kept out of TensorBoard
    assert [e.value for e in events.Scalars("eval/acc")] == [0.75]


def test_resume_drops_records_after_the_checkpoint_step(tmp_path):
    log = RunLogger(tmp_path, is_main=True, tensorboard=False)
    for step in range(1, 6):
        log.log({"kind": "train", "step": step, "loss": float(step)})
    log.close()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 6, "lo')  # a line cut by the kill
    log = RunLogger(tmp_path, is_main=True, tensorboard=False, resume_step=3)
    log.log({"kind": "train", "step": 4, "loss": 40.0})
    log.close()
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "log.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]  # fmt: skip


def test_other_ranks_write_nothing(tmp_path):
    log = RunLogger(tmp_path / "out", is_main=False)
    log.log({"kind": "train", "step": 1, "loss": 1.0})
    log.info("invisible")
    log.close()
    assert not (tmp_path / "out").exists()
