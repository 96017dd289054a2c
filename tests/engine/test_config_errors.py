"""Config values out of range are errors naming the key; every main_*.py prints its usage with --help; a
config error is one ``error: ...`` message, not a traceback (issue #28, item 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.engine.config import KEYS, SCHEMA, Config, ConfigError, load_config
from lib.engine.trainer import Trainer, TrainStream
from lib.utils.files import UnreadableFileError

REPO = Path(__file__).resolve().parents[2]
MAINS = sorted(REPO.glob("main_*.py"))


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--lr", "nan"], r"config key 'lr' in the command line: nan is not a finite number"),
        (["--lr", "-inf"], r"config key 'lr' .*-inf is not a finite number"),
        (["--size_batch", "0"], r"config key 'size_batch' .*0 is out of range: it must be >= 1"),
        (["--lr", "0"], r"config key 'lr' .*it must be > 0"),
        (["--p_mask", "1.5"], r"config key 'p_mask' .*it must be in \[0, 1\]"),
        (["--betas", "[0.9, 1.0]"], r"config key 'betas' .*1\.0 is out of range: it must be in \[0, 1\)"),
        (["--warmup_ratio", "NaN"], r"'warmup_ratio' .*not a finite number"),
    ],
)
def test_values_out_of_range_name_the_key(argv, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(argv)


def test_json_and_per_task_values_are_checked_too(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"size_epoch": -1}')
    with pytest.raises(ConfigError, match=rf"'size_epoch' in config file {path}: -1 is out of range"):
        load_config(["--config", str(path)])
    with pytest.raises(ConfigError, match=r"datasets\[0\]: 0 is out of range"):
        Config({"datasets": [{"size_batch": 0}]})


def test_every_default_is_in_range():
    Config()  # validates every default
    assert all(k.bounds is not None for k in SCHEMA if k.name in ("lr", "size_batch", "size_frame", "p_mask"))


def run_main(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_main_prints_its_usage_and_every_key(flag):
    """Before: ConfigError: unknown config key 'help', with a traceback."""
    for script in MAINS:
        done = run_main(script, flag)
        assert done.returncode == 0 and done.stderr == "", (script.name, done.stderr)
        out = done.stdout
        assert out.startswith(f"usage: python {script.name} [--config FILE.json]")
        for flag_name in (
            "--config FILE.json",
            "--path_output DIR",
            "--path_ckpt PATH",
            "--resume",
            "--debug",
        ):
            assert flag_name in out, (script.name, flag_name)
        for key in KEYS:
            assert f"  --{key}  (" in out, (script.name, key)
        assert "--lr  (float, default 2e-05; > 0)\n      peak learning rate" in out
        assert '--precision  (str, default "auto"; one of fp32, bf16, fp16, auto)' in out


def test_a_config_error_is_one_line_and_debug_gives_the_traceback():
    script = REPO / "main_retrieval_tsv.py"
    done = run_main(script, "--lr", "nan", "--size_batch", "4")
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr
        == "error: config key 'lr' in the command line: nan is not a finite number (peak learning rate)\n"
    )
    done = run_main(script, "--size_batch", "0")
    assert done.stderr.startswith("error: config key 'size_batch'") and "Traceback" not in done.stderr
    for extra, env in ((["--debug"], None), ([], {"LAVENDER_DEBUG": "1"})):
        done = run_main(script, "--size_batch", "0", *extra, env=env)
        assert done.returncode == 1 and "Traceback" in done.stderr and "ConfigError" in done.stderr


class Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i)])


def test_resume_true_with_nothing_to_resume_says_so(tmp_path, capsys):
    """Before: a silent fresh start."""
    cfg = Config(
        {"path_output": str(tmp_path / "run"), "resume": True, "size_epoch": 1, "tensorboard": False}
    )
    stream = TrainStream("s", Items(), torch.stack, 2, lambda model, batch: {"loss": model(batch).sum()})
    trainer = Trainer(cfg, torch.nn.Linear(1, 1), stream)
    trainer.close()
    out = capsys.readouterr().out
    assert f"--resume true: nothing to resume, {tmp_path / 'run' / 'checkpoints'} holds no checkpoint" in out
    assert "starting a NEW run" in out
    with pytest.raises(FileNotFoundError, match=r"--resume .*empty: not a checkpoint folder"):
        (tmp_path / "empty").mkdir()
        Trainer(cfg.override({"resume": str(tmp_path / "empty")}), torch.nn.Linear(1, 1), stream)


def test_a_damaged_trainer_state_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "received"
    folder.mkdir()
    (folder / "trainer_state.pt").write_bytes(b"PK\x03\x04 cut short")
    cfg = Config({"path_output": str(tmp_path / "run"), "resume": str(folder), "tensorboard": False})
    stream = TrainStream("s", Items(), torch.stack, 2, lambda model, batch: {"loss": model(batch).sum()})
    with pytest.raises(
        UnreadableFileError, match=rf"--resume: {folder / 'trainer_state.pt'} cannot be loaded"
    ):
        Trainer(cfg, torch.nn.Linear(1, 1), stream)
