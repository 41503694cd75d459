"""Reading and writing graphode's files safely.

Loading never runs code from a file: every ``torch.load`` in graphode goes through
:func:`load_torch_file`, which uses ``weights_only=True`` (torch's restricted
unpickler: tensors, numbers, strings, lists, tuples, dicts and nothing else) and
turns a refusal into a one-line :class:`~graphode.errors.CheckpointError` that
names the file and the import the file asked for.  There is no unsafe fallback.

Writing is atomic: :func:`atomic_write` writes a temporary file in the target's
folder, flushes and fsyncs it, then ``os.replace`` s it over the target and
fsyncs the folder, so a kill at any moment leaves either the old file or the
new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from typing import Any, Callable, Iterator, List, Optional

from .errors import CheckpointError, OutputPathError

__all__ = ["load_torch_file", "save_torch_file", "atomic_write", "weights_only_loads",
           "check_writable_dir"]

# numpy's array reconstruction, as pickled by numpy >= 2 and < 2.  Allowed only where a
# caller asks for it (graphode.train/1 checkpoints stored numpy's RNG state as an array):
# these build an ndarray from a dtype and raw bytes and import nothing else.
_NUMPY_ARRAY_GLOBALS = {
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.UInt32DType",
}

#: Environment hook for tests, ``"N:S"``: the N-th atomic write of the process sleeps S
#: seconds after its first bytes are on disk (before the rename), so that a test can
#: kill the writer in the middle of a checkpoint write.
_PAUSE_ENV = "GRAPHODE_TEST_PAUSE_IN_WRITE"
_writes = 0


def _numpy_array_globals() -> List[Any]:
    import numpy as np

    out = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    core = getattr(np, "_core", None) or np.core
    out.append(core.multiarray._reconstruct)
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _unsafe_globals(path: str) -> Optional[List[str]]:
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a zip / damaged: the caller reports that
        return None


def load_torch_file(path: "os.PathLike[str] | str", *, what: str = "checkpoint", map_location=None,
                    allow_numpy_arrays: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Args:
        path: the file.
        what: how the file is named in messages ("checkpoint", "graph cache", ...).
        map_location: as for ``torch.load``.
        allow_numpy_arrays: also accept numpy arrays (numpy's array reconstruction
            only; for checkpoints written by graphode 0.1.0 with format
            ``graphode.train/1``).

    Raises:
        CheckpointError: the file is missing, is not a torch file, is damaged, or
            holds anything but tensors and plain data (the message names the first
            import the file asked for; nothing from the file ran).
    """
    import torch

    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{what} {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{what} {path} is a folder, not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        bad = _unsafe_globals(path)
        if allow_numpy_arrays and bad and set(bad) <= _NUMPY_ARRAY_GLOBALS:
            with torch.serialization.safe_globals(_numpy_array_globals()):
                try:
                    return torch.load(path, map_location=map_location, weights_only=True)
                except pickle.UnpicklingError as e2:
                    e = e2
        names = ", ".join(bad[:3]) if bad else _first_line(e)
        raise CheckpointError(
            f"refusing to load {what} {path}: it asks to import {names}, and graphode loads only tensors "
            "and plain data from files (torch.load weights_only=True), never code; "
            "it was not written by graphode, or was tampered with"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, IndexError, KeyError) as e:
        raise CheckpointError(
            f"{what} {path} is damaged or not a torch file ({_first_line(e)}); "
            "delete it or pass another file"
        ) from None


def atomic_write(path: "os.PathLike[str] | str", write: Callable[[Any], None], *, binary: bool = True,
                 what: str = "file") -> None:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced and renamed over ``path`` (the folder is created when missing)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    except OSError as e:
        raise OutputPathError(f"cannot write {what} {path}: {e.strerror or _first_line(e)}") from None
    global _writes
    _writes += 1
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            pause = os.environ.get(_PAUSE_ENV)
            if pause and int(pause.split(":")[0]) == _writes:
                f = _PausingWriter(f, float(pause.split(":")[1]))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class _PausingWriter:
    """File wrapper that sleeps once after the first write call (test hook, see _PAUSE_ENV)."""

    def __init__(self, f, seconds: float):
        self._f, self._s, self._done = f, seconds, False

    def write(self, b):
        n = self._f.write(b)
        if not self._done:
            self._done = True
            import sys
            import time

            self._f.flush()
            os.fsync(self._f.fileno())
            print(f"graphode: pausing {self._s} s inside write {_writes}", file=sys.stderr, flush=True)
            time.sleep(self._s)
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)


def save_torch_file(obj: Any, path: "os.PathLike[str] | str", *, what: str = "checkpoint") -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f), what=what)


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within this block every ``torch.load`` is ``weights_only=True``, even one that
    passes ``weights_only=False`` (torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``).

    Third-party loaders that graphode calls on user files (PyTorch Geometric's
    processed-dataset cache falls back to an unsafe load when the safe one fails)
    run inside it.  It sets a process-wide environment variable for the duration."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def check_writable_dir(path: "os.PathLike[str] | str", what: str) -> None:
    """Create the folder that will hold ``path`` (a file) and check that it can be written,
    before any work starts.  Raises :class:`OutputPathError` naming ``what`` and the folder."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputPathError(f"{what} {path} is a folder; give a file path")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create the folder {d} for {what} {path}: "
                              f"{e.strerror or _first_line(e)}") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what} {path}: the folder {d} is not writable")
