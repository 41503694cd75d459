"""Graph transforms applied before training: GDC rewiring (:mod:`graphode.transforms.gdc`)."""
from .gdc import GDC, diffusion_matrix_dense, gdc, gdc_edge_index, transition_matrix

__all__ = ["GDC", "gdc", "gdc_edge_index", "diffusion_matrix_dense", "transition_matrix"]
