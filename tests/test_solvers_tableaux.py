"""Coefficients are data: tableaux and Adams tables are validated."""
from fractions import Fraction

import math
import pytest

from graphode.solvers import TABLEAUX, ButcherTableau
from graphode.solvers._tableaux import rooted_trees
from graphode.solvers._adams import bashforth_exact, moulton_exact, MAX_ORDER


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_rows_sum_to_c_and_weights_to_one(name):
    tab = TABLEAUX[name]
    for i, row in enumerate(tab.A):
        assert math.fsum(row) == pytest.approx(tab.c[i], abs=1e-13)
    assert math.fsum(tab.b) == pytest.approx(1.0, abs=1e-13)
    if tab.b_hat is not None:
        assert math.fsum(tab.b_hat) + tab.b_hat0 == pytest.approx(1.0, abs=1e-13)
        assert math.fsum(tab.e) - tab.b_hat0 == pytest.approx(0.0, abs=1e-13)
    if tab.dense is not None:      # the continuous extension ends at y1
        for p, bi in zip(tab.dense, tab.b):
            assert sum(p) == pytest.approx(bi, abs=1e-12) and p[0] == 0.0
    if tab.b_mid is not None:
        assert math.fsum(tab.b_mid) == pytest.approx(0.5, abs=1e-13)


#: tableaux whose quadrature condition Σ b_i c_i^(k-1) = 1/k still holds at
#: k = order + 1 (so that condition alone cannot show the order is sharp),
#: with the defect measured there and at k = order + 2 (float64):
#: dopri8's 13 nodes integrate degree 8 exactly; the tree conditions still
#: fail at order 9 (test_order_conditions_hold_and_are_sharp).
QUADRATURE_EXACT_BEYOND_ORDER = {"dopri8": (-2.8e-17, -7.36e-6)}


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_quadrature_order_conditions(name):
    tab = TABLEAUX[name]
    for k in range(1, tab.order + 1):
        assert abs(tab.quadrature_defect(k)) < 1e-12, (name, k)
    nxt = tab.quadrature_defect(tab.order + 1)
    if name in QUADRATURE_EXACT_BEYOND_ORDER:
        at1, at2 = QUADRATURE_EXACT_BEYOND_ORDER[name]
        assert abs(nxt) < 1e-15 and nxt == pytest.approx(at1, abs=1e-16)
        assert tab.quadrature_defect(tab.order + 2) == pytest.approx(at2, rel=1e-2)
    else:
        assert abs(nxt) > 1e-5, (name, nxt)      # the quadrature condition alone shows the order is sharp


def test_rooted_tree_counts():
    # OEIS A000081: 1, 1, 2, 4, 9, 20, 48, 115, 286
    assert [len(rooted_trees(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_order_conditions_hold_and_are_sharp(name):
    """Every rooted-tree condition up to the stated order holds; one of order + 1 fails (Butcher)."""
    tab = TABLEAUX[name]
    for p in range(1, tab.order + 1):
        assert tab.order_defect(p) < 1e-12, (name, p, tab.order_defect(p))
    assert tab.order_defect(tab.order + 1) > 1e-6, (name, tab.order_defect(tab.order + 1))


@pytest.mark.parametrize("name", sorted(n for n, t in TABLEAUX.items() if t.adaptive))
def test_embedded_order_holds_and_is_sharp(name):
    tab = TABLEAUX[name]
    for p in range(1, tab.embedded_order + 1):
        assert tab.order_defect(p, tab.b_hat, tab.b_hat0) < 1e-12, (name, p)
    assert tab.order_defect(tab.embedded_order + 1, tab.b_hat, tab.b_hat0) > 1e-6
    # the controller's exponent is the power of h in the error estimate
    assert tab.error_order == min(tab.order, tab.embedded_order) + 1


def test_fsal_flags():
    assert TABLEAUX["dopri5"].fsal and TABLEAUX["bosh3"].fsal and TABLEAUX["dopri8"].fsal
    assert not TABLEAUX["fehlberg2"].fsal and TABLEAUX["fehlberg2"].reuse_last_stage
    assert not TABLEAUX["rk4"].adaptive and TABLEAUX["dopri5"].adaptive


def test_invalid_row_sum_rejected():
    with pytest.raises(ValueError, match="row 1 of a sums to"):
        ButcherTableau(name="bad", c=(0, 0.5), a=((0.4,),), b=(0, 1), order=2)


def test_invalid_weights_rejected():
    with pytest.raises(ValueError, match="weights b sum to"):
        ButcherTableau(name="bad", c=(0, 0.5), a=((0.5,),), b=(0.5, 0.6), order=2)
    with pytest.raises(ValueError, match="b_hat sum to"):
        ButcherTableau(name="bad", c=(0, 1), a=((1,),), b=(0.5, 0.5), b_hat=(1, 0.1), order=2)


def test_non_lower_triangular_rejected():
    with pytest.raises(ValueError, match="strictly lower triangular"):
        ButcherTableau(name="bad", c=(0, 0.5), a=((0.25, 0.25),), b=(0, 1), order=2)


def test_tableau_is_frozen():
    with pytest.raises(Exception):
        TABLEAUX["rk4"].order = 5


def test_adams_tables_known_values():
    assert bashforth_exact(4) == tuple(Fraction(x, 24) for x in (55, -59, 37, -9))
    assert moulton_exact(4) == tuple(Fraction(x, 24) for x in (9, 19, -5, 1))
    assert bashforth_exact(1) == (Fraction(1),)
    assert moulton_exact(2) == (Fraction(1, 2), Fraction(1, 2))
    for k in range(1, MAX_ORDER + 1):
        assert sum(bashforth_exact(k)) == 1 and sum(moulton_exact(k)) == 1


def test_adams_tables_match_torchdiffeq():
    fa = pytest.importorskip("torchdiffeq._impl.fixed_adams", reason="torchdiffeq not installed")
    for k in range(1, MAX_ORDER + 1):
        ref_b = fa._BASHFORTH_DIVISOR[k].tolist()
        ref_m = fa._MOULTON_DIVISOR[k].tolist()
        assert [float(x) for x in bashforth_exact(k)] == pytest.approx(ref_b, rel=1e-12, abs=1e-14)
        if k >= 2:  # torchdiffeq's unused k=1 Moulton entry is 1/11 (its divisor table quirk)
            assert [float(x) for x in moulton_exact(k)] == pytest.approx(ref_m, rel=1e-12, abs=1e-14)
