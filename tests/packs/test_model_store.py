"""Packs in BentoML's model store: content-addressed copies, verified on open."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from packs.errors import PackFileMissing, PackNotStorable, PackNotStored, PackTampered
from packs.format import METADATA_FILE, MODEL_FILE
from packs.model_store import PackStore, pack_digest


@pytest.fixture()
def store(tmp_path: Path) -> PackStore:
    return PackStore.at(tmp_path / "bentoml" / "models")


def test_a_stored_pack_is_a_verified_copy_named_by_its_content(
    store: PackStore, default_pack: Path, tmp_path: Path
) -> None:
    pack = shutil.copytree(default_pack, tmp_path / "candidate")
    stored = store.add(pack)
    digest = pack_digest(pack)
    assert stored.tag == f"penguins:{digest[:32]}"
    assert stored.sha256 == digest
    assert stored.path != pack and stored.path.is_relative_to(store.root)
    assert (stored.path / MODEL_FILE).read_bytes() == (pack / MODEL_FILE).read_bytes()
    # Changing the source afterwards changes nothing in the store.
    (pack / MODEL_FILE).write_bytes(b"not a model")
    assert store.open(stored.tag).sha256 == digest


def test_adding_the_same_content_twice_gives_the_same_entry(
    store: PackStore, default_pack: Path
) -> None:
    first = store.add(default_pack)
    second = store.add(default_pack)
    assert first == second
    assert store.open("penguins:latest").tag == first.tag


def test_a_store_entry_changed_after_it_was_stored_is_refused(
    store: PackStore, default_pack: Path
) -> None:
    stored = store.add(default_pack)
    meta = stored.path / METADATA_FILE
    meta.write_text(meta.read_text().replace("penguins", "penguinz", 1))
    with pytest.raises(PackTampered, match="does not match its recorded hash"):
        store.open(stored.tag)


def test_a_pack_with_a_symbolic_link_is_refused(
    store: PackStore, default_pack: Path, tmp_path: Path
) -> None:
    pack = shutil.copytree(default_pack, tmp_path / "linked")
    (pack / "elsewhere").symlink_to("/etc/hostname")
    with pytest.raises(PackNotStorable, match="elsewhere is not a regular file"):
        store.add(pack)


def test_missing_directory_and_unknown_tag_are_one_line_errors(
    store: PackStore, tmp_path: Path
) -> None:
    with pytest.raises(PackFileMissing):
        store.add(tmp_path / "nope")
    with pytest.raises(PackNotStored, match="penguins:0123 is not in the model store"):
        store.open("penguins:0123")
