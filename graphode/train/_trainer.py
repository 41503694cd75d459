"""Full-batch node-classification trainer: :func:`fit` and :func:`run_many`.

One training epoch is one full-batch step: ``model.train()``, ``logits =
model(x)``, cross-entropy on the training nodes (plus the model's
regularisation loss, if it has one), ``backward``, the callbacks'
``on_after_backward``, ``optimizer.step()``; then an evaluation pass
(``model.eval()``, no grad) that measures train / validation / test accuracy.
The reported test accuracy is the one at the epoch with the best validation
accuracy (the first such epoch on ties), as in the GRAND and deep-GCN papers.

Models are ``nn.Module`` s whose ``forward(x)`` takes the ``[N, F]`` node
features and returns ``[N, C]`` logits (the graph is held by the model).
Optional model hooks the trainer uses when they exist:

* ``model.regularization_loss()`` -> scalar tensor or None, added to the loss
  after the forward pass (GRAND's kinetic-energy / Jacobian regularisers);
* ``model.nfe`` (int, function evaluations of the last forward solve) and
  ``model.nfe_backward`` (of the last backward), reported per epoch.

Reproducibility: :func:`seed_everything` seeds ``random``, ``numpy`` and
``torch``; with ``config["deterministic"]`` (default True)
``torch.use_deterministic_algorithms(True, warn_only=True)`` is in force
during :func:`fit` (restored afterwards).  ``checkpoint=PATH`` writes, after
every epoch, the model, optimizer, callbacks' ``state_dict``, the RNG states
(python, numpy, torch CPU and CUDA), the epoch, best-so-far metrics and the
history; ``resume=PATH`` continues from it, and the resumed run is
bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import concurrent.futures
import math
import os
import random
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .._io import load_torch_file, save_torch_file
from ..errors import CheckpointError, ConfigError
from ._executor import SerialExecutor

__all__ = [
    "Trainer",
    "fit",
    "build_model",
    "run_many",
    "seed_everything",
    "make_optimizer",
    "summarize",
    "DEFAULT_TRAIN_CONFIG",
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
]

#: Trainer keys of a config and their defaults (models read their own keys).
DEFAULT_TRAIN_CONFIG: Dict[str, Any] = {
    "optimizer": "adam",
    "lr": 0.01,
    "weight_decay": 5e-4,
    "momentum": 0.0,  # sgd / rmsprop
    "epochs": 100,
    "patience": None,  # early stopping on validation accuracy (None: off)
    "deterministic": True,
    "device": "cpu",
    "checkpoint_every": 1,
    "threads": None,  # torch intra-op threads during fit (None: leave torch's setting)
}

_OPTIMIZERS = ("adam", "adamw", "adamax", "rmsprop", "sgd")

#: Format tag of the checkpoints :class:`Trainer` writes.  graphode.train/2 holds only
#: tensors and plain data; graphode.train/1 (graphode 0.1.0) held numpy's RNG state as
#: an array, which is still read (numpy arrays only, no other import).
CHECKPOINT_FORMAT = "graphode.train/2"
_READABLE_FORMATS = ("graphode.train/1", CHECKPOINT_FORMAT)


def load_checkpoint(path: str, map_location=None) -> Dict[str, Any]:
    """Read a training checkpoint without running code from it (``weights_only=True``).

    Raises :class:`~graphode.errors.CheckpointError` (one line, naming the file) when the
    file is missing, damaged, not a graphode checkpoint, or would import anything."""
    state = load_torch_file(path, what="checkpoint", map_location=map_location, allow_numpy_arrays=True)
    if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a graphode training checkpoint "
                              f"(expected a dict with format {CHECKPOINT_FORMAT})")
    return state


def check_checkpoint_matches(state: Dict[str, Any], path: str, model: Optional[str],
                             dataset: Optional[str]) -> None:
    """:class:`~graphode.errors.CheckpointError` when ``state`` (a loaded checkpoint) was written
    by another model or for another dataset than this run's (names compared when both known)."""
    meta = state.get("meta") or {}
    theirs_m, theirs_d = meta.get("model"), meta.get("dataset")
    if model and theirs_m and str(theirs_m) != str(model):
        raise CheckpointError(f"checkpoint {path} was written by model {theirs_m} (on {theirs_d}); this run trains "
                              f"{model}: pass --model {theirs_m} or another checkpoint")
    if dataset and theirs_d and _dataset_key(theirs_d) != _dataset_key(dataset):
        raise CheckpointError(f"checkpoint {path} was written for dataset {theirs_d}; this run uses {dataset}: "
                              f"pass --dataset {theirs_d} or another checkpoint")


