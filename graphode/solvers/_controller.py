"""Step-size control, separate from the steppers.

The controller only sees floats: the last step size and the error ratio
``r = ||err / (atol + rtol * max(|y0|, |y1|))||`` (``r <= 1`` accepts the
step).  It proposes the next step size

.. math::

    h_{n+1} = h_n \\cdot \\min\\Big(f_{max},\\;\\max\\big(f_{min},\\;
        \\sigma\\, r_n^{-(\\beta_I + \\beta_P)/q}\\, r_{n-1}^{\\beta_P/q}\\big)\\Big)

with ``q`` the method's ``error_order``, ``σ = safety``, ``f_max = ifactor``,
``f_min = dfactor`` (and ``f_min = 1`` after an accepted step, so an
accepted step is never followed by a smaller one).  The defaults
``safety=0.9, ifactor=10, dfactor=0.2, pcoeff=0, icoeff=1`` reproduce
torchdiffeq's controller exactly; ``pcoeff > 0`` gives a proportional–
integral (PI) controller (e.g. ``pcoeff=0.4, icoeff=0.3``).
"""
from __future__ import annotations

import math

__all__ = ["PIController"]


class PIController:
    """Proportional–integral step-size controller on Python floats (no device syncs)."""

    __slots__ = ("order", "safety", "ifactor", "dfactor", "pcoeff", "icoeff", "min_step", "max_step",
                 "_prev_ratio", "_expo_i", "_expo_p")

    def __init__(self, order, safety=0.9, ifactor=10.0, dfactor=0.2, pcoeff=0.0, icoeff=1.0,
                 min_step=0.0, max_step=math.inf):
        self.order = float(order)
        self.safety = float(safety)
        self.ifactor = float(ifactor)
        self.dfactor = float(dfactor)
        self.pcoeff = float(pcoeff)
        self.icoeff = float(icoeff)
        self.min_step = float(min_step)
        self.max_step = float(max_step)
        if not (self.safety > 0 and self.ifactor >= 1 and 0 < self.dfactor <= 1):
            raise ValueError(f"invalid controller factors safety={safety}, ifactor={ifactor}, dfactor={dfactor}")
        if self.min_step < 0 or self.max_step <= 0 or self.min_step > self.max_step:
            raise ValueError(f"invalid step bounds min_step={min_step}, max_step={max_step}")
        self._expo_i = (self.icoeff + self.pcoeff) / self.order
        self._expo_p = self.pcoeff / self.order
        self._prev_ratio = 1.0

    def clamp(self, dt: float) -> float:
        if not math.isfinite(dt):
            dt = self.min_step
        if dt < self.min_step:
            return self.min_step
        if dt > self.max_step:
            return self.max_step
        return dt

    def propose(self, dt: float, ratio: float, accepted: bool) -> float:
        """Next step size after a step of size ``dt`` with error ratio ``ratio``."""
        if ratio == 0.0:
            nxt = dt * self.ifactor
        elif not math.isfinite(ratio):
            nxt = dt * self.dfactor
        else:
            lo = 1.0 if ratio < 1.0 else self.dfactor
            fac = self.safety * ratio ** (-self._expo_i)
            if self._expo_p:
                fac *= self._prev_ratio ** self._expo_p
            nxt = dt * min(self.ifactor, max(fac, lo))
        if accepted and math.isfinite(ratio) and ratio > 0.0:
            self._prev_ratio = ratio
        return self.clamp(nxt)
