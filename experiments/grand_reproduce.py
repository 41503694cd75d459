"""GRAND's Tables 1 and 2 on the protocols of the paper and of the authors' code (issue #13).

    nice -n 15 .venv/bin/python experiments/grand_reproduce.py            # every cell, in order
    nice -n 15 .venv/bin/python experiments/grand_reproduce.py --cells t1-grand-l-cora authors-cora
    nice -n 15 .venv/bin/python experiments/grand_reproduce.py --cells authors-citeseer --runs 3   # seeds 0-2 only
    .venv/bin/python experiments/grand_reproduce.py --list                # the plan and what is done

One process runs the cells one after the other, one torch thread; every finished run is
appended as one JSON line to ``experiments/results/grand_reproduce.jsonl`` (graphode) or
``grand_authors.jsonl`` (the authors' code, re-implemented in
``tests/parity/authors_grand.py`` and proved equal to theirs there), so an interrupted
plan resumes where it stopped.  ``experiments/report_grand.py`` turns the files into the
GRAND tables of docs/RESULTS.md.

Cells (``CELLS``): a model, a dataset, a split protocol and a variant of the packaged
config (``graphode/configs/grand/<dataset>.yaml``, the authors' values):

* split ``grand``: the largest connected component with GRAND's split drawn with seed
  12345, seeds vary the initialisation (Table 1 as the authors' code ran it);
  ``public``: the Planetoid masks on the full graph; ``random``: one random LCC split per
  seed (split seed = initialisation seed; Table 2's protocol);
* variant ``code``: the packaged config as it is (evaluation past T, as their default
  test integrator); ``at-T``: evaluated at T; ``2021-06``: the attention of their
  2021-06 release (softmax of scaled-dot scores over the same groups).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from grand_common import RESULTS, data_root, read_jsonl  # noqa: E402

OURS = os.path.join(RESULTS, "grand_reproduce.jsonl")
AUTHORS = os.path.join(RESULTS, "grand_authors.jsonl")

VARIANTS: Dict[str, Dict[str, Any]] = {
    "code": {},
    "at-T": {"eval_time_factor": None},
    "2021-06": {"attention_normalize": "softmax", "attention_score": "scaled_dot"},
}


def _cell(name, model, dataset, split, runs, variant="code", who="graphode"):
    return dict(name=name, model=model, dataset=dataset, split=split, runs=runs, variant=variant, who=who)


#: the plan, in the order it runs
CELLS: List[Dict[str, Any]] = [
    _cell("t1-grand-l-cora", "grand-l", "cora", "grand", 20),
    _cell("authors-cora", "grand-l", "cora", "grand", 10, who="authors"),
    _cell("at-T-grand-l-cora", "grand-l", "cora", "grand", 10, variant="at-T"),
    _cell("2021-06-grand-l-cora", "grand-l", "cora", "grand", 10, variant="2021-06"),
    _cell("t2-grand-l-cora", "grand-l", "cora", "random", 10),
    _cell("public-grand-l-cora", "grand-l", "cora", "public", 10),
    _cell("t1-grand-l-citeseer", "grand-l", "citeseer", "grand", 20),
    _cell("t1-grand-nl-cora", "grand-nl", "cora", "grand", 10),
    _cell("authors-citeseer", "grand-l", "citeseer", "grand", 5, who="authors"),
    _cell("t2-grand-l-citeseer", "grand-l", "citeseer", "random", 10),
    _cell("public-grand-l-citeseer", "grand-l", "citeseer", "public", 5),
    _cell("t1-grand-nl-citeseer", "grand-nl", "citeseer", "grand", 10),
    _cell("t1-grand-nl-rw-cora", "grand-nl-rw", "cora", "grand", 5),
    _cell("t1-grand-nl-rw-citeseer", "grand-nl-rw", "citeseer", "grand", 5),
]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # pragma: no cover - not a git checkout
        return "unknown"


def _load_avg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def _done(cell) -> List[int]:
    path = AUTHORS if cell["who"] == "authors" else OURS
    return sorted({int(r["seed"]) for r in read_jsonl(path) if r.get("cell") == cell["name"]})


def config_of(cell) -> Dict[str, Any]:
    from graphode.config import load_config

    cfg = load_config(None, cell["model"], cell["dataset"])
    cfg.update(VARIANTS[cell["variant"]])
    cfg["model"] = cell["model"]
    return cfg


def _record(cell, seed, res, wall, cfg) -> Dict[str, Any]:
    rec = {k: cell[k] for k in ("model", "dataset", "split", "variant", "who")}
    rec.update(cell=cell["name"], seed=int(seed), config=cfg, wall_s=wall, commit=_commit(), load=_load_avg())
    rec.update({k: res.get(k) for k in ("test_acc", "val_acc", "train_acc", "best_epoch", "best_time", "epochs",
                                        "epoch_time_s", "eval_time_s", "nfe")})
    return rec


def run_graphode(cell, seed, root) -> Dict[str, Any]:
    from graphode.train import run_many

    cfg = config_of(cell)
    t0 = time.perf_counter()
    res = run_many(cell["model"], cell["dataset"], cfg, runs=1, seed=seed, split=cell["split"], data_root=root,
                   progress=False)["runs"][0]
    return _record(cell, seed, res, time.perf_counter() - t0, cfg)


def run_authors(cell, seed, root) -> Dict[str, Any]:
    """Their run_GNN.main after get_dataset, on the split graphode calls ``cell['split']``
    (their edge_index: graphode's flipped, rows = aggregation targets)."""
    import torch

    from graphode.datasets import load_dataset
    from tests.parity import authors_grand as A

    ds = load_dataset(cell["dataset"], root=root, split=cell["split"],
                      **({"seed": seed} if cell["split"] == "random" else {}))
    name = {"cora": "Cora", "citeseer": "Citeseer"}[cell["dataset"]]
    opt = A.authors_opt(name)
    torch.manual_seed(seed)
    data = dict(y=ds.y, train_mask=ds.train_mask, val_mask=ds.val_mask, test_mask=ds.test_mask)
    t0 = time.perf_counter()
    res = A.run_authors(opt, ds.x, ds.edge_index.flip(0), data, ds.num_classes)
    wall = time.perf_counter() - t0
    res = dict(res, best_epoch=res["best_epoch"] - 1, epochs=len(res["history"]))  # 0-based, as graphode's
    return _record(cell, seed, res, wall, {"authors_opt": {k: v for k, v in opt.items() if not callable(v)}})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=None, help="names of the cells to run (default: all, in order)")
    p.add_argument("--list", action="store_true", help="print the plan and what is done, then exit")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=None,
                   help="run only seeds below this in each cell (default: the plan's number of runs)")
    args = p.parse_args(argv)
    cells = CELLS if args.cells is None else [c for c in CELLS if c["name"] in set(args.cells)]
    if args.cells is not None and len(cells) != len(set(args.cells)):
        known = ", ".join(c["name"] for c in CELLS)
        raise SystemExit(f"unknown cell in {args.cells}; known: {known}")
    if args.list:
        for c in CELLS:
            print(f"{c['name']:28s} {c['who']:8s} {c['model']:12s} {c['dataset']:9s} {c['split']:7s} "
                  f"{c['variant']:8s} {len(_done(c))}/{c['runs']} done")
        return
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    root = data_root(args.data_root)
    os.makedirs(RESULTS, exist_ok=True)
    for cell in cells:
        planned = cell["runs"] if args.runs is None else min(args.runs, cell["runs"])
        todo = [s for s in range(planned) if s not in set(_done(cell))]
        if not todo:
            continue
        bar = tqdm(total=planned, initial=planned - len(todo), desc=cell["name"], file=sys.stderr)
        for seed in todo:
            rec = (run_authors if cell["who"] == "authors" else run_graphode)(cell, seed, root)
            with open(AUTHORS if cell["who"] == "authors" else OURS, "a") as f:
                f.write(json.dumps(rec, default=str) + "\n")
            bt = rec.get("best_time")
            bar.write(f"{cell['name']} seed {seed}: test {100 * rec['test_acc']:.2f} val {100 * rec['val_acc']:.2f} "
                      f"epoch {rec['best_epoch'] + 1}" + (f" t={bt:.2f}" if bt is not None else "") +
                      f" [{rec['wall_s']:.0f} s, load {rec['load']}]")
            bar.update(1)
        bar.close()


if __name__ == "__main__":
    main()
