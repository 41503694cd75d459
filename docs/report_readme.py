"""README.md's measured figures: the output of ``make run`` and the test-run summary,
recorded from real runs into ``docs/results/readme.json`` and rendered into the
README's generated blocks by ``docs/generate.py``.

    python docs/report_readme.py record-run                     # runs `make run`, records its output and wall time
    python docs/report_readme.py record-test                    # runs `make test`, records the pytest summary
    python docs/report_readme.py record-test --command "bash .ci/run"   # e.g. the fresh-clone CI run
    python docs/generate.py                                     # then regenerate the blocks

The recorder keeps the command, the date, the machine (CPUs, 1-min load
average before and after) and the wall time with the figures.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "readme.json")


def _load() -> dict:
    try:
        with open(RESULTS) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _save(data: dict) -> None:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    tmp = f"{RESULTS}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, RESULTS)


def _fmt_s(s: float) -> str:
    if s >= 60:
        m, r = divmod(int(round(s)), 60)
        return f"{m} min {r} s"
    return f"{s:.1f} s"


def _run(command: str) -> dict:
    """Run ``command`` in the repository root, echo and capture its output."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.Popen(command, shell=True, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: List[str] = []
    for line in p.stdout:
        sys.stdout.write(line)
        lines.append(line.rstrip("\n"))
    rc = p.wait()
    return dict(command=command, returncode=rc, wall_s=round(time.perf_counter() - t0, 1), lines=lines,
                date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpus=os.cpu_count(),
                loadavg_1min_before=round(load0, 2), loadavg_1min_after=round(os.getloadavg()[0], 2),
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"))


def record_run(command: str) -> int:
    r = _run(command)
    out = [line for line in r.pop("lines") if line.startswith(("graphode:", "run ", "grand-l "))]
    if r["returncode"] != 0 or not out:
        print(f"report_readme: `{command}` failed or printed no result lines; nothing recorded", file=sys.stderr)
        return 1
    data = _load()
    data["make_run"] = dict(r, output=out)
    _save(data)
    return 0


# "== 3 passed, 1 skipped in 12.34s (0:00:12) ==" (or without the rules, under -q)
_SUMMARY = re.compile(r"^(?:=+ )?(\d+ (?:passed|failed|error).*?) in ([\d.]+)s(?: \([^)]*\))?(?: =+)?$")


def record_test(command: str) -> int:
    r = _run(command)
    lines = r.pop("lines")
    summary = next((m for m in map(_SUMMARY.match, reversed(lines)) if m), None)
    if summary is None:
        print(f"report_readme: no pytest summary line in the output of `{command}`; nothing recorded",
              file=sys.stderr)
        return 1
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (\w+)", summary.group(1))}
    data = _load()
    data["make_test"] = dict(r, summary=summary.group(1), pytest_s=float(summary.group(2)), counts=counts)
    _save(data)
    return 0 if r["returncode"] == 0 else 1


# --------------------------------------------------------------------------- blocks
def _env(r: dict) -> str:
    return f", OMP_NUM_THREADS={r['omp_num_threads']}" if r.get("omp_num_threads") else ""


def _missing(what: str, cmd: str) -> str:
    return f"*(no recorded {what} yet: `python docs/report_readme.py {cmd}`)*"


def block_make_run() -> str:
    r = _load().get("make_run")
    if not r:
        return _missing("`make run` output", "record-run")
    return ("```\n" + "\n".join(r["output"]) + "\n```\n\n"
            f"(`{r['command']}`, {r['date']}, {r['cpus']} CPUs{_env(r)}, 1-min load average {r['loadavg_1min_before']} "
            f"before and {r['loadavg_1min_after']} after; wall time {_fmt_s(r['wall_s'])}.)")


def block_make_test() -> str:
    r = _load().get("make_test")
    if not r:
        return _missing("test run", "record-test")
    return (f"`{r['command']}` ended with `{r['summary']}` (pytest's own time {_fmt_s(r['pytest_s'])}; "
            f"{_fmt_s(r['wall_s'])} for the whole command) on {r['date']}, {r['cpus']} CPUs{_env(r)}, 1-min load average "
            f"{r['loadavg_1min_before']} before and {r['loadavg_1min_after']} after.")


BLOCKS = {"readme-make-run": block_make_run, "readme-make-test": block_make_test}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="docs/report_readme.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("record-run", help="run `make run` and record its output")
    s.add_argument("--command", default="make run")
    s = sub.add_parser("record-test", help="run `make test` and record its summary")
    s.add_argument("--command", default="make test")
    a = p.parse_args(argv)
    return record_run(a.command) if a.what == "record-run" else record_test(a.command)


if __name__ == "__main__":
    sys.exit(main())
