"""``odeint_adjoint``: gradients by solving the adjoint ODE backwards in time.

Forward: integrate without autograd and keep only the outputs ``y(t_i)``.
Backward, on each interval ``[t_{i-1}, t_i]`` from the last, integrate the
augmented system (state ``z = (s_t, y, a, g_θ)``) from ``t_i`` to
``t_{i-1}``:

.. math::

    \\dot y = f(t, y),\\quad \\dot a = -a^\\top \\partial_y f,\\quad
    \\dot g_θ = -a^\\top \\partial_θ f,\\quad \\dot s_t = -a^\\top \\partial_t f,

restarting ``y`` from the stored forward output and adding ``∂L/∂y(t_{i-1})``
to ``a`` at each output time.  Memory is O(len(t)) states, independent of
the number of solver steps.  The vector–Jacobian products come from one
``torch.autograd.grad`` per evaluation.

Adjoint norm (step control of the backward solve) is torchdiffeq's:
``max(|s_t|, ||y||, ||a||, max_θ rms(g_θ))``; ``adjoint_options={"norm":
"seminorm"}`` drops the parameter part (Kidger et al., 2021), which usually
saves many backward steps.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ._api import _finish, run_problem
from ._dynamics import CALLBACK_NAMES, flat_to_shape, real_dtype
from ._norm import rms_norm
from ._problem import prepare
from ._registry import METHODS

__all__ = ["odeint_adjoint", "find_parameters"]


def find_parameters(module: nn.Module):
    """Parameters of ``module`` (also inside ``DataParallel`` replicas)."""
    if getattr(module, "_is_replica", False):
        def members(m):
            return [(k, v) for k, v in m.__dict__.items() if torch.is_tensor(v) and v.requires_grad]
        return [p for _, p in module._named_members(get_members_fn=members)]
    return list(module.parameters())


class _Holder:
    pass


class _AdjointFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, h, y0, t, *params):
        ctx.h = h
        p = h.problem
        p.y0 = y0
        with torch.no_grad():
            ys, event_t, stats = run_problem(p)
        h.stats = stats
        if event_t is None:
            ctx.save_for_backward(t, ys, *params)
            return ys
        ctx.save_for_backward(t, ys, event_t, *params)
        return event_t, ys

    @staticmethod
    def backward(ctx, *grads):
        h = ctx.h
        p = h.problem
        fn = p.fn
        event_mode = p.event_fn is not None
        if event_mode:
            t_in, ys, event_t, *params = ctx.saved_tensors
            t = torch.cat([t_in[0].reshape(-1), event_t.reshape(-1).to(t_in)])
            grad_y = grads[1]
        else:
            t_in, ys, *params = ctx.saved_tensors
            t = t_in
            grad_y = grads[0]
        params = tuple(params)
        t_grad = h.t_requires_grad
        shape = ys.shape[1:]
        n = ys[0].numel()
        sizes = [1, n, n] + [q.numel() for q in params]
        zdtype = ys.dtype
        tdt = real_dtype(ys)

        def aug(tt, z):
            parts = torch.split(z, sizes)
            y = parts[1].view(shape)
            a = parts[2].view(shape)
            with torch.enable_grad():
                t_ = tt.detach()
                if t_grad:
                    t_.requires_grad_(True)
                y_ = y.detach().requires_grad_(True)
                fy = fn(t_, y_)
                inputs = (y_,) + params + ((t_,) if t_grad else ())
                gr = torch.autograd.grad(fy, inputs, -a, allow_unused=True, retain_graph=False)
            vy = gr[0] if gr[0] is not None else torch.zeros_like(y)
            vp = [torch.zeros_like(q) if g is None else g for q, g in zip(params, gr[1:1 + len(params)])]
            if t_grad and gr[-1] is not None:
                vt = gr[-1].reshape(1).to(zdtype)
            else:
                vt = z.new_zeros(1)
            return torch.cat([vt, fy.reshape(-1).to(zdtype), vy.reshape(-1).to(zdtype)]
                             + [g.reshape(-1).to(zdtype) for g in vp])

        for cb_name in CALLBACK_NAMES:
            cb = getattr(h.user_func, cb_name + "_adjoint", None)
            if cb is not None:
                setattr(aug, cb_name, cb)

        with torch.no_grad():
            s_t = ys.new_zeros(1)
            a = grad_y[-1].reshape(-1)
            gparams = [q.new_zeros(q.numel(), dtype=zdtype) for q in params]
            time_vjps = torch.empty(len(t), dtype=t.dtype, device=t.device) if t_grad else None
            for i in range(len(t) - 1, 0, -1):
                if t_grad:
                    fe = fn(t[i].to(tdt), ys[i])
                    d = torch.sum(fe.reshape(-1) * grad_y[i].reshape(-1))
                    s_t = s_t - d
                    time_vjps[i] = d
                z0 = torch.cat([s_t, ys[i].reshape(-1), a] + gparams)
                zs, _, _ = _AdjointFn._solve(aug, z0, t[i - 1:i + 1].flip(0), h)
                z1 = zs[1]
                parts = torch.split(z1, sizes)
                s_t = parts[0]
                a = parts[2] + grad_y[i - 1].reshape(-1)
                gparams = list(parts[3:])
            if t_grad:
                time_vjps[0] = s_t.reshape(())
                if event_mode:
                    time_vjps = torch.cat([time_vjps[0].reshape(-1), torch.zeros_like(t_in[1:])])
        adj_y = a.view(shape)
        adj_params = [g.view(q.shape).to(q.dtype) for g, q in zip(gparams, params)]
        return (None, adj_y, time_vjps, *adj_params)

    @staticmethod
    def _solve(aug, z0, tt, h):
        opts = dict(h.adjoint_options)
        q = prepare(aug, z0, tt, h.adjoint_rtol, h.adjoint_atol, h.adjoint_method, opts, None, METHODS)
        return run_problem(q)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None):
    """:func:`odeint` with O(1)-memory gradients from the adjoint method.

    Same arguments and return value as :func:`odeint`, plus:

    Args:
        adjoint_rtol, adjoint_atol, adjoint_method: for the backward solve
            (default: the forward values).
        adjoint_options: options of the backward solve (default: ``options``
            without ``norm``); ``{"norm": "seminorm"}`` excludes the parameter
            gradients from the error norm.
        adjoint_params: tensors to differentiate (default: ``func.parameters()``;
            ``func`` must then be an ``nn.Module``).

    Gradients flow to ``y0``, ``t`` and ``adjoint_params``; memory does not
    grow with the number of steps.
    """
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError("func must be an instance of nn.Module to specify the adjoint parameters; alternatively "
                         "they can be specified explicitly via the `adjoint_params` argument. If there are no "
                         "parameters then it is allowable to set `adjoint_params=()`.")
    if adjoint_rtol is None:
        adjoint_rtol = rtol
    if adjoint_atol is None:
        adjoint_atol = atol
    if adjoint_method is None:
        adjoint_method = method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError("If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. "
                         "So as `options` has been passed then `adjoint_options` must be passed as well.")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if options is not None else {}
    else:
        adjoint_options = dict(adjoint_options)
    adjoint_params = tuple(find_parameters(func)) if adjoint_params is None else tuple(adjoint_params)
    n_all = len(adjoint_params)
    adjoint_params = tuple(q for q in adjoint_params if q.requires_grad)
    if len(adjoint_params) != n_all and callable(adjoint_options.get("norm")):
        warnings.warn("An adjoint parameter was passed without requiring gradient. For efficiency this will be "
                      "excluded from the adjoint pass, and will not appear as a tensor in the adjoint norm.")

    p = prepare(func, y0, t, rtol, atol, method, options, event_fn, METHODS)
    state_norm = p.norm
    n = p.y0.numel()
    sizes = [1, n, n] + [q.numel() for q in adjoint_params]
    shapes = p.shapes
    user_norm = adjoint_options.get("norm")

    if user_norm is None or (isinstance(user_norm, str) and user_norm == "seminorm"):
        semi = user_norm is not None
        yshape = p.y0.shape

        def adjoint_norm(z):
            parts = torch.split(z, sizes)
            out = torch.maximum(parts[0].abs().reshape(()), state_norm(parts[1].view(yshape)))
            out = torch.maximum(out, state_norm(parts[2].view(yshape)))
            if not semi:
                for g in parts[3:]:
                    out = torch.maximum(out, rms_norm(g))
            return out
    else:
        def adjoint_norm(z):
            parts = torch.split(z, sizes)
            tpart = parts[0].reshape(())
            y, a = parts[1], parts[2]
            prm = [g.view(q.shape) for g, q in zip(parts[3:], adjoint_params)]
            if shapes is None:
                return user_norm((tpart, y.view(p.y0.shape), a.view(p.y0.shape), *prm))
            return user_norm((tpart, *flat_to_shape(y, (), shapes), *flat_to_shape(a, (), shapes), *prm))
    ctrl = adjoint_options.get("controller")
    if ctrl is None or getattr(ctrl, "norm", None) is None:   # a controller's own norm takes precedence
        adjoint_options["norm"] = adjoint_norm

    h = _Holder()
    h.problem = p
    h.adjoint_rtol = adjoint_rtol
    h.adjoint_atol = adjoint_atol
    h.adjoint_method = adjoint_method
    h.adjoint_options = adjoint_options
    h.t_requires_grad = p.t.requires_grad
    h.user_func = func
    ans = _AdjointFn.apply(h, p.y0, p.t, *adjoint_params)
    if event_fn is None:
        return _finish(p, ans)
    event_t, ys = ans
    return event_t, _finish(p, ys)
