"""Two real replicas (`bentoml serve`, 2 workers each, own data dirs, BentoML homes
and ports) on one real PostgreSQL database: ids unique across replicas, a report
sent to one replica for another's prediction, every replica's rows in the shared
store, a policy change and a promotion through one replica served by the other
(the pack through the shared pack directory, as the model stores are separate),
and the drift run once per window, taken over when its holder is killed.

Runs wherever PostgreSQL is reachable (see tests/dbservers.py: CI fails rather than
skips without it; elsewhere it skips with the reason).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from feedback import leases
from feedback.db import make_engine, session_factory
from feedback.log_reader import PredictionLogReader
from feedback.models import ServedStateRow
from feedback.served_state import write_served
from monitoring.traffic import instances, like_training
from packs.build_default import build_default_pack
from packs.loader import POLICY_FILE
from packs.model_store import PackStore
from service.process import kill_tree
from service.settings import PROJECT_ROOT
from service.wiring import DRIFT_JOB
from tests.dbservers import create_database, drop_database
from tests.servers import ServiceProcess, start_service, stop_service_process

pytestmark = pytest.mark.integration

DRIFT_INTERVAL_S = 6.0
LEASE_TTL_S = 3.0
REPLICA_SETTINGS = {
    "FLYWHEEL_SERVING__WORKERS": "2",
    "FLYWHEEL_SERVING__RELOAD_POLL_S": "0.5",
    "FLYWHEEL_MONITORING__DRIFT_INTERVAL_S": str(DRIFT_INTERVAL_S),
    "FLYWHEEL_MONITORING__DRIFT_WINDOW_ROWS": "300",
    "FLYWHEEL_MONITORING__DRIFT_MIN_WINDOW_ROWS": "100",
    "FLYWHEEL_LEASES__TTL_S": str(LEASE_TTL_S),
    "FLYWHEEL_LEASES__POLL_S": "0.5",
    # A promotion replays the gate inside its request: slow on two loaded cores.
    "FLYWHEEL_SERVING__REQUEST_TIMEOUT_S": "300",
}


@pytest.fixture(scope="module")
def shared_db(postgres_server: str) -> Iterator[str]:
    url = create_database(postgres_server)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="module")
def shared_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prediction log's directory every replica writes and reads."""
    return tmp_path_factory.mktemp("shared-log")


