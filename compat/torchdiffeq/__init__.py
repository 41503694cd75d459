"""``torchdiffeq``'s public API served by graphode (a compatibility shim).

Put the folder holding this package first on ``PYTHONPATH`` and code written
against torchdiffeq runs on graphode's solvers::

    PYTHONPATH=compat python your_script.py      # `import torchdiffeq` is graphode

Used by ``compat/run_torchdiffeq_suite.py`` to run torchdiffeq's own test
suite against graphode.  Nothing of torchdiffeq is copied here.
"""
from graphode.solvers import odeint, odeint_adjoint, odeint_event

__all__ = ["odeint", "odeint_adjoint", "odeint_event"]
__version__ = "graphode-shim"
__graphode_shim__ = True
