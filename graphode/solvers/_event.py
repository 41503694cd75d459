"""Event location and the event-time gradient (implicit function theorem)."""
from __future__ import annotations

import math

import torch

__all__ = ["bisect_event", "EventGradient", "upcast"]


def upcast(x):
    """``x`` with every floating tensor (also inside tuples/lists) in float64 (complex: complex128)."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            return x.to(torch.complex128)
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(upcast(v) for v in x)
    return x


def bisect_event(interp, dyn, sign0, t0: float, t1: float, event_fn, tol: float, interp_hi=None):
    """Bisect ``[t0, t1]`` (internal time) for the sign change of ``event_fn``.

    ``interp(τ)`` evaluates the dense output; the number of halvings is
    ``ceil(log2((t1 - t0) / tol))``.  Returns ``(τ_event, y(τ_event))``.

    With ``interp_hi`` (the same interpolant on float64 copies of the step's
    data) the bisection evaluates the interpolant and the event function in
    float64, when the state is in a lower precision: the event is then
    located on the smooth interpolant, not on its float32 rounding, whose
    steps are ``ulp(y) / |y'|`` wide in time.  If the event function does not
    accept float64 input (e.g. it holds float32 weights), the state's dtype
    is used.
    """
    tol = float(tol)
    width = t1 - t0
    if tol > 0 and width > tol:
        n = int(math.ceil(math.log(width / tol) / math.log(2.0)))
    else:
        n = 0
    time, ev_interp = dyn.time, interp
    if interp_hi is not None and dyn.dtype not in (torch.float64, torch.complex128):
        def time(tau):
            return torch.scalar_tensor(dyn.sign * tau, dtype=torch.float64, device=dyn.device)
        try:
            with torch.no_grad():
                v = event_fn(time(0.5 * (t0 + t1)), interp_hi(0.5 * (t0 + t1)))
            if not torch.is_tensor(v) or not torch.isfinite(v).all():
                raise TypeError
            ev_interp = interp_hi
        except Exception:  # noqa: BLE001  (the event function cannot take float64: stay in the state's dtype)
            time, ev_interp = dyn.time, interp
    with torch.no_grad():
        for _ in range(n):
            tm = 0.5 * (t0 + t1)
            ym = ev_interp(tm)
            same = bool(torch.sign(event_fn(time(tm), ym)) == sign0)
            if same:
                t0 = tm
            else:
                t1 = tm
    te = 0.5 * (t0 + t1)
    return te, interp(te)


class EventGradient(torch.autograd.Function):
    """Pass gradients from the event time and state back to the state.

    With ``g(t*, y(t*)) = 0`` the implicit function theorem gives
    ``dt*/dy = -(∂g/∂y) / (∂g/∂t + ∂g/∂y · f(t*, y*))``.
    """

    @staticmethod
    def forward(ctx, func, event_fn, event_t, state_t):
        ctx.func = func
        ctx.event_fn = event_fn
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach(), state_t.detach()

    @staticmethod
    def backward(ctx, grad_t, grad_state):
        event_t, state_t = ctx.saved_tensors
        func, event_fn = ctx.func, ctx.event_fn
        with torch.enable_grad():
            t_ = event_t.detach().clone().requires_grad_(True)
            y_ = state_t.detach().clone().requires_grad_(True)
            c = event_fn(t_, y_)
            dcdt, dcdy = torch.autograd.grad(c.sum(), (t_, y_), allow_unused=True)
        if dcdt is None:
            dcdt = torch.zeros_like(t_)
        if dcdy is None:
            dcdy = torch.zeros_like(y_)
        with torch.no_grad():
            f_val = func(event_t.detach(), state_t.detach())
            total = dcdt + torch.sum(dcdy * f_val)
            grad_t = grad_t + torch.sum(grad_state * f_val)
            grad_state = grad_state + dcdy * (-grad_t / (total + 1e-12))
        return None, None, None, grad_state
