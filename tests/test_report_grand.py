"""The GRAND blocks of docs/RESULTS.md (experiments/report_grand.py; tests/test_docs_generated.py
checks the documents against them) compute what the raw results say, and the paper's numbers
they print come from graphode/configs/papers/grand.yaml, which must say what the paper says."""
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import report_grand as R  # noqa: E402


def test_table1_means_are_the_raw_files_means():
    rows = [r for r in R._read(R.OURS) if r["model"] == "grand-l" and r["dataset"] == "cora"
            and r["split"] == "grand" and r["variant"] == "code"]
    if not rows:
        pytest.skip("no GRAND-l Cora runs recorded yet")
    a = 100 * np.array([r["test_acc"] for r in rows])
    assert f"{a.mean():.1f} ± {a.std():.1f} (n={a.size})" in R.table1()


def test_paper_numbers_file_matches_the_paper():
    path = os.path.join(ROOT, "..", "shared", "papers", "grand-graph-neural-diffusion.txt")
    if not os.path.exists(path):
        pytest.skip("the paper's text is not in ../shared")
    with open(path) as f:
        text = f.read()
    tables = R.paper()["tables"]
    names = {"grand-l": "GRAND-l", "grand-nl": "GRAND-nl", "grand-nl-rw": "GRAND-nl-rw"}
    # Table 1 rows: "GRAND-l (ours) 84.7 ± 0.6 73.3 ± 0.4 80.4 ± 0.4" (cora, citeseer, pubmed)
    for model, name in names.items():
        rows = re.findall(rf"^{re.escape(name)} \(ours\) (.*)$", text, flags=re.M)
        assert len(rows) == 2, name  # Table 1, then Table 2
        for table, row, order in ((tables["table1"], rows[0], ("cora", "citeseer", "pubmed")),
                                  (tables["table2"], rows[1], ("cora", "citeseer", "pubmed", "coauthor-cs",
                                                               "computers", "photo", "ogbn-arxiv"))):
            found = [(float(m), float(s)) for m, s in re.findall(r"([\d.]+)\s*±\s*([\d.]+)", row)]
            assert [tuple(table["numbers"][model][d]) for d in order] == found, (model, row)
