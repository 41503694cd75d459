"""Ray plumbing shared by ``graphode sweep`` and ``graphode train --ray``:
the optional-dependency check, starting / joining a Ray cluster, and
:class:`RayExecutor`, the executor that runs :func:`graphode.train.run_many`'s
seeds as Ray tasks (:func:`run_many_ray`).

Ray is imported only inside functions, so ``import graphode.sweep`` works
without it.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable, Dict, Optional

__all__ = ["INSTALL_HINT", "require_ray", "ensure_ray", "RayExecutor", "run_many_ray"]

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


def set_threads(n: Optional[float]) -> None:
    """Limit torch's intra-op threads to the CPUs Ray gave this task (at least 1)."""
    if n is None:
        return
    import torch

    torch.set_num_threads(max(1, int(n)))


# --------------------------------------------------------------------------- the executor
def _call(threads: Optional[float], fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """A submitted call, in a Ray worker: torch's threads limited to the task's CPUs."""
    set_threads(threads)
    return fn(*args, **kwargs)


class RayExecutor(concurrent.futures.Executor):
    """A :mod:`concurrent.futures` executor whose calls run as Ray tasks, for
    :func:`graphode.train.run_many` (``graphode train --ray``).

    Each call gets ``cpus_per_run`` CPUs (torch's threads are limited to that) and
    ``gpus_per_run`` GPUs (then ``device`` is ``"cuda"``: run_many trains on it when
    the config names no device).  Ray is started on the first call (``address`` /
    ``num_cpus`` / ``ship_code``: see :func:`ensure_ray`) and, when this executor
    started it, shut down by :meth:`shutdown` (the end of a ``with`` block).
    :meth:`put` stores the dataset once in Ray's object store.  Paths the runs
    write (checkpoints) must be reachable from the workers (a shared filesystem on
    a multi-node cluster).  Raises ``ImportError`` naming the install command when
    Ray is missing."""

    def __init__(self, address: Optional[str] = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 num_cpus: Optional[int] = None, ship_code: bool = False) -> None:
        self._ray = require_ray("graphode train --ray")
        self.address, self.num_cpus, self.ship_code = address, num_cpus, bool(ship_code)
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        self.device: Optional[str] = "cuda" if gpus_per_run else None
        self._started: Optional[bool] = None  # None: Ray not joined yet; True: this executor started it
        self._task = None

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, cpus_per_run={self.cpus_per_run}, "
                f"gpus_per_run={self.gpus_per_run})")

    def _connect(self) -> None:
        if self._started is None:
            self._started = ensure_ray(self.address, num_cpus=self.num_cpus, ship_code=self.ship_code)
            self._task = self._ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                          max_retries=0)(_call)

    def put(self, obj: Any) -> Any:
        """``ray.put(obj)``: a reference that :meth:`submit` hands to the tasks as ``obj``."""
        self._connect()
        return self._ray.put(obj)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        self._connect()
        return self._task.remote(self.cpus_per_run, fn, *args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._started:
            self._ray.shutdown()
        self._started, self._task = None, None


def run_many_ray(
    *args: Any,
    address: Optional[str] = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    num_cpus: Optional[int] = None,
    ship_code: bool = False,
    progress: bool = False,
    **kwargs: Any,
) -> Dict[str, Any]:
    """:func:`graphode.train.run_many` (``args``, ``kwargs``: its arguments) on a
    :class:`RayExecutor` made from the keyword arguments named here (same results seed by seed; ``on_run_end`` is called as runs end, in completion order).
    ``progress`` is off by default: bars drawn in Ray's workers reach this terminal
    through Ray's log forwarding, interleaved."""
    from ..train import run_many

    with RayExecutor(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, num_cpus=num_cpus,
                     ship_code=ship_code) as executor:
        return run_many(*args, progress=progress, executor=executor, **kwargs)
