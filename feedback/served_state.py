"""What each deployment serves, in the SQL store: one row per deployment name.

A row holds the served pack (its model-store tag and hash), the policy text and
where it came from, a `revision` that every change increments, and `configured`:
a fingerprint of the settings that chose the initial pack and policy. Workers of a
deployment poll their row's revision and follow it; no code reads another
deployment's row, so two services on one database never change each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.db import begin_write
from feedback.models import ServedStateRow, utcnow


@dataclass(frozen=True)
class ServedRecord:
    deployment: str
    pack_tag: str
    pack_sha256: str
    policy_yaml: str
    policy_source: str
    configured: str
    revision: int


def _record(row: ServedStateRow) -> ServedRecord:
    return ServedRecord(
        deployment=row.deployment,
        pack_tag=row.pack_tag,
        pack_sha256=row.pack_sha256,
        policy_yaml=row.policy_yaml,
        policy_source=row.policy_source,
        configured=row.configured,
        revision=row.revision,
    )


def read_served(session: Session, deployment: str) -> ServedRecord | None:
    """The deployment's row, or None before it first served anything."""
    row = session.get(ServedStateRow, deployment, populate_existing=True)
    return None if row is None else _record(row)


def served_revision(session: Session, deployment: str) -> int | None:
    """Just the revision: what the workers poll."""
    return session.scalar(
        select(ServedStateRow.revision).where(ServedStateRow.deployment == deployment)
    )


def write_served(
    session: Session,
    deployment: str,
    *,
    pack_tag: str,
    pack_sha256: str,
    policy_yaml: str,
    policy_source: str,
    configured: str,
) -> ServedRecord:
    """Create or replace the deployment's row and bump its revision (commits)."""
    begin_write(session)
    row = session.get(ServedStateRow, deployment, populate_existing=True)
    if row is None:
        row = ServedStateRow(deployment=deployment, revision=0)
        session.add(row)
    row.pack_tag = pack_tag
    row.pack_sha256 = pack_sha256
    row.policy_yaml = policy_yaml
    row.policy_source = policy_source
    row.configured = configured
    row.revision = row.revision + 1
    row.updated_at = utcnow()
    session.commit()
    return _record(row)
