"""Which labelled rows a pack is built from, and for what.

- fit: training priors and the drift reference;
- validation: the temperature fit;
- test: the held-out metrics and the regression gate's test set;
- the training sample (every row given as training data): the feature bounds, so
  that a value seen anywhere in training is never out of bounds.

The packer either splits one sample itself (stratified by label, seeded, the
fractions stated in the pack's metadata) or takes separate validation and test
files, in which case the whole sample is the fit part.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from packs.errors import PackerInputInvalid
from packs.format import LABEL_COLUMN, SplitSpec


@dataclass(frozen=True)
class Splits:
    """Labelled frames with the feature columns and `label` (extra columns kept)."""

    train: pd.DataFrame
    """The fit part."""
    validation: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame | None = None
    """The whole training sample the bounds come from; None: all three parts."""
    spec: SplitSpec | None = None
    """How the parts were made, for the metadata; None: by a builder."""

    def training_sample(self) -> pd.DataFrame:
        if self.sample is not None:
            return self.sample
        return pd.concat([self.train, self.validation, self.test], ignore_index=True)

    def described(self) -> SplitSpec:
        spec = self.spec or SplitSpec(method="builder")
        rows = {
            "fit": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "bounds": len(self.training_sample()),
        }
        return spec.model_copy(update={"rows": rows})


def split_frame(
    frame: pd.DataFrame, *, validation_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Stratified fit/validation/test split by `label`; bounds from all rows."""
    from sklearn.model_selection import train_test_split

    counts = frame[LABEL_COLUMN].value_counts()
    rare = counts[counts < 3]
    if len(rare):
        raise PackerInputInvalid(
            f"labels {sorted(rare.index)} have fewer than 3 rows in the sample, too "
            "few to split into fit, validation and test; add rows or pass "
            "--validation and --test files"
        )
    try:
        rest, test = train_test_split(
            frame,
            test_size=test_fraction,
            stratify=frame[LABEL_COLUMN],
            random_state=seed,
        )
        val_share = validation_fraction / (1 - test_fraction)
        train, val = train_test_split(
            rest, test_size=val_share, stratify=rest[LABEL_COLUMN], random_state=seed
        )
    except ValueError as exc:  # scikit-learn's own account of an impossible split
        raise PackerInputInvalid(
            f"cannot split the sample stratified by label: {exc}"
        ) from None
    spec = SplitSpec(
        method="stratified",
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
    )
    train, val, test = (f.reset_index(drop=True) for f in (train, val, test))
    return Splits(train, val, test, sample=frame.reset_index(drop=True), spec=spec)


def given_splits(
    sample: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    *,
    files: dict[str, str],
) -> Splits:
    """Parts from separate files: the whole sample is the fit part."""
    spec = SplitSpec(method="files", files=files)
    return Splits(sample, validation, test, sample=sample, spec=spec)
