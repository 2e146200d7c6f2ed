"""The prediction log over NATS JetStream: every replica publishes, one writer stores.

    replica ─ LogPublisher.publish(batch_id, rows) ─► stream (file storage, R1 or R3)
              one Arrow IPC batch per message,        duplicate window drops a
              Nats-Msg-Id = batch id                  message id seen before
                                                        │ durable pull consumer
                                                        ▼
              LogWriter: decode ─► sink(batch_id, rows) ─► ack

What each step promises:
- `publish` returns once the stream has stored the message (on a majority of its
  replicas for R3). A publish that times out, for instance while a killed node's
  stream leader is being replaced, is sent again with the same id; the stream
  stores it once whichever attempt got through.
- The writer acks a message only after the sink returned, so a writer that dies
  in between gets the message again: sinks must be idempotent by batch id
  (`ParquetDirectorySink` writes `<batch_id>.parquet` once, by rename).

Off by default (`LogStreamSettings.enabled`); the transport does not know what a
row holds: any Arrow table travels.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import pyarrow as pa
import pyarrow.parquet as pq
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

T = TypeVar("T")
Sink = Callable[[str, pa.Table], None]
"""Stores one batch; called again with the same id after a redelivery."""

MSG_ID_HEADER = "Nats-Msg-Id"
#: Empty or failed fetches (0.5 s each) in a row after which the writer subscribes
#: again.
IDLE_FETCHES = 10
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class LogStreamSettings(BaseModel):
    enabled: bool = False
    """Publish answered rows to NATS JetStream (a writer then stores them)."""
    servers: list[str] = ["nats://127.0.0.1:4222"]
    """NATS server URLs; list every node of a cluster so a client survives one."""
    stream: str = "FLYWHEEL_LOG"
    """JetStream stream holding the log's messages."""
    subject: str = "flywheel.log"
    """Subject the replicas publish to (the stream's only subject)."""
    replicas: int = Field(1, ge=1, le=5)
    """Copies the stream keeps: 3 on a 3-node cluster survives one node's loss."""
    duplicate_window_s: float = Field(120.0, gt=0)
    """How long the stream remembers message ids to drop re-sent batches."""
    consumer: str = "log-writer"
    """Durable pull consumer the writer reads through (one for all writers)."""
    ack_wait_s: float = Field(30.0, gt=0)
    """A delivered message not acked in this time is delivered again."""
    publish_timeout_s: float = Field(2.0, gt=0)
    """Longest one publish attempt waits for the stream's acknowledgement."""
    publish_attempts: int = Field(10, ge=1)
    """Attempts (same message id) before a publish gives up."""


