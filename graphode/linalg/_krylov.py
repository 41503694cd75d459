"""Matrix-free Krylov solvers for ``A x = b`` with an implicit backward pass.

``A`` is given by ``matvec(v) -> A v`` on tensors of ``b``'s shape; inner
products run over all elements (one global system).  Convergence:
``||b - A x||_2 <= max(rtol * ||b||_2, atol)``.

Gradients (implicit function theorem).  With ``x* = A(θ)^{-1} b``::

    λ = A^{-T} ∂L/∂x*            (one transposed Krylov solve)
    ∂L/∂b = λ,   ∂L/∂θ = -λᵀ ∂(A(θ) x*)/∂θ

Implemented with a surrogate: after the (no-grad) solve we form
``r = b - matvec(x*)`` *with* autograd (``x*`` detached) and return
``x*`` through a function whose backward maps ``g`` to ``λ`` on ``r``.
Autograd then delivers ``∂L/∂b`` and ``∂L/∂θ`` for every tensor ``matvec``
captures, and memory does not depend on the number of iterations.
``Aᵀ v`` comes from ``rmatvec`` if given, else from a vector–Jacobian
product of ``matvec`` (``matvec`` must then be differentiable in its
argument); for ``cg`` the operator is symmetric and ``matvec`` is reused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["cg", "bicgstab", "gmres", "SolveInfo", "solve_implicit"]


@dataclass
class SolveInfo:
    """Outcome of a Krylov solve: iteration count, final residual 2-norm, convergence flag."""

    iterations: int
    residual_norm: float
    converged: bool


def _dot(x, y) -> float:
    return float(torch.vdot(x.reshape(-1), y.reshape(-1)).real)


def _norm(x) -> float:
    return float(torch.linalg.vector_norm(x))


def _ident(v):
    return v


# --------------------------------------------------------------------- kernels
def _start(matvec, b, x0, M):
    """``(M, x, r, ||r||)`` of a solve from ``x0`` (zero when None): a fresh ``x`` and residual."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    return M or _ident, x, r, _norm(r)


def _cg(matvec, b, x0, tol, maxiter, M):
    M, x, r, rn = _start(matvec, b, x0, M)
    if rn <= tol:
        return x, SolveInfo(0, rn, True)
    z = M(r)
    p = z.clone()
    rz = _dot(r, z)
    it = 0
    while it < maxiter:
        it += 1
        ap = matvec(p)
        pap = _dot(p, ap)
        if pap == 0.0 or not math.isfinite(pap):
            break
        alpha = rz / pap
        x.add_(p, alpha=alpha)
        r.add_(ap, alpha=-alpha)
        rn = _norm(r)
        if rn <= tol:
            return x, SolveInfo(it, rn, True)
        z = M(r)
        rz_new = _dot(r, z)
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
    return x, SolveInfo(it, rn, rn <= tol)


def _bicgstab(matvec, b, x0, tol, maxiter, M):
    M, x, r, rn = _start(matvec, b, x0, M)
    if rn <= tol:
        return x, SolveInfo(0, rn, True)
    rhat = r.clone()
    rho = alpha = omega = 1.0
    v = torch.zeros_like(b)
    p = torch.zeros_like(b)
    it = 0
    while it < maxiter:
        it += 1
        rho_new = _dot(rhat, r)
        if rho_new == 0.0 or omega == 0.0:
            # breakdown: restart the shadow residual
            rhat = r.clone()
            rho_new = _dot(rhat, r)
            p.zero_()
            v.zero_()
            rho = alpha = omega = 1.0
            if rho_new == 0.0:
                break
        beta = (rho_new / rho) * (alpha / omega)
        p.add_(v, alpha=-omega).mul_(beta).add_(r)
        phat = M(p)
        v = matvec(phat)
        rv = _dot(rhat, v)
        if rv == 0.0 or not math.isfinite(rv):
            break
        alpha = rho_new / rv
        s = torch.add(r, v, alpha=-alpha)
        sn = _norm(s)
        if sn <= tol:
            x.add_(phat, alpha=alpha)
            return x, SolveInfo(it, sn, True)
        shat = M(s)
        tv = matvec(shat)
        tt = _dot(tv, tv)
        omega = _dot(tv, s) / tt if tt > 0 else 0.0
        x.add_(phat, alpha=alpha).add_(shat, alpha=omega)
        r = s.add_(tv, alpha=-omega)
        rn = _norm(r)
        if rn <= tol:
            return x, SolveInfo(it, rn, True)
        rho = rho_new
    return x, SolveInfo(it, rn, rn <= tol)


