"""Build a candidate pack from the original training data plus corrected reports.

Triage turns confirmed reports into regression cases (input + right label); here
they become extra training rows, repeated `case_weight` times so that a handful
of hard cases can move a model trained on hundreds of rows. The held-out
validation and test splits stay exactly the original ones, so the gate compares
candidate and served model on the same evidence. Retraining needs the pack's
training code, so it exists for the default penguin pack; a bring-your-own pack
is retrained by its owner and judged by the same gate.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy.orm import Session

from feedback import store
from packs.format import LABEL_COLUMN, PackMetadata

DEFAULT_CASE_WEIGHT = 5


def corrected_rows(
    session: Session, *, feature_names: list[str], labels: list[str]
) -> pd.DataFrame:
    """Active regression cases with every feature and a known label, as rows."""
    rows = []
    for case in store.regression_cases(session):
        inputs = case.inputs or {}
        if case.expected_label in labels and all(
            inputs.get(n) is not None for n in feature_names
        ):
            rows.append(
                {
                    **{n: float(inputs[n]) for n in feature_names},
                    LABEL_COLUMN: case.expected_label,
                }
            )
    return pd.DataFrame(rows, columns=[*feature_names, LABEL_COLUMN])


def retrain_default_pack(
    session: Session, out_dir: Path, *, case_weight: int = DEFAULT_CASE_WEIGHT
) -> tuple[PackMetadata, int]:
    """Write a candidate penguin pack to `out_dir`; returns it and the cases used."""
    from packs.build_default import (
        FEATURES,
        LABELS,
        SEED,
        build_default_pack,
        penguin_frame,
    )
    from packs.writer import Splits, split_frame

    names = [f.name for f in FEATURES]
    base = split_frame(
        penguin_frame(), validation_fraction=0.2, test_fraction=0.2, seed=SEED
    )
    extra = corrected_rows(session, feature_names=names, labels=LABELS)
    train = pd.concat([base.train, *([extra] * case_weight)], ignore_index=True)
    splits = Splits(train=train, validation=base.validation, test=base.test)
    return build_default_pack(out_dir, splits=splits), len(extra)
