"""Generated blocks of docs/RESULTS.md's GRAND sections (see notes on generated docs).

Every block reads only committed raw files: ``experiments/results/grand_reproduce.jsonl``
(graphode's runs), ``experiments/results/grand_authors.jsonl`` (the authors' code as
re-implemented in ``tests/parity/authors_grand.py``) and the paper's numbers in
``graphode/configs/papers/grand.yaml``; it never trains anything.

    .venv/bin/python experiments/report_grand.py            # print every block
    .venv/bin/python experiments/report_grand.py grand-table1
    .venv/bin/python docs/generate.py                       # fill the blocks of docs/RESULTS.md

Statistics: mean ± standard deviation over the runs (numpy's population std, as
``graphode.train.summarize``); "n" is the number of runs (initialisations).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
OURS = os.path.join(RESULTS, "grand_reproduce.jsonl")
AUTHORS = os.path.join(RESULTS, "grand_authors.jsonl")
PAPER = os.path.join(ROOT, "graphode", "configs", "papers", "grand.yaml")

MODELS = ("grand-l", "grand-nl", "grand-nl-rw")
DATASETS = ("cora", "citeseer")
NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "grand-l": "GRAND-l", "grand-nl": "GRAND-nl",
         "grand-nl-rw": "GRAND-nl-rw"}


def _read(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    seen, out = set(), []
    for r in rows:  # a run recorded twice counts once
        k = (r.get("cell"), r.get("seed"))
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def paper() -> dict:
    import yaml

    with open(PAPER) as f:
        return yaml.safe_load(f)


def paper_number(table: str, model: str, dataset: str) -> Optional[Tuple[float, float]]:
    v = paper()["tables"][table]["numbers"].get(model, {}).get(dataset)
    return None if v is None else (float(v[0]), float(v[1]))


def _acc(rows: Sequence[dict]) -> np.ndarray:
    return 100 * np.array([r["test_acc"] for r in rows], dtype=float)


def _select(rows, **kw) -> List[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def _ms(rows) -> str:
    a = _acc(rows)
    return f"{a.mean():.1f} ± {a.std():.1f} (n={a.size})" if a.size else "not run"


def _pp(p: Optional[Tuple[float, float]]) -> str:
    return "–" if p is None else f"{p[0]:.1f} ± {p[1]:.1f}"


def _verdict(rows, p, authors_rows=None) -> str:
    """Within the paper's std?  More than 0.5 points below the authors' code?"""
    a = _acc(rows)
    if not a.size:
        return ""
    notes = []
    if p is not None:
        d = a.mean() - p[0]
        notes.append("within the paper's std" if abs(d) <= p[1] else f"{d:+.1f} vs the paper")
    if authors_rows:
        b = _acc(authors_rows)
        d = a.mean() - b.mean()
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 and b.size > 1 else float("nan")
        notes.append(f"{d:+.1f} ± {se:.1f} (s.e.) vs the authors' code" if np.isfinite(se) else
                     f"{d:+.1f} vs the authors' code (no standard error from {min(a.size, b.size)} run)")
    return "; ".join(notes)


# --------------------------------------------------------------------------- blocks
def table1() -> str:
    """Table 1 on GRAND's split (what the authors' code ran), graphode and the authors' code."""
    ours, theirs = _read(OURS), _read(AUTHORS)
    head = "| model | " + " | ".join(f"{NAMES[d]}: graphode | {NAMES[d]}: authors' code | {NAMES[d]}: paper"
                                     for d in DATASETS) + " |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(DATASETS)]
    for m in MODELS:
        row = [NAMES[m]]
        for d in DATASETS:
            row.append(_ms(_select(ours, model=m, dataset=d, split="grand", variant="code")))
            t = _select(theirs, model=m, dataset=d, split="grand")
            row.append(_ms(t) if t else "not run")
            row.append(_pp(paper_number("table1", m, d)))
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for d in DATASETS:
        for m in MODELS:
            rows = _select(ours, model=m, dataset=d, split="grand", variant="code")
            if rows:
                v = _verdict(rows, paper_number("table1", m, d),
                             _select(theirs, model=m, dataset=d, split="grand") or None)
                notes.append(f"- {NAMES[m]} on {NAMES[d]}: {v}.")
    return "\n".join(lines + [""] + notes)


