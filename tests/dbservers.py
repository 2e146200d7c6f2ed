"""Database servers for tests: a SQLite file, or a real PostgreSQL in its own database.

PostgreSQL comes from, in order:
1. `TEST_DATABASE_URL` (any database on the server; we create our own beside it),
2. the machine's server at 127.0.0.1:5432 (user postgres, trust auth),
3. a throwaway cluster started from Debian's binaries
   (`/usr/lib/postgresql/*/bin/initdb` + `pg_ctl`) on a free port in a temp dir.
With none of them, the PostgreSQL tests fail when `CI` is set (CI must never skip
them) and are skipped with the reason otherwise.

Each test session creates its own database (`feedback_test_<random>`) and drops it
at teardown; `db_url` gives every test an empty schema in it. Load these fixtures
with `pytest_plugins = ["tests.dbservers"]` in the root conftest.

For failure tests, `ThrowawayPostgres` is a cluster a test may stop and restart,
and `TcpProxy` a loopback proxy whose connections a test can cut: never stop the
machine's shared server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

LOCAL_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_PREFIX = "feedback_test_"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conninfo(url: str | URL) -> str:
    """libpq connection string for a SQLAlchemy URL."""
    u = make_url(url)
    parts = {
        "host": u.host or "127.0.0.1",
        "port": str(u.port or 5432),
        "user": u.username or "postgres",
        "dbname": u.database or "postgres",
    }
    if u.password:
        parts["password"] = u.password
    return " ".join(f"{k}={v}" for k, v in parts.items())


def with_database(url: str | URL, name: str) -> str:
    """The same server URL pointing at database `name` (psycopg 3 driver)."""
    u = make_url(url).set(drivername="postgresql+psycopg", database=name)
    return u.render_as_string(hide_password=False)


def reachable(url: str | URL, timeout_s: int = 2) -> bool:
    try:
        with psycopg.connect(_conninfo(url), connect_timeout=timeout_s):
            return True
    except psycopg.Error:
        return False


def _admin(url: str | URL) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5)


def create_database(server_url: str | URL, *, prefix: str = DB_PREFIX) -> str:
    """Create a uniquely named database on the server; returns its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


def drop_database(url: str | URL) -> None:
    """Drop the database a URL points at, disconnecting whoever still uses it."""
    name = make_url(url).database
    assert name and name.startswith(DB_PREFIX), f"refusing to drop {name!r}"
    with _admin(with_database(url, "postgres")) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_schema(url: str | URL) -> None:
    """Empty a test database: drop and recreate its `public` schema."""
    name = make_url(url).database
    assert name and name.startswith(DB_PREFIX), f"refusing to reset {name!r}"
    with _admin(url) as conn:
        # A connection a previous test left open mid-transaction would block the
        # DROP; in our own test database we may end it.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


# --- a cluster of our own ------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Newest Debian PostgreSQL bin directory holding initdb and pg_ctl."""
    candidates = sorted(
        (Path(p) for p in glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bin_dir in reversed(candidates):
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temp dir on a free loopback port.

    PostgreSQL refuses to run as root; as root, the binaries run as the `postgres`
    system user (Debian's package creates it) and the temp dir is handed to it.
    """

    def __init__(self, bin_dir: Path, *, port: int | None = None, fsync: bool = False):
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="pg-throwaway-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log}"
            )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'}"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL for the tests: {reason}")


def _need_bin_dir() -> Path:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        _unavailable(
            "TEST_DATABASE_URL is not set, nothing answers on 127.0.0.1:5432, and "
            "Debian's PostgreSQL binaries (/usr/lib/postgresql/*/bin) are missing: "
            "apt-get install postgresql"
        )
    assert bin_dir is not None
    return bin_dir


# --- a loopback proxy a test can cut -----------------------------------------------


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target`; `cut()` drops and refuses connections."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url_for(self, url: str) -> str:
        """`url` with host and port replaced by the proxy's."""
        u = make_url(url).set(host="127.0.0.1", port=self.port)
        return u.render_as_string(hide_password=False)

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server's `postgres` database that tests may create
    databases on (see the module docstring for where it comes from)."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        if not reachable(configured):
            pytest.fail(
                f"TEST_DATABASE_URL is set but unreachable: "
                f"{make_url(configured).render_as_string()}",
                pytrace=False,
            )
        yield with_database(configured, "postgres")
        return
    if reachable(LOCAL_SERVER_URL):
        yield LOCAL_SERVER_URL
        return
    cluster = ThrowawayPostgres(_need_bin_dir())
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A database of this test session's own, dropped at teardown."""
    url = create_database(postgres_server)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database per test: a SQLite file, or a fresh schema in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    reset_schema(url)
    yield url


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A started cluster of the test's own, which it may stop and start again."""
    cluster = ThrowawayPostgres(_need_bin_dir())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """(proxy, URL through it) for this session's test database."""
    u = make_url(postgres_url)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    try:
        yield proxy, proxy.url_for(postgres_url)
    finally:
        proxy.close()
