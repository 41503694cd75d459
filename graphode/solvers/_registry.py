"""The one registry of methods: name -> :class:`MethodSpec`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional

from ._adams import AdamsSolver
from ._fixed import FixedGridSolver
from ._implicit import IMPLICIT_OPTIONS, FixedImplicitRKSolver, ImplicitRKStepper
from ._problem import handle_unused
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


def _implicit_spec(name: str, tableau: ButcherTableau) -> MethodSpec:
    """Fixed-grid by default (torchdiffeq's semantics); ``options["adaptive"] = True`` adapts the step."""
    fixed = FixedImplicitRKSolver.OPTIONS
    adaptive_opts = (AdaptiveSolver.OPTIONS | IMPLICIT_OPTIONS) if tableau.adaptive else frozenset()

    def factory(p, d, adaptive=False, **o):
        if not adaptive:
            extra = {k: v for k, v in o.items() if k not in fixed}
            handle_unused(name, extra)
            return FixedImplicitRKSolver(p, d, tableau, **{k: v for k, v in o.items() if k in fixed})
        if not tableau.adaptive:
            have = sorted(n for n, spec in METHODS.items() if spec.tableau is not None and spec.tableau.implicit
                          and spec.tableau.adaptive)
            raise ValueError(f"method {name!r} has no embedded error estimate, so it cannot adapt its step "
                             f"(options['adaptive']=True); implicit methods that can: {', '.join(have)}")
        handle_unused(name, {k: v for k, v in o.items() if k not in adaptive_opts})
        imp = {k: v for k, v in o.items() if k in IMPLICIT_OPTIONS}
        rest = {k: v for k, v in o.items() if k in AdaptiveSolver.OPTIONS}
        return AdaptiveSolver(p, d, ImplicitRKStepper(tableau, p, d.stats, adaptive=True, **imp), **rest)

    return MethodSpec(name, factory, fixed | adaptive_opts | {"adaptive"}, AdaptiveSolver.CALLBACKS, "fixed",
                      tableau.order, tableau)


def _rk_spec(name: str, tableau: ButcherTableau) -> MethodSpec:
    if tableau.implicit:
        return _implicit_spec(name, tableau)
    if tableau.adaptive:
        return MethodSpec(name, lambda p, d, **o: AdaptiveSolver(p, d, ExplicitRKStepper(tableau), **o),
                          AdaptiveSolver.OPTIONS, AdaptiveSolver.CALLBACKS, "adaptive", tableau.order, tableau)
    return MethodSpec(name, lambda p, d, **o: FixedRKSolver(p, d, tableau, **o),
                      FixedRKSolver.OPTIONS, FixedGridSolver.CALLBACKS, "fixed", tableau.order, tableau)


def register_method(name: str, factory: Optional[Callable] = None, *, tableau: Optional[ButcherTableau] = None,
                    options=None, callbacks=None, kind: str = "fixed", order: Optional[int] = None,
                    overwrite: bool = False) -> MethodSpec:
    """Register a method under ``name``.

    Either pass a :class:`ButcherTableau` — the only step needed to add a
    Runge–Kutta method: an explicit one becomes an adaptive solver if it has
    ``b_hat``, else a fixed-grid one; an implicit one a fixed-grid solver
    whose stages are solved by Newton–Krylov with implicit gradients, which
    adapts its step with ``options={"adaptive": True}`` if it has ``b_hat`` —
    or a ``factory`` with the set of option names it accepts.
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
for _name in ("implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "gl4", "radauIIA5", "gl6", "sdirk2",
              "trbdf2"):
    register_method(_name, tableau=TABLEAUX[_name])
register_method("crank_nicolson", tableau=TABLEAUX["trapezoid"])   # the same method under its other name
