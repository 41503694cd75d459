"""Butcher tableaux as frozen, validated data.

A tableau with ``s`` stages describes the explicit Runge–Kutta step

.. math::

    k_i = f\\Big(t_0 + c_i h,\\; y_0 + h \\sum_{j<i} a_{ij} k_j\\Big),\\qquad
    y_1 = y_0 + h \\sum_i b_i k_i,

with, for embedded pairs, a second set of weights :math:`\\hat b` whose
difference :math:`e = b - \\hat b` gives the local error estimate
:math:`h \\sum_i e_i k_i`.

Every tableau is checked when it is built: ``a`` is strictly lower
triangular, each row of ``a`` sums to its node ``c_i``, the weights ``b``
(and ``b_hat``) sum to one, and the dense-output midpoint weights
``b_mid`` sum to one half.  Coefficients are given as exact rationals where
the method is rational, so the checks are exact up to float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Tuple

__all__ = [
    "ButcherTableau",
    "EULER",
    "MIDPOINT",
    "HEUN2",
    "HEUN3",
    "RK4_38",
    "BOSH3",
    "DOPRI5",
    "DOPRI8",
    "FEHLBERG2",
    "ADAPTIVE_HEUN",
    "TABLEAUX",
]

_TOL = 1e-12


def _num(x) -> float:
    if isinstance(x, str):
        return float(Fraction(x))
    return float(x)


def _vec(xs) -> Tuple[float, ...]:
    return tuple(_num(x) for x in xs)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method, as data.

    Attributes:
        name: human-readable name.
        c: nodes, length ``s``; ``c[0]`` must be 0.
        a: strictly lower-triangular coefficients, given as ``s - 1`` rows;
            row ``i`` (for stage ``i + 1``) has ``i + 1`` entries.
        b: solution weights, length ``s``.
        order: order of the propagated solution ``b``.
        b_hat: embedded weights (length ``s``) or ``None`` for a fixed-step
            method.  The error estimate uses ``e = b - b_hat``.
        error_order: order used by the step-size controller (the exponent is
            ``1 / error_order``); defaults to ``order`` as torchdiffeq does.
        b_mid: weights giving ``y(t0 + h/2) ≈ y0 + h Σ b_mid_i k_i`` for the
            quartic dense output, or ``None``.
        reuse_last_stage: if true, the last stage must have ``c = 1`` and its
            derivative is reused as the first stage of the next step.  This
            is exact FSAL when the last row of ``a`` equals ``b``; for
            ``fehlberg2``/``adaptive_heun`` it reuses the derivative at the
            embedded solution, as torchdiffeq does (the method stays of the
            stated order).
    """

    name: str
    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    order: int
    b_hat: Optional[Tuple[float, ...]] = None
    error_order: Optional[int] = None
    b_mid: Optional[Tuple[float, ...]] = None
    reuse_last_stage: bool = False
    fsal: bool = field(init=False, default=False)

    def __post_init__(self):
        conv = lambda v: None if v is None else _vec(v)  # noqa: E731
        object.__setattr__(self, "c", _vec(self.c))
        object.__setattr__(self, "a", tuple(_vec(row) for row in self.a))
        object.__setattr__(self, "b", _vec(self.b))
        object.__setattr__(self, "b_hat", conv(self.b_hat))
        object.__setattr__(self, "b_mid", conv(self.b_mid))
        if self.error_order is None:
            object.__setattr__(self, "error_order", int(self.order))
        self._validate()
        fsal = (self.stages > 1 and self.c[-1] == 1.0
                and len(self.a[-1]) == self.stages - 1
                and all(abs(x - y) <= _TOL for x, y in zip(self.a[-1], self.b[:-1]))
                and self.b[-1] == 0.0)
        object.__setattr__(self, "fsal", fsal)

    # ------------------------------------------------------------------ checks
    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_hat is not None

    @property
    def e(self) -> Optional[Tuple[float, ...]]:
        """Error weights ``b - b_hat``."""
        if self.b_hat is None:
            return None
        return tuple(x - y for x, y in zip(self.b, self.b_hat))

    def _fail(self, msg):
        raise ValueError(f"invalid Butcher tableau {self.name!r}: {msg}")

    def _validate(self):
        s = len(self.c)
        if s < 1:
            self._fail("needs at least one stage")
        if self.c[0] != 0.0:
            self._fail(f"c[0] must be 0 for an explicit method, got {self.c[0]}")
        if len(self.a) != s - 1:
            self._fail(f"a must have {s - 1} rows (stages 2..{s}), got {len(self.a)}")
        for i, row in enumerate(self.a, start=1):
            if len(row) != i:
                self._fail(f"row {i} of a must have {i} entries (strictly lower triangular), got {len(row)}")
            if abs(math.fsum(row) - self.c[i]) > _TOL * max(1.0, abs(self.c[i])):
                self._fail(f"row {i} of a sums to {math.fsum(row)!r}, but c[{i}] = {self.c[i]!r}")
        if len(self.b) != s:
            self._fail(f"b must have {s} entries, got {len(self.b)}")
        if abs(math.fsum(self.b) - 1.0) > _TOL:
            self._fail(f"weights b sum to {math.fsum(self.b)!r}, not 1")
        if self.b_hat is not None:
            if len(self.b_hat) != s:
                self._fail(f"b_hat must have {s} entries, got {len(self.b_hat)}")
            if abs(math.fsum(self.b_hat) - 1.0) > _TOL:
                self._fail(f"embedded weights b_hat sum to {math.fsum(self.b_hat)!r}, not 1")
        if self.b_mid is not None:
            if len(self.b_mid) != s:
                self._fail(f"b_mid must have {s} entries, got {len(self.b_mid)}")
            if abs(math.fsum(self.b_mid) - 0.5) > _TOL:
                self._fail(f"midpoint weights b_mid sum to {math.fsum(self.b_mid)!r}, not 1/2")
        if self.reuse_last_stage and self.c[-1] != 1.0:
            self._fail("reuse_last_stage needs the last node c[-1] == 1")
        if self.order < 1:
            self._fail("order must be >= 1")

    def quadrature_defect(self, k: int) -> float:
        """``Σ b_i c_i^(k-1) - 1/k``; zero for ``k <= order`` (a necessary order condition)."""
        return math.fsum(bi * ci ** (k - 1) for bi, ci in zip(self.b, self.c)) - 1.0 / k


