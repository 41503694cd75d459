"""The deep-GCN report (experiments/report_gcn.py) and its inputs: the blocks render
from the committed raw runs, the paper's numbers file agrees with the paper's text,
and the aggregation neither mixes dropout streams nor early-stopped with full runs."""
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "experiments")
sys.path.insert(0, EXP)

import gcn_common  # noqa: E402
import report_gcn  # noqa: E402

PAPER_TXT = os.path.join(os.path.dirname(ROOT), "shared", "papers", "deep-gcn-gradient-flow.txt")


@pytest.mark.parametrize("name", sorted(report_gcn.BLOCKS))
def test_every_block_renders(name):
    out = report_gcn.BLOCKS[name]()
    assert isinstance(out, str) and out.strip()
    if "|---" not in out:  # a block without a table says why and how to produce its runs
        assert "Not run yet" in out or "not recorded" in out, name
        assert "experiments/" in out or "gcn_figures.py" in out, name


def test_not_run_blocks_name_their_protocol_and_command(monkeypatch):
    monkeypatch.setattr(report_gcn, "RESULTS", "/nonexistent")
    for name in ("gcn-table4-cora", "gcn-table4-baselines", "gcn-table3", "gcn-table6", "gcn-ablation"):
        out = report_gcn.BLOCKS[name]()
        assert out.startswith("**Not run yet**") and "1500 epochs, no early stop" in out, name
        assert "Command: `python experiments/gcn_" in out, name


def test_table_blocks_state_their_protocol():
    for name, fn in report_gcn.BLOCKS.items():
        out = fn()
        if "seeds per cell" in out or "splits per cell" in out:
            assert "epochs" in out and ("early stop" in out), name


@pytest.mark.skipif(not os.path.exists(PAPER_TXT), reason="the paper's text (../shared/papers) is not here")
def test_paper_numbers_match_the_paper_text():
    text = open(PAPER_TXT, encoding="utf-8").read()
    P = gcn_common.paper_numbers()

    def row(prefix):
        m = re.search(r"^" + re.escape(prefix) + r"\s+([\d.\s±]+)$", text, re.M)
        assert m, prefix
        return [float(v) for v in re.findall(r"\d+\.\d+", m.group(1))]

    t2 = P["table2"]
    assert row("Cora GCN") == t2["cora"]["glorot"]
    assert row("CiteSeer GCN") == t2["citeseer"]["glorot"]
    assert row("PubMed GCN") == t2["pubmed"]["glorot"]
    inits = re.findall(r"^GCN \+ Our Init ([\d. ]+)$", text, re.M)
    assert [[float(v) for v in s.split()] for s in inits] == [t2[d]["isometric"] for d in ("cora", "citeseer",
                                                                                            "pubmed")]
    t4 = P["table4"]["cora"]
    for name, prefix in (("Vanilla GCN", "Vanilla-GCN [1]"), ("GCNII", "GCNII [24]"), ("JKNet", "JKNet [50]"),
                         ("SGC", "SGC [52]"), ("GAT", "GAT [3]"), ("Ours (init + rewiring)", "Ours")):
        assert row(prefix)[:6] == t4[name], name
    t3 = P["table3"]
    for name, prefix in (("BatchNorm", "Normalization BatchNorm"), ("PairNorm", "PairNorm"),
                         ("DropEdge", "DropEdge"), ("Initial", "Connection Initial"), ("Dense", "Dense")):
        v = row(prefix)
        assert v[:3] == t3["cora"][name] and v[3:6] == t3["citeseer"][name], name
    t6 = P["table6"]
    for name, prefix in (("GCN", "GCN [1]"), ("GCNII", "GCNII [24]"), ("Ours (init + rewiring)", "Ours")):
        v = [float(x) for x in re.findall(r"(\d+\.\d+)±", re.search(r"^" + re.escape(prefix) + r" (\d.*±.*)$",
                                                                         text, re.M).group(1))]
        assert v[-4:] == t6[name]["mean"], name


def test_aggregate_never_mixes_streams_or_protocols(tmp_path):
    recs = [
        {"dataset": "cora", "layers": 4, "method": "m", "model": "gcn", "seed": 0, "patience": None,
         "epochs_cfg": 1500, "test_acc": 0.8, "dropout_rng": "philox"},
        {"dataset": "cora", "layers": 4, "method": "m", "model": "gcn", "seed": 1, "patience": None,
         "epochs_cfg": 1500, "test_acc": 0.7, "dropout_rng": "philox"},
        {"dataset": "cora", "layers": 4, "method": "m", "model": "gcn", "seed": 2, "patience": None,
         "epochs_cfg": 1500, "test_acc": 0.1},  # before dropout_rng existed: torch
        {"dataset": "cora", "layers": 4, "method": "m", "model": "gcn", "seed": 3, "patience": 300,
         "epochs_cfg": 1500, "test_acc": 0.1, "dropout_rng": "philox"},
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs + recs[:1]))  # one run recorded twice
    got = gcn_common.read_jsonl(str(path))
    assert len(got) == 4 and got[2]["dropout_rng"] == "torch"
    agg = gcn_common.aggregate(got, ("dataset", "layers", "method"), 1500, None, "philox")
    m, s, n = agg[("cora", 4, "m")]
    assert n == 2 and m == pytest.approx(75.0) and s == pytest.approx(5.0)
    assert gcn_common.aggregate(got, ("dataset", "layers", "method"), 1500, None, "torch")[("cora", 4, "m")][2] == 1
