"""Runge–Kutta methods as frozen, validated data (explicit and implicit).

A tableau with ``s`` stages describes the Runge–Kutta step

.. math::

    k_i = f\\Big(t_0 + c_i h,\\; y_0 + h \\sum_j a_{ij} k_j\\Big),\\qquad
    y_1 = y_0 + h \\sum_i b_i k_i,

explicit when ``a`` is strictly lower triangular (given as ``s - 1`` rows,
row ``i`` with ``i`` entries), implicit otherwise (given as ``s`` full rows
of ``s`` entries): diagonally implicit (DIRK/ESDIRK) when ``a`` is lower
triangular, fully implicit (Gauss, Radau) when not.  Embedded pairs carry
weights :math:`\\hat b` whose difference :math:`e = b - \\hat b` gives the
local error estimate :math:`h \\sum_i e_i k_i`; implicit pairs may add a
weight ``b_hat0`` on :math:`f(t_0, y_0)` and a *filter*
:math:`(I - hγJ)^{-1}` applied to the estimate, which keeps it bounded for
stiff components (Hairer & Wanner, *Solving ODEs II*, IV.8; Shampine).

Every tableau is checked when it is built: each row of ``a`` sums to its
node ``c_i``, the weights ``b`` (and ``b_hat``, with ``b_hat0``) sum to
one, the dense-output midpoint weights ``b_mid`` sum to one half, and a
continuous extension ``dense`` reproduces ``b`` at θ = 1.  The stated
``order`` is checked by the tests against the rooted-tree order conditions
(:meth:`ButcherTableau.order_defect`), including that it is sharp.
Coefficients are given as exact rationals where the method is rational.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Optional, Sequence, Tuple

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
    "TSIT5",
    "IMPLICIT_EULER",
    "IMPLICIT_MIDPOINT",
    "TRAPEZOID",
    "GL4",
    "GL6",
    "RADAU_IIA3",
    "RADAU_IIA5",
    "SDIRK2",
    "TRBDF2",
    "TABLEAUX",
    "rooted_trees",
    "collocation_dense",
    "polyval",
]

_TOL = 1e-12


def _num(x) -> float:
    if isinstance(x, str):
        return float(Fraction(x))
    return float(x)


def _vec(xs) -> Tuple[float, ...]:
    return tuple(_num(x) for x in xs)


# ------------------------------------------------------------- order conditions
@lru_cache(maxsize=None)
def _forests(m: int):
    """All multisets of rooted trees with ``m`` nodes in total (canonical sorted tuples)."""
    if m == 0:
        return ((),)
    out = set()
    for k in range(1, m + 1):
        for t in rooted_trees(k):
            for rest in _forests(m - k):
                out.add(tuple(sorted((t,) + rest)))
    return tuple(sorted(out))


@lru_cache(maxsize=None)
def rooted_trees(n: int):
    """All rooted trees with ``n`` nodes; a tree is the sorted tuple of its children (1, 1, 2, 4, 9, 20, … trees)."""
    if n < 1:
        raise ValueError("a rooted tree has at least one node")
    return _forests(n - 1)


def _size(tree) -> int:
    return 1 + sum(_size(c) for c in tree)


def _density(tree) -> int:
    """γ(τ) = |τ| · Π γ(children)."""
    g = _size(tree)
    for c in tree:
        g *= _density(c)
    return g


def _stage_weights(tree, A, s):
    """g(τ)_i = Π_children (A g(child))_i."""
    g = [1.0] * s
    for child in tree:
        gc = _stage_weights(child, A, s)
        agc = [math.fsum(A[i][j] * gc[j] for j in range(s)) for i in range(s)]
        g = [x * y for x, y in zip(g, agc)]
    return g


def collocation_dense(c: Sequence[float]) -> Tuple[Tuple[float, ...], ...]:
    """Continuous extension of a collocation method: ``b_i(θ) = ∫_0^θ ℓ_i`` (Lagrange basis on ``c``).

    Returns per stage the polynomial coefficients in θ (constant term first).
    """
    s = len(c)
    out = []
    for i in range(s):
        p = [1.0]                       # ℓ_i in monomials, constant first
        for m in range(s):
            if m != i:
                d = c[i] - c[m]
                q = [0.0] * (len(p) + 1)
                for k, a in enumerate(p):
                    q[k] += -c[m] * a / d
                    q[k + 1] += a / d
                p = q
        out.append((0.0,) + tuple(a / (k + 1) for k, a in enumerate(p)))
    return tuple(out)


def polyval(coefs: Sequence[float], x: float) -> float:
    acc = 0.0
    for a in reversed(coefs):
        acc = acc * x + a
    return acc


# --------------------------------------------------------------------- tableau
@dataclass(frozen=True)
class ButcherTableau:
    """A Runge–Kutta method, as data.

    Attributes:
        name: human-readable name.
        c: nodes, length ``s``.
        a: explicit methods: ``s - 1`` rows (row ``i`` has ``i`` entries,
            stage ``i + 1``), ``c[0] = 0``; implicit methods: ``s`` rows of
            ``s`` entries.
        b: solution weights, length ``s``.
        order: order of the propagated solution ``b``.
        b_hat: embedded weights (length ``s``) or ``None`` for a fixed-step
            method.  The error estimate uses ``e = b - b_hat``.
        b_hat0: weight of ``f(t0, y0)`` in the embedded solution (implicit
            methods whose first stage is not at ``(t0, y0)``, e.g. Radau IIA).
        filter: ``γ`` of the stiff filter ``(I - hγJ)^{-1}`` applied to the
            error estimate (0: none).
        embedded_order: order of ``b_hat`` (default ``order - 1``).
        error_order: exponent ``q`` of the controller (``h_new ∝ r^{-1/q}``),
            the power of ``h`` in the error estimate; defaults to
            ``min(order, embedded_order) + 1`` (= ``order`` for the usual
            ``p(p-1)`` pairs, as torchdiffeq).
        b_mid: weights giving ``y(t0 + h/2) ≈ y0 + h Σ b_mid_i k_i`` for the
            quartic dense output, or ``None``.
        dense: continuous extension, per stage the coefficients (constant
            first) of ``b_i(θ)`` with ``y(t0 + θh) = y0 + h Σ b_i(θ) k_i``; or
            ``"collocation"`` to derive it from ``c``; or ``None``.
        reuse_last_stage: if true, the last stage must have ``c = 1`` and its
            derivative is reused as the first stage of the next step.  This
            is exact FSAL when the last row of ``a`` equals ``b``; for
            ``fehlberg2``/``adaptive_heun`` it reuses the derivative at the
            embedded solution, as torchdiffeq does (the method stays of the
            stated order).  For stiffly accurate implicit methods it reuses
            ``f`` at the converged last stage.
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
    b_hat0: float = 0.0
    filter: float = 0.0
    embedded_order: Optional[int] = None
    dense: Optional[Tuple[Tuple[float, ...], ...]] = None
    fsal: bool = field(init=False, default=False)
    implicit: bool = field(init=False, default=False)
    A: Tuple[Tuple[float, ...], ...] = field(init=False, default=())

    def __post_init__(self):
        conv = lambda v: None if v is None else _vec(v)  # noqa: E731
        object.__setattr__(self, "c", _vec(self.c))
        object.__setattr__(self, "a", tuple(_vec(row) for row in self.a))
        object.__setattr__(self, "b", _vec(self.b))
        object.__setattr__(self, "b_hat", conv(self.b_hat))
        object.__setattr__(self, "b_mid", conv(self.b_mid))
        object.__setattr__(self, "b_hat0", _num(self.b_hat0))
        object.__setattr__(self, "filter", _num(self.filter))
        s = len(self.c)
        implicit = s > 0 and len(self.a) == s and all(len(r) == s for r in self.a)
        object.__setattr__(self, "implicit", implicit)
        if implicit:
            A = self.a
        else:
            A = ((0.0,) * s,) + tuple(tuple(r) + (0.0,) * (s - len(r)) for r in self.a)
        object.__setattr__(self, "A", A)
        if self.embedded_order is None:
            object.__setattr__(self, "embedded_order", int(self.order) - 1)
        if self.error_order is None:
            object.__setattr__(self, "error_order", min(int(self.order), int(self.embedded_order)) + 1)
        if isinstance(self.dense, str):
            if self.dense != "collocation":
                self._fail(f"dense must be polynomial coefficients or 'collocation', got {self.dense!r}")
            object.__setattr__(self, "dense", collocation_dense(self.c))
        elif self.dense is not None:
            object.__setattr__(self, "dense", tuple(_vec(p) for p in self.dense))
        self._validate()
        fsal = (not implicit and self.stages > 1 and self.c[-1] == 1.0
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

    @property
    def kind(self) -> str:
        """``"explicit"``, ``"diagonally_implicit"`` (lower triangular ``a``) or ``"implicit"``."""
        if not self.implicit:
            return "explicit"
        s = self.stages
        if all(self.A[i][j] == 0.0 for i in range(s) for j in range(i + 1, s)):
            return "diagonally_implicit"
        return "implicit"

    @property
    def stiffly_accurate(self) -> bool:
        """``b`` equals the last row of ``a`` (then ``y1`` is the last stage value)."""
        return self.c[-1] == 1.0 and all(abs(x - y) <= _TOL for x, y in zip(self.A[-1], self.b))

    def _fail(self, msg):
        raise ValueError(f"invalid Butcher tableau {self.name!r}: {msg}")

    def _validate(self):
        s = len(self.c)
        if s < 1:
            self._fail("needs at least one stage")
        if not self.implicit:
            if self.c[0] != 0.0:
                self._fail(f"c[0] must be 0 for an explicit method, got {self.c[0]}")
            if len(self.a) != s - 1:
                self._fail(f"a must have {s - 1} rows (stages 2..{s}) for an explicit method, or {s} rows of "
                           f"{s} entries for an implicit one, got {len(self.a)}")
            for i, row in enumerate(self.a, start=1):
                if len(row) != i:
                    self._fail(f"row {i} of a must have {i} entries (strictly lower triangular), got {len(row)}")
        for i, row in enumerate(self.A):
            if (self.implicit or i > 0) and abs(math.fsum(row) - self.c[i]) > _TOL * max(1.0, abs(self.c[i])):
                self._fail(f"row {i if self.implicit else i} of a sums to {math.fsum(row)!r}, but c[{i}] = {self.c[i]!r}")
        if len(self.b) != s:
            self._fail(f"b must have {s} entries, got {len(self.b)}")
        if abs(math.fsum(self.b) - 1.0) > _TOL:
            self._fail(f"weights b sum to {math.fsum(self.b)!r}, not 1")
        if self.b_hat is not None:
            if len(self.b_hat) != s:
                self._fail(f"b_hat must have {s} entries, got {len(self.b_hat)}")
            tot = math.fsum(self.b_hat) + self.b_hat0
            if abs(tot - 1.0) > _TOL:
                self._fail(f"embedded weights b_hat sum to {tot!r}, not 1")
        elif self.b_hat0 or self.filter:
            self._fail("b_hat0 and filter need embedded weights b_hat")
        if self.b_mid is not None:
            if len(self.b_mid) != s:
                self._fail(f"b_mid must have {s} entries, got {len(self.b_mid)}")
            if abs(math.fsum(self.b_mid) - 0.5) > _TOL:
                self._fail(f"midpoint weights b_mid sum to {math.fsum(self.b_mid)!r}, not 1/2")
        if self.dense is not None:
            if len(self.dense) != s:
                self._fail(f"dense must have {s} polynomials, got {len(self.dense)}")
            for i, p in enumerate(self.dense):
                if abs(polyval(p, 0.0)) > _TOL or abs(polyval(p, 1.0) - self.b[i]) > 1e-10:
                    self._fail(f"dense polynomial {i} must be 0 at θ=0 and b[{i}] at θ=1")
        if self.reuse_last_stage and self.c[-1] != 1.0:
            self._fail("reuse_last_stage needs the last node c[-1] == 1")
        if self.order < 1:
            self._fail("order must be >= 1")

    def quadrature_defect(self, k: int) -> float:
        """``Σ b_i c_i^(k-1) - 1/k``; zero for ``k <= order`` (a necessary order condition)."""
        return math.fsum(bi * ci ** (k - 1) for bi, ci in zip(self.b, self.c)) - 1.0 / k

    def order_defect(self, p: int, weights: Optional[Sequence[float]] = None, weight0: float = 0.0) -> float:
        """``max_τ |Φ(τ) - 1/γ(τ)|`` over the rooted trees τ with ``p`` nodes.

        ``Φ(τ) = Σ_i b_i g_i(τ)`` is the elementary weight (``weights``
        instead of ``b`` if given, plus ``weight0`` on an extra explicit
        stage at ``(t0, y0)``, whose elementary weights vanish beyond the
        first tree).  A method has order ``p`` iff the defects of orders
        ``1..p`` vanish (Butcher); the order is sharp iff the defect at
        ``p + 1`` does not.
        """
        w = self.b if weights is None else tuple(weights)
        s = self.stages
        worst = 0.0
        for tree in rooted_trees(p):
            g = _stage_weights(tree, self.A, s)
            phi = math.fsum(wi * gi for wi, gi in zip(w, g)) + (weight0 if p == 1 else 0.0)
            worst = max(worst, abs(phi - 1.0 / _density(tree)))
        return worst

    def stability_function(self, z: complex) -> complex:
        """``R(z) = 1 + z bᵀ (I - zA)^{-1} 1`` (the step's factor on ``y' = λy``, ``z = hλ``)."""
        import numpy as np
        s = self.stages
        A = np.array(self.A, dtype=complex)
        g = np.linalg.solve(np.eye(s) - z * A, np.ones(s, dtype=complex))
        return complex(1.0 + z * np.dot(np.array(self.b, dtype=complex), g))


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


def _pmul(*ps):
    """Product of polynomials given by coefficients (constant first)."""
    out = [1.0]
    for p in ps:
        q = [0.0] * (len(out) + len(p) - 1)
        for i, a in enumerate(out):
            for j, b in enumerate(p):
                q[i + j] += a * b
        out = q
    return tuple(out)


def _tsit5() -> ButcherTableau:
    """Tsitouras (2011) 5(4) pair, FSAL, with its own continuous extension.

    Coefficients as published (Tsitouras, *Comput. Math. Appl.* 62, 2011,
    Table 1 and the dense-output polynomials of Sec. 4); the propagated
    solution is the fifth-order one.
    """
    c = (0, "0.161", "0.327", "0.9", "0.9800255409045096857298102862870245954942137979563024768854764293221195950761",
         1, 1)
    a = (
        ("0.161",),
        ("-0.008480655492356988544426874250230774675121177393430391537369234245294192976164",
         "0.3354806554923569885444268742502307746751211773934303915373692342452941929761641"),
        ("2.897153057105493432130432594192938764924887287701866490314866693455023795137503",
         "-6.359448489975074843148159912383825625952700647415626703305928850207288721235210",
         "4.362295432869581411017727318190886861027813359713760212991062156752264926097707"),
        ("5.325864828439256604428877920840511317836476253097040101202360397727981648835607",
         "-11.74888356406282787774717033978577296188744178259862899288666928009020615663593",
         "7.495539342889836208304604784564358155658679161518186721010132816213648793440552",
         "-0.09249506636175524925650207933207191611349983406029535244034750452930469056411389"),
        ("5.861455442946420028659251486982647890394337666164814434818157239052507339770711",
         "-12.92096931784710929170611868178335939541780751955743459166312250439928519268343",
         "8.159367898576158643180400794539253485181918321135053305748355423955009222648673",
         "-0.07158497328140099722453054252582973869127213147363544882721139659546372402303777",
         "-0.02826905039406838290900305721271224146717633626879770007617876201276764571291579"),
        ("0.09646076681806522951816731316512876333711995238157997181903319145764851595234062",
         "0.01",
         "0.4798896504144995747752495322905965199130404621990332488332634944254542060153074",
         "1.379008574103741893192274821856872770756462643091360525934940067397245698027561",
         "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925",
         "2.324710524099773982415355918398765796109060233222962411944060046314465391054716"),
    )
    b = a[-1] + (0,)
    b_hat = ("0.09468075576583945807478876255758922856117527357724631226139574065785592789071067",
             "0.009183565540343253096776363936645313759813746240984095238905939532922955247253608",
             "0.4877705284247615707855642599631228241516691959761363774365216240304071651579571",
             "1.234297566930478985655109673884237654035539930748192848315425833500484878378061",
             "-2.707712349983525454881109975059321670689605166938197378763992255714444407154902",
             "1.866628418170587035753719399566211498666255505244122593996591602841258328965767",
             "1/66")
    # b_i(θ), factored as in the paper
    dense = (
        _pmul((0, -1.0530884977290216), (-1.3299890189751412, 1), (0.7139816917074209, -1.4364028541716351, 1)),
        _pmul((0, 0, 0.1017), (1.2949852507374631, -2.1966568338249754, 1)),
        _pmul((0, 0, 2.490627285651252793), (1.57803468208092486, -2.38535645472061657, 1)),
        _pmul((0, 0, -16.54810288924490272), (-1.21712927295533244, 1), (-0.61620406037800089, 1)),
        _pmul((0, 0, 47.37952196281928122), (-1.203071208372362603, 1), (-0.658047292653547382, 1)),
        _pmul((0, 0, -34.87065786149660974), (-1.2, 1), (-2.0 / 3.0, 1)),
        _pmul((0, 0, 2.5), (-1, 1), (-0.6, 1)),
    )
    return ButcherTableau(name="tsit5", c=c, a=a, b=b, b_hat=b_hat, order=5, dense=dense, reuse_last_stage=True)


TSIT5 = _tsit5()

# ------------------------------------------------------------ implicit methods
# Collocation methods (Gauss, Radau IIA, Lobatto IIIA) carry their collocation
# polynomial as dense output; stiffly accurate ones reuse f at the last stage.
IMPLICIT_EULER = ButcherTableau(name="implicit_euler", c=(1,), a=((1,),), b=(1,), order=1, dense="collocation",
                                reuse_last_stage=True)

IMPLICIT_MIDPOINT = ButcherTableau(name="implicit_midpoint", c=("1/2",), a=(("1/2",),), b=(1,), order=2,
                                   dense="collocation")

# Trapezoidal rule = Crank–Nicolson = Lobatto IIIA with 2 stages (explicit first stage).
TRAPEZOID = ButcherTableau(name="trapezoid", c=(0, 1), a=((0, 0), ("1/2", "1/2")), b=("1/2", "1/2"), order=2,
                           dense="collocation", reuse_last_stage=True)

_S3 = math.sqrt(3.0)
GL4 = ButcherTableau(
    name="gl4", c=(0.5 - _S3 / 6, 0.5 + _S3 / 6),
    a=((0.25, 0.25 - _S3 / 6), (0.25 + _S3 / 6, 0.25)), b=(0.5, 0.5), order=4, dense="collocation")

_S15 = math.sqrt(15.0)
GL6 = ButcherTableau(
    name="gl6", c=(0.5 - _S15 / 10, 0.5, 0.5 + _S15 / 10),
    a=((5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
       (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
       (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36)),
    b=("5/18", "4/9", "5/18"), order=6, dense="collocation")

RADAU_IIA3 = ButcherTableau(
    name="radauIIA3", c=("1/3", 1), a=(("5/12", "-1/12"), ("3/4", "1/4")), b=("3/4", "1/4"), order=3,
    dense="collocation", reuse_last_stage=True)


def _radau_iia5() -> ButcherTableau:
    """Radau IIA, 3 stages, order 5, with Hairer & Wanner's embedded order-3 estimate.

    The embedded solution (IV.8, eq. 8.19) puts weight ``γ0`` on
    ``f(t0, y0)`` and ``γ0`` on ``f(t1, ŷ1)``, with ``γ0`` the real eigenvalue of
    ``a``; its other weights solve the order-3 quadrature conditions.  The
    estimate is filtered by ``(I - hγ0 J)^{-1}`` (eq. 8.20).
    """
    s6 = math.sqrt(6.0)
    c = ((4 - s6) / 10, (4 + s6) / 10, 1.0)
    a = ((11 / 45 - 7 * s6 / 360, 37 / 225 - 169 * s6 / 1800, -2 / 225 + s6 / 75),
         (37 / 225 + 169 * s6 / 1800, 11 / 45 + 7 * s6 / 360, -2 / 225 - s6 / 75),
         (4 / 9 - s6 / 36, 4 / 9 + s6 / 36, 1 / 9))
    gamma0 = (6.0 + 81.0 ** (1 / 3) - 9.0 ** (1 / 3)) / 30.0
    # Σ b̂ = 1 - γ0, Σ b̂ c = 1/2, Σ b̂ c² = 1/3 (the γ0 f(t1, ŷ1) term is folded into b̂_3)
    import numpy as np
    M = np.array([[1.0, 1.0, 1.0], list(c), [x * x for x in c]])
    b_hat = tuple(float(x) for x in np.linalg.solve(M, np.array([1.0 - gamma0, 0.5, 1.0 / 3.0])))
    return ButcherTableau(name="radauIIA5", c=c, a=a, b=a[-1], order=5, b_hat=b_hat, b_hat0=gamma0,
                          filter=gamma0, embedded_order=3, dense="collocation", reuse_last_stage=True)


RADAU_IIA5 = _radau_iia5()

# Alexander's 2-stage L-stable SDIRK (γ = 1 - 1/√2), stiffly accurate; embedded
# first-order solution y0 + h k_1, filtered by (I - hγJ)^{-1}.
_G = 1.0 - 1.0 / math.sqrt(2.0)
SDIRK2 = ButcherTableau(
    name="sdirk2", c=(_G, 1), a=((_G, 0), (1 - _G, _G)), b=(1 - _G, _G), order=2, b_hat=(1, 0),
    embedded_order=1, filter=_G, reuse_last_stage=True)

# TR-BDF2 as an ESDIRK (Hosea & Shampine 1996): a trapezoidal stage to 2 - √2,
# then BDF2; embedded third-order weights, estimate filtered by (I - h d J)^{-1}.
_D = 1.0 - math.sqrt(2.0) / 2.0
_W = math.sqrt(2.0) / 4.0
TRBDF2 = ButcherTableau(
    name="trbdf2", c=(0, 2 * _D, 1), a=((0, 0, 0), (_D, _D, 0), (_W, _W, _D)), b=(_W, _W, _D), order=2,
    b_hat=((1 - _W) / 3, (3 * _W + 1) / 3, _D / 3), embedded_order=3, filter=_D, reuse_last_stage=True)

TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, HEUN2, HEUN3, RK4_38, BOSH3, DOPRI5, DOPRI8,
                                FEHLBERG2, ADAPTIVE_HEUN, TSIT5, IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID,
                                GL4, GL6, RADAU_IIA3, RADAU_IIA5, SDIRK2, TRBDF2)}