def encode_batch(table: pa.Table) -> bytes:
    """One Arrow IPC stream holding the table (schema and record batches)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_batch(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(payload).read_all()


class ParquetDirectorySink:
    """Writes each batch to `<dir>/<batch_id>.parquet` once (rename makes it atomic;
    a batch already there is left as it is)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, batch_id: str) -> Path:
        if not _SAFE_ID.match(batch_id):
            raise ValueError(f"batch id {batch_id!r} is not [A-Za-z0-9_-]{{1,128}}")
        return self.directory / f"{batch_id}.parquet"

    def __call__(self, batch_id: str, table: pa.Table) -> None:
        final = self.path_for(batch_id)
        if final.exists():
            return
        partial = final.with_suffix(f".{os.getpid()}.partial")
        pq.write_table(table, partial)
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _EventLoopThread:
    """An asyncio loop in a daemon thread, so that threaded code can use nats-py."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=name, daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


async def _connect(settings: LogStreamSettings) -> Client:
    return await nats.connect(
        servers=settings.servers,
        connect_timeout=2,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
    )


async def ensure_stream(js: JetStreamContext, settings: LogStreamSettings) -> None:
    """Create the stream if it does not exist (an existing one is kept as is)."""
    try:
        await js.stream_info(settings.stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(
        StreamConfig(
            name=settings.stream,
            subjects=[settings.subject],
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window_s,
        )
    )


class LogPublisher:
    """Publishes log batches from any thread; `publish` blocks until stored."""

    def __init__(self, settings: LogStreamSettings):
        self.settings = settings
        self._loop = _EventLoopThread("log-publisher")
        try:
            self._nc: Client = self._loop.run(_connect(settings), timeout_s=30)
        except BaseException:
            self._loop.close()
            raise
        try:
            self._js = self._nc.jetstream()
            self._loop.run(ensure_stream(self._js, settings), timeout_s=30)
        except BaseException:
            # A client left behind would reconnect forever in its thread.
            self.close()
            raise

    def publish(self, batch_id: str, table: pa.Table) -> int:
        """Store one batch in the stream; returns its stream sequence (the first
        one's, if the stream had it already)."""
        payload = encode_batch(table)
        return self._loop.run(self._publish(batch_id, payload))

    async def _publish(self, batch_id: str, payload: bytes) -> int:
        s = self.settings
        for attempt in range(1, s.publish_attempts + 1):
            try:
                ack = await self._js.publish(
                    s.subject,
                    payload,
                    timeout=s.publish_timeout_s,
                    stream=s.stream,
                    headers={MSG_ID_HEADER: batch_id},
                )
                return int(ack.seq)
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                # Leader election, a reconnect: the same id is safe to send again.
                if attempt == s.publish_attempts:
                    raise
                log.info("publish of %s failed (%s); retrying", batch_id, exc)
                await asyncio.sleep(min(0.1 * attempt, 1.0))
        raise AssertionError("unreachable")

    def close(self) -> None:
        try:
            self._loop.run(_closed(self._nc), timeout_s=15)
        finally:
            self._loop.close()


class LogWriter:
    """The one consumer: fetches batches, hands each to the sink, then acks it."""

    def __init__(
        self, settings: LogStreamSettings, sink: Sink, *, fetch_batch: int = 32
    ):
        self.settings = settings
        self.sink = sink
        self.fetch_batch = fetch_batch
        self.written = 0
        """Batches handed to the sink and acked by this writer."""
        self._loop = _EventLoopThread("log-writer")
        self._stop = asyncio.Event()
        self._task: Future[None] | None = None

    def start(self) -> LogWriter:
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop.loop)
        return self

    async def _run(self) -> None:
        nc = await _connect(self.settings)
        try:
            while not self._stop.is_set():
                try:
                    sub = await self._subscribe(nc.jetstream())
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    # A cluster still electing its leaders answers nothing yet.
                    log.info("log consumer not ready (%s); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                await self._consume(sub)
        finally:
            await _closed(nc)

    async def _subscribe(
        self, js: JetStreamContext
    ) -> JetStreamContext.PullSubscription:
        s = self.settings
        await ensure_stream(js, s)
        return await js.pull_subscribe(
            s.subject,
            durable=s.consumer,
            stream=s.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=s.ack_wait_s, max_deliver=-1
            ),
        )

    async def _consume(self, sub: JetStreamContext.PullSubscription) -> None:
        """Fetch and store until stopped; returns (to subscribe afresh) after
        `IDLE_FETCHES` empty or failed fetches in a row: after a node's loss the
        consumer's new leader may not answer a subscription made before it."""
        idle = 0
        while not self._stop.is_set() and idle < IDLE_FETCHES:
            try:
                messages = await sub.fetch(self.fetch_batch, timeout=0.5)
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
                idle += 1
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.info("fetch failed (%s); retrying", exc)
                idle += 1
                await asyncio.sleep(0.2)
                continue
            idle = 0
            for msg in messages:
                if self._stop.is_set():
                    return  # not acked: delivered again to the next writer
                await self._store(msg)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _store(self, msg: Msg) -> None:
        batch_id = (msg.headers or {}).get(MSG_ID_HEADER)
        if batch_id is None:
            log.error("log message without %s; terminated", MSG_ID_HEADER)
            await msg.term()
            return
        try:
            # The sink does file I/O: keep it off the event loop.
            await asyncio.to_thread(self.sink, batch_id, decode_batch(msg.data))
        except Exception:
            # Not acked: it comes again (after a pause), and the sink decides.
            log.exception("sink failed for batch %s; redelivering", batch_id)
            await _retrying(lambda: msg.nak(delay=0.5))
            return
        await _retrying(msg.ack_sync)
        self.written += 1

    def stop(self) -> None:
        """Stop fetching; a batch handed to the sink but not acked comes again to
        the next writer. Waits up to 30 s, then cancels the consumer."""
        self._loop.loop.call_soon_threadsafe(self._stop.set)
        try:
            if self._task is not None:
                try:
                    self._task.result(timeout=30)
                except concurrent.futures.TimeoutError:
                    log.warning("log consumer did not stop in 30 s; cancelled")
                    self._task.cancel()
                    with contextlib.suppress(
                        concurrent.futures.CancelledError,
                        concurrent.futures.TimeoutError,
                    ):
                        self._task.result(timeout=10)
        finally:
            self._loop.close()


async def _closed(nc: Client) -> None:
    """Drain and close a client, bounded: a client still reconnecting to a lost
    node may never finish draining, and one left open reconnects forever."""
    try:
        await asyncio.wait_for(nc.drain(), timeout=5)
    except Exception:
        log.info("nats drain did not finish; closing")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=5)


async def _retrying(ack: Callable[[], Awaitable[object]], attempts: int = 5) -> None:
    """Ack, retrying through a reconnect; an ack that never lands means a
    redelivery, which the idempotent sink absorbs."""
    for attempt in range(1, attempts + 1):
        try:
            await ack()
            return
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            if attempt == attempts:
                log.warning("ack failed for good (%s): the batch comes again", exc)
                return
            await asyncio.sleep(0.1)
