"""Generated blocks of docs/RESULTS.md, *Sweeps*, from ``experiments/results/sweep_gcn2_cora.json``
(written by ``experiments/sweep_gcn2_cora.py``).  Used by ``docs/generate.py``."""
from __future__ import annotations

import collections
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "sweep_gcn2_cora.json")
SHOWN = ("lr", "weight_decay", "hidden", "dropout")


def _load():
    try:
        with open(RESULTS) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _missing(step):
    return (f"*No raw results for the `{step}` step yet: "
            "`.venv/bin/python experiments/sweep_gcn2_cora.py`.*")


def _fmt_s(s):
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _settings(d):
    return ", ".join(f"{k} {d[k]}" for k in SHOWN if k in d)


def _facts(d):
    end = f" and {d['loadavg_1min_end']} at the end" if "loadavg_1min_end" in d else ""
    return f"{d['date']}, {d['cpus']} CPUs, 1-min load average {d['loadavg_1min']} at the start{end}"


def _mean_std(xs):
    xs = [100 * x for x in xs]
    return statistics.fmean(xs), statistics.pstdev(xs)


def block_sweep():
    d = _load().get("sweep")
    if not d:
        return _missing("sweep")
    stops = collections.Counter(r["epochs"] for r in d["rows"] if r["status"] == "stopped")
    done = sum(r["status"] == "completed" for r in d["rows"])
    best = d["rows"][0]
    s = d["settings"]
    return "\n".join([
        f"- {d['num_trials']} trials of at most {s['epochs']} epochs took {_fmt_s(d['wall_s'])} of wall time, "
        f"including Ray's start, on {s['cpus']} CPUs with 1 CPU per trial ({_facts(d)}).  ASHA (grace period "
        f"{s['grace_period']}, reduction factor {s['reduction_factor']}) stopped {d['num_stopped']} trials early ("
        + ", ".join(f"{n} at epoch {e}" for e, n in sorted(stops.items())) + f"); {done} ran all {s['epochs']} epochs.",
        f"- Best trial: validation {100 * best['val_acc']:.1f} % with {_settings(d['best'])}.",
    ])


def block_retrain():
    d = _load().get("retrain")
    if not d:
        return _missing("retrain")
    from gcn_table2 import PAPER  # the paper's Table 2 (test accuracy, %), by depth from 2 layers

    rows = []
    for key, label in (("best", "the sweep's best"), ("paper", "the deep-GCN paper's Table 1 settings")):
        r = d[key]
        m, sd = _mean_std([x["test_acc"] for x in r["runs"]])
        mv = statistics.fmean(100 * x["val_acc"] for x in r["runs"])
        rows.append(f"| {label} ({_settings(r['settings'])}) | {m:.2f} ± {sd:.2f} | {mv:.2f} |")
    rows.append(f"| paper, vanilla GCN at 2 layers (Table 2; 1500 epochs) | {PAPER[('cora', 'glorot')][0]:.1f} | |")
    n = len(d["best"]["runs"])
    return "\n".join([f"| config (2-layer GCN, Cora, public split, 200 epochs) | test accuracy, {n} seeds | mean val |",
                      "|---|---|---|", *rows, "", f"(Measured {_facts(d)}; one torch thread per run.)"])


def block_ray():
    d = _load().get("ray_vs_sequential")
    if not d:
        return _missing("ray_vs_sequential")
    ray, seq = d["ray"], d["sequential"]
    same = [a["test_acc"] for a in ray["runs"]] == [b["test_acc"] for b in seq["runs"]]
    return (f"- The per-seed test accuracies are {'identical' if same else '**not** identical'} "
            f"({len(seq['runs'])} seeds).\n"
            f"- Wall time: {_fmt_s(ray['wall_s'])} on Ray ({d['cpus']} CPUs, 1 per run, including Ray's start) "
            f"against {_fmt_s(seq['wall_s'])} sequentially on one torch thread ({_facts(d)}).")


BLOCKS = {"sweep-gcn2-cora": block_sweep, "sweep-gcn2-retrain": block_retrain, "sweep-gcn2-ray": block_ray}
