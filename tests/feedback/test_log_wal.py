"""The write-ahead segment format: rows records (small requests), columns records
(large ones) and Arrow records (large ones that cannot be columns) read back as
the same rows, mixed in one segment; a torn or damaged last record is ignored,
never an error; readers follow an open segment of mixed records; segments of the
earlier Arrow-stream format are still read."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from feedback import log_compactor, prediction_log
from feedback.log_batch import LogBatch
from feedback.log_reader import PredictionLogReader
from feedback.log_segments import (
    ColumnsRecord,
    column_record,
    list_segments,
    row_record,
    rows_to_record_batch,
    schema_for,
    segment_name,
    to_record_batch,
    wal_name,
)
from feedback.log_wal import HEADER, MAGIC, WalTail, read_wal
from feedback.models import utcnow
from feedback.prediction_log import ROW_RECORD_MAX_ROWS, PredictionLog, WriterOptions
from tests.feedback.helpers import batch_from_record, batch_of, prediction


def _rows(batch: LogBatch) -> list[dict[str, object]]:
    return to_record_batch(batch, schema_for(batch)).to_pylist()


@pytest.mark.parametrize(
    "batch",
    [
        batch_of(1),
        batch_of(7, acted_rows=[0, 3]),
        batch_of(5, store_inputs=False, acted_rows=[2], context=None),
        batch_from_record(prediction(label=None)),
        batch_from_record(
            prediction(inputs={"bill_length_mm": 39.1, "bill_depth_mm": None})
        ),
    ],
    ids=["one-row", "traces", "no-inputs", "abstained-record", "missing-value"],
)
def test_rows_records_convert_to_the_arrow_batch_of_the_same_rows(
    batch: LogBatch,
) -> None:
    schema = schema_for(batch)
    other = batch_of(2) if schema == schema_for(batch_of(2)) else batch
    converted = rows_to_record_batch([row_record(batch), row_record(other)], schema)
    assert converted.schema == schema
    assert converted.to_pylist() == _rows(batch) + _rows(other)


@pytest.mark.parametrize(
    "batch",
    [
        batch_of(ROW_RECORD_MAX_ROWS + 1),
        batch_of(1000, acted_rows=[0, 3, 999]),
        batch_of(40, store_inputs=False, acted_rows=[2], context=None),
        batch_of(1),
    ],
    ids=["plain", "traces", "no-inputs-no-context", "one-row"],
)
def test_columns_records_convert_to_the_arrow_batch_of_the_same_rows(
    batch: LogBatch,
) -> None:
    schema = schema_for(batch)
    record = column_record(batch)
    assert record is not None
    converted = ColumnsRecord(record, schema).batch()
    assert converted.schema == schema
    assert converted.to_pylist() == _rows(batch)
    assert converted.column("label")[0].as_py() is None
    assert converted.column("reason")[0].as_py() == "low_confidence"


def test_a_trace_shared_by_rows_is_written_once_and_read_back_on_each() -> None:
    """A context's priors act on every row with one entry: the record holds that
    trace once, and every row reads it back (rows with their own trace too)."""
    shared = [{"stage": "priors", "acted": True, "context": "Biscoe"}]
    own = [{"stage": "output_bounds", "acted": True, "row": 5}]
    traces = [shared] * 300
    traces[5], traces[7] = own, None
    batch = replace(batch_of(300), traces=traces)
    record = column_record(batch)
    assert record is not None and record.count(b'"context":"Biscoe"') == 1
    converted = ColumnsRecord(record, schema_for(batch)).batch()
    assert converted.to_pylist() == _rows(batch)
    assert converted.column("trace")[7].as_py() is None
    assert '"row":5' in converted.column("trace")[5].as_py()


def test_a_batch_without_codes_or_with_missing_values_is_no_columns_record() -> None:
    assert column_record(batch_of(50, coded=False)) is None
    coded = batch_of(50)
    assert isinstance(coded.inputs, np.ndarray)
    inputs: list[list[float | None]] = coded.inputs.tolist()
    inputs[3][1] = None
    assert column_record(replace(coded, inputs=inputs)) is None
    assert column_record(replace(coded, inputs=coded.inputs[:, :2])) is None


def test_a_slice_of_a_batch_keeps_its_codes_in_step() -> None:
    batch = batch_of(60, acted_rows=[0, 45])
    for part in (batch.head(10), batch.rows()[45]):
        record = column_record(part)
        assert record is not None
        assert ColumnsRecord(record, schema_for(part)).batch().to_pylist() == (
            _rows(part)
        )


def _mixed_segment(log_dir: Path) -> tuple[Path, list[LogBatch], list[int]]:
    """A closed-by-kill segment holding, in order: a 1-row rows record, a large
    columns record, a large Arrow record, two rows records; returns its path,
    the batches and the file size after each append."""
    log = PredictionLog(log_dir, WriterOptions(compact=False))
    large = ROW_RECORD_MAX_ROWS + 1
    batches = [
        batch_of(1),
        batch_of(large, acted_rows=[1]),
        batch_of(large, coded=False),
        batch_of(3),
        batch_of(1),
    ]
    sizes = []
    for b in batches:
        log.submit_batch(b)
        assert log._segment is not None
        sizes.append(log._segment.size)
    (f,) = list_segments(log_dir)
    assert _kinds(f.path.read_bytes()) == [b"S", b"R", b"C", b"A", b"R", b"R"]
    return f.path, batches, sizes


def test_a_segment_of_mixed_records_reads_back_every_row_in_order(
    tmp_path: Path,
) -> None:
    path, batches, _ = _mixed_segment(tmp_path)
    table = read_wal(path)
    assert table is not None
    assert table.to_pylist() == [row for b in batches for row in _rows(b)]


@pytest.mark.parametrize(
    "columns",
    [["id"], ["id", "abstained", "probabilities"], ["trace", "inputs", "label"]],
)
def test_some_columns_of_a_mixed_segment_read_as_the_whole_one_selected(
    tmp_path: Path, columns: list[str]
) -> None:
    path, _, _ = _mixed_segment(tmp_path)
    whole = WalTail(path)
    whole.refresh()
    some = WalTail(path)
    some.refresh()
    full = whole.table()
    part = some.table(columns)
    assert full is not None and part is not None
    # In the segment's column order, with its labels and features.
    order = [c for c in full.column_names if c in columns]
    assert part.column_names == order
    assert part.schema.metadata == full.schema.metadata
    assert part.to_pylist() == full.select(order).to_pylist()
    # Then every column, from the same parts.
    assert some.table() == full


def test_rows_taken_from_a_columns_record_are_those_of_the_whole_record() -> None:
    batch = batch_of(300, acted_rows=[1, 5, 7, 299])
    schema = schema_for(batch)
    record = column_record(batch)
    assert record is not None
    rows = [299, 0, 5, 6, 5]
    whole = ColumnsRecord(record, schema).batch()
    taken = ColumnsRecord(record, schema).take(rows)
    assert taken.schema == schema
    assert taken.to_pylist() == whole.take(pa.array(rows)).to_pylist()


def test_a_torn_last_record_is_ignored_until_it_is_whole(tmp_path: Path) -> None:
    """Cut the segment at every byte of its last record (a writer killed inside
    an append, or a reader racing one): the rows before it read back, no error."""
    path, batches, sizes = _mixed_segment(tmp_path / "log")
    data = path.read_bytes()
    before = [row for b in batches[:-1] for row in _rows(b)]
    cut = tmp_path / "cut.wal"
    for end in range(sizes[-2], sizes[-1]):
        cut.write_bytes(data[:end])
        table = read_wal(cut)
        assert table is not None and table.to_pylist() == before, end
    cut.write_bytes(data)
    assert read_wal(cut).num_rows == len(before) + 1  # type: ignore[union-attr]


@pytest.mark.parametrize("damage", ["flipped-byte", "zeroed-tail"])
def test_a_damaged_last_record_is_ignored(tmp_path: Path, damage: str) -> None:
    """A machine crash can leave the last record's bytes unwritten (zeros) or
    wrong: its checksum fails and the read ends before it."""
    path, batches, sizes = _mixed_segment(tmp_path / "log")
    data = bytearray(path.read_bytes())
    if damage == "flipped-byte":
        data[-3] ^= 0xFF
    else:
        data[sizes[-2] + HEADER.size :] = bytes(sizes[-1] - sizes[-2] - HEADER.size)
    broken = tmp_path / "broken.wal"
    broken.write_bytes(bytes(data))
    table = read_wal(broken)
    assert table is not None
    assert table.to_pylist() == [row for b in batches[:-1] for row in _rows(b)]


def test_a_file_that_is_not_a_segment_reads_as_empty(tmp_path: Path) -> None:
    junk = tmp_path / "wal_0000000000000_x.1.wal"
    junk.write_bytes(b"not a segment at all, longer than the magic")
    assert read_wal(junk) is None
    short = tmp_path / "short.wal"
    short.write_bytes(MAGIC[:3])
    assert read_wal(short) is None


def test_readers_follow_an_open_segment_of_mixed_records(tmp_path: Path) -> None:
    """Every row is found, counted and in the window once `submit_batch`
    returned, whichever record kind carried it."""
    log = PredictionLog(tmp_path)
    reader = PredictionLogReader(tmp_path)
    sizes = [1, 1000, 3, 1, ROW_RECORD_MAX_ROWS, ROW_RECORD_MAX_ROWS + 1, 1]
    total = 0
    for n in sizes:
        batch = batch_of(n, acted_rows=[0])
        log.submit_batch(batch)
        total += n
        for pid in (batch.ids[0], batch.ids[-1]):
            row = reader.get(pid)
            assert row is not None and row.id == pid
        assert reader.count_since(utcnow() - timedelta(minutes=1)) == total
    (f,) = list_segments(tmp_path)
    assert f.is_wal
    table = reader.rows_since(utcnow() - timedelta(minutes=1), columns=["id"])
    assert table.num_rows == total
    assert log.close()
    (compacted,) = list_segments(tmp_path)
    assert not compacted.is_wal
    assert PredictionLogReader(tmp_path).count_since(utcnow() - timedelta(1)) == total


def test_the_first_request_row_reads_back_identically_from_every_record_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coded = batch_of(3, acted_rows=[1])
    plain = replace(coded, label_codes=None)
    found = []
    kinds = []
    # A columns record, an Arrow record, a rows record.
    for name, batch, limit in (("c", coded, 0), ("a", plain, 0), ("r", coded, 10)):
        monkeypatch.setattr(prediction_log, "ROW_RECORD_MAX_ROWS", limit)
        log = PredictionLog(tmp_path / name, WriterOptions(compact=False))
        log.submit_batch(batch)
        found.append(PredictionLogReader(tmp_path / name).get(batch.ids[1]))
        assert log._segment is not None
        kinds.append(_kinds(log._segment.path.read_bytes())[-1])
        log.close()
    assert kinds == [b"C", b"A", b"R"]
    assert found[0] is not None and found[0] == found[1] == found[2]


def _kinds(data: bytes) -> list[bytes]:
    """The kinds of a segment's records, in order."""
    kinds, at = [], len(MAGIC)
    while at + HEADER.size <= len(data):
        length, _, kind = HEADER.unpack_from(data, at)
        kinds.append(kind)
        at += HEADER.size + length
    return kinds


