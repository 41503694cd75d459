"""Full-graph training beyond one process: partitioned graphs, halo exchange, distributed solving.

Built on ``torch.distributed`` (Gloo on CPU, NCCL on GPU), started by
``torchrun`` or ``graphode train --nproc N``:

* :mod:`graphode.distributed.partition`: METIS (``pymetis``) / random /
  contiguous parts, relabelled contiguous, per-part CSR rows, halo and send
  maps, saved as one file per part;
* :class:`DistGraph`: one rank's part; ``graphode.ops.spmm`` /
  ``edge_attention`` / ``attention_diffusion`` on it exchange halo rows
  (``all_to_all_single``) and run the fused kernels locally;
* :mod:`graphode.distributed.solvers`: ``odeint`` / ``odeint_adjoint`` with
  the error norm reduced across ranks (same steps and NFE as one process);
* :mod:`graphode.distributed.train`: GRAND and GCN training across ranks;
* :mod:`graphode.distributed.launch`: start N local processes with timeouts.
"""
from ._comm import init_process_group, is_distributed_env
from .graph import DistGraph
from .partition import GraphPart, Partition, load_meta, load_part, partition_graph, save_partition

__all__ = [
    "DistGraph",
    "GraphPart",
    "Partition",
    "partition_graph",
    "save_partition",
    "load_part",
    "load_meta",
    "init_process_group",
    "is_distributed_env",
]
