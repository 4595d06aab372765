"""Heads against scikit-learn (on data without exact distance ties) and a plain brute force (with them):
k-NN incl. exact ties (lowest reference index) and vote ties, fast SVC."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from robustgsl.errors import InputError
from robustgsl.heads import make_head
from robustgsl.vocabulary import DEFAULT_SVC_TRAIN_SIZE, HEADS, validate_head_name
from robustgsl.knn import KnnIndex, knn_predict
from robustgsl.svc import fit_svc, stratified_subset, svc_predict

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def exact_sq_distances(reference, queries):
    """float64 sum((x - y)^2) for every (query, reference) pair, a few queries at a time."""
    reference, queries = np.asarray(reference, np.float64), np.asarray(queries, np.float64)
    rows = max(1, 2**22 // reference.size)
    return np.concatenate([((queries[i:i + rows, None, :] - reference[None]) ** 2).sum(axis=2)
                           for i in range(0, len(queries), rows)])


def brute_force_neighbours(reference, queries, k):
    """Indices (n_queries, k) of the k nearest; equal distances in index order (stable argsort)."""
    return np.argsort(exact_sq_distances(reference, queries), axis=1, kind="stable")[:, :k]


def brute_force_knn(reference, labels, queries, k, num_classes):
    """Majority vote of brute_force_neighbours; a tied vote to the lowest class (argmax's first maximum)."""
    nearest = brute_force_neighbours(reference, queries, k)
    return np.array([np.bincount(labels[row], minlength=num_classes).argmax() for row in nearest])


def straddling_ties(reference, queries, k):
    """Per query, whether a reference outside the k nearest is at exactly the k-th distance."""
    distances = np.sort(exact_sq_distances(reference, queries), axis=1)
    if distances.shape[1] <= k:
        return np.zeros(len(distances), bool)
    return distances[:, k] == distances[:, k - 1]


def sklearn_knn(reference, labels, queries, k):
    """scikit-learn's brute force, only where no exact tie straddles the k-th place (there its heap decides)."""
    assert not straddling_ties(reference, queries, k).any()
    return KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(reference, labels).predict(queries)


def assert_lowest_index_neighbours(index, reference, labels, queries, k, num_classes):
    """Neighbour sets and votes are the brute force's, and the data has ties that the rule decides."""
    ties = straddling_ties(reference, queries, k)
    assert ties.any()  # with ties across the k-th place, another tie rule would keep other members
    np.testing.assert_array_equal(np.sort(index.neighbours(queries, k).cpu().numpy(), axis=1),
                                  np.sort(brute_force_neighbours(reference, queries, k), axis=1))
    np.testing.assert_array_equal(index.predict(queries, k),
                                  brute_force_knn(reference, labels, queries, k, num_classes))


def mixture(rng, n, d, num_classes, spread=1.0):
    means = 2.0 * rng.standard_normal((num_classes, d))
    labels = rng.integers(0, num_classes, n)
    return (means[labels] + spread * rng.standard_normal((n, d))).astype(np.float32), labels


# ----------------------------------------------------------------------------------------------- k-NN


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [3, 64])
@pytest.mark.parametrize("k", [1, 10])
def test_knn_matches_sklearn_on_random_embeddings(device, d, k):
    rng = np.random.default_rng(d * 100 + k)
    reference, labels = mixture(rng, 1500, d, 10)
    queries, _ = mixture(rng, 400, d, 10)
    # A small memory bound forces many query chunks and several blocks per chunk.
    predicted = knn_predict(reference, labels, queries, k, 10, device=device, memory_bytes=200_000)
    np.testing.assert_array_equal(predicted, sklearn_knn(reference, labels, queries, k))


