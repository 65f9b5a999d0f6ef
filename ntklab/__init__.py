"""ntklab: a declarative experiment runner with a result database for NTK research."""

__version__ = "0.1.0"