def table2() -> str:
    """Table 2: random LCC splits (split seed = initialisation seed)."""
    ours = _read(OURS)
    lines = ["| model | " + " | ".join(f"{NAMES[d]}: graphode | {NAMES[d]}: paper" for d in DATASETS) + " |",
             "|---|" + "---:|---:|" * len(DATASETS)]
    for m in MODELS:
        cells = [_select(ours, model=m, dataset=d, split="random", variant="code") for d in DATASETS]
        if not any(cells):
            continue
        row = [NAMES[m]]
        for d, rows in zip(DATASETS, cells):
            row += [_ms(rows), _pp(paper_number("table2", m, d))]
        lines.append("| " + " | ".join(row) + " |")
    notes = [f"- {NAMES[m]} on {NAMES[d]}: {_verdict(rows, paper_number('table2', m, d))}."
             for m in MODELS for d in DATASETS
             for rows in [_select(ours, model=m, dataset=d, split="random", variant="code")] if rows]
    return "\n".join(lines + [""] + notes)


def public() -> str:
    """The public Planetoid masks (full graph): labelled as such, beside the paper's Table 1."""
    ours = _read(OURS)
    lines = ["| model | " + " | ".join(f"{NAMES[d]}: graphode, public masks | {NAMES[d]}: paper (Table 1)"
                                     for d in DATASETS) + " |", "|---|" + "---:|---:|" * len(DATASETS)]
    for m in MODELS:
        cells = [_select(ours, model=m, dataset=d, split="public", variant="code") for d in DATASETS]
        if not any(cells):
            continue
        row = [NAMES[m]]
        for d, rows in zip(DATASETS, cells):
            row += [_ms(rows), _pp(paper_number("table1", m, d))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def variants() -> str:
    """GRAND-l on Cora, GRAND's split: the evaluation and attention choices side by side."""
    ours, theirs = _read(OURS), _read(AUTHORS)
    label = {"code": "authors' values (squareplus over sources, evaluation to 3T)",
             "at-T": "same, evaluated at T", "2021-06": "softmax of scaled-dot scores (their 2021-06 release)"}
    lines = ["| GRAND-l, Cora, GRAND's split | test accuracy | validation accuracy | best epoch (median) | "
             "integration time of the best (median) | s / epoch | NFE / forward |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v in ("code", "at-T", "2021-06"):
        rows = _select(ours, model="grand-l", dataset="cora", split="grand", variant=v)
        if rows:
            lines.append("| graphode, " + label[v] + " | " + _stats(rows) + " |")
    t = _select(theirs, model="grand-l", dataset="cora", split="grand")
    if t:
        lines.append("| authors' code (their defaults: squareplus, evaluation to 3T) | " + _stats(t) + " |")
    return "\n".join(lines)


def _stats(rows) -> str:
    be = np.median([r["best_epoch"] + 1 for r in rows])
    bt = [r["best_time"] for r in rows if r.get("best_time") is not None]
    ept = np.mean([r["epoch_time_s"] for r in rows if r.get("epoch_time_s") is not None] or [np.nan])
    nfe = [r["nfe"] for r in rows if r.get("nfe") is not None]
    va = 100 * np.array([r["val_acc"] for r in rows], dtype=float)
    return " | ".join([_ms(rows), f"{va.mean():.1f} ± {va.std():.1f}", f"{be:.0f}", f"{np.median(bt):.1f}" if bt else "T (end time)",
                       f"{ept:.2f}" if np.isfinite(ept) else "–", f"{np.mean(nfe):.0f}" if nfe else "–"])


def seeds() -> str:
    """Per-seed test accuracies of GRAND-l on GRAND's split (the side-by-side evidence)."""
    ours, theirs = _read(OURS), _read(AUTHORS)
    lines = []
    for d in DATASETS:
        for who, rows in (("graphode", _select(ours, model="grand-l", dataset=d, split="grand", variant="code")),
                          ("authors' code", _select(theirs, model="grand-l", dataset=d, split="grand"))):
            if rows:
                rows = sorted(rows, key=lambda r: r["seed"])
                vals = ", ".join(f"{100 * r['test_acc']:.1f}" for r in rows)
                lines.append(f"- {NAMES[d]}, {who} (seeds {rows[0]['seed']}–{rows[-1]['seed']}): {vals}")
    return "\n".join(lines) if lines else "not run"


def hosts() -> str:
    """How and where the runs ran (commit, load)."""
    rows = _read(OURS) + _read(AUTHORS)
    if not rows:
        return "not run"
    commits = sorted({r.get("commit") for r in rows})
    loads = [r["load"] for r in rows if r.get("load") is not None]
    return (f"{len(rows)} runs from commits {', '.join(commits)}; one torch thread, niced, on the shared "
            f"2-core machine (1-minute load average during the runs {min(loads):.1f}–{max(loads):.1f}: "
            f"times are indicative only).")


# --------------------------------------------------------------------------- settings, gaps, plan
SETTINGS = os.path.join(HERE, "grand_settings.yaml")
CONFIGS = os.path.join(ROOT, "graphode", "configs", "grand")
PROTOCOLS = {"grand": "GRAND's split", "random": "random LCC splits", "public": "public masks"}


def _plan() -> List[dict]:
    """The reproduction plan (``grand_reproduce.CELLS``), in the order it runs."""
    import grand_reproduce

    return grand_reproduce.CELLS


def _config(dataset: str) -> dict:
    import yaml

    with open(os.path.join(CONFIGS, f"{dataset}.yaml")) as f:
        return yaml.safe_load(f)


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _cell_rows(name: str) -> List[dict]:
    return _select(_read(OURS) + _read(AUTHORS), cell=name)


def _cell_paper(cell: dict) -> Optional[Tuple[float, float]]:
    return paper_number(paper()["protocol_table"][cell["split"]], cell["model"], cell["dataset"])


def _range(vals) -> str:
    vals = sorted(set(int(v) for v in vals))
    if not vals:
        return "–"
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def settings() -> str:
    """Where the paper and the authors' code disagree, graphode's setting for each, and the
    measured accuracy of the other side where a cell ran it."""
    import yaml

    with open(SETTINGS) as f:
        spec = yaml.safe_load(f)["rows"]
    plan = {c["name"]: c for c in _plan()}
    cfgs = {d: _config(d) for d in DATASETS}
    lines = ["| setting | the paper | the authors' code | graphode (" + " / ".join(NAMES[d] for d in DATASETS) +
             ") | the paper's side, measured (GRAND-l) |", "|---|---|---|---|---|"]
    for r in spec:
        if r["keys"]:
            ours = "; ".join(f"`{k}: " + " / ".join(_value(cfgs[d].get(k)) for d in DATASETS) + "`" for k in r["keys"])
        else:
            ours = r.get("graphode", "")
        measured = []
        for name in r.get("cells") or []:
            c = plan[name]
            rows = _cell_rows(name)
            measured.append(f"{NAMES[c['dataset']]}: {_ms(rows)}")
        other = r.get("other") or ""
        meas = (other + ": " + ", ".join(measured)) if measured else (f"{other}: not run" if other else "–")
        lines.append(f"| {r['setting']} | {r['paper']} | {r['code']} | {ours} | {meas} |")
    ours = _read(OURS)
    summary = []
    for d in DATASETS:
        rows = _select(ours, model="grand-l", dataset=d, split="grand", variant="code")
        p = paper_number("table1", "grand-l", d)
        summary.append(f"{NAMES[d]} {_ms(rows)} (paper {_pp(p)}" + (f"; {_verdict(rows, p)})" if rows else ")"))
    return "\n".join(lines + ["", "With every setting at the code's value (the packaged configs, GRAND's split), "
                              "GRAND-l: " + "; ".join(summary) + "."])


def gaps() -> str:
    """Every cell of the plan that ran: seeds, epochs, accuracy and the gap to the paper."""
    lines = ["| cell | code | model | dataset | protocol | variant | seeds | epochs | test accuracy | paper | "
             "gap (points) | gap / paper's std |", "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in _plan():
        rows = _cell_rows(c["name"])
        if not rows:
            continue
        a, p = _acc(rows), _cell_paper(c)
        gap = "–" if p is None else f"{a.mean() - p[0]:+.1f}"
        z = "–" if p is None else f"{(a.mean() - p[0]) / p[1]:+.1f}"
        table = paper()["protocol_table"][c["split"]].replace("table", "Table ")
        lines.append(f"| {c['name']} | {'authors' if c['who'] == 'authors' else 'graphode'} | {NAMES[c['model']]} | "
                     f"{NAMES[c['dataset']]} | {PROTOCOLS[c['split']]} | {c['variant']} | "
                     f"{_range(r['seed'] for r in rows)} (n={len(rows)}) | {_range(r['epochs'] for r in rows)} | "
                     f"{a.mean():.1f} ± {a.std():.1f} | {_pp(p)} ({table}) | {gap} | {z} |")
    return "\n".join(lines)


def not_run() -> str:
    """The cells of the plan not (fully) run, with the time a run took here where one did."""
    ours, theirs = _read(OURS), _read(AUTHORS)
    lines = ["| cell | code | model | dataset | protocol | variant | runs done / planned | "
             "median wall time of one run here | CPU time left (estimate) |", "|---|---|---|---|---|---|---:|---:|---:|"]
    for c in _plan():
        done = len(_cell_rows(c["name"]))
        if done >= c["runs"]:
            continue
        same = _select(theirs if c["who"] == "authors" else ours, model=c["model"], dataset=c["dataset"])
        wall = float(np.median([r["wall_s"] for r in same])) if same else None
        left = "–" if wall is None else f"{(c['runs'] - done) * wall / 60:.0f} min"
        lines.append(f"| {c['name']} | {'authors' if c['who'] == 'authors' else 'graphode'} | {NAMES[c['model']]} | "
                     f"{NAMES[c['dataset']]} | {PROTOCOLS[c['split']]} | {c['variant']} | {done} / {c['runs']} | "
                     f"{'no run yet' if wall is None else f'{wall:.0f} s'} | {left} |")
    if len(lines) == 2:
        return "Every cell of the plan has run."
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures 2-4 (raw files of
# experiments/grand_fig2_depth.py, grand_fig3_solvers.py, grand_fig4_digits.py)
FIG2 = os.path.join(RESULTS, "grand_fig2_depth.jsonl")
FIG3 = os.path.join(RESULTS, "grand_fig3_solvers.jsonl")
FIG4 = os.path.join(RESULTS, "grand_fig4_digits.json")


def _plain_rows(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fig2_table(records: Sequence[dict]) -> str:
    """Test accuracy (%) per depth: GRAND (RK4, step 1, T = depth) against GCN and GCN + residual."""
    rows: Dict[str, Dict[int, List[float]]] = {}
    for r in records:
        depth = int(float(r["tag"].split("=")[1]))
        name = "GRAND (RK4, τ=1), T =" if r["model"].startswith("grand") else {
            "gcn": "GCN, layers =", "gcn-residual": "GCN + residual, layers ="}[r["model"]]
        rows.setdefault(name, {}).setdefault(depth, []).append(100 * r["test_acc"])
    depths = sorted({d for v in rows.values() for d in v})
    out = ["| model | " + " | ".join(str(d) for d in depths) + " |", "|---|" + "---:|" * len(depths)]
    for name, v in rows.items():
        out.append(f"| {name} | " + " | ".join(
            f"{np.mean(v[d]):.1f} ± {np.std(v[d]):.1f} (n={len(v[d])})" if d in v else "–" for d in depths) + " |")
    return "\n".join(out)


def fig3_groups(records, panel):
    """``{label: {x: [records]}}`` of one panel of Figure 3 (x: step size, or GDC's k)."""
    g: Dict[str, Dict] = {}
    for r in records:
        tag = r.get("tag") or ""
        if not tag.startswith(panel + "|"):
            continue
        parts = tag.split("|")
        m, h = parts[1], parts[2]
        x = float(parts[3]) if panel == "right" else (None if h == "adaptive" else float(h))
        label = m if panel == "left" else (f"{m} (τ={h})" if h != "adaptive" else m)
        g.setdefault(label, {}).setdefault(x, []).append(r)
    return g


def fig3_table(records: Sequence[dict], panel: str) -> str:
    """One panel of Figure 3 as a table (method, step size or k, accuracy, time, NFE, runs)."""
    xname = "step τ" if panel == "left" else "GDC top-k"
    out = [f"| method | {xname} | test accuracy | s / epoch | NFE / forward | runs |", "|---|---:|---:|---:|---:|---:|"]
    for label, pts in fig3_groups(records, panel).items():
        for x in sorted(pts, key=lambda v: -1 if v is None else v):
            xs = "adaptive" if x is None else f"{x:g}"
            ok = [r for r in pts[x] if "failed" not in r]
            if not ok:
                out.append(f"| {label} | {xs} | unstable (non-finite) | – | – | 0 |")
                continue
            a = np.array([100 * r["test_acc"] for r in ok])
            t = np.mean([r["epoch_time_s"] for r in ok])
            nfe = [r["nfe"] for r in ok if r.get("nfe") is not None]
            out.append(f"| {label} | {xs} | {a.mean():.1f} ± {a.std():.1f} | {t:.2f} | "
                       f"{np.mean(nfe):.0f} | {len(ok)} |")
    return "\n".join(out)


def fig2() -> str:
    return fig2_table(_plain_rows(FIG2)) if os.path.exists(FIG2) else "not run"


def fig3_left() -> str:
    return fig3_table(_plain_rows(FIG3), "left")


def fig3_right() -> str:
    return fig3_table(_plain_rows(FIG3), "right")


def fig4() -> str:
    """Figure 4 on digit images: GRAND-nl against the constant Laplacian."""
    if not os.path.exists(FIG4):
        return "not run"
    with open(FIG4) as f:
        res = json.load(f)["results"]
    a, b = res["grand-nl"], res["grand-laplacian"]
    la, lb = a["attention"]["layer_mean"], b["attention"]["layer_mean"]
    rows = [
        ("pixel accuracy of the held-out digits (%)", f"{100 * a['test_acc']:.1f}", f"{100 * b['test_acc']:.1f}"),
        ("boundary pixels: a neighbour of the other class (%)", f"{100 * a['boundary_acc']:.1f}",
         f"{100 * b['boundary_acc']:.1f}"),
        ("other pixels (%)", f"{100 * a['interior_acc']:.1f}", f"{100 * b['interior_acc']:.1f}"),
        ("mean edge weight within a class / across the boundary",
         f"{la['mean_within']:.3f} / {la['mean_across']:.3f} ({la['within_over_across']:.1f}×)",
         f"{lb['mean_within']:.3f} / {lb['mean_across']:.3f} ({lb['within_over_across']:.2f}×)"),
        ("share of a boundary pixel's neighbour weight crossing the boundary", f"{la['boundary_cross_share']:.2f}",
         f"{lb['boundary_cross_share']:.2f}"),
        ("class separation of x(T)'s first principal component", f"{a['pc1_separation']:.2f}",
         f"{b['pc1_separation']:.2f}"),
        ("learned diffusion rate σ(α) (initially 0.5)", f"{a['sigmoid_alpha']:.2f}", f"{b['sigmoid_alpha']:.2f}"),
    ]
    with open(FIG4) as f:
        settings = json.load(f)["settings"]
    out = ["| held-out digits | GRAND-nl | Laplacian |", "|---|---:|---:|"]
    out += [f"| {n} | {x} | {y} |" for n, x, y in rows]
    out.append("")
    out.append(f"(Input class separation {settings['input_separation']:.2f}; edge weights are the GRAND-nl "
               f"head-mean attention averaged over the steps, self loops excluded.)")
    return "\n".join(out)


BLOCKS: Dict[str, Callable[[], str]] = {
    "grand-table1": table1,
    "grand-table2": table2,
    "grand-public": public,
    "grand-variants": variants,
    "grand-seeds": seeds,
    "grand-runs": hosts,
    "grand-settings": settings,
    "grand-gaps": gaps,
    "grand-not-run": not_run,
    "grand-fig2": fig2,
    "grand-fig3-left": fig3_left,
    "grand-fig3-right": fig3_right,
    "grand-fig4": fig4,
}


if __name__ == "__main__":
    for n in sys.argv[1:] or list(BLOCKS):
        print(f"<!-- {n} -->\n{BLOCKS[n]()}\n")
