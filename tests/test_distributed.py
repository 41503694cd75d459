"""graphode.distributed: partitions, halo exchange, distributed solving and training.

Single-process tests check the partition against the graph it cuts (every edge
once, halos and send maps consistent, files read back with
``weights_only=True``).  Multi-process tests start 2 or 4 Gloo processes on
localhost with :func:`graphode.distributed.launch.run_local` (each test starts
and ends its own processes; the job and every collective have a timeout) and
run ``tests/_dist_checks.py`` in every rank: each rank computes the
single-process result on the whole graph and compares its part of the
distributed result with it (ops forward/backward, a dopri5 solve's steps and
NFE, GRAND forward and adjoint gradients, one training epoch's gradients).
"""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

import graphode
from graphode import ops
from graphode.distributed import DistGraph, load_meta, load_part, partition_graph, save_partition
from graphode.distributed import partition as partmod
from graphode.distributed.launch import DistributedJobError, run_local

HERE = os.path.dirname(os.path.abspath(__file__))
JOB_TIMEOUT = 900.0  # seconds for a whole multi-process job (the shared machine can be very slow)
COLLECTIVE_TIMEOUT = 180.0

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- partitions
def _edges_of_part(p):
    """Original (source, target) of each local edge."""
    ids = torch.cat([p.nodes, p.halo])
    row = torch.repeat_interleave(torch.arange(p.num_owned), p.rowptr.diff())
    return ids[p.col], p.nodes[row]


@pytest.mark.parametrize("method", ["metis", "random", "contiguous"])
def test_partition_covers_every_edge_once(method):
    g = graphode.power_law_graph(500, 3000, seed=2)
    P = partition_graph(g, 3, method=method, seed=1)
    src, dst, eids = [], [], []
    owned = torch.zeros(g.num_nodes, dtype=torch.int64)
    for r in range(3):
        p = P.part(r)
        owned[p.nodes] += 1
        s, d = _edges_of_part(p)
        src.append(s), dst.append(d), eids.append(p.edge_ids)
        # halo = the sources owned elsewhere, each once; owned sources are local ids < n_own
        assert torch.equal(torch.sort(p.halo).values, torch.unique(s[p.col >= p.num_owned]))
        assert not bool(torch.isin(p.halo, p.nodes).any())
        # each row's edges are sorted by local source id (a valid Graph)
        p.local_graph()
        loc = p.local_graph()
        assert torch.equal(loc.rowptr[: p.num_owned + 1], p.rowptr)
    assert bool((owned == 1).all()), "every node is owned by exactly one part"
    e = torch.cat(eids)
    assert torch.equal(torch.sort(e).values, torch.arange(g.num_edges)), "every edge lies in exactly one part"
    # the local edges are the graph's edges
    assert torch.equal(torch.cat(src), g.col[e]) and torch.equal(torch.cat(dst), g.row[e])
    s = P.summary()
    assert s["edge_cut"] == sum(P.part(r).num_cut_edges for r in range(3))
    assert s["halo_nodes"] == [P.part(r).num_halo for r in range(3)]


def test_send_maps_match_receive_maps():
    g = graphode.power_law_graph(400, 2500, seed=4)
    P = partition_graph(g, 4, method="random", seed=3)
    parts = [P.part(r) for r in range(4)]
    for r, pr in enumerate(parts):
        recv = torch.split(pr.halo, pr.recv_counts.tolist())
        for q, pq in enumerate(parts):
            sent = torch.split(pq.send_index, pq.send_counts.tolist())[r]
            # what q sends to r, in order, is r's halo block from q
            assert torch.equal(pq.nodes[sent], recv[q])
        assert int(pr.recv_counts[r]) == 0 and int(pr.send_counts[r]) == 0


def test_metis_cuts_fewer_edges_than_random_on_a_grid():
    pytest.importorskip("pymetis")
    g = graphode.grid_graph(40, 40)
    m = partition_graph(g, 4, method="metis").summary()
    r = partition_graph(g, 4, method="random").summary()
    assert m["method"] == "metis"
    # a 40x40 grid cut into 4 blocks cuts ~2 * 2 * 40 * 2 = 320 directed edges; random cuts ~3/4 of 6240
    assert m["edge_cut"] < 400 < 4000 < r["edge_cut"]


