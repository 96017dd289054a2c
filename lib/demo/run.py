"""The main job: real encoded demo videos → extractor → TSV → ONE multi-task model → every task → a report.

    python -m lib.demo                      # what `make demo` runs
    python -m lib.demo --seed 1             # another demo dataset (same recipe, no tuning per seed)
    python -m lib.demo --quick              # a minute-scale version (CI uses it)

Steps: (1) build the synthetic dataset (`lib.demo.synthetic`, H.264 files through the real extractor);
(2) pretrain the Video Swin alone on the train videos' attribute labels, the demo's stand-in for LAVENDER's
Kinetics-pretrained Swin (`lib.demo.backbone`), and optionally pretrain briefly (MLM + matching) with
`main_pretrain_mlm`'s code; (3) fit the training to the
wall-clock budget: time a few real steps of every task and one validation pass on this machine, and plan
as many epochs of the config as fit (`--budget_min`, default 15 minutes for the whole command; at most the
config's `size_epoch`), which the run then re-fits after every epoch to the pace it measures
(`lib.demo.budget`); (4) train one model on every task with `main_multi_task_mlm`'s code (config
`_args/args_demo_multi-task.json`) and evaluate every task on the held-out test split with the tasks' own
evaluation; (5) print a table with the chance level beside each number and write
`_snapshot/demo/{metrics.json, report.md, curves.png, examples.png}`.

A faster machine trains longer within the same budget and learns more; `--size_epoch N` fixes the length
(the same numbers on any machine). Re-running reuses what exists (data, a finished run); after Ctrl-C the
next run resumes from the last checkpoint with the length it had chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lib.data.annotations import write_json_atomic
from lib.demo import budget, report
from lib.demo.synthetic import make_demo_dataset
from lib.engine.callbacks import Callback
from lib.engine.checkpointing import list_checkpoints

CONFIG = Path("_args/args_demo_multi-task.json")
# --quick: the shortened demo CI runs as a learning test (tests/demo/test_demo.py): 240 train videos, 32-px
# frames (2x2 Swin tokens per frame: steps ~3x cheaper than the demo's 64 px), 3 fusion layers, and always
# fp32 with one fixed length, so that every machine kind trains the same steps and gets the same numbers
# (bf16 autocast would make them depend on the CPU) in a time the slowest kind (AVX2 only) affords in CI.
QUICK = {"n_train": 240, "n_val": 10, "n_test": 60, "swin_steps": 300}
QUICK |= {"size_epoch": 2, "steps_per_epoch": 120}
QUICK_OVERRIDES = ["--size_img", "32", "--fusion_layers", "3", "--precision", "fp32"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lib.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the demo dataset (and of training)")
    p.add_argument("--data", default=None, help="dataset folder (default _datasets/demo[_seedN])")
    p.add_argument("--out", default="_snapshot/demo", help="report folder; the run goes to OUT/run")
    p.add_argument("--n_train", type=int, default=1200)
    p.add_argument("--n_val", type=int, default=30)
    p.add_argument("--n_test", type=int, default=60)
    p.add_argument(
        "--budget_min",
        type=float,
        default=15.0,
        help="wall-clock minutes for the whole command: training gets the epochs that fit (0: the config's)",
    )
    p.add_argument(
        "--started_at",
        type=float,
        default=None,
        help="Unix time the budget counts from (default: now; `make demo` passes its start: set-up counts)",
    )
    p.add_argument("--size_epoch", type=int, default=None, help="train exactly this many epochs")
    p.add_argument(
        "--steps_per_epoch", type=int, default=None, help="fix the steps per epoch (default: the budget's)"
    )
    p.add_argument(
        "--swin_steps",
        type=int,
        default=600,
        help="steps of the Video Swin's attribute pretraining on the train videos (0: start it random)",
    )
    p.add_argument("--pretrain_epochs", type=int, default=0, help="brief MLM + matching pretraining first")
    quick = f"small and short (CI): {json.dumps(QUICK)} {' '.join(QUICK_OVERRIDES)}"
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--workers", type=int, default=2, help="extraction processes")
    p.add_argument("overrides", nargs="*", help="extra --key value pairs for the multi-task config")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) in (None, p.get_default(k)):
                setattr(args, k, v)
        args.overrides = QUICK_OVERRIDES + list(args.overrides)
    return args


# ------------------------------------------------------------------------------------------------ steps


def build_data(args: argparse.Namespace) -> Path:
    data = Path(args.data or ("_datasets/demo" if args.seed == 0 else f"_datasets/demo_seed{args.seed}"))
    if args.quick and args.data is None:
        data = data.with_name(data.name + "_quick")
    print(f"[1/6] demo data → {data}", flush=True)
    make_demo_dataset(
        data, seed=args.seed, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, workers=args.workers
    )
    return data


def run_argv(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    argv = [
        "--config",
        str(CONFIG),
        "--data_dir",
        str(data),
        "--path_output",
        str(out),
        "--seed",
        str(args.seed),
    ]
    for key in ("size_epoch", "steps_per_epoch"):
        if getattr(args, key, None) is not None:
            argv += [f"--{key}", str(getattr(args, key))]
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        print(f"      resuming the run in {out}", flush=True)
        argv += ["--resume", "true"]
    return argv + list(args.overrides)


def pretrain_swin(args: argparse.Namespace, data: Path, out: Path) -> Path | None:
    """The Video Swin pretrained on the train videos' attributes (``--swin_steps`` 0: none); its weights."""
    if args.swin_steps <= 0:
        return None
    from lib.demo.backbone import pretrain_video_swin
    from lib.engine.config import load_config

    folder = out / "backbone"
    print(f"[2/6] Video Swin pretraining on the train videos' attributes → {folder}", flush=True)
    cfg = load_config(["--config", str(CONFIG), "--data_dir", str(data), *args.overrides])
    return pretrain_video_swin(cfg, data, folder, steps=args.swin_steps, seed=args.seed)


