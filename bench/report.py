"""Renders the benchmark results (``bench/results/<name>.json``, written by ``make bench``)
into markdown: the terminal summary of a bench run, and the generated blocks of
bench/README.md and of docs/RESULTS.md's performance sections (``BLOCKS``, used by
``docs/generate.py``).  Reads the committed JSON only; runs nothing.

    .venv/bin/python bench/report.py ops            # print one report's tables
    .venv/bin/python bench/report.py --plot         # redraw bench/results/scaling.png from scaling.json

Every speed-up is a ratio of medians measured in the same process and run,
against the fastest peer of that case (marked), never against a slower one.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _benchutil import fmt_bytes, fmt_time, markdown_table  # noqa: E402

OP_REPORTS = ("spmm", "edge_attention", "attention_diffusion")
MODE_NAMES = {"fwd": "fwd", "bwd": "bwd", "full": "fwd+bwd"}


# --------------------------------------------------------------------------- loading and helpers
def load(name: str, directory: str = RESULTS) -> Optional[dict]:
    path = os.path.join(directory, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ratio(x: Optional[float], digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}×" if x < 100 else f"{x:,.0f}×"


def pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _timed(r: dict) -> bool:
    return bool(r.get("timed", True)) and r.get("median_s") is not None


def header(data: dict) -> str:
    """One line: when, where, what load, which command; flags runs that measured nothing."""
    m = data["meta"]
    mach = m.get("machine", {})
    parts = [f"Measured {mach.get('date', '?')} on {mach.get('cpu', '?')} ({mach.get('cpus', '?')} CPUs, "
             f"{mach.get('mem_total_gb', '?')} GB), torch {mach.get('torch', '?')}"]
    if mach.get("git"):
        parts.append(f"graphode at `{mach['git']}`")
    if m.get("triad_gbps"):
        parts.append(f"STREAM triad {m['triad_gbps']:.1f} GB/s on {m.get('triad_threads', '?')} threads")
    if mach.get("loadavg_1min") is not None:
        parts.append(f"1-min load average {mach['loadavg_1min']} at the start of the run and "
                     f"{m.get('loadavg_1min_end', '?')} when this report was written")
    if mach.get("cuda_device"):
        parts.append(f"GPU {mach['cuda_device']}")
    text = ", ".join(parts) + (f"; `{m['command']}`." if m.get("command") else ".")
    if mach.get("bench_size") == "smoke" or m.get("benchmark_disabled"):
        text += " **Smoke size or untimed run: not a measurement.**"
    return text


def _missing(name: str) -> str:
    return (f"*No committed results for `{name}` yet: `make bench` writes `bench/results/{name}.json` "
            "(see *Running* above).*")


# --------------------------------------------------------------------------- graph ops
def _limit_s(r: dict) -> Optional[float]:
    g = r.get("gather_gbps")
    return r["bytes"]["total"] / (g * 1e9) if g else None


def fastest_peer(rows: Iterable[dict]) -> Optional[dict]:
    peers = [r for r in rows if r["provider"] != "graphode" and _timed(r)]
    return min(peers, key=lambda r: r["median_s"]) if peers else None


def op_summary(data: dict, size: Optional[str] = None) -> List[dict]:
    """Per (size, mode): graphode, the fastest peer, the speed-up (medians), the memory
    ratio and the fraction of the gather limit."""
    rows = data["rows"]
    out = []
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    for s in sizes if size is None else [size]:
        for mode in MODE_NAMES:
            rs = [r for r in rows if r["size"] == s and r["mode"] == mode]
            go = next((r for r in rs if r["provider"] == "graphode"), None)
            fp = fastest_peer(rs)
            if not (go and fp and _timed(go)):
                continue
            lim = _limit_s(go)
            mem = (fp["peak_extra_bytes"] / go["peak_extra_bytes"]
                   if fp.get("peak_extra_bytes") and go.get("peak_extra_bytes") else None)
            out.append(dict(size=s, mode=mode, graphode=go, peer=fp, speedup=fp["median_s"] / go["median_s"],
                            mem_ratio=mem, limit_fraction=lim / go["median_s"] if lim else None,
                            gbps=go["bytes"]["total"] / go["median_s"] / 1e9))
    return out


def render_op(data: dict) -> str:
    rows = data["rows"]
    out = [header(data), ""]
    import peers

    op = data["meta"]["name"]
    out.append("Peers: " + "; ".join(f"`{p}`: {peers.describe(op, p)}" for p in peers.PEERS[op]) + ".")
    summary = op_summary(data)
    if summary:
        out.append("\ngraphode against the fastest peer of each case (medians, same run):\n")
        out.append(markdown_table(
            ["graph", "mode", "fastest peer", "its median", "graphode", "speed-up", "peer's extra mem / graphode's",
             "graphode, % of gather limit"],
            [[x["size"], MODE_NAMES[x["mode"]], x["peer"]["provider"], fmt_time(x["peer"]["median_s"]),
              fmt_time(x["graphode"]["median_s"]), ratio(x["speedup"]), ratio(x["mem_ratio"]) if x["mem_ratio"] else "",
              pct(x["limit_fraction"])] for x in summary],
            right=[False, False, False, True, True, True, True, True]))
    for size in dict.fromkeys(r["size"] for r in rows):
        rs = [r for r in rows if r["size"] == size]
        r0 = rs[0]
        gb = r0.get("gather_gbps")
        out.append(f"\n**{size}**: N = {r0['nodes']:,}, E = {r0['edges']:,} (H = {r0['H']}, D = {r0['D']}, "
                   f"F = {r0['F']}, float32), {r0['threads']} threads, {r0['rounds']} timed rounds per case "
                   f"after one checked warm-up call; gather bandwidth of this graph "
                   f"{gb:.1f} GB/s.\n" if gb else "\n")
        table = []
        for mode in MODE_NAMES:
            mrs = [r for r in rs if r["mode"] == mode]
            go = next((r for r in mrs if r["provider"] == "graphode"), None)
            fp = fastest_peer(mrs)
            for r in mrs:
                name = r["provider"] + (" (fastest peer)" if r is fp else "")
                t = _timed(r)
                lim = _limit_s(r)
                sp = (r["median_s"] / go["median_s"] if t and go and _timed(go) and r is not go else None)
                mem = (r["peak_extra_bytes"] / go["peak_extra_bytes"]
                       if r is not go and go and r.get("peak_extra_bytes") and go.get("peak_extra_bytes") else None)
                table.append([MODE_NAMES[mode], name, fmt_time(r.get("median_s")) if t else "untimed",
                              fmt_time(r.get("min_s")) if t else "",
                              f"{r['bytes']['total'] / r['median_s'] / 1e9:.2f}" if t else "",
                              pct(lim / r["median_s"]) if t and lim else "",
                              fmt_bytes(r.get("peak_extra_bytes")), ratio(sp) if sp else "",
                              ratio(mem) if mem else ""])
            if mrs:
                lim = _limit_s(mrs[0])
                table.append([MODE_NAMES[mode], "*gather limit*", fmt_time(lim) if lim else "n/a", "",
                              f"{gb:.2f}" if gb else "", "100 %", "", "", ""])
        out.append(markdown_table(
            ["mode", "provider", "median", "min", "GB/s (model, median)", "% of gather limit", "peak extra mem",
             "time / graphode", "extra mem / graphode"], table, right=[False, False] + [True] * 7))
    out.append("\nGB/s: the byte model (`_benchutil.op_bytes`: arrays streamed once plus the neighbour rows "
               "gathered once per edge) over the median time.  Gather limit: the model's bytes moved at the "
               "graph's gather bandwidth (`torch.index_select` of its rows in CSR column order, same threads).  "
               "Peak extra memory: a fresh subprocess per graph, high-water mark minus the RSS before the case.")
    return "\n".join(out)


def op_goal_lines() -> List[str]:
    """The ops' goals against the fastest peer, at 100k nodes / 1M edges."""
    lines = []
    ad = load("attention_diffusion")
    if ad:
        s = next((x for x in op_summary(ad, "100k-1M") if x["mode"] == "full"), None)
        if s:
            ok_t, ok_m = s["speedup"] >= 20, s["mem_ratio"] is not None and s["mem_ratio"] >= 10
            ok_b = s["limit_fraction"] is not None and s["limit_fraction"] >= 0.5
            lines.append(
                f"attention_diffusion fwd+bwd at 100k/1M: {ratio(s['speedup'])} the fastest peer "
                f"(`{s['peer']['provider']}`; goal ≥ 20×: {_met(ok_t, s['speedup'] / 20)}), extra memory "
                f"1/{s['mem_ratio']:.1f} of the peer's (goal ≤ 1/10: {_met(ok_m, (s['mem_ratio'] or 0) / 10)}), "
                f"{pct(s['limit_fraction'])} of the gather limit (goal ≥ 50 %: "
                f"{_met(ok_b, (s['limit_fraction'] or 0) / 0.5)})")
    sp = load("spmm")
    if sp:
        for mode in ("full", "fwd"):
            s = next((x for x in op_summary(sp, "100k-1M") if x["mode"] == mode), None)
            if s:
                lines.append(f"spmm {MODE_NAMES[mode]} at 100k/1M: {ratio(s['speedup'])} the fastest peer "
                             f"(`{s['peer']['provider']}`; goal ≥ 1.5×: {_met(s['speedup'] >= 1.5, s['speedup'] / 1.5)})")
    return lines


