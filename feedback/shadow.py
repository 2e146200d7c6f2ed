"""Shadow runs: a candidate pack answering sampled live traffic beside the served
one, its answers compared and never sent.

    ShadowTally      one worker's running counts for one run: rows, drops,
                     agreement overall / per served label / on confident rows,
                     the summed top probabilities of both models (the
                     label-free accuracy estimate), the candidate's time, and
                     the largest disagreements; tallies of several workers merge
    start_run ...    the `shadow_runs` rows: a deployment's active run is its row
                     with no `stopped_at`; every worker polls it and follows
    write_tally      a worker replaces its own `shadow_tallies` row as it counts
    run_result       the run's row and the merged tallies of all its workers

The estimated accuracy of each model is the mean over rows of its largest final
probability (calibrated and prior-adjusted by its own pipeline): the
confidence-based estimate of `monitoring.accuracy` without a refit, which sums
across workers. Agreement compares the answered labels; an abstention is the
label `(abstained)`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.db import begin_write
from feedback.models import ShadowRunRow, ShadowTallyRow, utcnow

ABSTAINED = "(abstained)"
"""The label an abstention counts under."""
CONFIDENT_PROBABILITY = 0.9
"""A served answer at least this probable is a confident row."""
MAX_DISAGREEMENTS = 10
"""Largest disagreements kept per tally (and shown)."""


@dataclass
class ShadowTally:
    rows: int = 0
    """Sampled rows the candidate answered."""
    dropped: int = 0
    """Sampled rows dropped because the shadow queue was full."""
    failed: int = 0
    """Sampled rows the candidate could not answer (its policy refused them)."""
    agreed: int = 0
    confident_rows: int = 0
    confident_agreed: int = 0
    served_confidence_sum: float = 0.0
    candidate_confidence_sum: float = 0.0
    candidate_seconds: float = 0.0
    """Time the candidate's pipeline and model took, summed over its calls."""
    per_label: dict[str, list[int]] = field(default_factory=dict)
    """Served label -> [rows, rows the candidate agreed on]."""
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    """The largest disagreements, largest first (see `add`)."""

    def add(
        self,
        *,
        prediction_ids: Sequence[str],
        label_names: Sequence[str],
        served_labels: Sequence[str | None],
        served_probabilities: np.ndarray,
        candidate_labels: Sequence[str | None],
        candidate_probabilities: np.ndarray,
        seconds: float,
        inputs: list[dict[str, float]] | None,
    ) -> None:
        """Count one batch of rows answered by both models. A disagreement's size
        is the total-variation distance between the two probability vectors;
        `inputs` (per row) is kept with it only when given."""
        served = [ABSTAINED if s is None else s for s in served_labels]
        candidate = [ABSTAINED if c is None else c for c in candidate_labels]
        served_top = served_probabilities.max(axis=1)
        candidate_top = candidate_probabilities.max(axis=1)
        distance = 0.5 * np.abs(served_probabilities - candidate_probabilities).sum(
            axis=1
        )
        self.rows += len(served)
        self.candidate_seconds += seconds
        self.served_confidence_sum += float(served_top.sum())
        self.candidate_confidence_sum += float(candidate_top.sum())
        index = {name: j for j, name in enumerate(label_names)}
        for i, (s, c) in enumerate(zip(served, candidate, strict=True)):
            same = s == c
            counts = self.per_label.setdefault(s, [0, 0])
            counts[0] += 1
            counts[1] += same
            self.agreed += same
            if served_top[i] >= CONFIDENT_PROBABILITY:
                self.confident_rows += 1
                self.confident_agreed += same
            if same:
                continue
            row: dict[str, Any] = {
                "prediction_id": prediction_ids[i],
                "served_label": s,
                "served_probability": _probability(
                    served_probabilities[i], index.get(s)
                ),
                "candidate_label": c,
                "candidate_probability": _probability(
                    candidate_probabilities[i], index.get(c)
                ),
                "distance": round(float(distance[i]), 6),
            }
            if inputs is not None:
                row["inputs"] = inputs[i]
            self.disagreements.append(row)
        self.disagreements = _largest(self.disagreements)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "dropped": self.dropped,
            "failed": self.failed,
            "agreed": self.agreed,
            "confident_rows": self.confident_rows,
            "confident_agreed": self.confident_agreed,
            "served_confidence_sum": self.served_confidence_sum,
            "candidate_confidence_sum": self.candidate_confidence_sum,
            "candidate_seconds": self.candidate_seconds,
            "per_label": {k: list(v) for k, v in self.per_label.items()},
            "disagreements": list(self.disagreements),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShadowTally:
        return cls(
            rows=int(data.get("rows", 0)),
            dropped=int(data.get("dropped", 0)),
            failed=int(data.get("failed", 0)),
            agreed=int(data.get("agreed", 0)),
            confident_rows=int(data.get("confident_rows", 0)),
            confident_agreed=int(data.get("confident_agreed", 0)),
            served_confidence_sum=float(data.get("served_confidence_sum", 0.0)),
            candidate_confidence_sum=float(data.get("candidate_confidence_sum", 0.0)),
            candidate_seconds=float(data.get("candidate_seconds", 0.0)),
            per_label={
                k: [int(v[0]), int(v[1])]
                for k, v in dict(data.get("per_label", {})).items()
            },
            disagreements=list(data.get("disagreements", [])),
        )

    @classmethod
    def merged(cls, tallies: Sequence[ShadowTally]) -> ShadowTally:
        """The sum of several workers' tallies."""
        out = cls()
        for t in tallies:
            out.rows += t.rows
            out.dropped += t.dropped
            out.failed += t.failed
            out.agreed += t.agreed
            out.confident_rows += t.confident_rows
            out.confident_agreed += t.confident_agreed
            out.served_confidence_sum += t.served_confidence_sum
            out.candidate_confidence_sum += t.candidate_confidence_sum
            out.candidate_seconds += t.candidate_seconds
            for label, (rows, agreed) in t.per_label.items():
                counts = out.per_label.setdefault(label, [0, 0])
                counts[0] += rows
                counts[1] += agreed
            out.disagreements.extend(t.disagreements)
        out.disagreements = _largest(out.disagreements)
        return out

    @property
    def agreement(self) -> float | None:
        return _share(self.agreed, self.rows)

    @property
    def confident_agreement(self) -> float | None:
        return _share(self.confident_agreed, self.confident_rows)

    @property
    def served_estimated_accuracy(self) -> float | None:
        return None if not self.rows else self.served_confidence_sum / self.rows

    @property
    def candidate_estimated_accuracy(self) -> float | None:
        return None if not self.rows else self.candidate_confidence_sum / self.rows

    def summary(self) -> dict[str, Any]:
        """What `GET /admin/shadow` shows of the counts."""
        return {
            "rows_seen": self.rows,
            "rows_dropped": self.dropped,
            "rows_failed": self.failed,
            "agreement": self.agreement,
            "agreement_per_served_label": {
                label: {"rows": rows, "agreement": _share(agreed, rows)}
                for label, (rows, agreed) in sorted(self.per_label.items())
            },
            "confident_rows": self.confident_rows,
            "confident_agreement": self.confident_agreement,
            "confident_probability": CONFIDENT_PROBABILITY,
            "estimated_accuracy": {
                "served": self.served_estimated_accuracy,
                "candidate": self.candidate_estimated_accuracy,
                "method": "mean top calibrated probability per row",
            },
            "candidate_latency_ms_per_row": (
                None if not self.rows else 1000 * self.candidate_seconds / self.rows
            ),
            "largest_disagreements": self.disagreements,
        }


