"""Speed of the k-NN and SVC heads against scikit-learn, in one process, on the same data.

    python benchmarks/heads.py                      # 10,000 queries x 50,000 references, d = 10 and 512
    python benchmarks/heads.py --queries 2000 --references 10000 --svc-queries 10000   # quicker
    python benchmarks/heads.py --device cuda
    python benchmarks/heads.py --compare-chunks     # CPU: cache-sized query chunks vs memory-bound ones

Targets on CPU: k-NN <= 0.5x the time of KNeighborsClassifier(algorithm="brute").predict, fast SVC
prediction <= 0.2x SVC.predict. Every run also checks that the predictions are identical (the random float
data has no exact distance ties, where robustgsl's lowest-index rule and scikit-learn's heap could differ).
Data: a 10-class Gaussian mixture (class means 3 apart per coordinate scale, unit noise), float32.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from robustgsl.knn import KnnIndex
from robustgsl.svc import fit_svc, svc_predict


def mixture(n: int, d: int, num_classes: int, rng: np.random.Generator, means: np.ndarray):
    labels = rng.integers(0, num_classes, n)
    points = means[labels] + rng.standard_normal((n, d))
    return points.astype(np.float32), labels


def timed(function, repeat: int, warm_up=None):
    """Best wall time of ``repeat`` calls, and the last result (after one untimed ``warm_up`` call)."""
    if warm_up is not None:
        warm_up()
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--references", type=int, default=50_000)
    parser.add_argument("--dims", type=str, default="10,512")
    parser.add_argument("--k", type=str, default="1,10")
    parser.add_argument("--svc-train", type=int, default=5_000)
    parser.add_argument("--svc-dim", type=int, default=10)
    parser.add_argument("--svc-queries", type=int, default=50_000)
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="best of N for each timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-chunks", action="store_true",
                        help="also time the prebuilt k-NN index with memory-bound query chunks instead of the "
                             "default (on CPU: cache-sized ones, robustgsl.knn.CPU_CACHE_BYTES)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both torch and scikit-learn (OpenMP/BLAS); default: all")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    rng = np.random.default_rng(args.seed)
    num_classes = 10
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")

    for d in [int(v) for v in args.dims.split(",")]:
        means = 3.0 * rng.standard_normal((num_classes, d)) / np.sqrt(d) * np.sqrt(10)
        reference, reference_labels = mixture(args.references, d, num_classes, rng, means)
        queries, _ = mixture(args.queries, d, num_classes, rng, means)
        for k in [int(v) for v in args.k.split(",")]:
            sklearn_model = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(reference, reference_labels)
            t_sklearn, expected = timed(lambda: sklearn_model.predict(queries), args.repeat,
                                        warm_up=lambda: sklearn_model.predict(queries[:100]))

            def ours(n_queries=None):
                # Includes building the index (centring, norms) each time: the conservative comparison.
                index = KnnIndex(reference, reference_labels, num_classes, device=args.device)
                return index.predict(queries[:n_queries], k), index.exact_queries, index.uncertified_queries

            t_ours, (predicted, exact, uncertified) = timed(ours, args.repeat, warm_up=lambda: ours(100))
            # As evaluation uses it: the index built once (fit), then queried per corruption and severity.
            index = KnnIndex(reference, reference_labels, num_classes, device=args.device)
            t_query, predicted_again = timed(lambda: index.predict(queries, k), args.repeat)
            same = bool(np.array_equal(predicted, expected) and np.array_equal(predicted_again, expected))
            print(f"k-NN  k={k:<2} d={d:<4} {args.queries} x {args.references}: sklearn {t_sklearn:7.3f} s, "
                  f"robustgsl {t_ours:7.3f} s incl. index build (ratio {t_ours / t_sklearn:5.3f}), "
                  f"{t_query:7.3f} s prebuilt (ratio {t_query / t_sklearn:5.3f}); target <= 0.5; "
                  f"identical={same}, exact re-rank queries={exact}, full exact={uncertified}")
            if args.compare_chunks:
                # chunk_size is capped by the memory bound, so a huge one means "memory-bound chunks".
                t_bound, predicted_bound = timed(lambda: index.predict(queries, k, chunk_size=1 << 62), args.repeat)
                print(f"      query chunks: default {t_query:7.3f} s, memory-bound {t_bound:7.3f} s, "
                      f"ratio default/memory-bound {t_query / t_bound:5.3f}, "
                      f"identical={bool(np.array_equal(predicted_bound, expected))}")

    d = args.svc_dim
    means = 1.0 * rng.standard_normal((num_classes, d))
    train, train_labels = mixture(args.svc_train, d, num_classes, rng, means)
    queries, _ = mixture(args.svc_queries, d, num_classes, rng, means)
    start = time.perf_counter()
    svc = fit_svc(train, train_labels)
    t_fit = time.perf_counter() - start
    t_sklearn, expected = timed(lambda: svc.predict(queries), args.repeat,
                                warm_up=lambda: svc.predict(queries[:100]))
    t_ours, predicted = timed(lambda: svc_predict(svc, queries, device=args.device), args.repeat,
                              warm_up=lambda: svc_predict(svc, queries[:100], device=args.device))
    same = bool(np.array_equal(predicted, expected))
    print(f"SVC   fit on {args.svc_train} x d={d} ({svc.support_vectors_.shape[0]} support vectors, "
          f"fit {t_fit:.1f} s), predict {args.svc_queries}: sklearn {t_sklearn:7.3f} s, "
          f"robustgsl {t_ours:7.3f} s, ratio {t_ours / t_sklearn:5.3f} (target <= 0.2), identical={same}")


if __name__ == "__main__":
    main()
