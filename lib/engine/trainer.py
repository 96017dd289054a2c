"""The one training loop for every task: streams of batches, mixed precision, DDP / DeepSpeed, checkpoints.

A task plugs in through `TrainStream`s (dataset + collate + step function) and an `evaluate_fn`:

    stream = TrainStream("msrvtt-qa", train_ds, collate, cfg.size_batch, step_fn=qa_loss)
    Trainer(cfg, model, [stream], evaluate_fn=evaluate).fit()

`step_fn(model, batch) -> {"loss": scalar tensor, **extra scalar logs}` runs inside the DDP / DeepSpeed
forward (the engine wraps the call), so it may call any method of the model. A batch that is a dict may
carry an "ids" list; those ids appear in non-finite-loss reports.

Data order (which stream and batch each step uses, seeded fetches): `lib.engine.data_plan`. Mixed precision:
`lib.engine.precision`. DeepSpeed's config, start and checkpoints: `lib.engine.deepspeed_support`.

Non-finite steps: when any rank's loss (or the clipped gradient norm) is NaN/inf, the optimizer step is
skipped on all ranks (grads zeroed, scheduler not advanced), counted and logged with the batch ids;
`max_nan_steps` such steps in a row raise `NonFiniteLossError` naming the ids. With DeepSpeed the step is
skipped by DeepSpeed's own overflow check (bf16/fp16); DeepSpeed in fp32 cannot skip a step, so a
non-finite loss aborts there.

DDP: `find_unused_parameters` defaults to False (faster); multi-task runs whose streams use different parts
of the model (e.g. a stream never touching some head) need `--find_unused_parameters true`.
DeepSpeed: ZeRO stage 0-2 (stage 3 would shard the parameters the evaluation reads).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lib.engine import deepspeed_support as DS
from lib.engine import distributed as D
from lib.engine.callbacks import Callback
from lib.engine.checkpointing import (
    CheckpointManager,
    capture_rng_state,
    checkpoint_root,
    list_checkpoints,
    resolve_resume,
    restore_rng_state,
    save_model_dir,
    save_state_dict,
    seed_everything,
)
from lib.engine.config import Config, ConfigError
from lib.engine.data_plan import (
    BatchFetcher,
    BatchRef,
    StreamCursor,
    StreamSchedule,
    derived_seed,
    plan_loader,
)
from lib.engine.logging import RunLogger
from lib.engine.optim import build_optimizer, build_scheduler
from lib.engine.precision import autocast, resolve_precision
from lib.utils.atomic import write_atomic
from lib.utils.files import UnreadableFileError

StepFn = Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]
EvaluateFn = Callable[[nn.Module, int], Mapping[str, float]]
SaveModelFn = Callable[[nn.Module, Path], None]


# Keys that may change between a run and its resumption without affecting what is computed.
_RUN_CONTROL_KEYS = frozenset({
    "resume", "path_output", "eval_only", "n_workers", "logging_steps", "tensorboard", "save_every_steps",
    "keep_last_ckpts", "save_model_every_epoch", "dist_timeout_s",
})  # fmt: skip


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had a NaN/inf loss or gradient."""


@dataclass
class TrainStream:
    """One source of training batches: a map-style dataset, its collate, per-rank batch size and loss.

    `step_fn(model, batch)` returns {"loss": scalar, **extras}: extra scalar tensors are averaged over the
    logging window and the ranks, so a step function must return the same keys on every rank.
    """

    name: str
    dataset: Dataset
    collate_fn: Callable[[list[Any]], Any]
    batch_size: int
    step_fn: StepFn
    weight: float = 1.0  # relative probability of being picked at a step (not a loss weight)
    start: float = 0.0  # fraction of the run's epochs before the stream is first picked (a curriculum)


