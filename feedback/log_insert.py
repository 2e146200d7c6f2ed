"""One INSERT per batch of logged predictions: the database unpacks a JSON array.

`executemany` of row dicts cost the prediction log most of its time in Python:
SQLAlchemy's per-row parameter processing, and (on SQLite) the GIL handed back and
forth around every row's step while the event loop wanted it. Here the rows travel
as one JSON text (`LogBatch.encode`) and the database takes them apart with
`json_each` (SQLite) or `jsonb_array_elements` (PostgreSQL), building the `inputs`
and `outputs` objects itself: one statement, no Python per row.

Feature names and labels are bound parameters (object keys), never SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Connection, TextClause, text

from feedback.log_batch import ROW_FIELDS, LogBatch

_AT = {name: i for i, name in enumerate(ROW_FIELDS)}
_COLUMNS = (
    "id, created_at, model_version, policy_version, context, "
    "inputs, outputs, label, abstained, trace"
)


def insert_batches(conn: Connection, batches: Sequence[LogBatch]) -> int:
    """Insert every row of `batches` (all of one `shape_key`) with one statement;
    returns the number of rows."""
    dialect = conn.dialect.name
    blobs = [b.encode(_timestamp(b.created_at, dialect)) for b in batches]
    # One JSON array from many: drop each one's brackets.
    rows_json = (
        blobs[0] if len(blobs) == 1 else b"[" + b",".join(b[1:-1] for b in blobs) + b"]"
    )
    feature_names, label_names = batches[0].shape_key
    params: dict[str, str] = {"rows": rows_json.decode()}
    params.update({f"f{j}": name for j, name in enumerate(feature_names)})
    params.update({f"l{j}": name for j, name in enumerate(label_names)})
    conn.execute(_statement(dialect, len(feature_names), len(label_names)), params)
    return sum(map(len, batches))


def _timestamp(value: datetime, dialect: str) -> str:
    """`created_at` as text in the form each backend stores or casts."""
    if dialect == "sqlite":
        # SQLAlchemy's SQLite DATETIME storage format (naive UTC, see UTCDateTime).
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")
    return value.isoformat()


@lru_cache(maxsize=64)
def _statement(dialect: str, features: int, labels: int) -> TextClause:
    if dialect == "sqlite":
        return text(_sqlite(features, labels))
    if dialect == "postgresql":
        return text(_postgresql(features, labels))
    raise NotImplementedError(f"no prediction-log insert for {dialect}")


def _sqlite(features: int, labels: int) -> str:
    # SQLite 3.40 parses a JSON text again for every `->`: take each row apart once
    # into a materialised CTE, then build the objects from the short pieces (the
    # row-at-a-time form with ~20 lookups on the whole row cost 1.6x the time).
    def obj(column: str, prefix: str, width: int) -> str:
        pairs = ", ".join(f":{prefix}{j}, {column} -> {j}" for j in range(width))
        return f"CASE WHEN {column} = 'null' THEN NULL ELSE json_object({pairs}) END"

    a = _AT
    return f"""
WITH r AS MATERIALIZED (
    SELECT value ->> {a["id"]} AS id, value ->> {a["created_at"]} AS created_at,
           value ->> {a["model_version"]} AS model_version,
           value ->> {a["policy_version"]} AS policy_version,
           value ->> {a["context"]} AS context, value ->> {a["label"]} AS label,
           value -> {a["abstained"]} AS abstained, value ->> {a["reason"]} AS reason,
           value -> {a["probabilities"]} AS p, value -> {a["inputs"]} AS x,
           value -> {a["trace"]} AS trace
    FROM json_each(:rows)
)
INSERT INTO predictions ({_COLUMNS})
SELECT id, created_at, model_version, policy_version, context,
       {obj("x", "f", features)},
       json_object('label', label, 'abstained', json(abstained), 'reason', reason,
                   'probabilities', {obj("p", "l", labels)}),
       label, abstained = 'true',
       CASE WHEN trace = 'null' THEN NULL ELSE trace END
FROM r
"""


def _postgresql(features: int, labels: int) -> str:
    def obj(field: str, prefix: str, width: int) -> str:
        at = _AT[field]
        pairs = ", ".join(
            f"CAST(:{prefix}{j} AS text), r -> {at} -> {j}" for j in range(width)
        )
        return (
            f"CASE WHEN jsonb_typeof(r -> {at}) = 'array' "
            f"THEN jsonb_build_object({pairs}) END"
        )

    a = _AT
    return f"""
INSERT INTO predictions ({_COLUMNS})
SELECT r ->> {a["id"]}, CAST(r ->> {a["created_at"]} AS timestamptz),
       r ->> {a["model_version"]}, r ->> {a["policy_version"]},
       r ->> {a["context"]},
       {obj("inputs", "f", features)},
       jsonb_build_object('label', r -> {a["label"]},
                          'abstained', r -> {a["abstained"]},
                          'reason', r -> {a["reason"]},
                          'probabilities', {obj("probabilities", "l", labels)}),
       r ->> {a["label"]}, CAST(r ->> {a["abstained"]} AS boolean),
       CASE WHEN jsonb_typeof(r -> {a["trace"]}) = 'null' THEN NULL
            ELSE r -> {a["trace"]} END
FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
"""
