"""Solver failures: one exception hierarchy, each naming the problem."""
from __future__ import annotations

__all__ = ["SolverError", "StepSizeUnderflowError", "MaxNumStepsError", "NonFiniteError"]


class SolverError(RuntimeError):
    """Base class of solver failures."""


class StepSizeUnderflowError(SolverError, AssertionError):
    """The adaptive step size became too small to advance time.

    Also an ``AssertionError`` for code written against torchdiffeq, which
    asserts on underflow.
    """


class MaxNumStepsError(SolverError, AssertionError):
    """More than ``max_num_steps`` steps were needed between two output times."""


class NonFiniteError(SolverError, ValueError):
    """NaN or Inf appeared in the state or its derivative."""
