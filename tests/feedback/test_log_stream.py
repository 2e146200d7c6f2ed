"""The prediction log over NATS JetStream, against real servers: the machine's
nats-server on 127.0.0.1:4222, and a throwaway 3-node cluster (Debian's binary, free
loopback ports) with an R3 stream losing a node mid-stream. No acknowledged row is
lost, none is written twice."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedback.log_stream import (
    LogPublisher,
    LogStreamSettings,
    LogWriter,
    ParquetDirectorySink,
    _connect,
    decode_batch,
    encode_batch,
)
from tests.dbservers import free_port

LOCAL_NATS = ("127.0.0.1", 4222)
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
ROWS_PER_BATCH = 20


def _batch(index: int) -> pa.Table:
    return pa.table(
        {
            "prediction_id": [uuid.uuid4().hex for _ in range(ROWS_PER_BATCH)],
            "batch": pa.array([index] * ROWS_PER_BATCH, pa.int32()),
            "p": pa.array([0.5] * ROWS_PER_BATCH, pa.float32()),
        }
    )


def _unique_settings(servers: list[str], **kw: object) -> LogStreamSettings:
    tag = uuid.uuid4().hex[:10]
    return LogStreamSettings(
        enabled=True,
        servers=servers,
        stream=f"TEST_LOG_{tag}",
        subject=f"test.{tag}.log",
        ack_wait_s=2,
        **kw,  # type: ignore[arg-type]
    )


def _stream_messages(settings: LogStreamSettings) -> int:
    async def count() -> int:
        nc = await _connect(settings)
        try:
            info = await nc.jetstream().stream_info(settings.stream)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def _delete_stream(settings: LogStreamSettings) -> None:
    async def delete() -> None:
        nc = await _connect(settings)
        try:
            await nc.jetstream().delete_stream(settings.stream)
        finally:
            await nc.close()

    with contextlib.suppress(Exception):
        asyncio.run(delete())


def _written(directory: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted(directory.glob("*.parquet"))}


def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _assert_each_row_once(written: dict[str, pa.Table], acked: set[str]) -> None:
    assert acked <= set(written), f"lost: {sorted(acked - set(written))[:5]}"
    ids = [i for t in written.values() for i in t.column("prediction_id").to_pylist()]
    assert len(ids) == len(set(ids)) == ROWS_PER_BATCH * len(written)


def test_a_batch_survives_arrow_ipc_encoding() -> None:
    table = _batch(7)
    assert decode_batch(encode_batch(table)).equals(table)


def test_the_sink_refuses_ids_that_are_not_file_names(tmp_path: Path) -> None:
    sink = ParquetDirectorySink(tmp_path)
    with pytest.raises(ValueError, match="batch id"):
        sink("../escape", _batch(0))


# --- the machine's server --------------------------------------------------------


@pytest.fixture
def local_stream() -> Iterator[LogStreamSettings]:
    try:
        socket.create_connection(LOCAL_NATS, timeout=1).close()
    except OSError:
        pytest.skip("no nats-server on 127.0.0.1:4222 (apt-get install nats-server)")
    settings = _unique_settings(["nats://127.0.0.1:4222"])
    yield settings
    _delete_stream(settings)


def test_resent_batches_are_stored_and_written_once(
    local_stream: LogStreamSettings, tmp_path: Path
) -> None:
    publisher = LogPublisher(local_stream)
    try:
        acked = set()
        for i in range(30):
            publisher.publish(f"b{i:04d}", _batch(i))
            acked.add(f"b{i:04d}")
        # A publisher that did not see its acks sends the same ids again.
        first = publisher.publish("b0003", _batch(3))
        assert publisher.publish("b0003", _batch(3)) == first
        assert _stream_messages(local_stream) == 30
    finally:
        publisher.close()
    writer = LogWriter(local_stream, ParquetDirectorySink(tmp_path)).start()
    try:
        _wait_for(lambda: len(_written(tmp_path)) == 30, 30, "30 batches written")
    finally:
        writer.stop()
    _assert_each_row_once(_written(tmp_path), acked)


def test_a_writer_failing_before_its_ack_writes_nothing_twice(
    local_stream: LogStreamSettings, tmp_path: Path
) -> None:
    store = ParquetDirectorySink(tmp_path)
    calls: dict[str, int] = {}

    def crash_after_first_write(batch_id: str, table: pa.Table) -> None:
        calls[batch_id] = calls.get(batch_id, 0) + 1
        store(batch_id, table)
        if calls[batch_id] == 1:
            raise OSError("writer died between the write and the ack")

    publisher = LogPublisher(local_stream)
    try:
        for i in range(10):
            publisher.publish(f"c{i:04d}", _batch(i))
    finally:
        publisher.close()
    writer = LogWriter(local_stream, crash_after_first_write).start()
    try:
        _wait_for(lambda: writer.written == 10, 30, "10 batches acked")
    finally:
        writer.stop()
    assert all(n >= 2 for n in calls.values()), calls  # each came back
    _assert_each_row_once(_written(tmp_path), {f"c{i:04d}" for i in range(10)})


# --- a throwaway 3-node cluster ---------------------------------------------------


class NatsCluster:
    """Three JetStream nodes on free loopback ports, each with its own store dir."""

    def __init__(self, root: Path, size: int = 3):
        self.root = root
        self.names = [f"n{i}" for i in range(1, size + 1)]
        self.ports = {n: free_port() for n in self.names}
        self.cluster_ports = {n: free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{self.ports[n]}" for n in self.names]

    def start(self) -> None:
        for name in self.names:
            routes = ",".join(
                f"nats://127.0.0.1:{self.cluster_ports[o]}"
                for o in self.names
                if o != name
            )
            log = (self.root / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                [
                    NATS_SERVER,
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.ports[name]),
                    "-n",
                    name,
                    "-js",
                    "-sd",
                    str(self.root / name),
                    "--cluster_name",
                    "throwaway",
                    "--cluster",
                    f"nats://127.0.0.1:{self.cluster_ports[name]}",
                    "--routes",
                    routes,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for name in self.names:
            _wait_for(lambda n=name: _listening(self.ports[n]), 20, f"{name} up")

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if not Path(NATS_SERVER).is_file():
        pytest.skip(f"{NATS_SERVER} missing: apt-get install nats-server")
    cluster = NatsCluster(tmp_path / "nats")
    cluster.root.mkdir()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _stream_leader(settings: LogStreamSettings) -> str:
    async def leader() -> str:
        nc = await _connect(settings)
        try:
            info = await nc.jetstream().stream_info(settings.stream)
            assert info.cluster is not None and info.cluster.leader
            return str(info.cluster.leader)
        finally:
            await nc.close()

    return asyncio.run(leader())


def _publisher_when_ready(settings: LogStreamSettings) -> LogPublisher:
    """The cluster elects its meta leader a few seconds after start: until then
    creating the stream fails."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return LogPublisher(settings)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_an_r3_stream_losing_its_leader_mid_stream_loses_and_doubles_nothing(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    settings = _unique_settings(nats_cluster.urls, replicas=3, publish_attempts=60)
    publisher = _publisher_when_ready(settings)
    out = tmp_path / "segments"
    writer = LogWriter(settings, ParquetDirectorySink(out)).start()
    acked: set[str] = set()
    killed = None
    try:
        for i in range(120):
            if i == 40:
                killed = _stream_leader(settings)
                nats_cluster.kill(killed)
            batch_id = f"r{i:04d}"
            publisher.publish(batch_id, _batch(i))  # raises if never stored
            acked.add(batch_id)
        _wait_for(lambda: acked <= set(_written(out)), 120, "every acked batch")
    finally:
        publisher.close()
        writer.stop()
    assert killed is not None
    survivors = [u for n, u in zip(nats_cluster.names, nats_cluster.urls, strict=True)
                 if n != killed]  # fmt: skip
    assert _stream_leader(settings.model_copy(update={"servers": survivors})) != killed
    written = _written(out)
    assert set(written) == acked
    _assert_each_row_once(written, acked)
    counted = _stream_messages(settings.model_copy(update={"servers": survivors}))
    assert counted == len(acked)  # retried publishes were stored once
