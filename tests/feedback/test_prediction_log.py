"""The prediction log: rows readable as soon as `submit_batch` returns (by any
reader, from any writer's open segment), rotation and compaction to Parquet,
orphaned segments compacted, backpressure as a 503, sampling, the drift window,
rows and counts since a time, and retention by age and by bytes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from feedback import log_window, store
from feedback.errors import PredictionLogUnavailable, PredictionNotFound
from feedback.log_reader import PredictionLogReader
from feedback.log_segments import ID_RANGES_KEY, list_segments
from feedback.models import utcnow
from feedback.prediction_log import PredictionLog, WriterOptions
from tests.feedback.helpers import (
    ADELIE,
    FEATURES,
    LABELS,
    batch_of,
    log_predictions,
    prediction,
    submit_records,
)

ROOT = Path(__file__).resolve().parents[2]


def writer(log_dir: Path, **options: object) -> PredictionLog:
    return PredictionLog(log_dir, WriterOptions(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize("compacted", [False, True])
@pytest.mark.parametrize("store_inputs", [True, False])
def test_a_batch_reads_back_row_for_row(
    tmp_path: Path, store_inputs: bool, compacted: bool
) -> None:
    batch = batch_of(300, store_inputs=store_inputs, acted_rows=[0, 7])
    log = writer(tmp_path)
    assert log.submit_batch(batch) and log.written_total == 300
    if compacted:
        assert log.close()
        assert [f.is_wal for f in list_segments(tmp_path)] == [False]
    reader = PredictionLogReader(tmp_path)
    for i, pid in enumerate(batch.ids):
        row = reader.get(pid)
        assert row is not None and row.id == pid
        assert (row.model_version, row.policy_version, row.context) == (
            "pack-v1", "policy-1", "Biscoe",
        )  # fmt: skip
        assert row.created_at == batch.created_at
        assert row.label == batch.labels[i] and row.abstained == (i == 0)
        assert row.outputs == {
            "label": batch.labels[i],
            "abstained": i == 0,
            "reason": batch.reasons[i],
            "probabilities": dict(zip(LABELS, [0.9, 0.06, 0.04], strict=True)),
        }
        if store_inputs:
            expected = batch.inputs[i].tolist()  # type: ignore[index,union-attr]
            assert row.inputs is not None and list(row.inputs) == FEATURES
            assert np.float32(list(row.inputs.values())).tolist() == expected
        else:
            assert row.inputs is None
        assert row.trace == (batch.traces[i] if i in (0, 7) else None)  # type: ignore[index]
    assert reader.get("0" * 32) is None and reader.get("not-an-id") is None
    log.close()


def test_another_workers_reader_finds_rows_of_an_open_segment_at_once(
    tmp_path: Path,
) -> None:
    """Two writers (workers) share a directory; a third reader follows both open
    segments as they grow, and sees each row once `submit_batch` returned."""
    first, second = writer(tmp_path), writer(tmp_path)
    reader = PredictionLogReader(tmp_path)
    for round_ in range(5):
        a, b = batch_of(50), batch_of(1)
        first.submit_batch(a)
        second.submit_batch(b)
        for pid in (a.ids[0], a.ids[-1], b.ids[0]):
            row = reader.get(pid)
            assert row is not None, (round_, pid)
    assert len([f for f in list_segments(tmp_path) if f.is_wal]) == 2
    assert first.close() and second.close()
    assert reader.get(a.ids[3]) is not None  # now in a compacted segment


def test_segments_rotate_by_size_and_schema_and_compact_to_parquet(
    tmp_path: Path,
) -> None:
    log = writer(tmp_path, rotate_bytes=4096, row_group_rows=1024)
    batches = [batch_of(100) for _ in range(6)]
    for b in batches:
        log.submit_batch(b)
    log.submit_batch(batch_of(10, store_inputs=False))  # other columns
    log.rotate()
    log.compact_pending()
    files = list_segments(tmp_path)
    assert len(files) >= 6 and all(not f.is_wal for f in files)
    for f in files:
        table = pq.read_table(f.path)
        ms = (table["created_at"].cast("int64").to_numpy() // 1000).tolist()
        assert f.start_ms <= min(ms) and max(ms) <= f.end_ms  # type: ignore[operator]
    reader = PredictionLogReader(tmp_path)
    assert all(reader.get(b.ids[50]) is not None for b in batches)
    assert reader.count_since(utcnow() - timedelta(minutes=1)) == 610
    log.close()


@pytest.mark.skipif(
    sys.platform != "linux", reason="per-thread CPU priority exists on Linux only"
)
def test_the_background_compactor_runs_at_the_lowest_cpu_priority(
    tmp_path: Path,
) -> None:
    """Closed segments are compacted by their own thread, niced so that answers
    go first; the append path and the fsync thread keep their priority."""
    log = writer(tmp_path, rotate_bytes=4096).start()
    try:
        for _ in range(3):
            log.submit_batch(batch_of(100))
        log.rotate()
        compactor = log._compactor
        assert compactor is not None and compactor.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, compactor.native_id) == 19
        syncer = log._thread
        assert syncer is not None and syncer.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, syncer.native_id) == os.getpriority(
            os.PRIO_PROCESS, threading.get_native_id()
        )
        deadline = time.monotonic() + 10
        while any(f.is_wal for f in list_segments(tmp_path)):
            assert time.monotonic() < deadline, "closed segments not compacted"
            time.sleep(0.05)
    finally:
        assert log.close()
    assert list_segments(tmp_path) and not any(
        f.is_wal for f in list_segments(tmp_path)
    )


def _killed_writer(
    log_dir: Path, sizes: tuple[int, ...], *, options: str = "", started: str = ""
) -> list[str]:
    """Run a writer in a child process (`WriterOptions(options)`, then the
    `started` statement) that submits batches of `sizes` rows, prints each
    batch's last id once it is answered, and SIGKILLs itself; the lines printed."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from feedback.prediction_log import PredictionLog, WriterOptions
