"""Where the runs of :func:`graphode.train.run_many` execute: an executor.

``run_many`` hands each run (one seed) to ``executor.submit(fn, *args)`` and reports
the runs as their futures complete, so an executor is what
:mod:`concurrent.futures` calls one:

``submit(fn, /, *args, **kwargs) -> concurrent.futures.Future``
    run ``fn(*args, **kwargs)``, now or later, here or elsewhere.

and, optionally:

``put(obj)``
    share a large argument (the dataset) once; returns what to pass to ``submit``
    in its place (default: ``obj`` itself).
``device``
    the device the runs train on when the config names none (default None: the
    config's, else ``"cpu"``); an executor that gives each run a GPU says ``"cuda"``.

:class:`SerialExecutor` (the default) runs each call when it is submitted, in this
process, so the runs go one after another exactly as a plain loop would.  Any
:class:`concurrent.futures.Executor` works too (``ProcessPoolExecutor`` runs the
seeds in parallel processes); :class:`graphode.sweep.RayExecutor` runs them as Ray
tasks (``graphode train --ray``).  Each run seeds everything itself before building
its model, so where it runs does not change its result.  The caller owns the
executor (``with ...Executor() as ex: run_many(..., executor=ex)``).
"""
from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Optional

__all__ = ["SerialExecutor"]


class SerialExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this process, and returns its completed
    future (an exception the call raises is the future's; ``KeyboardInterrupt`` and
    other non-``Exception`` errors propagate at once)."""

    #: runs train on the config's device
    device: Optional[str] = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            future.set_exception(e)
        else:
            future.set_result(result)
        return future

    def put(self, obj: Any) -> Any:
        return obj

    def __repr__(self) -> str:
        return "SerialExecutor()"
