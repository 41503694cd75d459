"""Distributed: GRAND-nl forward + adjoint backward on the 1M-node / 10M-edge graph
cut into parts, one process (rank) per part, against the single process.

    make bench-dist          # = GRAPHODE_BENCH_DIST=1 pytest bench/test_bench_distributed.py --benchmark-only -s

The workload is the scale benchmark's (``test_bench_scale.py``): the graph
``power_law_graph(1_000_000, 10_000_000, seed=0)`` with self loops, F = 64
random features, 16 random labels, ``GRAND(variant="nl", adjoint=True)`` with
hidden 64, H = 4 heads, attention dim 64, rk4 with one step on [0, 1] (4
evaluations forward, 4 adjoint evaluations backward), no dropout,
cross-entropy over all nodes.

Its sources are uniform, so every part needs most of the other parts' nodes
(halo ≈ 2.6x the owned nodes with 4 parts): the halo tensors are nearly
whole-graph size on every rank.  For contrast the same runs (single process
and 4 ranks) are made on a graph with locality, the 8-connected 1000 x 1000
grid (1M nodes, ~8M edges), whose halos are small.

1. Partitions (``test_dist_partitions``): METIS (``pymetis``) and random
   parts, 2 and 4 of them: edge cut, halo sizes, METIS time.  The METIS parts
   are saved with each part's features and labels (what a rank reads).
2. The single process (``test_dist_single``): ``GRAND`` on the whole graph
   (not a ``DistGraph``), 2 threads; its loss and gradients are kept.
3. 2 and 4 ranks (``test_dist_ranks``): ``graphode.distributed.launch.run_local``
   starts them with one thread each (on this 2-core machine 4 ranks share 2
   cores); each loads only its part, runs the same model and reports its
   times, NFE, peak RSS during forward+backward and halo bytes.  Correctness
   first: the loss and every parameter gradient (summed over ranks) equal the
   single process's (relative 1e-3).

Reported (``bench/results/distributed.json``, rendered by ``bench/distributed_report.py``): the edge cut of METIS and of
random parts and their ratio, halo bytes per evaluation, time per
evaluation at 1, 2 and 4 processes, and each rank's peak memory against the
single process (goal: at most 1/3 with 4 parts).

Runs at full size only with ``GRAPHODE_BENCH_DIST=1`` (it needs ~15 min and
up to ~12 GB); at smoke size it always runs (2 ranks).  Timeouts:
``GRAPHODE_BENCH_DIST_TIMEOUT`` (default 1800 s per case).
"""
from __future__ import annotations

import json
import os
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import _benchutil as bu

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distributed_report as rpt  # noqa: E402

NODES, EDGES = bu.pick((1_000_000, 10_000_000), (4_000, 40_000))
GRID = bu.pick(1000, 60)  # side of the 8-connected grid (a graph with locality: small halos)
GRAPHS = bu.pick(("power-law", "grid"), ("power-law",))
FEATURES, HIDDEN, HEADS, ATT_DIM, CLASSES = 64, 64, 4, 64, 16
T, STEPS = 1.0, 1
PROCS = bu.pick((2, 4), (2,))
TIMEOUT = float(os.environ.get("GRAPHODE_BENCH_DIST_TIMEOUT", "1800"))
FULL_ENABLED = os.environ.get("GRAPHODE_BENCH_DIST") == "1"

pytestmark = pytest.mark.skipif(not bu.smoke() and not FULL_ENABLED,
                                reason="the distributed bench runs with `make bench-dist` (GRAPHODE_BENCH_DIST=1)")


def _dirs(graph: str = "power-law"):
    base = os.path.join(bu.cache_dir(), f"dist_{NODES}_{EDGES}" if graph == "power-law" else f"dist_grid{GRID}")
    os.makedirs(base, exist_ok=True)
    return base


def part_dir(method: str, parts: int, graph: str = "power-law") -> str:
    return os.path.join(_dirs(graph), f"{method}{parts}")


def load_graph(graph: str, nodes: int = NODES, edges: int = EDGES, side: int = GRID):
    """The issue's power-law graph (sources uniform: every part needs most nodes) or an
    8-connected ``side x side`` grid (neighbours nearby: small halos)."""
    if graph == "power-law":
        return bu.power_law_graph_cached(nodes, edges, seed=0)
    from graphode import grid_graph

    return grid_graph(side, side, connectivity=8)


