"""The one registry of methods: name -> :class:`MethodSpec`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional

from ._adams import AdamsSolver
from ._fixed import FixedGridSolver
from ._implicit import ThetaMethodSolver
from ._adaptive import AdaptiveSolver
from ._rk import ExplicitRKStepper, FixedRKSolver
from ._scipy import ScipySolver
from ._tableaux import TABLEAUX, ButcherTableau

__all__ = ["MethodSpec", "METHODS", "register_method"]


@dataclass(frozen=True)
class MethodSpec:
    """How to build a solver.

    ``factory(problem, dynamics, **options)`` returns an object with
    ``integrate() -> list of states at the output times`` and
    ``integrate_until_event(event_fn, tol) -> (τ, y)``.
    """

    name: str
    factory: Callable
    options: FrozenSet[str]
    callbacks: FrozenSet[str]
    kind: str                      # "adaptive" | "fixed" | "external"
    order: Optional[int] = None
    tableau: Optional[ButcherTableau] = None


METHODS: Dict[str, MethodSpec] = {}


def _rk_spec(name: str, tableau: ButcherTableau) -> MethodSpec:
    if tableau.adaptive:
        return MethodSpec(name, lambda p, d, **o: AdaptiveSolver(p, d, ExplicitRKStepper(tableau), **o),
                          AdaptiveSolver.OPTIONS, AdaptiveSolver.CALLBACKS, "adaptive", tableau.order, tableau)
    return MethodSpec(name, lambda p, d, **o: FixedRKSolver(p, d, tableau, **o),
                      FixedGridSolver.OPTIONS, FixedGridSolver.CALLBACKS, "fixed", tableau.order, tableau)


def register_method(name: str, factory: Optional[Callable] = None, *, tableau: Optional[ButcherTableau] = None,
                    options=None, callbacks=None, kind: str = "fixed", order: Optional[int] = None,
                    overwrite: bool = False) -> MethodSpec:
    """Register a method under ``name``.

    Either pass a :class:`ButcherTableau` (an adaptive solver if it has
    ``b_hat``, else a fixed-grid one), or a ``factory`` with the set of
    option names it accepts.
    """
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
    if (factory is None) == (tableau is None):
        raise ValueError("pass exactly one of factory= or tableau=")
    if tableau is not None:
        spec = _rk_spec(name, tableau)
    else:
        spec = MethodSpec(name, factory, frozenset(options or ()), frozenset(callbacks or ()), kind, order)
    METHODS[name] = spec
    return spec


for _name in ("dopri8", "dopri5", "tsit5", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2", "heun3",
              "rk4"):
    register_method(_name, tableau=TABLEAUX[_name])

_F = FixedGridSolver.CALLBACKS
register_method("explicit_adams", lambda p, d, **o: AdamsSolver(p, d, implicit=False, **o),
                options=AdamsSolver.OPTIONS, callbacks=_F, kind="fixed", order=None)
register_method("implicit_adams", lambda p, d, **o: AdamsSolver(p, d, implicit=True, **o),
                options=AdamsSolver.OPTIONS, callbacks=_F, kind="fixed", order=None)
register_method("fixed_adams", lambda p, d, **o: AdamsSolver(p, d, implicit=True, **o),
                options=AdamsSolver.OPTIONS, callbacks=_F, kind="fixed", order=None)
register_method("scipy_solver", ScipySolver, options=ScipySolver.OPTIONS, callbacks=(), kind="external")
register_method("implicit_euler", lambda p, d, **o: ThetaMethodSolver(p, d, theta=1.0, **o),
                options=ThetaMethodSolver.OPTIONS, callbacks=_F, kind="fixed", order=1)
register_method("crank_nicolson", lambda p, d, **o: ThetaMethodSolver(p, d, theta=0.5, **o),
                options=ThetaMethodSolver.OPTIONS, callbacks=_F, kind="fixed", order=2)
