"""Generated blocks of docs/RESULTS.md, *Deep GCN*: every figure of that section,
made from the committed raw runs (``experiments/results/gcn_*.jsonl`` / ``.json``)
and the paper's numbers (``graphode/configs/papers/deep_gcn.yaml``).

``BLOCKS`` maps a block name to a function returning its markdown (see
docs/generate.py).  The functions only read files.  Every table states its
protocol next to it: epochs, the early-stop rule, seeds per cell, the dropout
random stream, and the command that (re)produces it; a cell is the mean ±
population std of the test accuracy (%) at the best validation epoch.

    python experiments/report_gcn.py [BLOCK ...]     # print blocks
    python experiments/report_gcn.py --write         # rewrite them in docs/RESULTS.md
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from gcn_common import LEGACY_DROPOUT_RNG, markdown_table, paper_numbers, read_jsonl  # noqa: E402

RESULTS = os.path.join(HERE, "results")
PY = "python"  # how the commands are shown


def _res(name: str) -> str:
    return os.path.join(RESULTS, name)


# --------------------------------------------------------------------------- helpers
def _select(records: Iterable[dict], **where) -> List[dict]:
    out = []
    for r in records:
        ok = True
        for k, v in where.items():
            got = r.get(k, LEGACY_DROPOUT_RNG if k == "dropout_rng" else None)
            if callable(v):
                ok = bool(v(got))
            elif isinstance(v, (set, frozenset)):
                ok = got in v
            else:
                ok = got == v
            if not ok:
                break
        if ok:
            out.append(r)
    return out


def _stats(rs: Sequence[dict], field: str = "test_acc") -> Optional[Tuple[float, float, int]]:
    if not rs:
        return None
    v = np.array([100.0 * float(r[field]) for r in rs])
    return float(v.mean()), float(v.std()), len(v)


def _cell(st) -> str:
    if st is None:
        return "—"
    m, s, n = st
    return f"{m:.1f} ± {s:.1f}"


def _ns(stats: Iterable[Optional[tuple]]) -> str:
    ns = sorted({st[2] for st in stats if st is not None})
    if not ns:
        return "0"
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def _protocol(epochs: int, patience: Optional[int], n: str, rng: Optional[str], extra: str = "") -> str:
    stop = "no early stop" if patience is None else f"early stop after {patience} epochs without a better validation accuracy"
    masks = {"torch": "torch's RNG (`rand_like` masks)", "philox": "the fused Philox dropout (`graphode.ops.dropout`)",
             None: "torch's RNG (`F.dropout`)"}[rng]
    s = f"{epochs} epochs, {stop}, {n} seeds per cell, dropout masks from {masks}"
    return s + (f"; {extra}" if extra else "")


def _paper_row(label: str, values: Sequence[Optional[float]], digits: int = 1) -> List[str]:
    return [label] + ["—" if v is None else f"{v:.{digits}f}" for v in values]


def _cmd(script: str, args: str) -> str:
    return f"`{PY} experiments/{script} {args}`"


def _not_run(protocol: str, cmd: str) -> str:
    """What a block says while its raw file holds no run at its protocol."""
    return f"**Not run yet** at this protocol ({protocol}).  Command: {cmd}"


# --------------------------------------------------------------------------- Table 2
T2_FILE = "gcn_table2.jsonl"


T2_INITS = (("glorot", "GCN, Glorot"), ("isometric", "GCN + isometric init (eq. 14 as printed)"),
            ("isometric-code", "GCN + isometric init (code's bound)"))


def _table2(dataset: str, epochs: int = 1500, rng: str = "torch",
            inits: Sequence[str] = ("glorot", "isometric-code")) -> str:
    recs = _select(read_jsonl(_res(T2_FILE)), dataset=dataset, epochs_cfg=epochs, patience=None, dropout_rng=rng)
    P = paper_numbers()["table2"]
    layers = [L for L in P["layers"] if any(r["layers"] == L for r in recs)] or list(P["layers"])
    rows, sts = [], []
    for init, label in [x for x in T2_INITS if x[0] in inits]:
        st = [_stats(_select(recs, init=init, layers=L)) for L in layers]
        sts += st
        rows.append([label] + [_cell(x) for x in st])
        rows.append(["  n (seeds)"] + [str(x[2]) if x else "0" for x in st])
    for key, label in (("glorot", "GCN (paper)"), ("isometric", "GCN + init (paper)")):
        rows.append(_paper_row(label, [P[dataset][key][P["layers"].index(L)] for L in layers]))
    cmd = _cmd("gcn_table2.py", f"--out experiments/results/{T2_FILE} --epochs {epochs} --seeds 10 "
                                f"--datasets {dataset} --layers {' '.join(map(str, layers))} "
                                f"--inits {' '.join(inits)} --dropout-rng {rng}")
    return (f"{dataset.capitalize()}: {_protocol(epochs, None, _ns(sts), rng)}.  Command: {cmd}\n\n"
            + markdown_table(["init"] + [str(L) for L in layers], rows))


def block_table2_cora() -> str:
    return _table2("cora")


def block_table2_citeseer() -> str:
    return _table2("citeseer")


def block_table2_cora_800() -> str:
    """The earlier 800-epoch grid, the only one with the paper's eq. 14 bound."""
    return _table2("cora", epochs=800, inits=("glorot", "isometric", "isometric-code"))


