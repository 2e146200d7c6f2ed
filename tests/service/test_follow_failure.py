"""A replica that cannot load what its deployment's row names keeps serving the old
pack, says so (`follow_failure`, the callback the metric hangs on), and catches up
once it can; with a shared pack directory it takes a pack promoted elsewhere from
there. Two served states on one real database with separate model stores, as two
replicas with their own BentoML homes have."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.db import SessionFactory, make_engine, migrate, session_factory
from packs.loader import POLICY_FILE
from packs.model_store import PackStore, StoredPack
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
    tmp_path: Path,
    pack: Path,
    name: str,
    sessions: SessionFactory,
    shared_packs: Path | None = None,
) -> tuple[ServedState, PackStore]:
    store = PackStore.at(tmp_path / f"store-{name}")
    settings = Settings(
        data_dir=tmp_path / f"data-{name}",
        pack_dir=pack,
        deployment=DeploymentSettings(name="shared", shared_packs_dir=shared_packs),
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


def _candidate(tmp_path: Path, default_pack: Path) -> Path:
    candidate = shutil.copytree(default_pack, tmp_path / "candidate")
    (candidate / POLICY_FILE).write_text(DEFAULT_POLICY + "\n# the candidate\n")
    return candidate


def test_a_pack_served_through_one_replica_reaches_another_through_shared_packs(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory
) -> None:
    shared = tmp_path / "shared-packs"
    a, store_a = _replica(tmp_path, default_pack, "a", sessions, shared)
    b, store_b = _replica(tmp_path, default_pack, "b", sessions, shared)
    stored = store_a.add(_candidate(tmp_path, default_pack))
    a.serve_pack(stored)  # into A's store, and published

    assert b.follow() is True
    assert b.current.pack_tag == stored.tag and b.follow_failure is None
    assert b.current.pack_sha256 == stored.sha256
    assert store_b.open(stored.tag).path.is_relative_to(store_b.root)

    # A third replica started afterwards resumes the row from the shared packs.
    c, _ = _replica(tmp_path, default_pack, "c", sessions, shared)
    assert c.current.pack_tag == stored.tag


def test_a_changed_shared_copy_is_refused_and_the_old_pack_kept(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory
) -> None:
    shared = tmp_path / "shared-packs"
    a, store_a = _replica(tmp_path, default_pack, "a", sessions, shared)
    b, store_b = _replica(tmp_path, default_pack, "b", sessions, shared)
    old = b.current.pack_tag
    stored = store_a.add(_candidate(tmp_path, default_pack))
    a.serve_pack(stored)
    name, version = stored.tag.split(":")
    (shared / name / version / POLICY_FILE).write_text(DEFAULT_POLICY)

    assert b.follow() is False
    assert b.current.pack_tag == old
    failure = b.follow_failure
    assert failure is not None and "PackTampered" in failure.error
    assert not store_b._has(stored.tag)  # nothing changed entered B's store


def test_a_pack_not_in_the_shared_directory_is_reported_as_such(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory
) -> None:
    shared = tmp_path / "shared-packs"
    a, store_a = _replica(tmp_path, default_pack, "a", sessions, shared)
    b, _ = _replica(tmp_path, default_pack, "b", sessions, shared)
    stored = store_a.add(_candidate(tmp_path, default_pack))
    a.serve_pack(stored)
    name, version = stored.tag.split(":")
    shutil.rmtree(shared / name / version)

    assert b.follow() is False
    failure = b.follow_failure
    assert failure is not None and "PackNotShared" in failure.error
    assert str(shared) in failure.error
    # Published again (a replica serving it restarts, say), B catches up.
    a.shared.publish(StoredPack(stored.tag, stored.path, stored.sha256))
    assert b.follow() is True and b.current.pack_tag == stored.tag


def _follow_at(worker: ServedState, start: threading.Barrier) -> None:
    start.wait()
    worker.follow()


def test_workers_of_one_replica_fetch_a_shared_pack_at_once_without_a_false_alarm(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory
) -> None:
    shared = tmp_path / "shared-packs"
    a, store_a = _replica(tmp_path, default_pack, "a", sessions, shared)
    store_b = PackStore.at(tmp_path / "store-b")
    settings_b = Settings(
        data_dir=tmp_path / "data-b",
        pack_dir=default_pack,
        deployment=DeploymentSettings(name="shared", shared_packs_dir=shared),
    )
    # Four workers of replica B: one data dir, one model store.
    workers = [
        ServedState(settings_b, sessions=sessions, store=store_b) for _ in range(4)
    ]
    for round_ in range(3):
        candidate = shutil.copytree(default_pack, tmp_path / f"candidate-{round_}")
        (candidate / POLICY_FILE).write_text(f"{DEFAULT_POLICY}\n# {round_}\n")
        stored = store_a.add(candidate)
        a.serve_pack(stored)
        start = threading.Barrier(len(workers))
        threads = [
            threading.Thread(target=_follow_at, args=(w, start)) for w in workers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [w.follow_failure for w in workers] == [None] * len(workers)
        assert {w.current.pack_tag for w in workers} == {stored.tag}
