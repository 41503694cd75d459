"""The vector field as the solvers see it: :class:`Dynamics` (internal time,
evaluation counter, callbacks) and the statistics of one solve.

Internal conventions (used by every solver):

* The state is one flat-or-shaped tensor ``y`` (tuples are flattened by
  :func:`graphode.solvers._problem.prepare`).
* Solvers run in *internal time* ``τ = sign · t`` which always increases;
  ``sign = -1`` for decreasing ``t``.  Times are Python floats (float64) in
  the solver loops, so time bookkeeping costs no device work.
* ``Dynamics(τ, y)`` returns the *user-time* derivative ``f(t, y)``; a
  stepper with internal step ``Δτ`` multiplies derivatives by
  ``h = sign · Δτ`` (folded into its Python-float coefficients, so time
  reversal costs nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

__all__ = ["Dynamics", "SolverStats", "flat_to_shape", "real_dtype", "CALLBACK_NAMES"]

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


@dataclass
class SolverStats:
    """Counters of one solve.

    Attributes:
        nfe: evaluations of the vector field ``f`` (including initial step
            selection and event location); JVPs are counted in ``njvp``.
        n_accepted: accepted steps (for fixed-grid solvers: all steps).
        n_rejected: rejected steps (adaptive solvers).
        step_sizes: sizes ``|Δt|`` of the accepted steps, in order.
        n_newton: Newton iterations (implicit solvers).
        n_linear: Krylov iterations summed over Newton iterations (and the
            error-estimate filter and the backward's transposed solves).
        njvp: Jacobian–vector products (implicit solvers).
        newton_failures: steps whose Newton iteration did not converge.
        per_sample: batched solving only: ``{"n_accepted": [...], "n_rejected": [...]}``
            per sample.
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    step_sizes: List[float] = field(default_factory=list)
    n_newton: int = 0
    n_linear: int = 0
    njvp: int = 0
    newton_failures: int = 0
    per_sample: Optional[dict] = None

    @property
    def n_steps(self) -> int:
        return self.n_accepted + self.n_rejected


def real_dtype(y: torch.Tensor):
    return y.real.dtype if torch.is_complex(y) else y.dtype


def flat_to_shape(tensor: torch.Tensor, length: Tuple[int, ...], shapes) -> Tuple[torch.Tensor, ...]:
    """Split the last dimension of ``tensor`` into pieces of the given shapes."""
    out = []
    total = 0
    for shape in shapes:
        n = shape.numel()
        out.append(tensor[..., total:total + n].view((*length, *shape)))
        total += n
    return tuple(out)


class Dynamics:
    """The user's field in internal time, with an evaluation counter.

    ``fn(t, y)`` works on the flat state and takes user time ``t`` as a
    0-dim tensor of the state's (real) dtype, on the state's device.
    """

    __slots__ = ("fn", "sign", "dtype", "device", "stats", "cb_step", "cb_accept", "cb_reject",
                 "to_user_state", "_inf")

    def __init__(self, fn, sign, dtype, device, stats: SolverStats, callbacks=None, to_user_state=None):
        self.fn = fn
        self.sign = float(sign)
        self.dtype = dtype
        self.device = device
        self.stats = stats
        callbacks = callbacks or {}
        self.cb_step = callbacks.get("callback_step")
        self.cb_accept = callbacks.get("callback_accept_step")
        self.cb_reject = callbacks.get("callback_reject_step")
        self.to_user_state = to_user_state
        self._inf = None

    def time(self, tau: float, perturb: int = 0) -> torch.Tensor:
        """User time ``sign·τ`` as a tensor; ``perturb=±1`` moves it one ulp forward/back in τ."""
        t = torch.scalar_tensor(self.sign * tau, dtype=self.dtype, device=self.device)
        if perturb:
            if self._inf is None:
                self._inf = torch.scalar_tensor(math.inf, dtype=self.dtype, device=self.device)
            t = torch.nextafter(t, self._inf if perturb * self.sign > 0 else -self._inf)
        return t

    def __call__(self, tau: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        self.stats.nfe += 1
        return self.fn(self.time(tau, perturb), y)

    def call_t(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.stats.nfe += 1
        return self.fn(t, y)

    # Callbacks receive user time, the state in the user's structure and the
    # (positive) internal step size, as torchdiffeq passes them.
    def _cb(self, cb, tau, y, dt):
        if self.to_user_state is not None:
            y = self.to_user_state(y)
        cb(self.time(tau), y, torch.scalar_tensor(dt, dtype=self.dtype, device=self.device))

    def callback_step(self, tau, y, dt):
        if self.cb_step is not None:
            self._cb(self.cb_step, tau, y, dt)

    def callback_accept(self, tau, y, dt):
        if self.cb_accept is not None:
            self._cb(self.cb_accept, tau, y, dt)

    def callback_reject(self, tau, y, dt):
        if self.cb_reject is not None:
            self._cb(self.cb_reject, tau, y, dt)
