"""The admin calls of shadow runs: start one, read the newest, stop it.

`begin` checks and stores the candidate as a promotion does (copied into the
model store, built with its own policy, the same features and labels as the
served pack), records the run in the store and serves it in this worker at once;
the other workers start it from the store at their next poll
(`service.shadow.ShadowRunner.follow`). `result` and `end` read every worker's
tallies from the store after writing this worker's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import NotFound, Unprocessable
from feedback import shadow as shadow_store
from feedback.shadow import ShadowResult
from packs.errors import PackError
from service.shadow import ShadowRunner, _Candidate, build_candidate, candidate_policy


class ShadowAdmin:
    def __init__(self, runner: ShadowRunner):
        self.runner = runner

    def begin(self, pack_dir: str, sample_rate: float) -> dict[str, Any]:
        """Start a shadow run of the pack in `pack_dir` (copied into the model
        store first, as a promotion does) in every worker; 422 for a pack that
        does not store, load or fit the served one."""
        runner = self.runner
        try:
            stored = runner.store.add(Path(pack_dir))
            policy_yaml = candidate_policy(stored, stored.tag.split(":")[0])
            pack, pipeline = build_candidate(runner.settings, stored, policy_yaml)
        except PackError as exc:
            raise Unprocessable(
                f"candidate pack is not usable: {exc.message}", field="pack_dir"
            ) from None
        served = runner.served.current
        meta = pack.metadata
        if (meta.feature_names, meta.labels) != (
            served.meta.feature_names,
            served.meta.labels,
        ):
            raise Unprocessable(
                "candidate and served packs differ in features or labels: "
                f"{meta.feature_names}/{meta.labels} vs "
                f"{served.meta.feature_names}/{served.meta.labels}",
                field="pack_dir",
            )
        with runner.sessions() as session:
            run, replaced = shadow_store.start_run(
                session,
                runner.deployment,
                pack_tag=stored.tag,
                pack_sha256=stored.sha256,
                model_version=meta.version,
                policy_version=pipeline.policy_version,
                policy_yaml=policy_yaml,
                served_model_version=served.meta.version,
                sample_rate=sample_rate,
            )
        runner.switch_to(_Candidate(run, pack, pipeline))
        return {
            **run.describe(),
            "replaced_run_id": None if replaced is None else replaced.id,
        }

    def latest(self) -> ShadowResult | None:
        """The deployment's newest run with every worker's tallies; None if none."""
        runner = self.runner
        runner.flush_current()
        with runner.sessions() as session:
            run = shadow_store.latest_run(session, runner.deployment)
            return None if run is None else shadow_store.run_result(session, run)

    def result(self) -> dict[str, Any]:
        """`latest` as JSON; 404 if there is no run."""
        found = self.latest()
        if found is None:
            raise NotFound(
                f"no shadow run on deployment {self.runner.deployment!r}; "
                "POST /admin/shadow starts one"
            )
        return found.to_dict()

    def end(self) -> dict[str, Any]:
        """Stop the active run everywhere; its final result. 404 if none runs."""
        runner = self.runner
        runner.flush_current()
        with runner.sessions() as session:
            stopped = shadow_store.stop_run(session, runner.deployment)
            if stopped is None:
                raise NotFound(
                    f"no shadow run is active on deployment {runner.deployment!r}"
                )
        runner.follow()
        with runner.sessions() as session:
            return shadow_store.run_result(session, stopped).to_dict()
