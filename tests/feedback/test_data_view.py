"""The data view's projection (PCA by SVD) and the cleanlab label-error finder."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.data_view import fit_pca, project, rows_matrix
from feedback.label_errors import Candidate, find_label_errors

LABELS = ["a", "b", "c"]


def test_first_axis_follows_the_direction_of_most_variance() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    data = np.column_stack([t, t + 0.01 * rng.normal(size=500), rng.normal(size=500)])
    _, _, axes, explained = fit_pca(data)
    # The two correlated columns share the first axis; the noise column does not.
    assert abs(axes[0, 0]) == pytest.approx(abs(axes[0, 1]), abs=0.01)
    assert abs(axes[0, 2]) < 0.1
    assert explained[0] > 0.6 and explained[0] >= explained[1]


def test_projection_places_groups_with_the_reference_axes() -> None:
    reference = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.5]])
    far = np.array([[30.0, 30.0]])
    out = project(
        reference=reference,
        reference_labels=["a", "a", "b", "b"],
        groups=[("report", far, ["b"], ["/r/1"])],
    )
    kinds = [p.kind for p in out.points]
    assert kinds == ["reference"] * 4 + ["report"]
    report = out.points[-1]
    assert report.link == "/r/1"
    assert abs(report.x) > 5 * max(abs(p.x) for p in out.points[:4])


def test_rows_without_every_feature_are_left_out() -> None:
    matrix, keep = rows_matrix(
        [{"x": 1, "y": 2}, None, {"x": 3}, {"x": 4, "y": None}, {"x": 5, "y": 6}],
        ["x", "y"],
    )
    assert keep == [0, 4]
    assert matrix.tolist() == [[1.0, 2.0], [5.0, 6.0]]


def test_cleanlab_flags_the_rows_whose_label_the_model_contradicts() -> None:
    rng = np.random.default_rng(1)
    centres = {"a": 0.0, "b": 5.0, "c": 10.0}
    candidates = [
        Candidate("training", str(i), label, [centres[label] + rng.normal()])
        for i, label in enumerate(np.repeat(LABELS, 40))
    ]
    # Two rows sitting in c's cluster but labelled a.
    candidates += [Candidate("report", f"r{i}", "a", [10.0]) for i in range(2)]

    def predict_proba(x: np.ndarray) -> np.ndarray:
        d = -((x - np.array(list(centres.values()))) ** 2)
        e = np.exp(d - d.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    issues = find_label_errors(candidates, labels=LABELS, predict_proba=predict_proba)
    flagged = {i.candidate.ref for i in issues}
    assert {"r0", "r1"} <= flagged
    assert all(i.suggested == "c" for i in issues if i.candidate.ref in {"r0", "r1"})
    assert len(flagged) <= 6


def test_too_few_labelled_rows_give_no_flags() -> None:
    few = [Candidate("report", "1", "a", [0.0]), Candidate("report", "2", "b", [1.0])]
    assert find_label_errors(few, labels=LABELS, predict_proba=np.asarray) == []
