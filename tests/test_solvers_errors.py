"""Bad input and solver failures raise clear errors naming the problem."""
import pytest
import torch

from graphode.solvers import (MaxNumStepsError, NonFiniteError, StepSizeUnderflowError, odeint, register_method,
                              METHODS)

T = torch.tensor([0.0, 1.0], dtype=torch.float64)
Y0 = torch.ones(3, dtype=torch.float64)


def decay(t, y):
    return -y


def test_unknown_method_named():
    with pytest.raises(ValueError, match='Invalid method "rk45_typo"'):
        odeint(decay, Y0, T, method="rk45_typo")


def test_non_monotone_t():
    t = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint(decay, Y0, t)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint(decay, Y0, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))


def test_integer_dtypes():
    with pytest.raises(TypeError, match="`y0` must be a floating point Tensor.*torch.int64"):
        odeint(decay, torch.ones(3, dtype=torch.int64), T)
    with pytest.raises(TypeError, match="`t` must be a floating point Tensor"):
        odeint(decay, Y0, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"`y0\[1\]` must be a floating point"):
        odeint(lambda t, y: y, (Y0, torch.ones(2, dtype=torch.int32)), T)


def test_nan_and_inf_in_y0():
    y = Y0.clone()
    y[1] = float("nan")
    with pytest.raises(ValueError, match="`y0` contains non-finite values"):
        odeint(decay, y, T)
    y[1] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        odeint(decay, y, T)


def test_t_shape_and_type():
    with pytest.raises(ValueError, match="one-dimensional"):
        odeint(decay, Y0, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        odeint(decay, Y0, [0.0, 1.0])


def test_step_size_underflow():
    # y' = y^2, y(0)=1 blows up at t=1.
    with pytest.raises(StepSizeUnderflowError, match="underflow in dt"):
        odeint(lambda t, y: y * y, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-8, atol=1e-8)
    # still an AssertionError for code written against torchdiffeq
    assert issubclass(StepSizeUnderflowError, AssertionError)


def test_max_num_steps():
    with pytest.raises(MaxNumStepsError, match=r"max_num_steps exceeded \(5>=5\)"):
        odeint(decay, Y0, torch.tensor([0.0, 100.0], dtype=torch.float64), options={"max_num_steps": 5})
    assert issubclass(MaxNumStepsError, AssertionError)


def test_non_finite_field():
    calls = {"n": 0}

    def bad(t, y):
        calls["n"] += 1
        return y * float("nan") if float(t) > 0.1 else -y

    with pytest.raises((NonFiniteError, StepSizeUnderflowError), match="non-finite|underflow"):
        odeint(bad, Y0, T)


def test_unused_option_warning_names_it():
    with pytest.warns(UserWarning, match="'step_size'"):
        odeint(decay, Y0, T, method="dopri5", options={"step_size": 0.1})
    with pytest.warns(UserWarning, match="'first_step'"):
        odeint(decay, Y0, T, method="euler", options={"step_size": 0.1, "first_step": 0.1})


def test_fixed_grid_option_errors():
    with pytest.raises(ValueError, match="mutually exclusive"):
        odeint(decay, Y0, T, method="rk4", options={"step_size": 0.1, "grid_constructor": lambda f, y, t: t})
    with pytest.raises(ValueError, match="step_size must be a positive"):
        odeint(decay, Y0, T, method="rk4", options={"step_size": -0.1})
    with pytest.raises(ValueError, match="Unknown interpolation"):
        odeint(decay, Y0, T, method="rk4", options={"step_size": 0.1, "interp": "spline"})


def test_event_needs_two_times():
    with pytest.raises(ValueError, match="len\\(t\\) == 2"):
        odeint(decay, Y0, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), event_fn=lambda t, y: y[0] - 0.5)


def test_register_method_conflicts():
    with pytest.raises(ValueError, match="already registered"):
        register_method("dopri5", tableau=METHODS["rk4"].tableau)
    with pytest.raises(ValueError, match="exactly one"):
        register_method("new_method_x")


def test_register_custom_tableau_runs():
    from graphode.solvers import ButcherTableau

    ralston = ButcherTableau(name="ralston", c=(0, "2/3"), a=(("2/3",),), b=("1/4", "3/4"), order=2)
    register_method("ralston_test", tableau=ralston, overwrite=True)
    ys = odeint(decay, Y0, T, method="ralston_test", options={"step_size": 0.01})
    assert torch.allclose(ys[-1], Y0 * torch.exp(torch.tensor(-1.0, dtype=torch.float64)), rtol=1e-4)
    del METHODS["ralston_test"]
