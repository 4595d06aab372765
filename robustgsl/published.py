"""The paper's published figures, as data: Bontonou et al. (2019), Tables 1 and 2.

Source: Myriam Bontonou, Carlos Lassance, Ghouthi Boukli Hacene, Vincent Gripon, Jian Tang, Antonio Ortega,
"Introducing Graph Smoothness Loss for Training Deep Learning Architectures", IEEE Data Science Workshop
2019, arXiv:1905.00301. PreActResNet-18, one training run per figure.

Table 1: clean test error (%) of the cross-entropy model's argmax and of the GSL model's 1-NN, 10-NN and
RBF-SVC heads on CIFAR-10, CIFAR-100 and SVHN. Table 2: CIFAR-10 clean error (%), MCE and relative MCE on
CIFAR-10-C with the cross-entropy model as the baseline (= 100); its GSL model uses the complete graph
(k max), d = 200, alpha = 2 and the 10-NN head (the ``paper-table2`` preset trains it; robustgsl/config.py).
The report (robustgsl/report) shows these beside measured values on the same data set only.
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = (
    "Bontonou, Lassance, Hacene, Gripon, Tang, Ortega, \"Introducing Graph Smoothness Loss for "
    "Training Deep Learning Architectures\", IEEE Data Science Workshop 2019, arXiv:1905.00301"
)
SHORT_CITATION = "Bontonou et al. 2019, arXiv:1905.00301"


@dataclass(frozen=True)
class PublishedError:
    """One published clean test error: the model's loss, the head that classifies, the error in %."""

    dataset: str  # robustgsl.data.DATASETS name
    loss: str  # ce or gsl
    head: str  # robustgsl.heads.HEADS name
    method: str  # as the paper's table labels it
    clean_error: float  # %


@dataclass(frozen=True)
class PublishedRobustness:
    """One row of Table 2: clean error in %, MCE and relative MCE with the CE argmax baseline = 100."""

    loss: str
    head: str
    method: str
    clean_error: float  # %
    mce: float
    relative_mce: float


_TABLE_1_HEADS = (("ce", "argmax", "CE, argmax"), ("gsl", "1nn", "GSL, 1-NN"), ("gsl", "10nn", "GSL, 10-NN"),
                  ("gsl", "svc", "GSL, RBF SVC"))
_TABLE_1_ERRORS = {
    "cifar10": (5.06, 5.63, 5.48, 5.50),
    "cifar100": (27.92, 29.17, 28.82, 30.55),
    "svhn": (3.69, 3.84, 3.34, 3.40),
}
TABLE_1: tuple[PublishedError, ...] = tuple(
    PublishedError(dataset, loss, head, method, error)
    for dataset, errors in _TABLE_1_ERRORS.items()
    for (loss, head, method), error in zip(_TABLE_1_HEADS, errors)
)

TABLE_2_DATASET = "cifar10"
# The GSL model of Table 2: complete graph, d = 200, alpha = 2, classified by 10-NN.
TABLE_2_GSL = {"k": None, "embedding_dim": 200, "alpha": 2.0, "head": "10nn"}
TABLE_2: tuple[PublishedRobustness, ...] = (
    PublishedRobustness("ce", "argmax", "CE, argmax", 5.06, 100.0, 100.0),
    PublishedRobustness("gsl", "10nn", "GSL, 10-NN (d = 200)", 5.60, 95.28, 90.33),
)


# The training scale behind every published figure (section 4): the full PreActResNet-18 for 200 epochs.
TRAINING_SCALE = {"width": 1.0, "epochs": 200}


def table1_datasets() -> tuple[str, ...]:
    return tuple(_TABLE_1_ERRORS)


def table1_error(dataset: str | None, loss: str | None, head: str) -> PublishedError | None:
    """The Table 1 entry for a measured (data set, loss, head), or None when the paper has none."""
    for entry in TABLE_1:
        if (entry.dataset, entry.loss, entry.head) == (dataset, loss, head):
            return entry
    return None
