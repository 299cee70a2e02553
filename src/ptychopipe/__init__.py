"""ptychopipe: simulate -> PINN reconstruct -> evaluate, for far-field ptychography."""

__version__ = "0.1.0"
