"""Reading the prediction log: by id, the latest window, rows or counts since a
time, and purging by retention. One reader serves every worker's files.

Segments are pruned by the time range in their names (a prediction id starts with
its millisecond). Closed segments are Parquet, whose footers (row-group id ranges)
are cached, since they never change; open write-ahead segments of every writer
in the directory (this worker's and the others') are followed incrementally
(`feedback.log_wal.WalTail`), so a report arriving right after its answer finds
the row whichever worker answered it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedback.log_segments import (
    ID_RANGES_KEY,
    INPUTS,
    PROBABILITIES,
    ColumnsRecord,
    SegmentFile,
    feature_names,
    id_millis,
    label_names,
    list_segments,
)
from feedback.log_wal import WalTail, rows_of


@dataclass(frozen=True)
class LoggedPrediction:
    """One logged row, as a report or the admin page needs it."""

    id: str
    created_at: datetime
    model_version: str
    policy_version: str | None
    context: str | None
    inputs: dict[str, float | None] | None
    outputs: dict[str, Any]
    """label, abstained, reason, probabilities (by label)."""
    label: str | None
    abstained: bool
    trace: Any


@dataclass(frozen=True)
class SegmentRows:
    """What `segments_since` read of one segment."""

    file: SegmentFile
    table: pa.Table
    """Every row of the segment, in its order (positions are row numbers)."""
    newer: np.ndarray | None
    """Which rows were created after the time asked for (None: all of them)."""
    newest: datetime
    """When its newest row was created (of a compacted segment: by its name)."""


class _WalIndex:
    """A followed write-ahead segment: its batches and each batch's id range."""

    def __init__(self, path: Path):
        self.tail = WalTail(path)
        self.lo: list[str] = []
        self.hi: list[str] = []

    def refresh(self) -> None:
        for part in self.tail.refresh():
            ids = part.column("id")
            if len(ids):
                bounds = pc.min_max(ids)
                self.lo.append(bounds["min"].as_py())
                self.hi.append(bounds["max"].as_py())
            else:
                self.lo.append("~")
                self.hi.append("")

    def find(self, prediction_id: str) -> pa.Table | None:
        for i in range(len(self.lo) - 1, -1, -1):
            if self.lo[i] <= prediction_id <= self.hi[i]:
                part = self.tail.parts[i]
                at = pc.index(part.column("id"), prediction_id).as_py()
                if at >= 0:
                    return pa.Table.from_batches([rows_of(part, [at])])
        return None


