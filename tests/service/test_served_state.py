"""What a deployment serves: from the model store, chosen at start-up by settings or
resumed from its row in the SQL store, and kept apart from other deployments.

Real SQLite and PostgreSQL (`db_url`), a real model store, real packs; no server.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.db import SessionFactory, make_engine, migrate, session_factory
from guardrails.errors import PolicyInvalid
from guardrails.policy import Policy
from packs.errors import PackFileMissing, PackPolicyMissing
from packs.format import METADATA_FILE
from packs.loader import POLICY_FILE
from packs.model_store import PackStore
from service.served import ServedState
from service.settings import PROJECT_ROOT, DeploymentSettings, Settings

DEFAULT_POLICY = (PROJECT_ROOT / "policies" / "default.yaml").read_text()
DEFAULT_VERSION = Policy.from_yaml(DEFAULT_POLICY).version


def versioned(version: str) -> str:
    """The shipped default policy under another version name."""
    return re.sub(r"^version: .*$", f"version: {version}", DEFAULT_POLICY, flags=re.M)


@pytest.fixture()
def sessions(db_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture()
def store(tmp_path: Path) -> PackStore:
    return PackStore.at(tmp_path / "store")


def settings_for(tmp_path: Path, pack: Path, name: str = "default", **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        data_dir=tmp_path / f"data-{name}",
        pack_dir=pack,
        deployment=DeploymentSettings(name=name),
        **kw,
    )


def with_policy(pack: Path, out: Path, version: str) -> Path:
    """A copy of `pack` carrying its own policy (the default one, renamed)."""
    copy = shutil.copytree(pack, out)
    (copy / POLICY_FILE).write_text(versioned(version))
    return copy


def policy_version_of(pack: Path) -> str:
    """The version of the policy `pack` is served with by default."""
    own = pack / POLICY_FILE
    return (
        Policy.from_yaml(own.read_text()).version if own.is_file() else DEFAULT_VERSION
    )


def renamed(pack: Path, out: Path, name: str) -> Path:
    """A copy of `pack` under another name, carrying no policy."""
    copy = shutil.copytree(pack, out)
    (copy / POLICY_FILE).unlink(missing_ok=True)
    meta = json.loads((copy / METADATA_FILE).read_text())
    meta["name"] = name
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    return copy


def test_the_pack_is_served_from_its_model_store_copy(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    served = ServedState(
        settings_for(tmp_path, default_pack), sessions=sessions, store=store
    )
    assert served.pack_dir.is_relative_to(store.root)
    assert served.current.pack_tag.startswith("penguins:")


def test_the_pack_policy_is_served_unless_one_is_set(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    pack = with_policy(default_pack, tmp_path / "own", "carried-by-the-pack")
    own = ServedState(settings_for(tmp_path, pack, "a"), sessions=sessions, store=store)
    assert own.current.versions[1] == "carried-by-the-pack"
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(versioned("explicit-one"))
    settings = settings_for(tmp_path, pack, "b")
    settings.guardrails.policy_path = explicit
    chosen = ServedState(settings, sessions=sessions, store=store)
    assert chosen.current.versions[1] == "explicit-one"


def test_the_default_pack_without_a_policy_falls_back_to_the_shipped_one(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    old = shutil.copytree(default_pack, tmp_path / "old-default")
    (old / POLICY_FILE).unlink(missing_ok=True)
    served = ServedState(settings_for(tmp_path, old), sessions=sessions, store=store)
    assert served.current.versions[1] == DEFAULT_VERSION


def test_another_pack_without_a_policy_is_refused_with_one_message(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    pack = renamed(default_pack, tmp_path / "other", "other")
    with pytest.raises(PackPolicyMissing, match="FLYWHEEL_GUARDRAILS__POLICY_PATH"):
        ServedState(settings_for(tmp_path, pack), sessions=sessions, store=store)


def test_a_policy_naming_labels_the_pack_lacks_is_refused(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    pack = shutil.copytree(default_pack, tmp_path / "wrong-policy")
    (pack / POLICY_FILE).write_text(DEFAULT_POLICY.replace("Adelie", "Emperor"))
    with pytest.raises(PolicyInvalid, match="unknown label 'Emperor'"):
        ServedState(settings_for(tmp_path, pack), sessions=sessions, store=store)


def test_a_pack_dir_that_does_not_exist_is_an_error(
    tmp_path: Path, sessions: SessionFactory, store: PackStore
) -> None:
    with pytest.raises(PackFileMissing, match="nope"):
        ServedState(
            settings_for(tmp_path, tmp_path / "nope"), sessions=sessions, store=store
        )
    assert not (tmp_path / "nope").exists()


def test_a_policy_change_reaches_its_own_deployment_only(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    a1 = ServedState(
        settings_for(tmp_path, default_pack, "a"), sessions=sessions, store=store
    )
    a2 = ServedState(
        settings_for(tmp_path, default_pack, "a"), sessions=sessions, store=store
    )
    b = ServedState(
        settings_for(tmp_path, default_pack, "b"), sessions=sessions, store=store
    )
    a1.replace_policy(versioned("put-on-a"))
    assert a2.follow() is True
    assert a2.current.versions[1] == "put-on-a"
    assert b.follow() is False
    assert b.current.versions[1] == policy_version_of(default_pack)


def test_a_restart_resumes_its_own_deployment_unless_the_settings_changed(
    tmp_path: Path, default_pack: Path, sessions: SessionFactory, store: PackStore
) -> None:
    settings = settings_for(tmp_path, default_pack, "a")
    ServedState(settings, sessions=sessions, store=store).replace_policy(
        versioned("put-on-a")
    )
    resumed = ServedState(settings, sessions=sessions, store=store)
    assert resumed.current.versions[1] == "put-on-a"
    other = ServedState(
        settings_for(tmp_path, default_pack, "b"), sessions=sessions, store=store
    )
    assert other.current.versions[1] == policy_version_of(default_pack)
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(versioned("explicit-one"))
    settings.guardrails.policy_path = explicit
    reconfigured = ServedState(settings, sessions=sessions, store=store)
    assert reconfigured.current.versions[1] == "explicit-one"
