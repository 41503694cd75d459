"""Coefficients are data: tableaux and Adams tables are validated."""
from fractions import Fraction

import math
import pytest

from graphode.solvers import TABLEAUX, ButcherTableau
from graphode.solvers._adams import bashforth_exact, moulton_exact, MAX_ORDER


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_rows_sum_to_c_and_weights_to_one(name):
    tab = TABLEAUX[name]
    for i, row in enumerate(tab.a, start=1):
        assert math.fsum(row) == pytest.approx(tab.c[i], abs=1e-13)
    assert math.fsum(tab.b) == pytest.approx(1.0, abs=1e-13)
    if tab.b_hat is not None:
        assert math.fsum(tab.b_hat) == pytest.approx(1.0, abs=1e-13)
        assert math.fsum(tab.e) == pytest.approx(0.0, abs=1e-13)
    if tab.b_mid is not None:
        assert math.fsum(tab.b_mid) == pytest.approx(0.5, abs=1e-13)


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_quadrature_order_conditions(name):
    tab = TABLEAUX[name]
    for k in range(1, tab.order + 1):
        assert abs(tab.quadrature_defect(k)) < 1e-12, (name, k)
    # the conditions fail one order higher (the stated order is sharp), except
    # for methods whose quadrature happens to be exact one order higher
    if name not in ("midpoint", "heun2", "rk4", "heun3", "dopri8", "bosh3", "dopri5", "adaptive_heun", "fehlberg2"):
        assert abs(tab.quadrature_defect(tab.order + 1)) > 1e-8


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
