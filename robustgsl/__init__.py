"""robustgsl: robustness evaluation of classifiers trained with the graph smoothness loss.

``robustgsl.benchmark``, ``robustgsl.BenchmarkResult`` and ``robustgsl.load_corruptions`` (robustgsl/benchmarking.py)
are imported on first use, so ``import robustgsl`` stays light (no torch).
"""

__version__ = "0.1.0"

# Public name -> the module defining it, imported when the name is first read.
_LAZY = {"benchmark": "robustgsl.benchmarking", "BenchmarkResult": "robustgsl.benchmarking",
         "load_corruptions": "robustgsl.benchmarking"}
__all__ = ["BenchmarkResult", "__version__", "benchmark", "load_corruptions"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robustgsl' has no attribute {name!r}")