def build(graph, seed=0):
    from graphode.models import GRAND

    torch.manual_seed(seed)
    model = GRAND(FEATURES, CLASSES, graph, variant="nl", hidden_dim=HIDDEN, heads=HEADS, attention_dim=ATT_DIM,
                  method="rk4", step_size=T / STEPS, time=T, adjoint=True, input_dropout=0.0, dropout=0.0)
    with torch.no_grad():  # away from the near-uniform initial attention (as the scale check does)
        g = torch.Generator().manual_seed(seed + 1)
        for p in model.attention.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def data(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, FEATURES, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


# --------------------------------------------------------------------------- workers
def partition_worker(emit, nodes, edges, out_dir, graph="power-law", side=GRID, parts_list=(2, 4),
                     methods=("metis", "random")):
    from graphode.distributed import partition_graph, save_partition

    g = load_graph(graph, nodes, edges, side)
    x, y = data(g.num_nodes)
    for method in methods:
        for parts in parts_list:
            t0 = time.perf_counter()
            p = partition_graph(g, parts, method=method, seed=0)
            secs = time.perf_counter() - t0
            s = p.summary()
            d = os.path.join(out_dir, f"{method}{parts}")
            if method == "metis" and not os.path.exists(os.path.join(d, "meta.json")):
                save_partition(p, d, node_data={"x": x, "y": y})
            emit(dict(kind="partition", graph=graph, partition_s=secs, **{k: v for k, v in s.items()}))
            del p


def single_worker(emit, nodes, edges, grads_path, graph="power-law", side=GRID):
    g = load_graph(graph, nodes, edges, side)
    model = build(g)
    x, y = data(g.num_nodes)
    with bu.PeakRSS() as m:
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, reduction="sum") / g.num_nodes
        fwd = time.perf_counter() - t0
        nfe = model.nfe
        t1 = time.perf_counter()
        loss.backward()
        bwd = time.perf_counter() - t1
    torch.save({n: p.grad for n, p in model.named_parameters()} | {"__loss__": loss.detach()}, grads_path)
    emit(dict(kind="run", graph=graph, nproc=1, threads=torch.get_num_threads(), forward_s=fwd, backward_s=bwd,
              nfe_forward=nfe, nfe_backward=model.nfe_backward, loss=float(loss), peak_rss_bytes=[m.peak],
              peak_extra_bytes=[m.extra], halo_bytes_forward=0, halo_exchanges_forward=0))


def rank_main(spec: dict) -> None:
    """One rank: load the part, run forward + backward, check against the single process, report."""
    import torch.distributed as dist

    from graphode.distributed import DistGraph, init_process_group
    from graphode.distributed.partition import load_part

    bu.set_malloc_mmap_threshold(65536)
    torch.set_num_threads(1)
    r, w = init_process_group()
    t0 = time.perf_counter()
    part = load_part(spec["partition"], r)
    x, y = part.node_data["x"], part.node_data["y"]
    part.node_data = {}
    g = DistGraph(part)
    del part
    model = build(g)
    setup = time.perf_counter() - t0
    dist.barrier()
    with bu.PeakRSS() as m:
        g.plan.reset_stats()
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, reduction="sum") / spec["nodes"]
        fwd = time.perf_counter() - t1
        stats_fwd = dict(g.plan.stats)
        nfe = model.nfe
        t2 = time.perf_counter()
        loss.backward()
        bwd = time.perf_counter() - t2
    # correctness: the summed loss and gradients are the single process's
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()] + [loss.detach().reshape(1)])
    dist.all_reduce(flat)
    ref = torch.load(spec["grads"], weights_only=True)
    want = torch.cat([ref[n].reshape(-1) for n in names] + [ref["__loss__"].reshape(1)])
    err = float((flat - want).abs().max() / want.abs().max())
    rec = dict(rank=r, nproc=w, graph=spec["graph"], setup_s=setup, forward_s=fwd, backward_s=bwd,
               nfe_forward=nfe, nfe_backward=model.nfe_backward, peak_rss_bytes=m.peak, peak_extra_bytes=m.extra,
               owned=g.num_nodes, halo=g.num_halo, edges=g.num_edges, check_rel_err=err,
               halo_bytes_forward=stats_fwd["forward_bytes_received"],
               halo_exchanges_forward=stats_fwd["forward_exchanges"])
    with open(os.path.join(spec["out"], f"rank{r}.json"), "w") as f:
        json.dump(rec, f)
    dist.destroy_process_group()


# --------------------------------------------------------------------------- benchmarks
CASES = [("power-law", p) for p in PROCS] + [("grid", max(PROCS)) for _ in GRAPHS[1:]]


