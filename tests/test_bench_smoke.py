"""Smoke test of the benchmark suite: ``pytest bench/ --benchmark-only`` at the
smallest size (``GRAPHODE_BENCH_SIZE=smoke``), in a subprocess, so that the
suite keeps working: every benchmark's correctness check, the subprocess
workers (peak memory, memory limits), the reports and the scaling plot.
Results go to a temporary directory; nothing is saved for comparison."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.bench


def test_bench_suite_smoke(tmp_path):
    pytest.importorskip("pytest_benchmark")
    results = tmp_path / "results"
    env = dict(os.environ, GRAPHODE_BENCH_SIZE="smoke", GRAPHODE_BENCH_RESULTS=str(results),
               GRAPHODE_BENCH_CACHE=str(tmp_path / "cache"), GRAPHODE_BENCH_OP_THREADS="1",
               GRAPHODE_BENCH_THREADS="1", GRAPHODE_BENCH_MEM_LIMIT_GB="4")
    for k in ("GRAPHODE_BENCH_ROUNDS", "GRAPHODE_BENCH_LAYERS", "GRAPHODE_BENCH_T", "GRAPHODE_BENCH_STRICT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "pytest", "bench", "-q", "-x", "--benchmark-only", "-p", "no:cacheprovider",
           "--benchmark-storage", f"file://{tmp_path / 'storage'}", "-o", "addopts="]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = (p.stdout + p.stderr)[-6000:]
    assert p.returncode == 0, tail
    for name in ("ops", "scaling", "scale", "solvers", "grand", "gcn"):
        assert (results / f"{name}.md").is_file(), f"no {name}.md report\n{tail}"
        assert (results / f"{name}.json").is_file(), f"no {name}.json report\n{tail}"
    assert (results / "scaling.png").stat().st_size > 1000
    scale = (results / "scale.md").read_text()
    assert "| cpu (fused) |" in scale and "| ok |" in scale, scale
