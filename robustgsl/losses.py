"""The graph smoothness loss (Bontonou et al., 2019, Definition 1).

For a mini-batch of embeddings e_1..e_B with labels y_1..y_B, build a similarity graph whose edge
weights are W_ij = exp(-alpha * ||e_i - e_j||_2) and whose edges join each example to its k nearest
other examples (symmetrised: an edge exists if either end chose the other). With one-hot labels Y and
the graph Laplacian L, the loss is trace(Y^T L Y) = 1/2 sum_ij W_ij ||Y_i - Y_j||^2, i.e. the sum of
W_ij over ordered pairs (i, j) that are joined and have different labels.
"""

from __future__ import annotations

import torch
from torch import nn

from robustgsl.errors import InputError

# Below this many elements of the (B, B, d) difference tensor, distances are computed from explicit
# differences (exact); above it, from the Gram matrix (||a||^2 + ||b||^2 - 2ab), which needs no B*B*d memory.
_EXACT_DISTANCE_ELEMENTS = 1 << 24
# Squared distances are clamped here before the square root: sqrt has an infinite derivative at 0,
# and coinciding embeddings must keep finite gradients. The value changes by exp(-alpha * 1e-6) ~ 1.
_MIN_SQUARED_DISTANCE = 1e-12


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Plain (not squared) L2 distances between all rows, shape (B, B), with finite gradients."""
    batch, dim = embeddings.shape
    if batch * batch * dim <= _EXACT_DISTANCE_ELEMENTS:
        differences = embeddings[:, None, :] - embeddings[None, :, :]
        squared = (differences * differences).sum(-1)
    else:
        norms = (embeddings * embeddings).sum(-1)
        squared = norms[:, None] + norms[None, :] - 2.0 * embeddings @ embeddings.T
    return squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt()


def knn_adjacency(distances: torch.Tensor, k: int | None) -> torch.Tensor:
    """Boolean (B, B) adjacency of the symmetrised k-nearest-neighbour graph, without self-loops.

    ``k=None`` or ``k >= B - 1`` gives the complete graph (the paper's "maximum k").
    """
    batch = distances.shape[0]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=distances.device)
    if k is None or k >= batch - 1:
        return off_diagonal
    masked = distances.detach().masked_fill(~off_diagonal, float("inf"))
    nearest = masked.topk(k, dim=1, largest=False).indices
    chosen = torch.zeros_like(off_diagonal)
    chosen.scatter_(1, nearest, True)
    return chosen | chosen.T


class GraphSmoothnessLoss(nn.Module):
    """Graph smoothness loss over L2-normalised (or any) embeddings, called as ``loss(embeddings, labels)``.

    Args:
        k: neighbours per example in the similarity graph; ``None`` (default) means the complete graph.
        alpha: edge-weight sharpness in ``exp(-alpha * distance)``; the paper uses 2.
        reduction: ``"sum"`` (the paper's value) or ``"mean"`` (the sum divided by the batch size).
    """

    def __init__(self, k: int | None = None, alpha: float = 2.0, reduction: str = "sum"):
        super().__init__()
        if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
            raise InputError(f"k must be a positive integer or None (complete graph), got {k!r}")
        if not alpha > 0:
            raise InputError(f"alpha must be > 0, got {alpha!r}")
        if reduction not in ("sum", "mean"):
            raise InputError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.k = None if k is None else int(k)
        self.alpha = float(alpha)
        self.reduction = reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise InputError(
                f"expected embeddings (B, d) and labels (B,), got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        # Distances and exponentials in at least float32 (also under bf16 autocast): the loss sums B^2 terms.
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()
        distances = pairwise_distances(embeddings)
        edges = knn_adjacency(distances, self.k)
        different_class = labels[:, None] != labels[None, :]
        weights = torch.exp(-self.alpha * distances)
        loss = (weights * (edges & different_class)).sum()
        if self.reduction == "mean":
            loss = loss / embeddings.shape[0]
        return loss

    def extra_repr(self) -> str:
        return f"k={self.k}, alpha={self.alpha}, reduction={self.reduction!r}"
