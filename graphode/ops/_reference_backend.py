"""The "reference" backend: the pure-PyTorch ops, under the backend interface.

Every backend module exposes the same three functions, called by
``graphode.ops`` after input validation:

* ``spmm(graph, edge_weight, x)``
* ``edge_attention(graph, q, k, scale)``
* ``attention_diffusion(graph, q, k, x, scale)``
"""
from .reference import attention_diffusion, edge_attention, spmm  # noqa: F401
