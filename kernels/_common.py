"""Shared helpers of the Triton backend: block sizes, accumulator dtypes, launch checks.

Execution mode
--------------
Triton decides once per process, when ``triton`` is imported, whether
``@triton.jit`` functions (ours *and* triton's own ``tl.zeros``/``tl.sum``...)
are compiled or run by its numpy interpreter (``TRITON_INTERPRET=1``).  So:

* CUDA tensors run the compiled kernels (the normal case);
* CPU tensors run only in interpreter mode, which is how the test-suite checks
  the kernels on a machine without a GPU.  Launching on CPU tensors in a process
  where triton was imported without ``TRITON_INTERPRET=1`` raises a clear error
  instead of crashing inside the driver.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: True when this process runs @triton.jit functions in the interpreter.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Upper bound on the number of elements of the largest register tile of a
#: program (edges x heads x max(D, F-block)).  4096 fp32 values over 4 warps is
#: 32 registers per thread, which leaves room for the accumulators.
TILE_ELEMS = 4096
#: Feature-block width: F is split over grid axis 1 in blocks of this many
#: columns (a power of two).
MAX_BLOCK_F = 128
#: Edge-block bounds.  The interpreter pays per loop iteration, not per lane,
#: so small blocks only cost time there; on GPU 16..64 edges per step keep
#: enough loads in flight.
MIN_BLOCK_E = 4
MAX_BLOCK_E = 64


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else triton.next_power_of_2(int(n))


def block_e(*widths: int) -> int:
    """Edges per loop step so that ``BLOCK_E * prod(widths) <= TILE_ELEMS``."""
    w = 1
    for x in widths:
        w *= max(1, int(x))
    be = max(1, TILE_ELEMS // w)
    be = 1 << (be.bit_length() - 1)  # floor to a power of two
    return max(MIN_BLOCK_E, min(MAX_BLOCK_E, be))


def block_f(F: int) -> int:
    return min(next_pow2(F), MAX_BLOCK_F)


def acc_dtype(dtype: torch.dtype):
    """Accumulator type: float64 for float64 inputs, float32 for everything else
    (float16/bfloat16 are loaded, widened to float32, and rounded once at the store)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def num_warps(tile: int) -> int:
    return 2 if tile <= 512 else (4 if tile <= 4096 else 8)


def check_launch(t: torch.Tensor) -> None:
    """Raise a clear error when the tensors cannot run the kernels in this process."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu":
        if not INTERPRET:
            raise RuntimeError(
                "graphode.kernels: CPU tensors run the Triton kernels only in interpreter mode, and "
                "triton was imported without TRITON_INTERPRET=1; set it in the environment before "
                "importing triton/graphode.kernels, or use backend='cpu'/'reference' for CPU tensors"
            )
        return
    raise RuntimeError(f"graphode.kernels: unsupported device {t.device} (CUDA tensors, or CPU under TRITON_INTERPRET=1)")


@triton.jit
def row_range(ptr, chunks, n_chunks, pid, CHUNK, MODE: tl.constexpr):
    """``(node, start, end, light)``: what program ``pid`` of a row kernel works on.

    ``MODE == 0``: row ``node = pid``, its edges ``ptr[node] .. ptr[node + 1]``;
    a heavy row (more than ``CHUNK`` edges) gets an empty range and ``light``
    False (it stores nothing: its chunks run with ``MODE != 0``, see ``_plan``).
    ``MODE != 0``: chunk ``pid`` of ``chunks`` (rows ``node``, ``start``, ``end``);
    ``light`` True.  Kernels build store masks as ``x < tl.where(light, X, 0)``
    (a scalar bool and-ed into a block mask trips the interpreter)."""
    if MODE == 0:
        node = pid
        start = tl.load(ptr + node)
        end = tl.load(ptr + node + 1)
        light = (end - start) <= CHUNK
        end = tl.where(light, end, start)
    else:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
        light = start <= end
    return node, start, end, light