# --------------------------------------------------------------------------- init bounds
def block_init_bounds() -> str:
    from gcn_common import data_root, load
    from graphode.nn.init import isometric_bound

    ds = load("cora", data_root(None))
    b_paper = isometric_bound(ds.graph, c_prime=64, variant="paper")
    b_code = isometric_bound(ds.graph, variant="code")
    he = math.sqrt(6 / 64)
    rows = [
        ["eq. 14 (`init=\"isometric\"`): `sqrt(3N² / (C′(Σᵢ(dᵢ+1))²))`, C′ = 64", f"{b_paper:.4f}",
         f"{64 * b_paper ** 2 / 3:.3f}"],
        ["authors' code (`init=\"isometric-code\"`): `N / sqrt(3 Σᵢⱼ dᵢdⱼ)`, dᵢ = 1 + row sum of Â",
         f"{b_code:.4f}", f"{64 * b_code ** 2 / 3:.2f}"],
        ["for reference: He/Kaiming-uniform `sqrt(6/fan_in)`", f"{he:.3f}", f"{64 * he ** 2 / 3:.0f}"],
    ]
    return markdown_table(["", "bound b on Cora (hidden layers)", "`fan_in · Var(W)` (64 → 64)"], rows)


def block_init32() -> str:
    """The eq. 14 bound against the code's at 32 layers with the gradient-flow rule (gcn_init32.py)."""
    recs = _select(read_jsonl(_res("gcn_init32.jsonl")), dataset="cora", layers=32)
    rows = []
    for init, label in T2_INITS[1:]:
        for r in sorted(_select(recs, init=init), key=lambda r: r["seed"]):
            rows.append([label, str(r["seed"]), f"{100 * r['test_acc']:.1f}", f"{100 * r['val_acc']:.1f}",
                         str(len(r["skips"]))])
    epochs = sorted({r["epochs_cfg"] for r in recs})
    rngs = sorted({r["dropout_rng"] for r in recs})
    cmd = _cmd("gcn_init32.py", "--out experiments/results/gcn_init32.jsonl")
    if not rows:
        return _not_run("Cora, 32 layers, GF rewiring, " + _protocol(300, None, "1", "torch"), cmd)
    return (f"Cora, 32 layers, gradient-flow rewiring (p = 0.1, every epoch), "
            f"{_protocol(epochs[0], None, _ns([_stats([r]) for r in recs]), rngs[0] if len(rngs) == 1 else None)}."
            f"  Command: {cmd}\n\n"
            + markdown_table(["init", "seed", "test (%)", "val (%)", "layers rewired"], rows))


# --------------------------------------------------------------------------- ablation
ABL_FILE = "gcn_ablation.jsonl"


def _variants():
    from gcn_ablation import VARIANTS

    return VARIANTS


