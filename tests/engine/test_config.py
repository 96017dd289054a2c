"""Config: schema, JSON + command-line overrides, validation errors, per-task dicts, args.json."""

from __future__ import annotations

import json
import pickle

import pytest

from lib.engine.config import KEYS, Config, ConfigError, load_config, parse_overrides

# fmt: off
REFERENCE_KEYS = [
    "size_img", "size_frame", "size_txt", "size_batch", "lr", "decay", "size_epoch", "max_grad_norm",
    "vis_backbone", "vis_backbone_size", "vis_backbone_init", "kinetics", "txt_backbone",
    "txt_backbone_embed_only", "fusion_encoder", "fusion_encoder_rand_init", "data_dir", "dataset", "task",
    "type", "path_output", "path_ckpt", "deepspeed", "use_checkpoint", "n_workers", "seed", "logging_steps",
    "vis_backbone_lr_mul", "max_size_frame", "max_size_patch", "size_patch", "size_vocab", "size_test",
    "size_option", "img_transform", "temp", "size_part", "pretrain_tasks", "p_mask", "enable_task_token",
    "enable_prompt", "mask_pos", "max_gen_length", "attn_mask_type", "datasets", "data_ratio",
    "multi_clip_testing", "txt_dir", "img_tsv_dir", "reinit_head", "size_txt_pre", "task_token",
    "train_yaml", "val_yaml", "test_yaml",
]
OUR_KEYS = [
    "resume", "eval_only", "grad_accum", "precision", "warmup_ratio", "betas", "deepspeed_config",
    "zero_stage", "max_nan_steps", "eval_every", "save_every_steps", "keep_last_ckpts", "task_sampling",
    "steps_per_epoch", "find_unused_parameters", "vis_embed_dim", "vis_depths", "vis_heads", "vis_window",
]
# fmt: on

# The shape of the reference's multi-task JSON (two of its per-task entries, abridged).
MULTI_TASK = {
    "type": "multi-task",
    "task": "didemo_ret+msrvtt_cap",
    "size_batch": 60,
    "lr": 2e-5,
    "deepspeed": True,
    "datasets": [
        {"size_frame": 5, "size_txt": 100, "dataset": "didemo", "type": "retrieval",
         "task": "didemo-retrieval", "size_batch": 12},
        {"size_frame": 5, "size_txt": 50, "train_yaml": "MSRVTT-v2/train_32frames.yaml",
         "type": "captioning", "task": "msrvtt-cap"},
    ],
}  # fmt: skip


def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_schema_has_every_reference_and_engine_key():
    missing = [k for k in REFERENCE_KEYS + OUR_KEYS if k not in KEYS]
    assert missing == []
    cfg = Config()
    assert (cfg.size_img, cfg.lr, cfg.decay, cfg.betas, cfg.warmup_ratio, cfg.seed) == (
        224, 2e-5, 1e-3, [0.9, 0.98], 0.1, 88)  # fmt: skip
    assert cfg.img_transform == ["img_rand_crop"] and cfg.resume is False and cfg.precision == "auto"


def test_file_then_command_line_overrides_with_typed_parsing(tmp_path):
    path = write_json(
        tmp_path / "c.json", {"size_batch": 24, "lr": 3e-5, "dataset": "msrvtt", "deepspeed": True}
    )
    argv = ["--config", path, "--lr", "1e-4", "--deepspeed", "false", "--size_frame=5",
            "--betas", "[0.8, 0.9]", "--dataset", '["webvid2.5m", "cc3m"]', "--use_checkpoint",
            "--vis_depths", "[2, 2, 6, 2]", "--task_token", "null", "--resume", "runs/x"]  # fmt: skip
    cfg = load_config(argv)
    assert cfg.size_batch == 24  # from the file
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)  # command line beats the file
    assert cfg.deepspeed is False and cfg.use_checkpoint is True  # bare bool flag = true
    assert cfg.size_frame == 5 and cfg.betas == [0.8, 0.9] and cfg.vis_depths == [2, 2, 6, 2]
    assert cfg.dataset == ["webvid2.5m", "cc3m"] and cfg.task_token is None and cfg.resume == "runs/x"
    assert load_config(["--resume", "true"]).resume is True
    assert load_config(["--dataset", "msrvtt"]).dataset == "msrvtt"  # str | list[str]: a word is a str
    assert load_config([path]).size_batch == 24  # VIOLET style: the JSON path as first argument


