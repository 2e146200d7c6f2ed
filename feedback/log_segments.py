"""The prediction log's files: their names, their columns, and a batch as Arrow.

A log directory holds two kinds of segment, both named so that their time range
is known without opening them (prediction ids start with their millisecond, so a
lookup by id prunes files by name):

    wal_<start ms>_<writer>.wal               one writer's open (or orphaned)
                                             write-ahead segment: one record per
                                             request (`feedback.log_wal`; earlier
                                             versions wrote `.arrows` streams)
    seg_<start ms>_<end ms>_<writer>.parquet  a closed segment, compacted

`<writer>` is `host.pid.random.sequence`, unique per process and segment, so that
several workers and replicas can share one directory (a shared volume).

Columns: `id`, `created_at`, the versions and context, `label`, `abstained`,
`reason`, `trace` (JSON text of the rows a stage acted on), then `probabilities`
and, when the policy lets inputs be stored, `inputs`: fixed-size lists of float32
whose labels and feature names are in the schema's metadata (one column each
rather than one per value keeps the request path to a few pyarrow calls). A
segment holds one schema; a writer starts a new segment when it changes. A
Parquet segment also has `review_unit` and `margin`, which the compactor adds for
the review sampler (`feedback.log_sampling`).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from feedback.log_batch import LogBatch

WAL_SUFFIX = ".wal"
_WAL_SUFFIXES = (WAL_SUFFIX, ".arrows")
SEGMENT_SUFFIX = ".parquet"
PROBABILITIES = "probabilities"
INPUTS = "inputs"
LABELS_KEY = "flywheel.labels"
FEATURES_KEY = "flywheel.features"
#: In a Parquet segment's metadata: [min id, max id] of each row group, in order.
ID_RANGES_KEY = "flywheel.id_ranges"
#: Slack on a file's time range when pruning by time: ids and `created_at` come
#: from two clock reads, and clocks of replicas differ a little.
SLACK_MS = 2_000

_NAME = re.compile(
    r"^(?P<kind>wal|seg)_(?P<start>\d{13})(?:_(?P<end>\d{13}))?_(?P<writer>[A-Za-z0-9.-]+)"
    r"(?P<suffix>\.wal|\.arrows|\.parquet)$"
)
_STR = pa.string()
_TIME = pa.timestamp("us", tz="UTC")
_BASE_FIELDS = [
    pa.field("id", _STR, nullable=False),
    pa.field("created_at", _TIME, nullable=False),
    pa.field("model_version", _STR),
    pa.field("policy_version", _STR),
    pa.field("context", _STR),
    pa.field("label", _STR),
    pa.field("abstained", pa.bool_()),
    pa.field("reason", _STR),
    pa.field("trace", _STR),
]


def new_writer_id() -> str:
    """`host.pid.random`: unique per writing process, safe in a file name."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}.{os.getpid()}.{secrets.token_hex(4)}"


@dataclass(frozen=True, order=True)
class SegmentFile:
    """A segment file and what its name says about it."""

    start_ms: int
    end_ms: int | None
    """None for a write-ahead segment (still growing, or its writer died)."""
    writer: str
    path: Path

    @property
    def is_wal(self) -> bool:
        return self.end_ms is None

    def may_hold(self, ms: int) -> bool:
        """Whether a row stamped `ms` can be in this file."""
        if ms < self.start_ms - SLACK_MS:
            return False
        return self.end_ms is None or ms <= self.end_ms + SLACK_MS

    def newer_than(self, ms: int) -> bool:
        """Whether the file may hold rows at or after `ms`."""
        return self.end_ms is None or self.end_ms + SLACK_MS >= ms


def wal_name(start_ms: int, writer: str) -> str:
    return f"wal_{start_ms:013d}_{writer}{WAL_SUFFIX}"


def segment_name(start_ms: int, end_ms: int, writer: str) -> str:
    return f"seg_{start_ms:013d}_{end_ms:013d}_{writer}{SEGMENT_SUFFIX}"


