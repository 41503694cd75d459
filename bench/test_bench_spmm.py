"""``spmm`` on the CPU: graphode against its peers (``bench/peers.py``), in one run.

    .venv/bin/python -m pytest bench/test_bench_spmm.py --benchmark-only -q

Graphs (``graphode.power_law_graph``, self loops): Cora-sized (2,708 nodes),
PubMed-sized (19,717 nodes) and 100k nodes / ~1M edges; H = 4, D = 16, F = 64,
float32, ``GRAPHODE_BENCH_OP_THREADS`` threads (default 2).  Providers, modes,
checks, timing and memory: ``bench/_opbench.py``.  Results:
``bench/results/spmm.json``, rendered by ``bench/report.py``.
"""
import pytest

import _benchutil as bu
import _opbench as ob

OP = "spmm"
CASES = ob.cases(OP)
REPORT = bu.Report(OP, "spmm (CPU): graphode vs its peers", command="python -m pytest bench/test_bench_spmm.py --benchmark-only",
                   sizes=ob.SIZES, rounds=ob.ROUNDS, H=ob.H, D=ob.D, F=ob.F)


@pytest.mark.parametrize("size,provider,mode", CASES, ids=[ob.case_id(c) for c in CASES])
def test_bench(benchmark, size, provider, mode):
    ob.run_case(benchmark, REPORT, size, OP, provider, mode)
