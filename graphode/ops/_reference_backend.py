"""The "reference" backend: the pure-PyTorch ops, under the backend interface.

Every backend module exposes the same three functions, called by
``graphode.ops`` after input validation:

* ``spmm(graph, edge_weight, x)``
* ``edge_attention(graph, q, k, scale, **options)``
* ``attention_diffusion(graph, q, k, x, scale, **options)``

and may declare ``ATTENTION_OPTIONS``: for each attention option
(``score``, ``normalize``, ``normalize_over``) the values it implements.  A
backend without the declaration implements the defaults only
(``scaled_dot`` / ``softmax`` / ``target``) and is called without the option
keywords (see :func:`graphode.ops._dispatch.backend_supports`).
"""
from .reference import NORMALIZE, NORMALIZE_OVER, SCORES, attention_diffusion, edge_attention, spmm  # noqa: F401

ATTENTION_OPTIONS = {"score": SCORES, "normalize": NORMALIZE, "normalize_over": NORMALIZE_OVER}
