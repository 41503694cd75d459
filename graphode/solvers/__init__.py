"""ODE solvers: a drop-in replacement for ``torchdiffeq`` (0.2.5 API).

>>> from graphode.solvers import odeint, odeint_adjoint
>>> ys = odeint(func, y0, t, method="dopri5", rtol=1e-7, atol=1e-9)
>>> res = solve(func, y0, t)          # solution + statistics
>>> res.ys, res.stats.nfe, res.stats.n_rejected, res.stats.step_sizes

Methods (:data:`METHODS`): ``dopri5`` (default), ``dopri8``, ``bosh3``,
``fehlberg2``, ``adaptive_heun``, ``euler``, ``midpoint``, ``heun2``,
``heun3``, ``rk4`` (3/8 rule), ``explicit_adams``, ``implicit_adams``,
``fixed_adams``, ``scipy_solver``, ``implicit_euler``, ``crank_nicolson``.
Add your own with :func:`register_method` (e.g. from a
:class:`ButcherTableau`).

Components: adaptive methods are an embedded *stepper* driven by one
adaptive loop (``_adaptive.py``); step sizes, tolerances, the error norm,
accept/reject and ``step_t``/``jump_t`` clipping belong to the controller,
which can be passed in: ``options={"controller": PIController(pcoeff=0.3,
icoeff=0.4, norm=RMSNorm(all_reduce=...))}``.
"""
from ._adjoint import find_parameters, odeint_adjoint
from ._api import SolveResult, odeint, odeint_event, solve
from ._controller import PIController
from ._dynamics import SolverStats
from ._errors import MaxNumStepsError, NonFiniteError, SolverError, StepSizeUnderflowError
from ._norm import RMSNorm, rms_norm
from ._registry import METHODS, MethodSpec, register_method
from ._tableaux import TABLEAUX, ButcherTableau

__all__ = [
    "odeint", "odeint_adjoint", "odeint_event", "solve", "SolveResult", "SolverStats",
    "METHODS", "MethodSpec", "register_method", "ButcherTableau", "TABLEAUX", "PIController",
    "SolverError", "StepSizeUnderflowError", "MaxNumStepsError", "NonFiniteError", "rms_norm", "RMSNorm",
    "find_parameters",
]