def _probability(row: np.ndarray, j: int | None) -> float:
    """The probability of label index `j` (the top one for an abstention)."""
    return round(float(row.max() if j is None else row[j]), 6)


def _largest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return heapq.nlargest(MAX_DISAGREEMENTS, rows, key=lambda r: r["distance"])


def _share(part: int, whole: int) -> float | None:
    return None if not whole else part / whole


# --- the rows in the SQL store ---------------------------------------------------


@dataclass(frozen=True)
class ShadowRunRecord:
    id: int
    deployment: str
    pack_tag: str
    pack_sha256: str
    model_version: str
    policy_version: str
    policy_yaml: str
    served_model_version: str
    sample_rate: float
    started_at: datetime
    stopped_at: datetime | None

    @property
    def active(self) -> bool:
        return self.stopped_at is None

    def describe(self) -> dict[str, Any]:
        """JSON-safe, without the policy text."""
        return {
            "run_id": self.id,
            "status": "active" if self.active else "stopped",
            "candidate_version": self.model_version,
            "candidate_pack_tag": self.pack_tag,
            "candidate_policy_version": self.policy_version,
            "served_model_version_at_start": self.served_model_version,
            "sample_rate": self.sample_rate,
            "started_at": self.started_at.isoformat(),
            "stopped_at": None
            if self.stopped_at is None
            else self.stopped_at.isoformat(),
        }


