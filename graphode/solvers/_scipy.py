"""``scipy_solver``: integrate with :func:`scipy.integrate.solve_ivp`.

``options={"solver": "RK45" | "LSODA" | "BDF" | ...}`` (default
``"LSODA"``), plus ``min_step`` / ``max_step``.  No gradients flow through
this method (the field is evaluated under ``torch.no_grad()``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._dynamics import Dynamics
from ._errors import SolverError
from ._problem import Problem

__all__ = ["ScipySolver"]


class ScipySolver:
    OPTIONS = frozenset({"solver", "min_step", "max_step", "norm", "grid_points", "eps"})
    CALLBACKS = frozenset()

    def __init__(self, problem: Problem, dyn: Dynamics, solver="LSODA", min_step=None, max_step=math.inf,
                 norm=None, grid_points=None, eps=None):
        self.problem = problem
        self.dyn = dyn
        self.solver = solver
        self.min_step = min_step
        self.max_step = max_step

    def integrate(self):
        from scipy.integrate import solve_ivp

        p = self.problem
        y0 = p.y0
        if len(p.taus) == 1:
            return [y0]
        shape, dtype, device = y0.shape, y0.dtype, y0.device
        dyn = self.dyn
        sign = dyn.sign

        def rhs(tau, y):
            yt = torch.as_tensor(y, device=device).to(dtype).reshape(shape)
            with torch.no_grad():
                f = dyn(float(tau), yt)
            return sign * f.detach().reshape(-1).cpu().numpy().astype(np.float64, copy=False)

        taus = np.asarray(p.taus, dtype=np.float64)
        kw = {}
        if self.min_step is not None:
            kw["min_step"] = self.min_step
        rtol = p.rtol if isinstance(p.rtol, float) else p.rtol.detach().cpu().numpy()
        atol = p.atol if isinstance(p.atol, float) else p.atol.detach().cpu().numpy()
        sol = solve_ivp(rhs, t_span=(taus[0], taus[-1]), y0=y0.detach().reshape(-1).cpu().double().numpy(),
                        t_eval=taus, method=self.solver, rtol=rtol, atol=atol, max_step=self.max_step, **kw)
        if not sol.success or sol.y.shape[1] != len(taus):
            raise SolverError(f"scipy.integrate.solve_ivp ({self.solver}) failed: {sol.message}")
        ys = torch.as_tensor(sol.y.T).to(device=device, dtype=dtype)
        return [ys[i].reshape(shape) for i in range(ys.shape[0])]

    def integrate_until_event(self, event_fn, event_tol):
        raise NotImplementedError("event handling is not supported by method 'scipy_solver'")
