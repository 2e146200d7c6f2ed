"""The data view: reference data, recent live inputs and reported cases in 2-D.

A PCA (numpy SVD) fitted on the standardised reference data projects every point,
so the picture's axes mean the same for all three kinds; a cluster of reports far
from the reference, or inside the wrong colour, shows at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    kind: str
    """`reference`, `live` or `report`."""
    label: str | None
    """Reference: its label; live: the answer; report: the right label as known."""
    link: str | None = None


@dataclass(frozen=True)
class Projection:
    points: list[Point]
    explained: tuple[float, float]
    """Share of the reference variance along each axis."""


def rows_matrix(
    rows: Sequence[dict[str, Any] | None], names: Sequence[str]
) -> tuple[np.ndarray, list[int]]:
    """The rows with every feature, as a matrix, and their positions."""
    keep: list[int] = []
    values: list[list[float]] = []
    for i, r in enumerate(rows):
        if r is not None and all(r.get(n) is not None for n in names):
            keep.append(i)
            values.append([float(r[n]) for n in names])
    matrix = np.array(values, dtype=np.float64).reshape(len(keep), len(names))
    return matrix, keep


def fit_pca(
    reference: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Mean, scale and the first two principal axes of standardised `reference`."""
    mean = reference.mean(axis=0)
    scale = reference.std(axis=0)
    scale[scale == 0] = 1.0
    z = (reference - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    var = s**2
    share = var / var.sum() if var.sum() else np.zeros_like(var)
    axes = vt[:2]
    if axes.shape[0] < 2:  # a single feature: the second axis is flat
        axes = np.vstack([axes, np.zeros_like(axes)])
        share = np.append(share, 0.0)
    return mean, scale, axes, (float(share[0]), float(share[1]))


def project(
    *,
    reference: np.ndarray,
    reference_labels: Sequence[str | None],
    groups: Sequence[
        tuple[str, np.ndarray, Sequence[str | None], Sequence[str | None]]
    ],
) -> Projection:
    """Project the reference and each (kind, matrix, labels, links) group."""
    mean, scale, axes, explained = fit_pca(reference)

    def xy(m: np.ndarray) -> np.ndarray:
        return ((m - mean) / scale) @ axes.T if len(m) else np.zeros((0, 2))

    points = [
        Point(float(a), float(b), "reference", label)
        for (a, b), label in zip(xy(reference), reference_labels, strict=True)
    ]
    for kind, matrix, labels, links in groups:
        points += [
            Point(float(a), float(b), kind, label, link)
            for (a, b), label, link in zip(xy(matrix), labels, links, strict=True)
        ]
    return Projection(points, explained)
