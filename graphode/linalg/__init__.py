"""Matrix-free linear solvers with implicit (adjoint) gradients.

>>> x = graphode.linalg.cg(lambda v: A @ v, b)        # A symmetric positive definite
>>> x = graphode.linalg.gmres(lambda v: v - tau * (P @ v), x_k)   # GRAND semi-implicit step

All solvers take ``matvec(v) -> A v`` on tensors shaped like ``b`` and
differentiate by the implicit function theorem (one transposed solve in
backward), so gradients reach ``b`` and every tensor ``matvec`` captures.
"""
from ._krylov import SolveInfo, bicgstab, cg, gmres, krylov_solve, solve_implicit

__all__ = ["cg", "bicgstab", "gmres", "SolveInfo", "krylov_solve", "solve_implicit"]
