"""Tables of ``bench/test_bench_distributed.py`` (``bench/results/distributed.json``).

``render(rows, meta)`` is the report's renderer; ``BLOCKS`` gives the same
markdown, read from the committed JSON, to the documents' generator
(``docs/generate.py``; block ``bench-distributed``).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List


HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
RESULTS = os.path.join(HERE, "results", "distributed.json")

import _benchutil as bu  # noqa: E402


def _gib(b) -> str:
    return bu.fmt_bytes(b)


GRAPH_NAMES = {"power-law": "power-law (the issue's graph)", "grid": "8-connected grid"}


def _partition_table(rows: List[dict]) -> str:
    parts = sorted((r for r in rows if r.get("kind") == "partition"),
                   key=lambda r: (r.get("graph", "power-law") != "power-law", r["num_parts"], r["method"]))
    if not parts:
        return ""
    table = []
    for r in parts:
        ratio = max(h / max(o, 1) for h, o in zip(r["halo_nodes"], r["owned_nodes"]))
        table.append([GRAPH_NAMES.get(r.get("graph", "power-law"), r.get("graph")),
                      f"{r['num_nodes']:,} / {r['num_edges']:,}", r["method"], r["num_parts"],
                      f"{r['edge_cut']:,}", f"{100 * r['edge_cut_fraction']:.1f}%",
                      f"{max(r['halo_nodes']):,}", f"{ratio:.2f}", bu.fmt_time(r.get("partition_s"))])
    out = bu.markdown_table(["graph", "nodes / edges", "parts by", "parts", "edge cut", "of the edges",
                             "halo nodes (largest part)", "halo / owned (largest)", "time to partition"], table,
                            right=[False, True, False, True, True, True, True, True, True])
    notes = []
    for graph in dict.fromkeys(r.get("graph", "power-law") for r in parts):
        cut = {(r["method"], r["num_parts"]): r["edge_cut"] for r in parts if r.get("graph", "power-law") == graph}
        ratios = [f"{cut[('random', p)] / cut[('metis', p)]:.2f}x with {p} parts"
                  for p in sorted({p for _, p in cut})
                  if ("random", p) in cut and ("metis", p) in cut and cut[("metis", p)]]
        if ratios:
            notes.append(f"{GRAPH_NAMES.get(graph, graph)}: random parts cut more edges than METIS parts by "
                         + ", ".join(ratios) + ".")
    return out + ("\n\n" + " ".join(notes) if notes else "")


def _run_table(rows: List[dict], graph: str) -> str:
    runs = sorted((r for r in rows if r.get("kind", "run") == "run" and "nproc" in r
                   and r.get("graph", "power-law") == graph), key=lambda r: r["nproc"])
    if not runs:
        return ""
    one = next((r for r in runs if r["nproc"] == 1 and r.get("status", "ok") == "ok"), None)
    base = max(one["peak_rss_bytes"]) if one else None
    table = []
    for r in runs:
        ok = r.get("status", "ok") == "ok"
        peak = max(r["peak_rss_bytes"]) if r.get("peak_rss_bytes") else None
        nfe_f, nfe_b = r.get("nfe_forward"), r.get("nfe_backward")
        hb = r.get("halo_bytes_forward")
        table.append([
            "1 (no partition)" if r["nproc"] == 1 else str(r["nproc"]),
            r.get("threads", "-"),
            bu.fmt_time(r.get("forward_s")), bu.fmt_time(r.get("backward_s")),
            bu.fmt_time(r["forward_s"] / nfe_f) if ok and nfe_f else "n/a",
            bu.fmt_time(r["backward_s"] / nfe_b) if ok and nfe_b else "n/a",
            f"{nfe_f} / {nfe_b}" if ok else "-",
            bu.fmt_bytes(peak) if peak else "n/a",
            f"{peak / base:.2f}" if peak and base else "-",
            bu.fmt_bytes(hb / nfe_f) if ok and hb and nfe_f else ("0" if r["nproc"] == 1 else "n/a"),
            f"{r['check_rel_err']:.1e}" if r.get("check_rel_err") is not None else "-",
            "ok" if ok else f"**{r.get('status')}**: {r.get('error', '')[:120]}",
        ])
    out = f"{GRAPH_NAMES.get(graph, graph)}:\n\n" + bu.markdown_table(
        ["processes", "threads each", "forward", "backward", "per NFE, forward", "per NFE, backward", "NFE fwd / bwd",
         "peak RSS per rank (largest)", "vs one process", "halo bytes per forward NFE (all ranks)",
         "gradients vs one process (max rel. error)", "status"], table,
        right=[False, True, True, True, True, True, True, True, True, True, True, False])
    four = next((r for r in runs if r["nproc"] == 4 and r.get("status", "ok") == "ok"), None)
    if four and base:
        worst = max(four["peak_rss_bytes"]) / base
        out += (f"\n\nGoal, each rank's peak at most 1/3 of the single process's with 4 parts: "
                f"{'met' if worst <= 1 / 3 else 'not met'} (largest rank: {worst:.2f} of it).")
    return out


def render(rows: List[dict], meta: Dict) -> str:
    head = ("GRAND-nl, `odeint_adjoint`, rk4 with one step on [0, 1], F = 64, hidden 64, H = 4, attention dim 64, "
            "self loops added by the model. One process: the plain model on the whole graph, 2 threads. Ranks: "
            "METIS parts, one thread each, Gloo on localhost; on this 2-core machine 2 ranks have a core each "
            "and 4 ranks share the 2 cores, so the times are those of a 2-core machine, not of 4 machines. Peak "
            "RSS is each process's resident peak during forward+backward (graph, model, solver state included). "
            "Halo bytes: received by all ranks together at one forward evaluation.\n\n")
    graphs = list(dict.fromkeys(r.get("graph", "power-law") for r in rows if r.get("kind", "run") == "run"))
    parts = [_partition_table(rows)] + [_run_table(rows, g) for g in graphs]
    return head + "\n\n".join(p for p in parts if p)


def block() -> str:
    if not os.path.exists(RESULTS):
        return ("*No committed results for `distributed` yet: `make bench-dist` writes "
                "`bench/results/distributed.json`.*")
    with open(RESULTS) as f:
        d = json.load(f)
    return render(d["rows"], d.get("meta", {}))


BLOCKS = {"bench-distributed": block}
