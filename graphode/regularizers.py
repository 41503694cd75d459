r"""Regularisers of neural-ODE dynamics integrated as extra ODE states (Finlay et al., 2020).

For ``dx/dt = f(t, x)`` with ``x`` ``[N, F]`` (one row per node), the
augmented system is

.. math::

    \dot x = f(t, x), \qquad
    \dot r_{KE} = \tfrac{1}{2}\,\mathrm{mean}_{feat}\, f(t, x)^2 \;\; [N], \qquad
    \dot r_{JF} = \mathrm{mean}_{feat}\,(\epsilon^\top \partial_x f)^2 \;\; [N],

with a Gaussian probe ``ε`` ``[N, F]`` drawn once per solve (Hutchinson's
estimator of ``||∂f/∂x||_F^2``).  The solver integrates the regularisers with
the state, so they are as accurate as the solution (and cost one extra
vector–Jacobian product per evaluation for the Jacobian term).  The penalty
added to the loss is ``Σ_k c_k · mean_nodes(r_k(T))``, as in GRAND's code.

Works with ``odeint`` and ``odeint_adjoint`` (the state is a tuple
``(x, r_1, ..., r_m)``).  The Jacobian term needs double differentiation of
``f`` with the adjoint (or with autograd through the solver).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["RegularizedFunc", "kinetic_energy", "jacobian_frobenius", "REGULARIZERS"]


def kinetic_energy(x: torch.Tensor, dx: torch.Tensor, probe: Optional[torch.Tensor]) -> torch.Tensor:
    """``0.5 * mean(dx^2)`` over features, per node: ``[N, F]`` -> ``[N]``."""
    return 0.5 * dx.reshape(dx.size(0), -1).pow(2).mean(dim=1)


def jacobian_frobenius(x: torch.Tensor, dx: torch.Tensor, probe: Optional[torch.Tensor]) -> torch.Tensor:
    """Hutchinson estimate ``mean((ε^T ∂f/∂x)^2)`` over features, per node: ``[N]``."""
    if probe is None:
        raise ValueError("jacobian_frobenius needs a probe vector (RegularizedFunc draws one per solve)")
    (e_dfdx,) = torch.autograd.grad(dx, x, probe, create_graph=True)
    return e_dfdx.reshape(x.size(0), -1).pow(2).mean(dim=1)


REGULARIZERS = {"kinetic_energy": kinetic_energy, "jacobian_norm2": jacobian_frobenius}


class RegularizedFunc(nn.Module):
    """Wrap ``func(t, x)`` into ``(t, (x, r_1..r_m)) -> (f, dr_1..dr_m)``.

    Args:
        func: the vector field (an ``nn.Module``; its NFE counting is untouched).
        names: regulariser names from :data:`REGULARIZERS` (``"kinetic_energy"``,
            ``"jacobian_norm2"``), in the order of the extra states.

    Call :meth:`new_probe` before each solve (the probe must stay fixed while the
    adaptive solver integrates).  Each extra state has shape ``[N]``.
    """

    def __init__(self, func: nn.Module, names: Sequence[str]):
        super().__init__()
        for n in names:
            if n not in REGULARIZERS:
                raise ValueError(f"unknown regulariser {n!r}; choose from {sorted(REGULARIZERS)}")
        self.func = func
        self.names = tuple(names)
        self._fns = [REGULARIZERS[n] for n in self.names]
        self.needs_jacobian = "jacobian_norm2" in self.names
        self.probe: Optional[torch.Tensor] = None

    def new_probe(self, x: torch.Tensor) -> None:
        self.probe = torch.randn_like(x) if self.needs_jacobian else None

    def initial_state(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (x,) + tuple(x.new_zeros(x.size(0)) for _ in self.names)

    def forward(self, t: torch.Tensor, state):
        x = state[0]
        if not self.needs_jacobian:
            dx = self.func(t, x)
            return (dx,) + tuple(fn(x, dx, None) for fn in self._fns)
        grad_mode = torch.is_grad_enabled()
        with torch.enable_grad():
            # Without grad mode (the adjoint's forward solve) x may still claim
            # requires_grad as a view of y0 made under no_grad: use a fresh leaf.
            if not grad_mode or not x.requires_grad:
                x = x.detach().requires_grad_(True)
            dx = self.func(t, x)
            regs = tuple(fn(x, dx, self.probe) for fn in self._fns)
        return (dx,) + regs
