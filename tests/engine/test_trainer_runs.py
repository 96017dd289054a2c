"""Real training runs of tests/engine/toy_train.py: DDP equivalence, kill + resume, NaN handling, DeepSpeed.

The toy: streams reg (64 items) + cls (32 items), global batch 8, grad_accum 2 -> 6 optimizer steps per
epoch, 2 epochs, checkpoints at steps 3, 6 (epoch end), 9, 12. Killing at step-function call 21 (inside
step 11) leaves the mid-epoch checkpoint of step 9 as the latest and a log that already reached step 10.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from engine_runs import BASE_ARGS, ToyRun, run_toy

KILL_AT = ["--toy_kill_at", "21"]


def assert_killed_after_step_9(run: ToyRun) -> None:
    assert run.returncode != 0
    assert max(run.losses()) == 10  # logged past the checkpoint ...
    assert (run.out / "checkpoints" / "latest").read_text().strip() == "step_00000009"  # ... saved mid-epoch


def assert_same_run(resumed: ToyRun, reference: ToyRun) -> None:
    assert "resuming from" in resumed.stdout and "step_00000009" in resumed.stdout
    assert [(r["step"], r["loss"], r["lr"]) for r in resumed.records("train")] == [
        (r["step"], r["loss"], r["lr"]) for r in reference.records("train")
    ]
    assert [r["mse"] for r in resumed.records("eval")] == [r["mse"] for r in reference.records("eval")]
    assert not list((resumed.out / "checkpoints").glob("*.tmp"))


@pytest.mark.distributed
def test_two_processes_give_the_same_losses_as_one(single_process_run, two_process_run):
    one, two = single_process_run.losses(), two_process_run.losses()
    assert sorted(one) == sorted(two) == list(range(1, 13))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-5
    first = single_process_run.records("train")[0]
    assert first["stream"] == "cls+reg" and {"loss/reg", "loss/cls", "reg/mae", "cls/acc"} <= set(first)
    evals = zip(single_process_run.records("eval"), two_process_run.records("eval"))
    assert all(abs(a["mse"] - b["mse"]) < 1e-5 for a, b in evals)


def test_outputs_of_a_run(single_process_run):
    out = single_process_run.out
    assert json.loads((out / "args.json").read_text())["grad_accum"] == 2
    for name in ("model", "model_epoch001", "model_epoch002"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["args.json", "model.pt"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest",
        "step_00000009",
        "step_00000012",
    ]
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000012").iterdir()) == [
        "args.json", "rng_rank0.pt", "trainer_state.pt"]  # fmt: skip
    assert "step 12 epoch 1 loss" in (out / "stdout.txt").read_text()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads(re.search(r"SUMMARY (.*)", single_process_run.stdout).group(1))
    assert summary["global_step"] == 12 and summary["nonfinite_steps"] == 0
    first, last = single_process_run.records("train")[0], single_process_run.records("train")[-1]
    assert first["lr"] == 1e-2 and last["lr"] == pytest.approx(1e-2 / 11)  # 1 warm-up step, linear to 0


def test_eval_only_from_a_checkpoint_reproduces_the_final_metric(single_process_run, tmp_path):
    ckpt = single_process_run.out / "checkpoints" / "step_00000012"
    run = run_toy(
        tmp_path, *BASE_ARGS, "--size_batch", "8", "--eval_only", "true", "--resume", str(ckpt)
    ).check()
    assert run.records("eval")[0]["mse"] == single_process_run.records("eval")[-1]["mse"]
    assert run.records("train") == []


def test_resume_after_sigkill_reproduces_the_uninterrupted_losses(tmp_path):
    args = [*BASE_ARGS, "--size_batch", "8", "--toy_dropout", "0.1"]  # dropout: the torch RNG must resume too
    reference = run_toy(tmp_path / "ref", *args).check()
    killed = run_toy(tmp_path / "run", *args, *KILL_AT)
    assert killed.returncode == -9
    assert_killed_after_step_9(killed)
    assert_same_run(run_toy(tmp_path / "run", *args, "--resume", "true").check(), reference)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_resume_after_sigkill(two_process_run, tmp_path):
    args = [*BASE_ARGS, "--size_batch", "4", "--n_workers", "1"]
    assert_killed_after_step_9(run_toy(tmp_path, *args, *KILL_AT, nproc=2))
    assert_same_run(run_toy(tmp_path, *args, "--resume", "true", nproc=2).check(), two_process_run)


NAN_ARGS = ["--toy_streams", "reg", "--toy_sizes", "32", "--size_batch", "8", "--size_epoch", "2",
            "--logging_steps", "1", "--n_workers", "0", "--lr", "1e-2"]  # fmt: skip


def test_nan_loss_steps_are_skipped_counted_and_logged(tmp_path):
    run = run_toy(tmp_path, *NAN_ARGS, "--toy_nan_ids", "[5]").check()
    skipped = run.records("nonfinite")
    assert len(skipped) == 2  # item 5 is in one batch per epoch
    assert all(5 in r["ids"][0] and r["stream"] == "reg" and r["consecutive"] == 1 for r in skipped)
    assert {r["step"] for r in skipped}.isdisjoint(run.losses())  # no train record for a skipped step
    assert len(run.losses()) == 8 - 2 and all(v == v for v in run.losses().values())  # the rest is finite
    assert run.records("train")[-1]["nonfinite_steps"] == 2
    assert "non-finite loss, step skipped" in run.stdout + run.stderr


def test_nan_steps_in_a_row_abort_with_the_batch_ids(tmp_path):
    run = run_toy(tmp_path, *NAN_ARGS, "--toy_nan_ids", json.dumps(list(range(32))), "--max_nan_steps", "3")
    assert run.returncode != 0
    assert "NonFiniteLossError" in run.stderr and "3 steps in a row (max_nan_steps=3)" in run.stderr
    skipped = run.records("nonfinite")
    assert [r["consecutive"] for r in skipped] == [1, 2, 3]
    for r in skipped:  # every offending batch's ids are in the message
        assert f"reg ids={r['ids'][0]}" in run.stderr


@pytest.mark.slow
def test_deepspeed_zero2_bf16_on_cpu_trains_and_resumes(tmp_path):
    args = ["--toy_streams", "reg", "--toy_sizes", "96", "--size_batch", "8", "--deepspeed", "true",
            "--zero_stage", "2", *BASE_ARGS, "--precision", "bf16"]  # fmt: skip
    reference = run_toy(tmp_path / "ref", *args).check()
    losses = reference.losses()
    assert sum(losses[s] for s in (10, 11, 12)) < sum(losses[s] for s in (1, 2, 3))
    ds_files = sorted(p.name for p in (reference.out / "checkpoints" / "step_00000012" / "ds").iterdir())
    assert ds_files == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "mp_rank_00_model_states.pt"]
    killed = run_toy(tmp_path / "run", *args, *KILL_AT)
    assert_killed_after_step_9(killed)
    assert_same_run(run_toy(tmp_path / "run", *args, "--resume", "true").check(), reference)


def test_a_new_run_refuses_a_folder_with_checkpoints_of_another_run(single_process_run):
    before = (single_process_run.out / "log.jsonl").read_text()
    run = run_toy(single_process_run.out, *BASE_ARGS, "--size_batch", "8")
    assert run.returncode != 0 and "holds checkpoints of an earlier run" in run.stderr
    assert (single_process_run.out / "log.jsonl").read_text() == before


@pytest.mark.distributed
def test_torch_distributed_launch_and_a_clear_unused_parameter_error(tmp_path):
    """The deprecated launcher passes --local-rank=N (accepted); a head no stream uses needs the DDP flag."""
    cmd_args = ["--toy_streams", "reg", "--size_batch", "4", "--size_epoch", "1", "--n_workers", "0"]
    run = run_toy(tmp_path, *cmd_args, nproc=2, launcher="torch.distributed.launch")
    assert run.returncode != 0
    assert "stream 'reg': some model parameters get no gradient" in run.stderr
    assert "--find_unused_parameters true" in run.stderr


def test_a_callback_shortens_the_run_and_the_lr_decay_follows(tmp_path):
    # 4 epochs of 6 steps planned (warm-up round(0.1 x 24) = 2 steps); StopAfter sets 2 when epoch 1 ends
    run = run_toy(tmp_path, *BASE_ARGS, "--size_batch", "8", "--size_epoch", "4", "--toy_stop_after", "2")
    run.check()
    assert [(r["epoch"], r["step"]) for r in run.records("eval")] == [(1, 6), (2, 12)]
    lrs = {r["step"]: r["lr"] for r in run.records("train")}
    assert max(lrs) == 12
    assert lrs[1] == pytest.approx(1e-2 / 2) and lrs[6] == pytest.approx(1e-2 * (24 - 5) / 22)  # 24 planned
    # from the scheduler's next step the decay ends at the new length (step 7's lr was set by step 6's)
    assert lrs[8] == pytest.approx(1e-2 * (12 - 7) / 10) and lrs[12] == pytest.approx(1e-2 * 1 / 10)
    state = torch.load(run.out / "checkpoints" / "step_00000012" / "trainer_state.pt", weights_only=True)
    assert state["n_epochs"] == 2 and state["callbacks"] == {"StopAfter": {"ended": 2}}


def test_a_resumed_run_keeps_the_length_a_callback_set_and_the_callback_state(tmp_path):
    args = [*BASE_ARGS, "--size_batch", "8", "--size_epoch", "4", "--toy_stop_after", "2"]
    reference = run_toy(tmp_path / "ref", *args).check()
    assert_killed_after_step_9(run_toy(tmp_path / "run", *args, *KILL_AT))
    resumed = run_toy(tmp_path / "run", *args, "--resume", "true").check()
    assert_same_run(resumed, reference)
    state = torch.load(resumed.out / "checkpoints" / "step_00000012" / "trainer_state.pt", weights_only=True)
    assert state["n_epochs"] == 2 and state["callbacks"] == {"StopAfter": {"ended": 2}}  # 1 saved + 1 after
