"""Neural-network building blocks: initialisers (:mod:`graphode.nn.init`)."""
from . import init
from .init import isometric_, isometric_bound

__all__ = ["init", "isometric_", "isometric_bound"]
