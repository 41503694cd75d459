"""Problem set-up: validate and normalise user input into a :class:`Problem`."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import torch

from ._dynamics import CALLBACK_NAMES, flat_to_shape
from ._norm import max_rms_norm, rms_norm

__all__ = ["Problem", "prepare", "handle_unused"]


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


@dataclass
class Problem:
    """A normalised initial value problem (conventions: :mod:`._dynamics`)."""

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


def _flat_norm(user_norm, shapes):
    """The norm on the flat internal state, from the user's option (``None``, ``"seminorm"`` or a callable)."""
    if user_norm is None or (isinstance(user_norm, str) and user_norm == "seminorm"):
        return rms_norm if shapes is None else max_rms_norm([s.numel() for s in shapes])
    if shapes is None:
        return user_norm

    def norm(x, _n=user_norm, _shapes=shapes):
        return _n(flat_to_shape(x, (), _shapes))
    return norm


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
        y0 = torch.cat([yi.reshape(-1) for yi in y0])
    else:
        _check_y("y0", y0)
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
    user_norm = options.pop("norm", None)
    norm = _flat_norm(user_norm, shapes)
    if callable(user_norm):
        options["norm"] = norm   # solvers tell a user's norm from the default by its presence

    # --- events
    if event_fn is not None:
        if t.numel() != 2:
            raise ValueError(f"We require len(t) == 2 when in event handling mode, but got len(t)={t.numel()}.")
        ev = event_fn if shapes is None else _TupleInput(event_fn, shapes)
        event_fn = _combine_events(ev, t[0], y0)

    # --- callbacks
    callbacks = {}
    for name in CALLBACK_NAMES:
        cb = getattr(func, name, None)
        if cb is not None and callable(cb):
            callbacks[name] = cb

    return Problem(fn=fn, y0=y0, t=t, taus=taus, sign=sign, rtol=rtol, atol=atol, method=method,
                   options=options, norm=norm, shapes=shapes, event_fn=event_fn, callbacks=callbacks,
                   user_func=func)


def handle_unused(method: str, unused: dict):
    if unused:
        names = ", ".join(f"'{k}'" for k in sorted(unused))
        warnings.warn(f"method '{method}' does not use option(s) {names}; they are ignored "
                      f"(Unexpected arguments {sorted(unused)})", UserWarning, stacklevel=4)