class PredictionLogReader:
    """Reads every segment under `log_dir` (all writers)."""

    def __init__(self, log_dir: Path, *, sample_rate: float = 1.0):
        self.log_dir = Path(log_dir)
        self.sample_rate = sample_rate
        """What the writers keep (named in a not-found error)."""
        self._lock = threading.Lock()
        self._footers: dict[Path, pq.FileMetaData] = {}
        self._ranges: dict[Path, list[tuple[str, str]]] = {}
        self._wals: dict[Path, _WalIndex] = {}

    # --- by id ----------------------------------------------------------------------

    def get(self, prediction_id: str) -> LoggedPrediction | None:
        """The logged row with this id, or None."""
        ms = id_millis(prediction_id)
        if ms is None:
            return None
        files = [f for f in list_segments(self.log_dir) if f.may_hold(ms)]
        # Newest first: a report usually follows its answer closely.
        for f in sorted(files, key=lambda f: f.start_ms, reverse=True):
            try:
                table = (
                    self._find_in_wal(f, prediction_id)
                    if f.is_wal
                    else self._find_in_segment(f, prediction_id)
                )
            except FileNotFoundError:  # compacted or purged meanwhile
                table = self._retry_after_compaction(prediction_id, ms)
            if table is not None and table.num_rows:
                return _as_prediction(table)
        return None

    def _retry_after_compaction(self, prediction_id: str, ms: int) -> pa.Table | None:
        for f in list_segments(self.log_dir):
            if not f.is_wal and f.may_hold(ms):
                table = self._find_in_segment(f, prediction_id)
                if table is not None:
                    return table
        return None

    def _find_in_wal(self, f: SegmentFile, prediction_id: str) -> pa.Table | None:
        with self._lock:
            index = self._wals.get(f.path)
            if index is None:
                index = self._wals[f.path] = _WalIndex(f.path)
            if not f.path.exists():
                del self._wals[f.path]
                raise FileNotFoundError(f.path)
            index.refresh()
            return index.find(prediction_id)

    def _footer(self, path: Path) -> pq.FileMetaData:
        footer = self._footers.get(path)
        if footer is None:
            footer = self._footers[path] = pq.read_metadata(path)
        return footer

    def _id_ranges(self, path: Path) -> list[tuple[str, str]]:
        """(min, max) id of each row group (cached with the footer): from the
        file's metadata, or from the row groups' statistics in files written
        before it held them."""
        ranges = self._ranges.get(path)
        if ranges is None:
            footer = self._footer(path)
            raw = (footer.metadata or {}).get(ID_RANGES_KEY.encode())
            if raw is not None:
                ranges = [(low, high) for low, high in orjson.loads(raw)]
            else:
                ranges = []
                for g in range(footer.num_row_groups):
                    stats = footer.row_group(g).column(0).statistics
                    known = stats is not None and stats.has_min_max
                    ranges.append((stats.min, stats.max) if known else ("", "~"))
            self._ranges[path] = ranges
        return ranges

    def _find_in_segment(self, f: SegmentFile, prediction_id: str) -> pa.Table | None:
        footer = self._footer(f.path)
        groups = [
            g
            for g, (low, high) in enumerate(self._id_ranges(f.path))
            if low <= prediction_id <= high
        ]
        if not groups:
            return None
        parquet = pq.ParquetFile(f.path, metadata=footer)
        for g in groups:
            # One thread: a lookup reads one small row group, and threads only
            # contend with the request threads for the cores.
            group = parquet.read_row_group(g, use_threads=False)
            at = pc.index(group.column(0), prediction_id).as_py()
            if at >= 0:
                return group.slice(at, 1)
        return None

    # --- by time --------------------------------------------------------------------

    def _tables(
        self, files: Sequence[SegmentFile], columns: list[str] | None
    ) -> list[pa.Table]:
        tables = []
        for f in files:
            try:
                table = self._read(f, columns)
            except FileNotFoundError:
                continue
            if table is not None and table.num_rows:
                tables.append(table)
        return tables

    def _read(self, f: SegmentFile, columns: list[str] | None) -> pa.Table | None:
        if f.is_wal:
            with self._lock:
                index = self._wals.get(f.path)
                if index is None:
                    index = self._wals[f.path] = _WalIndex(f.path)
                index.refresh()
                table = index.tail.table(columns)
                gone = not index.tail.ended and not f.path.exists()
                if gone:
                    del self._wals[f.path]
            if gone:
                # Compacted since it was listed, perhaps before all of it was
                # read: its rows are in the Parquet file that replaced it.
                replacement = self._compacted(f)
                return None if replacement is None else self._read(replacement, columns)
            return table
        footer = self._footer(f.path)
        if columns is not None:
            names = footer.schema.to_arrow_schema().names
            columns = [c for c in columns if c in names]
        # The footer parsed once per file; one thread: the readers run beside
        # request threads, and a pool of decoding threads only contends with
        # them (a third less CPU per row measured on 250,000-row segments).
        parquet = pq.ParquetFile(f.path, metadata=footer)
        return parquet.read(columns=columns, use_threads=False)

    def _compacted(self, wal: SegmentFile) -> SegmentFile | None:
        """The Parquet segment a write-ahead segment was compacted into."""
        for f in list_segments(self.log_dir):
            if not f.is_wal and f.writer == wal.writer:
                return f
        return None

    def rows_since(
        self, since: datetime, *, columns: list[str] | None = None
    ) -> pa.Table:
        """Rows created at or after `since`, oldest first (as one Arrow table with
        the union of the segments' columns)."""
        ms = int(since.timestamp() * 1000)
        files = [f for f in list_segments(self.log_dir) if f.newer_than(ms)]
        stamp = pa.scalar(since.astimezone(UTC), pa.timestamp("us", tz="UTC"))
        parts = []
        for table in self._tables(files, columns and ["created_at", *columns]):
            part = table.filter(pc.greater_equal(table["created_at"], stamp))
            if part.num_rows:
                parts.append(part)
        return _sorted(_concat(parts))

    def segments_since(
        self,
        since: datetime,
        *,
        columns: list[str],
        cheaper: Sequence[str] = (),
    ) -> list[SegmentRows]:
        """Each segment that holds rows created after `since`: every row of it,
        in its order, with these `columns`, or the `cheaper` ones where a
        Parquet segment has them all, and which rows are that new."""
        ms = int(since.timestamp() * 1000)
        stamp = pa.scalar(since.astimezone(UTC), pa.timestamp("us", tz="UTC"))
        found = []
        for f in list_segments(self.log_dir):
            if not f.newer_than(ms):
                continue
            wanted = list(columns)
            if not f.is_wal and cheaper:
                with contextlib.suppress(FileNotFoundError):
                    names = self._footer(f.path).schema.to_arrow_schema().names
                    if all(c in names for c in cheaper):
                        wanted = list(cheaper)
            # A compacted segment that starts after `since` is new in every row:
            # its times need not be read.
            whole = f.end_ms is not None and f.start_ms > ms
            try:
                table = self._read(f, wanted if whole else ["created_at", *wanted])
            except FileNotFoundError:
                continue
            if table is None or not table.num_rows:
                continue
            if whole:
                assert f.end_ms is not None
                newest = datetime.fromtimestamp(f.end_ms / 1000, UTC)
                found.append(SegmentRows(f, table, None, newest))
                continue
            stamps = table["created_at"]
            newer = pc.greater(stamps, stamp).to_numpy(zero_copy_only=False)
            if newer.any():
                newest = pc.max(stamps).as_py().astimezone(UTC)
                found.append(
                    SegmentRows(f, table, None if newer.all() else newer, newest)
                )
        return found

    def predictions_at(
        self, f: SegmentFile, rows: np.ndarray
    ) -> list[LoggedPrediction]:
        """The rows of segment `f` at these positions (ascending, as
        `segments_since` read them), in that order; only they are decoded
        whole. [] when the segment is gone."""
        if not len(rows):
            return []
        if f.is_wal:
            with self._lock:
                index = self._wals.get(f.path)
                parts = None if index is None else list(index.tail.parts)
            if parts is not None:
                return _as_predictions(_rows_at(parts, rows))
            # Compacted since: its rows are in the Parquet file, in their order.
            replacement = self._compacted(f)
            if replacement is None:
                return []
            f = replacement
        try:
            return _as_predictions(self._row_groups_at(f, rows))
        except FileNotFoundError:
            return []

    def _row_groups_at(self, f: SegmentFile, rows: np.ndarray) -> pa.Table:
        """Rows of a Parquet segment by position, reading only their row groups."""
        footer = self._footer(f.path)
        sizes = np.array(
            [footer.row_group(g).num_rows for g in range(footer.num_row_groups)]
        )
        starts = np.concatenate([[0], np.cumsum(sizes)])
        rows = rows[rows < starts[-1]]
        if not len(rows):
            return pa.table({"id": pa.array([], pa.string())})
        group_of = np.searchsorted(starts, rows, side="right") - 1
        groups = np.unique(group_of)
        parquet = pq.ParquetFile(f.path, metadata=footer)
        table = parquet.read_row_groups(groups.tolist(), use_threads=False)
        # Where each group's rows start in the table read.
        read_starts = np.concatenate([[0], np.cumsum(sizes[groups])])
        local = rows - starts[group_of] + read_starts[np.searchsorted(groups, group_of)]
        return table.take(pa.array(local))

    def predictions_since(
        self, since: datetime, *, limit: int = 10_000
    ) -> list[LoggedPrediction]:
        """The first `limit` rows created after `since`, oldest first, each read
        with its own segment's labels and features."""
        ms = int(since.timestamp() * 1000)
        files = [f for f in list_segments(self.log_dir) if f.newer_than(ms)]
        stamp = pa.scalar(since.astimezone(UTC), pa.timestamp("us", tz="UTC"))
        order = [("created_at", "ascending"), ("id", "ascending")]
        parts: list[pa.Table] = []
        for table in self._tables(files, None):
            part = table.filter(pc.greater(table["created_at"], stamp))
            # Only a segment's first `limit` rows can be among the first `limit`
            # of all: rows are chosen in Arrow, and only those become objects.
            if part.num_rows > limit:
                part = part.take(pc.sort_indices(part, sort_keys=order)[:limit])
            if part.num_rows:
                parts.append(part)
        keys = [
            (created, pid, k, i)
            for k, part in enumerate(parts)
            for i, (created, pid) in enumerate(
                zip(
                    part["created_at"].to_pylist(),
                    part["id"].to_pylist(),
                    strict=True,
                )
            )
        ]
        keys.sort()
        return [_as_prediction(parts[k].slice(i, 1)) for _, _, k, i in keys[:limit]]

    def count_since(self, since: datetime) -> int:
        """Rows created at or after `since`."""
        ms = int(since.timestamp() * 1000)
        total = 0
        stamp = pa.scalar(since.astimezone(UTC), pa.timestamp("us", tz="UTC"))
        for f in list_segments(self.log_dir):
            if not f.newer_than(ms):
                continue
            if not f.is_wal and f.start_ms - 2_000 > ms:
                with contextlib.suppress(FileNotFoundError):
                    total += self._footer(f.path).num_rows
                continue
            for table in self._tables([f], ["created_at"]):
                total += (
                    pc.sum(pc.greater_equal(table["created_at"], stamp)).as_py() or 0
                )
        return total

    def latest(
        self,
        limit_rows: int,
        *,
        feature_names: Sequence[str],
        model_version: str | None = None,
    ) -> pa.Table:
        """The latest `limit_rows` rows (of `model_version` when given), oldest
        first, as `feature_table`s. Reads segments newest first until no older
        file can hold a row newer than the oldest kept."""
        files = sorted(
            list_segments(self.log_dir),
            key=lambda f: f.end_ms if f.end_ms is not None else 1 << 62,
            reverse=True,
        )
        parts: list[pa.Table] = []
        rows = 0
        oldest_kept: int | None = None
        for f in files:
            if (
                rows >= limit_rows
                and oldest_kept is not None
                and (f.end_ms is not None and f.end_ms + 2_000 < oldest_kept)
            ):
                break
            for table in self._tables([f], _WINDOW_COLUMNS):
                if model_version is not None:
                    table = table.filter(
                        pc.equal(table["model_version"], model_version)
                    )
                if not table.num_rows:
                    continue
                parts.append(feature_table(table, feature_names))
                rows += table.num_rows
                if rows >= limit_rows:
                    newest = _merged(parts).slice(max(rows - limit_rows, 0))
                    parts, rows = [newest], newest.num_rows
                    oldest_kept = (
                        int(newest["created_at"][0].value) // 1000 if rows else None
                    )
        if not parts:
            parts = [feature_table(_EMPTY, feature_names)]
        table = _merged(parts)
        return table.slice(max(table.num_rows - limit_rows, 0))

    # --- retention ------------------------------------------------------------------

    def purge(
        self, *, older_than_days: float | None, max_bytes: int | None = None
    ) -> int:
        """Delete closed segments wholly older than the retention, then the oldest
        closed segments while all of them together exceed `max_bytes`; returns the
        rows deleted. Retention works per segment: a segment is kept until its
        newest row expires."""
        deleted = 0
        closed = [f for f in list_segments(self.log_dir) if not f.is_wal]
        keep = []
        if older_than_days is not None:
            cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
            cutoff_ms = int(cutoff.timestamp() * 1000)
            for f in closed:
                if f.end_ms is not None and f.end_ms < cutoff_ms:
                    deleted += self._delete(f)
                else:
                    keep.append(f)
        else:
            keep = closed
        if max_bytes is not None:
            sizes = {f.path: _size(f.path) for f in keep}
            total = sum(sizes.values())
            for f in sorted(keep, key=lambda f: f.end_ms or 0):
                if total <= max_bytes:
                    break
                total -= sizes[f.path]
                deleted += self._delete(f)
        return deleted

    def _delete(self, f: SegmentFile) -> int:
        try:
            rows = self._footer(f.path).num_rows
            f.path.unlink()
        except FileNotFoundError:
            return 0
        self._footers.pop(f.path, None)
        self._ranges.pop(f.path, None)
        return rows


