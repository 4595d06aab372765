"""Exact k-nearest-neighbour classification as batched torch maths; exact distance ties go to the lowest index.

``knn_predict`` / ``KnnIndex.predict`` vote over the k references nearest to each query by exact squared
Euclidean distance; references at exactly the same distance are ranked by index, lower first. Whenever no
two references are at exactly the same distance from a query across the k-th place, that is what
``KNeighborsClassifier(k, algorithm="brute").fit(reference, labels).predict(queries)`` gives for the same
float32 arrays. It runs on the GPU when one is given (750,000 corrupted test embeddings against 50,000
references):

1. Candidates in float32: for a chunk of queries, one GEMM gives ``|y|^2 - 2 x.y`` for every reference
   (after shifting all data by the reference mean, which shrinks the rounding error for features far
   from the origin). The ``k + 8`` smallest are found cheaply: minimum of each block of 64 references,
   the ``k + 8`` best blocks, then top-k inside them (no top-k over all 50,000 columns).
2. Rigorous float32 error bound ``B = 1.1 (d + 6) u (|x'| + max |y'|)^2`` (``u = 2^-24``, shifted norms;
   see ``KnnIndex._error_bound``). If the k-th and (k+1)-th approximate distances are more than ``2B``
   apart, the k nearest are settled (most queries). Otherwise the candidates are re-ranked by exact
   float64 ``sum((x - y)^2)`` from the original coordinates, sorted by (distance, index); a certificate
   (``B`` again) shows that no other reference can reach the k-th distance, and where it cannot (dense
   near-ties) every reference within ``B`` is re-ranked exactly. So the answer never depends on float32
   rounding, and an exact tie straddling the k-th place (e.g. duplicated training images with different
   labels) keeps the tied references of lowest index.
3. Vote: neighbour labels are counted per class; a tied vote goes to the lowest class index (as
   scikit-learn's class histogram + argmax).

Where it can differ from scikit-learn: with exact ties across the k-th place, scikit-learn keeps whichever
tied reference its heap keeps (neither lowest index nor stable across versions or thread counts); and
scikit-learn ranks by its float64 expansion ``|x|^2 - 2 x.y + |y|^2``, so two references whose exact
distances differ by less than its float64 rounding (~1e-16 relative) may be ordered by that rounding
there, and by the exact value here.
Memory: each chunk of queries holds one float32 ``chunk x n_reference`` score matrix, at most
``memory_bytes`` (256 MiB by default: 1,340 queries against 50,000 references; on CPU smaller chunks at
small d, for the cache); the float64 re-rank works in 8 MiB pieces.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from robustgsl.arrays import (DEFAULT_MEMORY_BYTES, FLOAT32_UNIT_ROUNDOFF, FLOAT64_UNIT_ROUNDOFF, as_2d_float_tensor,
                              as_device, chunk_rows, labels_array, rows_per_chunk, spans)
from robustgsl.errors import InputError

BLOCK = 64  # references per block in the block-minimum candidate search
CPU_CACHE_BYTES = 64 * 2**20  # score matrix per chunk on CPU at small d (benchmarks/heads.py --compare-chunks)
MARGIN = 8  # extra float32 candidates, for the exact re-rank and its certificate
EXACT_PIECE_BYTES = 8 * 2**20  # float64 temporaries of the exact re-rank, per piece


@contextlib.contextmanager
def ieee_float32_matmul():
    """Run float32 matmuls in full IEEE float32 (no TF32 / bf16 shortcuts), which the error bound assumes."""
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if previous != "highest":
            torch.set_float32_matmul_precision(previous)


class KnnIndex:
    """Reference embeddings prepared once (on ``device``) for repeated exact k-NN queries."""

    def __init__(self, reference, reference_labels, num_classes: int, device=None,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.device = as_device(device)
        self.num_classes = int(num_classes)
        if self.num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}.")
        reference = as_2d_float_tensor(reference, "reference embeddings")
        n, d = reference.shape
        if n == 0:
            raise InputError("reference embeddings are empty; k-NN needs at least one reference.")
        self.n, self.d = n, d
        self.labels = torch.as_tensor(
            labels_array(reference_labels, n, self.num_classes, "reference labels"), device=self.device)
        self.memory_bytes = int(memory_bytes)
        # Originals, for the exact float64 re-rank (float32 -> float64 is exact).
        self.reference = reference.to(self.device)
        self._build_candidate_operand()
        # float32 (chunk, n_padded) score buffer, kept between calls instead of allocated per call.
        self._scores = None
        # Diagnostics: queries re-ranked in float64, and those redone over every plausible reference.
        self.exact_queries = 0
        self.uncertified_queries = 0
        self.tied_queries = 0  # an exact tie straddled the k-th place: broken by the lowest index

    def _build_candidate_operand(self) -> None:
        """The float32 GEMM operand, centred and padded to whole blocks, and the largest centred norm.

        Row j is [y_j - m, |y_j - m|^2], so that [-2 (x - m), 1] . row_j = |y_j - m|^2 - 2 (x - m).(y_j - m)
        in one GEMM (no separate pass adding norms). The shift m (the float32 mean; any shift is exact)
        leaves distances unchanged and shrinks the rounding error, which grows with the norms.
        """
        n, d = self.n, self.d
        self.shift = self.reference.mean(dim=0).to(torch.float32)
        self.n_blocks = -(-n // BLOCK)
        self.augmented = torch.empty(self.n_blocks * BLOCK, d + 1, dtype=torch.float32, device=self.device)
        self.augmented[n:, :d] = 0
        self.augmented[n:, d] = math.inf  # padding rows: never candidates
        max_sq_norm = 0.0
        for start, stop in spans(n, rows_per_chunk(8 * d, self.memory_bytes)):
            rows32, sq_norms = self._centre(self.reference[start:stop])
            self.augmented[start:stop, :d] = rows32
            self.augmented[start:stop, d] = sq_norms.to(torch.float32)
            max_sq_norm = max(max_sq_norm, float(sq_norms.max()))
        self.max_norm = math.sqrt(max_sq_norm)

    def _centre(self, rows):
        """rows - shift rounded once to float32, and its squared norms (float32 products, float64 sums)."""
        rows = rows.to(self.device)
        if rows.dtype == torch.float32:
            rows32 = rows - self.shift
        else:
            rows32 = (rows.to(torch.float64) - self.shift.to(torch.float64)).to(torch.float32)
        return rows32, torch.sum(rows32 * rows32, dim=1, dtype=torch.float64)

    def _queries_per_chunk(self, chunk_size: int | None) -> int:
        row_bytes = 4 * self.augmented.shape[0]
        if chunk_size is None and self.device.type == "cpu":
            # For small d the GEMM only streams its output: keep that near the cache for the block minima
            # that read it next (benchmarks/heads.py --compare-chunks). Large d: big chunks.
            chunk_size = rows_per_chunk(row_bytes, CPU_CACHE_BYTES * max(1, self.d // 64))
        return chunk_rows(row_bytes, self.memory_bytes, chunk_size)

    def neighbours(self, queries, k: int, chunk_size: int | None = None, margin: int = MARGIN) -> torch.Tensor:
        """Indices (n_queries, k) of the k nearest references (as a set; equal distances: lower index first)."""
        k = int(k)
        if not 1 <= k <= self.n:
            raise InputError(f"k must be between 1 and the number of references ({self.n}), got {k}.")
        queries = as_2d_float_tensor(queries, "query embeddings")
        if queries.shape[1] != self.d:
            raise InputError(
                f"query embeddings have dimension {queries.shape[1]} but the references have {self.d}; "
                "use embeddings from the same model.")
        n_candidates = min(k + max(1, int(margin)), self.n)  # > k unless k == n
        chunk = self._queries_per_chunk(chunk_size)
        # Bookkeeping is done per block of many chunks: a few large tensor ops instead of many small ones.
        block = max(chunk, min(1 << 16, rows_per_chunk(16 * (self.d + 1), self.memory_bytes // 4)))
        out = torch.empty(queries.shape[0], k, dtype=torch.int64, device=self.device)
        rows = min(chunk, queries.shape[0])
        if self._scores is None or self._scores.shape[0] < rows:
            self._scores = torch.empty(rows, self.augmented.shape[0], dtype=torch.float32, device=self.device)
        with ieee_float32_matmul():
            for start, stop in spans(queries.shape[0], block):
                out[start:stop] = self._neighbours_block(queries[start:stop], k, n_candidates, chunk)
        return out

    def _float32_candidates(self, q_augmented, n_candidates, chunk):
        """Per query the ``n_candidates`` smallest float32 scores and their reference indices (unsorted)."""
        n_queries = q_augmented.shape[0]
        n_sel = min(n_candidates, self.n_blocks)
        block_ids = torch.empty(n_queries, n_sel, dtype=torch.int64, device=self.device)
        top_values = torch.empty(n_queries, n_candidates, dtype=torch.float32, device=self.device)
        top_flat = torch.empty(n_queries, n_candidates, dtype=torch.int64, device=self.device)
        for start, stop in spans(n_queries, chunk):
            scores = self._scores[:stop - start]
            torch.mm(q_augmented[start:stop], self.augmented.T, out=scores)
            # The n_candidates blocks with the smallest minima hold the n_candidates smallest scores, so
            # top-k runs over n_candidates * 64 values instead of every reference.
            blocked = scores.view(stop - start, self.n_blocks, BLOCK)
            ids = blocked.amin(dim=2).topk(n_sel, dim=1, largest=False, sorted=False).indices
            gathered = blocked.gather(1, ids[:, :, None].expand(-1, -1, BLOCK))
            torch.topk(gathered.view(stop - start, -1), n_candidates, dim=1, largest=False, sorted=False,
                       out=(top_values[start:stop], top_flat[start:stop]))
            block_ids[start:stop] = ids
        return top_values, block_ids.gather(1, top_flat // BLOCK) * BLOCK + top_flat % BLOCK

    def _neighbours_block(self, queries, k, n_candidates, chunk):
        q_centred, q_sq_norm = self._centre(queries)
        # [-2 x', 1]: the GEMM then gives |y'|^2 - 2 x'.y' = squared distance - |x'|^2 (-2 x' is exact).
        q_augmented = torch.cat([-2.0 * q_centred, torch.ones_like(q_centred[:, :1])], dim=1)
        top_values, candidates = self._float32_candidates(q_augmented, n_candidates, chunk)
        # Approximate squared distances of the candidates, each within `bound` of the exact one.
        approx, order = (top_values.to(torch.float64) + q_sq_norm[:, None]).sort(dim=1)
        candidates = candidates.gather(1, order)
        result = candidates[:, :k].clone()
        if n_candidates == k:
            return result  # k == number of references: all of them
        bound = self._error_bound(q_sq_norm) + 4 * (self.d + 2) * FLOAT64_UNIT_ROUNDOFF * approx[:, k]
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
        """k nearest by exact float64 distance for queries float32 left open; equal distances: lower index."""
        q64 = queries.to(device=self.device, dtype=torch.float64)
        exact = self._exact_sq_distances(q64, candidates)
        nearest, exact_sorted = sort_by_distance_then_index(candidates, exact)
        kth = exact_sorted[:, k - 1]
        bound = bound + 4 * (self.d + 2) * FLOAT64_UNIT_ROUNDOFF * kth
        # Certificate: every non-candidate has approximate distance >= worst_approx, so exact >=
        # worst_approx - bound. If that beats the k-th exact distance, no outsider can enter (or tie into)
        # the k nearest: the (distance, index) order of the candidates is that of all references.
        certified = worst_approx - bound > kth
        tied = straddling_tie(exact_sorted, k)
        result = nearest[:, :k]
        self.uncertified_queries += int((~certified).sum())
        for i in torch.nonzero(~certified).flatten().tolist():
            result[i], tied[i] = self._exact_over_plausible(q64[i], q_augmented[i], kth[i], q_sq_norm[i],
                                                            bound[i], k)
        self.tied_queries += int(tied.sum())
        return result

    def _exact_over_plausible(self, q64, q_augmented, kth, q_sq_norm, bound, k):
        """k nearest of one query, exact over every reference whose float32 score could put it at or below
        the k-th distance (ranked by distance, then index); and whether an exact tie straddles the k-th place."""
        scores = (self.augmented[:self.n] @ q_augmented).to(torch.float64)
        pool = torch.nonzero(scores <= kth - q_sq_norm + bound).flatten()
        pool_exact = self._exact_sq_distances(q64[None, :], pool[None, :])
        pool_nearest, pool_sorted = sort_by_distance_then_index(pool[None, :], pool_exact)
        return pool_nearest[0, :k], straddling_tie(pool_sorted, k)[0]

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
        return 1.1 * (self.d + 6) * FLOAT32_UNIT_ROUNDOFF * scale

    def _exact_sq_distances(self, q64: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """sum((x - y)^2) in float64 for reference rows ``index`` (rows, m) of each query, in cache-sized
        pieces of (query, reference) pairs."""
        rows, m = index.shape
        out = torch.empty(rows, m, dtype=torch.float64, device=self.device)
        piece = min(self.memory_bytes, EXACT_PIECE_BYTES) // (8 * self.d)  # (query, reference) pairs per piece
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


def sort_by_distance_then_index(index: torch.Tensor, distance: torch.Tensor):
    """Sort each row by (distance, index): a stable sort by distance after a sort by index (the tie rule)."""
    by_index = index.argsort(dim=1)
    index = index.gather(1, by_index)
    distance = distance.gather(1, by_index)
    order = distance.sort(dim=1, stable=True).indices
    return index.gather(1, order), distance.gather(1, order)


def straddling_tie(distance_sorted: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of ascending distances, whether the (k+1)-th equals the k-th (a tie across the k-th place)."""
    if distance_sorted.shape[1] <= k:
        return torch.zeros(distance_sorted.shape[0], dtype=torch.bool, device=distance_sorted.device)
    return distance_sorted[:, k] == distance_sorted[:, k - 1]


def knn_predict(reference, reference_labels, queries, k: int, num_classes: int, device=None,
                chunk_size: int | None = None, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> np.ndarray:
    """k-NN class predictions (int64); exact distance ties go to the lower reference index, so without such
    ties across the k-th place they are ``KNeighborsClassifier(k, algorithm="brute")``'s.

    ``chunk_size`` caps the queries per chunk; by default (and at most) it is what keeps the float32
    ``chunk x n_reference`` score matrix under ``memory_bytes``.
    """
    index = KnnIndex(reference, reference_labels, num_classes, device=device, memory_bytes=memory_bytes)
    return index.predict(queries, k, chunk_size=chunk_size)

