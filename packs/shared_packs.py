"""Packs every replica of a deployment can reach: one directory they all share.

Each replica has a model store of its own (its own BENTOML_HOME, as pods do), so
a pack promoted through one replica is at first in that replica's store only.
With a shared directory (a volume every replica mounts), the replica that makes
the deployment's row name a pack first copies the pack's files to
`<root>/<name>/<version>/` (`publish`: into a temporary directory, hashed, then
renamed into place, so a reader never sees half a pack); a replica whose store
lacks the pack the row names adds it from there (`open`: hashed against the
tag's version and the row's SHA-256 before `PackStore.add`, which hashes it
again). The directory holds only packs that were served; nothing is deleted.

BentoML's store fills an entry in place, so the workers of one replica, which
all follow the same row at once, open and fetch under one file lock: a worker
never reads the entry another is still copying.

Without a shared directory (`NoSharedPacks`), a pack reaches a replica only
through its own store: one replica, a shared BENTOML_HOME, or `bentoml import`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Protocol

from packs.errors import PackNotShared, PackNotStored, PackTampered
from packs.model_store import (
    STORE_FILES,
    VERSION_DIGITS,
    PackStore,
    StoredPack,
    pack_digest,
)

log = logging.getLogger(__name__)

_TAG = re.compile(
    rf"^([a-z0-9]([-._a-z0-9]*[a-z0-9])?):([0-9a-f]{{{VERSION_DIGITS}}})$"
)


class PackSharing(Protocol):
    """How a replica passes served packs to the others, and takes theirs."""

    def publish(self, stored: StoredPack) -> None:
        """Make `stored` reachable by every replica (before a row names it)."""
        ...

    def open(self, store: PackStore, tag: str, sha256: str) -> StoredPack:
        """Pack `tag` from `store`, added first from where the other replicas
        published it if `store` lacks it (its files must hash to `sha256`, when
        known)."""
        ...


class NoSharedPacks:
    """A deployment whose replicas share no pack directory."""

    def publish(self, stored: StoredPack) -> None:
        return None

    def open(self, store: PackStore, tag: str, sha256: str) -> StoredPack:
        try:
            return store.open(tag)
        except PackNotStored:
            raise PackNotShared(tag, store.root, None) from None


class SharedPacks:
    """Packs published under one directory that every replica mounts."""

    def __init__(self, root: Path, *, lock_path: Path):
        self.root = Path(root)
        self.lock_path = Path(lock_path)
        """A file of this replica's own (its workers share it) to lock."""

    def path_for(self, tag: str) -> Path | None:
        """Where pack `tag` is published; None for a tag that names no single
        content version (`name:latest`, or anything not made by the store)."""
        match = _TAG.match(tag)
        if match is None:
            return None
        return self.root / match.group(1) / match.group(3)

    def publish(self, stored: StoredPack) -> None:
        dest = self.path_for(stored.tag)
        if dest is None:
            raise PackNotShared(stored.tag, stored.path.parent, self.root)
        if dest.is_dir():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(
                stored.path,
                tmp,
                ignore=lambda d, names: (
                    [n for n in names if n in STORE_FILES]
                    if Path(d) == stored.path
                    else []
                ),
            )
            actual = pack_digest(tmp)
            if actual != stored.sha256:
                raise PackTampered(stored.tag, stored.sha256, actual)
            try:
                os.rename(tmp, dest)
            except OSError:
                # Another replica published the same content first.
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def open(self, store: PackStore, tag: str, sha256: str) -> StoredPack:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    return store.open(tag)
                except PackNotStored:
                    pass  # fetched below, outside the handler: one error, not two
                return self._fetch(store, tag, sha256)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _fetch(self, store: PackStore, tag: str, sha256: str) -> StoredPack:
        src = self.path_for(tag)
        if src is None or not src.is_dir():
            raise PackNotShared(tag, store.root, self.root)
        actual = pack_digest(src)
        expected = sha256 or tag.rsplit(":", 1)[1]
        if not actual.startswith(expected):
            raise PackTampered(tag, expected, actual)
        stored = store.add(src)
        if stored.tag != tag:  # changed between our hash and the store's
            raise PackTampered(tag, expected, stored.sha256)
        log.info("added %s to the model store from %s", tag, src)
        return stored
