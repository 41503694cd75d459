"""The callback protocol of graphode's trainer (:func:`graphode.train.fit`).

A callback is any object with some of these methods (all optional); the
trainer calls those that exist, in the order the callbacks were given:

``on_train_begin(trainer)``
    before the first epoch (``trainer.model``, ``trainer.dataset``,
    ``trainer.optimizer``, ``trainer.config`` are set).
``on_after_backward(trainer, epoch)``
    after ``loss.backward()`` and before ``optimizer.step()``: gradients are
    populated (gradient-flow monitors and gradient-guided rewiring use this).
``on_epoch_end(trainer, epoch, logs)``
    after evaluation; ``logs`` holds ``loss``, ``train_acc``, ``val_acc``,
    ``test_acc``, ``epoch_time_s`` and ``nfe`` (when the model reports it).
``on_train_end(trainer)``
``state_dict()`` / ``load_state_dict(state)``
    saved in and restored from checkpoints, so a resumed run is identical.
"""
from __future__ import annotations

from typing import Any, Dict, Protocol, runtime_checkable

__all__ = ["Callback"]


@runtime_checkable
class Callback(Protocol):  # pragma: no cover - documentation type
    def on_train_begin(self, trainer: Any) -> None: ...

    def on_after_backward(self, trainer: Any, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: Any, epoch: int, logs: Dict[str, float]) -> None: ...