# --------------------------------------------------------------------- methods
EULER = ButcherTableau(name="euler", c=(0,), a=(), b=(1,), order=1)

MIDPOINT = ButcherTableau(name="midpoint", c=(0, "1/2"), a=(("1/2",),), b=(0, 1), order=2)

HEUN2 = ButcherTableau(name="heun2", c=(0, 1), a=((1,),), b=("1/2", "1/2"), order=2)

HEUN3 = ButcherTableau(
    name="heun3", c=(0, "1/3", "2/3"), a=(("1/3",), (0, "2/3")), b=("1/4", 0, "3/4"), order=3)

# Kutta's 3/8 rule (torchdiffeq's ``rk4``).
RK4_38 = ButcherTableau(
    name="rk4",
    c=(0, "1/3", "2/3", 1),
    a=(("1/3",), ("-1/3", 1), (1, -1, 1)),
    b=("1/8", "3/8", "3/8", "1/8"),
    order=4,
)

# Bogacki–Shampine 3(2), FSAL.
BOSH3 = ButcherTableau(
    name="bosh3",
    c=(0, "1/2", "3/4", 1),
    a=(("1/2",), (0, "3/4"), ("2/9", "1/3", "4/9")),
    b=("2/9", "1/3", "4/9", 0),
    b_hat=("7/24", "1/4", "1/3", "1/8"),
    order=3,
    b_mid=(0, "1/2", 0, 0),
    reuse_last_stage=True,
)

