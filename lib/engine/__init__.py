"""The task-agnostic engine: config, distributed helpers, the training loop, checkpoints and logs.

A task supplies `TrainStream`s (dataset + collate + step function) and an `evaluate_fn`; see
`lib.engine.trainer` for the contract and `tests/engine/toy_train.py` for a complete small example.
"""

from lib.engine.callbacks import Callback
from lib.engine.checkpointing import require_existing, seed_everything
from lib.engine.config import Config, ConfigError, load_config
from lib.engine.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    eval_shard_range,
    eval_subset,
    gather_eval,
    get_rank,
    get_world_size,
    init_distributed,
    is_main,
    move_to_device,
)
from lib.engine.logging import get_logger
from lib.engine.trainer import NonFiniteLossError, Trainer, TrainStream

__all__ = [
    "Callback",
    "Config",
    "ConfigError",
    "DistInfo",
    "NonFiniteLossError",
    "TrainStream",
    "Trainer",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "eval_shard_range",
    "eval_subset",
    "gather_eval",
    "get_logger",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main",
    "load_config",
    "move_to_device",
    "require_existing",
    "seed_everything",
]
