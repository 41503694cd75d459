"""graphode.ops.dropout: the fused Philox dropout.

* the pure-PyTorch Philox4x32-10 against the published known-answer vectors
  of Random123 (Salmon et al., SC'11), and the compiled kernel against one of
  them through its mask;
* the cpu kernel bit-identical to the reference (dtypes, sizes around the
  4-element blocks and the parallel grain, seeds over the full 64 bits, 1 and
  2 threads);
* the mask's statistics: keep rate, independence of neighbours, of the four
  words of a block, of consecutive blocks and of consecutive seeds, and the
  uniformity of 4-bit patterns (chi-square), at fixed seeds (deterministic);
* autograd (gradcheck / gradgradcheck in float64), ``opcheck``, seeding and
  the errors.
"""
import math

import pytest
import torch

import graphode.ops as O
from graphode.ops import reference as R

pytestmark = pytest.mark.usefixtures("one_thread")

# not available_backends(): it would import triton here, before test files that need TRITON_INTERPRET=1
_cpu = __import__("graphode._extension")._extension.load_extension() is not None
needs_cpu = pytest.mark.skipif(not _cpu, reason="graphode._C is not built")


def _t(v):
    return torch.tensor([v], dtype=torch.int64)


# Random123 kat_vectors, philox4x32 with 10 rounds: counter, key (k0, k1) -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_reference_philox_known_answers(counter, key, expected):
    words = R.philox4x32_10(*(_t(c) for c in counter), key[0] | (key[1] << 32))
    assert tuple(int(w) for w in words) == expected


def test_reference_mulhilo_against_python_ints():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2**32, (1000,), dtype=torch.int64, generator=g)
    a[:3] = torch.tensor([0, 1, 2**32 - 1])
    for b in (0xD2511F53, 0xCD9E8D57, 2**32 - 1, 1):
        hi, lo = R._mulhilo32(a, b)
        for ai, h, lw in zip(a.tolist(), hi.tolist(), lo.tolist()):
            assert (h, lw) == divmod(ai * b, 2**32)


@needs_cpu
def test_cpu_kernel_known_answer_through_the_mask():
    # seed 0, block 0 = the first KAT: u / 2^32 = 0.399, 0.880, 0.735, 0.605
    x = torch.ones(4)
    assert O.dropout(x, 0.5, seed=0, backend="cpu").tolist() == [0.0, 2.0, 2.0, 2.0]
    s = float(torch.tensor(1 / 0.3, dtype=torch.float32))
    assert O.dropout(x, 0.7, seed=0, backend="cpu").tolist() == [0.0, s, s, 0.0]
    # u_0 = 0x6627E8D5 exactly at the threshold: kept iff u >= floor(p 2^32)
    p_at = 0x6627E8D5 / 2**32
    assert O.dropout(x, p_at, seed=0, backend="cpu")[0] != 0
    assert O.dropout(x, (0x6627E8D5 + 1) / 2**32, seed=0, backend="cpu")[0] == 0


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 257, 2708 * 64 + 3, 4 * 16384 * 2 + 7])
def test_cpu_matches_reference_bitwise(dtype, n):
    x = torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(n))
    for seed in (0, 1, 12345, 2**62 + 17, 2**63 + 5, 2**64 - 1, -3):
        for p in (0.6, 0.1, 0.999):
            a = O.dropout(x, p, seed=seed, backend="cpu")
            b = O.dropout(x, p, seed=seed, backend="reference")
            assert torch.equal(a, b), (seed, p)


@needs_cpu
def test_cpu_result_does_not_depend_on_threads_or_shape():
    x = torch.randn(4 * 16384 * 3 + 11)
    one = O.dropout(x, 0.4, seed=99, backend="cpu")
    torch.set_num_threads(2)
    two = O.dropout(x, 0.4, seed=99, backend="cpu")
    torch.set_num_threads(1)
    assert torch.equal(one, two)
    # the mask follows the row-major element index, whatever the shape
    y = O.dropout(x[:-11].view(-1, 64), 0.4, seed=99, backend="cpu")
    assert torch.equal(y.reshape(-1), one[:-11])


# --------------------------------------------------------------------------- statistics
def _mask(n, p, seed):
    return R.dropout_mask(n, p, seed)


def _z(k, n, q):
    """z-score of k successes in n trials of probability q."""
    return (k - n * q) / math.sqrt(n * q * (1 - q))


