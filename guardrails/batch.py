"""The state one batch carries through the guardrail stages, and the stage protocol.

A stage is a small class following `Stage`: a `name`, whether it runs before the
model, the abstention reasons it may give, `prepare(ctx)` (what it needs to know
about one request, validated before the model runs: chosen priors, allowed labels)
and `apply(batch, prepared) -> TraceColumn`, which reads and updates the batch in
place (vectorised over rows) and returns its trace for every row as one shared
entry plus entries for the rows it treated on their own, so a trace costs Python
work only for the rows where something happened; treat trace dicts as read-only.
Stages are listed, in the order they run, in `guardrails.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np

if TYPE_CHECKING:
    from guardrails.online_priors import OnlinePriorEstimator
    from guardrails.policy import Policy
    from packs.calibration_scores import CalibrationSet
    from packs.format import PackMetadata

Trace = dict[str, Any]
_EMPTY = np.empty((0, 0))


@dataclass(frozen=True)
class RequestContext:
    """What a caller says about one request, besides its rows."""

    context: str | None = None
    """Named deployment context from the policy, e.g. "Dream"."""
    priors: Mapping[str, float] | None = None
    """Explicit deployment priors, one per label (highest precedence)."""


@dataclass(frozen=True)
class PriorChoice:
    """Deployment priors resolved for one request, before the model runs."""

    source: str
    """`explicit`, `context:<name>`, `online` or `training`."""
    weights: np.ndarray | None
    """pi_deploy / pi_train per label; None means identity (nothing to adjust)."""
    trace: Trace
    """The stage's trace entry for rows whose top label did not change."""
    observe_online: bool = False
    """Feed this request's rows to the online prior estimator."""


@dataclass(frozen=True)
class StageSetup:
    """Everything a stage may be built from: one policy for one pack."""

    policy: Policy
    meta: PackMetadata
    prior_estimator: OnlinePriorEstimator | None = None
    """The online prior estimate the priors stage uses and feeds (None: off)."""
    calibration: CalibrationSet | None = None
    """The pack's held-out rows for conformal sets (None: the pack has none)."""

    @property
    def labels(self) -> list[str]:
        return list(self.meta.labels)


class Batch:
    """Arrays for n rows and k labels, updated in place by the stages.

    A plain class with slots: one is built per request, so construction is on the
    hot path."""

    __slots__ = (
        "_codes",
        "_probabilities",
        "_scores",
        "abstain_code",
        "allowed",
        "choice",
        "cost_matrix",
        "features",
        "labels",
        "model_probabilities",
        "n",
        "prediction_sets",
        "prior_weights",
    )

    def __init__(
        self,
        features: np.ndarray,
        labels: list[str],
        reason_codes: Mapping[str, int],
        cost_matrix: np.ndarray | None = None,
    ):
        self.features = features
        self.labels = labels
        self.cost_matrix = cost_matrix
        self.n = len(features)
        self._codes = reason_codes
        self._probabilities: np.ndarray = _EMPTY
        self._scores: np.ndarray | None = None
        self.model_probabilities: np.ndarray = _EMPTY
        self.abstain_code = np.zeros(self.n, dtype=np.int8)
        """(n,) index into the registry's abstention reasons; 0 while answered."""
        self.allowed: np.ndarray | None = None
        """(k,) bool set by the blacklist stage; None means every label allowed."""
        self.choice: np.ndarray | None = None
        """(n,) index of the answered label, set by the decision stage."""
        self.prior_weights: np.ndarray | None = None
        """(k,) pi_deploy / pi_train the priors stage applied; None: none."""
        self.prediction_sets: np.ndarray | None = None
        """(n, k) bool set by the conformal stage; None when it is off."""

    @property
    def probabilities(self) -> np.ndarray:
        """(n, k) current probabilities; each stage may replace the array."""
        return self._probabilities

    @probabilities.setter
    def probabilities(self, value: np.ndarray) -> None:
        self._probabilities = value
        self._scores = None  # derived from the probabilities: recomputed on demand

    def abstain(self, rows: np.ndarray, reason: str) -> None:
        """Mark rows (bool mask) as abstained for `reason` unless they already are."""
        self.abstain_code[rows & (self.abstain_code == 0)] = self._codes[reason]

    def scores(self) -> np.ndarray:
        """Per-label preference of the decision rule (higher is better): the
        probabilities, or minus the expected cost when a cost matrix is set."""
        if self._scores is None:
            if self.cost_matrix is None:
                self._scores = self._probabilities
            else:
                self._scores = -(self._probabilities @ self.cost_matrix)
        return self._scores

    def best_allowed(self) -> np.ndarray:
        """(n,) index of the best label by `scores` among the allowed ones."""
        scores = self.scores()
        if self.allowed is not None:
            scores = np.where(self.allowed, scores, -np.inf)
        return np.argmax(scores, axis=1)


class Stage(Protocol):
    """One guardrail. Subclass it to inherit the defaults (nothing to prepare)."""

    name: ClassVar[str]
    before_model: ClassVar[bool] = False
    """True for stages that look at the inputs only and run before the model."""
    reasons: ClassVar[tuple[str, ...]] = ()
    """Abstention reasons the stage may give (metric labels derive from these)."""

    @classmethod
    def build(cls, setup: StageSetup) -> Self:
        """The stage as the policy in `setup` configures it for its pack."""
        ...

    def prepare(self, ctx: RequestContext) -> Any:
        """What the stage needs to know about one request, resolved and validated
        before the model runs (raises a 4xx error for a bad request)."""
        return None

    def apply(self, batch: Batch, prepared: Any) -> TraceColumn:
        """Update `batch` in place; return the stage's trace for every row."""
        ...


_NO_ROWS = np.empty(0, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class TraceColumn:
    """One stage's trace for a batch: `quiet` for every row except `rows` (sorted
    row indices), which get `entries` (one each, in the same order)."""

    quiet: Trace
    rows: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    entries: list[Trace] | tuple[Trace, ...] = ()

    @property
    def stage(self) -> str:
        """The stage's name (every entry carries it)."""
        return str(self.quiet["stage"])

    @property
    def quiet_everywhere(self) -> bool:
        """No row has an entry of its own and the shared entry did not act."""
        return not len(self.rows) and not self.quiet.get("acted")

    def acted_rows(self, n: int) -> int:
        """How many of the batch's `n` rows this stage acted on."""
        own = sum(1 for entry in self.entries if entry.get("acted"))
        return own + (n - len(self.rows) if self.quiet.get("acted") else 0)

    def acted_mask(self, n: int) -> np.ndarray:
        """(n,) bool: the rows this stage acted on."""
        mask = np.full(n, bool(self.quiet.get("acted")))
        if len(self.rows):
            mask[self.rows] = [bool(entry.get("acted")) for entry in self.entries]
        return mask

    def to_dict(self) -> dict[str, Any]:
        """As JSON: `{"stage", "entry": for every row not listed, "rows": [i, ...],
        "entries": [entry of row i, ...]}`."""
        return {
            "stage": self.stage,
            "entry": self.quiet,
            "rows": self.rows.tolist(),
            "entries": list(self.entries),
        }


def rounded(x: float) -> float:
    """Probabilities in traces: 4 decimals are enough to read and keep it small."""
    return round(float(x), 4)
