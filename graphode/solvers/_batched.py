"""Per-sample adaptive solving of a batch (``options={"batched": True}``).

``y0`` has shape ``[B, *S]``; ``t`` is ``[T]`` (shared) or ``[B, T]`` (each
sample's own output times, each row strictly monotone in one direction,
all rows in the same direction).  Every sample has its own time, step size,
error ratio, accept/reject decision and PI-controller history, exactly as if
it were solved alone: the error norm is taken over each sample's elements,
and the controller's formulas are those of :class:`~._controller.PIController`
applied elementwise.  All samples advance together through the explicit
embedded RK stages (one batched call of ``f`` per stage); a sample that has
passed its last output time stops stepping (its step is masked), and the
loop ends when all have.

The field is called as ``func(t, y)`` with ``t`` a tensor of shape ``[B]``
(each sample's stage time, in the state's dtype) and ``y`` of shape
``[B, *S]``; it must treat the samples independently (e.g. a network applied
row-wise), or the solve is not that of each sample alone.

Host syncs: one per step (are any samples still running, and are there
outputs inside the step), as the unbatched loop.  Gradients flow through
the solve (backpropagation through the masked updates).
"""
from __future__ import annotations

import math
from typing import List

import torch

from ._errors import MaxNumStepsError, NonFiniteError, StepSizeUnderflowError
from ._tableaux import ButcherTableau, polyval
from ._interp import quartic_stage_weights

__all__ = ["solve_batched", "BATCHED_OPTIONS"]

BATCHED_OPTIONS = frozenset({"batched", "first_step", "max_num_steps", "safety", "ifactor", "dfactor", "pcoeff",
                             "icoeff", "min_step", "max_step", "norm", "dtype"})


