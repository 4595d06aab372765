"""RBF SVC: scikit-learn's ``SVC`` fitted on a seeded stratified subset, and a batched prediction identical to it.

``svc_predict(svc, queries)`` equals ``svc.predict(queries)`` while running as float64 torch maths (on the
GPU when one is given). It applies libsvm's one-vs-one rule: for classes ``i < j`` (in ``classes_`` order)
the decision value is ``sum_{sv in i} alpha[j-1, sv] K(x, sv) + sum_{sv in j} alpha[i, sv] K(x, sv) + b_ij``;
a value > 0 votes for ``i``, otherwise for ``j``; the most votes win, a tie going to the lowest class index.
``alpha`` and ``b`` are the public ``dual_coef_`` and ``intercept_``, whose sign scikit-learn flips for two
classes (so that ``decision_function > 0`` means ``classes_[1]``): here they are flipped back to libsvm's.
The kernel's ``gamma`` is the SVC's own number: ``fit_svc`` computes ``gamma="scale"`` as scikit-learn does
and fixes it at fit time. One GEMM gives the kernel's exponent ``-gamma |x - sv|^2``, then ``exp``, then one
GEMM with a (support vector x pair) weight matrix. Rows where some decision value is within a rigorous
rounding bound of 0 are sent to ``svc.predict`` itself, so the labels are exactly scikit-learn's.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from robustgsl.arrays import (DEFAULT_MEMORY_BYTES, FLOAT64_UNIT_ROUNDOFF, as_2d_float_tensor, as_device, as_numpy,
                              chunk_rows, spans)
from robustgsl.errors import InputError


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


def kernel_gamma(train: np.ndarray, gamma="scale") -> float:
    """The RBF ``gamma`` scikit-learn's SVC uses for ``train``: "scale" is 1 / (d * var) of the float64
    data (1 when the variance is 0), "auto" is 1 / d, a number is itself."""
    if isinstance(gamma, str):
        d = train.shape[1]
        if gamma == "auto":
            return 1.0 / d
        if gamma != "scale":
            raise InputError(f"gamma must be 'scale', 'auto' or a positive number, got {gamma!r}.")
        variance = np.asarray(train, dtype=np.float64, order="C").var()
        return float(1.0 / (d * variance)) if variance != 0 else 1.0
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not gamma > 0:
        raise InputError(f"gamma must be 'scale', 'auto' or a positive number, got {gamma!r}.")
    return float(gamma)


def fit_svc(embeddings, labels, train_size: int | None = None, seed: int = 0, C: float = 1.0,
            gamma="scale"):
    """Fit scikit-learn's RBF ``SVC`` on a seeded stratified subset of ``train_size`` embeddings.

    ``gamma`` is resolved to a number first (``kernel_gamma``) and passed as such, so the fitted SVC's
    public ``gamma`` records the value its kernel uses.
    """
    from sklearn.svm import SVC

    embeddings, labels = as_numpy(embeddings), as_numpy(labels)
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise InputError(
            f"SVC needs embeddings (n, d) and labels (n,), got {embeddings.shape} and {labels.shape}.")
    if np.unique(labels).size < 2:
        raise InputError("SVC needs training embeddings from at least 2 classes.")
    subset = stratified_subset(labels, train_size, seed)
    train = embeddings[subset]
    return SVC(C=C, kernel="rbf", gamma=kernel_gamma(train, gamma)).fit(train, labels[subset])


@dataclass
class _OneVsOne:
    """A fitted RBF SVC as tensors: [x, 1, |x|^2] . support_augmented[sv] = -gamma |x - sv|^2, and
    ``weights[sv, p]``, the coefficient of K(x, sv) in libsvm's decision value for pair p = (i, j):
    ``alpha[j - 1, sv]`` for a support vector of class i, ``alpha[i, sv]`` for one of class j, else 0."""

    support_augmented: torch.Tensor
    weights: torch.Tensor
    intercept: torch.Tensor
    vote_difference: torch.Tensor  # votes = vote_base + positive @ vote_difference
    vote_base: torch.Tensor
    gamma: float
    max_support_norm: float


def _check_fitted_rbf_svc(svc) -> None:
    from scipy.sparse import issparse

    if getattr(svc, "kernel", None) != "rbf" or not hasattr(svc, "support_vectors_"):
        raise InputError("fast SVC prediction needs a fitted sklearn.svm.SVC with kernel='rbf'.")
    if issparse(svc.support_vectors_):
        raise InputError("fast SVC prediction needs an SVC fitted on dense arrays, not sparse ones.")
    if getattr(svc, "break_ties", False):
        raise InputError("fast SVC prediction reproduces the one-vs-one vote; fit the SVC with break_ties=False.")
    if isinstance(svc.gamma, str):
        raise InputError(f"fast SVC prediction needs the SVC's gamma as a number, got {svc.gamma!r}; "
                         "fit it with robustgsl.svc.fit_svc, which fixes gamma at fit time.")


def _one_vs_one(svc, device) -> _OneVsOne:
    _check_fitted_rbf_svc(svc)
    support = np.asarray(svc.support_vectors_, dtype=np.float64)
    n_classes = len(svc.classes_)
    libsvm_sign = -1.0 if n_classes == 2 else 1.0  # undo scikit-learn's binary sign flip
    alpha = libsvm_sign * np.asarray(svc.dual_coef_, dtype=np.float64)
    intercept = libsvm_sign * np.asarray(svc.intercept_, dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(svc.n_support_)])
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    weights = np.zeros((support.shape[0], len(pairs)))
    to_first, to_second = np.zeros((len(pairs), n_classes)), np.zeros((len(pairs), n_classes))
    for p, (i, j) in enumerate(pairs):
        weights[bounds[i]:bounds[i + 1], p] = alpha[j - 1, bounds[i]:bounds[i + 1]]
        weights[bounds[j]:bounds[j + 1], p] = alpha[i, bounds[j]:bounds[j + 1]]
        to_first[p, i], to_second[p, j] = 1, 1
    gamma = float(svc.gamma)
    as64 = dict(dtype=torch.float64, device=device)
    support = torch.as_tensor(support, **as64)
    support_sq = (support * support).sum(dim=1)
    support_augmented = torch.cat(
        [2 * gamma * support, -gamma * support_sq[:, None], torch.full_like(support_sq[:, None], -gamma)], dim=1)
    # votes = positive @ to_first + (1 - positive) @ to_second, with one-hot pair -> class matrices.
    return _OneVsOne(support_augmented, torch.as_tensor(weights, **as64), torch.as_tensor(intercept, **as64),
                     torch.as_tensor(to_first - to_second, **as64), torch.as_tensor(to_second.sum(axis=0), **as64),
                     gamma, float(support_sq.max().sqrt()))


def _decision_tolerance(model: _OneVsOne, x_sq: torch.Tensor, d: int) -> torch.Tensor:
    """Rounding bound on each decision value (Higham-style): the exponent errs by <= (d + 4) u g (|x| +
    max|sv|)^2, exp adds 2u, the weighted sum (n_support + 2) u, each times sum |weight| (K <= 1). Doubled,
    because scikit-learn's own value carries an error of the same kind."""
    u = FLOAT64_UNIT_ROUNDOFF
    n_support = model.weights.shape[0]
    exponent_error = (d + 4) * u * model.gamma * (x_sq.sqrt() + model.max_support_norm) ** 2
    abs_weight = model.weights.abs().sum(dim=0)
    return 2 * (abs_weight * (exponent_error + (n_support + 4) * u) + 2 * u * model.intercept.abs())


