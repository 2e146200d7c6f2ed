"""Check that the labels a pack names are the model's output columns, in order.

A wrong order is silent at serving time (every answer is a valid label), so the
packer measures it on held-out rows: with the labels in the given order the model
must beat always answering the most frequent label. When it does not, the order of
the labels that fits best is found exactly by an assignment over the confusion
matrix (accuracy under a relabelling is the sum of the matrix cells it picks) and
named in the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packs.errors import PackerInputInvalid


@dataclass(frozen=True)
class LabelOrderCheck:
    accuracy: float
    """Held-out accuracy with the labels in the given order."""
    majority_rate: float
    """Held-out share of the most frequent label (the accuracy of a constant)."""
    best_order: list[str]
    """The label order with the highest held-out accuracy."""
    best_accuracy: float


def check_label_order(
    probs: np.ndarray, y: np.ndarray, labels: list[str]
) -> LabelOrderCheck:
    """`probs` (n, k) model output on held-out rows, `y` their label indices."""
    from scipy.optimize import linear_sum_assignment

    k = len(labels)
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (predicted, y), 1)
    # column c of the output holds label `labels[order[c]]` in the best relabelling
    rows, order = linear_sum_assignment(confusion, maximize=True)
    n = max(len(y), 1)
    return LabelOrderCheck(
        accuracy=float((predicted == y).sum() / n),
        majority_rate=float(np.bincount(y, minlength=k).max() / n),
        best_order=[labels[j] for j in order[np.argsort(rows)]],
        best_accuracy=float(confusion[rows, order].sum() / n),
    )


def require_label_order(check: LabelOrderCheck, labels: list[str]) -> None:
    """Refuse a label order whose held-out accuracy is below the majority rate."""
    if check.accuracy >= check.majority_rate:
        return
    if check.best_order != labels and check.best_accuracy > check.majority_rate:
        hint = (
            f"the order {','.join(check.best_order)} gives "
            f"{check.best_accuracy:.3f}: pass --labels {','.join(check.best_order)}"
        )
    else:
        hint = "no order of the labels does better: is this the model for this data?"
    raise PackerInputInvalid(
        f"with --labels {','.join(labels)} the model's held-out accuracy is "
        f"{check.accuracy:.3f}, below the {check.majority_rate:.3f} of always "
        f"answering the most frequent label; {hint}"
    )