def test_knn_matches_plain_brute_force():
    rng = np.random.default_rng(5)
    reference, labels = mixture(rng, 300, 6, 4)
    queries, _ = mixture(rng, 50, 6, 4)
    k, expected = 5, []
    for x in queries.astype(np.float64):
        distances = [float(np.sum((y - x) ** 2)) for y in reference.astype(np.float64)]
        nearest = sorted(range(len(reference)), key=lambda j: (distances[j], j))[:k]
        votes = [sum(labels[j] == c for j in nearest) for c in range(4)]
        expected.append(votes.index(max(votes)))  # first maximum: lowest class
    np.testing.assert_array_equal(knn_predict(reference, labels, queries, k, 4), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("n_reference, n_queries", [(700, 25), (150, 400)])
def test_knn_exact_distance_ties_go_to_the_lowest_index(device, k, n_reference, n_queries):
    """Small-integer lattice: many references at exactly the same distance, with different labels."""
    rng = np.random.default_rng(k * 1000 + n_reference)
    reference = rng.integers(-3, 4, (n_reference, 3)).astype(np.float32)
    labels = rng.integers(0, 4, n_reference)
    queries = rng.integers(-6, 7, (n_queries, 3)).astype(np.float32) / 2
    index = KnnIndex(reference, labels, 4, device=device)
    assert_lowest_index_neighbours(index, reference, labels, queries, k, 4)
    # Counted once per call (neighbours, then predict): every query with a tie across the k-th place.
    assert index.tied_queries == 2 * int(straddling_ties(reference, queries, k).sum())


def test_knn_duplicated_references_with_different_labels():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((200, 16)).astype(np.float32)
    reference = np.concatenate([base, base, base[:50]])
    labels = rng.integers(0, 5, len(reference))
    queries = rng.standard_normal((100, 16)).astype(np.float32)
    for k in (1, 2, 10):
        assert_lowest_index_neighbours(KnnIndex(reference, labels, 5), reference, labels, queries, k, 5)


def test_knn_near_ties_beyond_float32_and_shells_of_equal_distance():
    rng = np.random.default_rng(0)
    d, eps = 8, 2.0**-20
    # 200 references whose squared distances to the origin differ by ~2e-6: below float32 resolution here.
    close = np.zeros((200, d))
    close[:, 0], close[:, 1] = 1, 1 + eps * rng.permutation(200)
    far = rng.integers(-6, -2, (200, d)).astype(float)
    # 112 references at exactly squared distance 2 from the origin.
    shell = []
    for i, j in itertools.combinations(range(d), 2):
        for si, sj in itertools.product((-1, 1), repeat=2):
            v = np.zeros(d)
            v[i], v[j] = si, sj
            shell.append(v)
    queries = np.zeros((4, d), np.float32)
    queries[1:, 2] = np.arange(1, 4) * eps
    for reference, tied in ((np.concatenate([close, far]), False),
                            (np.concatenate([rng.permutation(np.array(shell)), far]), True)):
        reference = reference.astype(np.float32)
        labels = rng.integers(0, 3, len(reference))
        for k in (1, 10):
            assert straddling_ties(reference, queries, k)[0] == tied  # the shell ties across the k-th place
            index = KnnIndex(reference, labels, 3)
            np.testing.assert_array_equal(np.sort(index.neighbours(queries, k).numpy(), axis=1),
                                          np.sort(brute_force_neighbours(reference, queries, k), axis=1))
            np.testing.assert_array_equal(index.predict(queries, k),
                                          brute_force_knn(reference, labels, queries, k, 3))
            assert index.uncertified_queries > 0  # float32 could not decide: the full exact path ran


def test_knn_vote_tie_goes_to_lowest_class():
    # 1-D references at distances 1, 2, 3, 4 from the query with labels 2, 1, 2, 1: k=4 votes 2-2.
    reference = np.array([[1.0], [2.0], [3.0], [4.0], [10.0]], dtype=np.float32)
    labels = np.array([2, 1, 2, 1, 0])
    queries = np.zeros((1, 1), np.float32)
    assert knn_predict(reference, labels, queries, 4, 3)[0] == 1
    assert knn_predict(reference, labels, queries, 2, 3)[0] == 1  # labels 2 and 1: tie -> 1
    assert knn_predict(reference, labels, queries, 3, 3)[0] == 2  # 2 votes to 1
    for k in (2, 3, 4):
        assert knn_predict(reference, labels, queries, k, 3)[0] == sklearn_knn(reference, labels, queries, k)[0]


def test_knn_score_matrix_stays_under_the_memory_bound():
    rng = np.random.default_rng(1)
    reference, labels = mixture(rng, 5000, 4, 3)
    queries, _ = mixture(rng, 300, 4, 3)
    index = KnnIndex(reference, labels, 3, memory_bytes=1_000_000)
    predicted = index.predict(queries, 10)
    assert index._scores.numel() * 4 <= 1_000_000
    assert index._scores.shape[0] < 300  # several chunks
    np.testing.assert_array_equal(predicted, sklearn_knn(reference, labels, queries, 10))
    np.testing.assert_array_equal(index.predict(queries, 10, chunk_size=7), predicted)


def test_knn_bad_input():
    reference = np.zeros((5, 2), np.float32)
    with pytest.raises(InputError, match="k must be between 1 and"):
        knn_predict(reference, np.zeros(5, int), reference, 6, 2)
    with pytest.raises(InputError, match="must lie in 0..1"):
        knn_predict(reference, np.array([0, 1, 2, 0, 1]), reference, 1, 2)
    with pytest.raises(InputError, match="dimension 3"):
        knn_predict(reference, np.zeros(5, int), np.zeros((2, 3)), 1, 2)
    with pytest.raises(InputError, match="NaN"):
        knn_predict(reference, np.zeros(5, int), np.full((1, 2), np.nan), 1, 2)


# ------------------------------------------------------------------------------------------------ SVC


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_classes, d, n_train, train_size, gamma", [
    (10, 10, 1500, None, "scale"),
    (2, 5, 400, None, "scale"),
    (3, 8, 900, 300, 0.3),
    (10, 16, 2000, 700, "scale"),
])
def test_svc_predict_matches_sklearn(device, num_classes, d, n_train, train_size, gamma):
    rng = np.random.default_rng(num_classes * 7 + d)
    train, labels = mixture(rng, n_train, d, num_classes, spread=1.5)
    queries, _ = mixture(rng, 3000, d, num_classes, spread=2.0)
    svc = fit_svc(train, labels, train_size=train_size, seed=1, gamma=gamma)
    assert svc.support_vectors_.shape[0] <= (train_size or n_train)
    np.testing.assert_array_equal(svc_predict(svc, queries, device=device, chunk_size=512),
                                  svc.predict(queries))


