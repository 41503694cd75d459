"""Shared plumbing: errors, the wrapped vector field, norms, input normalisation.

Internal conventions (used by every solver):

* The state is one flat-or-shaped tensor ``y`` (tuples are flattened by
  :func:`prepare`).
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
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import torch

__all__ = [
    "SolverError", "StepSizeUnderflowError", "MaxNumStepsError", "NonFiniteError",
    "Dynamics", "SolverStats", "rms_norm", "prepare", "Problem", "flat_to_shape",
    "CALLBACK_NAMES",
]

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")


# ----------------------------------------------------------------------- errors
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


# ------------------------------------------------------------------------ stats
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
        n_linear: Krylov iterations summed over Newton iterations.
        njvp: Jacobian–vector products (implicit solvers).
        newton_failures: steps whose Newton iteration did not converge.
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    step_sizes: List[float] = field(default_factory=list)
    n_newton: int = 0
    n_linear: int = 0
    njvp: int = 0
    newton_failures: int = 0

    @property
    def n_steps(self) -> int:
        return self.n_accepted + self.n_rejected


# ------------------------------------------------------------------------ norms
def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square norm ``sqrt(mean(x²))`` (torchdiffeq's default)."""
    n = x.numel()
    if n == 0:
        return x.new_zeros(())
    return torch.linalg.vector_norm(x) * (1.0 / math.sqrt(n))


def _mixed_norm(xs) -> torch.Tensor:
    if len(xs) == 0:
        return 0.0
    return max(rms_norm(x) for x in xs)


def flat_to_shape(tensor: torch.Tensor, length: Tuple[int, ...], shapes) -> Tuple[torch.Tensor, ...]:
    """Split the last dimension of ``tensor`` into pieces of the given shapes."""
    out = []
    total = 0
    for shape in shapes:
        n = shape.numel()
        out.append(tensor[..., total:total + n].view((*length, *shape)))
        total += n
    return tuple(out)


# ------------------------------------------------------------------- dynamics
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


class _TupleField:
    """Flat-state wrapper of a field on a tuple of tensors."""

    __slots__ = ("base", "shapes")

    def __init__(self, base, shapes):
        self.base = base
        self.shapes = shapes

    def __call__(self, t, y):
        f = self.base(t, flat_to_shape(y, (), self.shapes))
        return torch.cat([fi.reshape(-1) for fi in f])


class _TupleInput:
    __slots__ = ("base", "shapes")

    def __init__(self, base, shapes):
        self.base = base
        self.shapes = shapes

    def __call__(self, t, y):
        return self.base(t, flat_to_shape(y, (), self.shapes))


# ---------------------------------------------------------------------- problem
@dataclass
class Problem:
    """A normalised initial value problem (see module docstring)."""

    fn: Callable                      # flat field in user time
    y0: torch.Tensor                  # flat (tuple) or original-shaped state
    t: torch.Tensor                   # user output times (1-D)
    taus: List[float]                 # internal output times, increasing
    sign: float
    rtol: Any                         # float or tensor broadcastable to y0
    atol: Any
    method: str
    options: dict
    norm: Callable                    # on the flat/shaped internal state
    shapes: Optional[list]            # tuple component shapes, or None
    event_fn: Optional[Callable]      # event_fn(t_user, y_internal) -> scalar
    callbacks: dict
    user_func: Any = None

    def to_user_state(self, y):
        if self.shapes is None:
            return y
        return flat_to_shape(y, (), self.shapes)


