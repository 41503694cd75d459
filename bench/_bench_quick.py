"""``graphode bench --quick``: what graphode buys on this machine, at a glance.

Measures, in one process and on the same generated power-law graph:

* the machine's memory bandwidth with a STREAM-like triad ``a = b + s*c``;
* ``spmm`` (forward) on graphode's default backend against ``torch.sparse.mm``
  (CSR) and the native-torch composition (gather -> ``index_add_``, i.e. PyG's recipe);
* ``attention_diffusion`` forward+backward against the peers of ``bench/peers.py``
  (the composition, PyG softmax + CSR ``sparse.mm``, the GRAND authors' formulation);
* an RK4 solve against ``torchdiffeq`` when it is installed.

Every graphode result is checked against the reference before it is timed.
The full suite with memory figures and scaling curves is ``make bench``;
the timing, bandwidth, byte model and checking helpers are shared with it
(``bench/_benchutil.py``).  Lives in the checkout's ``bench/``: ``graphode bench
--quick`` (``graphode/cli.py``) loads it from there.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from _benchutil import best_time, check_close, op_bytes, stream_triad_gbps

__all__ = ["run_quick", "run_bench"]


def _row(name: str, t: float, base: float, gbs: float = None) -> str:
    extra = f"{gbs:8.1f}" if gbs is not None else " " * 8
    return f"  {name:<44s} {t * 1e3:10.2f} ms {base / t:8.2f}x {extra}"


def run_quick(num_nodes: int, num_edges: int, F: int, H: int, D: int, seed: int = 0) -> Iterator[str]:
    """Yield the report's lines as they are measured."""
    import graphode
    from graphode import ops
    from graphode.ops import reference as ref

    torch.manual_seed(seed)
    bw = stream_triad_gbps()
    yield (f"machine: {torch.get_num_threads()} threads, STREAM triad {bw:.1f} GB/s; "
                 f"backends: {', '.join(ops.available_backends())}")
    g = graphode.power_law_graph(num_nodes, num_edges, seed=seed)
    N, E = g.num_nodes, g.num_edges
    yield (f"graph: power law, N={N}, E={E}, F={F}, H={H}, D={D}")
    w = torch.rand(E)
    x = torch.randn(N, F)
    backend = ops.resolve_backend(None, x.device)

    # ---- spmm (forward); GB/s from the suite's byte model (_benchutil.op_bytes)
    y_ref = ref.spmm(g, w, x)
    y = ops.spmm(g, w, x)
    check_close(y, y_ref, rtol=1e-4, what="spmm vs the reference")
    A = g.to_torch_sparse_csr(w)
    t_ref = best_time(lambda: ref.spmm(g, w, x))
    t_sp = best_time(lambda: torch.sparse.mm(A, x))
    t_go = best_time(lambda: ops.spmm(g, w, x))
    moved = op_bytes("spmm", "fwd", N, E, H, D, F)["total"]
    yield ("")
    yield (f"  {'spmm (forward)':<44s} {'time':>13s} {'vs comp':>9s} {'GB/s':>8s}")
    yield (_row("composition (gather -> index_add_)", t_ref, t_ref, moved / t_ref / 1e9))
    yield (_row("torch.sparse.mm (CSR)", t_sp, t_ref, moved / t_sp / 1e9))
    yield (_row(f"graphode.ops.spmm [{backend}]", t_go, t_ref, moved / t_go / 1e9)
                 + f"   ({t_sp / t_go:.2f}x torch.sparse)")

    # ---- attention diffusion, forward + backward, against every peer
    import peers

    q = torch.randn(N, H, D) * 0.5
    k = torch.randn(N, H, D) * 0.5
    gy = torch.randn(N, F)
    scale = 1 / math.sqrt(D)

    def fwd_bwd(provider):
        fn, _ = peers.make_op("attention_diffusion", provider, g, scale, backend=backend)
        args = [t.clone().requires_grad_() for t in (q, k, x)]

        def run():
            y = fn(*args)
            return (y.detach(), *torch.autograd.grad(y, args, gy))
        return run

    expected = fwd_bwd("composition")()
    times = {}
    for p in peers.PROVIDER_ORDER["attention_diffusion"]:
        run = fwd_bwd(p)
        check_close(run(), expected, rtol=1e-4, what=f"attention_diffusion {p} vs the reference")
        times[p] = best_time(run, repeat=3)
    fastest = min((p for p in times if p != "graphode"), key=times.get)
    yield ("")
    yield (f"  {'attention_diffusion (forward+backward)':<44s} {'time':>13s} {'vs fastest peer':>9s}")
    for p, t in times.items():
        name = f"graphode.ops.attention_diffusion [{backend}]" if p == "graphode" else p
        yield (_row(name + (" (fastest peer)" if p == fastest else ""), t, times[fastest]))

    # ---- solver overhead: RK4, 200 fixed steps on dX/dt = (A - I) X
    from graphode import odeint

    wn = g.row_normalize(w)
    f = lambda t, y: ops.spmm(g, wn, y) - y  # noqa: E731
    ts = torch.tensor([0.0, 1.0])
    opts = {"step_size": 1.0 / 200}
    yield ("")
    yield (f"  {'odeint rk4, 200 steps, dX/dt=(A-I)X':<44s} {'time':>13s} {'vs tdeq':>9s}")
    try:
        import torchdiffeq
    except ImportError:
        torchdiffeq = None
    ours = odeint(f, x, ts, method="rk4", options=opts)[-1]
    if torchdiffeq is not None:
        theirs = torchdiffeq.odeint(f, x, ts, method="rk4", options=opts)[-1]
        check_close(ours, theirs, rtol=1e-5, what="rk4 vs torchdiffeq")
        t_td = best_time(lambda: torchdiffeq.odeint(f, x, ts, method="rk4", options=opts), repeat=3)
        yield (_row("torchdiffeq.odeint", t_td, t_td))
    t_go = best_time(lambda: odeint(f, x, ts, method="rk4", options=opts), repeat=3)
    yield (_row("graphode.odeint", t_go, t_td if torchdiffeq is not None else t_go))


def run_bench(args) -> int:
    for line in run_quick(args.nodes, args.edges, args.features, args.heads, args.head_dim):
        print(line, flush=True)
    return 0
