"""What a deployment serves at start-up: its row in the store, or what is configured.

The configured pack is `deployment.pack_tag` (an entry of the model store) or else
`pack_dir` (default `data_dir/packs/penguins`), copied into the model store first;
with no pack at the default location (a built bento), the store's latest default
pack.
The configured policy is `guardrails.policy_path` when set, else the pack's own
`policy.yaml`; a default penguin pack built before packs carried a policy falls
back to `policies/default.yaml`.

A restart resumes the deployment's row, so promotions and policy changes survive
it, unless what is configured changed since the row was written: then the
configuration is served and the row replaced (an operator who points the service
at another pack or policy gets it).
"""

from __future__ import annotations

import hashlib
import logging

from feedback.db import SessionFactory
from feedback.served_state import ServedRecord, read_served, write_served
from guardrails.errors import PolicyInvalid, PolicyProblem
from packs.errors import PackPolicyMissing
from packs.format import METADATA_FILE
from packs.loader import POLICY_FILE, read_metadata
from packs.model_store import PackStore, StoredPack
from packs.shared_packs import PackSharing
from service.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

DEFAULT_PACK_NAME = "penguins"
DEFAULT_POLICY = PROJECT_ROOT / "policies" / "default.yaml"


def configured_pack(settings: Settings, store: PackStore) -> StoredPack:
    """The pack the settings name, as a verified entry of the model store."""
    if settings.deployment.pack_tag is not None:
        return store.open(settings.deployment.pack_tag)
    path = settings.active_pack_dir
    if settings.pack_dir is None and not (path / METADATA_FILE).is_file():
        # A built bento has no data directory: it carries the default pack in
        # its model store instead (`make bento`).
        return store.open(f"{DEFAULT_PACK_NAME}:latest")
    return store.add(path)


def configured_policy(settings: Settings, pack: StoredPack) -> tuple[str, str]:
    """(policy YAML, where it came from) for `pack` under the settings."""
    explicit = settings.guardrails.policy_path
    if explicit is not None:
        try:
            return explicit.read_text(encoding="utf-8"), f"settings: {explicit}"
        except OSError as exc:
            problem = f"cannot read policy file {explicit}: {exc.strerror}"
            raise PolicyInvalid([PolicyProblem("", problem)]) from None
    own = pack.path / POLICY_FILE
    if own.is_file():
        return own.read_text(encoding="utf-8"), f"pack {pack.tag}"
    if read_metadata(pack.path).name == DEFAULT_PACK_NAME:
        return DEFAULT_POLICY.read_text(encoding="utf-8"), "policies/default.yaml"
    raise PackPolicyMissing(pack.tag, own)


def start_record(
    settings: Settings,
    sessions: SessionFactory,
    store: PackStore,
    shared: PackSharing,
) -> ServedRecord:
    """The deployment's row to serve from, written first if it must be (the
    configured pack published to the other replicas before the row names it)."""
    deployment = settings.deployment.name
    pack = configured_pack(settings, store)
    policy_yaml, source = configured_policy(settings, pack)
    configured = hashlib.sha256(
        f"{pack.tag}\n{source}\n{policy_yaml}".encode()
    ).hexdigest()[:32]
    with sessions() as session:
        record = read_served(session, deployment)
        if record is not None and record.configured == configured:
            return record
        if record is not None:
            log.info(
                "deployment %s: the configured pack or policy changed since it "
                "last served %s; serving %s with the policy from %s",
                deployment,
                record.pack_tag,
                pack.tag,
                source,
            )
        shared.publish(pack)
        return write_served(
            session,
            deployment,
            pack_tag=pack.tag,
            pack_sha256=pack.sha256,
            policy_yaml=policy_yaml,
            policy_source=source,
            configured=configured,
        )
