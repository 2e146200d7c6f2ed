"""What a worker serves: the model pack and policy as one `Served` object, and the
`ServedState` that loads, swaps and follows it.

`Served` is immutable and replaced by assignment: a request reads
`ServedState.current` once and finishes with the versions it started with, so a
swap never drops or mixes in-flight requests. Promotions and policy changes are
written to `settings.state_file`; every worker polls it (`follow`) and swaps, so
all workers follow an admin call that reached only one of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from guardrails.build import build_pipeline
from guardrails.online_priors import OnlinePriorEstimator
from guardrails.pipeline import GuardrailPipeline
from guardrails.policy import Policy
from packs.format import PackMetadata
from packs.loader import ModelPack
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """The model pack and policy answering requests, swapped as one unit."""

    pack: ModelPack
    policy_path: Path
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


def read_state(state_file: Path) -> dict[str, str]:
    """The promoted pack dir and policy path, if any were promoted."""
    try:
        return json.loads(state_file.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {}


def write_state(state_file: Path, **changes: str) -> None:
    """Atomically record a promotion or a policy change for every worker."""
    state = read_state(state_file) | changes
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, state_file)


class ServedState:
    """The worker's `current` pack and policy; the only code that changes them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._subscribers: list[Callable[[Served], None]] = []
        pack_dir, policy_path = self._wanted()
        self._state_mtime = self._mtime()
        self.current = self.load(pack_dir, policy_path)

    def subscribe(self, on_swap: Callable[[Served], None]) -> None:
        """Call `on_swap(served)` now and after every swap."""
        self._subscribers.append(on_swap)
        on_swap(self.current)

    def load(self, pack_dir: Path, policy_path: Path) -> Served:
        """Load a pack and a policy (raises the pack's or the policy's error)."""
        serving = self.settings.serving
        pack = ModelPack.load(
            pack_dir,
            providers=serving.providers,
            require_gpu=serving.require_gpu,
            intra_op_threads=serving.intra_op_threads,
        )
        return self._with_policy(pack, policy_path)

    def _with_policy(self, pack: ModelPack, policy_path: Path) -> Served:
        pipeline = build_pipeline(pack, Policy.load(policy_path), "serve")
        return Served(pack=pack, policy_path=policy_path, pipeline=pipeline)

    def replace_policy(self, yaml_text: str) -> Served:
        """Validate a new policy against the served pack and serve it everywhere.

        Anything wrong raises `PolicyInvalid` (422) and the old policy stays.
        """
        Policy.from_yaml(yaml_text).check_against(self.current.meta)
        digest = hashlib.sha256(yaml_text.encode()).hexdigest()[:12]
        path = self.settings.data_dir / "policies" / f"{digest}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml_text)
        served = self._with_policy(self.current.pack, path)
        self._record(policy_path=str(path))
        self._swap(served)
        return served

    def serve_pack(self, pack_dir: Path) -> PackMetadata:
        """Serve `pack_dir` with the current policy in every worker (no gate here:
        `feedback.promotion` gates first)."""
        served = self.load(pack_dir, self.current.policy_path)
        self._record(pack_dir=str(pack_dir))
        self._swap(served)
        return served.meta

    @property
    def pack_dir(self) -> Path:
        return self.current.pack.path

    @property
    def policy_path(self) -> Path:
        return self.current.policy_path

    def follow(self) -> bool:
        """Swap to the promoted pack/policy if the state file changed; True if
        swapped. A version that cannot be loaded is logged and the old one kept."""
        mtime = self._mtime()
        if mtime == self._state_mtime:
            return False
        self._state_mtime = mtime
        pack_dir, policy_path = self._wanted()
        current = self.current
        if pack_dir == current.pack.path and policy_path == current.policy_path:
            return False
        try:
            if pack_dir == current.pack.path:
                served = self._with_policy(current.pack, policy_path)
            else:
                served = self.load(pack_dir, policy_path)
        except Exception:
            log.exception(
                "could not follow %s / %s; still serving %s",
                pack_dir,
                policy_path,
                current.versions,
            )
            return False
        self._swap(served)
        return True

    def _wanted(self) -> tuple[Path, Path]:
        state = read_state(self.settings.state_file)
        return (
            Path(state.get("pack_dir", self.settings.active_pack_dir)),
            Path(state.get("policy_path", self.settings.guardrails.policy_path)),
        )

    def _record(self, **changes: str) -> None:
        write_state(self.settings.state_file, **changes)
        self._state_mtime = self._mtime()

    def _swap(self, served: Served) -> None:
        old = self.current
        self.current = served
        for on_swap in self._subscribers:
            on_swap(served)
        log.info(
            "now serving %s with policy %s (was %s)", *served.versions, old.versions
        )

    def _mtime(self) -> float:
        try:
            return self.settings.state_file.stat().st_mtime
        except FileNotFoundError:
            return 0.0