def test_metis_missing_falls_back_to_random(monkeypatch):
    monkeypatch.setattr(partmod, "have_metis", lambda: False)
    g = graphode.power_law_graph(100, 500, seed=0)
    with pytest.warns(RuntimeWarning, match="pymetis is not installed"):
        P = partition_graph(g, 2, method="metis")
    assert P.method == "random"


def test_contiguous_parts_balance_edges():
    g = graphode.power_law_graph(2000, 20000, seed=0)
    s = partition_graph(g, 4, method="contiguous", balance="edges").summary()
    assert max(s["local_edges"]) < 1.2 * g.num_edges / 4


def test_partition_files_round_trip(tmp_path):
    g = graphode.power_law_graph(300, 1500, seed=5)
    w = torch.rand(g.num_edges)
    x = torch.randn(g.num_nodes, 3)
    P = partition_graph(g, 2, method="random")
    save_partition(P, str(tmp_path), edge_weight=w, node_data={"x": x}, extra={"note": "t"})
    meta = load_meta(str(tmp_path))
    assert meta["num_parts"] == 2 and meta["node_data"] == ["x"] and meta["extra"] == {"note": "t"}
    for r in range(2):
        p = load_part(str(tmp_path), r)
        ref = P.part(r)
        for k in ("rowptr", "col", "nodes", "halo", "send_index", "send_counts", "recv_counts", "edge_ids"):
            assert torch.equal(getattr(p, k), getattr(ref, k)), k
        assert torch.equal(p.edge_weight, w[p.edge_ids]) and torch.equal(p.node_data["x"], x[p.nodes])
    # each part file holds plain tensors: it loads with weights_only=True
    d = torch.load(tmp_path / "part-0.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in d.values())


def test_partition_errors(tmp_path):
    g = graphode.power_law_graph(50, 200, seed=0)
    with pytest.raises(ValueError, match="unknown partition method"):
        partition_graph(g, 2, method="spectral")
    with pytest.raises(ValueError, match="cannot cut a graph of 50 nodes into 51 parts"):
        partition_graph(g, 51, method="random")
    with pytest.raises(FileNotFoundError, match="no partition at"):
        load_part(str(tmp_path), 0)
    save_partition(partition_graph(g, 2, method="random"), str(tmp_path))
    with pytest.raises(ValueError, match="has 2 parts; there is no part 2"):
        load_part(str(tmp_path), 2)
    (tmp_path / "part-1.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read partition file .*part-1.pt"):
        load_part(str(tmp_path), 1)


# --------------------------------------------------------------------------- one process
def test_one_part_equals_the_graph():
    """With one part there is no halo and the DistGraph ops are the plain ops."""
    g = graphode.power_law_graph(200, 1200, seed=1)
    p = partition_graph(g, 1, method="metis").part(0)
    dg = DistGraph(p)
    assert dg.num_halo == 0 and dg.num_nodes == g.num_nodes
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 200, 2, 3, dtype=torch.float64, generator=gen)
    x = torch.randn(200, 4, dtype=torch.float64, generator=gen)
    perm = p.nodes
    y = ops.attention_diffusion(dg, q[perm], k[perm], x[perm])
    torch.testing.assert_close(y, ops.attention_diffusion(g, q, k, x)[perm], rtol=1e-12, atol=1e-12)


def test_distgraph_rejects_wrong_rows():
    g = graphode.power_law_graph(100, 500, seed=0)
    dg = DistGraph(partition_graph(g, 1, method="random").part(0))
    with pytest.raises(ValueError, match="has 99 rows but rank 0 owns 100 nodes"):
        ops.spmm(dg, torch.ones(dg.num_edges), torch.ones(99, 2))


def test_distributed_solver_rejects_non_reducing_norms():
    from graphode.distributed import solvers as ds

    f = lambda t, y: -y  # noqa: E731
    y0, t = torch.ones(3), torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="a custom norm is not supported across ranks"):
        ds.odeint(f, y0, t, options={"norm": lambda x: x.abs().max()})
    with pytest.raises(ValueError, match="the controller's norm must reduce over ranks"):
        ds.odeint(f, y0, t, options={"controller": graphode.solvers.PIController(norm=graphode.solvers.rms_norm)})
    with pytest.raises(ValueError, match="method 'implicit_adams' is not supported across ranks"):
        ds.odeint(f, y0, t, method="implicit_adams")
    # one process: the reducing norm is the plain RMS norm
    torch.testing.assert_close(ds.odeint(f, y0, t), graphode.solvers.odeint(f, y0, t))


