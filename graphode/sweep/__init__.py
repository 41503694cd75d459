"""Hyperparameter sweeps and multi-seed runs on Ray (optional extra: ``pip install 'graphode[sweep]'``).

* ``graphode sweep`` (:func:`add_sweep_args`, :func:`run_sweep`, :func:`sweep`):
  random search over a YAML search space (:mod:`graphode.sweep._space`), with
  ASHA early stopping on per-epoch validation accuracy, locally or on a Ray
  cluster (``--address``); writes ``results.csv`` / ``results.json`` and a
  ``best.yaml`` that ``graphode train --config`` accepts; ``--resume``
  continues an interrupted sweep.
* ``graphode train --runs K --ray`` (:class:`RayExecutor`, :func:`run_many_ray`):
  the seeds of :func:`graphode.train.run_many` as Ray tasks, same results seed by
  seed (``run_many(..., executor=RayExecutor(...))``).

Importing this package does not import Ray; the functions that need it raise
``ImportError`` with the install command when it is missing
(:func:`require_ray`).

>>> from graphode.sweep import sweep
>>> res = sweep("grand-l", "cora", "grand", num_samples=50, epochs=100)   # doctest: +SKIP
>>> res["best_config"]                                                   # doctest: +SKIP
"""
from __future__ import annotations

from . import _space
from ._cli import add_sweep_args, main, run_sweep
from ._ray import INSTALL_HINT, RayExecutor, ensure_ray, require_ray, run_many_ray
from ._space import (DISTRIBUTIONS, Dist, load_space, packaged_spaces, parse_space, resolve_space_path, space_keys,
                     to_tune)
from ._tune import TuneReporter, default_space_for, sweep

__all__ = [
    "add_sweep_args",
    "run_sweep",
    "sweep",
    "RayExecutor",
    "run_many_ray",
    "require_ray",
    "ensure_ray",
    "INSTALL_HINT",
    "default_space_for",
    "TuneReporter",
    "main",
    *_space.__all__,  # the search spaces: DISTRIBUTIONS, Dist, load_space, parse_space, to_tune, ...
]
