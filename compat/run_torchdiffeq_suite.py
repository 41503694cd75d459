"""Run torchdiffeq's own test suite with ``torchdiffeq`` aliased to graphode.

    .venv/bin/python compat/run_torchdiffeq_suite.py --repo PATH/TO/torchdiffeq [--rev REV] [--out FILE.json]

``--repo`` is a git checkout (or bare repository) of
https://github.com/rtqichen/torchdiffeq; ``--rev`` picks the commit whose
``tests/`` are run (default ``HEAD``, the newest; ``a88aac5`` is the 0.2.5
release).  The tests are exported to a temporary folder (nothing of
torchdiffeq is kept in this repository) and run with ``compat/`` first on
``sys.path``, so that their ``import torchdiffeq`` imports the shim
(``compat/torchdiffeq``), which re-exports graphode's ``odeint``,
``odeint_adjoint`` and ``odeint_event``.  The shim's identity is checked
before anything runs.

Every ``unittest`` subtest counts on its own: the summary gives passed,
failed and errored subtests per test, and ``--out`` writes them as JSON
(one record per failure, with its parameters and message).  ``-k NAME``
runs only the tests whose id contains NAME.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("api_tests", "event_tests", "gradient_tests", "norm_tests", "odeint_tests")


class _Result(unittest.TestResult):
    """Counts every subtest (and every test without subtests) as one outcome."""

    def __init__(self, verbose=False):
        super().__init__()
        self.records = []
        self.verbose = verbose
        self._had_sub = set()
        self._t0 = {}

    def startTest(self, test):
        super().startTest(test)
        self._t0[test.id()] = time.perf_counter()
        if self.verbose:
            print(f"... {test.id()}", flush=True)

    def _rec(self, test, outcome, err=None, params=None):
        msg = None
        if err is not None:
            msg = "".join(traceback.format_exception_only(err[0], err[1])).strip()[-600:]
        self.records.append(dict(test=test.id(), params=params, outcome=outcome, message=msg))

    def addSubTest(self, test, subtest, err):
        self._had_sub.add(test.id())
        params = {k: str(v) for k, v in getattr(subtest, "params", {}).items()}
        if err is None:
            self._rec(test, "passed", params=params)
        elif issubclass(err[0], test.failureException):
            self._rec(test, "failed", err, params)
        else:
            self._rec(test, "error", err, params)

    def addSuccess(self, test):
        if test.id() not in self._had_sub:
            self._rec(test, "passed")

    def addFailure(self, test, err):
        self._rec(test, "failed", err)

    def addError(self, test, err):
        self._rec(test, "error", err)

    def addSkip(self, test, reason):
        self.records.append(dict(test=test.id(), params=None, outcome="skipped", message=reason))

    def stopTest(self, test):
        super().stopTest(test)
        if self.verbose:
            print(f"    {time.perf_counter() - self._t0[test.id()]:.1f} s", flush=True)


def export_tests(repo: str, rev: str, dest: str) -> str:
    """``git archive`` the ``tests/`` folder of ``rev`` into ``dest``; returns the full commit id."""
    commit = subprocess.run(["git", "-C", repo, "rev-parse", rev], check=True, capture_output=True,
                            text=True).stdout.strip()
    data = subprocess.run(["git", "-C", repo, "archive", "--format=tar", commit, "tests"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(dest, filter="data")
    return commit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="a git checkout or bare repository of rtqichen/torchdiffeq")
    ap.add_argument("--rev", default="HEAD", help="commit of the test suite (default HEAD; a88aac5 = 0.2.5)")
    ap.add_argument("--out", help="write the per-subtest outcomes as JSON here")
    ap.add_argument("-k", dest="select", default=None, help="run only tests whose id contains this")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="torchdiffeq-suite-")
    commit = export_tests(args.repo, args.rev, tmp)
    tests_dir = os.path.join(tmp, "tests")
    sys.path[:0] = [HERE, tests_dir]
    for name in [m for m in sys.modules if m == "torchdiffeq" or m.startswith("torchdiffeq.")]:
        del sys.modules[name]
    import torchdiffeq  # noqa: E402  (the shim)
    if not getattr(torchdiffeq, "__graphode_shim__", False):
        sys.exit(f"`import torchdiffeq` did not import the shim in {HERE} but {torchdiffeq.__file__}")
    os.chdir(tests_dir)

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for mod in MODULES:
        if os.path.exists(os.path.join(tests_dir, mod + ".py")):
            suite.addTests(loader.loadTestsFromName(mod))

    def flatten(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from flatten(t)
            else:
                yield t

    selected = [t for t in flatten(suite) if args.select is None or args.select in t.id()]
    result = _Result(verbose=args.verbose)
    t0 = time.perf_counter()
    unittest.TestSuite(selected).run(result)
    wall = time.perf_counter() - t0

    by_test = {}
    for r in result.records:
        c = by_test.setdefault(r["test"], {"passed": 0, "failed": 0, "error": 0, "skipped": 0})
        c[r["outcome"]] += 1
    tot = {k: sum(c[k] for c in by_test.values()) for k in ("passed", "failed", "error", "skipped")}
    print(f"torchdiffeq tests at {commit[:10]} against graphode (shim {torchdiffeq.__file__})")
    for name, c in by_test.items():
        flag = "" if c["failed"] + c["error"] == 0 else "  <-- FAIL"
        print(f"  {name}: {c['passed']} passed, {c['failed']} failed, {c['error']} errors{flag}")
    print(f"subtests: {tot['passed']} passed, {tot['failed']} failed, {tot['error']} errors, {tot['skipped']} skipped; "
          f"tests: {sum(1 for c in by_test.values() if c['failed'] + c['error'] == 0)} of {len(by_test)} fully "
          f"passing; {wall:.0f} s")
    for r in result.records:
        if r["outcome"] in ("failed", "error"):
            print(f"- {r['outcome']}: {r['test']} {r['params'] or ''}\n    {r['message']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(commit=commit, totals=tot, wall_s=wall, tests=by_test,
                           failures=[r for r in result.records if r["outcome"] in ("failed", "error")]), fh, indent=1)
    return 0 if tot["failed"] + tot["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