def _dataset_key(name: str) -> str:
    try:
        from ..datasets._load import canonical_name

        return canonical_name(str(name))
    except ValueError:
        return str(name).lower()


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_optimizer(params, config: Dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer named by ``config["optimizer"]`` (adam, adamw, adamax, rmsprop, sgd)
    with ``lr``, ``weight_decay`` (and ``momentum`` for sgd / rmsprop).

    ``params``: tensors, or parameter groups (dicts with ``"params"`` and optionally
    their own ``"weight_decay"``, as ``torch.optim`` takes them; a model offers them
    through ``model.optimizer_groups(config)``, see :class:`Trainer`)."""
    name = str(config.get("optimizer", "adam")).lower()
    lr = float(config.get("lr", DEFAULT_TRAIN_CONFIG["lr"]))
    wd = float(config.get("weight_decay", DEFAULT_TRAIN_CONFIG["weight_decay"]))
    mom = float(config.get("momentum", 0.0) or 0.0)
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
        params = [g for g in params if g["params"]]
    else:
        params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd, momentum=mom)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=mom)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(_OPTIMIZERS)}")


# --------------------------------------------------------------------------- RNG state
# Checkpoints hold only what torch.load(weights_only=True) accepts: tensors, numbers,
# strings, None, lists, tuples and dicts.  Python's state is a tuple of ints already;
# numpy's legacy state tuple holds a uint32 array, stored here as an int64 tensor.
def _rng_state() -> Dict[str, Any]:
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    npst = state["numpy"]
    if isinstance(npst, dict):
        np.random.set_state((npst["kind"], npst["key"].cpu().numpy().astype(np.uint32), int(npst["pos"]),
                             int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    else:  # graphode.train/1: numpy's own tuple
        np.random.set_state(npst)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _atomic_save(obj: Any, path: str) -> None:
    save_torch_file(obj, path, what="checkpoint")


def _accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).sum()) / n


def model_stat(model, name: str) -> Optional[float]:
    v = getattr(model, name, None)
    if v is None:
        stats = getattr(model, "last_stats", None)
        if isinstance(stats, dict):
            v = stats.get(name)
    if v is None or callable(v):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _single_split(dataset):
    if getattr(dataset, "train_mask", None) is not None and dataset.train_mask.dim() == 2:
        return dataset.split(0)
    return dataset


class Trainer:
    """State of one training run (what callbacks see as ``trainer``).

    Attributes: ``model``, ``dataset`` (single split, ``[N]`` masks),
    ``optimizer``, ``config`` (dict), ``epoch`` (current, 0-based),
    ``history`` (list of per-epoch ``logs``), ``best`` (dict: ``epoch``,
    ``val_acc``, ``test_acc``, ``train_acc``), ``stop_training`` (a callback
    may set it to end the run after the current epoch), ``callbacks``.

    Callbacks a model carries in ``model.callbacks`` (those :func:`build_model`
    attached from the config, e.g. the deep GCN's gradient-guided rewiring) are
    run too, after the ones given here.  A model
    with ``optimizer_groups(config)`` gets its parameter groups (each with its
    own weight decay, as GCNII's convolutions and dense layers) in the optimizer.
    """

    def __init__(self, model, dataset, config: Dict[str, Any], callbacks: Sequence = (), seed: int = 0):
        config = dict(config or {})
        if isinstance(config.get("device"), torch.device):
            config["device"] = str(config["device"])
        from ..config import check_config

        # the trainer's keys are type- and range-checked (the model's own keys by its schema upstream)
        config.update(check_config({k: v for k, v in config.items() if k in DEFAULT_TRAIN_CONFIG}, None, "config"))
        self.config = {**DEFAULT_TRAIN_CONFIG, **config}
        self.device = torch.device(self.config.get("device") or "cpu")
        self.model = model.to(self.device)
        ds = _single_split(dataset)
        self.dataset = ds.to(self.device) if getattr(ds, "device", self.device) != self.device else ds
        self.callbacks = list(callbacks)
        self.callbacks += [cb for cb in getattr(model, "callbacks", ()) if all(cb is not c for c in self.callbacks)]
        self.seed = int(seed)
        groups = getattr(self.model, "optimizer_groups", None)  # per-group weight decay (e.g. GCNII)
        self.optimizer = make_optimizer(groups(self.config) if callable(groups) else self.model.parameters(),
                                        self.config)
        self.epoch = -1
        self.history: List[Dict[str, float]] = []
        self.best: Dict[str, float] = {"epoch": -1, "val_acc": -math.inf, "test_acc": float("nan"),
                                       "train_acc": float("nan")}
        self.stop_training = False
        self.finished = False
        self._bad_epochs = 0

    def seed_rngs(self) -> None:
        """Seed the random generators at the start of a fresh run (distributed trainers
        give each rank its own dropout stream)."""
        seed_everything(self.seed)

    # ------------------------------------------------------------------ callbacks
    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    # ------------------------------------------------------------------ one epoch
    def train_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The loss a step minimises: mean cross-entropy over the training nodes (a
        distributed trainer returns its rank's share of it)."""
        ds = self.dataset
        return F.cross_entropy(logits[ds.train_mask], ds.y[ds.train_mask])

    def reduce_gradients(self) -> None:
        """After the backward pass, before the callbacks and the step: nothing here (a
        distributed trainer sums the ranks' gradients)."""

    def loss_value(self, loss: torch.Tensor) -> float:
        """The logged value of :meth:`train_loss`'s result."""
        return float(loss.detach())

    def train_step(self, epoch: int) -> Dict[str, float]:
        model, ds = self.model, self.dataset
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logits = model(ds.x)
        nfe = model_stat(model, "nfe")
        loss = self.train_loss(logits)
        reg_fn = getattr(model, "regularization_loss", None)
        reg = reg_fn() if callable(reg_fn) else None
        total = loss + reg if reg is not None else loss
        total.backward()
        self.reduce_gradients()
        self._call("on_after_backward", epoch)
        self.optimizer.step()
        t1 = time.perf_counter()
        logs = {"loss": self.loss_value(loss), "epoch_time_s": t1 - t0}
        if reg is not None:
            logs["reg_loss"] = float(reg.detach())
        if nfe is not None:
            logs["nfe"] = nfe
        nfe_b = model_stat(model, "nfe_backward")
        if nfe_b is not None:
            logs["nfe_backward"] = nfe_b
        return logs

    def count_correct(self, pred: torch.Tensor) -> List[Tuple[int, int]]:
        """``[(correct, nodes)]`` of the train, validation and test masks for predicted
        classes ``pred`` (a distributed trainer sums them over ranks)."""
        ds = self.dataset
        return [(int((pred[m] == ds.y[m]).sum()), int(m.sum())) for m in (ds.train_mask, ds.val_mask, ds.test_mask)]

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """Train / validation / test accuracy of the model in eval mode (:meth:`eval_metrics`)
        and the time it took."""
        self.model.eval()
        t0 = time.perf_counter()
        out = self.eval_metrics(self.model(self.dataset.x))
        out["eval_time_s"] = time.perf_counter() - t0
        return out

    def eval_metrics(self, logits: torch.Tensor) -> Dict[str, float]:
        """``train_acc``, ``val_acc``, ``test_acc`` and (with validation nodes) the mean
        ``val_loss`` of eval-mode ``logits`` (a distributed trainer reduces them over ranks)."""
        ds = self.dataset
        out = {
            "train_acc": _accuracy(logits, ds.y, ds.train_mask),
            "val_acc": _accuracy(logits, ds.y, ds.val_mask),
            "test_acc": _accuracy(logits, ds.y, ds.test_mask),
        }
        vl = ds.val_mask
        if int(vl.sum()):
            out["val_loss"] = float(F.cross_entropy(logits[vl], ds.y[vl]))
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks],
            "rng": _rng_state(),
            "epoch": self.epoch,
            "best": dict(self.best),
            "history": list(self.history),
            "bad_epochs": self._bad_epochs,
            "finished": self.finished,
            "stop_training": self.stop_training,
            "seed": self.seed,
            "config": plain_values(self.config),
            "meta": self._meta(),
        }

    def _meta(self) -> Dict[str, Any]:
        from .. import __version__

        return {"graphode": __version__, "model": self.config.get("model"),
                "model_class": type(self.model).__name__,
                "dataset": self.config.get("dataset") or getattr(self.dataset, "name", None)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
            raise CheckpointError("not a graphode training checkpoint (no 'format' key of graphode.train/N)")
        where = state.get("_path", "the checkpoint")
        meta = state.get("meta") or {}
        check_checkpoint_matches(state, where, self.config.get("model"),
                                 self.config.get("dataset") or getattr(self.dataset, "name", None))
        if meta.get("model_class") and meta["model_class"] != type(self.model).__name__:
            raise CheckpointError(f"{where} holds a {meta['model_class']} model; this run trains a "
                                  f"{type(self.model).__name__}")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            text = " ".join(str(e).split()) or type(e).__name__
            theirs = state.get("config") or {}
            diff = [f"{k}={theirs.get(k)!r} there, {self.config.get(k)!r} here" for k in sorted(set(theirs) | set(self.config))
                    if k not in DEFAULT_TRAIN_CONFIG and k not in ("dataset", "split")
                    and plain_values(theirs.get(k)) != plain_values(self.config.get(k))]
            why = f"the configs differ: {'; '.join(diff[:4])}" if diff else (text[:300] + ("..." if len(text) > 300 else ""))
            raise CheckpointError(f"{where} does not fit this model ({why})") from None
        cbs = state.get("callbacks") or []
        if len(cbs) != len(self.callbacks):
            raise ValueError(
                f"the checkpoint holds the state of {len(cbs)} callbacks but {len(self.callbacks)} were given"
            )
        for cb, s in zip(self.callbacks, cbs):
            if s is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(s)
        self.epoch = int(state["epoch"])
        self.best = dict(state["best"])
        self.history = list(state["history"])
        self._bad_epochs = int(state.get("bad_epochs", 0))
        self.finished = bool(state.get("finished", False))
        self.stop_training = bool(state.get("stop_training", False))
        _set_rng_state(state["rng"])

    # ------------------------------------------------------------------ the loop
    def fit(self, epochs: Optional[int] = None, checkpoint: Optional[str] = None,
            resume: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
        epochs = epochs if epochs is not None else self.config.get("epochs", DEFAULT_TRAIN_CONFIG["epochs"])
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs: expected an integer >= 1, got {epochs!r}")
        prev_threads = torch.get_num_threads()
        if self.config.get("threads"):
            torch.set_num_threads(int(self.config["threads"]))
        prev_det = torch.are_deterministic_algorithms_enabled()
        prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        if self.config.get("deterministic", True):
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            start = 0
            resuming = resume is not None and os.path.exists(resume)
            if not resuming:
                if resume is not None:
                    print(f"graphode.train: no checkpoint at {resume}; starting from scratch", file=sys.stderr)
                self.seed_rngs()
            # On resume, callbacks get on_train_begin first (to attach hooks etc.) and
            # then their saved state, so the checkpoint has the last word.
            self._call("on_train_begin")
            if resuming:
                state = load_checkpoint(resume, map_location=self.device)
                state["_path"] = resume
                self.load_state_dict(state)
                start = self.epoch + 1
            self._loop(start, epochs, checkpoint, progress)
            self.finished = True
            self._call("on_train_end")
            if checkpoint is not None:
                _atomic_save(self.state_dict(), checkpoint)
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.set_num_threads(prev_threads)
        return self.result(epochs)

    def _loop(self, start: int, epochs: int, checkpoint: Optional[str], progress: bool) -> None:
        bar = None
        if progress and start < epochs:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=epochs, initial=start, desc=f"seed {self.seed}", leave=False,
                           dynamic_ncols=True, file=sys.stderr)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                bar = None
        patience = self.config.get("patience")
        every = max(1, int(self.config.get("checkpoint_every", 1) or 1))
        try:
            for epoch in range(start, epochs):
                if self.stop_training:
                    break
                self.epoch = epoch
                logs = self.train_step(epoch)
                logs.update(self.evaluate())
                logs["epoch"] = epoch
                if logs["val_acc"] > self.best["val_acc"]:
                    self.best = {"epoch": epoch, "val_acc": logs["val_acc"], "test_acc": logs["test_acc"],
                                 "train_acc": logs["train_acc"]}
                    self._bad_epochs = 0
                else:
                    self._bad_epochs += 1
                self._call("on_epoch_end", epoch, logs)
                self.history.append(logs)
                if patience is not None and self._bad_epochs >= int(patience):
                    self.stop_training = True
                if checkpoint is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
                    _atomic_save(self.state_dict(), checkpoint)
                if bar is not None:
                    post = {"loss": f"{logs['loss']:.3f}", "val": f"{logs['val_acc']:.3f}",
                            "best_test": f"{self.best['test_acc']:.3f}"}
                    if "nfe" in logs:
                        post["nfe"] = int(logs["nfe"])
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def result(self, epochs: Optional[int] = None) -> Dict[str, Any]:
        """Summary of the run: ``seed``, ``test_acc`` / ``val_acc`` / ``train_acc`` at the best
        validation epoch, ``best_epoch``, ``best_time`` (the integration time a model's
        callback found the best at, e.g. GRAND's evaluation past T; else None), ``epochs``
        run, mean ``epoch_time_s`` (training
        step), mean ``nfe`` (forward) and ``nfe_backward`` per epoch (None when the model
        does not report them), final-epoch accuracies and the per-epoch ``history``."""
        h = self.history

        def mean(key):
            vals = [r[key] for r in h if key in r]
            return float(np.mean(vals)) if vals else None

        last = h[-1] if h else {}
        return {
            "seed": self.seed,
            "test_acc": self.best["test_acc"],
            "val_acc": self.best["val_acc"] if h else float("nan"),
            "train_acc": self.best["train_acc"],
            "best_epoch": self.best["epoch"],
            "best_time": self.best.get("time"),
            "epochs": len(h),
            "epoch_time_s": mean("epoch_time_s"),
            "eval_time_s": mean("eval_time_s"),
            "nfe": mean("nfe"),
            "nfe_backward": mean("nfe_backward"),
            "final_val_acc": last.get("val_acc"),
            "final_test_acc": last.get("test_acc"),
            "history": h,
        }


def plain_values(obj):
    """A copy of a config with only plain python values (for checkpoints / JSON)."""
    if isinstance(obj, dict):
        return {str(k): plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_values(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.device):
        return str(obj)
    return repr(obj)


def fit(
    model,
    dataset,
    config: Optional[Dict[str, Any]] = None,
    callbacks: Iterable = (),
    seed: int = 0,
    epochs: Optional[int] = None,
    checkpoint: Optional[str] = None,
    resume: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train ``model`` full-batch on ``dataset`` for node classification.

    Args:
        model: ``nn.Module``, ``model(dataset.x)`` -> ``[N, C]`` logits.
        dataset: a :class:`graphode.datasets.NodeDataset` (``x`` ``[N, F]``, ``y``
            ``[N]``, masks ``[N]``; for ``[N, S]`` masks split 0 is used).
        config: ``optimizer`` (adam, adamw, adamax, rmsprop, sgd), ``lr``,
            ``weight_decay``, ``momentum``, ``epochs``, ``patience``,
            ``deterministic``, ``device``, ``checkpoint_every``, ``threads`` (see
            :data:`DEFAULT_TRAIN_CONFIG`); other keys are ignored here.
        callbacks: objects implementing (part of) the protocol of
            :class:`graphode.callbacks.Callback`.
        seed: seeds python / numpy / torch before the first epoch (the model's
            initialisation is the caller's: seed before building it, as
            :func:`run_many` does).
        epochs: overrides ``config["epochs"]``.
        checkpoint: path written after every ``checkpoint_every`` epochs and at the end.
        resume: path of a checkpoint to continue from (ignored with a message if
            it does not exist, so ``checkpoint == resume`` restarts cleanly).
        progress: show a tqdm bar on stderr.

    Returns:
        The dict of :meth:`Trainer.result`.
    """
    trainer = Trainer(model, dataset, config or {}, callbacks=callbacks, seed=seed)
    return trainer.fit(epochs=epochs, checkpoint=checkpoint, resume=resume, progress=progress)


# --------------------------------------------------------------------------- many seeds
def _load(name: str, split: str, seeds: Sequence[int], root=None, split_seed: Optional[int] = None):
    from ..datasets import load_dataset

    if split == "random":
        seed = int(split_seed) if split_seed is not None else list(seeds)
        return load_dataset(name, root=root, split="random", seed=seed)
    if split_seed is not None:
        raise ValueError(f"split_seed applies to split='random' only, got split={split!r}")
    return load_dataset(name, root=root, split=split)


def summarize(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """``mean_test_acc``, ``std_test_acc`` (population std, as numpy's default),
    ``mean_val_acc``, mean ``epoch_time_s`` and ``nfe`` over runs."""
    acc = np.array([r["test_acc"] for r in results], dtype=float)
    val = np.array([r["val_acc"] for r in results], dtype=float)

    def mean(key):
        v = [r[key] for r in results if r.get(key) is not None]
        return float(np.mean(v)) if v else None

    return {
        "mean_test_acc": float(acc.mean()) if acc.size else float("nan"),
        "std_test_acc": float(acc.std()) if acc.size else float("nan"),
        "mean_val_acc": float(val.mean()) if val.size else float("nan"),
        "mean_epoch_time_s": mean("epoch_time_s"),
        "mean_nfe": mean("nfe"),
    }


def build_model(model_name: str, dataset, config: Dict[str, Any]):
    """The model of a training run: :func:`graphode.models.build` (the model alone), plus
    the callbacks the config asks for (:func:`graphode.callbacks.from_config`: the deep
    GCN's ``rewiring``) appended to ``model.callbacks``, which :class:`Trainer` runs."""
    from ..callbacks import from_config
    from ..models import build

    model = build(model_name, dataset, config)
    callbacks = from_config(model, config)
    if callbacks:
        model.callbacks = list(getattr(model, "callbacks", None) or ()) + callbacks
    return model


def _run_one(dataset, index: int, seed: int, model_name: str, config: Dict[str, Any], models: Dict[str, Any],
             callbacks_factory, epochs: Optional[int], checkpoint: Optional[str], resume: Optional[str],
             progress: bool) -> Dict[str, Any]:
    """Run ``index`` of :func:`run_many` (what its executor runs): the split ``index mod
    S`` of ``dataset``, everything seeded with ``seed`` before the model is built, then
    :func:`fit`.  ``models``: the driver's registry entry of ``model_name`` (for runs in
    another process)."""
    from ..models import register_targets

    register_targets(models)
    ds = dataset.split(index % dataset.num_splits) if dataset.train_mask.dim() == 2 else dataset
    seed_everything(seed)
    model = build_model(model_name, ds, config)
    cbs = list(callbacks_factory(index)) if callbacks_factory is not None else []
    r = fit(model, ds, config, callbacks=cbs, seed=seed, epochs=epochs, checkpoint=checkpoint, resume=resume,
            progress=progress)
    return {k: v for k, v in r.items() if k != "history"}


def run_many(
    model_name: str,
    dataset: Union[str, Any],
    config: Optional[Dict[str, Any]] = None,
    runs: int = 10,
    seed: int = 0,
    *,
    split: str = "public",
    split_seed: Optional[int] = None,
    data_root=None,
    epochs: Optional[int] = None,
    callbacks_factory=None,
    checkpoint: Optional[str] = None,
    resume: Optional[str] = None,
    progress: bool = True,
    on_run_end=None,
    executor=None,
) -> Dict[str, Any]:
    """Train ``runs`` models (seeds ``seed, seed+1, ...``) and aggregate them.

    Run ``i`` seeds everything with ``seed + i`` *before* building the model
    (so initialisations differ between runs and are reproducible), then calls
    :func:`fit`.  ``dataset`` is a :class:`NodeDataset` or a name: a name is
    loaded with ``split``: ``"public"``, ``"grand"`` (GRAND's code: the largest
    component and one split drawn with seed 12345) or ``"random"``, where each run
    gets its own random split drawn with its seed (GRAND's protocol), or all runs
    the one drawn with ``split_seed``.  A dataset with ``[N, S]``
    masks gives run ``i`` the split ``i mod S``.

    ``callbacks_factory(run_index)`` returns the callbacks of a run.
    ``checkpoint`` / ``resume`` are paths; with several runs, run ``i`` uses
    ``PATH.run{i}`` (a finished run found on resume is not retrained).
    ``on_run_end(i, result)`` is called as each run ends (in the order the runs end).

    ``executor``: where the runs execute (:mod:`graphode.train._executor`): default
    :class:`SerialExecutor`, one after another in this process; e.g.
    :class:`graphode.sweep.RayExecutor` spreads them over Ray (``graphode train
    --ray``).  Each run seeds everything itself, so the results are the same seed by
    seed wherever they run.  ``progress`` bars are drawn where a run executes.

    Returns:
        ``{"runs": [per-run result without history, in seed order], "mean_test_acc",
        "std_test_acc", "mean_val_acc", "mean_epoch_time_s", "mean_nfe", "config"}``.
    """
    from ..models import model_targets

    if int(runs) < 1:
        raise ConfigError(f"runs: expected an integer >= 1, got {runs!r}")
    executor = SerialExecutor() if executor is None else executor
    config = dict(config or {})
    device = getattr(executor, "device", None)
    if device and "device" not in config:  # e.g. an executor that gives each run a GPU
        config["device"] = device
    config["model"] = model_name  # what runs is what is named
    seeds = [int(seed) + i for i in range(int(runs))]
    extra = {} if split_seed is None else {"split_seed": split_seed}
    ds_all = _load(dataset, split, seeds, data_root, **extra) if isinstance(dataset, str) else dataset
    put = getattr(executor, "put", None)
    shared = put(ds_all) if put is not None else ds_all
    models = model_targets([model_name])
    results: List[Optional[Dict[str, Any]]] = [None] * len(seeds)
    pending: Dict[concurrent.futures.Future, int] = {}

    def collect(done) -> None:
        for f in done:
            i = pending.pop(f)
            results[i] = f.result()
            if on_run_end is not None:
                on_run_end(i, results[i])

    for i, s in enumerate(seeds):
        ck = None if checkpoint is None else (checkpoint if runs == 1 else f"{checkpoint}.run{i}")
        rs = None if resume is None else (resume if runs == 1 else f"{resume}.run{i}")
        f = executor.submit(_run_one, shared, i, s, model_name, config, models, callbacks_factory, epochs, ck, rs,
                            progress)
        pending[f] = i
        collect([f for f in pending if f.done()])  # a serial executor's run ended already
    for f in concurrent.futures.as_completed(list(pending)):  # the others, as they end
        collect([f])
    return {"runs": results, **summarize(results), "config": plain_values(config)}