def parse_name(path: Path) -> SegmentFile | None:
    """The segment a file name describes, or None for any other file."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    end = m["end"]
    if (m["kind"] == "wal") != (end is None) or (end is None) != (
        m["suffix"] in _WAL_SUFFIXES
    ):
        return None
    return SegmentFile(
        int(m["start"]), None if end is None else int(end), m["writer"], path
    )


def list_segments(log_dir: Path) -> list[SegmentFile]:
    """Every segment in `log_dir`, oldest start first. A write-ahead segment whose
    compacted Parquet file already exists (compaction finishing) is left out."""
    try:
        entries = list(os.scandir(log_dir))
    except FileNotFoundError:
        return []
    files = [f for e in entries if (f := parse_name(Path(e.path))) is not None]
    compacted = {(f.start_ms, f.writer) for f in files if not f.is_wal}
    # By start, then name: two files of one millisecond (a writer's new
    # write-ahead segment beside another's compacted one) have no other order.
    return sorted(
        (f for f in files if not (f.is_wal and (f.start_ms, f.writer) in compacted)),
        key=lambda f: (f.start_ms, f.path.name),
    )


def id_millis(prediction_id: str) -> int | None:
    """The millisecond a prediction id was made (its first 12 hex digits), or
    None when it is not an id of ours (32 lowercase hex digits)."""
    if len(prediction_id) != 32:
        return None
    try:
        int(prediction_id, 16)
    except ValueError:
        return None
    return int(prediction_id[:12], 16)


def schema_for(batch: LogBatch) -> pa.Schema:
    """The columns a segment holding `batch` has (see the module docstring)."""
    return _schema(
        batch.label_names if batch.probabilities is not None else None,
        batch.feature_names if batch.inputs is not None else None,
    )


@lru_cache(maxsize=64)
def _schema(
    labels: tuple[str, ...] | None, features: tuple[str, ...] | None
) -> pa.Schema:
    fields = list(_BASE_FIELDS)
    meta: dict[str, str] = {}
    if labels is not None:
        fields.append(pa.field(PROBABILITIES, pa.list_(pa.float32(), len(labels))))
        meta[LABELS_KEY] = orjson.dumps(list(labels)).decode()
    if features is not None:
        fields.append(pa.field(INPUTS, pa.list_(pa.float32(), len(features))))
        meta[FEATURES_KEY] = orjson.dumps(list(features)).decode()
    return pa.schema(fields, metadata=meta)


def label_names(schema: pa.Schema) -> list[str]:
    """The labels of a segment's `probabilities` column ([] without one)."""
    raw = (schema.metadata or {}).get(LABELS_KEY.encode())
    return [] if raw is None else list(orjson.loads(raw))


def feature_names(schema: pa.Schema) -> list[str]:
    """The features of a segment's `inputs` column ([] when inputs not stored)."""
    raw = (schema.metadata or {}).get(FEATURES_KEY.encode())
    return [] if raw is None else list(orjson.loads(raw))


def to_record_batch(batch: LogBatch, schema: pa.Schema) -> pa.RecordBatch:
    """One request's rows as an Arrow record batch of `schema_for(batch)`.

    Built from buffers where it can (a few pyarrow calls whatever the number of
    rows or features): this runs on the request path of every answer."""
    n = len(batch)
    stamp = int(batch.created_at.timestamp() * 1_000_000)
    columns: list[pa.Array] = [
        _ids(batch.ids, batch.ids_hex),
        _stamps(stamp, n),
        _repeat(batch.model_version, n),
        _repeat(batch.policy_version, n),
        _repeat(batch.context, n),
        pa.array(batch.labels, _STR),
        pa.array(np.asarray(batch.abstained, dtype=bool)),
        pa.array(batch.reasons, _STR),
        _traces(batch.traces, n),
    ]
    if batch.probabilities is not None:
        columns.append(_float_rows(batch.probabilities, len(batch.label_names)))
    if batch.inputs is not None:
        columns.append(_float_rows(batch.inputs, len(batch.feature_names)))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


_ROW_RECORD_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _plain(value: Any) -> Any:
    # What orjson does not take as is: non-contiguous arrays, string arrays, ids
    # held in one buffer (`feedback.models.PredictionIdBlock`).
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be logged")


