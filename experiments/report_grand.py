"""Generated blocks of docs/RESULTS.md's GRAND sections (see notes on generated docs).

Every block reads only committed raw files: ``experiments/results/grand_reproduce.jsonl``
(graphode's runs), ``experiments/results/grand_authors.jsonl`` (the authors' code as
re-implemented in ``tests/parity/authors_grand.py``) and the paper's numbers in
``graphode/configs/papers/grand.yaml``; it never trains anything.

    .venv/bin/python experiments/report_grand.py            # print every block
    .venv/bin/python experiments/report_grand.py grand-table1

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
        notes.append(f"{d:+.1f} ± {se:.1f} (s.e.) vs the authors' code")
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
    lines = ["| GRAND-l, Cora, GRAND's split | test accuracy | best epoch (median) | integration time of the best "
             "(median) | s / epoch | NFE / forward |", "|---|---:|---:|---:|---:|---:|"]
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
    return " | ".join([_ms(rows), f"{be:.0f}", f"{np.median(bt):.1f}" if bt else "T (end time)",
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


BLOCKS: Dict[str, Callable[[], str]] = {
    "grand-table1": table1,
    "grand-table2": table2,
    "grand-public": public,
    "grand-variants": variants,
    "grand-seeds": seeds,
    "grand-runs": hosts,
}


if __name__ == "__main__":
    names = sys.argv[1:] or list(BLOCKS)
    for n in names:
        print(f"<!-- {n} -->\n{BLOCKS[n]()}\n")
