"""The benchmark suite runs as plain tests: ``pytest bench --benchmark-disable`` at the
smallest size (``GRAPHODE_BENCH_SIZE=smoke``), in a subprocess, runs every case once
-- every correctness check against the reference, the subprocess workers (peak
memory, memory limits), the reports -- and times nothing.  The reports go to a
temporary directory and are rendered by ``bench/report.py``; nothing is saved for
comparison and the committed ``bench/results`` are not touched."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = ("spmm", "edge_attention", "attention_diffusion", "scaling", "scale", "solvers", "grand", "gcn")

pytestmark = pytest.mark.bench


def test_bench_suite_runs_as_plain_tests(tmp_path):
    pytest.importorskip("pytest_benchmark")
    results = tmp_path / "results"
    env = dict(os.environ, GRAPHODE_BENCH_SIZE="smoke", GRAPHODE_BENCH_RESULTS=str(results),
               GRAPHODE_BENCH_CACHE=str(tmp_path / "cache"), GRAPHODE_BENCH_OP_THREADS="1",
               GRAPHODE_BENCH_THREADS="1", GRAPHODE_BENCH_MEM_LIMIT_GB="4")
    for k in ("GRAPHODE_BENCH_ROUNDS", "GRAPHODE_BENCH_LAYERS", "GRAPHODE_BENCH_STRICT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "pytest", "bench", "-q", "-x", "--benchmark-disable", "-p", "no:cacheprovider",
           "-o", "addopts="]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = (p.stdout + p.stderr)[-6000:]
    assert p.returncode == 0, tail
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import report

        _check_reports(report, results, tail)
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def _check_reports(report, results, tail):
    for name in REPORTS:
        path = results / f"{name}.json"
        assert path.is_file(), f"no {name}.json report\n{tail}"
        data = json.loads(path.read_text())
        assert data["rows"] and data["meta"]["benchmark_disabled"] is True
        assert not any(r.get("timed") for r in data["rows"]), f"{name}: a case was timed under --benchmark-disable"
        text = report.render(data)
        assert "not a measurement" in text, text[:500]
    scale = (results / "scale.json").read_text()
    assert '"status": "ok"' in scale and '"backend": "cpu"' in scale, scale[:2000]
    assert (results / "scaling.png").stat().st_size > 1000


def test_bench_cli_needs_a_checkout(monkeypatch, capsys, tmp_path):
    """Without bench/ beside the package, ``graphode bench --quick`` says so in one line, exit 2."""
    from graphode import cli

    monkeypatch.setattr(cli, "_bench_dir", lambda: str(tmp_path / "bench"))
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "source checkout" in err, err
