"""Reading write-ahead segments: Arrow IPC streams that may still be growing.

A segment is read message by message; a message cut short (its writer is in the
middle of an append, or died inside one) ends the read there, and `WalTail`
resumes from the last whole message the next time, so a reader that follows an
open segment only ever parses what was appended since.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa


class WalTail:
    """The record batches of one write-ahead segment, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self.schema: pa.Schema | None = None
        self.batches: list[pa.RecordBatch] = []
        self.ended = False  # the end-of-stream marker was read: nothing follows
        self._offset = 0

    def refresh(self) -> list[pa.RecordBatch]:
        """Read what was appended since the last call; returns the new batches."""
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
        source = pa.BufferReader(pa.py_buffer(data))
        reader = pa.ipc.MessageReader.open_stream(source)
        new: list[pa.RecordBatch] = []
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
        self._offset += consumed
        self.batches.extend(new)
        return new

    def table(self) -> pa.Table | None:
        """Every batch read so far as one table (None before the schema)."""
        if self.schema is None:
            return None
        return pa.Table.from_batches(self.batches, schema=self.schema)


def read_wal(path: Path) -> pa.Table | None:
    """A whole write-ahead segment as a table (None when it holds no schema)."""
    tail = WalTail(path)
    tail.refresh()
    return tail.table()
