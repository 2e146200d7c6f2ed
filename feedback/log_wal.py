"""Write-ahead segments: their record format, and reading them while they grow.

A write-ahead segment (`.wal`) is a file magic, then framed records, each written
whole by one system call:

    header   payload length (u32), CRC-32 of kind and payload (u32), kind (1 byte)
    payload  by kind:
               S  the segment's Arrow schema (an IPC schema message): first
               R  a few rows as one orjson document (`log_segments.row_record`):
                  what a small request appends, a few microseconds to build
               C  many rows as raw column buffers and a small header
                  (`log_segments.column_record`): what a large request appends
               A  many rows as an Arrow IPC record-batch message: a large
                  request whose rows cannot be a columns record (sampled rows,
                  rows with missing values), and earlier versions' large appends
               E  the end: the writer closed the segment, nothing follows

Rows and columns records become Arrow only when read (runs of rows records
convert together), so the request path costs one `orjson.dumps` and one write
for a single row, a few buffer copies and one write for a large batch.

A record whose header or payload is incomplete (the writer is in the middle of an
append) or whose checksum does not match (a writer died inside an append, or a
machine crash left the tail unwritten) ends the read there, never with an error;
`WalTail` resumes from the last whole record the next time, so a reader following
an open segment only ever parses what was appended since. A writer that fails an
append starts a new segment, so a bad record is only ever the last one.

Segments written by earlier versions (`.arrows`, a plain Arrow IPC stream) are
still read the same way.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from feedback.log_segments import ColumnsRecord, rows_to_record_batch, select_schema

MAGIC = b"FLYWAL1\n"
HEADER = struct.Struct("<IIc")
SCHEMA, ROWS, COLUMNS, ARROW, END = b"S", b"R", b"C", b"A", b"E"
ARROW_STREAM_SUFFIX = ".arrows"


def frame(kind: bytes, payload: bytes | pa.Buffer | memoryview) -> bytes:
    """The header of a record of `kind` holding `payload` (written before it)."""
    return HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(kind)), kind)


class WalTail:
    """The record batches of one write-ahead segment, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self.schema: pa.Schema | None = None
        self.parts: list[pa.RecordBatch | ColumnsRecord] = []
        """What was read, in order: record batches, and columns records (decoded
        column by column as they are asked for)."""
        self.ended = False  # the end record was read: nothing follows
        self._offset = 0
        self._arrow_stream = path.name.endswith(ARROW_STREAM_SUFFIX)

    def refresh(self) -> list[pa.RecordBatch | ColumnsRecord]:
        """Read what was appended since the last call; returns the new parts."""
        if self.ended:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        read = self._arrow_messages if self._arrow_stream else self._records
        new, consumed = read(memoryview(data))
        self._offset += consumed
        self.parts.extend(new)
        return new

    def _records(
        self, data: memoryview
    ) -> tuple[list[pa.RecordBatch | ColumnsRecord], int]:
        at = 0
        if self._offset == 0:
            if len(data) < len(MAGIC):
                return [], 0
            if data[: len(MAGIC)] != MAGIC:
                self.ended = True  # not a segment of ours: nothing to read
                return [], 0
            at = len(MAGIC)
        new: list[pa.RecordBatch | ColumnsRecord] = []
        rows: list[bytes] = []  # a run of rows records, converted together
        consumed = at
        while at + HEADER.size <= len(data):
            length, crc, kind = HEADER.unpack_from(data, at)
            start, end = at + HEADER.size, at + HEADER.size + length
            if end > len(data):
                break  # being appended: read it whole next time
            payload = data[start:end]
            if zlib.crc32(payload, zlib.crc32(kind)) != crc:
                break  # a torn last record
            if kind != ROWS and rows and self.schema is not None:
                new.append(rows_to_record_batch(rows, self.schema))
                rows = []
            if kind == ROWS and self.schema is not None:
                rows.append(payload.tobytes())
            elif kind == COLUMNS and self.schema is not None:
                new.append(ColumnsRecord(payload, self.schema))
            elif kind == ARROW and self.schema is not None:
                new.append(pa.ipc.read_record_batch(pa.py_buffer(payload), self.schema))
            elif kind == SCHEMA:
                self.schema = pa.ipc.read_schema(pa.py_buffer(payload))
            elif kind == END:
                self.ended = True
                consumed = end
                break
            at = consumed = end
        if rows and self.schema is not None:
            new.append(rows_to_record_batch(rows, self.schema))
        return new, consumed

    def _arrow_messages(
        self, data: memoryview
    ) -> tuple[list[pa.RecordBatch | ColumnsRecord], int]:
        source = pa.BufferReader(pa.py_buffer(data))
        reader = pa.ipc.MessageReader.open_stream(source)
        new: list[pa.RecordBatch | ColumnsRecord] = []
        consumed = 0
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                self.ended = source.tell() >= 8 and consumed < len(data)
                break
            except (pa.ArrowInvalid, OSError):
                break  # a message cut short: read it whole next time
            if message is None:
                break
            if message.type == "schema":
                self.schema = pa.ipc.read_schema(message)
            elif message.type == "record batch" and self.schema is not None:
                new.append(pa.ipc.read_record_batch(message, self.schema))
            consumed = source.tell()
        return new, consumed

    def table(self, columns: Sequence[str] | None = None) -> pa.Table | None:
        """Every row read so far as one table, with every column or these (None
        before the schema)."""
        if self.schema is None:
            return None
        if columns is None:
            return pa.Table.from_batches(
                [batch_of(p) for p in self.parts], schema=self.schema
            )
        schema = select_schema(self.schema, columns)
        return pa.Table.from_batches(
            [batch_of(p, schema.names) for p in self.parts], schema=schema
        )


def batch_of(
    part: pa.RecordBatch | ColumnsRecord, columns: Sequence[str] | None = None
) -> pa.RecordBatch:
    """A part of a segment as a record batch: every column, or these."""
    if isinstance(part, ColumnsRecord):
        return part.batch(columns)
    return part if columns is None else part.select(list(columns))


def rows_of(
    part: pa.RecordBatch | ColumnsRecord, rows: Sequence[int] | np.ndarray
) -> pa.RecordBatch:
    """These rows of a part of a segment, every column."""
    if isinstance(part, ColumnsRecord):
        return part.take(rows)
    return part.take(pa.array(np.asarray(rows, dtype=np.int64)))


def read_wal(path: Path) -> pa.Table | None:
    """A whole write-ahead segment as a table (None when it holds no schema)."""
    tail = WalTail(path)
    tail.refresh()
    return tail.table()
