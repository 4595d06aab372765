"""Classification heads on top of a trained model: argmax, k-nearest neighbours and an RBF SVC.

The ``argmax`` head reads the model's *outputs* (logits); the ``1nn``, ``10nn`` and ``svc`` heads read
*embeddings* (for a GSL model its output, for a CE model the penultimate features). The caller passes the
right tensor to each head.

Both non-trivial heads reproduce scikit-learn exactly while running as batched torch maths (on GPU when
one is given), so that 750,000 corrupted test embeddings can be classified quickly:

k-NN (``knn_predict``, ``KnnIndex``) - scikit-learn's ``KNeighborsClassifier(algorithm="brute")``
    1. Candidates in float32: for a chunk of queries, one GEMM gives ``|y|^2 - 2 x.y`` for every reference
       (after shifting all data by the reference mean, which shrinks the rounding error for features far
       from the origin). The ``k + 8`` smallest are found cheaply: minimum of each block of 64 references,
       the ``k + 8`` best blocks, then top-k inside them (no top-k over all 50,000 columns).
    2. Rigorous float32 error bound ``B = 1.1 (d + 6) u (|x'| + max |y'|)^2`` (``u = 2^-24``, shifted norms;
       see ``KnnIndex._error_bound``). If the k-th and (k+1)-th approximate distances are more than ``2B``
       apart, the k nearest are settled (most queries). Otherwise the candidates are re-ranked by exact
       float64 ``sum((x - y)^2)`` from the original coordinates; a certificate (``B`` again) shows that no
       other reference can reach the k-th distance, and where it cannot (dense near-ties) every reference
       within ``B`` is re-ranked exactly. So the answer never depends on float32 rounding.
    3. Exact ties straddling the k-th place (e.g. duplicated training images with different labels):
       scikit-learn keeps whichever its bounded max-heap keeps (``ArgKmin`` in
       ``sklearn.metrics._pairwise_distances_reduction``: a value equal to the heap's root is refused, and
       which tied member is evicted later depends on the heap's arrangement and on its parallel strategy:
       one heap per query over the references in index order, or per-thread heaps over 256-reference
       chunks merged in thread order). It is neither "lowest index" nor argsort order; for such queries
       (only) the heap is replayed with the same rules (``_sklearn_argkmin``) over exact distances.
    4. Vote: neighbour labels are counted per class; a tied vote goes to the lowest class index (as
       scikit-learn's class histogram + argmax).
    The result equals ``KNeighborsClassifier(k, algorithm="brute").fit(ref, labels).predict(queries)`` for
    the same float32 arrays, including ties (tests: lattice data, duplicates, near-ties below float32
    resolution). Remaining gap, by construction: scikit-learn ranks by its float64 expansion
    ``|x|^2 - 2 x.y + |y|^2``, so two references whose exact distances differ by less than its float64
    rounding (~1e-16 relative) may be ordered by that rounding there, and by the exact value here.
    Memory: each chunk of queries holds one float32 ``chunk x n_reference`` score matrix, at most
    ``memory_bytes`` (256 MiB by default: 1,340 queries against 50,000 references; on CPU smaller
    chunks at small d, for the cache); the float64 re-rank works in 8 MiB pieces.

SVC (``fit_svc``, ``svc_predict``) - scikit-learn's ``SVC(kernel="rbf").predict``
    libsvm's one-vs-one rule: for classes ``i < j`` (in ``classes_`` order) the decision value is
    ``sum_{sv in i} alpha[j-1, sv] K(x, sv) + sum_{sv in j} alpha[i, sv] K(x, sv) + b_ij`` with libsvm's own
    signs (``svc._dual_coef_``, ``svc._intercept_``; the public ``dual_coef_``/``intercept_`` are negated for
    two classes); a value > 0 votes for ``i``, otherwise for ``j``; the most votes win, a tie going to the
    lowest class index. ``gamma="scale"`` is read back as ``svc._gamma``. Computed in float64: one GEMM for
    the kernel's exponent ``-gamma |x - sv|^2``, ``exp``, one GEMM with a (support vector x pair) weight
    matrix. Rows where some decision value is within a rigorous rounding bound of 0 are sent to
    ``svc.predict`` itself, so the labels are exactly scikit-learn's.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from robustgsl.errors import InputError

HEADS = ("argmax", "1nn", "10nn", "svc")

# Training embeddings used to fit the SVC. libsvm's fit grows roughly quadratically with the number of
# samples (about a minute for 10,000 512-d embeddings on one CPU core); a seeded stratified subset of
# 10,000 out of CIFAR-10's 50,000 keeps 1,000 per class.
DEFAULT_SVC_TRAIN_SIZE = 10_000

# Bound on the float32 score matrix held per chunk of queries (bytes).
DEFAULT_MEMORY_BYTES = 256 * 2**20

_KNN_BLOCK = 64  # references per block in the block-minimum candidate search
_CPU_CACHE_BYTES = 64 * 2**20  # score matrix per chunk on CPU at small d
_KNN_MARGIN = 8  # extra float32 candidates, for the exact re-rank and its certificate
_FLOAT32_UNIT_ROUNDOFF = 2.0**-24
_FLOAT64_UNIT_ROUNDOFF = 2.0**-53


def _as_device(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


@contextlib.contextmanager
def _ieee_float32_matmul():
    """Run float32 matmuls in full IEEE float32 (no TF32 / bf16 shortcuts), which the error bound assumes."""
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if previous != "highest":
            torch.set_float32_matmul_precision(previous)


def _as_2d_float_tensor(array, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (n, d), got shape {tuple(tensor.shape)}.")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    if tensor.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all()):  # NaN propagates
        raise InputError(f"{what} contains NaN or infinite values; check the model and its inputs.")
    return tensor


def _labels_array(labels, n: int, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.shape != (n,):
        raise InputError(f"{what} must have shape ({n},) to match the embeddings, got {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{what} must be integer class indices, got dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{what} must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"found {labels.min()}..{labels.max()}."
        )
    return labels


def _rows_per_chunk(bytes_per_row: int, memory_bytes: int) -> int:
    return max(1, memory_bytes // max(1, bytes_per_row))


def _spans(n: int, step: int):
    """(start, stop) pairs covering range(n) in steps of ``step``."""
    return [(start, min(start + step, n)) for start in range(0, n, step)]


# --------------------------------------------------------------------------------------------- k-NN


class KnnIndex:
    """Reference embeddings prepared once (on ``device``) for repeated exact k-NN queries."""

    def __init__(self, reference, reference_labels, num_classes: int, device=None,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.device = _as_device(device)
        self.num_classes = int(num_classes)
        if self.num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}.")
        reference = _as_2d_float_tensor(reference, "reference embeddings")
        n, d = reference.shape
        if n == 0:
            raise InputError("reference embeddings are empty; k-NN needs at least one reference.")
        self.n, self.d = n, d
        self.labels = torch.as_tensor(
            _labels_array(reference_labels, n, self.num_classes, "reference labels"), device=self.device)
        self.memory_bytes = int(memory_bytes)
        # Originals, for the exact float64 re-rank (float32 -> float64 is exact).
        self.reference = reference.to(self.device)
        # Candidate GEMM operand, float32, centred, padded to whole blocks: row j is [y_j - m, |y_j - m|^2]
        # so that [-2 (x - m), 1] . row_j = |y_j - m|^2 - 2 (x - m).(y_j - m) in one GEMM (no separate pass
        # adding norms). The shift m (the float32 mean) leaves distances unchanged and shrinks the rounding
        # error, which grows with the norms, for features far from the origin.
        self.shift = self.reference.mean(dim=0).to(torch.float32)  # any shift is exact; the mean is a good one
        self.n_blocks = -(-n // _KNN_BLOCK)
        self.augmented = torch.empty(self.n_blocks * _KNN_BLOCK, d + 1, dtype=torch.float32, device=self.device)
        self.augmented[n:, :d] = 0
        self.augmented[n:, d] = math.inf  # padding rows: never candidates
        max_sq_norm = 0.0
        for start, stop in _spans(n, _rows_per_chunk(8 * d, self.memory_bytes)):
            rows32, sq_norms = self._centre(self.reference[start:stop])
            self.augmented[start:stop, :d] = rows32
            self.augmented[start:stop, d] = sq_norms.to(torch.float32)
            max_sq_norm = max(max_sq_norm, float(sq_norms.max()))
        self.max_norm = math.sqrt(max_sq_norm)
        # float32 (chunk, n_padded) buffer kept between calls: allocating it costs more than the GEMM.
        self._scores = None
        # Diagnostics: queries re-ranked in float64, and those redone over every plausible reference.
        self.exact_queries = 0
        self.uncertified_queries = 0
        self.tied_queries = 0  # an exact tie straddled the k-th place: scikit-learn's heap emulated
        self._call_n_queries = 0

    def release_buffer(self) -> None:
        """Free the cached score buffer (it is re-created by the next query)."""
        self._scores = None

    def _centre(self, rows):
        """rows - shift rounded once to float32, and its squared norms (float32 products, float64 sums)."""
        rows = rows.to(self.device)
        if rows.dtype == torch.float32:
            rows32 = rows - self.shift
        else:
            rows32 = (rows.to(torch.float64) - self.shift.to(torch.float64)).to(torch.float32)
        return rows32, torch.sum(rows32 * rows32, dim=1, dtype=torch.float64)

    def neighbours(self, queries, k: int, chunk_size: int | None = None,
                   margin: int = _KNN_MARGIN) -> torch.Tensor:
        """Indices (n_queries, k) of the k nearest references (as a set; equal distances: lower index)."""
        k = int(k)
        if not 1 <= k <= self.n:
            raise InputError(f"k must be between 1 and the number of references ({self.n}), got {k}.")
        queries = _as_2d_float_tensor(queries, "query embeddings")
        if queries.shape[1] != self.d:
            raise InputError(
                f"query embeddings have dimension {queries.shape[1]} but the references have {self.d}; "
                "use embeddings from the same model.")
        n_candidates = min(k + max(1, int(margin)), self.n)  # > k unless k == n
        # scikit-learn's handling of exact ties depends on how many queries one predict() call gets.
        self._call_n_queries = queries.shape[0]
        row_bytes = 4 * self.augmented.shape[0]
        auto = _rows_per_chunk(row_bytes, self.memory_bytes)
        if chunk_size is None and self.device.type == "cpu":
            # For small d the GEMM only streams its output: keep that near the cache for the block minima
            # that read it next (measured 1.5-2x faster at d = 10 on an idle CPU; much smaller chunks lose
            # when the cores are shared, as each op's thread barrier then waits). Large d: big chunks.
            chunk_size = _rows_per_chunk(row_bytes, _CPU_CACHE_BYTES * max(1, self.d // 64))
        chunk = auto if chunk_size is None else max(1, min(int(chunk_size), auto))
        # Bookkeeping is done per block of many chunks: a few large tensor ops instead of many small ones.
        block = max(chunk, min(1 << 16, _rows_per_chunk(16 * (self.d + 1), self.memory_bytes // 4)))
        out = torch.empty(queries.shape[0], k, dtype=torch.int64, device=self.device)
        rows = min(chunk, queries.shape[0])
        if self._scores is None or self._scores.shape[0] < rows:
            self._scores = torch.empty(rows, self.augmented.shape[0], dtype=torch.float32, device=self.device)
        with _ieee_float32_matmul():
            for start, stop in _spans(queries.shape[0], block):
                out[start:stop] = self._neighbours_block(queries[start:stop], k, n_candidates, chunk)
        return out

    def _neighbours_block(self, queries, k, n_candidates, chunk):
        q_centred, q_sq_norm = self._centre(queries)
        # [-2 x', 1]: the GEMM then gives |y'|^2 - 2 x'.y' = squared distance - |x'|^2 (-2 x' is exact).
        q_augmented = torch.cat([-2.0 * q_centred, torch.ones_like(q_centred[:, :1])], dim=1)
        n_sel = min(n_candidates, self.n_blocks)
        block_ids = torch.empty(queries.shape[0], n_sel, dtype=torch.int64, device=self.device)
        top_values = torch.empty(queries.shape[0], n_candidates, dtype=torch.float32, device=self.device)
        top_flat = torch.empty(queries.shape[0], n_candidates, dtype=torch.int64, device=self.device)
        for start, stop in _spans(queries.shape[0], chunk):
            scores = self._scores[:stop - start]
            torch.mm(q_augmented[start:stop], self.augmented.T, out=scores)
            # The n_candidates blocks with the smallest minima hold the n_candidates smallest scores, so
            # top-k runs over n_candidates * 64 values instead of every reference.
            blocked = scores.view(stop - start, self.n_blocks, _KNN_BLOCK)
            ids = blocked.amin(dim=2).topk(n_sel, dim=1, largest=False, sorted=False).indices
            gathered = blocked.gather(1, ids[:, :, None].expand(-1, -1, _KNN_BLOCK))
            torch.topk(gathered.view(stop - start, -1), n_candidates, dim=1, largest=False, sorted=False,
                       out=(top_values[start:stop], top_flat[start:stop]))
            block_ids[start:stop] = ids
        candidates = block_ids.gather(1, top_flat // _KNN_BLOCK) * _KNN_BLOCK + top_flat % _KNN_BLOCK

        # Approximate squared distances of the candidates, each within `bound` of the exact one.
        approx, order = (top_values.to(torch.float64) + q_sq_norm[:, None]).sort(dim=1)
        candidates = candidates.gather(1, order)
        result = candidates[:, :k].clone()
        if n_candidates == k:
            return result  # k == number of references: all of them
        bound = self._error_bound(q_sq_norm) + 4 * (self.d + 2) * _FLOAT64_UNIT_ROUNDOFF * approx[:, k]
        # Settled: a gap of more than 2 * bound between the k-th and (k+1)-th approximate distance means
        # the k smallest approximate are the k smallest exact, strictly (non-candidates lie beyond too).
        unsettled = torch.nonzero(approx[:, k] - approx[:, k - 1] <= 2 * bound).flatten()
        self.exact_queries += int(unsettled.numel())
        if unsettled.numel():
            result[unsettled] = self._exact_neighbours(
                queries[unsettled], q_augmented[unsettled], candidates[unsettled], approx[unsettled, -1],
                q_sq_norm[unsettled], bound[unsettled], k)
        return result

    def _exact_neighbours(self, queries, q_augmented, candidates, worst_approx, q_sq_norm, bound, k):
        """k nearest by exact float64 distance for queries float32 left open; ties as scikit-learn."""
        q64 = queries.to(device=self.device, dtype=torch.float64)
        exact = self._exact_sq_distances(q64, candidates)
        nearest, exact_sorted = _sort_by_distance_then_index(candidates, exact)
        kth = exact_sorted[:, k - 1]
        bound = bound + 4 * (self.d + 2) * _FLOAT64_UNIT_ROUNDOFF * kth
        # Certificate: every non-candidate has approximate distance >= worst_approx, so exact >=
        # worst_approx - bound. If that beats the k-th exact distance, no outsider can enter (or tie into)
        # the k nearest.
        certified = worst_approx - bound > kth
        # A reference outside the k nearest at exactly the k-th distance: scikit-learn's heap decides.
        tied = certified & (exact_sorted[:, k] == kth) if exact_sorted.shape[1] > k else certified & False
        result = nearest[:, :k]
        self.uncertified_queries += int((~certified).sum())
        for i in torch.nonzero(~certified).flatten().tolist():
            # Exact over every reference whose float32 score could put it at or below the k-th distance.
            scores = (self.augmented[:self.n] @ q_augmented[i]).to(torch.float64)
            pool = torch.nonzero(scores <= kth[i] - q_sq_norm[i] + bound[i]).flatten()
            pool_exact = self._exact_sq_distances(q64[i:i + 1], pool[None, :])
            pool_nearest, pool_sorted = _sort_by_distance_then_index(pool[None, :], pool_exact)
            result[i] = pool_nearest[0, :k]
            tied[i] = pool_sorted.shape[1] > k and bool(pool_sorted[0, k] == pool_sorted[0, k - 1])
        for i in torch.nonzero(tied).flatten().tolist():
            everything = torch.arange(self.n, device=self.device)[None, :]
            row = self._exact_sq_distances(q64[i:i + 1], everything)[0].cpu().numpy()
            result[i] = torch.as_tensor(_sklearn_argkmin(row, k, self._call_n_queries), device=self.device)
        self.tied_queries += int(tied.sum())
        return result

    def _error_bound(self, q_sq_norm: torch.Tensor) -> torch.Tensor:
        """Bound on |float32 score + |x|^2 - exact squared distance|, per query (float64).

        With x', y' the float32 centred vectors and u = 2^-24 (Higham, Accuracy and Stability of Numerical
        Algorithms, 2nd ed., section 3.1): the (d+1)-term float32 dot product [-2x', 1].[y', |y'|^2] errs by
        <= gamma_{d+1} (2 |x'||y'| + |y'|^2) whatever the summation order (blocked, FMA or not); |y'|^2 from
        float32 products, stored in float32, is off by <= 2u |y'|^2; rounding x - m and y - m to float32 moves
        the squared distance by <= 2u (|x'| + |y'|)^2. All together <= (d + 5) u (1 + O(du)) (|x'| + |y'|)^2;
        we use 1.1 (d + 6) u (|x'| + max |y'|)^2.
        """
        scale = (q_sq_norm.sqrt() + self.max_norm) ** 2
        return 1.1 * (self.d + 6) * _FLOAT32_UNIT_ROUNDOFF * scale

    def _exact_sq_distances(self, q64: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """sum((x - y)^2) in float64 for reference rows ``index`` (rows, m) of each query.

        Worked in pieces of about 8 MiB (cache-sized; large temporaries are slower than the arithmetic).
        """
        rows, m = index.shape
        out = torch.empty(rows, m, dtype=torch.float64, device=self.device)
        piece = min(self.memory_bytes, 8 * 2**20) // (8 * self.d)  # (query, reference) pairs per piece
        step_m = max(1, min(m, piece))
        step_rows = max(1, piece // step_m)
        for r in range(0, rows, step_rows):
            for c in range(0, m, step_m):
                idx = index[r:r + step_rows, c:c + step_m]
                diff = self.reference[idx].to(torch.float64) - q64[r:r + step_rows, None, :]
                out[r:r + step_rows, c:c + step_m] = (diff * diff).sum(dim=2)
        return out

    def predict(self, queries, k: int, chunk_size: int | None = None) -> np.ndarray:
        """Majority vote of the k nearest references; a tied vote goes to the lowest class index."""
        nearest = self.neighbours(queries, k, chunk_size=chunk_size)
        votes = torch.zeros(nearest.shape[0], self.num_classes, dtype=torch.int64, device=self.device)
        votes.scatter_add_(1, self.labels[nearest], torch.ones_like(nearest))
        # np.argmax returns the first maximum: the lowest class index among tied votes.
        return np.argmax(votes.cpu().numpy(), axis=1).astype(np.int64)


def _heap_push(values: list, indices: list, value: float, index: int) -> None:
    """Push onto a bounded max-heap (root = current k-th), as scikit-learn's ``heap_push``: a value equal
    to the root is refused, and a new value sifts down only past strictly larger children."""
    if value >= values[0]:
        return
    size, node = len(values), 0
    while True:
        child = 2 * node + 1
        if child >= size:
            break
        if child + 1 < size and values[child + 1] > values[child]:
            child += 1  # the larger child; on equal children the left one
        if not value < values[child]:
            break
        values[node], indices[node] = values[child], indices[child]
        node = child
    values[node], indices[node] = value, index


def _heap_scan(values: list, indices: list, distances: np.ndarray, start: int, stop: int) -> None:
    """Push distances[start:stop] in index order. Most are refused by the root check, which is done in
    numpy for a run of references at a time (the root only decreases, and each push re-checks)."""
    run = max(64, len(values))
    while start < stop:
        end = min(start + run, stop)
        for j in np.flatnonzero(distances[start:end] < values[0]):
            _heap_push(values, indices, float(distances[start + j]), start + int(j))
        start, run = end, min(2 * run, 1 << 14)


def _sklearn_argkmin(distances: np.ndarray, k: int, n_queries: int) -> np.ndarray:
    """The k neighbours scikit-learn's brute force keeps for one query row of squared distances.

    With exact ties at the k-th place the kept member depends on the order of heap pushes: scikit-learn
    (``sklearn.metrics._pairwise_distances_reduction``, ``ArgKmin``) either scans all references in index
    order into one heap ("parallel_on_X"), or gives each of its T threads a contiguous run of 256-reference
    chunks (OpenMP static schedule) with a heap of its own, then pushes thread 0's heap array, thread 1's,
    ... into the final heap ("parallel_on_Y"). It picks parallel_on_Y when there are at least as many
    references as queries and queries <= 4 * 256 * T. Replayed here with the same rules.
    """
    from sklearn import get_config

    try:
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
        threads = _openmp_effective_n_threads()
    except ImportError:  # private helper moved: the usual value
        import os
        threads = os.cpu_count() or 1
    n = distances.shape[0]
    chunk = min(n, get_config().get("pairwise_dist_chunk_size", 256))
    on_y = not (n < n_queries or 4 * chunk * threads < n_queries)
    largest = np.finfo(np.float64).max
    values, indices = [largest] * k, [0] * k
    if not on_y:
        _heap_scan(values, indices, distances, 0, n)
        return np.asarray(indices, dtype=np.int64)
    n_chunks = -(-n // chunk)
    n_threads = min(n_chunks, threads)
    per_thread, extra = divmod(n_chunks, n_threads)
    first_chunk = 0
    for t in range(n_threads):
        count = per_thread + (t < extra)  # static schedule: the first `extra` threads get one more chunk
        thread_values, thread_indices = [largest] * k, [-1] * k
        _heap_scan(thread_values, thread_indices, distances, first_chunk * chunk,
                   min((first_chunk + count) * chunk, n))
        for value, index in zip(thread_values, thread_indices):
            _heap_push(values, indices, value, index)
        first_chunk += count
    return np.asarray(indices, dtype=np.int64)


def _sort_by_distance_then_index(index: torch.Tensor, distance: torch.Tensor):
    """Sort each row by (distance, index): a stable sort by distance after a sort by index."""
    by_index = index.argsort(dim=1)
    index = index.gather(1, by_index)
    distance = distance.gather(1, by_index)
    order = distance.sort(dim=1, stable=True).indices
    return index.gather(1, order), distance.gather(1, order)


def knn_predict(reference, reference_labels, queries, k: int, num_classes: int, device=None,
                chunk_size: int | None = None, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> np.ndarray:
    """k-NN class predictions (int64), identical to ``KNeighborsClassifier(k, algorithm="brute")``.

    ``chunk_size`` caps the queries per chunk; by default (and at most) it is what keeps the float32
    ``chunk x n_reference`` score matrix under ``memory_bytes``.
    """
    index = KnnIndex(reference, reference_labels, num_classes, device=device, memory_bytes=memory_bytes)
    return index.predict(queries, k, chunk_size=chunk_size)


# ---------------------------------------------------------------------------------------------- SVC


def stratified_subset(labels, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of ``size`` samples (all when size >= n)."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = labels.shape[0]
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise InputError(f"SVC training subset size must be >= 1, got {size}.")
    n_classes = np.unique(labels).size
    if size < n_classes:
        raise InputError(
            f"SVC training subset size {size} is smaller than the number of classes ({n_classes}); "
            f"use at least {n_classes}.")
    try:
        subset, _ = train_test_split(np.arange(n), train_size=size, stratify=labels, random_state=seed)
    except ValueError as error:  # e.g. a class with a single sample cannot be stratified
        raise InputError(f"cannot draw a stratified SVC training subset of {size}: {error}") from error
    return np.sort(subset)


def fit_svc(embeddings, labels, train_size: int | None = None, seed: int = 0, C: float = 1.0,
            gamma="scale"):
    """Fit scikit-learn's RBF ``SVC`` on a seeded stratified subset of ``train_size`` embeddings."""
    from sklearn.svm import SVC

    embeddings = np.asarray(embeddings.cpu() if isinstance(embeddings, torch.Tensor) else embeddings)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise InputError(
            f"SVC needs embeddings (n, d) and labels (n,), got {embeddings.shape} and {labels.shape}.")
    if np.unique(labels).size < 2:
        raise InputError("SVC needs training embeddings from at least 2 classes.")
    subset = stratified_subset(labels, train_size, seed)
    return SVC(C=C, kernel="rbf", gamma=gamma).fit(embeddings[subset], labels[subset])


def _svc_parameters(svc, device):
    """Support vectors, per-pair weights, intercepts and pairs of a fitted RBF SVC, on ``device``.

    ``weights[sv, p]`` is the coefficient of K(x, sv) in libsvm's decision value for pair p = (i, j):
    ``alpha[j - 1, sv]`` for a support vector of class i, ``alpha[i, sv]`` for one of class j, else 0.
    """
    if getattr(svc, "kernel", None) != "rbf" or not hasattr(svc, "support_vectors_"):
        raise InputError("fast SVC prediction needs a fitted sklearn.svm.SVC with kernel='rbf'.")
    if getattr(svc, "_sparse", False):
        raise InputError("fast SVC prediction needs an SVC fitted on dense arrays, not sparse ones.")
    if getattr(svc, "break_ties", False):
        raise InputError("fast SVC prediction reproduces the one-vs-one vote; fit the SVC with break_ties=False.")
    support = np.asarray(svc.support_vectors_, dtype=np.float64)
    # libsvm's own signs (scikit-learn negates the public dual_coef_/intercept_ for two classes).
    alpha = np.asarray(svc._dual_coef_, dtype=np.float64)
    intercept = np.asarray(svc._intercept_, dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(svc.n_support_)])
    n_classes = len(bounds) - 1
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    weights = np.zeros((support.shape[0], len(pairs)))
    for p, (i, j) in enumerate(pairs):
        weights[bounds[i]:bounds[i + 1], p] = alpha[j - 1, bounds[i]:bounds[i + 1]]
        weights[bounds[j]:bounds[j + 1], p] = alpha[i, bounds[j]:bounds[j + 1]]
    as64 = dict(dtype=torch.float64, device=device)
    return (torch.as_tensor(support, **as64), torch.as_tensor(weights, **as64),
            torch.as_tensor(intercept, **as64), pairs, float(svc._gamma))


def svc_predict(svc, queries, device=None, chunk_size: int | None = None,
                memory_bytes: int = DEFAULT_MEMORY_BYTES) -> np.ndarray:
    """Labels identical to ``svc.predict(queries)`` for a fitted RBF ``SVC``, as batched float64 maths.

    ``chunk_size`` caps the queries per chunk; by default (and at most) the float64 ``chunk x n_support``
    kernel matrix stays under ``memory_bytes``.
    """
    device = _as_device(device)
    queries_np = np.asarray(queries.cpu() if isinstance(queries, torch.Tensor) else queries)
    queries = _as_2d_float_tensor(queries_np, "query embeddings")
    support, weights, intercept, pairs, gamma = _svc_parameters(svc, device)
    n_support, d = support.shape
    if queries.shape[1] != d:
        raise InputError(
            f"query embeddings have dimension {queries.shape[1]} but the SVC was fitted on {d}; "
            "use embeddings from the same model.")
    n_classes = len(svc.classes_)
    # [x, 1, |x|^2] . [2g sv, -g |sv|^2, -g] = -g |x - sv|^2: the kernel's exponent in one GEMM.
    support_sq = (support * support).sum(dim=1)
    support_augmented = torch.cat(
        [2 * gamma * support, -gamma * support_sq[:, None], torch.full_like(support_sq[:, None], -gamma)], dim=1)
    # votes = positive @ to_first + (1 - positive) @ to_second, with one-hot pair -> class matrices.
    to_first, to_second = np.zeros((len(pairs), n_classes)), np.zeros((len(pairs), n_classes))
    for p, (i, j) in enumerate(pairs):
        to_first[p, i], to_second[p, j] = 1, 1
    vote_difference = torch.as_tensor(to_first - to_second, dtype=torch.float64, device=device)
    vote_base = torch.as_tensor(to_second.sum(axis=0), dtype=torch.float64, device=device)
    # Rounding bound on each decision value (Higham-style, see the module docstring): the exponent errs by
    # <= (d + 4) u g (|x| + max|sv|)^2, exp adds 2u, the weighted sum (n_support + 2) u, each times
    # sum |weight| (K <= 1). Doubled, because scikit-learn's own value carries an error of the same kind.
    u = _FLOAT64_UNIT_ROUNDOFF
    abs_weight = weights.abs().sum(dim=0)
    intercept_error = 2 * u * intercept.abs()
    max_support_norm = float(support_sq.max().sqrt())

    auto = _rows_per_chunk(8 * n_support, memory_bytes)
    chunk = auto if chunk_size is None else max(1, min(int(chunk_size), auto))
    out = np.empty(queries.shape[0], dtype=np.int64)
    uncertain = []
    # Reused for every chunk: a fresh large allocation per chunk costs as much as the GEMM filling it.
    buffer = torch.empty(min(chunk, queries.shape[0]), n_support, dtype=torch.float64, device=device)
    for start, stop in _spans(queries.shape[0], chunk):
        x = queries[start:stop].to(device=device, dtype=torch.float64)
        x_sq = (x * x).sum(dim=1, keepdim=True)
        x_augmented = torch.cat([x, torch.ones_like(x_sq), x_sq], dim=1)
        kernel = torch.mm(x_augmented, support_augmented.T, out=buffer[:stop - start]).exp_()
        decision = torch.addmm(intercept, kernel, weights)  # (rows, pairs), libsvm's dec_values
        exponent_error = (d + 4) * u * gamma * (x_sq.sqrt() + max_support_norm) ** 2
        tolerance = 2 * (abs_weight * (exponent_error + (n_support + 4) * u) + intercept_error)
        positive = (decision > 0).to(torch.float64)
        votes = torch.addmm(vote_base, positive, vote_difference)
        # np.argmax: first maximum, i.e. libsvm's lowest class index among tied votes.
        out[start:stop] = np.argmax(votes.cpu().numpy(), axis=1)
        near_zero = (decision.abs() <= tolerance).any(dim=1)
        uncertain.extend((start + torch.nonzero(near_zero).flatten().cpu().numpy()).tolist())
    labels = np.asarray(svc.classes_)[out]
    if uncertain:
        # A decision value this close to 0 could flip sign with rounding: ask libsvm itself.
        labels[uncertain] = svc.predict(queries_np[uncertain])
    return labels


# -------------------------------------------------------------------------------------------- heads


def validate_head_name(name: str) -> str:
    if name not in HEADS:
        raise InputError(f"unknown head {name!r}; valid heads: {', '.join(HEADS)}.")
    return name


class ArgmaxHead:
    """Predicts the class with the largest model output. ``predict`` takes logits, not embeddings."""

    name = "argmax"

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)

    def fit(self, reference_embeddings=None, reference_labels=None) -> "ArgmaxHead":
        return self  # nothing to fit: the model's own classifier is the head

    def predict(self, logits) -> np.ndarray:
        logits = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise InputError(
                f"the argmax head needs model outputs of shape (n, {self.num_classes}), got {logits.shape}; "
                "pass the logits, not the embeddings.")
        return np.argmax(logits, axis=1).astype(np.int64)  # ties: lowest class index


