"""Ray plumbing shared by ``graphode sweep`` and ``graphode train --ray``:
the optional-dependency check, starting / joining a Ray cluster, shipping the
model registry to workers, and :func:`run_many_ray`.

Ray is imported only inside functions, so ``import graphode.sweep`` works
without it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

__all__ = ["INSTALL_HINT", "require_ray", "ensure_ray", "run_many_ray"]

INSTALL_HINT = (
    "Ray Tune is not installed; it is an optional extra of graphode. Install it with\n"
    "    pip install 'graphode[sweep]'        (or: pip install 'ray[tune]>=2.9')"
)


def require_ray(what: str = "this command"):
    """Import and return ``ray`` (with ``ray.tune``); raise ``ImportError`` saying how to
    install it when it is missing."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as e:
        raise ImportError(f"graphode: {what} needs Ray Tune ({e}).\n{INSTALL_HINT}") from e
    return ray


def ensure_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
               ship_code: bool = False, quiet: bool = False) -> bool:
    """Make sure this process is connected to Ray.

    * Ray already initialised (e.g. by the caller): reuse it, return False.
    * ``address`` (``"auto"``, ``"host:port"`` or ``"ray://host:port"``): connect to that
      cluster.
    * otherwise start a local Ray (``num_cpus`` / ``num_gpus``: default, the machine's).

    ``ship_code``: send this graphode package to the workers (``runtime_env``
    ``py_modules``), for clusters whose nodes do not have graphode installed.
    Returns True when this call initialised Ray (the caller then shuts it down).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    kw: Dict[str, Any] = {"ignore_reinit_error": True}
    if ship_code:
        import graphode

        kw["runtime_env"] = {"py_modules": [os.path.dirname(os.path.abspath(graphode.__file__))]}
    if quiet:
        kw["logging_level"] = "warning"
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kw)
    return True


# --------------------------------------------------------------------------- model registry
def model_targets(names: Sequence[str]) -> Dict[str, Any]:
    """The registry entries (``"module:function"`` or callables) of ``names``, to ship to
    workers so models registered at run time in the driver resolve there too."""
    from ..models import MODELS

    return {n: MODELS[n] for n in names if n in MODELS}


def register_targets(targets: Dict[str, Any]) -> None:
    """In a worker: make ``targets`` available to :func:`graphode.models.build`."""
    from ..models import MODELS, register_model

    for name, target in (targets or {}).items():
        if MODELS.get(name) is not target and MODELS.get(name) != target:
            register_model(name, target)


def set_threads(n: Optional[float]) -> None:
    """Limit torch's intra-op threads to the CPUs Ray gave this task (at least 1)."""
    if n is None:
        return
    import torch

    torch.set_num_threads(max(1, int(n)))


# --------------------------------------------------------------------------- run_many on Ray
def _run_one(model_name, dataset, config, index, seeds, split, data_root, epochs, callbacks_factory,
             checkpoint, resume, threads, targets, split_seed=None):
    """One run of :func:`graphode.train.run_many`, executed as a Ray task.

    The dataset is prepared exactly as the sequential loop prepares run
    ``index`` (same loader, same seeds, split ``index mod S``) and the run goes
    through ``run_many`` itself with ``runs=1``, so it executes the same code
    with the same seed."""
    set_threads(threads)
    register_targets(targets)
    from ..train._trainer import _load, run_many

    ds_all = _load(dataset, split, seeds, data_root, split_seed) if isinstance(dataset, str) else dataset
    ds = ds_all.split(index % ds_all.num_splits) if ds_all.train_mask.dim() == 2 else ds_all
    cbf = None if callbacks_factory is None else (lambda _i: callbacks_factory(index))
    out = run_many(model_name, ds, config, runs=1, seed=seeds[index], split=split, data_root=data_root,
                   epochs=epochs, callbacks_factory=cbf, checkpoint=checkpoint, resume=resume, progress=False)
    return out["runs"][0]


def run_many_ray(
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
    callbacks_factory: Optional[Callable] = None,
    checkpoint: Optional[str] = None,
    resume: Optional[str] = None,
    progress: bool = True,
    on_run_end: Optional[Callable] = None,
    address: Optional[str] = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    num_cpus: Optional[int] = None,
    ship_code: bool = False,
) -> Dict[str, Any]:
    """:func:`graphode.train.run_many` with the runs spread as Ray tasks.

    Same arguments and the same return structure (``runs`` in seed order,
    ``mean_test_acc``, ``std_test_acc``, ...).  Run ``i`` uses seed ``seed + i``
    and the split the sequential path would give it, and trains through
    ``run_many`` in the worker, so each run's result equals the sequential one
    seed by seed.  Each task gets ``cpus_per_run`` CPUs (torch's threads are
    limited to that) and ``gpus_per_run`` GPUs (``config["device"]`` becomes
    ``"cuda"`` when > 0 and the config names no device).

    ``address`` / ``num_cpus`` / ``ship_code``: see :func:`ensure_ray` (Ray is
    started locally when it is not running, and shut down again at the end).
    ``on_run_end(i, result)`` is called in the driver as runs finish (in
    completion order).  ``progress`` is accepted for signature compatibility
    (workers show no progress bar); ``checkpoint`` / ``resume`` paths must be
    reachable from the workers (a shared filesystem on a multi-node cluster).
    """
    from ..train._trainer import _plain, summarize

    ray = require_ray("graphode train --ray")
    config = dict(config or {})
    if gpus_per_run and "device" not in config:
        config["device"] = "cuda"
    seeds = [int(seed) + i for i in range(int(runs))]
    started = ensure_ray(address, num_cpus=num_cpus, ship_code=ship_code)
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_run_one)
        ds_arg = dataset if isinstance(dataset, str) else ray.put(dataset)
        targets = model_targets([model_name])
        refs = {}
        for i in range(len(seeds)):
            ck = None if checkpoint is None else (checkpoint if runs == 1 else f"{checkpoint}.run{i}")
            rs = None if resume is None else (resume if runs == 1 else f"{resume}.run{i}")
            ref = task.remote(model_name, ds_arg, config, i, seeds, split, data_root, epochs, callbacks_factory,
                              ck, rs, cpus_per_run, targets, split_seed)
            refs[ref] = i
        results: List[Optional[Dict[str, Any]]] = [None] * len(seeds)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = refs[ref]
                results[i] = ray.get(ref)
                if on_run_end is not None:
                    on_run_end(i, results[i])
    finally:
        if started:
            ray.shutdown()
    return {"runs": results, **summarize(results), "config": _plain(config)}