def _check_t(t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`t` must be a torch.Tensor, got {type(t).__name__}")
    if not torch.is_floating_point(t):
        raise TypeError(f"`t` must be a floating point Tensor but has dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"`t` must be one-dimensional, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("`t` must contain at least one time point")
    if t.numel() > 1:
        d = t[1:] > t[:-1]
        if not (bool(d.all()) or bool((t[1:] < t[:-1]).all())):
            raise ValueError("`t` must be strictly increasing or strictly decreasing "
                             "(non-monotone or repeated time points)")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("`t` contains non-finite values (NaN or Inf)")


def _check_y(name, y):
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or a tuple of Tensors, got {type(y).__name__}")
    if not (torch.is_floating_point(y) or torch.is_complex(y)):
        raise TypeError(f"`{name}` must be a floating point Tensor but has dtype {y.dtype} "
                        f"(convert it with .float() or .double())")


def _tol(name, tol, shapes, y0):
    """Return a float, or a tensor (per element of the flat state)."""
    if isinstance(tol, torch.Tensor):
        if tol.requires_grad:
            raise ValueError(f"`{name}` cannot require gradient")
        if tol.numel() == 1:
            return float(tol)
        return tol.to(device=y0.device, dtype=y0.real.dtype if torch.is_complex(y0) else y0.dtype)
    if shapes is not None:
        try:
            it = tuple(tol)
        except TypeError:
            return float(tol)
        if len(it) != len(shapes):
            raise ValueError(f"If using tupled {name} it must have the same length as the tuple y0")
        parts = [torch.as_tensor(v, dtype=y0.dtype, device=y0.device).expand(s.numel()).reshape(-1)
                 for v, s in zip(it, shapes)]
        return torch.cat(parts)
    return float(tol)


def _combine_events(event_fn, t0, y0):
    """Make all event components initially positive and combine them by ``min``."""
    with torch.no_grad():
        signs = torch.sign(event_fn(t0, y0))

    def combined(t, y):
        return torch.min(event_fn(t, y) * signs)

    return combined


def prepare(func, y0, t, rtol, atol, method, options, event_fn, methods) -> Problem:
    """Validate and normalise user input into a :class:`Problem`."""
    # --- method / options
    if method is None:
        method = "dopri5"
    if method not in methods:
        raise ValueError(f'Invalid method "{method}". Must be one of '
                         + "{" + ", ".join(f'"{m}"' for m in methods) + "}.")
    options = {} if options is None else dict(options)

    # --- state
    shapes = None
    is_tuple = not isinstance(y0, torch.Tensor)
    if is_tuple:
        if not isinstance(y0, (tuple, list)):
            raise TypeError(f"`y0` must be a torch.Tensor or a tuple of Tensors, got {type(y0).__name__}")
        if len(y0) == 0:
            raise ValueError("`y0` is an empty tuple")
        for i, yi in enumerate(y0):
            _check_y(f"y0[{i}]", yi)
        shapes = [yi.shape for yi in y0]
        y0_user = tuple(y0)
        y0 = torch.cat([yi.reshape(-1) for yi in y0])
    else:
        _check_y("y0", y0)
        y0_user = y0
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("`y0` contains non-finite values (NaN or Inf)")

    # --- time
    _check_t(t)
    if t.device != y0.device:
        warnings.warn("t is not on the same device as y0. Coercing to y0.device.")
        t = t.to(y0.device)
    sign = -1.0 if (t.numel() > 1 and bool(t[0] > t[1])) else 1.0
    taus = [sign * v for v in t.detach().double().tolist()]

    # --- tolerances
    rtol = _tol("rtol", rtol, shapes, y0)
    atol = _tol("atol", atol, shapes, y0)

    # --- field and norm
    fn = func if shapes is None else _TupleField(func, shapes)
    user_norm = options.get("norm")
    if user_norm is None or (isinstance(user_norm, str) and user_norm == "seminorm"):
        if shapes is None:
            norm = rms_norm
        else:
            sizes = [s.numel() for s in shapes]

            def norm(x, _sizes=sizes):
                return max(rms_norm(p) for p in torch.split(x, _sizes))
    elif shapes is None:
        norm = user_norm
    else:
        def norm(x, _n=user_norm, _shapes=shapes):
            return _n(flat_to_shape(x, (), _shapes))
    options["norm"] = norm

    # --- events
    if event_fn is not None:
        if t.numel() != 2:
            raise ValueError(f"We require len(t) == 2 when in event handling mode, but got len(t)={t.numel()}.")
        ev = event_fn if shapes is None else _TupleInput(event_fn, shapes)
        event_fn = _combine_events(ev, t[0], y0 if shapes is None else y0)

    # --- callbacks
    callbacks = {}
    for name in CALLBACK_NAMES:
        cb = getattr(func, name, None)
        if cb is not None and callable(cb):
            callbacks[name] = cb

    return Problem(fn=fn, y0=y0, t=t, taus=taus, sign=sign, rtol=rtol, atol=atol, method=method,
                   options=options, norm=norm, shapes=shapes, event_fn=event_fn, callbacks=callbacks,
                   user_func=func)


def real_dtype(y: torch.Tensor):
    return y.real.dtype if torch.is_complex(y) else y.dtype


def handle_unused(method: str, unused: dict):
    if unused:
        names = ", ".join(f"'{k}'" for k in sorted(unused))
        warnings.warn(f"method '{method}' does not use option(s) {names}; they are ignored "
                      f"(Unexpected arguments {sorted(unused)})", UserWarning, stacklevel=4)
