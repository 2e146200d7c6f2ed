"""Model packs in BentoML's model store: named by the pack, versioned by content.

A pack enters the store as a copy (`PackStore.add`), once it loads: its files are
hashed, copied into a new store entry `<pack name>:<first 32 hex digits of the
SHA-256>`, and the copy is hashed again before BentoML saves it, so a file changed
or swapped while it was copied leaves nothing in the store. The entry's metadata
keeps the full hash, and `PackStore.open` hashes the entry again every time
something is about to load it: what a worker serves is, byte for byte, what was
gated.

The store is BentoML's own (`$BENTOML_HOME/models`, or a built bento's `models/`
when BentoML serves the bento), so `bentoml build` carries a pack listed in
`bentofile.yaml` and `bentoml export` / `bentoml import` move it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packs.errors import (
    PackChangedWhileCopied,
    PackFileMissing,
    PackNotStorable,
    PackNotStored,
    PackTampered,
)
from packs.loader import ModelPack, read_metadata

#: Files BentoML writes into every store entry; they are not part of the pack.
STORE_FILES = frozenset({"model.yaml", "custom_objects.pkl"})
#: Store entries made here carry this label, so `bentoml models list` tells them apart.
PACK_LABEL = {"kind": "flywheel-pack"}
VERSION_DIGITS = 32
_TAG_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")


def pack_digest(pack_dir: Path) -> str:
    """SHA-256 over the pack's files: relative path, size and bytes of each, in
    path order. Symbolic links and special files are refused, since they could
    point outside the pack."""
    digest = hashlib.sha256()
    for path in sorted(Path(pack_dir).rglob("*")):
        rel = path.relative_to(pack_dir).as_posix()
        if rel in STORE_FILES:
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise PackNotStorable(Path(pack_dir), f"{rel} is not a regular file")
        if path.is_dir():
            continue
        data = path.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def pack_tag(pack_dir: Path) -> str:
    """The model-store tag `add` gives this pack's content (`name:version`)."""
    return _tag(read_metadata(pack_dir).name, pack_digest(pack_dir))


def _tag(name: str, digest: str) -> str:
    return f"{name}:{digest[:VERSION_DIGITS]}"


@dataclass(frozen=True)
class StoredPack:
    """A verified pack in the store: its tag, its files' directory and hash."""

    tag: str
    path: Path
    sha256: str


class PackStore:
    """Add packs to one BentoML model store and open them, verified."""

    def __init__(self, store: Any):
        self._store = store

    @classmethod
    def at(cls, root: Path) -> PackStore:
        """The store in directory `root` (e.g. `data/bentoml/models`)."""
        from bentoml._internal.models.model import ModelStore

        root.mkdir(parents=True, exist_ok=True)
        return cls(ModelStore(root))

    @classmethod
    def configured(cls) -> PackStore:
        """BentoML's current store: `$BENTOML_HOME/models`, or the bento's own
        models when BentoML serves a built bento."""
        from bentoml._internal.configuration.containers import BentoMLContainer

        return cls(BentoMLContainer.model_store.get())

    @property
    def root(self) -> Path:
        return Path(self._store._path)

    def add(self, pack_dir: Path | str) -> StoredPack:
        """Copy `pack_dir` into the store (a no-op if that content is there) and
        return the verified copy."""
        # What `bentoml.models.create` does, without importing `bentoml.models`
        # (its usage-analytics imports cost seconds at every start).
        from bentoml._internal.models.model import Model, ModelContext, ModelOptions

        src = Path(pack_dir)
        if not src.is_dir():
            raise PackFileMissing(src)
        name = read_metadata(src).name
        if not _TAG_NAME.match(name) or len(name) > 63:
            raise PackNotStorable(
                src,
                f"pack name {name!r} is not a model-store name (lower-case letters, "
                "digits, '-', '.', '_'; at most 63 characters)",
            )
        before = pack_digest(src)
        tag = _tag(name, before)
        if self._has(tag):
            return self.open(tag)
        # A pack that does not load never enters the store, and its errors name
        # the directory the operator gave, not the store's copy.
        ModelPack.load(src, providers=("CPUExecutionProvider",))
        model = Model.create(
            tag,
            module="",
            api_version="v1",
            signatures={},
            labels=PACK_LABEL,
            options=ModelOptions(),
            metadata={"sha256": before},
            context=ModelContext(framework_name="", framework_versions={}),
        )
        dest = Path(model.path)
        for path in sorted(src.rglob("*")):
            target = dest / path.relative_to(src)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                shutil.copyfile(path, target)
        if pack_digest(dest) != before:
            raise PackChangedWhileCopied(src)
        model.flush()
        model.save(self._store)
        return self.open(tag)

    def open(self, tag: str) -> StoredPack:
        """The entry `tag` (`name:version` or `name:latest`), after checking its
        files against the hash recorded when it was stored."""
        model = self._get(tag)
        path = Path(model.path)
        recorded = str(model.info.metadata.get("sha256", ""))
        actual = pack_digest(path)
        if actual != recorded:
            raise PackTampered(str(model.tag), recorded, actual)
        return StoredPack(tag=str(model.tag), path=path, sha256=actual)

    def _has(self, tag: str) -> bool:
        try:
            self._get(tag)
        except PackNotStored:
            return False
        return True

    def _get(self, tag: str) -> Any:
        from bentoml.exceptions import BentoMLException

        try:
            return self._store.get(tag)
        except BentoMLException:
            raise PackNotStored(tag, self.root) from None
