"""robustgsl: robustness evaluation of classifiers trained with the graph smoothness loss."""

__version__ = "0.1.0"