def test_grand_rejects_what_is_not_distributed():
    from graphode.models import GRAND

    g = graphode.power_law_graph(100, 500, seed=0)
    dg = DistGraph(partition_graph(g, 1, method="random").part(0))
    for kw, msg in ((dict(variant="nl-rw"), "GRAND-nl-rw / hard attention"),
                    (dict(variant="l", method="implicit_euler"), "method 'implicit_euler' is not supported across"),
                    (dict(variant="l", batch_norm=True), "batch_norm"),
                    (dict(variant="l", kinetic_energy=0.1), "the kinetic-energy / Jacobian regularisers")):
        with pytest.raises(ValueError, match="not supported on a distributed graph: " + msg.replace("(", r"\(")):
            GRAND(4, 2, dg, **kw)
    # row-local scores, and groups and shifts that span ranks, are supported
    GRAND(4, 2, dg, variant="nl", attention_score="cosine", attention_normalize="squareplus",
          attention_normalize_over="source")


def test_method_check_before_any_process_starts():
    """graphode train --nproc checks the config's methods with the distributed solvers'
    check (handed to GRAND's distributed_support: models do not import graphode.distributed)."""
    from graphode.distributed.train import check_config
    from graphode.errors import ConfigError

    with pytest.raises(ConfigError, match="grand-l across ranks: not supported: method 'explicit_adams' is not"):
        check_config("grand-l", {"method": "explicit_adams"})
    with pytest.raises(ConfigError, match="method 'implicit_euler' is not supported across ranks"):
        check_config("grand-nl", {"method": "dopri5", "adjoint": True, "adjoint_method": "implicit_euler"})
    check_config("grand-l", {"method": "rk4"})


# --------------------------------------------------------------------------- several processes
def _job(tmp_path, checks, nproc, method, collective_timeout=COLLECTIVE_TIMEOUT):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, GRAPHODE_TEST_OUT=str(out))
    run_local([sys.executable, os.path.join(HERE, "_dist_checks.py"), ",".join(checks), method], nproc,
              timeout=JOB_TIMEOUT, collective_timeout=collective_timeout, env=env, echo_rank0=False,
              log_dir=str(tmp_path / "logs"))
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    return reports


def _assert_reports(reports, checks):
    for rep in reports:
        for c in checks:
            assert rep.get(f"done {c}") is True, f"check {c} left no result"
        for k, v in rep.items():
            if isinstance(v, float):
                assert v <= 1e-4, (k, v)
            elif isinstance(v, list):
                assert v[0] == v[1], (k, v)


DEFAULT_2 = ["ops", "solve", "grand-nl", "grand-l-adjoint", "train-grand-l", "resume"]
DEFAULT_4 = ["ops", "solve", "grand-nl-adjoint", "train-gcn", "fit-grand-l-authors"]
ALL = ["ops", "solve", "grand-nl", "grand-l-adjoint", "grand-nl-adjoint", "grand-nl-adjoint-rk4", "grand-laplacian",
       "train-grand-l", "train-grand-nl-adjoint", "train-gcn", "train-grand-laplacian", "fit-grand-l-authors", "resume"]


def test_two_processes_match_one(tmp_path):
    """2 ranks, METIS parts: ops, dopri5 steps and NFE, GRAND-nl, GRAND-l adjoint, a GRAND-l training step,
    checkpoints and resume."""
    reports = _job(tmp_path, DEFAULT_2, 2, "metis")
    _assert_reports(reports, DEFAULT_2)
    for rep in reports:  # the halo really was exchanged
        assert rep["halo"]["halo"] > 0 and rep["halo"]["forward_bytes_received"] > 0
        assert rep["grand-l-adjoint-dopri5 nfe backward"][0] > 0


def test_four_processes_match_one(tmp_path):
    """4 ranks, random parts: ops, dopri5 steps and NFE, GRAND-nl adjoint, a GCN training step, two
    epochs of GRAND-l with the authors' attention and test integrator."""
    _assert_reports(_job(tmp_path, DEFAULT_4, 4, "random"), DEFAULT_4)


@pytest.mark.slow
@pytest.mark.parametrize("nproc,method", [(2, "random"), (4, "metis")])
def test_all_checks(tmp_path, nproc, method):
    _assert_reports(_job(tmp_path, ALL, nproc, method), ALL)