def test_fit_svc_fixes_sklearns_scale_gamma_as_a_number():
    rng = np.random.default_rng(4)
    train, labels = mixture(rng, 600, 6, 3, spread=1.5)
    queries, _ = mixture(rng, 300, 6, 3, spread=2.0)
    svc = fit_svc(train, labels, train_size=400, seed=2)
    assert isinstance(svc.gamma, float)
    subset = stratified_subset(labels, 400, seed=2)
    reference = SVC(kernel="rbf", gamma="scale").fit(train[subset], labels[subset])
    np.testing.assert_array_equal(svc.dual_coef_, reference.dual_coef_)
    np.testing.assert_array_equal(svc.decision_function(queries), reference.decision_function(queries))
    flat = fit_svc(np.ones((20, 3), np.float32), np.repeat([0, 1], 10))
    assert flat.gamma == 1.0  # zero variance: scikit-learn's 1
    assert fit_svc(train, labels, gamma="auto").gamma == 1 / 6
    with pytest.raises(InputError, match="gamma must be"):
        fit_svc(train, labels, gamma="sqrt")
    with pytest.raises(InputError, match="gamma as a number"):
        svc_predict(SVC(gamma="scale").fit(train, labels), queries)


def test_svc_predict_with_non_contiguous_labels_and_points_on_the_boundary():
    rng = np.random.default_rng(11)
    half = rng.standard_normal((150, 2)) + [2.0, 0.0]
    train = np.concatenate([half, half * [-1.0, 1.0]]).astype(np.float32)  # mirror images: boundary x = 0
    labels = np.repeat([7, 3], 150)
    svc = fit_svc(train, labels)
    queries = np.concatenate([rng.standard_normal((500, 2)),
                              np.c_[np.zeros(50), rng.standard_normal(50)]]).astype(np.float32)
    predicted = svc_predict(svc, queries)
    np.testing.assert_array_equal(predicted, svc.predict(queries))
    assert set(np.unique(predicted)) <= {3, 7}


def test_stratified_subset_is_seeded_sorted_and_stratified():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    subset = stratified_subset(labels, 100, seed=0)
    assert len(subset) == 100 and np.all(np.diff(subset) > 0)
    np.testing.assert_array_equal(np.bincount(labels[subset]), [10, 20, 30, 40])
    np.testing.assert_array_equal(subset, stratified_subset(labels, 100, seed=0))
    assert not np.array_equal(subset, stratified_subset(labels, 100, seed=1))
    np.testing.assert_array_equal(stratified_subset(labels, None), np.arange(1000))
    with pytest.raises(InputError, match="smaller than the number of classes"):
        stratified_subset(labels, 3)


# ---------------------------------------------------------------------------------------------- heads


def test_head_names_and_objects():
    assert HEADS == ("argmax", "1nn", "10nn", "svc")
    assert DEFAULT_SVC_TRAIN_SIZE > 0
    with pytest.raises(InputError, match="argmax, 1nn, 10nn, svc"):
        validate_head_name("5nn")
    rng = np.random.default_rng(2)
    reference, labels = mixture(rng, 400, 5, 3)
    queries, _ = mixture(rng, 100, 5, 3)
    for name in ("1nn", "10nn"):
        head = make_head(name, 3).fit(reference, labels)
        np.testing.assert_array_equal(head.predict(queries), sklearn_knn(reference, labels, queries, int(name[:-2])))
    head = make_head("svc", 3, svc_train_size=200, seed=4).fit(reference, labels)
    assert len(head.svc.support_) <= 200
    np.testing.assert_array_equal(head.predict(queries), head.svc.predict(queries))


def test_argmax_head_reads_logits_and_breaks_ties_low():
    head = make_head("argmax", 3).fit(None, None)
    logits = np.array([[0.1, 0.9, 0.2], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    np.testing.assert_array_equal(head.predict(logits), [1, 0, 1])
    np.testing.assert_array_equal(head.predict(torch.tensor(logits)), [1, 0, 1])
    with pytest.raises(InputError, match="logits"):
        head.predict(np.zeros((2, 5)))