@pytest.fixture(scope="module")
def shared_packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory served packs reach every replica through."""
    return tmp_path_factory.mktemp("shared-packs")


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
    default_pack: Path,
    shared_db: str,
    shared_log: Path,
    shared_packs: Path,
) -> Iterator[list[ServiceProcess]]:
    """Started once for the module; the last test kills one of them."""
    root = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        started = []
        for name in ("a", "b"):
            env = {
                **REPLICA_SETTINGS,
                "FLYWHEEL_FEEDBACK__DATABASE_URL": shared_db,
                "FLYWHEEL_PREDICTION_LOG__DIR": str(shared_log),
                "FLYWHEEL_DEPLOYMENT__SHARED_PACKS_DIR": str(shared_packs),
            }
            # Four workers starting on two shared cores: allow them time.
            svc = start_service(root / name, default_pack, ready_timeout_s=300, **env)  # type: ignore[arg-type]
            stack.callback(stop_service_process, svc.process)
            started.append(svc)
        yield started


def _predict_ids(svc: ServiceProcess, rows: int, seed: int) -> list[str]:
    with svc.client() as c:
        r = c.post(
            "/predict", json={"instances": instances(like_training(rows, seed=seed))}
        )
    assert r.status_code == 200, r.text
    return [p["prediction_id"] for p in r.json()["predictions"]]


def _drift_runs(svc: ServiceProcess) -> float:
    """Drift runs this replica finished, whatever their outcome."""
    with svc.client() as c:
        text = c.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flywheel_drift_runs_total{")
    )


def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _pids(svc: ServiceProcess) -> set[int]:
    try:
        root = psutil.Process(svc.process.pid)
        return {root.pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _drift_children(replicas: list[ServiceProcess]) -> int:
    """Drift runs (`monitoring.cli drift` processes) under way in all replicas."""
    count = 0
    for svc in replicas:
        for pid in _pids(svc):
            try:
                cmdline = psutil.Process(pid).cmdline()
            except psutil.Error:
                continue
            count += "monitoring.cli" in cmdline and "drift" in cmdline
    return count


def test_two_replicas_share_one_store(
    replicas: list[ServiceProcess], shared_log: Path
) -> None:
    a, b = replicas
    ids_a = [i for seed in range(3) for i in _predict_ids(a, 100, seed)]
    ids_b = [i for seed in range(3, 6) for i in _predict_ids(b, 100, seed)]
    assert len(set(ids_a) | set(ids_b)) == 600

    # A report sent to B for a prediction A made a moment ago.
    with b.client() as c:
        r = c.post("/report", json={"prediction_id": ids_a[-1], "comment": "wrong"})
    assert r.status_code == 201, r.text
    report = r.json()
    with a.client() as c:
        seen = c.get(f"/admin/reports/{report['id']}", headers=a.admin_headers())
    assert seen.status_code == 200 and seen.json()["prediction_id"] == ids_a[-1]
    assert seen.json()["inputs"] is not None  # A's logged input, found through B

    # Both replicas' rows are in the one log the jobs read (one shared directory,
    # as a ReadWriteMany volume is on a cluster).
    reader = PredictionLogReader(shared_log)
    since = datetime.now(UTC) - timedelta(hours=1)
    _wait_for(lambda: reader.count_since(since) >= 600, 30, "600 logged rows")
    assert reader.count_since(since) == 600
    assert reader.get(ids_a[0]) is not None and reader.get(ids_b[0]) is not None


def test_a_change_through_one_replica_reaches_the_other(
    replicas: list[ServiceProcess],
    default_pack: Path,
    tmp_path: Path,
    shared_db: str,
    shared_packs: Path,
) -> None:
    a, b = replicas
    # Separate model stores, as pods have (`service.cli serve` puts BENTOML_HOME
    # under each data dir): only the shared pack directory links them.
    store_b = PackStore.at(b.data_dir / "bentoml" / "models")
    with a.client() as ca, b.client() as cb:
        policy = (PROJECT_ROOT / "policies" / "default.yaml").read_text()
        new = re.sub(r"(?m)^version: .*$", "version: fanned-out", policy)
        assert new != policy
        put = ca.put(
            "/admin/policy",
            content=new,
            headers={**a.admin_headers(), "Content-Type": "application/yaml"},
        )
        assert put.status_code == 200, put.text
        changed = time.monotonic()

        def b_serves_it() -> bool:
            return bool(cb.get("/info").json()["policy_version"] == "fanned-out")

        _wait_for(b_serves_it, 30, "B serving the policy PUT on A")
        fan_out_s = time.monotonic() - changed
        print(f"policy fan-out A -> B: {fan_out_s:.2f} s")
        answer = cb.post("/predict", json={"instances": instances(like_training(1))})
        assert answer.json()["predictions"][0]["policy_version"] == "fanned-out"

        # A real promotion through A (gate included): B has never seen the pack
        # and serves it within the same bound, from the shared pack directory.
        candidate = tmp_path / "promoted"
        build_default_pack(candidate, hidden=(8,))
        with a.client(headers=a.admin_headers(), timeout=300) as admin:
            promoted = admin.post(
                "/admin/promote",
                json={"pack_dir": str(candidate), "max_metric_drop": 1.0},
            )
        assert promoted.status_code == 200, promoted.text
        changed = time.monotonic()
        model_version = promoted.json()["model_version"]

        def b_serves_the_pack() -> bool:
            return bool(cb.get("/info").json()["model_version"] == model_version)

        _wait_for(b_serves_the_pack, 30, "B serving the pack promoted through A")
        print(f"promotion fan-out A -> B: {time.monotonic() - changed:.2f} s")
        assert cb.get("/info").json()["follow_failure"] is None
        name, version = promoted.json()["pack_tag"].split(":")
        assert (shared_packs / name / version).is_dir()
        assert store_b.open(f"{name}:{version}").path.is_relative_to(store_b.root)
        answer = cb.post("/predict", json={"instances": instances(like_training(1))})
        assert answer.json()["predictions"][0]["model_version"] == model_version

        # A pack that reached A's model store but not the shared directory (put
        # in A's store and the row written directly): B keeps what it serves and
        # says so, in /info and in a metric.
        unshared = shutil.copytree(default_pack, tmp_path / "candidate")
        (unshared / POLICY_FILE).write_text(new)  # another pack digest
        stored = PackStore.at(a.data_dir / "bentoml" / "models").add(unshared)
        engine = make_engine(shared_db)
        try:
            with session_factory(engine)() as s:
                (row,) = s.execute(select(ServedStateRow)).scalars().all()
                write_served(
                    s,
                    row.deployment,
                    pack_tag=stored.tag,
                    pack_sha256=stored.sha256,
                    policy_yaml=row.policy_yaml,
                    policy_source="promoted through replica A",
                    configured=row.configured,
                )
        finally:
            engine.dispose()

        def b_reports_it() -> bool:
            return cb.get("/info").json()["follow_failure"] is not None

        _wait_for(b_reports_it, 30, "B reporting the pack it cannot load")
        failure = cb.get("/info").json()["follow_failure"]
        assert failure["pack_tag"] == stored.tag
        assert "PackNotShared" in failure["error"]
        assert cb.get("/info").json()["model_version"] == model_version
        assert "flywheel_served_state_follow_failing 1.0" in cb.get("/metrics").text
        assert ca.get("/info").json()["follow_failure"] is None  # A has the pack
        answer = cb.post("/predict", json={"instances": instances(like_training(1))})
        assert answer.status_code == 200  # B still answers, with the old pack


# Two replicas (four workers) start and run Evidently on two shared cores: more
# than the suite's default ten minutes on a busy machine.
@pytest.mark.timeout(1500)
def test_drift_runs_once_per_window_and_survives_a_killed_holder(
    replicas: list[ServiceProcess], shared_db: str
) -> None:
    a, b = replicas
    for i, svc in enumerate(replicas):
        _predict_ids(svc, 150, seed=10 + i)
    engine = make_engine(shared_db)
    sessions = session_factory(engine)

    def lease() -> leases.Lease | None:
        with sessions() as s:
            return leases.read(s, DRIFT_JOB)

    try:
        base = _drift_runs(a) + _drift_runs(b)
        started = time.monotonic()
        most_at_once = 0

        def two_more_runs() -> bool:
            nonlocal most_at_once
            most_at_once = max(most_at_once, _drift_children(replicas))
            return _drift_runs(a) + _drift_runs(b) >= base + 2

        # A run takes ~25 s on a loaded 2-core machine (Evidently's import).
        _wait_for(two_more_runs, 300, "2 drift runs")
        # Each replica alone would run every window; together they run once in
        # each (one more: a run under way when we started), never two at a time.
        windows = (time.monotonic() - started) / DRIFT_INTERVAL_S + 1
        assert _drift_runs(a) + _drift_runs(b) - base <= windows
        assert most_at_once == 1

        # Kill the replica holding the lease, mid-run, without a chance to release.
        def running_holder() -> ServiceProcess | None:
            current = lease()
            with sessions() as s:
                now = leases.database_now(s)
            if current is None or current.expires_at <= now:
                return None
            pid = int(current.holder.split(":")[1])
            return next((r for r in replicas if pid in _pids(r)), None)

        _wait_for(lambda: running_holder() is not None, 120, "a drift run in progress")
        victim = running_holder()
        assert victim is not None
        survivor = b if victim is a else a
        dead = lease()
        assert dead is not None
        kill_tree(sorted(_pids(victim)))
        victim.process.wait(timeout=10)
        before = _drift_runs(survivor)

        def taken_over() -> bool:
            current = lease()
            return current is not None and current.token > dead.token

        _wait_for(taken_over, LEASE_TTL_S + 60, "the survivor taking the lease")
        current = lease()
        assert current is not None
        assert int(current.holder.split(":")[1]) in _pids(survivor)
        _wait_for(lambda: _drift_runs(survivor) > before, 300, "a run on the survivor")
    finally:
        engine.dispose()
