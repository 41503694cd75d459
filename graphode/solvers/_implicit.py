"""Implicit θ-methods (``implicit_euler``: θ=1, ``crank_nicolson``: θ=1/2).

Each step of size ``h`` solves

.. math::  G(y_1) = y_1 - y_0 - h(1-θ) f(t_0, y_0) - hθ f(t_1, y_1) = 0

by Newton–Krylov: ``(I - hθ J(y)) δ = -G(y)``, ``y ← y + δ``, with
Jacobian–vector products ``J v`` from forward-mode AD (``torch.func.jvp``;
``options["jvp"] = "fd"`` uses finite differences) and the linear system
solved by :mod:`graphode.linalg` (GMRES by default; CG with
``{"linear_solver": "cg", "symmetric": True}``; BiCGSTAB with
``"bicgstab"``).  Newton stops when
``||G||_2 <= newton_tol · (atol·√n + rtol·||y||_2 + 64 ε (||y||_2 + ||hθf||_2))``;
the Krylov solve is asked for one tenth of that, so a linear ``f``
converges after exactly one Newton iteration.

Semi-implicit (GRAND) form: ``options["operator"] = L`` where
``L(t, y_k)`` returns a matvec ``v -> L_k v`` (e.g. ``v -> (Ā(y_k) - I) v``).
Then each step solves the linear system ``(I - hθ L_k) y_1 = y_0 + h(1-θ) L_k y_0``
once, without Newton — for θ=1 exactly GRAND's ``(I - τĀ) x_{k+1} = x_k``.

Gradients: the step's output carries an implicit-function-theorem
gradient: ``λ = (I - hθ J(y_1))^{-T} g`` by one transposed Krylov solve
(vector–Jacobian products), then ``∂L/∂(y_0, params) = λᵀ ∂r/∂(y_0, params)``
with ``r = y_0 + h(1-θ) f(t_0, y_0) + hθ f(t_1, y_1)``.  Memory per step is
independent of the number of Newton and Krylov iterations.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..linalg import krylov_solve, solve_implicit
from ..linalg import cg as _cg_grad, gmres as _gmres_grad, bicgstab as _bicgstab_grad
from ._dynamics import Dynamics
from ._problem import Problem
from ._fixed import FixedGridSolver

__all__ = ["ThetaMethodSolver"]


class ThetaMethodSolver(FixedGridSolver):
    OPTIONS = FixedGridSolver.OPTIONS | {
        "linear_solver", "symmetric", "newton_tol", "max_newton_iters", "linear_maxiter", "restart",
        "jvp", "operator", "preconditioner", "linear_rtol"}

    def __init__(self, problem: Problem, dyn: Dynamics, theta=1.0, linear_solver=None, symmetric=False,
                 newton_tol=1.0, max_newton_iters=10, linear_maxiter=None, restart=30, jvp="forward",
                 operator=None, preconditioner=None, linear_rtol=None, **options):
        super().__init__(problem, dyn, **options)
        self.theta = float(theta)
        self.order = 2 if self.theta == 0.5 else 1
        self.symmetric = bool(symmetric)
        if linear_solver is None:
            linear_solver = "cg" if self.symmetric else "gmres"
        if linear_solver not in ("cg", "gmres", "bicgstab"):
            raise ValueError(f"unknown linear_solver {linear_solver!r} (expected 'cg', 'gmres' or 'bicgstab')")
        self.linear_solver = linear_solver
        self.newton_tol = float(newton_tol)
        self.max_newton_iters = int(max_newton_iters)
        n = problem.y0.numel()
        self.linear_maxiter = int(linear_maxiter) if linear_maxiter is not None else max(50, min(10 * n, 1000))
        self.restart = int(restart)
        if jvp not in ("forward", "fd"):
            raise ValueError(f"unknown jvp mode {jvp!r} (expected 'forward' or 'fd')")
        self.jvp_mode = jvp
        self._jvp_checked = False
        self.operator = operator
        self.M = preconditioner
        rt = problem.rtol if isinstance(problem.rtol, float) else float(problem.rtol.max())
        self.bw_rtol = float(linear_rtol) if linear_rtol is not None else min(1e-6, 10.0 * rt)
        self.eps = torch.finfo(problem.y0.real.dtype if torch.is_complex(problem.y0) else problem.y0.dtype).eps

    # ---------------------------------------------------------------- helpers
    def _tolnorm(self, y, hf):
        p = self.problem
        n = y.numel()
        with torch.no_grad():
            ny = float(torch.linalg.vector_norm(y))
            nhf = float(torch.linalg.vector_norm(hf))
        at = p.atol if isinstance(p.atol, float) else float(torch.linalg.vector_norm(p.atol)) / math.sqrt(n)
        rt = p.rtol if isinstance(p.rtol, float) else float(p.rtol.max())
        return at * math.sqrt(n) + rt * ny + 64.0 * self.eps * (ny + nhf)

    def _make_jvp(self, t_user, y, fy):
        fn = self.problem.fn
        stats = self.stats
        if self.jvp_mode == "forward":
            def jvp(v):
                stats.njvp += 1
                return torch.func.jvp(lambda yy: fn(t_user, yy), (y,), (v,))[1]
            return jvp
        ny = float(torch.linalg.vector_norm(y))

        def jvp_fd(v):
            stats.njvp += 1
            nv = float(torch.linalg.vector_norm(v))
            if nv == 0.0:
                return torch.zeros_like(v)
            eps = math.sqrt(self.eps) * (1.0 + ny) / nv
            return (fn(t_user, y + eps * v) - fy) / eps
        return jvp_fd

    # ------------------------------------------------------------------- step
    def _step(self, t0, dt, t1, y0):
        dyn = self.dyn
        stats = self.stats
        h = self.sign * dt
        th = self.theta
        ht = h * th
        t1u = dyn.time(t1, -1 if self.perturb else 0)
        if self.operator is not None:
            return self._semi_implicit(t1u, y0, ht, h, th), None
        f0 = None
        if th != 1.0:
            f0 = dyn(t0, y0, 1 if self.perturb else 0)
            base = torch.add(y0, f0, alpha=h * (1.0 - th))
        else:
            base = y0

        fn = self.problem.fn
        with torch.no_grad():
            y = y0.detach()
            basec = base.detach()
            fy = dyn.call_t(t1u, y)
            G = y - basec - ht * fy
            converged = False
            for it in range(self.max_newton_iters + 1):
                wn = self._tolnorm(y, ht * fy)
                gn = float(torch.linalg.vector_norm(G))
                if gn <= self.newton_tol * wn:
                    converged = True
                    break
                if it == self.max_newton_iters:
                    break
                jv = self._jvp(t1u, y, fy)
                matvec = lambda v, _jv=jv: v - ht * _jv(v)  # noqa: E731
                delta, info = krylov_solve(self.linear_solver, matvec, -G, None, rtol=0.0,
                                           atol=0.1 * self.newton_tol * wn, maxiter=self.linear_maxiter,
                                           M=self.M, restart=self.restart)
                stats.n_newton += 1
                stats.n_linear += info.iterations
                y = y + delta
                fy = dyn.call_t(t1u, y)
                G = y - basec - ht * fy
        if not converged:
            stats.newton_failures += 1
            warnings.warn(f"implicit solver: Newton iteration did not converge at t={dyn.sign * t1!r} "
                          f"(||G||={gn:.3e} > {self.newton_tol * wn:.3e}); the solution may be inaccurate. "
                          f"Try a smaller step_size or a larger max_newton_iters.", RuntimeWarning)
        if torch.is_grad_enabled():
            fyg = dyn.call_t(t1u, y)
            r = base + ht * fyg
            if r.requires_grad:
                y = solve_implicit(y, r, self._transposed_solver(t1u, y, ht))
        return y, f0

    def _jvp(self, t_user, y, fy):
        if self.jvp_mode == "forward" and not self._jvp_checked:
            try:
                jv = self._make_jvp(t_user, y, fy)
                jv(torch.zeros_like(y))
                self.stats.njvp -= 1
                self._jvp_checked = True
                return jv
            except (RuntimeError, NotImplementedError) as exc:  # e.g. no forward-mode AD rule
                warnings.warn(f"forward-mode JVP failed ({exc}); falling back to finite differences "
                              f"(set options['jvp']='fd' to silence this)", RuntimeWarning)
                self.jvp_mode = "fd"
        return self._make_jvp(t_user, y, fy)

    def _transposed_solver(self, t_user, y, ht):
        fn = self.problem.fn
        kind = self.linear_solver
        maxiter = self.linear_maxiter
        restart = self.restart
        rtol = self.bw_rtol
        stats = self.stats

        def transposed_solve(g):
            with torch.enable_grad():
                yl = y.detach().requires_grad_(True)
                out = fn(t_user, yl)

            def rmatvec(v):
                with torch.enable_grad():
                    (jt,) = torch.autograd.grad(out, yl, v, retain_graph=True, allow_unused=True)
                if jt is None:
                    return v
                return v - ht * jt

            lam, info = krylov_solve(kind, rmatvec, g, None, rtol=rtol, atol=0.0, maxiter=maxiter,
                                     restart=restart)
            stats.n_linear += info.iterations
            return lam

        return transposed_solve

    def _semi_implicit(self, t1u, y0, ht, h, th):
        L = self.operator(t1u, y0)
        rhs = y0 if th == 1.0 else torch.add(y0, L(y0), alpha=h * (1.0 - th))
        matvec = lambda v: v - ht * L(v)  # noqa: E731
        wn = self._tolnorm(y0.detach(), y0.detach())
        tol = 0.1 * self.newton_tol * wn
        kw = dict(rtol=0.0, atol=tol, maxiter=self.linear_maxiter, M=self.M, return_info=True)
        if self.linear_solver == "cg":
            y1, info = _cg_grad(matvec, rhs, y0.detach(), **kw)
        elif self.linear_solver == "bicgstab":
            y1, info = _bicgstab_grad(matvec, rhs, y0.detach(), **kw)
        else:
            y1, info = _gmres_grad(matvec, rhs, y0.detach(), restart=self.restart, **kw)
        self.stats.n_newton += 1
        self.stats.n_linear += info.iterations
        return y1
