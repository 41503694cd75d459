"""``spmm`` on the CPU: graphode against its peers (``bench/peers.py``), in one run
(graphs, sizes, providers, checks, timing and memory: ``bench/_opbench.py``).

    .venv/bin/python -m pytest bench/test_bench_spmm.py --benchmark-only -q
"""
import _opbench as ob

REPORT, test_bench = ob.bench_test("spmm")