_EMPTY = pa.table(
    {
        "created_at": pa.array([], pa.timestamp("us", tz="UTC")),
        "model_version": pa.array([], pa.string()),
        "label": pa.array([], pa.string()),
    }
)


def _rows_at(
    parts: Sequence[pa.RecordBatch | ColumnsRecord], rows: np.ndarray
) -> pa.Table:
    """Rows of a write-ahead segment's parts by position in all of them, in
    that order (ascending); only those rows are decoded."""
    starts = np.cumsum([0] + [p.num_rows for p in parts])
    rows = rows[rows < starts[-1]]
    if not len(rows):
        return pa.table({"id": pa.array([], pa.string())})
    part_of = np.searchsorted(starts, rows, side="right") - 1
    return pa.Table.from_batches(
        [rows_of(parts[k], rows[part_of == k] - starts[k]) for k in np.unique(part_of)]
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _concat(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return pa.table({"created_at": pa.array([], pa.timestamp("us", tz="UTC"))})
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts, promote_options="permissive")


#: What a drift window reads of each segment.
_WINDOW_COLUMNS = ["created_at", "model_version", "label", INPUTS]


def _merged(parts: list[pa.Table]) -> pa.Table:
    """Segment tables as one, oldest first: in order of their first row, then
    sorted only if segments of several writers overlap in time."""
    parts = sorted(parts, key=lambda t: t["created_at"][0].value if t.num_rows else 0)
    return _sorted(_concat(parts))


def _sorted(table: pa.Table) -> pa.Table:
    if table.num_rows < 2:
        return table
    stamps = table["created_at"]
    if pc.all(pc.greater_equal(stamps[1:], stamps[:-1])).as_py():
        return table
    return table.sort_by([("created_at", "ascending")])


def _as_prediction(table: pa.Table) -> LoggedPrediction:
    return _as_predictions(table.slice(0, 1))[0]


def _as_predictions(table: pa.Table) -> list[LoggedPrediction]:
    labels = label_names(table.schema)
    features = feature_names(table.schema)
    return [_prediction(row, labels, features) for row in table.to_pylist()]


def _prediction(
    row: dict[str, Any], labels: list[str], features: list[str]
) -> LoggedPrediction:
    probabilities = row.get(PROBABILITIES)
    inputs = row.get(INPUTS)
    trace = row.get("trace")
    return LoggedPrediction(
        id=row["id"],
        created_at=row["created_at"].astimezone(UTC),
        model_version=row["model_version"],
        policy_version=row["policy_version"],
        context=row["context"],
        inputs=None
        if inputs is None
        else {n: _float(v) for n, v in zip(features, inputs, strict=True)},
        outputs={
            "label": row["label"],
            "abstained": bool(row["abstained"]),
            "reason": row["reason"],
            "probabilities": None
            if probabilities is None
            else {n: _float(v) for n, v in zip(labels, probabilities, strict=True)},
        },
        label=row["label"],
        abstained=bool(row["abstained"]),
        trace=None if trace is None else orjson.loads(trace),
    )


def _float(value: float | None) -> float | None:
    # float32 as stored, printed as the shortest decimal that reads back the same
    # (39.1, not 39.099998474121094).
    return None if value is None else float(str(np.float32(value)))


def feature_table(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """A segment's rows with one float32 column per feature in `names` (null where
    its inputs were not stored or it has no such feature), `label`, `created_at`
    and `model_version`: segments with different schemas concatenate in this form."""
    n = table.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "created_at": table["created_at"],
        "model_version": table["model_version"],
        "label": table["label"],
    }
    values = _input_matrix(table)
    at = {name: j for j, name in enumerate(feature_names(table.schema))}
    for name in names:
        if values is not None and name in at:
            columns[name] = pa.array(values[:, at[name]], pa.float32())
        else:
            columns[name] = pa.nulls(n, pa.float32())
    return pa.table(columns)


def _input_matrix(table: pa.Table) -> np.ndarray | None:
    """(n, d) float32 inputs of a segment table, NaN for rows without them."""
    if INPUTS not in table.column_names:
        return None
    width = len(feature_names(table.schema))
    column = table[INPUTS].combine_chunks()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    child = column.values.slice(column.offset * width, n * width)
    values = child.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, width)
    if column.null_count:
        values = values.copy()
        values[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return values


def window_frame(table: pa.Table, names: Sequence[str]) -> pd.DataFrame:
    """A `feature_table` as the drift job wants it: one float64 column per feature
    (NaN where missing), `predicted_label` (None when abstained), `created_at`."""
    n = table.num_rows
    data: dict[str, Any] = {}
    for name in names:
        column = table[name] if name in table.column_names else None
        data[name] = (
            np.full(n, np.nan)
            if column is None
            else column.to_numpy(zero_copy_only=False).astype(np.float64)
        )
    labels = np.empty(n, dtype=object)
    if n:
        # One Python string per distinct label, not per row.
        encoded = pc.dictionary_encode(table["label"]).combine_chunks()
        distinct = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
        codes = encoded.indices.fill_null(len(distinct) - 1)
        labels[:] = distinct[codes.to_numpy(zero_copy_only=False)]
    data["predicted_label"] = labels
    created = table["created_at"]
    data["created_at"] = pd.to_datetime(
        pc.cast(created, pa.int64()).to_numpy(zero_copy_only=False), unit="us", utc=True
    )
    return pd.DataFrame(data)
