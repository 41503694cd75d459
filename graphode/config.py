"""Configs: the schema of every key (type, range, choices, default), loading YAML
files, parsing ``--set key=value`` and checking all of them the same way.

A config is a flat mapping.  Each model family has one :class:`Schema` (the
training keys, the run keys and the family's model keys): it is where the keys'
defaults come from (the model builders read them through :meth:`Schema.defaults`)
and what :func:`check_config` checks a config against.  Adding a key is one
:func:`key` line in the family's list below.

>>> from graphode.config import load_config, check_config, parse_set
>>> cfg = load_config(None, "grand-l", "cora")          # the packaged config
>>> cfg.update(check_config(parse_set(["lr=0.01"]), "grand-l", "--set"))
>>> check_config({"lr": "fast"}, "grand-l", "c.yaml")   # ConfigError: one line naming file, key, value

Errors are :class:`graphode.errors.ConfigError` (a ``ValueError``): one line that
names the file (or ``--set``), the key, the value and what was expected, with the
choices where there are any and "did you mean" for a misspelt key.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigError

__all__ = [
    "Key", "Schema", "key", "SCHEMAS", "schema_for", "family_of", "check_config", "load_config",
    "packaged_config_path", "parse_set", "resolved_config", "dump_config", "grand_tolerances",
    "OPTIMIZERS", "SPLITS", "GRAND_VARIANTS", "ATTENTION_SCORES", "ATTENTION_NORMALIZE",
    "ATTENTION_NORMALIZE_OVER", "GCN_INITS", "REWIRING_CRITERIA",
    "TRAIN_KEYS", "GRAND", "GCN", "GCN_BASELINES",
]

# ----------------------------------------------------------------------------- choices
OPTIMIZERS = ("adam", "adamw", "adamax", "rmsprop", "sgd")
SPLITS = ("public", "grand", "random", "geom-gcn", "official")
GRAND_VARIANTS = ("l", "nl", "nl-rw", "laplacian")
#: GRAND's attention options (graphode.ops.reference.SCORES / NORMALIZE / NORMALIZE_OVER)
ATTENTION_SCORES = ("scaled_dot", "cosine", "pearson", "exp_kernel")
ATTENTION_NORMALIZE = ("softmax", "squareplus")
ATTENTION_NORMALIZE_OVER = ("target", "source")
GCN_INITS = ("glorot", "isometric", "isometric-code", "uniform")
REWIRING_CRITERIA = ("gradient_flow", "dirichlet_energy")
OPS_BACKENDS = ("reference", "cpu", "triton", "cuda")
#: the deep-GCN comparison baselines (graphode.models.baselines.BASELINE_MODELS has these names)
BASELINE_NAMES = ("gcn-residual", "gcn-initial", "gcn-jumping", "gcn-dense", "gcn-batchnorm", "gcn-pairnorm",
                  "gcn-dropedge", "gcn-tricks", "gcnii", "appnp", "sgc", "jknet", "gat")


def _ode_methods() -> Tuple[str, ...]:
    from .solvers import METHODS

    return tuple(sorted(METHODS))


# ----------------------------------------------------------------------------- the mechanism
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               dict: "a mapping", list: "a list"}


@dataclass(frozen=True)
class Key:
    """One config key: its type (int, float, bool, str, dict or list), default, help text,
    allowed choices (a tuple, or a function returning one), bounds (``ge``/``gt``/``le``/
    ``lt``) and whether ``null`` is allowed."""

    name: str
    type: type
    default: Any
    help: str = ""
    choices: Union[None, Tuple[Any, ...], Callable[[], Tuple[Any, ...]]] = None
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    null: bool = False
    item: Optional[type] = None  # element type of a list
    literals: Tuple[Any, ...] = ()  # values allowed besides the type (e.g. skips: "all")

    def check(self, value: Any, where: str) -> Any:
        """The value, coerced to the key's type; :class:`ConfigError` when it does not fit."""
        def fail(expected: str) -> ConfigError:
            return ConfigError(f"{where}: {self.name}: expected {expected}, got {value!r}")

        if self.literals and value in self.literals and not isinstance(value, bool):
            return value
        if value is None:
            if self.null:
                return None
            raise fail(_TYPE_NAMES[self.type] + ("" if self.choices is None else f" (one of {self._choices_text()})"))
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise fail("true or false")
            v: Any = value
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (isinstance(value, float) and not value.is_integer()):
                raise fail("an integer")
            v = int(value)
        elif t is float:
            if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
                try:
                    value = float(value)
                except ValueError:
                    raise fail("a number") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise fail("a number")
            v = float(value)
        elif t is str:
            if not isinstance(value, str):
                raise fail("a string" if self.choices is None else f"one of {self._choices_text()}")
            v = value
        elif t is dict:
            if not isinstance(value, dict):
                raise fail("a mapping")
            v = dict(value)
        elif t is list:
            if not isinstance(value, (list, tuple)):
                raise fail("a list")
            if self.item is not None:
                sub = Key(self.name, self.item, None)
                v = [sub.check(x, where) for x in value]
            else:
                v = list(value)
        else:  # pragma: no cover - schema error
            raise TypeError(f"key {self.name}: unsupported type {t}")
        if self.choices is not None and v not in self._choices():
            close = difflib.get_close_matches(str(v), [str(c) for c in self._choices()], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {self.name}: unknown value {v!r}{hint}; choose one of {self._choices_text()}")
        for bound, ok, text in ((self.ge, lambda b: v >= b, ">="), (self.gt, lambda b: v > b, ">"),
                                (self.le, lambda b: v <= b, "<="), (self.lt, lambda b: v < b, "<")):
            if bound is not None and not ok(bound):
                raise ConfigError(f"{where}: {self.name}: expected a value {self._range_text()}, got {v!r}")
        return v

    def _choices(self) -> Tuple[Any, ...]:
        c = self.choices
        return tuple(c()) if callable(c) else tuple(c or ())

    def _choices_text(self) -> str:
        return ", ".join(str(c) for c in self._choices())

    def _range_text(self) -> str:
        lo = f">= {self.ge}" if self.ge is not None else (f"> {self.gt}" if self.gt is not None else "")
        hi = f"<= {self.le}" if self.le is not None else (f"< {self.lt}" if self.lt is not None else "")
        return " and ".join(s for s in (lo, hi) if s)


def key(name: str, type: type, default: Any, help: str = "", **kw) -> Key:
    """One line of a schema: ``key("lr", float, 0.01, "learning rate", gt=0)``."""
    return Key(name, type, default, help, **kw)


@dataclass
class Schema:
    """The keys of one model family (plus the training and run keys every family has).

    ``model_defaults``: per-model default overrides (``{"gcn-dropedge": {"drop_edge": 0.3}}``).
    ``inert``: keys a family accepts because they appear in shared config files but that
    its models do not read; a value other than the given one is an error naming the key."""

    family: str
    keys: Dict[str, Key]
    model_defaults: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    inert: Dict[str, Any] = field(default_factory=dict)

    def __init__(self, family: str, keys: Iterable[Key], model_defaults=None, inert=None):
        self.family = family
        self.keys = {}
        for k in keys:
            if k.name in self.keys:
                raise ValueError(f"schema {family}: key {k.name} given twice")
            self.keys[k.name] = k
        self.model_defaults = dict(model_defaults or {})
        self.inert = dict(inert or {})

    def defaults(self, model: Optional[str] = None) -> Dict[str, Any]:
        """Every key's default (for ``model``, when it overrides some)."""
        out = {n: k.default for n, k in self.keys.items()}
        out.update(self.model_defaults.get(model or "", {}))
        return out

    def with_defaults(self, config: Mapping[str, Any], model: Optional[str] = None) -> Dict[str, Any]:
        """``config`` with every missing key at its default (unknown keys are kept)."""
        return {**self.defaults(model), **{k: v for k, v in config.items() if v is not None or
                                            k not in self.keys or self.keys[k].null}}

    def check(self, config: Mapping[str, Any], source: str, model: Optional[str] = None,
              strict: bool = True) -> Dict[str, Any]:
        """Checked, coerced copy of ``config``.  ``strict``: unknown keys are errors."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"{source}: a config must be a mapping of key: value, got {type(config).__name__}")
        out: Dict[str, Any] = {}
        for name, value in config.items():
            if not isinstance(name, str):
                raise ConfigError(f"{source}: config keys must be strings, got {name!r}")
            where = source
            k = self.keys.get(name)
            if k is None:
                if name in self.inert:
                    if value not in (self.inert[name], None, "none"):
                        raise ConfigError(f"{where}: {name}: {model or self.family} does not use this key "
                                          f"(it belongs to another model of the {self.family} configs); "
                                          f"remove it or leave it at {self.inert[name]!r}")
                    out[name] = value
                    continue
                if strict:
                    raise ConfigError(f"{where}: unknown key {name!r}{self._did_you_mean(name)} "
                                      f"for model {model or self.family} (graphode train --model "
                                      f"{model or '...'} --print-config lists the keys)")
                out[name] = value
                continue
            out[name] = k.check(value, where)
        return out

    def _did_you_mean(self, name: str) -> str:
        known = list(self.keys) + list(self.inert)
        alias = _SYNONYMS.get(name.lower())
        close = [alias] if alias in known else difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if not close:  # learning_rate_typo -> lr: try the words of the name
            for part in name.lower().replace("-", "_").split("_"):
                a = _SYNONYMS.get(part)
                if a in known:
                    close = [a]
                    break
        return f" (did you mean {close[0]!r}?)" if close else ""


_SYNONYMS = {"attention_type": "attention_score", "rewire_keep": "attention_keep",
             "attention_threshold": "attention_keep", "square_plus": "attention_normalize",
             "attention_norm_idx": "attention_normalize_over", "att_samp_pct": "attention_keep",
             "earlystopxt": "eval_time_factor", "max_test_steps": "eval_max_steps",
             "learning_rate": "lr", "learning": "lr", "rate": "lr", "wd": "weight_decay", "decay": "weight_decay",
             "num_epochs": "epochs", "n_epochs": "epochs", "epoch": "epochs", "num_layers": "layers",
             "depth": "layers", "hidden_size": "hidden", "hidden_channels": "hidden", "solver": "method",
             "t": "time", "optim": "optimizer", "opt": "optimizer"}


# ----------------------------------------------------------------------------- the schemas
#: keys of a run (the CLI sets them) and of the trainer (:mod:`graphode.train`), in every family
RUN_KEYS = [
    key("model", str, None, "model name (graphode train --model)", null=True),
    key("dataset", str, None, "dataset name", null=True),
    key("split", str, "public", "data split: public masks; grand = the LCC with GRAND's split of seed 12345 "
        "(their code's Table 1); random = a random LCC split per seed", choices=SPLITS),
    key("split_seed", int, None, "split random: one split drawn with this seed for every run", ge=0, null=True),
]
TRAIN_KEYS = [
    key("optimizer", str, "adam", "optimizer", choices=OPTIMIZERS),
    key("lr", float, 0.01, "learning rate", gt=0),
    key("weight_decay", float, 5e-4, "L2 weight decay", ge=0),
    key("momentum", float, 0.0, "momentum (sgd, rmsprop)", ge=0, lt=1),
    key("epochs", int, 100, "training epochs", ge=1),
    key("patience", int, None, "early stopping on validation accuracy (null: off)", ge=1, null=True),
    key("deterministic", bool, True, "torch deterministic algorithms during training"),
    key("device", str, "cpu", "cpu, cuda or cuda:N"),
    key("checkpoint_every", int, 1, "write the checkpoint every N epochs", ge=1),
    key("threads", int, None, "torch intra-op threads while training (null: torch's setting)", ge=1, null=True),
]


def grand_tolerances(tol_scale: float) -> Tuple[float, float]:
    """``(rtol, atol) = (tol_scale * 1e-9, tol_scale * 1e-7)``, the GRAND authors' convention."""
    return float(tol_scale) * 1e-9, float(tol_scale) * 1e-7


_prob = dict(ge=0.0, le=1.0)
GRAND = Schema("grand", RUN_KEYS + TRAIN_KEYS + [
    key("variant", str, "l", "GRAND variant (set by the model name)", choices=GRAND_VARIANTS),
    # solver
    key("method", str, "dopri5", "ODE solver method", choices=_ode_methods),
    key("time", float, 18.3, "integration time T", gt=0),
    key("step_size", float, 1.0, "step of fixed-grid methods", gt=0),
    key("tol_scale", float, 1.0, "rtol = tol_scale * 1e-9, atol = tol_scale * 1e-7", gt=0),
    key("rtol", float, None, "forward rtol (null: from tol_scale)", gt=0, null=True),
    key("atol", float, None, "forward atol (null: from tol_scale)", gt=0, null=True),
    key("adjoint", bool, False, "gradients by the adjoint method"),
    key("adjoint_method", str, None, "method of the backward solve (null: method)", choices=_ode_methods, null=True),
    key("tol_scale_adjoint", float, None, "adjoint tolerances' scale (null: tol_scale)", gt=0, null=True),
    key("adjoint_rtol", float, None, "backward rtol (null: from tol_scale_adjoint)", gt=0, null=True),
    key("adjoint_atol", float, None, "backward atol (null: from tol_scale_adjoint)", gt=0, null=True),
    key("adjoint_step_size", float, None, "backward step of fixed-grid methods (null: step_size)", gt=0, null=True),
    key("solver_options", dict, None, "extra options of the method", null=True),
    key("semi_implicit", bool, True, "implicit methods: linear solves with the exact operator"),
    key("max_nfe", int, None, "fail past this many evaluations in one solve", ge=1, null=True),
    key("max_num_steps", int, None, "adaptive-solver step budget", ge=1, null=True),
    # architecture
    key("hidden_dim", int, 80, "hidden size d", ge=1),
    key("heads", int, 8, "attention heads", ge=1),
    key("attention_dim", int, 128, "attention key/query size", ge=1),
    key("attention_score", str, "scaled_dot", "attention score (authors: attention_type; cosine_sim = cosine)",
        choices=ATTENTION_SCORES),
    key("attention_normalize", str, "softmax", "softmax, or squareplus with one global shift (authors: square_plus)",
        choices=ATTENTION_NORMALIZE),
    key("attention_normalize_over", str, "target", "edges normalised together: a target's in-edges or a source's "
        "out-edges (authors: attention_norm_idx 0 = target, 1 = source)", choices=ATTENTION_NORMALIZE_OVER),
    key("key_bias", bool, True, "W_K has a bias (as the authors' layer)"),
    key("input_dropout", float, 0.5, "dropout before the encoder", **_prob),
    key("dropout", float, 0.0, "dropout before the decoder", **_prob),
    key("batch_norm", bool, False, "BatchNorm1d after the encoder (authors: batch_norm, bn_in)"),
    key("self_loop_weight", float, 1.0, "> 0 adds self loops", ge=0),
    key("source_term", bool, True, "include beta * x(0)"),
    key("add_source", bool, None, "alias of source_term (the authors' name)", null=True),
    key("detach_source", bool, False, "source term uses x(0) detached from the encoder (the authors' code)"),
    key("augment", bool, False, "Anode zero augmentation"),
    key("hard_attention", bool, False, "the authors' hard-attention block: training keeps the edges above the "
        "(1 - attention_keep) attention quantile (always on for grand-nl-rw)"),
    key("attention_keep", float, 0.9, "hard attention: fraction of edges kept (authors: att_samp_pct)", gt=0, le=1),
    key("laplacian_normalize_over", str, "target", "grand-laplacian: row (target) or column (source, the "
        "authors' get_rw_adj) normalisation", choices=ATTENTION_NORMALIZE_OVER),
    key("eval_time_factor", float, None, "evaluate by integrating to this times T and competing the best-"
        "validation step time (authors: earlystopxT; null: evaluate at T)", gt=0, null=True),
    key("eval_max_steps", int, 100, "eval_time_factor: step attempts (authors: max_test_steps)", ge=1),
    key("adjoint_attention_grad", bool, True, "adjoint: also differentiate GRAND-l's fixed attention and x(0) "
        "(false: the authors' adjoint)"),
    key("ops_backend", str, None, "force an ops backend (null: automatic)", choices=OPS_BACKENDS, null=True),
    # regularisation
    key("kinetic_energy", float, 0.0, "kinetic-energy regulariser coefficient", ge=0),
    key("jacobian_norm2", float, 0.0, "Jacobian Frobenius regulariser coefficient", ge=0),
    # GRAND-nl-rw: GDC, then hard attention (attention_keep)
    key("gdc", bool, True, "GRAND-nl-rw: GDC rewiring first"),
    key("gdc_method", str, "ppr", "GDC diffusion", choices=("ppr", "heat")),
    key("ppr_alpha", float, 0.05, "PPR teleport probability", gt=0, lt=1),
    key("heat_time", float, None, "heat-kernel time (gdc_method heat)", gt=0, null=True),
    key("gdc_sparsification", str, "topk", "GDC sparsification", choices=("topk", "threshold")),
    key("gdc_k", int, 64, "GDC top-k entries per node", ge=1),
    key("gdc_threshold", float, None, "GDC threshold eps (sparsification threshold)", gt=0, null=True),
    key("gdc_avg_degree", int, None, "GDC threshold chosen for this average degree", ge=1, null=True),
])

_GCN_ARCH = [
    key("layers", int, 2, "number of layers", ge=1),
    key("num_layers", int, None, "alias of layers", ge=1, null=True),
    key("hidden", int, 64, "hidden size", ge=1),
    key("dropout", float, 0.6, "dropout before each layer", **_prob),
]
GCN = Schema("gcn", RUN_KEYS + TRAIN_KEYS + _GCN_ARCH + [
    key("init", str, "glorot", "weight initialisation", choices=GCN_INITS),
    key("rewiring", str, "none", "gradient-guided rewiring", choices=("none",) + REWIRING_CRITERIA),
    key("rewiring_p", float, 0.1, "gradient_flow: skip when GF_l < p * GF_l(first epoch)", gt=0),
    key("rewiring_threshold", float, 0.4, "dirichlet_energy: skip when E_l < threshold * E_l(first epoch)", gt=0),
    key("rewiring_alpha", float, 1.0, "skip ratio of the rewiring", ge=0),
    key("rewiring_laplacian", str, "augmented", "dirichlet_energy: augmented (the paper's) or sym (the code's)",
        choices=("augmented", "sym")),
    key("rewiring_probe_epochs", int, None, "check only the first K epochs (null: every epoch)", ge=1, null=True),
    key("skips", list, None, "layers with a skip from the start ('all': layers 1 .. L-2)", item=int, null=True,
        literals=("all",)),
    key("alpha", float, 1.0, "skip ratio of the skips given by 'skips'", ge=0),
    key("bias", bool, True, "layers have a bias"),
    key("dropout_rng", str, "philox", "dropout masks: philox (graphode.ops.dropout, fused) or torch (rand_like, "
        "the stream of the runs recorded before it)", choices=("philox", "torch")),
])

GCN_BASELINES = Schema("gcn-baselines", RUN_KEYS + TRAIN_KEYS + _GCN_ARCH + [
    key("alpha", float, 0.1, "GCNII / APPNP teleport, initial-skip weight", ge=0, le=1),
    key("theta", float, 0.5, "GCNII identity-mapping strength", gt=0),
    key("heads", int, 8, "GAT heads", ge=1),
    key("jk_mode", str, "cat", "JKNet aggregation", choices=("cat", "max", "lstm")),
    key("sgc_dropout", float, 0.0, "SGC input dropout", **_prob),
    key("sgc_bias", bool, True, "SGC linear layer has a bias"),
    key("sgc_dropout_after", bool, False, "SGC: dropout on the propagated features (the benchmark's) "
        "instead of the input"),
    key("jk_dropout_after", bool, False, "JKNet: dropout after each layer's ReLU only (the benchmark's order)"),
    key("pyg_csr", bool, False, "GCNII / JKNet / tricks (not DropEdge): propagate with a normalised sparse "
        "CSR adj_t"),
    key("weight_decay_conv", float, None, "GCNII: weight decay of the convolutions (null: weight_decay)", ge=0,
        null=True),
    key("weight_decay_dense", float, None, "GCNII: weight decay of the dense layers (null: weight_decay)", ge=0,
        null=True),
    key("weight_decay_in", float, None, "APPNP: weight decay of the first layer (null: weight_decay)", ge=0,
        null=True),
    key("weight_decay_out", float, None, "APPNP: weight decay of the second layer (null: weight_decay)", ge=0,
        null=True),
    key("skip", str, None, "tricks: skip connection", choices=("none", "residual", "initial", "jumping", "dense"),
        null=True),
    key("norm", str, None, "tricks: normalisation", choices=("none", "batch", "pair"), null=True),
    key("drop_edge", float, 0.0, "DropEdge rate", **_prob),
    key("pair_norm_scale", float, 1.0, "PairNorm scale", gt=0),
], model_defaults={"gcn-dropedge": {"drop_edge": 0.3}},
    # the packaged deep-GCN configs, which the baselines train with, hold these keys of `gcn`
    inert={"init": "glorot", "rewiring": "none", "rewiring_p": 0.1, "rewiring_threshold": 0.4,
           "rewiring_laplacian": "augmented", "dropout_rng": "philox",
           "rewiring_alpha": 1.0, "rewiring_probe_epochs": None})

#: a model registered without a schema: the run and training keys are checked, others pass
GENERIC = Schema("generic", RUN_KEYS + TRAIN_KEYS)

SCHEMAS: Dict[str, Schema] = {"grand": GRAND, "gcn": GCN, "gcn-baselines": GCN_BASELINES}


def family_of(model: Optional[str]) -> Optional[str]:
    """The schema family of a model name (None: no schema known)."""
    if not model:
        return None
    m = str(model).lower()
    if m.startswith("grand"):
        return "grand"
    if m == "gcn":
        return "gcn"
    if m in BASELINE_NAMES:
        return "gcn-baselines"
    return None


def schema_for(model: Optional[str]) -> Schema:
    """The :class:`Schema` of ``model`` (:data:`GENERIC` for a model without one)."""
    fam = family_of(model)
    return SCHEMAS[fam] if fam else GENERIC


def check_config(config: Mapping[str, Any], model: Optional[str], source: str) -> Dict[str, Any]:
    """Check ``config`` (from ``source``: a file name or ``--set``) against ``model`` 's schema:
    unknown keys (strict for the known families), types, ranges and choices.  Returns the
    coerced values; raises :class:`ConfigError`."""
    fam = family_of(model)
    schema = SCHEMAS[fam] if fam else GENERIC
    return schema.check(config, source, model, strict=fam is not None)


# ----------------------------------------------------------------------------- files
def _configs_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def packaged_config_path(model: Optional[str], dataset: str) -> Optional[str]:
    """Path of the packaged config for ``model`` on ``dataset``, or None if there is none
    (``configs/grand/<dataset>.yaml`` for GRAND models; the deep-GCN baselines train with
    ``configs/gcn/<dataset>.yaml``; ``configs/<model>/<dataset>.yaml`` otherwise)."""
    name = dataset.lower().replace("_", "-")
    try:  # aliases (cs -> coauthor-cs, arxiv -> ogbn-arxiv, ...)
        from .datasets._load import canonical_name

        name = canonical_name(name)
    except ValueError:
        pass
    fams = []
    if model:
        m = model.lower()
        fams.append("grand" if m.startswith("grand") else m)
        fams.append(m.split("-")[0])
        if family_of(m) == "gcn-baselines":
            fams.append("gcn")
    for fam in dict.fromkeys(fams):
        p = os.path.join(_configs_dir(), fam, f"{name}.yaml")
        if os.path.exists(p):
            return p
    return None


def read_yaml_mapping(path: str, what: str = "config") -> Dict[str, Any]:
    """A YAML file that must hold a mapping; :class:`ConfigError` (one line, naming the file
    and the line of a syntax error) otherwise."""
    import yaml

    if not os.path.exists(path):
        raise ConfigError(f"{what} file {path} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"{what} file {path} is a folder")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} file {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a YAML mapping of key: value, got {type(data).__name__}")
    return data


def load_config(path: Optional[str] = None, model: Optional[str] = None,
                dataset: Optional[str] = None, check: bool = True) -> Dict[str, Any]:
    """Read a flat YAML config (``path``, else the packaged one for model/dataset, else {}).

    With ``check`` the keys are checked against the schema of ``model`` (or of the file's
    own ``model`` key): see :func:`check_config`."""
    if path is None and dataset is not None:
        path = packaged_config_path(model, dataset)
    if path is None:
        return {}
    cfg = read_yaml_mapping(path)
    if check:
        cfg = check_config(cfg, model or cfg.get("model"), path)
    return cfg


def parse_set(items: Sequence[str]) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML).  Check the
    result with :func:`check_config` (source ``"--set"``)."""
    import yaml

    out: Dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--set expects key=value, got {it!r} (no key)")
        try:
            out[k] = yaml.safe_load(v) if v.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {k}: cannot parse the value {v!r} (YAML)") from None
    return out


def resolved_config(config: Mapping[str, Any], model: Optional[str]) -> Dict[str, Any]:
    """``config`` with every key of ``model`` 's schema that it leaves out at its default:
    what the run uses (``graphode train --print-config``)."""
    schema = schema_for(model)
    out = schema.defaults(model)
    out.update(config)
    if family_of(model) == "grand":
        rtol, atol = grand_tolerances(out["tol_scale"])
        out["rtol"] = out["rtol"] if out.get("rtol") is not None else rtol
        out["atol"] = out["atol"] if out.get("atol") is not None else atol
    return out


def dump_config(config: Mapping[str, Any]) -> str:
    """The config as YAML (keys in the schema's order)."""
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