@pytest.mark.parametrize("graph", GRAPHS)
def test_dist_partitions(benchmark, graph):
    pytest.importorskip("pymetis")
    benchmark.group = "distributed: partitions"
    kw = dict(nodes=NODES, edges=EDGES, out_dir=_dirs(graph), graph=graph)
    if graph == "grid":  # only what the 4-rank run needs
        kw.update(parts_list=(max(PROCS),))
    r = bu.run_worker(f"{os.path.abspath(__file__)}:partition_worker", kw, threads=2,
                      mem_limit=bu.memory_limit_bytes(), timeout=TIMEOUT)
    if r.status != "ok":
        pytest.fail(f"partition worker ({graph}): {r.status}: {r.error}")
    rows = [x for x in r.records if x.get("kind") == "partition"]
    for row in rows:
        REPORT.add(**row)
    cut = {(x["method"], x["num_parts"]): x["edge_cut"] for x in rows}
    p = max(PROCS)
    assert cut[("metis", p)] < cut[("random", p)], cut
    bu.record_external(benchmark, [x["partition_s"] for x in rows if x["method"] == "metis"])
    benchmark.extra_info.update(rows=rows)


@pytest.mark.parametrize("graph", GRAPHS)
def test_dist_single(benchmark, graph):
    benchmark.group = f"distributed: GRAND-nl adjoint fwd+bwd, {graph}"
    r = bu.run_worker(f"{os.path.abspath(__file__)}:single_worker",
                      dict(nodes=NODES, edges=EDGES, grads_path=os.path.join(_dirs(graph), "single_grads.pt"),
                           graph=graph),
                      threads=2, mem_limit=bu.memory_limit_bytes(), timeout=TIMEOUT)
    if r.status != "ok":
        pytest.fail(f"single-process worker ({graph}): {r.status}: {r.error}")
    rec = [x for x in r.records if x.get("kind") == "run"][-1]
    REPORT.add(**rec, status="ok")
    bu.record_external(benchmark, [rec["forward_s"] + rec["backward_s"]])
    benchmark.extra_info.update(rec)


@pytest.mark.parametrize("graph,nproc", CASES)
def test_dist_ranks(benchmark, tmp_path, graph, nproc):
    from graphode.distributed.launch import DistributedJobError, run_local

    benchmark.group = f"distributed: GRAND-nl adjoint fwd+bwd, {graph}"
    pdir = part_dir("metis", nproc, graph)
    grads = os.path.join(_dirs(graph), "single_grads.pt")
    if not os.path.exists(os.path.join(pdir, "meta.json")) or not os.path.exists(grads):
        pytest.skip("run test_dist_partitions and test_dist_single first (same session)")
    out = tmp_path / "out"
    out.mkdir()
    n = load_meta_nodes(pdir)
    spec = dict(partition=pdir, grads=grads, out=str(out), nodes=n, graph=graph)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = bu.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # address space per rank (RLIMIT_AS counts virtual memory, well above the resident peak)
    limit = bu.memory_limit_bytes() // 2
    t0 = time.perf_counter()
    status, error = "ok", ""
    try:
        run_local([sys.executable, os.path.abspath(__file__), "rank", json.dumps(spec)], nproc, timeout=TIMEOUT,
                  collective_timeout=TIMEOUT, env=env, echo_rank0=False, log_dir=str(tmp_path / "logs"),
                  mem_limit=limit)
    except DistributedJobError as e:
        status, error = ("oom" if bu.is_oom_error(RuntimeError(e.stderr_tail)) else "error"), str(e)
    wall = time.perf_counter() - t0
    recs = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)
            if (out / f"rank{r}.json").exists()]
    row = dict(kind="run", graph=graph, nproc=nproc, threads=1, status=status, error=error[-500:], wall_s=wall,
               mem_limit_bytes=limit)
    if recs:
        row.update(
            forward_s=max(x["forward_s"] for x in recs), backward_s=max(x["backward_s"] for x in recs),
            setup_s=max(x["setup_s"] for x in recs), nfe_forward=recs[0]["nfe_forward"],
            nfe_backward=recs[0]["nfe_backward"], peak_rss_bytes=[x["peak_rss_bytes"] for x in recs],
            peak_extra_bytes=[x["peak_extra_bytes"] for x in recs], owned=[x["owned"] for x in recs],
            halo=[x["halo"] for x in recs], halo_bytes_forward=sum(x["halo_bytes_forward"] for x in recs),
            halo_exchanges_forward=recs[0]["halo_exchanges_forward"],
            check_rel_err=max(x["check_rel_err"] for x in recs))
    REPORT.add(**row)
    if status != "ok":
        pytest.fail(f"{nproc} ranks ({graph}): {error}")
    assert row["check_rel_err"] <= 1e-3, f"distributed loss/gradients differ from one process: {row['check_rel_err']}"
    bu.record_external(benchmark, [row["forward_s"] + row["backward_s"]])
    benchmark.extra_info.update(row)


def load_meta_nodes(pdir: str) -> int:
    from graphode.distributed import load_meta

    return int(load_meta(pdir)["num_nodes"])


REPORT = bu.Report("distributed", "Distributed: GRAND-nl across ranks, 1M nodes (power-law 10M edges; grid)",
                   command="make bench-dist")

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "rank":
    rank_main(json.loads(sys.argv[2]))