def test_failing_rank_ends_the_job(tmp_path):
    """The last rank raises; the others wait in a collective: the job ends at once with that rank's error."""
    with pytest.raises(DistributedJobError, match=r"rank 1 of 2 failed with exit status 1: .*deliberate failure"):
        _job(tmp_path, ["fail"], 2, "random")


@pytest.mark.slow
def test_hanging_rank_ends_the_job_at_the_collective_timeout(tmp_path):
    with pytest.raises(DistributedJobError, match=r"rank 0 of 2 failed .*\[1\] had not failed"):
        _job(tmp_path, ["hang"], 2, "random", collective_timeout=5)


def test_run_local_timeout(tmp_path):
    with pytest.raises(DistributedJobError, match="ran past its timeout of 1 s; ranks \\[0, 1\\]"):
        run_local([sys.executable, "-c", "import time; time.sleep(60)"], 2, timeout=1, echo_rank0=False,
                  log_dir=str(tmp_path))



# --------------------------------------------------------------------------- command line
def _cli(*args, timeout=JOB_TIMEOUT):
    import subprocess

    return subprocess.run([sys.executable, "-m", "graphode", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=os.path.dirname(HERE))


def test_train_nproc_cli(tmp_path):
    """`graphode train --nproc 2`: partitions Cora, trains in 2 ranks, rank 0 reports and writes --out."""
    out = tmp_path / "r.json"
    p = _cli("train", "--model", "gcn", "--dataset", "cora", "--nproc", "2", "--epochs", "2", "--no-progress",
             "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "partition of cora into 2 parts" in p.stdout
    assert p.stdout.count("run 1/1 seed 0:") == 1, p.stdout  # printed by rank 0 only
    res = json.loads(out.read_text())
    assert len(res["runs"]) == 1 and res["runs"][0]["epochs"] == 2 and 0.0 <= res["mean_test_acc"] <= 1.0


def test_train_nproc_cli_rejects_unsupported_models():
    p = _cli("train", "--model", "grand-nl-rw", "--dataset", "cora", "--nproc", "2", timeout=300)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == ["graphode train: error: model 'grand-nl-rw' cannot train across ranks; supported: "
                     "grand-l, grand-nl, grand-laplacian, gcn"], p.stderr
    q = _cli("train", "--model", "grand-nl", "--dataset", "cora", "--nproc", "2", "--set", "batch_norm=true",
             timeout=300)
    assert q.returncode == 2 and q.stderr.strip() == (
        "graphode train: error: grand-nl across ranks: not supported: batch_norm (its statistics are over all "
        "nodes)"), q.stderr


@pytest.mark.slow
def test_partition_cli_then_torchrun(tmp_path):
    """`graphode partition` then `torchrun ... -m graphode train --partition DIR` (env:// rendezvous)."""
    import subprocess

    d = tmp_path / "parts"
    p = _cli("partition", "--dataset", "cora", "--parts", "2", "--out", str(d))
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(x.name for x in d.iterdir()) == ["meta.json", "part-0.pt", "part-1.pt"]
    q = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "graphode", "train", "--model", "grand-l", "--dataset", "cora", "--partition", str(d),
                        "--epochs", "1", "--no-progress"], capture_output=True, text=True, timeout=JOB_TIMEOUT,
                       cwd=os.path.dirname(HERE), env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert q.returncode == 0, q.stderr[-3000:]
    assert "grand-l on cora (public split), 1 run(s)" in q.stdout


def test_partition_cli_writes_parts_and_rejects_bad_counts(tmp_path):
    d = tmp_path / "parts"
    p = _cli("partition", "--dataset", "cora", "--parts", "2", "--method", "random", "--out", str(d), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    meta = load_meta(str(d))
    assert meta["num_parts"] == 2 and meta["extra"]["dataset"] == "cora" and sum(meta["owned_nodes"]) == 2708
    part = load_part(str(d), 1)
    assert part.node_data["x"].shape == (part.num_owned, 1433)
    q = _cli("partition", "--dataset", "cora", "--parts", "0", "--out", str(tmp_path / "x"), timeout=300)
    assert q.returncode == 2 and q.stderr.strip() == "graphode partition: error: --parts must be >= 1, got 0"

