"""Classification heads on top of a trained model: argmax, k-nearest neighbours and an RBF SVC.

The ``argmax`` head reads the model's *outputs* (logits); the ``1nn``, ``10nn`` and ``svc`` heads read
*embeddings* (for a GSL model its output, for a CE model the penultimate features). The caller passes the
right tensor to each head. The k-NN engine is ``robustgsl.knn`` and the SVC's ``robustgsl.svc``, both batched
torch maths, on the GPU when one is given. The k-NN is exact, exact distance ties going to the lowest reference
index (so scikit-learn's ``KNeighborsClassifier(algorithm="brute")`` on data without such ties); the SVC gives
exactly ``SVC.predict``.
"""

from __future__ import annotations

import numpy as np

from robustgsl.arrays import DEFAULT_MEMORY_BYTES, as_numpy
from robustgsl.errors import InputError
from robustgsl.knn import KnnIndex
from robustgsl.svc import fit_svc, svc_predict
from robustgsl.vocabulary import DEFAULT_SVC_TRAIN_SIZE, validate_head_name

class ArgmaxHead:
    """Predicts the class with the largest model output. ``predict`` takes logits, not embeddings."""

    name = "argmax"

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)

    def fit(self, reference_embeddings=None, reference_labels=None) -> "ArgmaxHead":
        return self  # nothing to fit: the model's own classifier is the head

    def predict(self, logits) -> np.ndarray:
        logits = as_numpy(logits)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise InputError(
                f"the argmax head needs model outputs of shape (n, {self.num_classes}), got {logits.shape}; "
                "pass the logits, not the embeddings.")
        return np.argmax(logits, axis=1).astype(np.int64)  # ties: lowest class index


class KnnHead:
    """Majority vote of the k nearest reference embeddings (exact; equal distances: lowest reference index).

    ``index`` (a ``KnnIndex``) may be shared between k-NN heads fitted on the same references.
    """

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
    """scikit-learn RBF SVC fitted on a stratified subset of the references; fast exact prediction.

    After ``fit``, ``svc.gamma`` holds the kernel's gamma ("scale" resolved to a number at fit time).
    """

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
