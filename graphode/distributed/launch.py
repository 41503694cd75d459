"""Start N local processes of one distributed job, and end them.

:func:`run_local` is what ``graphode train --nproc N`` and the tests use on one
machine: it starts ``N`` copies of a command with the environment that
``torchrun`` would give them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``; rendezvous through a file store,
``GRAPHODE_DIST_INIT=file://...``, so there is no port to pick), waits for
them, and

* when one rank fails, ends the others at once and raises
  :class:`DistributedJobError` naming the rank, its exit status and the last
  line it wrote to stderr (the others would otherwise wait in a collective
  until its timeout);
* after ``timeout`` seconds, ends them all and raises.

Every collective inside the ranks is bounded too (the process group's
timeout, ``GRAPHODE_DIST_TIMEOUT``).  On several machines use ``torchrun``
(it sets the same variables, with ``env://`` rendezvous); see README.md.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["DistributedJobError", "run_local", "rank_env"]


class DistributedJobError(RuntimeError):
    """A rank of a local job failed or the job ran past its timeout."""

    def __init__(self, message: str, rank: Optional[int] = None, returncode: Optional[int] = None,
                 stderr_tail: str = ""):
        super().__init__(message)
        self.rank = rank
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def rank_env(rank: int, world: int, init: str, collective_timeout: Optional[float] = None,
             base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of local rank ``rank`` (what torchrun sets, plus the file store)."""
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
               GROUP_RANK="0", GRAPHODE_DIST_INIT=init)
    env.pop("MASTER_ADDR", None)
    env.pop("MASTER_PORT", None)
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: one thread per rank unless told otherwise
    if collective_timeout is not None:
        env["GRAPHODE_DIST_TIMEOUT"] = str(float(collective_timeout))
    return env


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


_PEER_ERRORS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "ECONNRESET",
                "Socket Timeout", "Timed out waiting", "timed out", "recvBytes", "sendBytes")


def _peer_failure(text: str) -> bool:
    """Whether a rank's stderr says it failed because another rank went away."""
    return any(s in text for s in _PEER_ERRORS)


def _end(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every process still running (by its own pid), SIGKILL after ``grace`` s."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            p.wait()


def _limit_memory(nbytes: int):
    def preexec():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))

    return preexec


def run_local(argv: Sequence[str], nproc: int, *, timeout: Optional[float] = None,
              collective_timeout: Optional[float] = None, env: Optional[Dict[str, str]] = None,
              cwd: Optional[str] = None, echo_rank0: bool = True, log_dir: Optional[str] = None,
              poll: float = 0.05, mem_limit: Optional[int] = None) -> List[int]:
    """Run ``argv`` as ranks ``0 .. nproc-1`` of one job on this machine.

    Args:
        argv: the command of every rank (e.g. ``[sys.executable, "-m", ...]``).
        timeout: seconds for the whole job (None: no limit).
        collective_timeout: seconds before a collective fails inside the ranks.
        env: base environment (default: this process's).
        echo_rank0: rank 0 writes to this process's stdout/stderr (the others' output
            goes to log files, whose tail is shown when they fail).
        log_dir: where the ranks' logs go (default: a temporary directory, removed
            when the job succeeds).
        mem_limit: address-space limit of each rank in bytes (``RLIMIT_AS``), so that a
            rank that runs out fails with an allocation error instead of the machine
            running short.

    Returns:
        the exit status of every rank (all 0).

    Raises:
        DistributedJobError: a rank exited with a non-zero status (the others are
            ended), or the job ran past ``timeout``.
    """
    nproc = int(nproc)
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    tmp = tempfile.mkdtemp(prefix="graphode-dist-")
    logs = log_dir or tmp
    os.makedirs(logs, exist_ok=True)
    init = "file://" + os.path.join(tmp, "store")
    procs: List[subprocess.Popen] = []
    files = []
    ok = False
    try:
        for r in range(nproc):
            e = rank_env(r, nproc, init, collective_timeout, env)
            if r == 0 and echo_rank0:
                out = err = None
                errpath = None
            else:
                out = open(os.path.join(logs, f"rank{r}.out"), "wb")
                errpath = os.path.join(logs, f"rank{r}.err")
                err = open(errpath, "wb")
                files += [out, err]
            p = subprocess.Popen(list(argv), env=e, cwd=cwd, stdout=out, stderr=err, start_new_session=True,
                                 preexec_fn=None if mem_limit is None else _limit_memory(int(mem_limit)))
            p.errpath = errpath  # type: ignore[attr-defined]
            procs.append(p)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                # A rank that fails because its peer went away often exits before the peer
                # has finished printing its own error: give the root cause a moment.
                wait_until = time.monotonic() + 3.0
                while (all(_peer_failure(_tail(procs[r].errpath) if procs[r].errpath else "") for r, _ in failed)
                       and time.monotonic() < wait_until and any(p.poll() is None for p in procs)):
                    time.sleep(poll)
                    failed = [(r, c) for r, c in enumerate(p.poll() for p in procs) if c not in (None, 0)]
                still = [q for q, p in enumerate(procs) if p.poll() is None]
                _end(procs)
                tails = {r: _tail(procs[r].errpath) if procs[r].errpath else "" for r, _ in failed}
                # the root cause, not a rank that failed because its peer went away
                r, c = min(failed, key=lambda rc: (_peer_failure(tails[rc[0]]), rc[0]))
                tail = tails[r]
                why = _last_line(tail) or ("see its output above" if procs[r].errpath is None else "no message")
                where = f" (log: {procs[r].errpath})" if procs[r].errpath else ""
                if still and _peer_failure(tail):
                    why += f" (ranks {still} had not failed and were ended: a rank that hangs outside " \
                           "collectives shows as timeouts of the others)"
                raise DistributedJobError(f"rank {r} of {nproc} failed with exit status {c}: {why}{where}",
                                          rank=r, returncode=c, stderr_tail=tail)
            if all(c == 0 for c in codes):
                ok = True
                return codes
            if deadline is not None and time.monotonic() > deadline:
                running = [r for r, c in enumerate(codes) if c is None]
                _end(procs)
                raise DistributedJobError(f"the job ran past its timeout of {timeout:g} s; ranks {running} were "
                                          f"still running and have been ended (logs in {logs})")
            time.sleep(poll)
    finally:
        _end(procs)
        for f in files:
            f.close()
        if ok or log_dir is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        elif logs == tmp:
            # keep the logs of a failed job for a while; the message names them
            pass


def python_argv(module: str, *args: str) -> List[str]:
    """``[sys.executable, "-m", module, *args]``."""
    return [sys.executable, "-m", module, *args]
