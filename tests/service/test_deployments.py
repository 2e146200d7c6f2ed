"""Two real services on one machine and one database, each its own deployment:
promotion and policy changes on one never reach the other, promotion serves only
its model-store copy of the candidate, and a restart resumes each one's own state.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from packs.format import METADATA_FILE, MODEL_FILE
from packs.loader import POLICY_FILE
from service import process
from service.settings import PROJECT_ROOT
from tests.servers import TEST_DEFAULTS, ServiceProcess, stop_service_process

pytestmark = pytest.mark.integration

DEFAULT_POLICY = (PROJECT_ROOT / "policies" / "default.yaml").read_text()


def versioned(version: str) -> str:
    """The shipped default policy under another version name."""
    return re.sub(r"^version: .*$", f"version: {version}", DEFAULT_POLICY, flags=re.M)


ADELIE = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181,
    "body_mass_g": 3750,
}


class Pair:
    """Services `a` and `b`: separate data dirs, one shared SQLite database."""

    def __init__(self, root: Path, pack_a: Path, pack_b: Path):
        self.root = root
        self.packs = {"a": pack_a, "b": pack_b}
        self.db = f"sqlite:///{root / 'shared.db'}"
        self.svc: dict[str, ServiceProcess] = {}

    def start(self) -> None:
        errors: list[BaseException] = []

        def one(name: str) -> None:
            try:
                # Two servers start at once: allow for a busy machine.
                self.svc[name] = process.start_service(
                    self.root / f"data-{name}",
                    self.packs[name],
                    ready_timeout_s=300,
                    **TEST_DEFAULTS,
                    FLYWHEEL_DEPLOYMENT__NAME=f"deployment-{name}",
                    FLYWHEEL_FEEDBACK__DATABASE_URL=self.db,
                    FLYWHEEL_SERVING__RELOAD_POLL_S="0.2",
                    # The promotion replays the gate inside its request: on a
                    # loaded test machine that can exceed the default 30 s.
                    FLYWHEEL_SERVING__REQUEST_TIMEOUT_S="300",
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in self.packs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]

    def stop(self) -> None:
        for svc in self.svc.values():
            assert stop_service_process(svc.process) is not None, "no clean stop"
        self.svc.clear()

    def info(self, name: str) -> dict[str, object]:
        with self.svc[name].client() as c:
            return c.get("/info").json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("deployments")
    pack_a = shutil.copytree(default_pack, root / "pack-a")
    # A different pack for b: the same model carrying a policy of its own.
    pack_b = shutil.copytree(default_pack, root / "pack-b")
    (pack_b / POLICY_FILE).write_text(versioned("b-own-policy"))
    pair = Pair(root, pack_a, pack_b)
    pair.start()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from packs.build_default import build_default_pack

    out = tmp_path_factory.mktemp("candidate") / "pack"
    build_default_pack(out, hidden=(8,))
    return out


def test_promotion_and_policy_changes_stay_in_their_own_deployment(
    pair: Pair, candidate: Path
) -> None:
    a_before, b_before = pair.info("a"), pair.info("b")
    assert b_before["policy_version"] == "b-own-policy"
    assert a_before["policy_version"] != "b-own-policy"
    a, b = pair.svc["a"], pair.svc["b"]
    with a.client(headers=a.admin_headers(), timeout=180) as c:
        promoted = c.post(
            "/admin/promote",
            json={"pack_dir": str(candidate), "max_metric_drop": 1.0},
        )
    assert promoted.status_code == 200, promoted.text
    new_version = promoted.json()["model_version"]
    assert new_version != a_before["model_version"]
    assert promoted.json()["pack_tag"].startswith("penguins:")

    # The served copy is the store's: wrecking the candidate's directory now
    # changes nothing that is served, now or after a restart (next test).
    (candidate / MODEL_FILE).write_bytes(b"swapped after the gate")
    (candidate / METADATA_FILE).write_text("{}")

    policy = versioned("put-on-b")
    with b.client(headers=b.admin_headers()) as c:
        put = c.put(
            "/admin/policy",
            content=policy.encode(),
            headers={"Content-Type": "application/yaml"},
        )
    assert put.status_code == 200, put.text
    time.sleep(1.5)  # several reload polls of both services
    assert pair.info("a")["model_version"] == new_version
    assert pair.info("a")["policy_version"] == a_before["policy_version"]
    assert pair.info("b")["model_version"] == b_before["model_version"]
    assert pair.info("b")["policy_version"] == "put-on-b"
    with a.client() as c:
        answer = c.post("/predict", json={"instances": [ADELIE]}).json()
    assert answer["predictions"][0]["model_version"] == new_version
    for svc in (a, b):
        assert "PolicyInvalid" not in svc.log_text()
        assert "could not follow" not in svc.log_text()


def test_each_deployment_resumes_its_own_state_after_a_restart(
    pair: Pair, candidate: Path
) -> None:
    before = {name: pair.info(name) for name in ("a", "b")}
    pair.stop()
    pair.start()
    for name in ("a", "b"):
        after = pair.info(name)
        assert after["model_version"] == before[name]["model_version"], name
        assert after["policy_version"] == before[name]["policy_version"], name
    assert pair.info("b")["policy_version"] == "put-on-b"