def test_a_segment_of_the_earlier_arrow_stream_format_is_read_and_compacted(
    tmp_path: Path,
) -> None:
    batch = batch_of(5)
    schema = schema_for(batch)
    ms = int(batch.created_at.timestamp() * 1000)
    legacy = tmp_path / f"wal_{ms:013d}_old-host.1.abcd.1.arrows"
    with pa.OSFile(str(legacy), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
        w.write_batch(to_record_batch(batch, schema))
    reader = PredictionLogReader(tmp_path)
    assert reader.get(batch.ids[4]) is not None
    target = log_compactor.compact_segment(legacy, row_group_rows=1024)
    assert target is not None and target.name.endswith("_old-host.1.abcd.1.parquet")
    assert not legacy.exists()
    assert PredictionLogReader(tmp_path).get(batch.ids[4]) is not None
    shutil.rmtree(tmp_path)


def test_single_rows_are_appended_as_rows_records(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, WriterOptions(compact=False))
    log.submit_batch(batch_of(1))
    assert log._segment is not None
    data = log._segment.path.read_bytes()
    assert _kinds(data) == [b"S", b"R"]
    assert np.isclose(read_wal(log._segment.path)["inputs"][0][0].as_py(), 39.1)  # type: ignore[index]
    log.close()


def test_segments_of_one_millisecond_are_listed_whatever_their_kind(
    tmp_path: Path,
) -> None:
    # A writer's new write-ahead segment can start in the millisecond another
    # writer's compacted segment starts and ends in.
    ms = 1_796_595_973_088
    names = [
        segment_name(ms, ms, "host.1.aa.1"),
        wal_name(ms, "host.1.aa.3"),
        segment_name(ms, ms + 5, "host.1.aa.2"),
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [f.path.name for f in list_segments(tmp_path)] == sorted(names)