# Dormand–Prince 5(4), FSAL, with Shampine's midpoint for dense output.
DOPRI5 = ButcherTableau(
    name="dopri5",
    c=(0, "1/5", "3/10", "4/5", "8/9", 1, 1),
    a=(
        ("1/5",),
        ("3/40", "9/40"),
        ("44/45", "-56/15", "32/9"),
        ("19372/6561", "-25360/2187", "64448/6561", "-212/729"),
        ("9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"),
        ("35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84"),
    ),
    b=("35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0),
    # Shampine's (1986) alternative 4th-order embedded weights (as torchdiffeq uses).
    b_hat=("1951/21600", 0, "22642/50085", "451/720", "-12231/42400", "649/6300", "1/60"),
    order=5,
    b_mid=(
        Fraction(6025192743, 30085553152) / 2, 0, Fraction(51252292925, 65400821598) / 2,
        Fraction(-2691868925, 45128329728) / 2, Fraction(187940372067, 1594534317056) / 2,
        Fraction(-1776094331, 19743644256) / 2, Fraction(11237099, 235043384) / 2,
    ),
    reuse_last_stage=True,
)

# Fehlberg 2(1): the last stage is f at the first-order solution.
FEHLBERG2 = ButcherTableau(
    name="fehlberg2",
    c=(0, "1/2", 1),
    a=(("1/2",), ("1/256", "255/256")),
    b=("1/512", "255/256", "1/512"),
    b_hat=("1/256", "255/256", 0),
    order=2,
    b_mid=(0, "1/2", 0),
    reuse_last_stage=True,
)

# Heun–Euler 2(1).
ADAPTIVE_HEUN = ButcherTableau(
    name="adaptive_heun",
    c=(0, 1),
    a=((1,),),
    b=("1/2", "1/2"),
    b_hat=(1, 0),
    order=2,
    b_mid=("1/2", 0),
    reuse_last_stage=True,
)


def _dopri8() -> ButcherTableau:
    """Prince & Dormand (1981) RK8(7)13M, rational coefficients as published."""
    c = (0, "1/18", "1/12", "1/8", "5/16", "3/8", "59/400", "93/200", "5490023248/9719169821",
         "13/20", "1201146811/1299019798", 1, 1, 1)
    a = (
        ("1/18",),
        ("1/48", "1/16"),
        ("1/32", 0, "3/32"),
        ("5/16", 0, "-75/64", "75/64"),
        ("3/80", 0, 0, "3/16", "3/20"),
        ("29443841/614563906", 0, 0, "77736538/692538347", "-28693883/1125000000", "23124283/1800000000"),
        ("16016141/946692911", 0, 0, "61564180/158732637", "22789713/633445777", "545815736/2771057229",
         "-180193667/1043307555"),
        ("39632708/573591083", 0, 0, "-433636366/683701615", "-421739975/2616292301", "100302831/723423059",
         "790204164/839813087", "800635310/3783071287"),
        ("246121993/1340847787", 0, 0, "-37695042795/15268766246", "-309121744/1061227803",
         "-12992083/490766935", "6005943493/2108947869", "393006217/1396673457", "123872331/1001029789"),
        ("-1028468189/846180014", 0, 0, "8478235783/508512852", "1311729495/1432422823",
         "-10304129995/1701304382", "-48777925059/3047939560", "15336726248/1032824649",
         "-45442868181/3398467696", "3065993473/597172653"),
        ("185892177/718116043", 0, 0, "-3185094517/667107341", "-477755414/1098053517",
         "-703635378/230739211", "5731566787/1027545527", "5232866602/850066563",
         "-4093664535/808688257", "3962137247/1805957418", "65686358/487910083"),
        ("403863854/491063109", 0, 0, "-5068492393/434740067", "-411421997/543043805",
         "652783627/914296604", "11173962825/925320556", "-13158990841/6184727034",
         "3936647629/1978049680", "-160528059/685178525", "248638103/1413531060", 0),
    )
    b8 = ("14005451/335480064", 0, 0, 0, 0, "-59238493/1068277825", "181606767/758867731",
          "561292985/797845732", "-1041891430/1371343529", "760417239/1151165299",
          "118820643/751138087", "-528747749/2220607170", "1/4")
    b7 = ("13451932/455176623", 0, 0, 0, 0, "-808719846/976000145", "1757004468/5645159321",
          "656045339/265891186", "-3867574721/1518517206", "465885868/322736535",
          "53011238/667516719", "2/45", 0)
    # The 13th stage is evaluated at the 8th-order solution (FSAL), so the
    # tableau has 14 stage slots with b_14 = 0.
    a = a + (b8,)
    b = b8 + (0,)
    b_hat = b7 + (0,)
    # Dense output at the midpoint: degree-5 polynomials in theta evaluated at
    # theta = 1/2 (Hairer's DOP853 continuous extension coefficients).
    polys = {
        0: (-6.3448349392860401388, 22.1396504998094068976, -30.0610568289666450593,
            19.9990069333683970610, -6.6910181737837595697, 1.0),
        5: (-39.6107919852202505218, 116.4422149550342161651, -121.4999627731334642623,
            52.2273532792945524050, -7.6142658045872677172, 0.0),
        6: (20.3761213808791436958, -67.1451318825957197185, 83.1721004639847717481,
            -46.8919164181093621583, 10.7281392630428866124, 0.0),
        7: (7.3347098826795362023, -16.5672243527496524646, 9.5724507555993664382,
            -0.1890893225010595467, 0.5526637063753648783, 0.0),
        8: (32.8801774352459155182, -89.9916014847245016028, 87.8406057677205645007,
            -35.7075975946222072821, 4.2186562625665153803, 0.0),
        9: (-10.1588990526426760954, 22.6237489648532849093, -17.4152107770762969005,
            6.2736448083240352160, -0.6627209125361597559, 0.0),
        10: (-12.5401268098782561200, 32.2362340167355370113, -28.5903289514790976966,
             10.3160881272450748458, -1.2636789001135462218, 0.0),
        11: (29.5553001484516038033, -82.1020315488359848644, 81.6630950584341412934,
             -34.7650769866611817349, 5.4106037898590422230, 0.0),
        12: (-41.7923486424390588923, 116.2662185791119533462, -114.9375291377009418170,
             47.7457971078225540396, -7.0321379067945741781, 0.0),
        13: (20.3006925822100825485, -53.9020777466385396792, 50.2558364226176017553,
             -19.0082099341608028453, 2.3537586759714983486, 0.0),
    }
    theta = 0.5
    b_mid = [0.0] * 14
    for i, p in polys.items():
        # p = (p5, p4, p3, p2, p1, p0) in powers of theta; weight = theta * p(theta)
        acc = 0.0
        for coef in p:
            acc = acc * theta + coef
        b_mid[i] = theta * acc
    # Guard the float rounding of the published 20-digit coefficients.
    drift = math.fsum(b_mid) - 0.5
    b_mid[0] -= drift
    return ButcherTableau(name="dopri8", c=c, a=a, b=b, b_hat=b_hat, order=8, b_mid=tuple(b_mid),
                          reuse_last_stage=True)


DOPRI8 = _dopri8()

TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, HEUN2, HEUN3, RK4_38, BOSH3, DOPRI5, DOPRI8,
                                FEHLBERG2, ADAPTIVE_HEUN)}