def _met(ok: bool, fraction: float) -> str:
    return "**met**" if ok else f"**missed**, at {100 * fraction:.0f} % of it"


# --------------------------------------------------------------------------- blocks
def _block(name: str, fn):
    def block() -> str:
        data = load(name)
        return fn(data) if data else _missing(name)
    return block


def render(data: dict) -> str:
    """Any report's markdown (used by the terminal summary)."""
    name = data["meta"]["name"]
    fn = RENDERERS.get(name)
    title = f"### {data['meta'].get('title', name)}\n\n"
    return title + (fn(data) if fn else header(data) + "\n\n" + _generic(data))


def _generic(data: dict) -> str:
    rows = data["rows"]
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))][:12]
    return markdown_table(keys, [[r.get(k) for k in keys] for r in rows])


def goals_block() -> str:
    lines = op_goal_lines()
    for name, fn in GOAL_LINES.items():
        data = load(name)
        if data:
            lines += fn(data)
    if not lines:
        return "*No committed results yet.*"
    return "\n".join(f"- {line}." for line in lines)


ALL_REPORTS = OP_REPORTS + ("scaling", "scale", "distributed", "solvers", "grand", "gcn", "gpu")


def runs_block() -> str:
    rows = []
    for name in ALL_REPORTS:
        d = load(name)
        if not d:
            continue
        m = d["meta"]
        mach = m.get("machine", {})
        wall = m.get("session_wall_s")
        rows.append([f"`{name}.json`", mach.get("date", "?"), f"{mach.get('cpu', '?')}, {mach.get('cpus', '?')} CPUs",
                     f"{mach.get('loadavg_1min', '?')} / {m.get('loadavg_1min_end', '?')}",
                     f"`{mach.get('git', '?')}`", f"`{m.get('command', '')}`" if m.get("command") else "",
                     fmt_time(wall) if wall else ""])
    if not rows:
        return "*No committed results yet: run `make bench`.*"
    return markdown_table(["results", "measured", "machine", "1-min load, start / end", "graphode at",
                           "command (file alone)", "wall time of the whole pytest session"], rows)