from tests.feedback.helpers import batch_of
log = PredictionLog(Path({str(log_dir)!r}), WriterOptions({options}))
{started}
for n in {sizes!r}:
    b = batch_of(n)
    log.submit_batch(b)
    print(b.ids[-1], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, done.stderr
    return done.stdout.split()


def _wal_count(log_dir: Path) -> int:
    return sum(f.is_wal for f in list_segments(log_dir))


def test_a_compactor_process_compacts_closed_segments_niced_and_stops_with_close(
    tmp_path: Path,
) -> None:
    """With `compaction_process`, closed segments are compacted by a process of
    the writer's own at the lowest CPU priority (no thread shares the writer's
    interpreter lock), every row reads back the same, and close() ends it after
    it compacted the last segment."""
    import psutil

    log = writer(tmp_path, rotate_bytes=4096, compaction_process=True).start()
    batches = [batch_of(100) for _ in range(4)]
    try:
        assert log._compactor is None
        process = log._compactor_process
        assert process is not None and process.pid is not None
        child = psutil.Process(process.pid)
        assert child.ppid() == os.getpid()
        for b in batches:
            log.submit_batch(b)
        log.rotate()
        deadline = time.monotonic() + 60
        while _wal_count(tmp_path) > 1:  # all but the open segment
            assert time.monotonic() < deadline, "closed segments not compacted"
            time.sleep(0.05)
        assert child.nice() == 19
        log.submit_batch(last := batch_of(50))
    finally:
        assert log.close()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert list_segments(tmp_path) and _wal_count(tmp_path) == 0
    reader = PredictionLogReader(tmp_path)
    for b in [*batches, last]:
        assert all(reader.get(pid) is not None for pid in b.ids[::25])
    assert reader.count_since(utcnow() - timedelta(minutes=1)) == 450


def test_a_compactor_process_outlives_no_writer_and_compacts_what_it_left(
    tmp_path: Path,
) -> None:
    """A writer killed with SIGKILL leaves its compactor: the compactor sees its
    parent gone, compacts the writer's open segment (its lock is free now) and
    exits; no answered row is lost."""
    import psutil

    compactor_pid, *answered = _killed_writer(
        tmp_path,
        (200, 1, 200, 1),
        options="compaction_process=True",
        started="log.start(); print(log._compactor_process.pid, flush=True)",
    )
    deadline = time.monotonic() + 60
    while psutil.pid_exists(int(compactor_pid)) and _wal_count(tmp_path):
        assert time.monotonic() < deadline, "the orphaned compactor did not finish"
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(int(compactor_pid)):
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(int(compactor_pid)).status() == psutil.STATUS_ZOMBIE:
                break
        assert time.monotonic() < deadline, "the compactor outlived its writer"
        time.sleep(0.1)
    assert _wal_count(tmp_path) == 0
    reader = PredictionLogReader(tmp_path)
    assert all(reader.get(pid) is not None for pid in answered)
    assert reader.count_since(utcnow() - timedelta(minutes=5)) == 402


def test_a_killed_writers_segment_is_read_then_compacted_by_another(
    tmp_path: Path,
) -> None:
    """A worker killed with SIGKILL leaves its open segment behind: every row it
    appended (large requests and single rows alike) is readable, and a living
    writer compacts the segment."""
    answered = _killed_writer(tmp_path, (200, 1, 200, 1, 1, 200, 1))
    last_id = answered[-1]
    (orphan,) = list_segments(tmp_path)
    assert orphan.is_wal
    reader = PredictionLogReader(tmp_path)
    assert all(reader.get(pid) is not None for pid in answered)
    assert reader.count_since(utcnow() - timedelta(minutes=5)) == 604
    survivor = writer(tmp_path, orphan_check_s=0.01).start()
    try:
        survivor._compact_orphans()
    finally:
        survivor.close()
    (compacted,) = list_segments(tmp_path)
    assert not compacted.is_wal
    assert PredictionLogReader(tmp_path).get(last_id) is not None


@pytest.mark.parametrize("policy", ["wait", "shed"])
def test_an_append_that_cannot_start_in_time_is_refused_not_skipped(
    tmp_path: Path, policy: str
) -> None:
    log = writer(tmp_path, on_slow_storage=policy, max_wait_s=0.05)
    held = threading.Event()
    release = threading.Event()

    def slow_storage() -> None:
        with log._lock:  # an append (or fsync) that takes long
            held.set()
            release.wait(10)

    thread = threading.Thread(target=slow_storage)
    thread.start()
    held.wait(10)
    batch = batch_of(5)
    try:
        with pytest.raises(PredictionLogUnavailable) as err:
            log.submit_batch(batch)
    finally:
        release.set()
        thread.join()
    assert err.value.status_code == 503
    assert err.value.headers()["Retry-After"] == "1"
    assert log.refused_total == 5
    assert PredictionLogReader(tmp_path).get(batch.ids[0]) is None
    log.submit_batch(batch)  # storage is back
    assert PredictionLogReader(tmp_path).get(batch.ids[0]) is not None
    log.close()


def test_a_failing_write_is_refused_and_the_log_recovers(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log = writer(log_dir, on_slow_storage="shed")
    log.submit_batch(batch_of(3))
    log.rotate()
    log.compact_pending()
    for f in list_segments(log_dir):
        f.path.unlink()
    log_dir.rmdir()  # the volume went away: a new segment cannot be created
    with pytest.raises(PredictionLogUnavailable, match="appending failed"):
        log.submit_batch(batch_of(3))
    log_dir.mkdir()
    batch = batch_of(3)
    log.submit_batch(batch)
    assert PredictionLogReader(log_dir).get(batch.ids[2]) is not None
    log.close()


def test_sampling_keeps_a_share_and_the_not_found_error_says_so(
    tmp_path: Path,
) -> None:
    log = writer(tmp_path, sample_rate=0.25)
    batch = batch_of(4000)
    log.submit_batch(batch)
    kept = log.written_total
    assert 800 < kept < 1200 and log.sampled_out_total == 4000 - kept
    reader = PredictionLogReader(tmp_path, sample_rate=0.25)
    missing = next(pid for pid in batch.ids if reader.get(pid) is None)
    with pytest.raises(PredictionNotFound, match=r"25% of answered rows"):
        store.get_prediction(reader, missing)
    log.close()


# --- reading the window, rows since, retention -------------------------------------


def test_window_holds_the_latest_rows_oldest_first_one_column_per_feature(
    tmp_path: Path,
) -> None:
    now = utcnow()
    rows = [
        prediction(
            created_at=now - timedelta(seconds=100 - i),
            inputs={**ADELIE, "bill_length_mm": float(i)},
            label="Gentoo" if i % 2 else "Adelie",
        )
        for i in range(100)
    ]
    rows.append(prediction(created_at=now, store_inputs=False, label=None))
    rows.append(prediction(created_at=now, model_version="other"))
    reader = log_predictions(tmp_path, rows)

    window = log_window.read_prediction_window(
        reader, limit_rows=11, model_version="pack-v1", feature_names=FEATURES
    )
    assert list(window.columns) == [*FEATURES, "predicted_label", "created_at"]
    assert len(window) == 11
    assert window["bill_length_mm"].tolist()[:10] == [float(i) for i in range(90, 100)]
    assert np.isnan(window["bill_length_mm"].iloc[-1])  # inputs not stored
    assert window["predicted_label"].iloc[-1] is None  # abstained
    assert window["created_at"].is_monotonic_increasing
    assert str(window["created_at"].dt.tz) == "UTC"
    everything = log_window.read_prediction_window(reader, limit_rows=1000)
    assert len(everything) == 102 and set(FEATURES) <= set(everything.columns)


def test_window_merges_segments_of_several_writers_by_time(tmp_path: Path) -> None:
    a, b = writer(tmp_path), writer(tmp_path)
    now = utcnow()
    for i in range(6):
        record = prediction(
            created_at=now - timedelta(seconds=60 - i),
            inputs={**ADELIE, "bill_length_mm": float(i)},
        )
        assert submit_records(a if i % 2 else b, [record])
    a.rotate()
    a.compact_pending()  # one compacted, one open
    window = log_window.read_prediction_window(
        PredictionLogReader(tmp_path), limit_rows=4, feature_names=FEATURES
    )
    assert window["bill_length_mm"].tolist() == [2.0, 3.0, 4.0, 5.0]
    a.close()
    b.close()


def test_rows_and_counts_since_a_time(tmp_path: Path) -> None:
    now = utcnow()
    rows = [prediction(created_at=now - timedelta(minutes=m)) for m in range(10)]
    reader = log_predictions(tmp_path, rows)
    since = now - timedelta(minutes=4, seconds=30)
    assert reader.count_since(since) == 5
    table = reader.rows_since(since, columns=["id", "label"])
    assert table.num_rows == 5
    assert set(table["id"].to_pylist()) == {r.id for r in rows[:5]}


def test_rows_since_are_the_oldest_first_limit_across_segments(
    tmp_path: Path,
) -> None:
    a, b = writer(tmp_path), writer(tmp_path)
    now = utcnow()
    records = [prediction(created_at=now - timedelta(seconds=60 - i)) for i in range(9)]
    for i, record in enumerate(records):
        assert submit_records(a if i % 3 else b, [record])
    a.rotate()
    a.compact_pending()  # a compacted segment, and two open ones
    reader = PredictionLogReader(tmp_path)
    since = now - timedelta(seconds=58, milliseconds=500)  # after the first two
    rows = reader.predictions_since(since, limit=4)
    assert [r.id for r in rows] == [r.id for r in records[2:6]]
    assert [r.id for r in reader.predictions_since(since)] == [
        r.id for r in records[2:]
    ]
    a.close()
    b.close()


def test_purge_deletes_segments_older_than_the_retention_then_beyond_the_bytes(
    tmp_path: Path,
) -> None:
    now = utcnow()
    log = writer(tmp_path)
    old = [prediction(created_at=now - timedelta(days=31)) for _ in range(12)]
    recent = [prediction(created_at=now - timedelta(days=29)) for _ in range(3)]
    newest = [prediction(created_at=now) for _ in range(2)]
    for group in (old, recent, newest):
        submit_records(log, group)
        log.rotate()
    log.close()
    reader = PredictionLogReader(tmp_path)
    assert store.purge_predictions_older_than(reader, 30) == 12
    assert store.purge_predictions_older_than(reader, 30) == 0
    assert reader.get(recent[0].id) is not None and reader.get(old[0].id) is None
    newest_bytes = max(f.path.stat().st_size for f in list_segments(tmp_path))
    assert store.purge_predictions_older_than(reader, None, max_bytes=newest_bytes) == 3
    assert reader.get(newest[1].id) is not None and reader.get(recent[0].id) is None


def test_lookups_use_the_id_ranges_a_segment_carries_and_files_without_them(
    tmp_path: Path,
) -> None:
    """A compacted segment names each row group's id range in its metadata;
    a Parquet segment written without it (earlier versions) is read by its
    row-group statistics instead."""
    log = writer(tmp_path, row_group_rows=256)
    batch = batch_of(1000)
    log.submit_batch(batch)
    assert log.close()
    (f,) = list_segments(tmp_path)
    footer = pq.read_metadata(f.path)
    ranges = orjson.loads(footer.metadata[ID_RANGES_KEY.encode()])
    assert ranges == [
        [min(batch.ids[i : i + 256]), max(batch.ids[i : i + 256])]
        for i in range(0, 1000, 256)
    ]
    assert ID_RANGES_KEY.encode() not in (pq.read_schema(f.path).metadata or {})
    assert PredictionLogReader(tmp_path).get(batch.ids[700]) is not None
    pq.write_table(pq.read_table(f.path), f.path, row_group_size=256)
    assert ID_RANGES_KEY.encode() not in (pq.read_metadata(f.path).metadata or {})
    assert PredictionLogReader(tmp_path).get(batch.ids[700]) is not None


def test_a_segment_compacted_while_readers_list_it_is_read_from_its_parquet_file(
    tmp_path: Path,
) -> None:
    """Between listing the files and reading one, its writer may compact it: the
    rows come from the Parquet file that replaced it, none is missed."""
    log = writer(tmp_path)
    batch = batch_of(50)
    log.submit_batch(batch)
    listed = list_segments(tmp_path)
    assert [f.is_wal for f in listed] == [True]
    assert log.close()  # compacted: the listed file is gone
    reader = PredictionLogReader(tmp_path)
    (table,) = reader._tables(listed, ["id"])
    assert table["id"].to_pylist() == list(batch.ids)
