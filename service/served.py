"""What a worker serves: the model pack and policy as one `Served` object, and the
`ServedState` that loads, swaps and follows it.

`Served` is immutable and replaced by assignment: a request reads
`ServedState.current` once and finishes with the versions it started with, so a
swap never drops or mixes in-flight requests.

Packs are served only from BentoML's model store, each opened through a hash
check (`packs.model_store`). What a deployment serves is its row in the SQL store
(`feedback.served_state`, keyed by `settings.deployment.name`): promotions and
policy changes write the row, and every worker of the deployment polls it
(`follow`) and swaps, so all workers follow an admin call that reached only one.
A restart resumes the row unless the settings that chose the initial pack and
policy changed since it was written (then the settings win). See `service.start`.

Replicas with model stores of their own reach each other's packs through
`deployment.shared_packs_dir` (`packs.shared_packs`): a pack is published there
before the row names it, and fetched from there by a replica that lacks it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from feedback.db import SessionFactory
from feedback.served_state import (
    ServedRecord,
    read_served,
    served_revision,
    write_served,
)
from guardrails.build import build_pipeline
from guardrails.online_priors import OnlinePriorEstimator
from guardrails.pipeline import GuardrailPipeline
from guardrails.policy import Policy
from packs.errors import PackTampered
from packs.format import PackMetadata
from packs.loader import ModelPack
from packs.model_store import PackStore, StoredPack
from packs.shared_packs import NoSharedPacks, PackSharing, SharedPacks
from service.settings import Settings
from service.start import start_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FollowFailure:
    """The deployment's row names what this worker could not load."""

    pack_tag: str
    policy_source: str
    revision: int
    error: str

    def to_dict(self) -> dict[str, object]:
        return {
            "pack_tag": self.pack_tag,
            "policy_source": self.policy_source,
            "revision": self.revision,
            "error": self.error,
        }


@dataclass(frozen=True)
class Served:
    """The model pack and policy answering requests, swapped as one unit."""

    pack: ModelPack
    pack_tag: str
    """The pack's entry in the model store (`name:content-hash`)."""
    pack_sha256: str
    policy_path: Path
    """The policy text as a content-addressed file (what replay and the gate read)."""
    policy_yaml: str
    policy_source: str
    """Where the policy came from: the pack, a settings path, or an admin PUT."""
    pipeline: GuardrailPipeline

    @property
    def policy(self) -> Policy:
        return self.pipeline.policy

    @property
    def meta(self) -> PackMetadata:
        return self.pack.metadata

    @property
    def estimator(self) -> OnlinePriorEstimator | None:
        return self.pipeline.prior_estimator

    @cached_property
    def versions(self) -> tuple[str, str]:
        """(model version, policy version)."""
        return self.pack.metadata.version, self.pipeline.policy_version

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.pack.metadata.feature_names)

    @cached_property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.pack.metadata.labels)