class KnnHead:
    """Majority vote of the k nearest reference embeddings (exact, as scikit-learn's brute force)."""

    def __init__(self, k: int, num_classes: int, device=None, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.k, self.num_classes, self.device, self.memory_bytes = int(k), int(num_classes), device, memory_bytes
        self.name = f"{self.k}nn"
        self.index = None

    def fit(self, reference_embeddings, reference_labels) -> "KnnHead":
        self.index = KnnIndex(reference_embeddings, reference_labels, self.num_classes, device=self.device,
                              memory_bytes=self.memory_bytes)
        return self

    def predict(self, embeddings) -> np.ndarray:
        if self.index is None:
            raise RuntimeError(f"{self.name} head used before fit()")
        return self.index.predict(embeddings, self.k)


class SvcHead:
    """scikit-learn RBF SVC fitted on a stratified subset of the references; fast exact prediction."""

    name = "svc"

    def __init__(self, num_classes: int, device=None, train_size: int | None = DEFAULT_SVC_TRAIN_SIZE,
                 seed: int = 0):
        self.num_classes, self.device, self.train_size, self.seed = int(num_classes), device, train_size, seed
        self.svc = None

    def fit(self, reference_embeddings, reference_labels) -> "SvcHead":
        self.svc = fit_svc(reference_embeddings, reference_labels, train_size=self.train_size, seed=self.seed)
        return self

    def predict(self, embeddings) -> np.ndarray:
        if self.svc is None:
            raise RuntimeError("svc head used before fit()")
        return svc_predict(self.svc, embeddings, device=self.device)


def make_head(name: str, num_classes: int, device=None, svc_train_size: int | None = DEFAULT_SVC_TRAIN_SIZE,
              seed: int = 0):
    """A head by name (see ``HEADS``). ``argmax`` predicts from model outputs, the others from embeddings."""
    validate_head_name(name)
    if name == "argmax":
        return ArgmaxHead(num_classes)
    if name == "svc":
        return SvcHead(num_classes, device=device, train_size=svc_train_size, seed=seed)
    return KnnHead(int(name[:-2]), num_classes, device=device)