def after_write(path: str) -> None:
    """Called by the bench conftest after writing a report (draws the scaling figure)."""
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "scaling":
        with open(path) as f:
            plot_scaling(json.load(f), os.path.join(os.path.dirname(path), "scaling.png"))




# --------------------------------------------------------------------------- scaling
def _status(r: dict) -> str:
    s = r.get("status")
    if s == "oom":
        return f"OOM at {r['mem_limit_bytes'] / 2**30:.1f} GiB limit"
    if s == "timeout":
        return f"timeout ({r.get('timeout_s', 0):.0f} s)"
    return s or "?"


def render_scaling(data: dict) -> str:
    rows = data["rows"]
    f = data["meta"].get("facts", {})
    out = [header(data), "",
           "![scaling](results/scaling.png)", "",
           f"Forward + backward of all inputs, power-law graphs with N = E/10 nodes (plus self loops), "
           f"H = {f.get('H', '?')}, D = {f.get('D', '?')}, F = {f.get('F', '?')}, float32, {f.get('threads', '?')} threads; "
           "each (E, op, provider) in its own subprocess under the same memory limit and timeout; the first "
           "(checked) call is the warm-up and the memory run, then the same number of timed calls for every "
           "provider.  Ratios: medians, against graphode at the same E.", ""]
    table = []
    order = {op: list(p) for op, p in __import__("peers").PROVIDER_ORDER.items()}
    key = lambda r: (list(order).index(r["op"]), r["requested_edges"], order[r["op"]].index(r["provider"]))  # noqa: E731
    by = {(r["op"], r["requested_edges"], r["provider"]): r for r in rows}
    for r in sorted(rows, key=key):
        ok = r.get("status") == "ok" and _timed(r)
        go = by.get((r["op"], r["requested_edges"], "graphode"))
        gok = go is not None and go.get("status") == "ok" and _timed(go)
        sp = r["median_s"] / go["median_s"] if ok and gok and r is not go else None
        mr = (r["peak_extra_bytes"] / go["peak_extra_bytes"]
              if r.get("peak_extra_bytes") and go and go.get("peak_extra_bytes") and r is not go else None)
        lim = (r["bytes"]["total"] / (go["gather_gbps"] * 1e9)) if gok and go.get("gather_gbps") and r.get("bytes") else None
        table.append([r["op"], f"{r['edges']:,}" if r.get("edges") else f"~{r['requested_edges']:.0e}",
                      r["provider"], fmt_time(r["median_s"]) if ok else "", fmt_time(r.get("min_s")) if ok else "",
                      fmt_bytes(r.get("peak_extra_bytes")) if r.get("peak_extra_bytes") is not None else "",
                      pct(lim / r["median_s"]) if ok and lim else "", ratio(sp) if sp else "",
                      ratio(mr) if mr else "", r.get("rounds", ""), _status(r)])
    out.append(markdown_table(["op", "E", "provider", "median", "min", "peak extra mem", "% of gather limit",
                               "time / graphode", "mem / graphode", "timed rounds", "status"], table,
                              right=[False, True, False, True, True, True, True, True, True, True, False]))
    return "\n".join(out)