def init_argv(init: Path | None) -> list[str]:
    """The run's starting weights: the Swin alone (a weights file, the attribute pretraining's) through
    ``vis_backbone_ckpt``, or a whole model folder (the MLM pretraining's) through ``path_ckpt``."""
    if init is None:
        return []
    if init.is_file():
        return ["--vis_backbone_init", "3d", "--vis_backbone_ckpt", str(init)]
    return ["--path_ckpt", str(init)]


def pretrain(args: argparse.Namespace, data: Path, out: Path, init: Path | None) -> Path | None:
    """Brief MLM + matching pretraining on the demo captions (from ``init``); returns its model folder."""
    if args.pretrain_epochs <= 0:
        return init
    run_dir = out / "pretrain"
    model_dir = run_dir / "model"
    print(f"[3/6] pretraining (MLM + matching) → {run_dir}", flush=True)
    if (run_dir / "metrics.json").is_file():
        return model_dir
    from lib.tasks.run import run

    argv = run_argv(args, data, run_dir) + [
        "--type", "pretrain", "--task", "demo-pretrain", "--dataset", "demo",
        "--datasets", "[]", "--size_epoch", str(args.pretrain_epochs),
    ] + init_argv(init)  # fmt: skip
    run("pretrain", argv)
    return model_dir


def fit_epochs(args: argparse.Namespace, data: Path, out: Path, init: Path | None, started: float) -> dict:
    """How long to train: ``--size_epoch``, the length of an interrupted run, or as long as fits the budget on
    this machine (:func:`lib.demo.budget.measure_and_plan`)."""
    run_dir = out / "run"
    if args.size_epoch is not None:
        return {"size_epoch": args.size_epoch, "source": "--size_epoch"}
    if (run_dir / "metrics.json").is_file():
        return {"size_epoch": None, "source": "finished run"}
    if (run_dir / "args.json").is_file() and list_checkpoints(run_dir / "checkpoints"):
        saved = json.loads((run_dir / "args.json").read_text())
        return {
            "size_epoch": saved["size_epoch"],
            "steps_per_epoch": saved.get("steps_per_epoch"),
            "time_budget_s": budget.recorded_budget(run_dir),
            "source": "the interrupted run",
        }
    if args.budget_min <= 0:
        return {"size_epoch": None, "source": "the config"}
    print("[4/6] fitting the training to the budget (timing steps and a validation pass)", flush=True)
    argv = run_argv(args, data, run_dir) + init_argv(init)
    return budget.measure_and_plan(args, argv, started)


