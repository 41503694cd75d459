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


def _rec(cell, seed, acc, wall=100.0, epochs=99, who="graphode", model="grand-l", dataset="cora", split="grand",
         variant="code"):
    return dict(cell=cell, seed=seed, test_acc=acc, val_acc=acc, wall_s=wall, epochs=epochs, who=who, model=model,
                dataset=dataset, split=split, variant=variant, best_epoch=0)


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A small plan and raw files written here: the blocks must say what these files say."""
    import json

    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    rows = [_rec("a", 0, 0.80, wall=90), _rec("a", 1, 0.84, wall=110), _rec("a", 1, 0.10),  # a repeat counts once
            _rec("b", 3, 0.70, epochs=249, dataset="citeseer", split="random")]
    ours.write_text("".join(json.dumps(r) + "\n" for r in rows))
    theirs.write_text(json.dumps(_rec("c", 0, 0.85, wall=600, who="authors")) + "\n")
    plan = [dict(name="a", model="grand-l", dataset="cora", split="grand", runs=2, variant="code", who="graphode"),
            dict(name="b", model="grand-l", dataset="citeseer", split="random", runs=10, variant="code",
                 who="graphode"),
            dict(name="c", model="grand-l", dataset="cora", split="grand", runs=5, variant="code", who="authors"),
            dict(name="d", model="grand-nl", dataset="cora", split="grand", runs=10, variant="code",
                 who="graphode")]
    monkeypatch.setattr(R, "OURS", str(ours))
    monkeypatch.setattr(R, "AUTHORS", str(theirs))
    monkeypatch.setattr(R, "_plan", lambda: plan)
    return plan


def test_gaps_block_gives_seeds_epochs_and_the_gap_to_the_protocols_table(synthetic):
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in R.gaps().splitlines()[2:]}
    assert set(lines) == {"a", "b", "c"}  # d has no run
    # a: seeds 0-1 (the repeated seed 1 counts once), 82.0 +- 2.0, Table 1 Cora 84.7 +- 0.6
    assert "| 0–1 (n=2) | 99 | 82.0 ± 2.0 | 84.7 ± 0.6 (Table 1) | -2.7 | -4.5 |" in lines["a"]
    # b: a random split is compared with Table 2 (CiteSeer 73.4 +- 0.5)
    assert "| 3 (n=1) | 249 | 70.0 ± 0.0 | 73.4 ± 0.5 (Table 2) | -3.4 | -6.8 |" in lines["b"]
    assert "| authors |" in lines["c"] and "+0.3" in lines["c"]


def test_not_run_block_lists_the_unfinished_cells_with_their_cost(synthetic):
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in R.not_run().splitlines()[2:]}
    assert set(lines) == {"b", "c", "d"}  # a ran both planned seeds
    assert "| 1 / 10 | 100 s | 15 min |" in lines["b"]  # b's wall: the median of graphode's citeseer runs
    assert "| 1 / 5 | 600 s | 40 min |" in lines["c"]  # the authors' runs time the authors' cells
    assert "| 0 / 10 | no run yet | – |" in lines["d"]


def test_settings_block_shows_the_packaged_configs_and_names_only_planned_cells():
    import yaml

    spec = yaml.safe_load(open(R.SETTINGS))["rows"]
    plan = {c["name"] for c in R._plan()}
    from graphode.config import load_config

    block = R.settings()
    for row in spec:
        assert set(row.get("cells") or []) <= plan, row["setting"]
        for k in row["keys"]:
            vals = [load_config(None, "grand-l", d)[k] for d in R.DATASETS]  # the key exists in the schema
            assert f"`{k}: " + " / ".join(R._value(v) for v in vals) + "`" in block
    assert block.count("\n| ") == len(spec)  # one row per setting below the header


def test_readme_make_run_recording_is_of_todays_make_run():
    """README's make-run block (docs/results/readme.json, `python docs/report_readme.py record-run`)
    must be a recording of what `make run` runs now: GRAND's split, the packaged Cora config, and
    the paper's Table 1 number beside the result; a recording of an older protocol fails here."""
    import inspect
    import json

    from graphode.config import load_config
    from graphode.models.grand import published_accuracy
    from graphode.train import main_job, main_job_lines

    path = os.path.join(ROOT, "docs", "results", "readme.json")
    rec = json.load(open(path)).get("make_run")
    if rec is None:
        pytest.skip("no recorded make run")
    split = inspect.signature(main_job).parameters["split"].default
    assert split == "grand"
    head = main_job_lines({"config": load_config(None, "grand-l", "cora"), "split": split, "model": "grand-l",
                           "runs": [], "mean_test_acc": 0, "std_test_acc": 0, "total_s": 0}).splitlines()[0]
    assert rec["command"] == "make run" and rec["returncode"] == 0
    assert rec["output"][0] == head
    p = published_accuracy("grand-l", "cora", split)
    assert f"{p['mean']} ± {p['std']})" in rec["output"][-1] and "(grand split)" in rec["output"][-1]


def test_verdict_against_one_run_of_the_authors_code_has_no_standard_error():
    ours = [_rec("a", s, acc) for s, acc in enumerate((0.74, 0.72))]
    v = R._verdict(ours, (73.3, 0.4), [_rec("c", 0, 0.75, who="authors")])
    assert v == "within the paper's std; -2.0 vs the authors' code (no standard error from 1 run)"