def row_record(batch: LogBatch) -> bytes:
    """A request's rows as one orjson document, the cheap form of an append:
    one `orjson.dumps` whatever the columns. `rows_to_record_batch` turns a run
    of them into the record batch `to_record_batch` would have made (a NaN or
    infinite float would read back as null: answered inputs and probabilities
    are finite)."""
    return orjson.dumps(
        [
            batch.ids,
            int(batch.created_at.timestamp() * 1_000_000),
            batch.model_version,
            batch.policy_version,
            batch.context,
            batch.labels,
            batch.abstained,
            batch.reasons,
            batch.traces,
            batch.probabilities,
            batch.inputs,
        ],
        default=_plain,
        option=_ROW_RECORD_OPTIONS,
    )


def column_record(batch: LogBatch) -> bytes | None:
    """A large request's rows as one columns record, the cheap form of its
    append: a small orjson header, then the columns as raw buffers (ids as
    ASCII, labels and reasons as codes into name tables the header carries,
    probabilities and inputs as float32). Building it costs a few copies whatever
    the number of rows, where an Arrow record batch turns every label, reason
    and version into a string on the request path (0.34–0.42 ms per 1,000 rows
    measured in a served worker; these buffers take 12 µs measured alone).
    `ColumnsRecord` reads it back; None when `batch` does not carry its
    ids joined and its labels and reasons as codes (then append Arrow)."""
    if batch.ids_hex is None or batch.label_codes is None or batch.reason_codes is None:
        return None
    n = len(batch)
    distinct, trace_codes = _distinct_traces(batch.traces, n)
    buffers = [
        batch.ids_hex,
        np.asarray(batch.label_codes, dtype=np.int16).tobytes(),
        np.asarray(batch.reason_codes, dtype=np.int16).tobytes(),
        np.asarray(batch.abstained, dtype=np.uint8).tobytes(),
        trace_codes.tobytes(),
    ]
    widths: list[int | None] = []
    for values, names in (
        (batch.probabilities, batch.label_names),
        (batch.inputs, batch.feature_names),
    ):
        if values is None:
            widths.append(None)
            continue
        if not isinstance(values, np.ndarray) or values.shape != (n, len(names)):
            return None  # rows as lists may miss values: Arrow holds them as null
        flat = np.ascontiguousarray(values, dtype=np.float32)
        widths.append(len(names))
        buffers.append(flat.tobytes())
    header = orjson.dumps(
        {
            "n": n,
            "created_at": int(batch.created_at.timestamp() * 1_000_000),
            "versions": [batch.model_version, batch.policy_version, batch.context],
            "labels": batch.label_names,
            "reasons": batch.reason_names,
            "traces": distinct,
            "widths": widths,
        },
        default=_plain,
        option=_ROW_RECORD_OPTIONS,
    )
    return b"".join([_COLUMN_HEADER.pack(len(header)), header, *buffers])


_COLUMN_HEADER = struct.Struct("<I")


def _distinct_traces(
    traces: Sequence[Any] | None, n: int
) -> tuple[list[Any], np.ndarray]:
    """Each distinct trace object once, and per row the index of its trace (-1:
    none). Rows that one stage treated alike share one trace object (a context's
    priors act on every row with one entry): written once, not once per row."""
    if traces is None:
        return [], np.full(n, -1, dtype=np.int32)
    first = traces[0]
    if first is not None and all(t is first for t in traces):
        return [first], np.zeros(n, dtype=np.int32)
    distinct: list[Any] = []
    seen: dict[int, int] = {}
    codes = []
    for t in traces:
        if t is None:
            codes.append(-1)
            continue
        code = seen.get(id(t))
        if code is None:
            code = seen[id(t)] = len(distinct)
            distinct.append(t)
        codes.append(code)
    return distinct, np.array(codes, dtype=np.int32)


