"""graphode.ops.dropout on the Triton backend, on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``, set here before triton is imported): the
same mask as the reference, bit for bit, and the gradients.  (Never run on a
GPU here: no GPU on the development machine.)"""
import os
import sys

_TRITON_PREIMPORTED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    import triton  # noqa: E402,F401
except ImportError as e:  # pragma: no cover - depends on the installation
    pytest.skip(f"triton is not importable ({e})", allow_module_level=True)

if _TRITON_PREIMPORTED or os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton was imported without TRITON_INTERPRET=1 before this module; run this file on its own",
                allow_module_level=True)

import graphode.kernels as K  # noqa: E402
from graphode import ops  # noqa: E402
from graphode.ops import reference as R  # noqa: E402

if not K.INTERPRET:  # pragma: no cover
    pytest.skip("graphode.kernels was imported without TRITON_INTERPRET=1 in this process", allow_module_level=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("n", [5, 4 * 256 + 3])  # one program; two, the second partly masked
def test_triton_matches_reference_bitwise(dtype, n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
    for seed in (12345, 2**64 - 1):
        for p in (0.6, 0.05):
            a = ops.dropout(x, p, seed=seed, backend="triton")
            b = ops.dropout(x, p, seed=seed, backend="reference")
            assert torch.equal(a, b), (seed, p)


def test_triton_known_answer_and_gradients():
    assert ops.dropout(torch.ones(4), 0.5, seed=0, backend="triton").tolist() == [0.0, 2.0, 2.0, 2.0]
    # (the interpreter runs every program in Python: a small input for the numerical checks)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(t):
        return ops.dropout(t, 0.3, seed=9, backend="triton")

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = f(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, (R.dropout(torch.ones_like(x), 0.3, 9) != 0).double() / 0.7)


def test_triton_threshold_is_the_references():
    from graphode.kernels.dropout import _threshold

    for p in (0.0, -0.0, 1e-12, 0.05, 0.3, 0.5, 0.6, 0.999999999, 1.0 - 2**-40):
        assert _threshold(p) == R.dropout_threshold(p), p