@pytest.mark.parametrize("p", [0.6, 0.1, 0.5])
def test_mask_keep_rate(p):
    n = 1 << 20
    for seed in (0, 7, 2**63 + 1):
        m = _mask(n, p, seed)
        assert abs(_z(int(m.sum()), n, 1 - p)) < 5


def test_mask_independence_of_neighbours_words_blocks_and_seeds():
    n, p = 1 << 20, 0.6
    q = 1 - p
    m = _mask(n, p, 1234)
    pairs = {
        "i, i+1": (m[:-1], m[1:]),
        "word 0, word 3 of a block": (m[0::4], m[3::4]),
        "block b, b+1 (same word)": (m[0:-4:4], m[4::4]),
        "seed s, s+1": (m, _mask(n, p, 1235)),
        "seed s, s + 2^32 (high key word)": (m, _mask(n, p, 1234 + 2**32)),
    }
    for what, (a, b) in pairs.items():
        k, N = int((a & b).sum()), a.numel()
        assert abs(_z(k, N, q * q)) < 5, what


def test_mask_four_bit_patterns_are_uniform():
    # chi-square of the 16 patterns of 4 consecutive mask bits (one Philox block) at p = 0.5
    n = 1 << 20
    m = _mask(n, 0.5, 42).view(-1, 4).long()
    codes = m[:, 0] + 2 * m[:, 1] + 4 * m[:, 2] + 8 * m[:, 3]
    counts = torch.bincount(codes, minlength=16).double()
    e = counts.sum() / 16
    chi2 = float(((counts - e) ** 2 / e).sum())
    assert chi2 < 44.3  # the 0.9999 quantile of chi-square with 15 degrees of freedom
    # and across block boundaries (elements 2..5)
    m2 = _mask(n + 8, 0.5, 42)[2:n + 2].view(-1, 4).long()
    codes = m2[:, 0] + 2 * m2[:, 1] + 4 * m2[:, 2] + 8 * m2[:, 3]
    counts = torch.bincount(codes, minlength=16).double()
    assert float(((counts - e) ** 2 / e).sum()) < 44.3


@needs_cpu
def test_dropout_is_unbiased_like_torch():
    x = torch.rand(1 << 20) + 0.5
    y = O.dropout(x, 0.6, seed=3)
    # E[y] = E[x]: the std of the mean of y is about sqrt(p/(1-p)) * rms(x) / sqrt(n)
    tol = 5 * math.sqrt(0.6 / 0.4) * float(x.pow(2).mean().sqrt()) / math.sqrt(x.numel())
    assert abs(float(y.mean()) - float(x.mean())) < tol
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.4, rtol=1e-6)


# --------------------------------------------------------------------------- autograd, opcheck
@pytest.mark.parametrize("name", ["reference", pytest.param("cpu", marks=needs_cpu)])
def test_gradcheck_and_gradgradcheck(name):
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)

    def f(t):
        return O.dropout(t, 0.35, seed=11, backend=name)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    # the gradient is the same mask, scaled
    y = f(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, (y != 0).double() / 0.65)


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    # a plain kernel (graphode/ops/dropout.py differentiates it), as every custom op of _C
    x = torch.randn(6, 9, dtype=dtype)
    torch.library.opcheck(torch.ops.graphode.dropout.default, (x, 0.3, 123))


@needs_cpu
def test_seeded_runs_reproduce_and_seeds_differ():
    x = torch.randn(1000)
    torch.manual_seed(5)
    a = O.dropout(x, 0.5)
    torch.manual_seed(5)
    b = O.dropout(x, 0.5)
    c = O.dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert torch.equal(O.dropout(x, 0.5, training=False), x)
    assert torch.equal(O.dropout(x, 0.0), x)
    assert torch.equal(O.dropout(x, 1.0), torch.zeros_like(x))


@needs_cpu
def test_errors():
    with pytest.raises(ValueError, match="dropout probability"):
        O.dropout(torch.randn(3), 1.5)
    with pytest.raises(ValueError, match="floating"):
        O.dropout(torch.arange(3), 0.5)
    with pytest.raises(RuntimeError, match="graphode::dropout.*float32 and float64"):
        O.dropout(torch.randn(3).half(), 0.5, backend="cpu")
    with pytest.raises(RuntimeError, match="graphode::dropout: p must be in"):
        torch.ops.graphode.dropout(torch.randn(3), 1.0, 0)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.graphode.dropout(torch.randn(4, 3).t(), 0.5, 0)