class ColumnsRecord:
    """A columns record (`column_record`) read back column by column: a column is
    decoded the first time it is asked for, then kept. A reader that wants the
    ids and probabilities never decodes the traces (turning each distinct trace
    back into its JSON text costs more than all the other columns together)."""

    def __init__(self, record: bytes | memoryview, schema: pa.Schema):
        data = memoryview(record)
        (length,) = _COLUMN_HEADER.unpack_from(data)
        at = _COLUMN_HEADER.size + length
        self._head = orjson.loads(data[_COLUMN_HEADER.size : at])
        self._data = data
        self.schema = schema
        n = self.num_rows = int(self._head["n"])
        layout: list[tuple[str, Any, int]] = [
            ("id", np.uint8, 32 * n),
            ("label", np.int16, n),
            ("reason", np.int16, n),
            ("abstained", np.uint8, n),
            ("trace", np.int32, n),
        ]
        for name, width in zip(
            (PROBABILITIES, INPUTS), self._head["widths"], strict=True
        ):
            if width is not None:
                layout.append((name, np.float32, n * width))
        #: Each raw buffer's (offset, dtype, count) in the record.
        self._spans: dict[str, tuple[int, Any, int]] = {}
        for name, dtype, count in layout:
            self._spans[name] = (at, dtype, count)
            at += np.dtype(dtype).itemsize * count
        self._columns: dict[str, pa.Array] = {}

    def _raw(self, name: str, rows: np.ndarray | None) -> np.ndarray:
        """A raw buffer (all rows, or these), as a copy: the record's bytes sit
        at any offset in the file, Arrow and numpy want theirs aligned."""
        at, dtype, count = self._spans[name]
        view = np.frombuffer(self._data, dtype=dtype, count=count, offset=at)
        if rows is None:
            return view.copy()
        return view.reshape(self.num_rows, -1)[rows].reshape(-1)

    def column(self, name: str) -> pa.Array:
        """One column, decoded now or earlier."""
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = self._decode(name, None)
        return column

    def _decode(self, name: str, rows: np.ndarray | None) -> pa.Array:
        """Column `name` of every row, or of these rows only."""
        head = self._head
        n = self.num_rows if rows is None else len(rows)
        if name == "id":
            return _hex_ids(self._raw("id", rows), n)
        if name == "created_at":
            return _stamps(head["created_at"], n)
        if name in _VERSIONS:
            return _repeat(head["versions"][_VERSIONS.index(name)], n)
        if name in ("label", "reason"):
            return _coded(head[f"{name}s"], self._raw(name, rows))
        if name == "trace":
            # Only the traces these rows point to become JSON text.
            traces = head["traces"]
            codes = self._raw("trace", rows)
            texts: list[str | None] = [None] * len(traces)
            used = codes[(codes >= 0) & (codes < len(traces))]
            for code in np.unique(used).tolist():
                texts[code] = orjson.dumps(traces[code]).decode()
            return _coded(texts, codes)
        if name == "abstained":
            return pa.array(self._raw("abstained", rows).astype(bool))
        width = self.schema.field(name).type.list_size
        return _float_rows(self._raw(name, rows).reshape(n, width), width)

    def take(self, rows: Sequence[int] | np.ndarray) -> pa.RecordBatch:
        """These rows, every column: only they are decoded (a column decoded
        earlier is taken from)."""
        at = np.asarray(rows, dtype=np.int64)
        columns = [
            self._columns[name].take(pa.array(at))
            if name in self._columns
            else self._decode(name, at)
            for name in self.schema.names
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def batch(self, columns: Sequence[str] | None = None) -> pa.RecordBatch:
        """The record's rows: every column of its schema, or these."""
        schema = self.schema if columns is None else select_schema(self.schema, columns)
        return pa.RecordBatch.from_arrays(
            [self.column(name) for name in schema.names], schema=schema
        )


_VERSIONS = ("model_version", "policy_version", "context")


def select_schema(schema: pa.Schema, columns: Sequence[str]) -> pa.Schema:
    """`schema`'s fields among `columns` (in the schema's order), metadata kept."""
    wanted = set(columns)
    return pa.schema([f for f in schema if f.name in wanted], metadata=schema.metadata)


def _coded(names: Sequence[str | None], codes: np.ndarray) -> pa.Array:
    """Codes into `names` as a string column (a code out of range is null)."""
    valid = (codes >= 0) & (codes < len(names))
    indices = pa.array(np.where(valid, codes, 0), mask=~valid)
    return pa.array(names or [None], _STR).take(indices)


def rows_to_record_batch(
    records: Sequence[bytes | memoryview], schema: pa.Schema
) -> pa.RecordBatch:
    """Row records (`row_record`) of one segment as one record batch of its
    `schema`, in order."""
    # Each document is taken apart as soon as it is parsed, into flat lists of
    # strings and floats: keeping thousands of parsed documents alive would make
    # every garbage-collector pass walk all of them.
    ids: list[str] = []
    counts: list[int] = []
    stamps: list[int] = []
    versions: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    labels: list[Any] = []
    abstained: list[Any] = []
    reasons: list[Any] = []
    traces: list[str | None] = []
    floats: dict[int, tuple[list[Any], list[bool]]] = {}
    widths = {}
    for i, name in ((9, PROBABILITIES), (10, INPUTS)):
        if name in schema.names:
            floats[i] = ([], [])
            widths[i] = schema.field(name).type.list_size
    for record in records:
        doc = orjson.loads(record)
        n = len(doc[0])
        ids += doc[0]
        counts.append(n)
        stamps.append(doc[1])
        for column, value in zip(versions, doc[2:5], strict=True):
            column.append(value)
        labels += doc[5]
        abstained += doc[6]
        reasons += doc[7]
        if doc[8] is None:
            traces += [None] * n
        else:
            traces += [None if t is None else orjson.dumps(t).decode() for t in doc[8]]
        for i, (values, missing) in floats.items():
            for row in doc[i] if doc[i] is not None else [None] * n:
                missing.append(row is None)
                values += [None] * widths[i] if row is None else row
    repeats = np.array(counts, dtype=np.int64)
    total = len(ids)

    def per_record(values: list[Any]) -> pa.Array:
        held = np.empty(len(values), dtype=object)
        held[:] = values
        return pa.array(np.repeat(held, repeats), _STR)

    time_us = np.repeat(np.array(stamps, dtype=np.int64), repeats)
    columns: list[pa.Array] = [
        pa.array(ids, _STR),
        pa.Array.from_buffers(_TIME, total, [None, pa.py_buffer(time_us)]),
        *(per_record(v) for v in versions),
        pa.array(labels, _STR),
        pa.array(abstained, pa.bool_()),
        pa.array(reasons, _STR),
        pa.array(traces, _STR),
    ]
    for i, (values, missing) in floats.items():
        child = pa.array(values, pa.float32())
        mask = pa.array(missing) if any(missing) else None
        columns.append(pa.FixedSizeListArray.from_arrays(child, widths[i], mask=mask))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _ids(ids: Sequence[str], ids_hex: bytes | None = None) -> pa.Array:
    joined = ids_hex if ids_hex is not None else "".join(ids).encode()
    if len(joined) != 32 * len(ids):  # not all ours (tests may name rows)
        return pa.array(ids, _STR)
    return _hex_ids(joined, len(ids))


def _hex_ids(joined: Any, n: int) -> pa.Array:
    """`n` 32-character ids held back to back in `joined` as a string column."""
    offsets = np.arange(n + 1, dtype=np.int32) * 32
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(joined))