def plot_scaling(data: dict, path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    rows = data["rows"]
    f = data["meta"].get("facts", {})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["o-", "s--", "^:", "v-.", "D:"]
    colors = {"spmm": "tab:blue", "attention_diffusion": "tab:red"}
    limits = set()
    for op in dict.fromkeys(r["op"] for r in rows):
        provs = list(dict.fromkeys(r["provider"] for r in rows if r["op"] == op))
        for i, p in enumerate(provs):
            rs = sorted((r for r in rows if r["op"] == op and r["provider"] == p), key=lambda r: r["requested_edges"])
            ok = [r for r in rs if r.get("status") == "ok" and _timed(r)]
            label = f"{op} {p}"
            st = styles[i % len(styles)]
            if ok:
                axes[0].plot([r["edges"] for r in ok], [r["median_s"] for r in ok], st, color=colors.get(op),
                             label=label, alpha=1.0 if p == "graphode" else 0.7)
            mem = [r for r in rs if r.get("peak_extra_bytes")]
            if mem:
                axes[1].plot([r["edges"] for r in mem], [r["peak_extra_bytes"] / 2**20 for r in mem], st,
                             color=colors.get(op), label=label, alpha=1.0 if p == "graphode" else 0.7)
            for r in rs:
                if r.get("status") in ("oom", "timeout"):
                    x = r.get("edges") or r["requested_edges"]
                    oom = r["status"] == "oom"
                    ax, y = (axes[1], r["mem_limit_bytes"] / 2**20) if oom else (axes[0], r.get("timeout_s", 0))
                    ax.plot([x], [y], "X", ms=10, color=colors.get(op))
                    ax.annotate(f"{label}:\n{_status(r)}", (x, y), xytext=(-8, -4), textcoords="offset points",
                                fontsize=7, color=colors.get(op), ha="right", va="top")
                    if oom:
                        limits.add(y)
    for y in limits:
        axes[1].axhline(y, color="grey", ls="--", lw=0.8, alpha=0.6)
    axes[0].set(xscale="log", yscale="log", xlabel="edges E", ylabel="time, forward+backward (s, median)",
                title="time vs E")
    axes[1].set(xscale="log", yscale="log", xlabel="edges E", ylabel="peak extra memory (MiB)",
                title="peak memory vs E")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"power-law graphs N = E/10, H={f.get('H')}, D={f.get('D')}, F={f.get('F')}, float32, "
                 f"{f.get('threads')} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- solvers
def solver_limits(data: dict) -> Dict[tuple, dict]:
    """Per (workload, mode): the limit and each library's time and overhead above it."""
    rows = [r for r in data["rows"] if r.get("kind") == "moded"]
    out = {}
    for w in dict.fromkeys(r["workload"] for r in rows):
        for mode in MODE_NAMES:
            rs = {r["lib"]: r for r in rows if r["workload"] == w and r["mode"] == mode}
            go = rs.get("graphode")
            if not go or not _timed(go):
                continue
            field = go.get("field", {})
            fwd_limit = go["steps_nfe"] * field["fwd_s"] if field.get("fwd_s") else None
            if mode == "fwd":
                limit, how = fwd_limit, f"NFE {go['steps_nfe']} × one field call ({fmt_time(field.get('fwd_s'))})"
            elif "nfe_backward" in go:  # adjoint
                bwd_limit = go["nfe_backward"] * field["vjp_s"]
                limit = bwd_limit if mode == "bwd" else (fwd_limit or 0) + bwd_limit
                how = (f"backward NFE {go['nfe_backward']} × one field call with its VJP ({fmt_time(field['vjp_s'])})"
                       + ("" if mode == "bwd" else " + the forward's limit"))
            else:
                pl = rs.get("plain-loop")
                limit = pl["median_s"] if pl and _timed(pl) else None
                how = "the same steps as a plain torch loop, backpropagated"
            libs = {k: v for k, v in rs.items() if k != "plain-loop" and _timed(v)}
            over = {k: v["median_s"] - limit for k, v in libs.items()} if limit is not None else {}
            out[(w, mode)] = dict(limit=limit, how=how, libs=libs, overhead=over)
    return out


def render_solvers(data: dict) -> str:
    m = data["meta"]
    f = m.get("facts", {})
    out = [header(data), ""]
    lims = solver_limits(data)
    titles = f.get("titles", {})
    for w in dict.fromkeys(k[0] for k in lims):
        out.append(f"\n**{w}**: {titles.get(w, '')}.\n")
        table = []
        for mode in MODE_NAMES:
            L = lims.get((w, mode))
            if not L:
                continue
            tdq = L["overhead"].get("torchdiffeq")
            for lib, r in L["libs"].items():
                ov = L["overhead"].get(lib)
                table.append([MODE_NAMES[mode], lib, fmt_time(r["median_s"]), fmt_time(r["min_s"]),
                              r["nfe_first_call"] if mode == "fwd" else "",
                              (fmt_time(ov) if ov > 0 else "none (at the limit)") if ov is not None else "",
                              _overhead_ratio(ov, tdq) if lib != "torchdiffeq" else "",
                              ratio(L["libs"]["torchdiffeq"]["median_s"] / r["median_s"], 2)
                              if "torchdiffeq" in L["libs"] and lib != "torchdiffeq" else ""])
            table.append([MODE_NAMES[mode], "*limit*", fmt_time(L["limit"]), "", "", "", "", L["how"]])
        out.append(markdown_table(["mode", "provider", "median", "min", "NFE", "overhead above the limit",
                                   "overhead / torchdiffeq's", "speed-up vs torchdiffeq (medians)"], table,
                                  right=[False, False, True, True, True, True, True, False]))
    mem = [r for r in data["rows"] if r.get("kind") == "memory"]
    if mem:
        r0 = mem[0]
        out.append(f"\n**Adjoint memory** (rk4, MLP field 16-16-16, state {r0.get('rows', '?')}x16, forward + backward, "
                   "a fresh subprocess, high-water mark reset before each run):\n")
        out.append(markdown_table(
            ["case", "steps", "peak RSS (small / large)", "growth", "extra peak (small / large)",
             "time fwd+bwd (large)"],
            [[f"{r['lib']} {'odeint_adjoint' if r['mode'] == 'adjoint' else 'odeint (backprop)'}",
              f"{r['steps_small']} / {r['steps_large']}",
              f"{fmt_bytes(r['peak_rss_small_bytes'])} / {fmt_bytes(r['peak_rss_large_bytes'])}",
              ratio(r["growth"], 2), f"{fmt_bytes(r['extra_small_bytes'])} / {fmt_bytes(r['extra_large_bytes'])}",
              fmt_time(r["time_large_s"])] for r in mem],
            right=[False, True, True, True, True, True]))
    stiff = [r for r in data["rows"] if r.get("kind") == "stiff"]
    if stiff:
        out.append("\n**Stiff graph diffusion** dx/dt = 1000(A - I)x, T = 0.1: time to 1e-3 relative error "
                   "against `scipy.sparse.linalg.expm_multiply` (forward):\n")
        out.append(markdown_table(
            ["case", "median", "min", "rel. error", "NFE", "settings", "Newton / Krylov"],
            [[r["case"], fmt_time(r.get("median_s")), fmt_time(r.get("min_s")), f"{r['rel_err']:.1e}", r["nfe"],
              r["settings"], f"{r['newton']} / {r['krylov']}" if "implicit" in r["case"] else ""] for r in stiff],
            right=[False, True, True, True, True, False, True]))
    return "\n".join(out)


def _overhead_ratio(g: Optional[float], t: Optional[float]) -> str:
    if g is None or t is None:
        return ""
    if g <= 0:
        return "0 (at the limit)"
    if t <= 0:
        return "∞ (torchdiffeq at the limit)"
    return ratio(g / t, 2)


def solver_goal_lines(data: dict) -> List[str]:
    lims = solver_limits(data)
    bad, worst, n = [], None, 0
    for (w, mode), L in lims.items():
        g, t = L["overhead"].get("graphode"), L["overhead"].get("torchdiffeq")
        if g is None or t is None:
            continue
        n += 1
        q = 0.0 if g <= 0 else (g / t if t > 0 else math.inf)
        if not q <= 0.5:
            bad.append(f"{w} {MODE_NAMES[mode]} ({ratio(q, 2)})")
        if worst is None or q > worst[0]:
            worst = (q, w, mode)
    lines = []
    if n:
        lines.append(f"solver overhead above the NFE limit ≤ 1/2 of torchdiffeq's on every workload and mode: "
                     + ("**met**" if not bad else f"**missed** in {len(bad)} of {n} cases: " + ", ".join(bad)))
    slower = [f"{w} {MODE_NAMES[mode]} ({ratio(L['libs']['torchdiffeq']['median_s'] / L['libs']['graphode']['median_s'], 2)})"
              for (w, mode), L in lims.items() if w.startswith("mlp")
              and {"graphode", "torchdiffeq"} <= set(L["libs"])
              and L["libs"]["graphode"]["median_s"] > L["libs"]["torchdiffeq"]["median_s"]]
    if any(w.startswith("mlp") for w, _ in lims):
        lines.append("never slower than torchdiffeq on the MLP workloads: "
                     + ("**met**" if not slower else "**missed**: torchdiffeq / graphode = " + ", ".join(slower)))
    return lines


# --------------------------------------------------------------------------- models
def _model_table(rows: List[dict], providers: Sequence[str], peers: Sequence[str], goal: Optional[float],
                 first_col: str = "mode") -> str:
    table = []
    for mode in MODE_NAMES:
        rs = {r["provider"]: r for r in rows if r["mode"] == mode}
        go = rs.get("graphode")
        fp = min((rs[p] for p in peers if p in rs and _timed(rs[p])), key=lambda r: r["median_s"], default=None)
        for p in providers:
            r = rs.get(p)
            if r is None:
                continue
            t = _timed(r)
            name = p + (" (fastest peer)" if r is fp else "")
            sp = go["median_s"] / r["median_s"] if t and go and _timed(go) and r is not go else None
            mem = r.get("peak_extra_bytes")
            table.append([MODE_NAMES[mode], name, fmt_time(r["median_s"]) if t else "untimed",
                          fmt_time(r.get("min_s")) if t else "", ratio(1 / sp, 2) if sp else "",
                          fmt_bytes(mem) if mem is not None else ""])
    return markdown_table([first_col, "provider", "median", "min", "time / graphode (medians)",
                           "peak extra memory (train step)"], table, right=[False, False, True, True, True, True])


def model_goal(rows: List[dict], peers: Sequence[str], mode: str = "full") -> Optional[dict]:
    rs = {r["provider"]: r for r in rows if r["mode"] == mode}
    go = rs.get("graphode")
    fp = min((rs[p] for p in peers if p in rs and _timed(rs[p])), key=lambda r: r["median_s"], default=None)
    if not (go and fp and _timed(go)):
        return None
    mem = (fp["peak_extra_bytes"] / go["peak_extra_bytes"]
           if fp.get("peak_extra_bytes") and go.get("peak_extra_bytes") else None)
    return dict(peer=fp["provider"], speedup=fp["median_s"] / go["median_s"], mem_ratio=mem)


def render_gcn(data: dict) -> str:
    rows = data["rows"]
    f = data["meta"].get("facts", {})
    r0 = rows[0]
    head = (f"{r0['layers']}-layer GCN on Cora (1433 -> 64 x {r0['layers'] - 1} -> 7, ReLU, dropout 0.6), "
            f"{r0['threads']} thread(s), {r0['rounds']} timed rounds per case after one warm-up call; graphode "
            f"backend: {r0['backend']}.  `full` is one training epoch (forward with dropout, loss, backward, Adam "
            "step).  Peers: `pyg-adj_t` = PyG `GCNConv(cached=True)` on a `torch.sparse` CSR `adj_t` with "
            "graphode's dropout (on the input's non-zeros, sparse first product, `rand_like` masks); "
            "`pyg-default` = the same layers on `edge_index` with `F.dropout`.  `graphode-torch-dropout` = graphode "
            "with `dropout_rng=\"torch\"` (`rand_like` masks, the GCN before the fused Philox dropout): its "
            "time over graphode's is what the fused dropout saves.")
    return "\n".join([header(data), "", head, "",
                      _model_table(rows, ["graphode", "graphode-reference", "graphode-torch-dropout", "pyg-adj_t",
                                          "pyg-default"],
                                   f.get("pyg", ["pyg-adj_t", "pyg-default"]), f.get("goal"))])


def gcn_goal_lines(data: dict) -> List[str]:
    f = data["meta"].get("facts", {})
    g = model_goal(data["rows"], f.get("pyg", ["pyg-adj_t", "pyg-default"]))
    if not g:
        return []
    goal = f.get("goal", 1.5)
    return [f"{data['rows'][0]['layers']}-layer GCN epoch on Cora: {ratio(g['speedup'], 2)} the fastest PyG stack "
            f"(`{g['peer']}`; goal ≥ {goal}×: {_met(g['speedup'] >= goal, g['speedup'] / goal)})"]


def render_grand(data: dict) -> str:
    rows = data["rows"]
    out = [header(data), ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        r0 = rs[0]
        out.append(f"\n**{model}**, Cora config ({r0['method']}, T = {r0['T']:g}; NFE {r0.get('nfe')} in the checked "
                   f"forward), {r0['threads']} thread(s), {r0['rounds']} timed rounds per case after one warm-up "
                   "call.  `full` = one train step (forward, loss, backward, Adamax step).\n")
        out.append(_model_table(rs, ["graphode", "authors", "graphode-reference-ops"], ["authors"], None))
    if not any(r["provider"] == "authors" for r in rows):
        out.append("\nThe authors' model (`authors`, the parity reference of `tests/parity`) was not part of this "
                   "run, so no speed-up against it is given.")
    return "\n".join(out)


def grand_goal_lines(data: dict) -> List[str]:
    f = data["meta"].get("facts", {})
    rows = [r for r in data["rows"] if r["model"] == "grand-l"]
    g = model_goal(rows, ["authors"])
    if not g:
        return ["GRAND-l train step ≥ 5× the authors' formulation with ≤ 1/2 of its memory: **not measured** "
                "(the authors' model was not part of the committed run)"]
    gs, gm = f.get("goal_speedup", 5.0), f.get("goal_memory_ratio", 2.0)
    mem = g["mem_ratio"]
    return [f"GRAND-l train step on Cora: {ratio(g['speedup'], 2)} the authors' model (goal ≥ {gs:g}×: "
            f"{_met(g['speedup'] >= gs, g['speedup'] / gs)}), peak extra memory "
            + (f"1/{mem:.2f} of theirs (goal ≤ 1/{gm:g}: {_met(mem >= gm, mem / gm)})" if mem else "not measured")]


def render_scale(data: dict) -> str:
    f = data["meta"].get("facts", {})
    table = []
    for r in data["rows"]:
        ok = r["status"] == "ok"
        if ok:
            status = "ok"
        elif r["status"] == "oom":
            status = f"**OOM at {r['mem_limit_bytes'] / 2**30:.1f} GiB limit** (during the {r.get('failed_during')})"
        elif r["status"] == "timeout":
            status = f"**timeout after {r['timeout_s']:.0f} s** (during the {r.get('failed_during')})"
        else:
            status = r["status"]
        table.append(["graphode (fused cpu ops)" if r["backend"] == "cpu" else "composition (reference ops)",
                      f"{r.get('edges', 0):,}", fmt_time(r.get("setup_s")), fmt_time(r.get("forward_s")),
                      fmt_time(r.get("backward_s")), fmt_time(r.get("total_s")),
                      f"{r.get('nfe_forward', '-')} / {r.get('nfe_backward', '-')}",
                      fmt_bytes(r.get("forward_peak_rss_bytes")), fmt_bytes(r.get("peak_rss_bytes")),
                      fmt_bytes(r.get("peak_extra_bytes")) if ok else "", status])
    head = (f"GRAND-nl, `odeint_adjoint`, rk4 with {f.get('steps')} step(s) on [0, {f.get('T')}], "
            f"N = {f.get('nodes', 0):,}, F = {f.get('features')}, hidden {f.get('hidden')}, H = {f.get('heads')}, "
            f"attention dim {f.get('attention_dim')}, {f.get('threads')} threads, each in its own subprocess under "
            "the same memory limit and timeout; one run each (wall-clock of that run).")
    return "\n".join([header(data), "", head, "", markdown_table(
        ["ops", "E (with self loops)", "setup", "forward", "backward", "fwd+bwd", "NFE fwd / bwd",
         "peak RSS, forward", "peak RSS, fwd+bwd", "extra peak fwd+bwd", "status"], table,
        right=[False] + [True] * 9 + [False])])


# --------------------------------------------------------------------------- GPU
def render_gpu(data: dict) -> str:
    rows = data["rows"]
    gpu = data["meta"].get("gpu", {})
    r0 = rows[0]
    out = [header(data), "",
           f"{gpu.get('device', '?')}: device triad {gpu.get('device_triad_gbps', 0):.0f} GB/s, gather bandwidth of "
           f"this graph {gpu.get('gather_gbps', 0):.0f} GB/s, nominal peak {gpu.get('nominal_gbps') or '?'} GB/s.  "
           f"N = {r0['nodes']:,}, E = {r0['edges']:,}, H = {r0['H']}, D = {r0['D']}, F = {r0['F']}, float32; "
           "`triton.testing.do_bench` medians.", ""]
    table = []
    for op in dict.fromkeys(r["op"] for r in rows):
        for mode in MODE_NAMES:
            rs = [r for r in rows if r["op"] == op and r["mode"] == mode]
            ours = [r for r in rs if r["provider"].startswith("graphode") and _timed(r)]
            best = min(ours, key=lambda r: r["median_s"], default=None)
            fp = min((r for r in rs if not r["provider"].startswith("graphode") and _timed(r)),
                     key=lambda r: r["median_s"], default=None)
            for r in rs:
                t = _timed(r)
                lim = _limit_s(r)
                nom = gpu.get("nominal_gbps")
                gbps = r["bytes"]["total"] / r["median_s"] / 1e9 if t else None
                table.append([op, MODE_NAMES[mode], r["provider"] + (" (fastest peer)" if r is fp else ""),
                              fmt_time(r.get("median_s")) if t else "untimed", f"{gbps:.0f}" if gbps else "",
                              pct(lim / r["median_s"]) if t and lim else "", pct(gbps / nom) if gbps and nom else "",
                              fmt_bytes(r.get("peak_extra_bytes")),
                              ratio(r["median_s"] / best["median_s"], 2) if t and best and r is not best else ""])
    out.append(markdown_table(["op", "mode", "provider", "median", "GB/s (model)", "% of gather limit",
                               "% of nominal peak", "peak extra mem", "time / fastest graphode backend"], table,
                              right=[False, False, False, True, True, True, True, True, True]))
    return "\n".join(out)


def gpu_block() -> str:
    data = load("gpu")
    if data:
        return render_gpu(data)
    return ("**Not yet run on a GPU.**  The CUDA backend (`csrc/cuda`) and the compiled Triton kernels "
            "(`kernels/`) have been compiled and checked here only on the CPU: the Triton kernels under "
            "`TRITON_INTERPRET=1`, the CUDA sources with nvcc.  Neither has run on a GPU, so there are no GPU "
            "figures; `make bench-gpu` produces them (`bench/results/gpu.json`).")


def render_distributed(data: dict) -> str:
    import distributed_report

    return header(data) + "\n\n" + distributed_report.render(data["rows"], data["meta"])


RENDERERS: Dict[str, Any] = {"distributed": render_distributed,**{op: render_op for op in OP_REPORTS}, "scaling": render_scaling, "solvers": render_solvers,
                                  "gcn": render_gcn, "grand": render_grand, "scale": render_scale,
                                  "gpu": render_gpu}
#: report name -> function(data) -> list of goal sentences (filled by the model/solver sections below)
GOAL_LINES: Dict[str, Any] = {"gcn": gcn_goal_lines, "solvers": solver_goal_lines, "grand": grand_goal_lines}

def _goal_block(name: str, fn, extra=None):
    def block() -> str:
        data = load(name)
        if not data:
            return _missing(name)
        lines = fn(data)
        text = "\n".join(f"- {line}." for line in lines) if lines else "*No goal figure in the committed results.*"
        return text + ("\n\n" + extra(data) if extra else "")
    return block


def _grand_table(data: dict) -> str:
    rows = [r for r in data["rows"] if r["model"] == "grand-l" and r["mode"] == "full"]
    return (header(data) + "\n\n" + _model_table(rows, ["graphode", "authors", "graphode-reference-ops"],
                                                   ["authors"], None, first_col="GRAND-l")) if rows else ""


BLOCKS = {
    "bench-runs": runs_block,
    "results-grand-performance": _goal_block("grand", grand_goal_lines, _grand_table),
    "results-gcn-performance": _goal_block("gcn", gcn_goal_lines),
    "bench-goals": goals_block,
    **{f"bench-{op.replace('_', '-')}": _block(op, render_op) for op in OP_REPORTS},
    "bench-scaling": _block("scaling", render_scaling),
    "bench-solvers": _block("solvers", render_solvers),
    "bench-scale": _block("scale", render_scale),
    "bench-grand": _block("grand", render_grand),
    "bench-gcn": _block("gcn", render_gcn),
    "bench-gpu": gpu_block,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="bench/report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="reports to print (default: all with results)")
    p.add_argument("--plot", action="store_true", help="redraw bench/results/scaling.png")
    p.add_argument("--dir", default=RESULTS)
    a = p.parse_args(argv)
    if a.plot:
        data = load("scaling", a.dir)
        if not data:
            print("no scaling.json", file=sys.stderr)
            return 1
        print(plot_scaling(data, os.path.join(a.dir, "scaling.png")))
        return 0
    names = a.names or sorted(os.path.splitext(f)[0] for f in os.listdir(a.dir) if f.endswith(".json"))
    for n in names:
        data = load(n, a.dir)
        print(render(data) if data else _missing(n), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