def _gmres(matvec, b, x0, tol, maxiter, M, restart):
    """Restarted GMRES(m), right-preconditioned, CGS2 Arnoldi + Givens rotations."""
    M, x, r, beta = _start(matvec, b, x0, M)
    shape = b.shape
    n = b.numel()
    m = max(1, min(int(restart), n))
    if beta <= tol:
        return x, SolveInfo(0, beta, True)
    V = torch.empty((m + 1, n), dtype=b.dtype, device=b.device)
    it = 0
    res = beta
    while it < maxiter:
        V[0] = r.reshape(-1) / beta
        H = [[0.0] * m for _ in range(m + 1)]
        cs = [0.0] * m
        sn = [0.0] * m
        g = [0.0] * (m + 1)
        g[0] = beta
        j_used = 0
        for j in range(m):
            it += 1
            w = matvec(M(V[j].view(shape))).reshape(-1)
            Vj = V[: j + 1]
            h = Vj @ w
            w = w - h @ Vj
            h2 = Vj @ w                      # re-orthogonalise (CGS2)
            w = w - h2 @ Vj
            hcol = (h + h2).tolist()
            hnext = _norm(w)
            for i in range(j + 1):
                H[i][j] = hcol[i]
            H[j + 1][j] = hnext
            for i in range(j):              # apply previous rotations
                a, c = H[i][j], H[i + 1][j]
                H[i][j] = cs[i] * a + sn[i] * c
                H[i + 1][j] = -sn[i] * a + cs[i] * c
            a, c = H[j][j], H[j + 1][j]
            d = math.hypot(a, c)
            cs[j], sn[j] = (1.0, 0.0) if d == 0.0 else (a / d, c / d)
            H[j][j] = d
            H[j + 1][j] = 0.0
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            res = abs(g[j + 1])
            j_used = j + 1
            if hnext == 0.0 or res <= tol or it >= maxiter:
                break
            V[j + 1] = w / hnext
        # back-substitution R y = g
        k = j_used
        y = [0.0] * k
        for i in range(k - 1, -1, -1):
            s = g[i] - sum(H[i][l] * y[l] for l in range(i + 1, k))
            y[i] = s / H[i][i] if H[i][i] != 0.0 else 0.0
        upd = torch.as_tensor(y, dtype=b.dtype, device=b.device) @ V[:k]
        x.add_(M(upd.view(shape)))
        r = b - matvec(x)
        beta = _norm(r)
        res = beta
        if beta <= tol:
            return x, SolveInfo(it, beta, True)
    return x, SolveInfo(it, res, res <= tol)


_KERNELS = {"cg": _cg, "bicgstab": _bicgstab, "gmres": _gmres}


# -------------------------------------------------------------- implicit grad
class _ImplicitSolution(torch.autograd.Function):
    """Return ``x*``; backward sends ``λ = (∂G/∂x)^{-T} g`` to the residual input ``r``."""

    @staticmethod
    def forward(ctx, transposed_solve, x, r):
        ctx.transposed_solve = transposed_solve
        return x

    @staticmethod
    def backward(ctx, g):
        lam = ctx.transposed_solve(g)
        return None, None, lam


def solve_implicit(x: torch.Tensor, r: torch.Tensor, transposed_solve: Callable) -> torch.Tensor:
    """Attach an implicit-function-theorem gradient to a solution ``x``.

    ``r`` must be computed with autograd from the problem data (with ``x``
    detached) such that ``x = φ(r)`` locally with ``∂x/∂r = (∂G/∂x)^{-1}``;
    ``transposed_solve(g)`` returns ``(∂G/∂x)^{-T} g``.
    """
    if not r.requires_grad:
        return x
    return _ImplicitSolution.apply(transposed_solve, x.detach(), r)


def _vjp_operator(matvec, like):
    with torch.enable_grad():
        xl = torch.zeros_like(like).requires_grad_(True)
        out = matvec(xl)
    if not out.requires_grad:
        raise RuntimeError("cannot form the transposed operator: matvec is not differentiable in its "
                           "argument; pass rmatvec=")

    def rmatvec(v):
        with torch.enable_grad():
            (g,) = torch.autograd.grad(out, xl, v, retain_graph=True)
        return g

    return rmatvec