def block_ablation() -> str:
    """One row per variant, depth and dropout stream (a row never mixes the two streams)."""
    recs = _select(read_jsonl(_res(ABL_FILE)), epochs_cfg=1500, patience=None)
    stream = {"torch": "torch", "philox": "Philox"}
    rows, sts = [], []
    for v, (cfg, what) in _variants().items():
        for L in sorted({r["layers"] for r in recs}):
            for rng in ("torch", "philox"):
                rs = _select(recs, variant=v, layers=L, dropout_rng=rng)
                if not rs:
                    continue
                val, test = _stats(rs, "val_acc"), _stats(rs, "test_acc")
                sts.append(test)
                nskip = sorted({len(r["skips"]) for r in rs})
                first = sorted({min(r["skips"]) + 1 for r in rs if r["skips"]})
                rows.append([f"`{v}`", str(L), stream[rng], str(len(rs)), _cell(val), _cell(test),
                             "/".join(map(str, nskip)) + (f" (first: {'/'.join(map(str, first))})" if first else ""),
                             what])
    cmd = _cmd("gcn_ablation.py", f"--out experiments/results/{ABL_FILE} --layers 64 --seeds 2 --dropout-rng philox "
                                  "--variants ...")
    proto = (f"Cora, 1500 epochs, no early stop, {_ns(sts)} seeds per cell, dropout masks from torch's RNG "
             "(`rand_like`) or the fused Philox dropout (`graphode.ops.dropout`) as the row says")
    if not rows:
        return _not_run(proto, cmd)
    return (f"{proto}; to be ranked on the validation accuracy only.  Command: {cmd}\n\n"
            + markdown_table(["variant", "layers", "dropout stream", "n", "val", "test",
                              "skips (first skipped layer, 1-based)", "what changes"], rows))


# --------------------------------------------------------------------------- Table 4
T4_FILE = "gcn_table4_paper.jsonl"
T4_OLD = "gcn_table4_1500.jsonl"


def _table4(records, methods: Sequence[Tuple[str, str]], layers: Sequence[int], dataset: str = "cora",
            paper: bool = True) -> Tuple[List[List[str]], List]:
    P = paper_numbers()["table4"]
    rows, sts = [], []
    for m, label in methods:
        st = [_stats(_select(records, method=m, layers=L, dataset=dataset)) for L in layers]
        if not any(st):
            continue
        sts += st
        rows.append([label] + [_cell(x) for x in st])
        pk = "Ours (init + rewiring)" if m.startswith("Ours") else m.replace(" (published settings)", "")
        if paper and dataset == "cora" and pk in P["cora"]:
            rows.append(_paper_row("  paper", [P["cora"][pk][P["layers"].index(L)] if L in P["layers"] else None
                                               for L in layers]))
    return rows, sts


def _same_config_ablation_runs() -> List[dict]:
    """The ablation's runs whose configuration is exactly a Table 4 method's (``gf-online`` is
    "Ours, GF rule (paper)", ``de-restart-sym`` "Ours, DE rule (code protocol)"), recorded
    under that method's name: the same run, so Table 4 uses it rather than repeating it."""
    from gcn_table4 import METHODS

    same = {v: m for v, (cfg, _) in _variants().items() for m, mcfg in METHODS.items() if cfg == mcfg}
    return [{**{k: x for k, x in r.items() if k != "variant"}, "method": same[r["variant"]], "from_ablation": True}
            for r in read_jsonl(_res(ABL_FILE)) if r.get("variant") in same]


