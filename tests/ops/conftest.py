"""Fixtures of the op tests: the compiled backends that can run here.

A test that takes the ``backend`` fixture runs once per backend under test
(``BACKENDS``), each a ``Backend(name, device, ...)``:

* ``cpu``: graphode._C's CPU kernels, on CPU tensors;
* ``cuda``: graphode._C's CUDA kernels (where torch has CUDA and a GPU is present);
* ``triton`` and ``triton-split``: the Triton kernels, compiled on a GPU or
  run by Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set by
  tests/conftest.py when there is no GPU).  ``triton-split`` lowers the split
  size so that long rows take the chunk-and-combine path; under the
  interpreter both shrink the block sizes so that rows span several edge
  blocks and features several feature blocks.

Markers:

* ``@pytest.mark.graphs(names...)`` with a ``graph`` argument: the test runs over
  those graphs of ``cases.GRAPHS``, except the large ones on interpreted
  backends (the interpreter executes every program in Python);
* ``@pytest.mark.split_path``: the test also runs on ``triton-split`` (others
  do not: the split size changes nothing else);
* ``@pytest.mark.native``: the test runs on graphode._C's backends only;
* ``@pytest.mark.not_interpreted(predicate)``: parameter sets (a dict of the
  test's parameters) for which the predicate holds are left out on
  interpreted backends, to keep the interpreter's share of ``make test`` small.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from graphode import ops

from cases import GRAPHS, get_graph


@dataclass(frozen=True)
class Backend:
    id: str
    name: str  # the graphode.ops backend name
    device: str
    interpreted: bool = False
    split: Optional[int] = None  # Triton split size (None: the default)

    def __str__(self) -> str:
        return self.id


def _backends():
    out = []
    available = ops.available_backends()
    if "cpu" in available:
        out.append(Backend("cpu", "cpu", "cpu"))
    gpu = torch.cuda.is_available()
    if gpu and "cuda" in available:
        out.append(Backend("cuda", "cuda", "cuda"))
    if "triton" in available and (gpu or os.environ.get("TRITON_INTERPRET") == "1"):
        interp = not gpu
        out.append(Backend("triton", "triton", "cuda" if gpu else "cpu", interp))
        out.append(Backend("triton-split", "triton", "cuda" if gpu else "cpu", interp, split=8 if interp else 16))
    return out


BACKENDS = _backends()
NATIVE = [b for b in BACKENDS if b.name in ("cpu", "cuda")]


def pytest_configure(config):
    config.addinivalue_line("markers", "graphs(*names): the graphs of tests/ops/cases.py a backend test runs on")
    config.addinivalue_line("markers", "native: a backend test of graphode._C only (cpu, cuda)")
    config.addinivalue_line("markers", "split_path: a backend test that also runs on triton-split")
    config.addinivalue_line("markers", "not_interpreted(predicate): parameter sets left out under the interpreter")


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    backends = NATIVE if metafunc.definition.get_closest_marker("native") else BACKENDS
    if not metafunc.definition.get_closest_marker("split_path"):
        backends = [b for b in backends if b.split is None]
    marker = metafunc.definition.get_closest_marker("graphs")
    if marker is not None and "graph" in metafunc.fixturenames:
        pairs = [(b, gname) for b in backends for gname in marker.args if not (b.interpreted and GRAPHS[gname].large)]
        metafunc.parametrize(("backend", "graph"), pairs, indirect=True, ids=[f"{b}-{gname}" for b, gname in pairs])
    else:
        metafunc.parametrize("backend", backends, indirect=True, ids=str)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("not_interpreted")
        params = getattr(getattr(item, "callspec", None), "params", {})
        b = params.get("backend")
        if marker is not None and isinstance(b, Backend) and b.interpreted and marker.args[0](params):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def backend(request, monkeypatch):
    b = request.param
    if b.name == "triton":
        import graphode.kernels as K
        from graphode.kernels import _common

        if b.interpreted:
            monkeypatch.setattr(_common, "MAX_BLOCK_E", 8)
            monkeypatch.setattr(_common, "MAX_BLOCK_F", 8)
        old = K.get_split_edges()
        K.set_split_edges(b.split or 1024)
        yield b
        K.set_split_edges(old)
    else:
        yield b


@pytest.fixture
def graph(request, backend):
    return get_graph(request.param, backend.device)
