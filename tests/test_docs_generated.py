"""Numbers come from files: the generated blocks of README.md, bench/README.md and
docs/RESULTS.md match what ``docs/generate.py`` makes of the committed raw
results, and no measured figure is typed by hand outside those blocks.

The scan looks, outside generated blocks and HTML comments, for figures with
a unit of measurement: ``N×`` / ``Nx`` ratios (not ``8×8`` dimensions),
``N %``, ``± N``, times (``s``, ``ms``, ``min``, ``µs``), sizes (``KiB``, ``MB``,
``GiB``...), bandwidths (``GB/s``), and decimal numbers in markdown table
rows.  Numbers that describe a setting rather than a measurement ("1500
epochs", "2 cores", "T = 18.29") carry no such unit and are not flagged.
Settings that do carry one are listed in :data:`SETTINGS`, each an exact
phrase of one document with the reason it is not a measurement.
"""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generate():
    spec = importlib.util.spec_from_file_location("_graphode_docs_generate", os.path.join(ROOT, "docs", "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _generate()

#: Sections still typed by hand, to be converted to generated blocks by their owners, who
#: remove their entry here when they do.  {document: [heading text of the section]}: the
#: section runs from that heading to the next heading of the same or a higher level.
#: Owner: "## Deep GCN" (the deep-GCN experiments).  Generated blocks inside these
#: sections are checked like any other.
PENDING_SECTIONS = {
    "docs/RESULTS.md": ["## Deep GCN"],
}

#: Exact phrases with a unit that state a setting or a fact of the input, not a measurement:
#: {document: {phrase: reason}}.  Keep this short; a measured figure never goes here.
SETTINGS = {
    "bench/README.md": {
        "`M_MMAP_THRESHOLD` = 64 KiB": "allocator setting of the memory runs",
        "(16 GB, capped": "default memory limit of the workers (a setting)",
    },
    "README.md": {},
    "docs/RESULTS.md": {},
}

_UNIT = r"(?:ms|µs|us|s|min|h|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB|GB/s|MB/s)"
FIGURE_PATTERNS = [
    ("ratio", re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?\s?[×x](?!\s?[\d(])(?![\w])")),
    ("percent", re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%")),
    ("plus-minus", re.compile(r"±\s?\d|\d\s?±")),
    ("time/size/bandwidth", re.compile(r"(?<![\w.^])\d+(?:[.,]\d+)?\s?" + _UNIT + r"(?![\w])")),
    ("range of ratios", re.compile(r"\d+(?:\.\d+)?\s?[–-]\s?\d+(?:\.\d+)?\s?[×x](?![\w\d])")),
]
TABLE_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _outside_blocks(doc: str, text: str):
    """(line number, line) of every line outside generated blocks and HTML comments,
    with the pending sections removed."""
    mask = [True] * len(text)
    for _, start, end in gen.split_blocks(text, doc):
        for i in range(start, end):
            mask[i] = False
    for m in re.finditer(r"<!--.*?-->", text, re.S):
        for i in range(m.start(), m.end()):
            mask[i] = False
    kept = "".join(c if keep or c == "\n" else " " for c, keep in zip(text, mask))
    lines = kept.split("\n")
    pending = PENDING_SECTIONS.get(doc, [])
    skip_level = None
    for i, line in enumerate(lines, 1):
        h = re.match(r"^(#{1,6}) ", line)
        if h:
            level = len(h.group(1))
            if skip_level is not None and level <= skip_level:
                skip_level = None
            if any(line.strip() == p or line.strip().startswith(p + " ") for p in pending):
                skip_level = level
        if skip_level is None:
            yield i, line


def hand_typed_figures(doc: str, text: str):
    settings = SETTINGS.get(doc, {})
    found = []
    for lineno, line in _outside_blocks(doc, text):
        clean = line
        for phrase in settings:
            clean = clean.replace(phrase, " " * len(phrase))
        hits = [m.group(0) for _, pat in FIGURE_PATTERNS for m in pat.finditer(clean)]
        if clean.lstrip().startswith("|") and not re.match(r"^\s*\|[-:| ]+\|\s*$", clean):
            hits += TABLE_DECIMAL.findall(clean)
        if hits:
            found.append(f"{doc}:{lineno}: {sorted(set(hits))}  <- {line.strip()[:120]}")
    return found


def test_generated_blocks_match_raw_results():
    problems = gen.check()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", gen.DOCUMENTS)
def test_no_hand_typed_figures(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = f.read()
    found = hand_typed_figures(doc, text)
    assert not found, ("figures typed by hand outside generated blocks (generate them from raw results, "
                       "see docs/generate.py):\n" + "\n".join(found))


def test_settings_phrases_exist():
    """Every allowed settings phrase still occurs in its document (no stale exceptions)."""
    for doc, phrases in SETTINGS.items():
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        stale = [p for p in phrases if p not in text]
        assert not stale, f"{doc}: SETTINGS phrases no longer in the document: {stale}"


def test_pending_sections_exist():
    for doc, heads in PENDING_SECTIONS.items():
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        stale = [h for h in heads if not any(line == h or line.startswith(h + " ") for line in lines)]
        assert not stale, f"{doc}: PENDING_SECTIONS headings no longer in the document: {stale}"


def test_scan_catches_figures():
    """The scan itself: flags measured figures, passes settings and dimensions."""
    doc = "x.md"
    text = ("speed-up 10.6× here\nabout 3x slower\n81.3 ± 1.0\ntook 39.4 s and 120 MiB, 2.1 GB/s\n"
            "80.30% accuracy\n| a | 82.4 |\n"
            "an 8×8 image, 2708 × 64 features, 1500 epochs on 2 cores, T = 18.29, 10 seeds\n"
            "<!-- BEGIN GENERATED: b -->\n5.0× inside\n<!-- END GENERATED: b -->\n<!-- 7.0× in a comment -->\n")
    found = hand_typed_figures(doc, text)
    flagged = "\n".join(found)
    for figure in ("10.6×", "3x", "± 1", "39.4 s", "120 MiB", "2.1 GB/s", "80.30%", "82.4"):
        assert figure in flagged, (figure, found)
    assert not any(":7:" in f or ":9:" in f or ":11:" in f for f in found), found
    assert len(found) == 6, found


def test_check_names_a_stale_block(tmp_path):
    """``process`` reports a block whose body differs from its producer's output."""
    text = "a\n<!-- BEGIN GENERATED: demo -->\nold\n<!-- END GENERATED: demo -->\nb\n"
    new, changed, missing = gen.process("x.md", {"demo": ("p.py", lambda: "new")}, text)
    assert changed == ["demo"] and not missing
    assert "\nnew\n" in new and "old" not in new
    again, changed, _ = gen.process("x.md", {"demo": ("p.py", lambda: "new")}, new)
    assert again == new and not changed
    _, _, missing = gen.process("x.md", {}, text)
    assert missing == ["demo"]
    with pytest.raises(gen.GenerateError):
        gen.split_blocks("<!-- BEGIN GENERATED: a -->\nx\n", "x.md")