def _table4_paper_runs() -> List[dict]:
    """Table 4's paper-protocol runs: ``gcn_table4_paper.jsonl`` and the same-config ablation runs
    (a run in both is counted once)."""
    out, seen = [], set()
    for r in read_jsonl(_res(T4_FILE)) + _same_config_ablation_runs():
        k = (r["dataset"], r["layers"], r["method"], r["seed"], r.get("patience"), r["epochs_cfg"], r["dropout_rng"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def block_table4_cora() -> str:
    recs = _select(_table4_paper_runs(), epochs_cfg=1500, patience=None, dataset="cora")
    ours = _select(recs, model="gcn", dropout_rng="philox")
    layers = paper_numbers()["table4"]["layers"]
    rows, sts = _table4(ours, [("Vanilla GCN", "Vanilla GCN (Glorot)"),
                               ("Ours, GF rule (paper)", "Ours, GF rule as the paper states it (online, p = 0.1)"),
                               ("Ours, DE rule (code protocol)", "Ours, DE rule as the authors' code runs it")],
                        layers)
    rngs = sorted({r["dropout_rng"] for r in ours})
    cmd = _cmd("gcn_table4.py", f"--out experiments/results/{T4_FILE} --epochs 1500 --seeds 10 "
                                "--methods \"Ours, GF rule (paper)\" \"Ours, DE rule (code protocol)\" \"Vanilla GCN\"")
    if not rows:
        return _not_run("Cora, " + _protocol(1500, None, "10", "philox"), cmd)
    n_abl = sum(1 for r in ours if r.get("from_ablation"))
    also = (f" ({n_abl} of the runs are the ablation's runs of the same configuration, "
            f"`experiments/results/{ABL_FILE}`)" if n_abl else "")
    return (f"Cora, {_protocol(1500, None, _ns(sts), rngs[0] if len(rngs) == 1 else None)}{also}.  "
            f"Command: {cmd}\n\n" + markdown_table(["method"] + [str(L) for L in layers], rows))


def block_table4_baselines() -> str:
    recs = _select(read_jsonl(_res(T4_FILE)), epochs_cfg=1500, patience=None, dataset="cora")
    layers = paper_numbers()["table4"]["layers"]
    methods = [(f"{m} (published settings)", f"{m} (benchmark's Cora settings)")
               for m in ("GCNII", "JKNet", "SGC", "APPNP")]
    rows, sts = _table4(recs, methods, layers)
    cmd = _cmd("gcn_table4.py", f"--out experiments/results/{T4_FILE} --epochs 1500 --seeds 5 --methods "
                                "\"GCNII (published settings)\" \"JKNet (published settings)\" "
                                "\"SGC (published settings)\" \"APPNP (published settings)\"")
    if not rows:
        return _not_run("Cora, " + _protocol(1500, None, "5", None, "PyG models, `F.dropout`"), cmd)
    return (f"Cora, {_protocol(1500, None, _ns(sts), None, 'PyG models, `F.dropout`')}.  Command: {cmd}\n\n"
            + markdown_table(["method"] + [str(L) for L in layers], rows))


def block_table4_patience() -> str:
    recs = _select(read_jsonl(_res(T4_OLD)), epochs_cfg=1500, patience=300, dataset="cora")
    layers = paper_numbers()["table4"]["layers"]
    rows, sts = _table4(recs, [("Vanilla GCN", "Vanilla GCN (Glorot)"),
                               ("Ours (init + rewiring)", "Ours as measured then (GF rule, p = 0.1, online)")], layers)
    stopped = [r for r in recs if r["best_epoch"] + 300 < 1500]
    cmd = _cmd("gcn_table4.py", f"--out experiments/results/{T4_OLD} --epochs 1500 --patience 300 --seeds 10 "
                                "--dropout-rng torch --methods \"Ours (init + rewiring)\" \"Vanilla GCN\"")
    return (f"Cora, {_protocol(1500, 300, _ns(sts), 'torch')}: {len(stopped)} of {len(recs)} runs stopped "
            f"before epoch 1500.  Command: {cmd}\n\n" + markdown_table(["method"] + [str(L) for L in layers], rows))


# --------------------------------------------------------------------------- Table 3
T3_FILE = "gcn_table3_paper.jsonl"


def block_table3() -> str:
    """Cora (and CiteSeer where run) at 2/16/32 layers; "Vanilla GCN" and "Ours" are the
    Table 4 runs (the same configs at 2/16/32 layers), the rest ``gcn_table3.py``'s."""
    P = paper_numbers()["table3"]
    t3 = _select(read_jsonl(_res(T3_FILE)), epochs_cfg=1500, patience=None)
    t4 = _select(_table4_paper_runs(), epochs_cfg=1500, patience=None, dropout_rng="philox")
    ours = _ours_method()
    datasets = [d for d in ("cora", "citeseer") if any(r["dataset"] == d for r in t3 + t4)] or ["cora"]
    layers = P["layers"]
    cols = [(d, L) for d in datasets for L in layers]
    rows, sts = [], []
    tricks = ["Residual", "Initial", "Jumping", "Dense", "BatchNorm", "PairNorm", "DropEdge"]
    entries = ([("Vanilla GCN", t4, "Vanilla GCN")] + [(m, t3, m + (" (csr)" if m != "DropEdge" else ""))
                                                       for m in tricks]
               + [("Ours (init + rewiring)", t4, ours)])
    for label, recs, method in entries:
        st = [_stats(_select(recs, method=method, dataset=d, layers=L)) for d, L in cols]
        if not any(st):
            continue
        sts += st
        rows.append([label] + [_cell(x) for x in st])
        rows.append(_paper_row("  paper", [P[d][label][layers.index(L)] if d in P else None for d, L in cols]))
    cmd = _cmd("gcn_table3.py", f"--out experiments/results/{T3_FILE} --epochs 1500 --seeds 5 --datasets cora "
                                "--methods \"Residual (csr)\" \"Initial (csr)\" \"Jumping (csr)\" \"Dense (csr)\" "
                                "\"BatchNorm (csr)\" \"PairNorm (csr)\" DropEdge")
    if not rows:
        return _not_run(_protocol(1500, None, "5", "philox", "the baselines are PyG models with `F.dropout`"), cmd)
    return (f"{_protocol(1500, None, _ns(sts), 'philox', 'the baselines are PyG models with `F.dropout`')}.  "
            f"Vanilla GCN and Ours: the Table 4 runs.  Command: {cmd}\n\n"
            + markdown_table(["method"] + [f"{d} {L}" for d, L in cols], rows))


# --------------------------------------------------------------------------- Table 6
T6_FILE = "gcn_table6_paper.jsonl"


def block_table6() -> str:
    P = paper_numbers()["table6"]
    recs = _select(read_jsonl(_res(T6_FILE)), epochs_cfg=1500, patience=None, layers=32)
    datasets = [d for d in P["datasets"] if any(r["dataset"] == d for r in recs)] or list(P["datasets"])
    ours = _ours_method()
    methods = [("GCN", "GCN", "GCN"), (ours, "Ours", "Ours (init + rewiring)")] + [
        (f"{m} (published settings)", f"{m} (benchmark's settings)", m) for m in ("GCNII", "JKNet", "SGC", "APPNP")]
    rows, sts = [], []
    for m, label, pk in methods:
        st = [_stats(_select(recs, method=m, dataset=d)) for d in datasets]
        if not any(st):
            continue
        sts += st
        rows.append([label] + [_cell(x) for x in st])
        if pk in P:
            rows.append(["  paper"] + [f"{P[pk]['mean'][P['datasets'].index(d)]:.1f} ± "
                                       f"{P[pk]['std'][P['datasets'].index(d)]:.1f}" for d in datasets])
    cmd = _cmd("gcn_table6.py", f"--out experiments/results/{T6_FILE} --epochs 1500 --seeds 10 --methods GCN "
                                f"\"{ours}\" \"GCNII (published settings)\" \"JKNet (published settings)\" "
                                "\"SGC (published settings)\" \"APPNP (published settings)\"")
    if not rows:
        return _not_run("32 layers, geom-gcn splits, " + _protocol(1500, None, "10", "philox")
                        + " (splits per cell as seeds)", cmd)
    return (f"32 layers, geom-gcn splits (run i: split i, seed i), {_protocol(1500, None, _ns(sts), 'philox')}"
            f" (splits per cell as seeds).  Command: {cmd}\n\n"
            + markdown_table(["method"] + datasets, rows))


# --------------------------------------------------------------------------- figures
def _figures(stem: str, settings: Sequence[Tuple[str, str]]) -> str:
    path = _res(stem + ".json")
    if not os.path.exists(path):
        if os.path.exists(_res(stem + ".npz")):
            return (f"The accuracies of the runs behind `experiments/results/{stem}.npz` were not recorded in a "
                    f"committed file (the arrays predate the JSON summary that `gcn_figures.py` now writes beside "
                    f"them); re-running the command above records them.")
        return f"**Not run yet.**  `{stem}.npz` / `{stem}.json` are written by `experiments/gcn_figures.py`."
    with open(path) as f:
        meta = json.load(f)
    rows = []
    for key, label in settings:
        r = meta["runs"].get(key)
        if r is None:
            continue
        skips = r["skips"]
        rows.append([label, f"{100 * r['test_acc']:.1f}", f"{100 * r['val_acc']:.1f}", str(r["best_epoch"]),
                     (f"{min(skips) + 1}–{max(skips) + 1} ({len(skips)})" if skips else "none")])
    head = (f"{meta['dataset']}{' split ' + str(meta['split']) if meta['dataset'] != 'cora' else ''}, "
            f"{meta['layers']} layers, {meta['epochs']} epochs, one run (seed {meta['seed']}), dropout masks from "
            f"{meta.get('dropout_rng', 'torch')}")
    return head + "\n\n" + markdown_table(["setting", "test (%)", "val (%)", "best epoch",
                                            "skips: layers 1-based (count)"], rows)


def block_figures_cora() -> str:
    return _figures("gcn_figures", [("vanilla", "GCN, Glorot"), ("init", "+ isometric init (code's bound)"),
                                    ("rewiring", "+ GF rewiring (Glorot)"), ("init_rewiring", "+ init + rewiring")])


def _readings(stem: str, settings: Sequence[Tuple[str, str]], mid: int) -> str:
    """What the heatmaps show, read from their raw arrays: log10 of the gradient norm of layer
    ``mid`` (1-based) at the first epoch and of layer 1 at epochs 60 and 200; the layers whose
    gradient is exactly 0 from some epoch to the end (dead ReLUs); the change of each layer's
    Dirichlet energy over the run (log10 last/first), its smallest and largest."""
    path = _res(stem + ".npz")
    if not os.path.exists(path):
        return f"**Not run yet.**  `{stem}.npz` is written by `experiments/gcn_figures.py`."
    arr = np.load(path)
    rows = []

    def lg(v):
        return "0 (exactly)" if v == 0 else f"{math.log10(v):.1f}"

    for key, label in settings:
        if f"{key}_gf" not in arr.files:
            continue
        gf, de = arr[f"{key}_gf"], arr[f"{key}_de"]
        T = gf.shape[1]
        dead = []
        for l in range(gf.shape[0]):
            e = next((e for e in range(T) if not gf[l, e:].any()), None)
            if e is not None:
                dead.append(f"{l + 1} (from {e})")
        with np.errstate(divide="ignore"):
            drop = np.log10(de[:, -1] / de[:, 0])
        rows.append([label, lg(gf[mid - 1, 0]), lg(gf[0, min(60, T - 1)]), lg(gf[0, min(200, T - 1)]),
                     ", ".join(dead) or "none", f"{drop.min():.1f} … {drop.max():.1f}"])
    return markdown_table([
        "setting", f"log10 ‖∂L/∂W‖, layer {mid}, epoch 0", "layer 1, epoch 60", "layer 1, epoch 200",
        "layers with zero gradient to the end (from epoch)", "log10 Dirichlet energy, last / first epoch (min … max "
        "over layers)"], rows)


def block_figures_cora_readings() -> str:
    return _readings("gcn_figures", [("vanilla", "GCN, Glorot"), ("init", "+ isometric init (code's bound)"),
                                     ("rewiring", "+ GF rewiring (Glorot)"), ("init_rewiring", "+ init + rewiring")],
                     mid=5)


def block_figures_table6_readings() -> str:
    return _readings("gcn_table6_texas", [("vanilla", "GCN, Glorot"), ("init_rewiring", "Ours (init + rewiring)")],
                     mid=16)


def block_figures_table6() -> str:
    return _figures("gcn_table6_texas", [("vanilla", "GCN, Glorot"), ("init_rewiring", "Ours (init + rewiring)")])


# --------------------------------------------------------------------------- rewiring statistics
def block_rewiring_stats() -> str:
    recs = _select(_table4_paper_runs(), epochs_cfg=1500, patience=None, dataset="cora", dropout_rng="philox")
    rows = []
    for m in ("Ours, GF rule (paper)", "Ours, DE rule (code protocol)"):
        for L in paper_numbers()["table4"]["layers"]:
            rs = _select(recs, method=m, layers=L)
            if not rs:
                continue
            n = [len(r["skips"]) for r in rs]
            first = [min(r["skips"]) + 1 for r in rs if r["skips"]]
            ep = [max(int(v) for v in (r.get("skip_epochs") or {}).values()) for r in rs if r.get("skip_epochs")]
            rows.append([m, str(L), str(len(rs)), str(max(0, L - 2)), f"{min(n)}–{max(n)}",
                         f"{min(first)}–{max(first)}" if first else "—", f"{min(ep)}–{max(ep)}" if ep else "—"])
    if not rows:
        return (f"**Not run yet**: no run in `experiments/results/{T4_FILE}` (the Table 4 block above) to count "
                "skips in.")
    return ("Cora, the runs of the Table 4 block above (layers are 1-based; eligible: 2 … L−1).\n\n"
            + markdown_table(["rule", "layers", "runs", "eligible layers", "layers rewired", "first rewired layer",
                              "epoch of the last skip (probe epoch for the code protocol)"], rows))


def _ours_method() -> str:
    """The Table 4 method that docs/RESULTS.md calls "Ours" (the selected default)."""
    return OURS


#: the method selected (on validation accuracy, see the ablation) as "Ours" in Tables 3, 4 and 6
OURS = "Ours, GF rule (paper)"


# --------------------------------------------------------------------------- earlier, reduced budgets
#: the reduced-budget runs reported before the paper-protocol tables (400 epochs, early stop after
#: 200 epochs without a better validation accuracy; every model at the GCN's training settings:
#: Adam, lr 0.005, weight decay 5e-4, hidden 64, dropout 0.6; torch's dropout stream)
OLD_SETTINGS = "every model at the GCN's training settings, not the baselines' published ones"


def block_table4_400() -> str:
    recs = _select(read_jsonl(_res("gcn_table4.jsonl")), epochs_cfg=400, patience=200, dataset="cora",
                   dropout_rng="torch")
    layers = paper_numbers()["table4"]["layers"]
    rows, sts = _table4(recs, [(m, m) for m in ("Vanilla GCN", "JKNet", "SGC", "GCNII", "APPNP",
                                                  "Ours (init + rewiring)")], layers)
    de, de_st = _table4(recs, [("Ours, DE rule (code)", "Ours, DE rule (code), online")], layers, paper=False)
    cmd = (_cmd("gcn_table4.py", "--out experiments/results/gcn_table4.jsonl --epochs 400 --patience 200 --seeds 2 "
                                 "--dropout-rng torch --methods \"Ours (init + rewiring)\" \"Ours, DE rule (code)\"")
           + " and `--seeds 1 --methods \"Vanilla GCN\" GCNII APPNP SGC JKNet`")
    return (f"Cora, {_protocol(400, 200, _ns(sts + de_st), 'torch', OLD_SETTINGS)}.  Command: {cmd}\n\n"
            + markdown_table(["method"] + [str(L) for L in layers], rows + de))


def block_table3_400() -> str:
    P = paper_numbers()["table3"]
    recs = _select(read_jsonl(_res("gcn_table3.jsonl")) + read_jsonl(_res("gcn_table3_b.jsonl")),
                   epochs_cfg=400, patience=200, dataset="cora")
    layers = P["layers"]
    rows, sts = [], []
    for m in ("Vanilla GCN", "Residual", "Initial", "Jumping", "Dense", "BatchNorm", "PairNorm", "DropEdge",
              "Ours (init + rewiring)", "Ours, DE rule (code)"):
        st = [_stats(_select(recs, method=m, layers=L)) for L in layers]
        if not any(st):
            continue
        sts += st
        rows.append([m] + [_cell(x) for x in st])
        if m in P["cora"]:
            rows.append(_paper_row("  paper", P["cora"][m]))
    cmd = (_cmd("gcn_table3.py", "--out experiments/results/gcn_table3.jsonl --epochs 400 --patience 200 --seeds 1 "
                                 "--datasets cora --dropout-rng torch --part 0 --nparts 2")
           + " and `--part 1 --nparts 2 --out experiments/results/gcn_table3_b.jsonl`")
    return (f"Cora, {_protocol(400, 200, _ns(sts), 'torch', OLD_SETTINGS + '; the baselines on PyG `GCNConv`')}."
            f"  Command: {cmd}\n\n" + markdown_table(["method"] + [f"cora {L}" for L in layers], rows))


def block_table6_400() -> str:
    P = paper_numbers()["table6"]
    recs = _select(read_jsonl(_res("gcn_table6.jsonl")) + read_jsonl(_res("gcn_table6_actor.jsonl")),
                   epochs_cfg=400, patience=200, layers=32)
    datasets = [d for d in P["datasets"] if any(r["dataset"] == d for r in recs)]
    rows, sts = [], []
    for m, pk in (("GCN", "GCN"), ("SGC", "SGC"), ("GCNII", "GCNII"), ("JKNet", "JKNet"), ("APPNP", "APPNP"),
                  ("Ours (init + rewiring)", "Ours (init + rewiring)"), ("Ours, DE rule (code)", None)):
        st = [_stats(_select(recs, method=m, dataset=d)) for d in datasets]
        if not any(st):
            continue
        sts += st
        rows.append([m] + [_cell(x) for x in st])
        if pk in P:
            rows.append(["  paper"] + [f"{P[pk]['mean'][P['datasets'].index(d)]:.1f} ± "
                                       f"{P[pk]['std'][P['datasets'].index(d)]:.1f}" for d in datasets])
    cmd = (_cmd("gcn_table6.py", "--out experiments/results/gcn_table6.jsonl --epochs 400 --patience 200 --seeds 10 "
                                 "--dropout-rng torch --datasets texas wisconsin cornell --methods GCN "
                                 "\"Ours (init + rewiring)\" \"Ours, DE rule (code)\" GCNII APPNP SGC JKNet")
           + " and `--seeds 1 --datasets actor --out experiments/results/gcn_table6_actor.jsonl`")
    return (f"32 layers, geom-gcn splits (run i: split i, seed i), "
            f"{_protocol(400, 200, _ns(sts), 'torch', OLD_SETTINGS)} (splits per cell as seeds; Actor: split 0 "
            f"only).  Command: {cmd}\n\n" + markdown_table(["method"] + datasets, rows))


# --------------------------------------------------------------------------- registry
BLOCKS: Dict[str, Callable[[], str]] = {
    "gcn-init-bounds": block_init_bounds,
    "gcn-table2-cora": block_table2_cora,
    "gcn-table2-citeseer": block_table2_citeseer,
    "gcn-table2-cora-800": block_table2_cora_800,
    "gcn-init32": block_init32,
    "gcn-ablation": block_ablation,
    "gcn-table4-cora": block_table4_cora,
    "gcn-table4-baselines": block_table4_baselines,
    "gcn-table4-patience": block_table4_patience,
    "gcn-table3": block_table3,
    "gcn-table6": block_table6,
    "gcn-figures-cora": block_figures_cora,
    "gcn-figures-table6": block_figures_table6,
    "gcn-figures-cora-readings": block_figures_cora_readings,
    "gcn-figures-table6-readings": block_figures_table6_readings,
    "gcn-rewiring-stats": block_rewiring_stats,
    "gcn-table4-400": block_table4_400,
    "gcn-table3-400": block_table3_400,
    "gcn-table6-400": block_table6_400,
}


def write_blocks(doc: str = os.path.join(os.path.dirname(HERE), "docs", "RESULTS.md")) -> List[str]:
    """Rewrite this module's blocks in ``doc`` (what ``docs/generate.py`` does for every
    producer; kept for running this module on its own).  Returns the names of the
    blocks that changed."""
    import re

    with open(doc, encoding="utf-8") as f:
        text = f.read()
    changed = []
    for name, fn in BLOCKS.items():
        m = re.search(rf"^<!-- BEGIN GENERATED: {re.escape(name)} -->[ \t]*$", text, re.M)
        if not m:
            continue
        end = text.find(f"<!-- END GENERATED: {name} -->", m.end())
        body = fn().strip("\n")
        new = f"\n{body}\n" if body else "\n"
        if text[m.end():end] != new:
            text = text[:m.end()] + new + text[end:]
            changed.append(name)
    tmp = f"{doc}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, doc)
    return changed


def main(argv=None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["--write"]:
        print("rewrote:", ", ".join(write_blocks()) or "nothing (every block is current)")
        return
    for n in args or list(BLOCKS):
        print(f"<!-- {n} -->\n{BLOCKS[n]()}\n")


if __name__ == "__main__":
    main()
