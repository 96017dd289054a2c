"""Hooks into a training run: `Trainer(cfg, model, streams, callbacks=[...])`.

A callback subclasses `Callback` and overrides what it needs; the trainer calls each hook on every rank, in
the order the callbacks were given:

    on_fit_start(trainer)    `fit()` begins training (a resumed run: in the new process)
    on_epoch_start(trainer)  before an epoch's first step, or before the rest of an epoch a resume continues
                             (`trainer.micro_in_epoch` > 0 then)
    on_epoch_end(trainer)    after an epoch's last step (`trainer.epoch` counts it), before its evaluation
                             and checkpoint; `trainer.set_length(n)` here changes the run's length

State that must survive a resume goes into the run's checkpoints: `state_dict()` is saved under
`trainer_state.pt`'s "callbacks" entry keyed by `state_key`, and a resumed run hands it back to
`load_state_dict()` (not called when the checkpoint holds no state for that key).

    class StopAfter(Callback):
        def __init__(self, epochs: int):
            self.epochs = epochs

        def on_epoch_end(self, trainer) -> None:
            if trainer.n_epochs > self.epochs >= trainer.epoch:
                trainer.set_length(self.epochs)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lib.engine.trainer import Trainer


class Callback:
    """Base class of a training-run hook: every method does nothing until overridden."""

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint (default: the class name)."""
        return type(self).__name__

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs back: plain Python values and tensors (read with `weights_only=True`)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