def _solve(kind, matvec, b, x0, rtol, atol, maxiter, M, rmatvec, restart, return_info):
    if not isinstance(b, torch.Tensor):
        raise TypeError("b must be a torch.Tensor")
    if not torch.is_floating_point(b):
        raise TypeError(f"b must be a floating point Tensor, got dtype {b.dtype}")
    n = b.numel()
    if maxiter is None:
        maxiter = 10 * n
    maxiter = int(maxiter)
    bd = b.detach()
    with torch.no_grad():
        bnorm = _norm(bd)
        tol = max(float(rtol) * bnorm, float(atol))
        x0d = None if x0 is None else x0.detach().to(b.dtype)
        if kind == "gmres":
            x, info = _gmres(matvec, bd, x0d, tol, maxiter, M, restart)
        else:
            x, info = _KERNELS[kind](matvec, bd, x0d, tol, maxiter, M)
    if torch.is_grad_enabled():
        with torch.enable_grad():
            r = b - matvec(x)
        if r.requires_grad:
            def transposed_solve(g):
                with torch.no_grad():
                    # The same *relative* accuracy as the forward solve: an absolute
                    # ``atol`` sized for ``b`` would stop at once on a cotangent ``g``
                    # that is orders of magnitude smaller (e.g. dL/dx of a loss).
                    gn = _norm(g)
                    gtol = max(float(rtol) * gn, float(atol) * gn / bnorm if bnorm > 0 else float(atol))
                    if kind == "cg":
                        lam, _ = _cg(matvec, g, None, gtol, maxiter, M)
                    else:
                        rmv = rmatvec if rmatvec is not None else _vjp_operator(matvec, g)
                        if kind == "gmres":
                            lam, _ = _gmres(rmv, g, None, gtol, maxiter, None, restart)
                        else:
                            lam, _ = _bicgstab(rmv, g, None, gtol, maxiter, None)
                return lam

            x = _ImplicitSolution.apply(transposed_solve, x, r)
    return (x, info) if return_info else x


# ------------------------------------------------------------------ public API
def cg(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x0: Optional[torch.Tensor] = None, *,
       rtol: float = 1e-5, atol: float = 0.0, maxiter: Optional[int] = None,
       M: Optional[Callable] = None, return_info: bool = False):
    """Conjugate gradients for a symmetric positive definite ``A``.

    Args:
        matvec: ``v -> A v`` on tensors shaped like ``b`` (may capture
            tensors that require grad; they receive gradients).
        b: right-hand side, any shape ``S``.
        x0: initial guess of shape ``S`` (default zeros).
        rtol, atol: stop when ``||b - A x||_2 <= max(rtol ||b||_2, atol)``.
        maxiter: iteration cap (default ``10 * b.numel()``).
        M: symmetric positive definite preconditioner ``v -> M^{-1} v``.
        return_info: also return a :class:`SolveInfo`.

    Returns:
        ``x`` of shape ``S`` (and ``SolveInfo`` if requested).  Backward is
        one more CG solve with ``A`` (implicit differentiation).
    """
    return _solve("cg", matvec, b, x0, rtol, atol, maxiter, M, None, None, return_info)


def bicgstab(matvec, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, rmatvec=None,
             return_info=False):
    """BiCGSTAB for a general square ``A`` (same arguments as :func:`cg`).

    ``rmatvec(v) -> Aᵀ v`` is used by the backward pass (derived by autograd
    from ``matvec`` when omitted).  ``M`` is a right preconditioner
    ``v -> M^{-1} v`` (forward pass only).
    """
    return _solve("bicgstab", matvec, b, x0, rtol, atol, maxiter, M, rmatvec, None, return_info)


def gmres(matvec, b, x0=None, *, rtol=1e-5, atol=0.0, restart=30, maxiter=None, M=None, rmatvec=None,
          return_info=False):
    """Restarted GMRES(``restart``) for a general square ``A``.

    ``maxiter`` counts inner (Arnoldi) iterations over all restarts.  Other
    arguments as in :func:`bicgstab`.
    """
    return _solve("gmres", matvec, b, x0, rtol, atol, maxiter, M, rmatvec, restart, return_info)


def krylov_solve(kind, matvec, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, restart=30):
    """No-grad dispatch used by the implicit ODE solvers; returns ``(x, SolveInfo)``."""
    n = b.numel()
    maxiter = 10 * n if maxiter is None else int(maxiter)
    with torch.no_grad():
        tol = max(float(rtol) * _norm(b), float(atol))
        if kind == "gmres":
            return _gmres(matvec, b, x0, tol, maxiter, M, restart)
        if kind not in _KERNELS:
            raise ValueError(f"unknown linear solver {kind!r} (expected 'cg', 'bicgstab' or 'gmres')")
        return _KERNELS[kind](matvec, b, x0, tol, maxiter, M)