def svc_predict(svc, queries, device=None, chunk_size: int | None = None,
                memory_bytes: int = DEFAULT_MEMORY_BYTES) -> np.ndarray:
    """Labels identical to ``svc.predict(queries)`` for a fitted RBF ``SVC``, as batched float64 maths.

    ``chunk_size`` caps the queries per chunk; by default (and at most) the float64 ``chunk x n_support``
    kernel matrix stays under ``memory_bytes``.
    """
    device = as_device(device)
    queries_np = as_numpy(queries)
    queries = as_2d_float_tensor(queries_np, "query embeddings")
    model = _one_vs_one(svc, device)
    n_support, d = model.support_augmented.shape[0], model.support_augmented.shape[1] - 2
    if queries.shape[1] != d:
        raise InputError(
            f"query embeddings have dimension {queries.shape[1]} but the SVC was fitted on {d}; "
            "use embeddings from the same model.")
    chunk = chunk_rows(8 * n_support, memory_bytes, chunk_size)
    out = np.empty(queries.shape[0], dtype=np.int64)
    uncertain = []
    # One kernel buffer reused for every chunk instead of a fresh (chunk, n_support) allocation each time.
    buffer = torch.empty(min(chunk, queries.shape[0]), n_support, dtype=torch.float64, device=device)
    for start, stop in spans(queries.shape[0], chunk):
        x = queries[start:stop].to(device=device, dtype=torch.float64)
        x_sq = (x * x).sum(dim=1, keepdim=True)
        x_augmented = torch.cat([x, torch.ones_like(x_sq), x_sq], dim=1)
        kernel = torch.mm(x_augmented, model.support_augmented.T, out=buffer[:stop - start]).exp_()
        decision = torch.addmm(model.intercept, kernel, model.weights)  # (rows, pairs), libsvm's dec_values
        votes = torch.addmm(model.vote_base, (decision > 0).to(torch.float64), model.vote_difference)
        # np.argmax: first maximum, i.e. libsvm's lowest class index among tied votes.
        out[start:stop] = np.argmax(votes.cpu().numpy(), axis=1)
        near_zero = (decision.abs() <= _decision_tolerance(model, x_sq, d)).any(dim=1)
        uncertain.extend((start + torch.nonzero(near_zero).flatten().cpu().numpy()).tolist())
    labels = np.asarray(svc.classes_)[out]
    if uncertain:
        # A decision value this close to 0 could flip sign with rounding: ask libsvm itself.
        labels[uncertain] = svc.predict(queries_np[uncertain])
    return labels
