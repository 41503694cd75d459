"""Implicit Runge–Kutta methods from tableaux: stage equations by Newton–Krylov, gradients by the IFT.

Any implicit :class:`~._tableaux.ButcherTableau` is split into *blocks* of
stages that must be solved together: a diagonally implicit method (SDIRK,
ESDIRK: ``sdirk2``, ``trbdf2``, ``implicit_euler``, ``trapezoid``) gives one
block per stage, solved in turn; a fully implicit one (Gauss ``gl4``/``gl6``,
``radauIIA3``/``radauIIA5``) one coupled block of all stages; stages with a
zero diagonal (``a_ii = 0``, e.g. the first stage of ``trapezoid``/``trbdf2``)
are explicit.  The unknowns of a block ``B`` are its stage derivatives::

    G_p(K) = K_p - f(t0 + c_p h, base_p + h Σ_{q∈B} a_pq K_q) = 0,   p ∈ B,
    base_p = y0 + h Σ_{j before B} a_pj k_j,

solved by Newton's method, ``(I - h diag(J_p)(A_BB ⊗ I)) δ = -G``, with the
Jacobian–vector products ``J_p v`` at the current stage values, by
forward-mode AD (the default: exact, so a linear ``f`` converges in one
Newton iteration and GMRES reaches any tolerance) or by finite differences
(``options["jvp"] = "fd"``: one evaluation of ``f``, far less overhead per
product on small states, accurate to about ``sqrt(eps)``, which bounds the
Krylov accuracy and, in float32, Newton's convergence on stiff problems) and the linear system solved matrix-free by :mod:`graphode.linalg`
(GMRES by default; CG with ``{"linear_solver": "cg", "symmetric": True}``
for single-stage blocks; BiCGSTAB with ``"bicgstab"``).  Newton stops when
the stage residual in state units, ``||h (A_BB ⊗ I) G||_2``, is at most
``newton_tol · (atol·√n + rtol·||Y||_2 + 64 ε (||Y||_2 + ||h A f||_2))``; the
Krylov solve is asked for a tenth of that, so a linear ``f`` converges after
exactly one Newton iteration per block.

Semi-implicit (GRAND) form: ``options["operator"] = L`` where ``L(t, y0)``
returns a matvec ``v -> L v`` frozen for the step (e.g. ``v -> (Ā(y0) - I) v``).
Each block is then one linear solve ``(I - h A_BB ⊗ L) K = L base``, with no
Newton iteration; for ``implicit_euler`` exactly GRAND's
``(I - τĀ) x_{k+1} = x_k``.  Gradients reach ``L``'s tensors through
:mod:`graphode.linalg`'s implicit backward.

Gradients (implicit function theorem): after the no-grad Newton solve, each
block's residual input ``r_p = f(t_p, base_p + h Σ a_pq K*_q)`` is evaluated
with autograd (``K*`` detached) and ``K`` is returned through
:func:`graphode.linalg.solve_implicit`, whose backward solves
``(∂G/∂K)^T λ = g``, i.e. ``λ_q - h Σ_p a_pq J_p^T λ_p = g_q``, by one
transposed Krylov solve with vector–Jacobian products.  Memory per step is
independent of the number of Newton and Krylov iterations.

Adaptive stepping (``options={"adaptive": True}``) for tableaux with an
embedded estimate (``radauIIA5``, ``sdirk2``, ``trbdf2``): the estimate
``h (b̂_0 f(t0, y0) + Σ (b̂_i - b_i) k_i)`` is filtered by
``(I - hγJ(t0, y0))^{-1}`` (one more Krylov solve), as in Hairer & Wanner's
RADAU5 (refined once with ``f(t0, y0 + err)`` when the first or a
just-rejected step fails) and Shampine's filtered SDIRK estimates, and the
step is driven by the same loop and controller as the explicit pairs
(:mod:`._adaptive`).  A step whose Newton iteration fails is rejected and
shrunk.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional

import torch
import torch.autograd.forward_ad as fwAD

from ..linalg import bicgstab as _bicgstab_grad
from ..linalg import cg as _cg_grad
from ..linalg import gmres as _gmres_grad
from ..linalg import krylov_solve, solve_implicit
from ._dynamics import Dynamics
from ._fixed import FixedGridSolver
from ._combine import combine, lincomb
from ._interp import hermite_cubic
from ._problem import Problem
from ._tableaux import ButcherTableau, polyval

__all__ = ["ImplicitRKStepper", "FixedImplicitRKSolver", "IMPLICIT_OPTIONS", "stage_blocks"]

#: options of the stage solver (every implicit method, fixed-grid or adaptive)
IMPLICIT_OPTIONS = frozenset({"linear_solver", "symmetric", "newton_tol", "max_newton_iters", "linear_maxiter",
                              "restart", "jvp", "operator", "preconditioner", "linear_rtol"})


#: default ``newton_tol`` of adaptive implicit solving (fixed-grid: 1.0); Hairer's RADAU5 uses 0.03 likewise
ADAPTIVE_NEWTON_TOL = 0.03


def stage_blocks(A) -> List[tuple]:
    """Split the stages into consecutive blocks solved together: ``[(stages, implicit), ...]``."""
    s = len(A)
    out = []
    i = 0
    while i < s:
        e = i
        grow = True
        while grow:
            grow = False
            for p in range(i, e + 1):
                for q in range(e + 1, s):
                    if A[p][q] != 0.0:
                        e = q
                        grow = True
        idx = tuple(range(i, e + 1))
        implicit = any(A[p][q] != 0.0 for p in idx for q in idx)
        out.append((idx, implicit))
        i = e + 1
    return out


class ImplicitRKStepper:
    """One implicit Runge–Kutta step of a tableau (see the module docstring)."""

    def __init__(self, tableau: ButcherTableau, problem: Problem, stats, linear_solver=None, symmetric=False,
                 newton_tol=None, max_newton_iters=10, linear_maxiter=None, restart=30, jvp="auto", operator=None,
                 preconditioner=None, linear_rtol=None, adaptive=False):
        if not tableau.implicit:
            raise ValueError(f"tableau {tableau.name!r} is explicit; use the explicit RK solvers")
        self.tableau = tableau
        self.problem = problem
        self.stats = stats
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.A = tableau.A
        self.c = tableau.c
        self.b = tableau.b
        self.blocks = stage_blocks(tableau.A)
        self.symmetric = bool(symmetric)
        if linear_solver is None:
            linear_solver = "cg" if self.symmetric else "gmres"
        if linear_solver not in ("cg", "gmres", "bicgstab"):
            raise ValueError(f"unknown linear_solver {linear_solver!r} (expected 'cg', 'gmres' or 'bicgstab')")
        self.linear_solver = linear_solver
        if newton_tol is None:
            # adaptive: the Newton error must stay well below the local error the estimate measures
            newton_tol = ADAPTIVE_NEWTON_TOL if adaptive else 1.0
        self.newton_tol = float(newton_tol)
        self.max_newton_iters = int(max_newton_iters)
        n = problem.y0.numel()
        self.linear_maxiter = int(linear_maxiter) if linear_maxiter is not None else max(50, min(10 * n, 1000))
        self.restart = int(restart)
        if jvp not in ("auto", "forward", "fd"):
            raise ValueError(f"unknown jvp mode {jvp!r} (expected 'auto', 'forward' or 'fd')")
        if jvp == "auto":
            jvp = "forward"
        self.jvp_mode = jvp
        self._jvp_checked = False
        self.operator = operator
        self.M = preconditioner
        self.adaptive = bool(adaptive)
        self._min_newton = 1 if self.adaptive else 0
        self.set_tolerances(problem.rtol, problem.atol)
        self._bw_rtol_user = None if linear_rtol is None else float(linear_rtol)
        self.eps = torch.finfo(problem.y0.real.dtype if torch.is_complex(problem.y0) else problem.y0.dtype).eps
        self._refine = True            # refine the filtered estimate on the first step and after rejections
        if tableau.adaptive:
            e = tableau.e
            self.err_w = tuple(-x for x in e)          # b̂ - b
            self.err_w0 = tableau.b_hat0
        self.reuse_last = tableau.reuse_last_stage and tableau.stiffly_accurate
        self._explicit_first = tableau.c[0] == 0.0 and all(x == 0.0 for x in tableau.A[0])
        self._f_last = None

    def set_tolerances(self, rtol, atol):
        self.rt = rtol if isinstance(rtol, float) else float(rtol.max())
        n = self.problem.y0.numel()
        self.at = atol if isinstance(atol, float) else float(torch.linalg.vector_norm(atol)) / math.sqrt(n)
        self.bw_rtol = min(1e-6, 10.0 * self.rt)

    # ---------------------------------------------------------------- helpers
    def _tolnorm(self, ny: float, nhf: float, n: int) -> float:
        return self.at * math.sqrt(n) + self.rt * ny + 64.0 * self.eps * (ny + nhf)

    def _jvp_fn(self, t_user, y, fy):
        """``v -> J(t, y) v``."""
        fn = self.problem.fn
        stats = self.stats
        if self.jvp_mode == "forward" and not self._jvp_checked:
            try:
                _forward_jvp(fn, t_user, y, torch.zeros_like(y))
                self._jvp_checked = True
            except (RuntimeError, NotImplementedError) as exc:  # e.g. no forward-mode AD rule
                warnings.warn(f"forward-mode JVP failed ({exc}); falling back to finite differences "
                              f"(set options['jvp']='fd' to silence this)", RuntimeWarning)
                self.jvp_mode = "fd"
        if self.jvp_mode == "forward":
            def jvp(v):
                stats.njvp += 1
                return _forward_jvp(fn, t_user, y, v)
            return jvp
        ny = float(torch.linalg.vector_norm(y))
        if fy is None:
            fy = fn(t_user, y)
            stats.nfe += 1

        def jvp_fd(v):
            stats.njvp += 1
            nv = float(torch.linalg.vector_norm(v))
            if nv == 0.0:
                return torch.zeros_like(v)
            eps = math.sqrt(self.eps) * (1.0 + ny) / nv
            return (fn(t_user, y + eps * v) - fy) / eps
        return jvp_fd

    def _linear_kind(self, m):
        # CG needs a symmetric operator: only a single stage with a symmetric J qualifies.
        return "gmres" if (self.linear_solver == "cg" and m > 1) else self.linear_solver

    # ------------------------------------------------------------------ stages
    def stages(self, dyn: Dynamics, t0: float, dt: float, t1: float, y0, f0, h: float, perturb: bool):
        """All stage derivatives ``k`` of the step; returns ``(k, converged)``."""
        A, c = self.A, self.c
        s = len(c)
        times = [dyn.time(t1, -1 if perturb else 0) if c[p] == 1.0 else
                 dyn.time(t0, 1 if perturb else 0) if c[p] == 0.0 else dyn.time(t0 + c[p] * dt) for p in range(s)]
        L = None
        if self.operator is not None:
            L = self.operator(dyn.time(t1, -1 if perturb else 0), y0)
        k: List[Optional[torch.Tensor]] = [None] * s
        ok = True
        self._f_last = None
        for idx, implicit in self.blocks:
            bases = []
            for p in idx:
                terms = [(h * A[p][j], k[j]) for j in range(idx[0]) if A[p][j] != 0.0]
                bases.append(combine(y0, terms))
            if not implicit:
                for p, base in zip(idx, bases):
                    if L is not None:
                        k[p] = L(base)
                    elif f0 is not None and c[p] == 0.0 and base is y0 and not (perturb and p > 0):
                        k[p] = f0
                    else:
                        dyn.stats.nfe += 1
                        k[p] = dyn.fn(times[p], base)
                continue
            if L is not None:
                K = self._linear_block(idx, bases, L, h, y0)
            else:
                guess = None            # K = 0: the stages start at their bases (y0 for the first block)
                if idx[0] > 0:
                    guess = k[idx[0] - 1]
                elif self.adaptive and f0 is not None:
                    guess = f0
                K, conv, F = self._newton_block(dyn, idx, bases, [times[p] for p in idx], h, guess)
                ok = ok and conv
                if idx[-1] == s - 1:
                    self._f_last = F[-1]     # f at the final iterate of the last stage (= f(t1, y1) if stiffly accurate)
            for j, p in enumerate(idx):
                k[p] = K[j]
        return k, ok

    def _newton_block(self, dyn, idx, bases, times, h, guess):
        """Solve one block by Newton–Krylov; attach the IFT gradient when autograd is on."""
        A = self.A
        m = len(idx)
        Ab = [[A[p][q] for q in idx] for p in idx]
        anorm = max(sum(abs(x) for x in row) for row in Ab)
        fn = self.problem.fn
        stats = self.stats
        with torch.no_grad():
            bd = [b.detach() for b in bases]
            if guess is None:
                K = torch.zeros((m,) + tuple(bd[0].shape), dtype=bd[0].dtype, device=bd[0].device)
            else:
                K = guess.detach().unsqueeze(0).repeat((m,) + (1,) * bd[0].dim())

            def stage_values(K):
                return [combine(bd[i], [(h * Ab[i][j], K[j]) for j in range(m) if Ab[i][j] != 0.0])
                        for i in range(m)]

            n = K[0].numel() * m
            converged = False
            Y = stage_values(K)
            F = torch.stack([fn(times[i], Y[i]) for i in range(m)])
            stats.nfe += m
            gn = wn = 0.0
            for it in range(self.max_newton_iters + 1):
                G = K - F
                GY = torch.stack(stage_values_delta(G, Ab, h, m)) if m > 1 else G * (h * Ab[0][0])
                ny = math.sqrt(sum(float(torch.linalg.vector_norm(y)) ** 2 for y in Y))
                nhf = float(torch.linalg.vector_norm(F)) * abs(h) * anorm
                wn = self._tolnorm(ny, nhf, n)
                gn = float(torch.linalg.vector_norm(GY))
                if not math.isfinite(gn):
                    break
                # adaptive: at least one Newton update, so that the stages carry their O(h) variation
                # (a guess within tolerance, e.g. K = f0 on a tiny step, would make the estimate 0)
                if gn <= self.newton_tol * wn and it >= self._min_newton:
                    converged = True
                    break
                if it == self.max_newton_iters:
                    break
                jvps = [self._jvp_fn(times[i], Y[i], F[i]) for i in range(m)]

                def matvec(V, _jvps=jvps):
                    out = V.clone()
                    for i in range(m):
                        w = combine_zero(V, Ab[i], m)
                        if w is not None:
                            out[i].sub_(_jvps[i](w), alpha=h)
                    return out

                delta, info = krylov_solve(self._linear_kind(m), matvec, -G, None, rtol=0.0,
                                           atol=0.1 * self.newton_tol * wn / (abs(h) * anorm),
                                           maxiter=self.linear_maxiter, M=self.M, restart=self.restart)
                stats.n_newton += 1
                stats.n_linear += info.iterations
                K = K + delta
                Y = stage_values(K)
                F = torch.stack([fn(times[i], Y[i]) for i in range(m)])
                stats.nfe += m
        if not converged:
            stats.newton_failures += 1
            if not self.adaptive:
                warnings.warn(f"implicit solver: Newton iteration did not converge at t={float(times[-1])!r} "
                              f"(||G||={gn:.3e} > {self.newton_tol * wn:.3e}); the solution may be inaccurate. "
                              f"Try a smaller step_size or a larger max_newton_iters.", RuntimeWarning)
        if torch.is_grad_enabled():
            Ystar = stage_values(K)
            r = []
            for i in range(m):
                Yi = combine(bases[i], [(h * Ab[i][j], K[j]) for j in range(m) if Ab[i][j] != 0.0])
                stats.nfe += 1
                r.append(fn(times[i], Yi))
            r = torch.stack(r)
            if r.requires_grad:
                K = solve_implicit(K, r, self._transposed_solver(times, Ystar, Ab, h, m))
        return K, converged, F

    def _transposed_solver(self, times, Y, Ab, h, m):
        fn = self.problem.fn
        kind = self._linear_kind(m)
        maxiter, restart = self.linear_maxiter, self.restart
        rtol = self._bw_rtol_user if self._bw_rtol_user is not None else self.bw_rtol
        stats = self.stats

        def transposed_solve(g):
            with torch.enable_grad():
                yl = [y.detach().requires_grad_(True) for y in Y]
                outs = [fn(times[i], yl[i]) for i in range(m)]

            def rmatvec(V):
                out = V.clone()
                for i in range(m):
                    with torch.enable_grad():
                        (jt,) = torch.autograd.grad(outs[i], yl[i], V[i], retain_graph=True, allow_unused=True)
                    if jt is None:
                        continue
                    for q in range(m):
                        if Ab[i][q] != 0.0:
                            out[q].sub_(jt, alpha=h * Ab[i][q])
                return out

            lam, info = krylov_solve(kind, rmatvec, g, None, rtol=rtol, atol=0.0, maxiter=maxiter, restart=restart)
            stats.n_linear += info.iterations
            return lam

        return transposed_solve

    def _linear_block(self, idx, bases, L, h, y0):
        """Semi-implicit block: ``(I - h A_BB ⊗ L) K = L base`` with implicit gradients."""
        A = self.A
        m = len(idx)
        Ab = [[A[p][q] for q in idx] for p in idx]
        anorm = max(sum(abs(x) for x in row) for row in Ab)
        rhs = torch.stack([L(b) for b in bases])

        def matvec(V):
            out = []
            for i in range(m):
                w = combine_zero(V, Ab[i], m)
                out.append(V[i] if w is None else V[i] - h * L(w))
            return torch.stack(out)

        with torch.no_grad():
            ny = float(torch.linalg.vector_norm(y0)) * math.sqrt(m)
        wn = self._tolnorm(ny, ny, y0.numel() * m)
        tol = 0.1 * self.newton_tol * wn / (abs(h) * anorm)
        kw = dict(rtol=0.0, atol=tol, maxiter=self.linear_maxiter, M=self.M, return_info=True)
        kind = self._linear_kind(m)
        x0 = rhs.detach()
        if kind == "cg":
            K, info = _cg_grad(matvec, rhs, x0, **kw)
        elif kind == "bicgstab":
            K, info = _bicgstab_grad(matvec, rhs, x0, **kw)
        else:
            K, info = _gmres_grad(matvec, rhs, x0, restart=self.restart, **kw)
        self.stats.n_newton += 1
        self.stats.n_linear += info.iterations
        return K

    # ---------------------------------------------------------------- adaptive
    def step(self, dyn, t0, dt, t1, y0, f0, h):
        k, ok = self.stages(dyn, t0, dt, t1, y0, f0, h, False)
        y1 = combine(y0, [(h * bi, ki) for bi, ki in zip(self.b, k) if bi != 0.0])
        if not ok:
            self._refine = True
            return y1, None, k
        with torch.no_grad():
            err = self._error(dyn, t0, y0, f0, k, h)
        return y1, err, k

    def _error(self, dyn, t0, y0, f0, k, h):
        raw = lincomb([(h * w, ki.detach()) for w, ki in zip(self.err_w, k)])
        if self.err_w0:
            raw.add_(f0.detach(), alpha=h * self.err_w0)
        gamma = self.tableau.filter
        if not gamma:
            return raw
        t0u = dyn.time(t0)
        y0d = y0.detach()
        if self.operator is not None:
            L = self.operator(t0u, y0d)
            jv = L
        else:
            jv = self._jvp_fn(t0u, y0d, f0.detach() if f0 is not None else None)
        matvec = lambda v: v - (h * gamma) * jv(v)  # noqa: E731
        err = self._filter(matvec, raw)
        if self._refine and self.err_w0 and self.operator is None:
            # Hairer & Wanner IV.8: after a rejection (or at the start) re-filter with f(t0, y0 + err)
            # in place of f(t0, y0): the estimate then sees the stiff components as an L-stable method.
            dyn.stats.nfe += 1
            f_err = dyn.fn(t0u, y0d + err)
            raw2 = raw.add_(f_err - f0.detach(), alpha=h * self.err_w0)
            err = self._filter(matvec, raw2)
        return err

    def _filter(self, matvec, rhs):
        tol = 1e-3 * float(torch.linalg.vector_norm(rhs))      # an estimate: three digits are plenty
        x, info = krylov_solve(self._linear_kind(1), matvec, rhs, None, rtol=0.0, atol=tol, maxiter=self.linear_maxiter, M=self.M,
                               restart=self.restart)
        self.stats.n_linear += info.iterations
        return x

    def accepted(self, ok: bool):
        """Told by the adaptive loop whether the step was accepted."""
        self._refine = not ok

    def next_f0(self, dyn, t1, y1, k):
        """``f(t1, y1)``: for stiffly accurate methods the last Newton evaluation (no extra NFE), except
        when the next step's explicit first stage needs it with autograd."""
        if self.reuse_last and self._f_last is not None and not (self._explicit_first and y1.requires_grad):
            return self._f_last
        if self.reuse_last and self.operator is not None:
            return k[-1]
        return dyn(t1, y1)

    def dense(self, dyn, last, t: float):
        t0, t1, y0, y1, k, h, f0 = last
        if t == t1:
            return y1
        if t == t0:
            return y0
        theta = (t - t0) / (t1 - t0)
        tab = self.tableau
        if tab.dense is not None:
            return combine(y0, [(polyval(p, theta) * h, ki) for p, ki in zip(tab.dense, k)])
        f1 = k[-1] if (tab.stiffly_accurate and tab.c[-1] == 1.0) else dyn(t1, y1)
        return hermite_cubic(t0, y0, f0, t1, y1, f1, t, dyn.sign)


