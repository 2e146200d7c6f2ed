"""A replica that cannot load what its deployment's row names keeps serving the old
pack, says so (`follow_failure`, the callback the metric hangs on), and catches up
once it can. Two served states on one real database with separate model stores,
as two replicas with their own BentoML homes have."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.db import SessionFactory, make_engine, migrate, session_factory
from packs.loader import POLICY_FILE
from packs.model_store import PackStore
from service.served import FollowFailure, ServedState
from service.settings import PROJECT_ROOT, DeploymentSettings, Settings

DEFAULT_POLICY = (PROJECT_ROOT / "policies" / "default.yaml").read_text()


@pytest.fixture()
def sessions(db_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _replica(
    tmp_path: Path, pack: Path, name: str, sessions: SessionFactory
) -> tuple[ServedState, PackStore]:
    store = PackStore.at(tmp_path / f"store-{name}")
    settings = Settings(
        data_dir=tmp_path / f"data-{name}",
        pack_dir=pack,
        deployment=DeploymentSettings(name="shared"),
    )
    return ServedState(settings, sessions=sessions, store=store), store


def test_a_replica_that_cannot_load_the_new_pack_keeps_the_old_and_says_so(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory
) -> None:
    a, store_a = _replica(tmp_path, default_pack, "a", sessions)
    b, store_b = _replica(tmp_path, default_pack, "b", sessions)
    seen: list[FollowFailure | None] = []
    b.on_follow(seen.append)
    old_versions = b.current.versions
    candidate = shutil.copytree(default_pack, tmp_path / "candidate")
    # Another pack digest (the default pack already carries the default policy).
    (candidate / POLICY_FILE).write_text(DEFAULT_POLICY + "\n# the candidate\n")
    stored = store_a.add(candidate)
    a.serve_pack(stored)  # reaches A's store only

    for _ in range(3):  # every poll tries again, and reports it once
        assert b.follow() is False
    assert b.current.versions == old_versions
    failure = b.follow_failure
    assert failure is not None and failure.pack_tag == stored.tag
    assert stored.tag.split(":")[1] in failure.error
    assert seen == [failure]

    store_b.add(candidate)  # the pack reaches B
    assert b.follow() is True
    assert b.current.pack_tag == stored.tag and b.follow_failure is None
    assert seen == [failure, None]
