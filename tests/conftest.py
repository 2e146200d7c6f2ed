"""Fixtures shared by every test folder: a clean environment, the default pack, and
the real service started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ServiceProcess, running

pytest_plugins = ["tests.dbservers"]


@pytest.fixture(autouse=True)
def _clean_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's FLYWHEEL_* settings."""
    for key in list(os.environ):
        if key.startswith("FLYWHEEL_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def default_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from packs.build_default import build_default_pack

    out = tmp_path_factory.mktemp("packs") / "penguins"
    build_default_pack(out)
    return out


@pytest.fixture(scope="session")
def running_service(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    """One real `bentoml serve` (SQLite store) shared by read-mostly HTTP tests."""
    with running(tmp_path_factory.mktemp("service"), default_pack) as svc:
        yield svc
