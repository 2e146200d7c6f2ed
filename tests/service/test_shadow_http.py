"""Shadow runs over real HTTP: a second pack answers live traffic beside the served
one in both workers of a real `bentoml serve`, the served answers stay exactly as
they were, `GET /admin/shadow` sums both workers, and the promotion gate's
summary names the shadow result."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests.payloads import penguins
from tests.servers import ServiceProcess, running

pytestmark = pytest.mark.integration

MIN_ROWS = 60
ROWS = [p.features for p in penguins()[::9]]  # 38 rows, all three species


@pytest.fixture(scope="module")
def shadow_service(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("shadow")
    pack = shutil.copytree(default_pack, root / "packs" / "served")
    with running(
        root / "data",
        pack,
        FLYWHEEL_SERVING__WORKERS="2",
        FLYWHEEL_SERVING__RELOAD_POLL_S="0.2",
        FLYWHEEL_SERVING__REQUEST_TIMEOUT_S="300",
        FLYWHEEL_FEEDBACK__SHADOW_FLUSH_S="0.2",
        FLYWHEEL_FEEDBACK__GATE_SHADOW_MIN_ROWS=str(MIN_ROWS),
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second pack: the same data, another network (its answers differ a bit)."""
    from packs.build_default import build_default_pack

    out = tmp_path_factory.mktemp("candidate") / "wider"
    build_default_pack(out, hidden=(32,))
    return out


def answers(svc: ServiceProcess) -> list[tuple[Any, ...]]:
    """The fixed rows answered one batch plus one row at a time, each on a fresh
    connection (so both workers get some); versions, labels and probabilities."""
    out: list[tuple[Any, ...]] = []
    bodies = [{"instances": ROWS}] + [{"instances": [row]} for row in ROWS[:10]]
    for body in bodies:
        with svc.client() as c:
            r = c.post("/predict", json=body)
        assert r.status_code == 200, r.text
        for p in r.json()["predictions"]:
            out.append(
                (
                    p["model_version"],
                    p["policy_version"],
                    p["label"],
                    p["probabilities"],
                )
            )
    return out


def shadow(svc: ServiceProcess) -> dict[str, Any]:
    with svc.client(headers=svc.admin_headers()) as c:
        r = c.get("/admin/shadow")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    every: Callable[[], object] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_bad_shadow_requests_are_4xx_naming_the_problem(
    shadow_service: ServiceProcess, tmp_path: Path
) -> None:
    svc = shadow_service
    with svc.client() as c:
        assert c.post("/admin/shadow", json={"pack_dir": "x"}).status_code == 401
    with svc.client(headers=svc.admin_headers()) as c:
        assert c.get("/admin/shadow").status_code == 404
        assert c.delete("/admin/shadow").status_code == 404
        for rate in (0, -0.1, 1.5):
            r = c.post("/admin/shadow", json={"pack_dir": "x", "sample_rate": rate})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["field"] == "sample_rate"
        r = c.post("/admin/shadow", json={"pack_dir": str(tmp_path / "nothing")})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "pack_dir"
        assert "nothing" in r.json()["error"]["message"]


def test_shadow_run_counts_every_worker_leaves_answers_and_reaches_the_gate(
    shadow_service: ServiceProcess, candidate: Path
) -> None:
    svc = shadow_service
    admin = svc.admin_headers()
    before = answers(svc)

    with svc.client(headers=admin, timeout=120) as c:
        started = c.post(
            "/admin/shadow", json={"pack_dir": str(candidate), "sample_rate": 1.0}
        )
    assert started.status_code == 200, started.text
    run = started.json()
    assert run["status"] == "active" and run["sample_rate"] == 1.0
    time.sleep(1.0)  # both workers poll the run every 0.2 s

    # Traffic until both workers have written tallies; every answer unchanged.
    def same_answers() -> None:
        assert answers(svc) == before

    wait_for(
        lambda: shadow(svc)["workers"] == 2, 120, "both workers tally", same_answers
    )

    # Every row sent now is counted once, whichever worker answered it.
    def total() -> int:
        s = shadow(svc)
        return int(s["rows_seen"] + s["rows_dropped"] + s["rows_failed"])

    def settled() -> int:
        """The total once no worker's tallies change for a second."""
        last = total()
        for _ in range(30):
            time.sleep(1.0)
            now = total()
            if now == last:
                return now
            last = now
        raise AssertionError("shadow tallies kept changing with no traffic")

    start = settled()
    same_answers()
    sent = len(before)
    assert settled() == start + sent

    result = shadow(svc)
    assert result["run_id"] == run["run_id"]
    assert result["candidate_version"] == run["candidate_version"]
    assert result["rows_seen"] >= MIN_ROWS
    assert result["rows_dropped"] == 0 and result["rows_failed"] == 0
    assert 0.8 <= result["agreement"] <= 1.0
    per_label = result["agreement_per_served_label"]
    assert set(per_label) == {"Adelie", "Chinstrap", "Gentoo"}
    assert sum(v["rows"] for v in per_label.values()) == result["rows_seen"]
    estimated = result["estimated_accuracy"]
    assert 0.5 < estimated["served"] <= 1 and 0.5 < estimated["candidate"] <= 1
    assert result["candidate_latency_ms_per_row"] > 0
    for row in result["largest_disagreements"]:
        assert row["served_label"] != row["candidate_label"]
        assert "inputs" not in row  # the default policy stores no inputs

    # The gate reads the run of this very pack.
    done = settled()
    with svc.client(headers=admin, timeout=300) as c:
        promoted = c.post("/admin/promote", json={"pack_dir": str(candidate)})
    assert promoted.status_code in (200, 409), promoted.text
    body = promoted.json()
    summary = body if promoted.status_code == 200 else body["error"]["gate"]
    section = summary["shadow"]
    assert section["status"] == "checked"
    assert section["run_id"] == run["run_id"]
    assert section["rows"] == done
    assert section["min_rows"] == MIN_ROWS
    assert section["checks"]["rows"] is True

    with svc.client(headers=admin) as c:
        if promoted.status_code == 200:
            # Served now: its shadow run was stopped by the promotion.
            assert c.get("/admin/shadow").json()["status"] == "stopped"
        else:
            stopped = c.delete("/admin/shadow")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["status"] == "stopped"
        assert c.delete("/admin/shadow").status_code == 404
    # Stopped in every worker: new traffic is not counted.
    done = settled()
    answers(svc)
    assert settled() == done


def test_promoting_a_pack_never_run_in_shadow_says_so(
    shadow_service: ServiceProcess, tmp_path: Path
) -> None:
    from packs.build_default import build_default_pack

    build_default_pack(tmp_path / "other", hidden=(24,))
    with shadow_service.client(
        headers=shadow_service.admin_headers(), timeout=300
    ) as c:
        r = c.post("/admin/promote", json={"pack_dir": str(tmp_path / "other")})
    assert r.status_code in (200, 409), r.text
    summary = r.json() if r.status_code == 200 else r.json()["error"]["gate"]
    assert summary["shadow"] == {"status": "no shadow run", "passed": True}
