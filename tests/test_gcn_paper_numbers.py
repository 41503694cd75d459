"""The published numbers the deep-GCN tables print beside ours (experiments/gcn_paper.yaml,
read by experiments/gcn_table{2,3,4,6}.py) say what the paper says."""
import os
import re
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_TEXT = os.path.join(ROOT, "..", "shared", "papers", "deep-gcn-gradient-flow.txt")
TABLES = ("table2", "table3", "table4", "table6")


def _doc():
    with open(os.path.join(ROOT, "experiments", "gcn_paper.yaml")) as f:
        return yaml.safe_load(f)


def _means(line: str):
    """The numbers of a table line; ``60.12±4.22`` counts as its mean, 60.12."""
    return [float(x) for x in re.findall(r"(?<![±\d.])(\d+\.\d+)", line)]


def _contains(seq, sub) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_every_row_stands_in_the_paper():
    if not os.path.exists(PAPER_TEXT):
        pytest.skip("the paper's text is not in ../shared")
    with open(PAPER_TEXT) as f:
        lines = f.read().splitlines()
    doc = _doc()
    for table in TABLES:
        for row in doc[table]["rows"]:
            candidates = [ln for ln in lines if ln.startswith(row["label"] + " ")]
            assert candidates, (table, row["label"])
            assert any(_contains(_means(ln), [float(x) for x in row["numbers"]]) for ln in candidates), (table, row)


def test_the_checker_rejects_a_wrong_number():
    line = "GCN [1] 24.01±3.42 58.72±4.97 58.64±8.40 60.12±4.22 52.94±3.99 54.05±7.11 25.46±1.43"
    assert _means(line) == [24.01, 58.72, 58.64, 60.12, 52.94, 54.05, 25.46]
    assert _contains(_means(line), [60.12, 52.94, 54.05, 25.46])
    assert not _contains(_means(line), [60.12, 52.94, 54.50, 25.46])
    assert not _contains(_means(line), [60.12, 54.05])  # not side by side


def test_the_tables_read_them():
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    try:
        import gcn_common
        import gcn_table3
        import gcn_table4
        import gcn_table6
    finally:
        sys.path.remove(os.path.join(ROOT, "experiments"))
    doc = _doc()
    assert gcn_common.paper("table2")[("cora", "glorot")][:2] == [81.1, 81.9]
    for table, mod, width in (("table3", gcn_table3, 6), ("table4", gcn_table4, 6), ("table6", gcn_table6, 4)):
        assert [r["key"] for r in doc[table]["rows"]] == list(mod.PAPER)
        assert set(mod.PAPER) <= set(mod.METHODS)  # every published row has a method that is run
        assert all(len(v) == width for v in mod.PAPER.values())
    assert len(gcn_table4.PAPER_LAYERS) == 6 and len(gcn_table6.DATASETS) == 4