def _bshape(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v[B]`` viewed as ``[B, 1, …, 1]`` to broadcast against ``like[B, *S]``."""
    return v.view((v.shape[0],) + (1,) * (like.dim() - 1))


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS norm ``[B]``."""
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    if n == 0:
        return flat.new_zeros(flat.shape[0])
    return torch.linalg.vector_norm(flat, dim=1) * (1.0 / math.sqrt(n))


def _dense_weights(tab: ButcherTableau, theta: torch.Tensor) -> List[torch.Tensor]:
    """Continuous-extension weights ``b_i(θ)`` for a tensor of θ (per sample)."""
    if tab.dense is not None:
        return [sum(c * theta ** m for m, c in enumerate(p)) if any(p) else torch.zeros_like(theta)
                for p in tab.dense]
    if tab.b_mid is not None:
        # quartic_stage_weights is polynomial in θ: evaluate it on the tensor elementwise
        return quartic_stage_weights(theta, tab.b, tab.b_mid)
    raise ValueError(f"tableau {tab.name!r} has no dense output; batched solving needs one")


def solve_batched(func, y0: torch.Tensor, t: torch.Tensor, tableau: ButcherTableau, rtol, atol, *, first_step=None,
                  max_num_steps=2 ** 31 - 1, safety=0.9, ifactor=10.0, dfactor=0.2, pcoeff=0.0, icoeff=1.0,
                  min_step=0.0, max_step=math.inf, stats=None):
    """Solve each sample of ``y0[B, *S]`` on its own output times ``t[B, T]``; returns ``[T, B, *S]``."""
    if not tableau.adaptive or tableau.implicit:
        raise ValueError(f"batched solving needs an explicit embedded pair, not {tableau.name!r}")
    B = y0.shape[0]
    dtype, device = y0.dtype, y0.device
    tt = t.detach().to(device=device, dtype=torch.float64)
    sign = -1.0 if (tt.shape[1] > 1 and bool(tt[0, 0] > tt[0, 1])) else 1.0
    tau = sign * tt                                    # internal times, increasing per row
    T = tau.shape[1]
    A, c, b = tableau.A, tableau.c, tableau.b
    e = tableau.e
    s = tableau.stages
    order = float(tableau.error_order)
    expo_i = (icoeff + pcoeff) / order
    expo_p = pcoeff / order
    fsal = tableau.fsal

    def tol_of(x):
        return x if isinstance(x, float) else x.to(device=device, dtype=dtype)

    rtol_, atol_ = tol_of(rtol), tol_of(atol)

    def call(tau_now, y):
        stats.nfe += 1
        return func((sign * tau_now).to(dtype), y)

    out = [[None] * T for _ in range(B)]
    cur = tau[:, 0].clone()
    y = y0
    for bi in range(B):
        out[bi][0] = y0[bi]
    nxt = torch.ones(B, dtype=torch.long, device=device)           # next output index per sample
    f0 = call(cur, y)
    # ---- initial step (Hairer, Nørsett & Wanner II.4), per sample
    with torch.no_grad():
        if first_step is None:
            scale = y.abs() * rtol_ + atol_
            d0, d1 = _rms(y / scale), _rms(f0 / scale)
            h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
            h0d = h0.to(torch.float64)
            y1 = y + _bshape((sign * h0d).to(dtype), y) * f0
            f1 = call(cur + h0d, y1)
            d2 = _rms((f1 - f0) / scale) / h0
            m = torch.maximum(d1, d2)
            h1 = torch.where((d1 <= 1e-15) & (d2 <= 1e-15), torch.clamp(h0 * 1e-3, min=1e-6),
                             (0.01 / m) ** (1.0 / float(tableau.order)))
            dt = torch.minimum(100 * h0, h1).to(torch.float64)
        else:
            dt = torch.full((B,), abs(float(first_step)), dtype=torch.float64, device=device)
    prev = torch.ones(B, dtype=torch.float64, device=device)
    active = nxt < T
    steps = 0
    abs_y = y.detach().abs()
    n_acc = torch.zeros(B, dtype=torch.long, device=device)
    n_rej = torch.zeros(B, dtype=torch.long, device=device)
    nonfinite = torch.zeros(B, dtype=torch.long, device=device)
    while bool(active.any()):
        if steps >= max_num_steps:
            raise MaxNumStepsError(f"max_num_steps exceeded ({steps}>={max_num_steps}) in the batched solve")
        steps += 1
        dt = dt.clamp(min=min_step, max=max_step)
        dt = torch.where(torch.isfinite(dt), dt, torch.full_like(dt, min_step))
        if bool(((cur + dt <= cur) & active).any()):
            raise StepSizeUnderflowError("underflow in dt: a sample's step size became too small to advance "
                                         "(the problem may be stiff; try an implicit method)")
        step_dt = torch.where(active, dt, torch.zeros_like(dt))      # finished samples do not move
        h = _bshape((sign * step_dt).to(dtype), y)
        k = [f0]
        yi = y
        for i in range(1, s):
            terms = [(A[i][j], k[j]) for j in range(i) if A[i][j] != 0.0]
            inc = sum(a * kj for a, kj in terms[1:]) if len(terms) > 1 else None
            inc = terms[0][0] * terms[0][1] if inc is None else inc + terms[0][0] * terms[0][1]
            yi = y + h * inc
            if c[i] == 1.0:         # as the unbatched stepper: one ulp before the step's end
                ts = torch.nextafter((sign * (cur + step_dt)).to(dtype), torch.full((B,), -sign * math.inf,
                                                                                     dtype=dtype, device=device))
                stats.nfe += 1
                k.append(func(ts, yi))
            else:
                k.append(call(cur + c[i] * step_dt, yi))
        if fsal:
            y1 = yi
        else:
            y1 = y + h * sum(bj * kj for bj, kj in zip(b, k) if bj != 0.0)
        with torch.no_grad():
            err = h * sum(ej * kj.detach() for ej, kj in zip(e, k) if ej != 0.0)
            a1 = y1.detach().abs()
            scale = torch.maximum(abs_y, a1) * rtol_ + atol_
            ratio = _rms(err / scale).to(torch.float64)
            accept = (ratio <= 1.0) | (dt <= min_step)
            accept &= ~(dt > max_step) & active
            finite = torch.isfinite(ratio)
            lo = torch.where(ratio < 1.0, torch.ones_like(ratio), torch.full_like(ratio, dfactor))
            fac = safety * ratio.clamp(min=1e-300) ** (-expo_i)
            if expo_p:
                fac = fac * prev ** expo_p
            fac = torch.minimum(torch.full_like(fac, ifactor), torch.maximum(fac, lo))
            fac = torch.where(ratio == 0.0, torch.full_like(fac, ifactor), fac)
            fac = torch.where(finite, fac, torch.full_like(fac, dfactor))
            new_dt = (dt * fac).clamp(min=min_step, max=max_step)
            prev = torch.where(accept & finite & (ratio > 0), ratio, prev)
            dt = torch.where(active, new_dt, dt)
            n_acc += accept.long()
            n_rej += (active & ~accept).long()
            nonfinite = torch.where(active & ~finite, nonfinite + 1, torch.where(accept, 0, nonfinite))
            if bool((nonfinite > 30).any()):
                raise NonFiniteError("non-finite values (NaN/Inf) in a sample's state or derivative; shrinking "
                                     "its step 30 times did not help")
        t1 = cur + step_dt
        # ---- outputs inside accepted steps (dense output), per sample
        acc_b = _bshape(accept, y)
        while True:
            idx = nxt.clamp(max=T - 1)
            tout = tau.gather(1, idx[:, None])[:, 0]
            hit = accept & (nxt < T) & (tout <= t1)
            if not bool(hit.any()):
                break
            theta = ((tout - cur) / torch.where(step_dt > 0, step_dt, torch.ones_like(step_dt))).clamp(0.0, 1.0)
            w = _dense_weights(tableau, theta.to(dtype))
            yo = y + h * sum(_bshape(wi, y) * ki for wi, ki in zip(w, k))
            yo = torch.where(_bshape(theta == 1.0, y), y1, yo)
            for bi in torch.nonzero(hit).flatten().tolist():
                out[bi][int(nxt[bi])] = yo[bi]
            nxt = nxt + hit.long()
        y = torch.where(acc_b, y1, y)
        with torch.no_grad():
            abs_y = torch.where(acc_b, a1, abs_y)
        cur = torch.where(accept, t1, cur)
        f_next = k[-1] if tableau.reuse_last_stage else call(cur, y)
        f0 = torch.where(acc_b, f_next, f0) if tableau.reuse_last_stage else f_next
        active = nxt < T            # a sample whose last output is written stops
    stats.n_accepted += int(n_acc.sum())
    stats.n_rejected += int(n_rej.sum())
    stats.per_sample = dict(n_accepted=n_acc.tolist(), n_rejected=n_rej.tolist())
    return torch.stack([torch.stack([row[j] for row in out]) for j in range(T)])
