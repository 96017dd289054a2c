"""The task-agnostic engine: config, distributed helpers, the training loop, checkpoints and logs.

A task supplies `TrainStream`s (dataset + collate + step function) and an `evaluate_fn`; see
`lib.engine.trainer` for the contract and `tests/engine/toy_train.py` for a complete small example.

One module per concern, imported by its own name (this package re-exports nothing, so importing one of
them does not load the others, and no module of the engine depends on this file):

    config              Config, ConfigError, load_config (command line + JSON, every key)
    distributed         DistInfo, init_distributed, ranks, all-reduce / gather helpers, eval shards
    trainer             Trainer, TrainStream, NonFiniteLossError (the loop)
    callbacks           Callback: hooks at fit start, epoch start and epoch end (e.g. a time budget)
    data_plan           which stream and batch each step uses; deterministic fetches
    precision           resolve_precision, autocast
    deepspeed_support   DeepSpeed config, start and (verified, weights-only) checkpoints
    checkpointing       checkpoint folders, RNG capture, seed_everything, require_existing
    optim               AdamW groups and the warm-up schedule
    logging             RunLogger, get_logger
"""