def _record(row: ShadowRunRow) -> ShadowRunRecord:
    return ShadowRunRecord(
        id=row.id,
        deployment=row.deployment,
        pack_tag=row.pack_tag,
        pack_sha256=row.pack_sha256,
        model_version=row.model_version,
        policy_version=row.policy_version,
        policy_yaml=row.policy_yaml,
        served_model_version=row.served_model_version,
        sample_rate=row.sample_rate,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
    )


def _active(session: Session, deployment: str) -> list[ShadowRunRow]:
    return list(
        session.scalars(
            select(ShadowRunRow)
            .where(
                ShadowRunRow.deployment == deployment, ShadowRunRow.stopped_at.is_(None)
            )
            .execution_options(populate_existing=True)
        )
    )


def start_run(
    session: Session,
    deployment: str,
    *,
    pack_tag: str,
    pack_sha256: str,
    model_version: str,
    policy_version: str,
    policy_yaml: str,
    served_model_version: str,
    sample_rate: float,
) -> tuple[ShadowRunRecord, ShadowRunRecord | None]:
    """Start a run (commits), stopping the deployment's active one: (new, old)."""
    begin_write(session)
    now = utcnow()
    replaced = None
    for old in _active(session, deployment):
        old.stopped_at = now
        replaced = _record(old)
    row = ShadowRunRow(
        deployment=deployment,
        pack_tag=pack_tag,
        pack_sha256=pack_sha256,
        model_version=model_version,
        policy_version=policy_version,
        policy_yaml=policy_yaml,
        served_model_version=served_model_version,
        sample_rate=sample_rate,
        started_at=now,
    )
    session.add(row)
    session.commit()
    return _record(row), replaced


def stop_run(session: Session, deployment: str) -> ShadowRunRecord | None:
    """Stop the deployment's active run (commits); None when there is none."""
    begin_write(session)
    stopped = None
    for row in _active(session, deployment):
        row.stopped_at = utcnow()
        stopped = row
    session.commit()
    return None if stopped is None else _record(stopped)


def active_run(session: Session, deployment: str) -> ShadowRunRecord | None:
    """The deployment's active run: what every worker polls."""
    rows = _active(session, deployment)
    return _record(max(rows, key=lambda r: r.id)) if rows else None


def latest_run(
    session: Session, deployment: str, *, pack_tag: str | None = None
) -> ShadowRunRecord | None:
    """The deployment's newest run (of `pack_tag` when given), active or not."""
    query = select(ShadowRunRow).where(ShadowRunRow.deployment == deployment)
    if pack_tag is not None:
        query = query.where(ShadowRunRow.pack_tag == pack_tag)
    row = session.scalars(
        query.order_by(ShadowRunRow.id.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    ).first()
    return None if row is None else _record(row)


def write_tally(
    session: Session, run_id: int, worker: str, tally: dict[str, Any]
) -> None:
    """Replace `worker`'s tallies of run `run_id` (commits)."""
    begin_write(session)
    row = session.get(ShadowTallyRow, (run_id, worker), populate_existing=True)
    if row is None:
        row = ShadowTallyRow(run_id=run_id, worker=worker)
        session.add(row)
    row.tallies = tally
    row.updated_at = utcnow()
    session.commit()


@dataclass(frozen=True)
class ShadowResult:
    run: ShadowRunRecord
    tally: ShadowTally
    workers: int
    """Workers that wrote tallies."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.describe(), "workers": self.workers, **self.tally.summary()}


def run_result(session: Session, run: ShadowRunRecord) -> ShadowResult:
    """The run with every worker's tallies merged."""
    rows = session.scalars(
        select(ShadowTallyRow)
        .where(ShadowTallyRow.run_id == run.id)
        .execution_options(populate_existing=True)
    ).all()
    tally = ShadowTally.merged([ShadowTally.from_json(r.tallies) for r in rows])
    return ShadowResult(run, tally, len(rows))


def result_for_pack(
    session: Session, deployment: str, pack_tag: str
) -> ShadowResult | None:
    """The newest shadow run of the pack `pack_tag`, merged; None when never run."""
    run = latest_run(session, deployment, pack_tag=pack_tag)
    return None if run is None else run_result(session, run)