class ServedState:
    """The worker's `current` pack and policy; the only code that changes them."""

    def __init__(
        self, settings: Settings, *, sessions: SessionFactory, store: PackStore
    ):
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.shared = shared_packs(settings)
        self.deployment = settings.deployment.name
        self._subscribers: list[Callable[[Served], None]] = []
        self._on_follow: list[Callable[[FollowFailure | None], None]] = []
        self.follow_failure: FollowFailure | None = None
        """Set while the row names what this worker cannot load (None: in step)."""
        record = start_record(settings, sessions, store, self.shared)
        self._revision: int | None = record.revision
        self.current = self._load(record, reuse=None)
        # A row written before the shared directory was set: publish it now.
        self.shared.publish(self._stored(self.current))

    def subscribe(self, on_swap: Callable[[Served], None]) -> None:
        """Call `on_swap(served)` now and after every swap."""
        self._subscribers.append(on_swap)
        on_swap(self.current)

    def on_follow(self, callback: Callable[[FollowFailure | None], None]) -> None:
        """Call `callback(failure or None)` after every follow that changes it."""
        self._on_follow.append(callback)

    def _set_follow_failure(self, failure: FollowFailure | None) -> None:
        changed = failure != self.follow_failure
        self.follow_failure = failure
        if changed:
            for callback in self._on_follow:
                callback(failure)

    def replace_policy(self, yaml_text: str) -> Served:
        """Validate a new policy against the served pack and serve it everywhere.

        Anything wrong raises `PolicyInvalid` (422) and the old policy stays.
        """
        Policy.from_yaml(yaml_text).check_against(self.current.meta)
        return self._write(self.current.pack_tag, yaml_text, "PUT /admin/policy")

    def serve_pack(self, stored: StoredPack) -> PackMetadata:
        """Serve a pack from the model store with the current policy in every worker
        (no gate here: `feedback.promotion` gates first)."""
        current = self.current
        return self._write(stored.tag, current.policy_yaml, current.policy_source).meta

    @property
    def pack_dir(self) -> Path:
        return self.current.pack.path

    @property
    def policy_path(self) -> Path:
        return self.current.policy_path

    def follow(self) -> bool:
        """Swap to what the deployment's row says if it changed; True if swapped.
        A version that cannot be loaded is logged and the old one kept."""
        with self.sessions() as session:
            revision = served_revision(session, self.deployment)
            if revision is None or revision == self._revision:
                return False
            record = read_served(session, self.deployment)
        assert record is not None
        self._revision = record.revision
        current = self.current
        if (record.pack_tag, record.policy_yaml) == (
            current.pack_tag,
            current.policy_yaml,
        ):
            self._set_follow_failure(None)
            return False
        try:
            served = self._load(record, reuse=current)
        except Exception as exc:
            failure = FollowFailure(
                pack_tag=record.pack_tag,
                policy_source=record.policy_source,
                revision=record.revision,
                error=f"{type(exc).__name__}: {exc}",
            )
            if failure != self.follow_failure:  # once, not at every poll
                log.exception(
                    "could not follow %s / policy from %s; still serving %s",
                    record.pack_tag,
                    record.policy_source,
                    current.versions,
                )
            # Try again at the next poll: the pack may yet reach this replica.
            self._revision = None
            self._set_follow_failure(failure)
            return False
        self._set_follow_failure(None)
        self._swap(served)
        return True

    def _write(self, pack_tag: str, policy_yaml: str, source: str) -> Served:
        record = ServedRecord(
            deployment=self.deployment,
            pack_tag=pack_tag,
            pack_sha256="",
            policy_yaml=policy_yaml,
            policy_source=source,
            configured="",
            revision=0,
        )
        served = self._load(record, reuse=self.current)
        # Published before the row names it, so no replica follows the row to a
        # pack it cannot reach.
        self.shared.publish(self._stored(served))
        with self.sessions() as session:
            old = read_served(session, self.deployment)
            written = write_served(
                session,
                self.deployment,
                pack_tag=served.pack_tag,
                pack_sha256=served.pack_sha256,
                policy_yaml=policy_yaml,
                policy_source=source,
                configured=old.configured if old is not None else "",
            )
        self._revision = written.revision
        self._swap(served)
        return served

    def _load(self, record: ServedRecord, *, reuse: Served | None) -> Served:
        """Load what `record` names: the pack from the store (verified), unless
        `reuse` already serves it, and the policy built for it."""
        if reuse is not None and reuse.pack_tag == record.pack_tag:
            pack, tag, sha256 = reuse.pack, reuse.pack_tag, reuse.pack_sha256
        else:
            stored = self.shared.open(self.store, record.pack_tag, record.pack_sha256)
            if record.pack_sha256 and stored.sha256 != record.pack_sha256:
                raise PackTampered(stored.tag, record.pack_sha256, stored.sha256)
            pack = ModelPack.load(stored.path, **self.settings.serving.pack_options())
            tag, sha256 = stored.tag, stored.sha256
        pipeline = build_pipeline(pack, Policy.from_yaml(record.policy_yaml), "serve")
        return Served(
            pack=pack,
            pack_tag=tag,
            pack_sha256=sha256,
            policy_path=self._policy_file(record.policy_yaml),
            policy_yaml=record.policy_yaml,
            policy_source=record.policy_source,
            pipeline=pipeline,
        )

    @staticmethod
    def _stored(served: Served) -> StoredPack:
        return StoredPack(served.pack_tag, served.pack.path, served.pack_sha256)

    def _policy_file(self, yaml_text: str) -> Path:
        digest = hashlib.sha256(yaml_text.encode()).hexdigest()[:16]
        path = self.settings.data_dir / "policies" / f"{digest}.yaml"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{id(self)}.tmp")
            tmp.write_text(yaml_text, encoding="utf-8")
            tmp.replace(path)
        return path

    def _swap(self, served: Served) -> None:
        old = self.current
        self.current = served
        for on_swap in self._subscribers:
            on_swap(served)
        log.info(
            "now serving %s with policy %s (was %s)", *served.versions, old.versions
        )


def shared_packs(settings: Settings) -> PackSharing:
    """How this deployment's replicas share served packs (see packs.shared_packs)."""
    root = settings.deployment.shared_packs_dir
    if root is None:
        return NoSharedPacks()
    return SharedPacks(root, lock_path=settings.data_dir / "shared-packs.lock")