def test_img_transform_string_becomes_list_and_int_is_float():
    cfg = Config({"img_transform": "img_rand_crop", "lr": 1})
    assert cfg.img_transform == ["img_rand_crop"] and cfg.lr == 1.0 and isinstance(cfg.lr, float)


@pytest.mark.parametrize("argv", [["--local_rank", "3"], ["--local-rank", "1"], ["--local_rank=2"],
                                  ["--local-rank=0"]])  # fmt: skip
def test_launcher_local_rank_forms_are_ignored(argv):
    path, values = parse_overrides([*argv, "--seed", "7"])
    assert path is None and values == {"seed": 7}


def test_unknown_key_lists_valid_keys_and_suggests(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(["--size_bach", "8"])
    msg = str(e.value)
    assert "size_bach" in msg and "the command line" in msg and "'size_batch'" in msg
    assert "Valid keys:" in msg and "warmup_ratio" in msg and "vis_backbone_lr_mul" in msg
    path = write_json(tmp_path / "bad.json", {"lrr": 1e-4})
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' in config file .*bad\.json.*'lr'"):
        load_config(["--config", path])


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--size_batch", "eight"], r"--size_batch: cannot read 'eight' as int"),
        (["--deepspeed", "maybe"], r"--deepspeed: cannot read 'maybe' as bool"),
        (["--betas", "[0.9, oops]"], r"not valid JSON"),
        (["--precision", "fp8"], r"'fp8' is not one of"),
        (["--img_transform", '["random"]'], r"'random' is not one of"),
        (["--lr"], r"--lr needs a value"),
        (["--config"], r"--config needs a path"),
        (["stray"], r"unexpected command-line argument 'stray'"),
    ],
)
def test_wrong_values_are_errors(argv, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(argv)


def test_wrong_type_in_json_names_file_and_key(tmp_path):
    path = write_json(tmp_path / "c.json", {"size_batch": "8"})
    with pytest.raises(ConfigError, match=r"'size_batch' in config file .*c\.json: expected int, got str"):
        load_config(["--config", path])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["--config", str(tmp_path / "missing.json")])


def test_per_task_dicts_are_validated_and_override_global_keys(tmp_path):
    cfg = load_config(["--config", write_json(tmp_path / "m.json", MULTI_TASK), "--size_txt", "30"])
    ret, cap = cfg.task_configs()
    assert (ret.task, ret.size_batch, ret.size_txt, ret.size_frame) == ("didemo-retrieval", 12, 100, 5)
    assert (cap.task, cap.size_batch, cap.attn_mask_type) == ("msrvtt-cap", 60, "full")  # global, default
    assert ret.lr == cap.lr == 2e-5 and ret.deepspeed and ret.datasets == []
    bad = dict(MULTI_TASK, datasets=[{"task": "a"}, {"size_batchh": 4}])
    with pytest.raises(ConfigError, match=r"'size_batchh' in config file .*datasets\[1\].*'size_batch'"):
        load_config(["--config", write_json(tmp_path / "bad.json", bad)])


def test_config_is_immutable_override_copies():
    cfg = Config({"lr": 1e-4})
    with pytest.raises(AttributeError, match="override"):
        cfg.lr = 2.0
    new = cfg.override({"lr": 3e-4, "size_batch": 2})
    assert (cfg.lr, cfg.size_batch, new.lr, new.size_batch) == (1e-4, 8, 3e-4, 2)
    with pytest.raises(ConfigError, match="expected int"):
        cfg.override({"size_batch": 2.5})
    with pytest.raises(AttributeError, match="size_bach"):
        _ = cfg.size_bach
    assert pickle.loads(pickle.dumps(new)) == new


def test_args_json_saved_atomically_and_reloads_identically(tmp_path):
    cfg = load_config(["--lr", "5e-5", "--dataset", '["a", "b"]', "--vis_window", "[2, 7, 7]"])
    path = cfg.save(tmp_path / "run")
    assert path.name == "args.json" and [p.name for p in path.parent.iterdir()] == ["args.json"]
    assert load_config(["--config", str(path)]) == cfg
    assert json.loads(path.read_text())["lr"] == 5e-5


def test_derived_keys_of_reference_args_json_are_dropped(tmp_path):
    data = {"size_batch": 4, "local_rank": 0, "tokenizer": "bert-base-uncased", "effective_batch_size": 32}
    cfg = load_config(["--config", write_json(tmp_path / "args.json", data)])
    assert cfg.size_batch == 4 and "tokenizer" not in cfg
