"""Regenerate the generated blocks of README.md, bench/README.md and docs/RESULTS.md.

    python docs/generate.py            # rewrite every block from the committed raw results
    python docs/generate.py --check    # exit 1 and name each block that differs (or has no producer)
    python docs/generate.py --list     # which producer module provides which block

Every measured figure in those documents lives between markers::

    <!-- BEGIN GENERATED: block-name -->
    ...markdown written by the block's producer...
    <!-- END GENERATED: block-name -->

A producer is a module beside its raw data that defines
``BLOCKS: dict[str, Callable[[], str]]``; each function reads committed raw
files only (never runs anything heavy) and returns markdown.  The producers
are the fixed list :data:`PRODUCERS` (paths relative to the repository root).
A producer module that does not exist yet is skipped; a block that a document
names but no producer provides is an error.  ``tests/test_docs_generated.py``
runs the check and scans the documents for figures typed by hand.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the documents whose blocks are generated
DOCUMENTS = ("README.md", "bench/README.md", "docs/RESULTS.md")

#: producer modules (each defines BLOCKS); missing files are skipped
PRODUCERS = (
    "docs/report_readme.py",  # README.md: make run output, test-run figures
    "bench/report.py",  # bench/README.md and the performance sections of docs/RESULTS.md
    "bench/distributed_report.py",  # bench/README.md, the distributed benchmark
    "experiments/report_sweep.py",  # docs/RESULTS.md, Sweeps
    "experiments/report_grand.py",  # docs/RESULTS.md, GRAND
    "experiments/report_gcn.py",  # docs/RESULTS.md, Deep GCN
)

BEGIN_RE = re.compile(r"^<!-- BEGIN GENERATED: ([A-Za-z0-9_.:-]+) -->[ \t]*$", re.M)
END_FMT = "<!-- END GENERATED: {} -->"


class GenerateError(Exception):
    """A malformed document or producer (unbalanced markers, duplicate block names...)."""


def _load(path: str):
    full = os.path.join(ROOT, path)
    name = "_graphode_docs_" + re.sub(r"\W", "_", os.path.splitext(path)[0])
    if name in sys.modules:
        return sys.modules[name]
    here = os.path.dirname(full)
    if here not in sys.path:  # producers import their siblings by name (experiments/*_common.py, bench/_benchutil.py)
        sys.path.insert(0, here)
    spec = importlib.util.spec_from_file_location(name, full)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def producers() -> Dict[str, Tuple[str, Callable[[], str]]]:
    """``{block name: (producer path, function)}`` over every producer that exists."""
    out: Dict[str, Tuple[str, Callable[[], str]]] = {}
    for path in PRODUCERS:
        if not os.path.exists(os.path.join(ROOT, path)):
            continue
        blocks = getattr(_load(path), "BLOCKS", None)
        if not isinstance(blocks, dict):
            raise GenerateError(f"{path} defines no BLOCKS dict")
        for name, fn in blocks.items():
            if name in out:
                raise GenerateError(f"block {name!r} is defined by both {out[name][0]} and {path}")
            out[name] = (path, fn)
    return out


def split_blocks(text: str, doc: str = "") -> List[Tuple[str, int, int]]:
    """``[(name, start, end)]``: the character range of each block's body (between its markers)."""
    out = []
    pos = 0
    while True:
        m = BEGIN_RE.search(text, pos)
        if not m:
            break
        name = m.group(1)
        end_marker = END_FMT.format(name)
        end = text.find(end_marker, m.end())
        nxt = BEGIN_RE.search(text, m.end())
        if end < 0 or (nxt and nxt.start() < end):
            raise GenerateError(f"{doc}: block {name!r} has no matching {end_marker!r} before the next block")
        out.append((name, m.end(), end))
        pos = end + len(end_marker)
    names = [n for n, _, _ in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise GenerateError(f"{doc}: block(s) {sorted(dup)} appear more than once")
    stray = re.findall(r"<!-- END GENERATED: ([A-Za-z0-9_.:-]+) -->", text)
    if len(stray) != len(out):
        raise GenerateError(f"{doc}: {len(stray)} END markers for {len(out)} BEGIN markers")
    return out


def render(fn: Callable[[], str]) -> str:
    body = fn().strip("\n")
    return f"\n{body}\n" if body else "\n"


def process(doc: str, blocks: Dict[str, Tuple[str, Callable[[], str]]], text: Optional[str] = None
            ) -> Tuple[str, List[str], List[str]]:
    """``(new text, names of blocks that changed, names without a producer)``."""
    if text is None:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
    parts, changed, missing, last = [], [], [], 0
    for name, start, end in split_blocks(text, doc):
        parts.append(text[last:start])
        if name not in blocks:
            missing.append(name)
            parts.append(text[start:end])
        else:
            new = render(blocks[name][1])
            if new != text[start:end]:
                changed.append(name)
            parts.append(new)
        last = end
    parts.append(text[last:])
    return "".join(parts), changed, missing


def document_blocks() -> Dict[str, List[str]]:
    """``{document: [block names]}``."""
    out = {}
    for doc in DOCUMENTS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            out[doc] = [n for n, _, _ in split_blocks(f.read(), doc)]
    return out


def check() -> List[str]:
    """Problems, one line each: blocks that differ from what the raw files give, blocks
    without a producer, producer blocks that no document uses."""
    blocks = producers()
    problems, used = [], set()
    for doc in DOCUMENTS:
        _, changed, missing = process(doc, blocks)
        problems += [f"{doc}: block {n!r} differs from what {blocks[n][0]} generates "
                     f"(run `python docs/generate.py`)" for n in changed]
        problems += [f"{doc}: block {n!r} has no producer (none of {', '.join(PRODUCERS)} defines it)"
                     for n in missing]
    for names in document_blocks().values():
        used.update(names)
    problems += [f"block {n!r} of {p} is used by no document" for n, (p, _) in sorted(blocks.items()) if n not in used]
    return problems


def write() -> List[str]:
    blocks = producers()
    done = []
    for doc in DOCUMENTS:
        new, changed, missing = process(doc, blocks)
        if missing:
            raise GenerateError(f"{doc}: no producer for block(s) {missing}")
        if changed:
            path = os.path.join(ROOT, doc)
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(tmp, path)
            done += [f"{doc}: {n}" for n in changed]
    return done


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="docs/generate.py", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 and name each block that differs")
    g.add_argument("--list", action="store_true", help="list the producers' blocks and where they are used")
    a = p.parse_args(argv)
    try:
        if a.check:
            problems = check()
            for line in problems:
                print(line)
            if problems:
                return 1
            print("docs/generate.py --check: every generated block matches its raw files")
            return 0
        if a.list:
            used = {n: d for d, ns in document_blocks().items() for n in ns}
            for n, (path, _) in sorted(producers().items()):
                print(f"{n:40s} {path:32s} {used.get(n, '(unused)')}")
            return 0
        for line in write():
            print(f"regenerated {line}")
        return 0
    except GenerateError as e:
        print(f"docs/generate.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
