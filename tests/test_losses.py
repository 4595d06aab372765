import itertools
import math

import numpy as np
import pytest
import torch

from robustgsl.errors import InputError
from robustgsl.losses import GraphSmoothnessLoss


def brute_force_gsl(embeddings: np.ndarray, labels: np.ndarray, k, alpha: float) -> float:
    """Definition 1 written out: loop over ordered pairs, k-NN sets by sorting, symmetrised."""
    batch = len(labels)
    distance = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(embeddings[i], embeddings[j]))) for j in range(batch)]
                for i in range(batch)]
    if k is None or k >= batch - 1:
        neighbours = [set(range(batch)) - {i} for i in range(batch)]
    else:
        neighbours = [set(sorted((j for j in range(batch) if j != i), key=lambda j: distance[i][j])[:k])
                      for i in range(batch)]
    total = 0.0
    for i, j in itertools.permutations(range(batch), 2):
        joined = j in neighbours[i] or i in neighbours[j]
        if joined and labels[i] != labels[j]:
            total += math.exp(-alpha * distance[i][j])
    return total


@pytest.mark.parametrize("batch,dim,k,alpha", [(7, 3, None, 2.0), (12, 4, 2, 2.0), (15, 10, 5, 0.5), (9, 2, 8, 3.0),
                                              (10, 5, 1, 2.0), (20, 10, 19, 2.0)])
def test_loss_matches_brute_force(batch, dim, k, alpha):
    rng = np.random.default_rng(batch * 100 + dim)
    embeddings = rng.normal(size=(batch, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=batch)
    expected = brute_force_gsl(embeddings, labels, k, alpha)
    loss = GraphSmoothnessLoss(k=k, alpha=alpha)(torch.tensor(embeddings), torch.tensor(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_mean_reduction_divides_by_batch():
    rng = np.random.default_rng(1)
    embeddings, labels = torch.tensor(rng.normal(size=(11, 4))), torch.tensor(rng.integers(0, 4, size=11))
    total = GraphSmoothnessLoss(k=3)(embeddings, labels)
    mean = GraphSmoothnessLoss(k=3, reduction="mean")(embeddings, labels)
    assert mean.item() == pytest.approx(total.item() / 11, rel=1e-12)


def test_large_batch_gram_path_matches_brute_force():
    # Enough elements to take the Gram-matrix distance path.
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(300, 200)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = rng.integers(0, 10, size=300)
    sub = slice(0, 300)
    differences = embeddings[:, None, :].astype(np.float64) - embeddings[None, :, :]
    distance = np.sqrt((differences ** 2).sum(-1))
    expected = (np.exp(-2.0 * distance) * (labels[:, None] != labels[None, :])).sum()
    loss = GraphSmoothnessLoss()(torch.tensor(embeddings[sub]), torch.tensor(labels[sub]))
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_gradient_matches_finite_differences_of_brute_force():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(6, 3))
    labels = np.array([0, 1, 0, 2, 1, 2])
    tensor = torch.tensor(embeddings, requires_grad=True)
    GraphSmoothnessLoss(k=None, alpha=2.0)(tensor, torch.tensor(labels)).backward()
    step = 1e-6
    numeric = np.zeros_like(embeddings)
    for index in np.ndindex(*embeddings.shape):
        plus, minus = embeddings.copy(), embeddings.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (brute_force_gsl(plus, labels, None, 2.0) - brute_force_gsl(minus, labels, None, 2.0)) / (2 * step)
    np.testing.assert_allclose(tensor.grad.numpy(), numeric, rtol=1e-5, atol=1e-7)


def test_gradients_finite_when_embeddings_coincide():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1])
    loss = GraphSmoothnessLoss(k=1)(embeddings, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all()
    # Coinciding points of different classes weigh exp(0) = 1 each way.
    assert loss.item() == pytest.approx(brute_force_gsl(embeddings.detach().numpy(), labels.numpy(), 1, 2.0), abs=1e-5)


def test_bf16_inputs_are_computed_in_float32():
    rng = np.random.default_rng(4)
    embeddings = torch.tensor(rng.normal(size=(8, 4)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 2, size=8))
    loss = GraphSmoothnessLoss()(embeddings.bfloat16(), labels)
    assert loss.dtype == torch.float32
    expected = brute_force_gsl(embeddings.bfloat16().float().numpy(), labels.numpy(), None, 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=-3), dict(k=2.5), dict(alpha=0.0), dict(alpha=-1.0),
                                    dict(reduction="max")])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InputError) as error:
        GraphSmoothnessLoss(**kwargs)
    assert str(list(kwargs.values())[0]) in str(error.value)