def _stamps(stamp_us: int, n: int) -> pa.Array:
    """One `created_at` (microseconds) for `n` rows."""
    return pa.Array.from_buffers(
        _TIME, n, [None, pa.py_buffer(np.full(n, stamp_us, dtype=np.int64))]
    )


@lru_cache(maxsize=256)
def _repeat(value: str | None, n: int) -> pa.Array:
    """`value` n times, built from buffers (no Python list of n items). Cached:
    Arrow arrays are immutable, and a worker logs the same versions and a few
    batch sizes over and over (single rows above all)."""
    if value is None:
        return pa.nulls(n, _STR)
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def _traces(traces: Any, n: int) -> pa.Array:
    if traces is None:
        return _repeat(None, n)
    return pa.array(
        [None if t is None else orjson.dumps(t).decode() for t in traces], _STR
    )


def _float_rows(values: Any, width: int) -> pa.Array:
    """(n, width) values as a fixed-size-list float32 column; None is null."""
    if isinstance(values, np.ndarray):
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        child = pa.Array.from_buffers(
            pa.float32(), flat.size, [None, pa.py_buffer(flat)]
        )
        return pa.FixedSizeListArray.from_arrays(child, width)
    rows = list(values)
    mask = [r is None for r in rows]
    child = pa.array(
        [v for r in rows for v in ([None] * width if r is None else r)], pa.float32()
    )
    return pa.FixedSizeListArray.from_arrays(
        child, width, mask=pa.array(mask) if any(mask) else None
    )
