"""Search-space YAML files and their translation to ``ray.tune`` distributions.

A search space is a *flat* YAML mapping from config keys (the keys that
``graphode train --config`` reads) to either

* a **constant** (any scalar or list): the key is fixed for every trial and
  overrides the base config, e.g. ``input_dropout: 0.5``; or
* a **distribution**: a mapping with exactly one of the keys below, whose
  value is the list of its arguments.

===============  ========================  ========================================
kind             arguments                 ``ray.tune`` equivalent
===============  ========================  ========================================
``uniform``      ``[lower, upper]``        ``tune.uniform(lower, upper)``
``quniform``     ``[lower, upper, q]``     ``tune.quniform(lower, upper, q)``
``loguniform``   ``[lower, upper]``        ``tune.loguniform(lower, upper)`` (lower > 0)
``qloguniform``  ``[lower, upper, q]``     ``tune.qloguniform(lower, upper, q)``
``randn``        ``[mean, sd]``            ``tune.randn(mean, sd)``
``qrandn``       ``[mean, sd, q]``         ``tune.qrandn(mean, sd, q)``
``randint``      ``[lower, upper]``        ``tune.randint(lower, upper)`` (upper excluded)
``qrandint``     ``[lower, upper, q]``     ``tune.qrandint(lower, upper, q)`` (upper included)
``lograndint``   ``[lower, upper]``        ``tune.lograndint(lower, upper)`` (upper excluded)
``choice``       ``[a, b, ...]``           ``tune.choice([a, b, ...])``
``grid``         ``[a, b, ...]``           ``tune.grid_search([a, b, ...])`` (every value,
                                           times ``--num-samples``)
===============  ========================  ========================================

Example (``graphode/configs/search/grand.yaml`` is the full one)::

    lr: {loguniform: [1.0e-3, 5.0e-2]}
    hidden_dim: {choice: [16, 32, 64, 128]}
    time: {uniform: [1, 20]}
    input_dropout: 0.5          # constant

Numbers written as ``1e-3`` (which YAML 1.1 reads as a string) are accepted.
Nothing here imports Ray: :func:`parse_space` validates a space without it,
and :func:`to_tune` imports ``ray.tune`` only when called.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "DISTRIBUTIONS",
    "Dist",
    "load_space",
    "parse_space",
    "resolve_space_path",
    "packaged_spaces",
    "to_tune",
    "space_keys",
]

# kind -> (number of arguments (None: a non-empty list of values), numeric arguments?)
DISTRIBUTIONS: Dict[str, Tuple[Optional[int], bool]] = {
    "uniform": (2, True),
    "quniform": (3, True),
    "loguniform": (2, True),
    "qloguniform": (3, True),
    "randn": (2, True),
    "qrandn": (3, True),
    "randint": (2, True),
    "qrandint": (3, True),
    "lograndint": (2, True),
    "choice": (None, False),
    "grid": (None, False),
}

# kind -> its ray.tune function where the names differ (the others are tune.<kind>)
_TUNE_NAMES = {"grid": "grid_search"}

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(v: Any) -> Any:
    """``"1e-3"`` -> ``0.001`` (YAML 1.1 reads exponent floats without a dot as strings)."""
    if isinstance(v, str) and _FLOAT_RE.match(v.strip()):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            return float(s)
    if isinstance(v, list):
        return [_coerce(x) for x in v]
    return v


class Dist:
    """One distribution of a search space: ``kind`` and its ``args`` (validated)."""

    __slots__ = ("key", "kind", "args")

    def __init__(self, key: str, kind: str, args: List[Any]):
        self.key, self.kind, self.args = key, kind, list(args)

    def __repr__(self) -> str:
        return f"Dist({self.key!r}: {self.kind}{self.args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Dist) and (self.key, self.kind, self.args) == (other.key, other.kind, other.args)

    def to_yaml(self) -> Dict[str, List[Any]]:
        return {self.kind: list(self.args)}


def _parse_dist(key: str, spec: Dict[str, Any]) -> Dist:
    if len(spec) != 1:
        raise ValueError(
            f"search space key {key!r}: a distribution is a mapping with exactly one of "
            f"{', '.join(DISTRIBUTIONS)}; got keys {sorted(spec)}"
        )
    (kind, args), = spec.items()
    kind = str(kind).lower()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"search space key {key!r}: unknown distribution {kind!r}; "
                         f"known: {', '.join(DISTRIBUTIONS)}")
    nargs, numeric = DISTRIBUTIONS[kind]
    if not isinstance(args, (list, tuple)):
        raise ValueError(f"search space key {key!r}: {kind} takes a list, got {args!r}")
    args = _coerce(list(args))
    if nargs is None:
        if not args:
            raise ValueError(f"search space key {key!r}: {kind} needs at least one value")
        return Dist(key, kind, args)
    if len(args) != nargs:
        raise ValueError(f"search space key {key!r}: {kind} takes {nargs} numbers, got {args!r}")
    if numeric and not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ValueError(f"search space key {key!r}: {kind} takes numbers, got {args!r}")
    if kind in ("randn", "qrandn"):
        if args[1] <= 0:
            raise ValueError(f"search space key {key!r}: {kind} needs sd > 0, got {args!r}")
    else:
        lo, hi = args[0], args[1]
        if not lo < hi:
            raise ValueError(f"search space key {key!r}: {kind} needs lower < upper, got {args!r}")
        if kind in ("loguniform", "qloguniform", "lograndint") and lo <= 0:
            raise ValueError(f"search space key {key!r}: {kind} needs lower > 0, got {args!r}")
        if kind in ("randint", "qrandint", "lograndint") and not all(isinstance(a, int) for a in args[:2]):
            raise ValueError(f"search space key {key!r}: {kind} takes integer bounds, got {args!r}")
    if len(args) == 3 and args[2] <= 0:
        raise ValueError(f"search space key {key!r}: {kind} needs q > 0, got {args!r}")
    return Dist(key, kind, args)


def parse_space(mapping: Dict[str, Any]) -> Dict[str, Any]:
    """Validate a search-space mapping: ``{key: Dist | constant}`` (raises ``ValueError``)."""
    if not isinstance(mapping, dict):
        raise ValueError(f"a search space must be a YAML mapping, got {type(mapping).__name__}")
    out: Dict[str, Any] = {}
    for key, spec in mapping.items():
        key = str(key)
        if isinstance(spec, Dist):
            out[key] = spec
        elif isinstance(spec, dict):
            out[key] = _parse_dist(key, spec)
        else:
            out[key] = _coerce(spec)
    return out


def space_keys(space: Dict[str, Any]) -> List[str]:
    """The keys of ``space`` that are searched (distributions, not constants)."""
    return [k for k, v in space.items() if isinstance(v, Dist)]


def _search_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "search")


def packaged_spaces() -> List[str]:
    """Names of the search spaces shipped in ``graphode/configs/search``."""
    d = _search_dir()
    if not os.path.isdir(d):
        return []
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".yaml"))


def resolve_space_path(space: str) -> str:
    """A path to a search-space file: ``space`` itself when it exists, else the packaged
    ``graphode/configs/search/<name>.yaml`` named by ``space`` (``grand``, ``grand.yaml``
    and ``configs/search/grand.yaml`` all name the packaged GRAND space)."""
    if os.path.exists(space):
        return space
    name = os.path.basename(space)
    if name.endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    p = os.path.join(_search_dir(), f"{name}.yaml")
    if os.path.exists(p):
        return p
    raise FileNotFoundError(
        f"no search space {space!r}: not a file, and not one of the packaged spaces "
        f"({', '.join(packaged_spaces()) or 'none'})"
    )


def load_space(space: str) -> Dict[str, Any]:
    """Read and validate a search-space YAML (a path or a packaged name, see
    :func:`resolve_space_path`)."""
    import yaml

    path = resolve_space_path(space)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    try:
        return parse_space(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def to_tune(space: Dict[str, Any]) -> Dict[str, Any]:
    """Translate a parsed space into a ``param_space`` of ``ray.tune`` distributions
    (constants are passed through).  Imports ``ray.tune``."""
    from ray import tune

    out: Dict[str, Any] = {}
    for key, v in parse_space(space).items():
        if not isinstance(v, Dist):
            out[key] = v
            continue
        tune_fn = getattr(tune, _TUNE_NAMES.get(v.kind, v.kind))
        out[key] = tune_fn(list(v.args)) if DISTRIBUTIONS[v.kind][0] is None else tune_fn(*v.args)
    return out