def _forward_jvp(fn, t, y, v):
    """``J(t, y) v`` by forward-mode AD (dual numbers; cheaper per call than ``torch.func.jvp``)."""
    with fwAD.dual_level():
        out = fn(t, fwAD.make_dual(y, v))
        tangent = fwAD.unpack_dual(out).tangent
    return torch.zeros_like(out) if tangent is None else tangent


def stage_values_delta(G, Ab, h, m):
    """``h (A_BB ⊗ I) G`` as a list of stage tensors."""
    return [combine_zero(G, Ab[i], m, scale=h) for i in range(m)]


def combine_zero(V, row, m, scale=1.0):
    """``scale · Σ_j row_j V_j`` (``None`` when the row is zero)."""
    out = None
    for j in range(m):
        a = row[j]
        if a == 0.0:
            continue
        if out is None:
            out = torch.mul(V[j], scale * a)
        else:
            out.add_(V[j], alpha=scale * a)
    return out


# ------------------------------------------------------------------ fixed grid
class FixedImplicitRKSolver(FixedGridSolver):
    """Fixed-grid implicit RK method given by a tableau (torchdiffeq's fixed-grid implicit methods)."""

    OPTIONS = FixedGridSolver.OPTIONS | IMPLICIT_OPTIONS

    def __init__(self, problem: Problem, dyn: Dynamics, tableau: ButcherTableau, step_size=None,
                 grid_constructor=None, perturb=False, interp="linear", norm=None, **implicit_options):
        super().__init__(problem, dyn, step_size=step_size, grid_constructor=grid_constructor, perturb=perturb,
                         interp=interp, norm=norm)
        self.stepper = ImplicitRKStepper(tableau, problem, dyn.stats, **implicit_options)
        self.order = tableau.order
        self.tableau = tableau
        self._explicit_first = self.stepper._explicit_first

    def _step(self, t0, dt, t1, y0):
        h = self.sign * dt
        k, ok = self.stepper.stages(self.dyn, t0, dt, t1, y0, None, h, self.perturb)
        y1 = combine(y0, [(h * bi, ki) for bi, ki in zip(self.tableau.b, k) if bi != 0.0])
        f0 = k[0] if self._explicit_first and self.stepper.operator is None else None
        return y1, f0