class _StepModule(nn.Module):
    """Runs a stream's step function as the forward of the wrapped model, so DDP/DeepSpeed see every call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, step_fn: StepFn, batch: Any) -> Mapping[str, torch.Tensor]:
        return step_fn(self.model, batch)


# ---- logging window


@dataclass
class _Micro:
    """What one micro-batch leaves for the step and the log: stream, batch ids, loss, extra scalars."""

    stream: str
    ids: Any
    loss: torch.Tensor
    extras: dict[str, torch.Tensor]


@dataclass
class _Window:
    """Sums of the micro-batch logs since the last logging step (device tensors, reduced when logged)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    streams: list[str] = field(default_factory=list)
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, key: str, value: torch.Tensor) -> None:
        self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.counts[key] = self.counts.get(key, 0) + 1


# ---- trainer


class Trainer:
    """Trains `model` on `streams`, evaluates with `evaluate_fn`, logs and checkpoints to path_output.

    `callbacks` (`lib.engine.callbacks.Callback`) hook into the run; one may change its length after an epoch
    with `set_length`.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        streams: TrainStream | Sequence[TrainStream] = (),
        evaluate_fn: EvaluateFn | None = None,
        save_model_fn: SaveModelFn | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        keys = [c.state_key for c in self.callbacks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"callbacks need distinct state keys, got {keys}")
        self.streams = [streams] if isinstance(streams, TrainStream) else list(streams)
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        self.evaluate_fn = evaluate_fn
        self.save_model_fn = save_model_fn or save_state_dict
        self.training = bool(self.streams) and cfg.size_epoch > 0 and not cfg.eval_only
        self.use_deepspeed = cfg.deepspeed and self.training
        if cfg.grad_accum < 1:
            raise ConfigError(f"--grad_accum must be >= 1, got {cfg.grad_accum}")

        self.dist = D.init_distributed(cfg.dist_timeout_s, force_process_group=self.use_deepspeed)
        self.device = self.dist.device
        self.dtype = resolve_precision(cfg.precision, self.device)
        self.path_output = Path(cfg.path_output)
        resume_dir = resolve_resume(cfg.resume, self.path_output)
        if self.training and resume_dir is None and list_checkpoints(checkpoint_root(self.path_output)):
            raise FileExistsError(
                f"{checkpoint_root(self.path_output)} holds checkpoints of an earlier run; continue it with "
                f"--resume true or start a new run in another --path_output"
            )
        state = self._read_state(resume_dir) if resume_dir else None
        self.log = RunLogger(
            self.path_output,
            self.dist.is_main,
            cfg.tensorboard,
            resume_step=state["global_step"] if state and self.training else None,
            append=not self.training,
        )
        if cfg.resume is True and resume_dir is None:
            self.log.warning(
                f"--resume true: nothing to resume, {checkpoint_root(self.path_output)} holds no checkpoint; "
                + (
                    "starting a NEW run from the beginning"
                    if self.training
                    else "evaluating the initial weights"
                )
            )
        if self.dist.is_main:
            cfg.save(self.path_output)

        self.model = model.to(self.device)
        if hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(cfg.use_checkpoint)
        self.epoch = 0
        self.micro_in_epoch = 0
        self.global_step = 0
        self.nonfinite_total = 0
        self.skipped_items: dict[str, int] = {}  # bad items the streams' datasets skipped, per stream
        self.nonfinite_recent: deque[dict[str, Any]] = deque(maxlen=max(1, cfg.max_nan_steps))
        self.last_metrics: dict[str, float] = {}
        if self.training:
            self._setup_training()
        self.ckpt = CheckpointManager(self.path_output, cfg.keep_last_ckpts, self.dist.rank, D.barrier)
        self.ckpt.remove_stale()
        if state is not None:
            assert resume_dir is not None
            self._load_state(resume_dir, state)
        else:
            seed_everything(derived_seed(cfg.seed, self.dist.rank))

    # ---- set-up

    def _setup_training(self) -> None:
        cfg = self.cfg
        self.schedule = StreamSchedule(
            self.streams,
            cfg.seed,
            self.dist.world_size,
            self.dist.rank,
            cfg.task_sampling,
            cfg.grad_accum,
            cfg.steps_per_epoch,
            cfg.size_epoch,
        )
        self.cursors = [StreamCursor() for _ in self.streams]
        self.n_epochs = cfg.size_epoch  # a callback may change it (set_length)
        self.last_epoch_steps = self.schedule.steps_per_epoch  # the final epoch's steps (set_length)
        self.total_steps = self.schedule.steps_per_epoch * self.n_epochs
        self.last_eval_s = 0.0  # seconds of the last epoch-end evaluation
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.warmup_ratio)
        self.scaler = None
        step_module = _StepModule(self.model)
        if self.use_deepspeed:
            self.engine = self._init_deepspeed(step_module)
            self.wrapped: nn.Module = self.engine
        elif self.dist.world_size > 1:
            self.wrapped = nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        else:
            self.wrapped = step_module
        if self.dtype == torch.float16 and not self.use_deepspeed:
            self.scaler = torch.amp.GradScaler("cuda")
        self.fetcher = BatchFetcher(self.streams, cfg.seed, self.dist.rank)

    def _init_deepspeed(self, step_module: nn.Module) -> Any:
        ds_cfg = DS.deepspeed_config(self.cfg, self.streams[0].batch_size, self.dtype)
        self.log.info(f"DeepSpeed config: {ds_cfg}")
        engine = DS.initialize(step_module, self.optimizer, self.scheduler, ds_cfg, self.device)
        self._ds_can_skip = DS.can_skip_steps(ds_cfg)
        return engine

    # ---- state

    def _read_state(self, folder: Path) -> dict[str, Any]:
        path = folder / "trainer_state.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch's message does not name the file
            raise UnreadableFileError(f"--resume: {path} cannot be loaded: {e}") from e
        if self.use_deepspeed and state.get("deepspeed"):
            DS.verify_checkpoint(folder)  # before DeepSpeed opens anything there
        return state

    def _trainer_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "micro_in_epoch": self.micro_in_epoch,
            "global_step": self.global_step,
            "cursors": [(c.epoch, c.batch) for c in self.cursors],
            "nonfinite_total": self.nonfinite_total,
            "last_metrics": self.last_metrics,
            "n_epochs": self.n_epochs,
            "last_epoch_steps": self.last_epoch_steps,
            "callbacks": {c.state_key: c.state_dict() for c in self.callbacks},
            "world_size": self.dist.world_size,
            "streams": [s.name for s in self.streams],
            "deepspeed": self.use_deepspeed,
            "config": self.cfg.to_dict(),
        }
        if not self.use_deepspeed:
            state["model"] = self.model.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
            state["scaler"] = self.scaler.state_dict() if self.scaler is not None else None
        return state

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        self.log.info(f"resuming from {folder} (step {state['global_step']}, epoch {state['epoch']})")
        if not self.training:
            self.model.load_state_dict(self._model_weights(folder, state))
            self.epoch, self.global_step = state["epoch"], state["global_step"]
            self.last_metrics = dict(state["last_metrics"])
            return
        if state["streams"] != [s.name for s in self.streams]:
            raise ValueError(
                f"{folder} was written with streams {state['streams']}, this run has "
                f"{[s.name for s in self.streams]}; resume with the same tasks"
            )
        if state["deepspeed"] != self.use_deepspeed:
            raise ValueError(
                f"{folder} was written with deepspeed={state['deepspeed']}; resume with the same "
                f"--deepspeed setting"
            )
        changed = sorted(  # a key the schema no longer has (e.g. time_budget_s) computes nothing
            k
            for k, v in state["config"].items()
            if k not in _RUN_CONTROL_KEYS and k in self.cfg and self.cfg[k] != v
        )
        if changed:
            self.log.warning(
                f"config differs from the checkpoint's in {changed}; the optimizer and the lr "
                f"schedule continue as saved"
            )
        if state["world_size"] != self.dist.world_size:
            if self.use_deepspeed:
                raise ValueError(
                    f"{folder} holds ZeRO optimizer shards for {state['world_size']} ranks; "
                    f"DeepSpeed cannot resume on {self.dist.world_size} ranks"
                )
            self.log.warning(
                f"resuming a {state['world_size']}-rank checkpoint on {self.dist.world_size} "
                f"ranks: the rest of this epoch sees a different data order"
            )
        if self.use_deepspeed:
            DS.load_checkpoint(self.engine, folder)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.micro_in_epoch = state["epoch"], state["micro_in_epoch"]
        self.global_step = state["global_step"]
        self.cursors = [StreamCursor(e, b) for e, b in state["cursors"]]
        self.nonfinite_total = state["nonfinite_total"]
        self.last_metrics = dict(state["last_metrics"])
        if "n_epochs" in state:
            self.set_length(state["n_epochs"], state.get("last_epoch_steps"))
        saved = state.get("callbacks", {})
        for callback in self.callbacks:
            if callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])
        rng_file = folder / f"rng_rank{self.dist.rank}.pt"
        if rng_file.is_file():
            restore_rng_state(torch.load(rng_file, weights_only=True))
        else:
            self.log.warning(f"{rng_file} missing: random streams restart from the seed")
            seed_everything(derived_seed(self.cfg.seed, self.dist.rank, self.global_step))

    def _model_weights(self, folder: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "model" in state:
            return state["model"]
        return DS.load_model_states(folder)

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current position (all ranks must call this)."""
        rank = self.dist.rank

        def write(tmp: Path) -> None:
            if self.use_deepspeed:
                DS.save_checkpoint(self.engine, tmp, self.dist.is_main, D.barrier)
            write_atomic(tmp / f"rng_rank{rank}.pt", functools.partial(torch.save, capture_rng_state()))
            if self.dist.is_main:
                write_atomic(tmp / "trainer_state.pt", functools.partial(torch.save, self._trainer_state()))
                self.cfg.save(tmp)

        path = self.ckpt.save(self.global_step, write)
        self.log.info(f"checkpoint {path}")
        return path

    def save_model(self, name: str) -> Path | None:
        """Inference weights into path_output/name via save_model_fn (+ args.json), rank 0."""
        if not self.dist.is_main:
            return None
        return save_model_dir(self.model, self.path_output / name, self.save_model_fn, self.cfg.save)

    # ---- eval

    def evaluate(self) -> dict[str, float]:
        """Run evaluate_fn on every rank (eval mode, no grad, autocast) and log its metrics from rank 0."""
        if self.evaluate_fn is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.dtype):
            metrics = {k: float(v) for k, v in self.evaluate_fn(self.model, self.epoch).items()}
        self.model.train(was_training)
        self.last_metrics = metrics
        self.log.log({"kind": "eval", "epoch": self.epoch, "step": self.global_step, **metrics})
        self.log.info(
            f"eval epoch {self.epoch} step {self.global_step}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        )
        return metrics

    # ---- loop

    def fit(self) -> dict[str, float]:
        """Train for cfg.size_epoch epochs (continuing a resumed run); returns the final metrics.

        The logs stay open afterwards (callers may add records with `trainer.log.log`); `close()` ends them.
        """
        if not self.training:
            self.evaluate()
            return self._summary()
        self._call("on_fit_start")
        if self.cfg.eval_before_train and self.global_step == 0 and self.micro_in_epoch == 0:
            self.evaluate()
        while self.epoch < self.n_epochs:
            self._train_epoch()
        if self.dist.is_main:
            self.save_model("model")
        D.barrier()
        return self._summary()

    def close(self) -> None:
        """Close log.jsonl, stdout.txt and the TensorBoard writer."""
        self.log.close()

    def _summary(self) -> dict[str, float]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "nonfinite_steps": self.nonfinite_total,
            "skipped_items": sum(self.skipped_items.values()),
            **self.last_metrics,
        }

    def _loader(self, plan: np.ndarray) -> DataLoader:
        pin = self.device.type == "cuda"
        return plan_loader(self.fetcher, self.schedule, plan, self.cfg.n_workers, pin, self.cfg.seed)

    # ---- callbacks and the run's length

    def _call(self, hook: str) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self)

    def set_length(self, n_epochs: int, last_epoch_steps: int | None = None) -> None:
        """Train ``n_epochs`` epochs in all (at least the ``epoch`` ones done), the last of them
        ``last_epoch_steps`` optimizer steps long (default: a whole epoch; at least 1), so that a run's length
        is set to the step: from the scheduler's next step the learning-rate decay ends with the new length,
        and streams that have not started yet (``task_start``) join at their fraction of it. Every rank must
        set the same length."""
        full = self.schedule.steps_per_epoch
        last = full if last_epoch_steps is None else int(last_epoch_steps)
        if n_epochs < self.epoch or not 1 <= last <= full:
            raise ValueError(
                f"a run at epoch {self.epoch} cannot end after {n_epochs} epochs with {last} steps in the "
                f"last (1 to {full})"
            )
        if n_epochs == self.epoch + 1 and self.micro_in_epoch > last * self.cfg.grad_accum:
            raise ValueError(f"epoch {self.epoch} has already run past {last} steps")
        self.n_epochs = n_epochs
        self.last_epoch_steps = last
        self.schedule.refit(n_epochs, self.epoch)
        self.total_steps = full * max(0, n_epochs - 1) + last if n_epochs > 0 else 0
        for fn in self.scheduler.lr_lambdas:  # the linear decay now ends with the new length
            fn.total_steps = self.total_steps

    def epoch_steps(self, epoch: int) -> int:
        """Optimizer steps of ``epoch`` (the last one may be shorter: ``set_length``)."""
        return self.last_epoch_steps if epoch == self.n_epochs - 1 else self.schedule.steps_per_epoch

    def _train_epoch(self) -> None:
        cfg, accum = self.cfg, self.cfg.grad_accum
        self._call("on_epoch_start")
        steps = self.epoch_steps(self.epoch)
        plan, end_cursors = self.schedule.epoch_plan(self.epoch, self.cursors, steps * accum)
        self.wrapped.train()
        window = _Window()
        micro: list[_Micro] = []
        batches = self._loader(plan[self.micro_in_epoch :])
        bar = self.log.progress(
            batches,
            total=len(plan),
            initial=self.micro_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.n_epochs}",
        )
        for ref, batch in bar:
            self.micro_in_epoch += 1
            boundary = self.micro_in_epoch % accum == 0
            micro.append(self._forward_backward(ref, batch, sync=boundary))
            if not boundary:
                continue
            grad_norm = self._optimizer_step(micro)
            self.global_step += 1
            if grad_norm is not None:
                self._add_to_window(window, micro, grad_norm)
            micro.clear()
            last = self.micro_in_epoch // accum == steps
            checkpoint_now = cfg.save_every_steps > 0 and self.global_step % cfg.save_every_steps == 0
            if last or checkpoint_now or self.global_step % max(1, cfg.logging_steps) == 0:
                self._flush_window(window)
                window = _Window()
            if checkpoint_now and not last:
                self.save_checkpoint()
        self.cursors = end_cursors
        self.epoch += 1
        self.micro_in_epoch = 0
        self._log_skipped_items()
        self._call("on_epoch_end")
        if (cfg.eval_every > 0 and self.epoch % cfg.eval_every == 0) or self.epoch == self.n_epochs:
            started = time.perf_counter()
            self.evaluate()
            self.last_eval_s = time.perf_counter() - started
        if cfg.save_model_every_epoch:
            self.save_model(f"model_epoch{self.epoch:03d}")
        self.save_checkpoint()

    def _log_skipped_items(self) -> None:
        """Bad items the streams' datasets skipped so far (``n_skipped``, e.g. ``on_bad_item: skip``), summed
        over the ranks: a warning and a ``skipped`` record in log.jsonl."""
        local = {s.name: int(getattr(s.dataset, "n_skipped", 0)) for s in self.streams}
        totals = {name: sum(d[name] for d in D.all_gather_object(local)) for name in local}
        self.skipped_items = {name: n for name, n in totals.items() if n}
        if self.skipped_items:
            self.log.warning(f"bad training items skipped so far (on_bad_item skip): {self.skipped_items}")
            self.log.log(
                {"kind": "skipped", "epoch": self.epoch, "step": self.global_step, **self.skipped_items}
            )

    def _forward_backward(self, ref: BatchRef, batch: Any, sync: bool) -> _Micro:
        stream = self.streams[ref.stream]
        ids = batch.get("ids") if isinstance(batch, Mapping) else None
        batch = D.move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
        no_sync = isinstance(self.wrapped, nn.parallel.DistributedDataParallel) and not sync
        with self.wrapped.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(self.device, self.dtype):
                out = self._call_step(stream, batch)
            if not isinstance(out, Mapping) or not isinstance(out.get("loss"), torch.Tensor):
                raise TypeError(f"stream {stream.name!r}: step_fn must return a dict with a 'loss' tensor")
            loss = out["loss"]
            if self.use_deepspeed:
                self.engine.backward(loss)
            else:
                scaled = loss.float() / self.cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if self.use_deepspeed and not sync:
            self.engine.step()
        extras = {
            k: v.detach().float().reshape(())
            for k, v in out.items()
            if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1
        }
        return _Micro(stream.name, ids, loss.detach().float().reshape(()), extras)

    def _call_step(self, stream: TrainStream, batch: Any) -> Mapping[str, torch.Tensor]:
        try:
            return self.wrapped(stream.step_fn, batch)
        except RuntimeError as e:
            if "find_unused_parameters" not in str(e):
                raise
            raise RuntimeError(
                f"stream {stream.name!r}: some model parameters get no gradient in a step (e.g. a head that "
                f"only another task uses); run with --find_unused_parameters true"
            ) from e

    def _optimizer_step(self, micro: list[_Micro]) -> float | None:
        """Step (or skip) after an accumulation; returns the grad norm (nan if unknown), None if skipped.

        Non-DeepSpeed: all ranks agree on skipping through one all-reduce of a "non-finite loss" flag; the
        gradient norm is the same on every rank (gradients are already averaged).
        """
        self._step_lrs = self._current_lrs()  # the lr this step uses (logged), before the scheduler moves
        local_bad = torch.stack([~torch.isfinite(m.loss) for m in micro]).any()
        any_bad = bool(D.all_reduce_tensor(local_bad.to(torch.int32), "max").item())
        if self.use_deepspeed:
            if any_bad and not self._ds_can_skip:
                self._report_nonfinite(micro, "loss", abort=True)
            self.engine.step()
            if not self.engine.was_step_applied():
                self._report_nonfinite(micro, "loss" if any_bad else "gradient")
                return None
            norm = self.engine.get_global_grad_norm()
            self.nonfinite_recent.clear()
            return float(norm) if norm is not None else math.nan
        if any_bad:
            return self._skip_step(micro, "loss")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        total = nn.utils.get_total_norm([p.grad for p in params])  # logged, and checked even without clipping
        norm = float(total)
        if not math.isfinite(norm) and self.scaler is None:
            return self._skip_step(micro, "gradient")
        if self.cfg.max_grad_norm > 0:
            nn.utils.clip_grads_with_norm_(params, self.cfg.max_grad_norm, total)
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            applied = self.scaler.get_scale() >= scale
        else:
            self.optimizer.step()
            applied = True
        self.optimizer.zero_grad(set_to_none=True)
        if not applied:  # fp16 overflow: GradScaler skipped the step and lowered the scale
            self._report_nonfinite(micro, "fp16 gradient overflow")
            return None
        self.scheduler.step()
        self.nonfinite_recent.clear()
        return norm

    def _skip_step(self, micro: list, what: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._report_nonfinite(micro, what)
        return None

    def _report_nonfinite(self, micro: list[_Micro], what: str, abort: bool = False) -> None:
        """Count, log (with the offending batch ids of every rank), abort after max_nan_steps in a row."""
        local = [(m.stream, m.ids) for m in micro if what != "loss" or not torch.isfinite(m.loss)]
        offenders = [x for part in D.all_gather_object(local) for x in part]
        self.nonfinite_total += 1
        self.nonfinite_recent.append({"step": self.global_step + 1, "batches": offenders})
        consecutive = len(self.nonfinite_recent)
        record = {
            "kind": "nonfinite",
            "step": self.global_step + 1,
            "epoch": self.epoch,
            "what": what,
            "stream": "+".join(sorted({n for n, _ in offenders})),
            "ids": [i for _, i in offenders],
            "consecutive": consecutive,
            "total": self.nonfinite_total,
        }
        self.log.log(record)
        self.log.warning(
            f"step {self.global_step + 1}: non-finite {what}, step skipped "
            f"({consecutive} in a row, {self.nonfinite_total} in total); batches {offenders}"
        )
        if abort or consecutive >= self.cfg.max_nan_steps:
            reason = (
                "DeepSpeed in fp32 cannot skip a step (use --precision bf16)"
                if abort
                else f"{consecutive} steps in a row (max_nan_steps={self.cfg.max_nan_steps})"
            )
            history = "; ".join(
                f"step {r['step']}: " + ", ".join(f"{n} ids={i}" for n, i in r["batches"])
                for r in self.nonfinite_recent
            )
            raise NonFiniteLossError(f"non-finite {what}: {reason}. Offending batches - {history}")

    def _add_to_window(self, window: _Window, micro: list[_Micro], grad_norm: float) -> None:
        prefixed = len(self.streams) > 1
        for m in micro:
            window.add("loss", m.loss)
            if prefixed:
                window.add(f"loss/{m.stream}", m.loss)
            for key, value in m.extras.items():
                window.add(f"{m.stream}/{key}" if prefixed else key, value)
            if m.stream not in window.streams:
                window.streams.append(m.stream)
        if not math.isnan(grad_norm):
            window.add("grad_norm", torch.tensor(grad_norm, device=self.device))
        window.steps += 1

    def _flush_window(self, window: _Window) -> None:
        """All-reduce the window's means and log one "train" record (every rank takes part)."""
        if window.steps == 0:
            return
        keys = sorted(window.sums)
        means = torch.stack([window.sums[k] / window.counts[k] for k in keys]).double()
        means = D.all_reduce_tensor(means, "mean").tolist()
        record: dict[str, Any] = {
            "kind": "train",
            "step": self.global_step,
            "epoch": self.epoch,
            "stream": "+".join(window.streams),
            **self._step_lrs,
        }
        record.update(zip(keys, means))
        record["sec_per_step"] = (time.perf_counter() - window.started) / window.steps
        record["nonfinite_steps"] = self.nonfinite_total
        self.log.log(record)
        self.log.info(
            f"step {self.global_step} epoch {self.epoch} loss {record['loss']:.5g} lr {record['lr']:.3g}"
        )

    def _current_lrs(self) -> dict[str, float]:
        """lr of the non-Swin parameters, and lr_swin when the model has Swin ('swin.') parameters."""
        by_name = {g.get("name", ""): g["lr"] for g in self.optimizer.param_groups}
        rest = [by_name[k] for k in ("decay", "no_decay") if k in by_name]
        swin = [by_name[k] for k in ("swin_decay", "swin_no_decay") if k in by_name]
        out = {"lr": rest[0] if rest else swin[0]}
        if swin:
            out["lr_swin"] = swin[0]
        return out