def train_all_tasks(args: argparse.Namespace, data: Path, out: Path, init: Path | None) -> dict[str, float]:
    run_dir = out / "run"
    print(f"[5/6] one model, every task → {run_dir}", flush=True)
    if (run_dir / "metrics.json").is_file():
        print("      (finished run found: reusing it)", flush=True)
        return json.loads((run_dir / "metrics.json").read_text())
    from lib.tasks.run import run

    argv = run_argv(args, data, run_dir) + init_argv(init)
    return run("multi-task", argv, callbacks=run_callbacks(args, run_dir))


def run_callbacks(args: argparse.Namespace, run_dir: Path) -> list[Callback]:
    """The multi-task run's trainer callbacks: with a time budget (``args.time_budget_s``, the plan's), the
    :class:`~lib.demo.budget.TimeBudget` that re-fits the run's length to it, the budget recorded beside the
    run for a resume."""
    seconds = getattr(args, "time_budget_s", None) or 0.0
    if seconds <= 0:
        return []
    budget.record_budget(run_dir, seconds)
    return [
        budget.TimeBudget(seconds, getattr(args, "last_epoch_steps", None), getattr(args, "epoch_s", 0.0))
    ]


def start_clock(args: argparse.Namespace) -> float:
    """The ``time.perf_counter()`` value the budget counts from: ``--started_at`` (e.g. when `make demo`
    began, so that set-up counts too) when it is in the past and within the budget, else now."""
    now = time.perf_counter()
    if args.started_at is None:
        return now
    before = time.time() - args.started_at
    if not 0.0 <= before <= 60 * max(args.budget_min, 0.0):
        print(
            f"      note: --started_at is {before:.0f} s ago, outside the budget: counting from now",
            flush=True,
        )
        return now
    print(f"      the budget counts from {before:.0f} s ago (set-up included)", flush=True)
    return now - before


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = start_clock(args)
    out = Path(args.out if not args.quick or args.out != "_snapshot/demo" else "_snapshot/demo_quick")
    out.mkdir(parents=True, exist_ok=True)
    data = build_data(args)
    init = pretrain(args, data, out, pretrain_swin(args, data, out))
    plan = fit_epochs(args, data, out, init, started)
    args.size_epoch = plan["size_epoch"]
    args.steps_per_epoch = plan.get("steps_per_epoch") or args.steps_per_epoch
    args.time_budget_s = plan.get("time_budget_s")  # the run re-fits its steps to it as it measures its pace
    args.last_epoch_steps = plan.get("last_epoch_steps")
    args.epoch_s = plan.get("eval_s", 0.0)
    metrics = train_all_tasks(args, data, out, init)
    trained = report.trained_length(out / "run")
    if trained:
        plan = {**plan, "trained_epochs": trained[0], "trained_steps": trained[1]}
    print("[6/6] report", flush=True)
    chance = report.chance_levels(data)
    rows = report.table_rows(metrics, chance)
    seconds = time.perf_counter() - started
    summary = {
        "data": str(data),
        "seed": args.seed,
        "wall_seconds": seconds,
        "training_length": plan,
        "metrics": {
            r["key"]: {"value": r["value"], "chance": r["chance"], "target": r["target"]} for r in rows
        },
    }
    write_json_atomic(out / "metrics.json", summary, indent=2)
    report.write_report(out, data, rows, metrics, seconds, plan)
    print()
    print(report.format_table(rows))
    print(f"\nreport: {out / 'report.md'}  ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
