"""Fixtures for the reliability tests: an open service shared by the folder, and
PostgreSQL databases of their own for services that a test kills or cuts off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dbservers import create_database, drop_database
from tests.reliability.helpers import serving
from tests.servers import ServiceProcess

#: Reports per minute on the open service: low, so that a limit is reachable.
OPEN_REPORTS_PER_MINUTE = 5


@pytest.fixture(scope="session")
def open_service(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    """A service with no API key (SQLite store), shared by tests that leave the
    served policy as it was."""
    with serving(
        tmp_path_factory.mktemp("open-service"),
        default_pack,
        FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE=str(OPEN_REPORTS_PER_MINUTE),
    ) as svc:
        yield svc


@pytest.fixture
def own_postgres(postgres_server: str) -> Iterator[str]:
    """A database of the test's own on the PostgreSQL server, dropped afterwards."""
    url = create_database(postgres_server)
    try:
        yield url
    finally:
        drop_database(url)
