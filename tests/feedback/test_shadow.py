"""Shadow runs: the tallies, their merge across workers, the store rows and the
gate's shadow rule (pure logic and a real SQLite file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedback import shadow as shadow_store
from feedback.db import make_engine, migrate, session_factory
from feedback.gate import NO_SHADOW, ShadowRules, gate, shadow_check
from feedback.models import utcnow
from feedback.regression import RegressionReport
from feedback.shadow import (
    ABSTAINED,
    MAX_DISAGREEMENTS,
    ShadowResult,
    ShadowRunRecord,
    ShadowTally,
)
from tests.feedback.test_regression import report_of

LABELS = ("A", "B", "C")


def probs(*rows: tuple[float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=float)


def tally_of(
    served: list[str | None],
    served_p: np.ndarray,
    candidate: list[str | None],
    candidate_p: np.ndarray,
    *,
    inputs: list[dict[str, float]] | None = None,
) -> ShadowTally:
    t = ShadowTally()
    t.add(
        prediction_ids=[f"id{i}" for i in range(len(served))],
        label_names=LABELS,
        served_labels=served,
        served_probabilities=served_p,
        candidate_labels=candidate,
        candidate_probabilities=candidate_p,
        seconds=0.002,
        inputs=inputs,
    )
    return t


def test_tally_counts_agreement_overall_per_label_and_on_confident_rows() -> None:
    t = tally_of(
        ["A", "A", "B", None],
        probs((0.95, 0.05, 0), (0.6, 0.4, 0), (0.1, 0.9, 0), (0.4, 0.3, 0.3)),
        ["A", "B", "B", None],
        probs((0.9, 0.1, 0), (0.3, 0.7, 0), (0.2, 0.8, 0), (0.5, 0.3, 0.2)),
    )
    assert (t.rows, t.agreed) == (4, 3)
    assert t.per_label == {"A": [2, 1], "B": [1, 1], ABSTAINED: [1, 1]}
    # Served top probability >= 0.9: rows 0 and 2, both agreed.
    assert (t.confident_rows, t.confident_agreed) == (2, 2)
    assert t.served_estimated_accuracy == pytest.approx((0.95 + 0.6 + 0.9 + 0.4) / 4)
    assert t.candidate_estimated_accuracy == pytest.approx((0.9 + 0.7 + 0.8 + 0.5) / 4)
    (row,) = t.disagreements
    assert row["prediction_id"] == "id1"
    assert (row["served_label"], row["served_probability"]) == ("A", 0.6)
    assert (row["candidate_label"], row["candidate_probability"]) == ("B", 0.7)
    assert row["distance"] == pytest.approx(0.3)
    assert "inputs" not in row
    summary = t.summary()
    assert summary["agreement"] == 0.75
    assert summary["agreement_per_served_label"]["A"] == {"rows": 2, "agreement": 0.5}
    assert summary["candidate_latency_ms_per_row"] == pytest.approx(0.5)


def test_disagreements_keep_inputs_only_when_given_and_the_largest_first() -> None:
    n = MAX_DISAGREEMENTS + 5
    served_p = np.tile([0.8, 0.2, 0.0], (n, 1))
    candidate_p = np.array([[0.8 - d, 0.2 + d, 0.0] for d in np.linspace(0.31, 0.7, n)])
    t = tally_of(
        ["A"] * n,
        served_p,
        ["B"] * n,
        candidate_p,
        inputs=[{"x": float(i)} for i in range(n)],
    )
    assert len(t.disagreements) == MAX_DISAGREEMENTS
    distances = [r["distance"] for r in t.disagreements]
    assert distances == sorted(distances, reverse=True)
    assert t.disagreements[0]["inputs"] == {"x": float(n - 1)}


def test_tallies_of_several_workers_merge_to_their_sum() -> None:
    one = tally_of(["A"], probs((0.95, 0.05, 0)), ["B"], probs((0.1, 0.9, 0)))
    two = tally_of(
        ["A", "C"],
        probs((0.9, 0.1, 0), (0, 0, 1)),
        ["A", "C"],
        probs((0.9, 0.1, 0), (0, 0, 1)),
    )
    two.dropped = 3
    merged = ShadowTally.merged(
        [ShadowTally.from_json(one.to_json()), ShadowTally.from_json(two.to_json())]
    )
    assert (merged.rows, merged.agreed, merged.dropped) == (3, 2, 3)
    assert merged.per_label == {"A": [2, 1], "C": [1, 1]}
    assert (merged.confident_rows, merged.confident_agreed) == (3, 2)
    assert len(merged.disagreements) == 1
    assert merged.to_json() == ShadowTally.from_json(merged.to_json()).to_json()


def _result(tally: ShadowTally) -> ShadowResult:
    run = ShadowRunRecord(
        id=7,
        deployment="d",
        pack_tag="p:1",
        pack_sha256="0" * 64,
        model_version="v2",
        policy_version="pv",
        policy_yaml="",
        served_model_version="v1",
        sample_rate=0.1,
        started_at=utcnow(),
        stopped_at=None,
    )
    return ShadowResult(run, tally, workers=1)


def _tally(
    rows: int, served: float, candidate: float, confident: int, agreed: int
) -> ShadowTally:
    return ShadowTally(
        rows=rows,
        agreed=agreed,
        confident_rows=confident,
        confident_agreed=agreed,
        served_confidence_sum=served * rows,
        candidate_confidence_sum=candidate * rows,
    )


RULES = ShadowRules(min_rows=100, accuracy_margin=0.02, min_confident_agreement=0.95)


@pytest.mark.parametrize(
    ("tally", "failing"),
    [
        (_tally(100, 0.95, 0.94, 100, 96), []),
        (_tally(99, 0.95, 0.95, 99, 99), ["rows"]),
        (_tally(200, 0.95, 0.92, 200, 200), ["estimated_accuracy"]),
        (_tally(200, 0.95, 0.93, 200, 190), []),  # exactly at both limits
        (_tally(200, 0.95, 0.97, 100, 94), ["confident_agreement"]),
        (_tally(200, 0.5, 0.5, 0, 0), []),  # no confident row: nothing to compare
    ],
)
def test_shadow_rule_needs_rows_accuracy_and_confident_agreement(
    tally: ShadowTally, failing: list[str]
) -> None:
    section, reasons = shadow_check(_result(tally), RULES)
    failed = [name for name, ok in section["checks"].items() if not ok]
    if "rows" in failing:
        assert failed == ["rows", "estimated_accuracy", "confident_agreement"]
    else:
        assert failed == failing
    assert section["passed"] is (not failing)
    assert len(reasons) == len(failing)
    assert all("shadow" in r for r in reasons)


def _report() -> RegressionReport:
    return report_of([], 0.9, 0.9)


def test_gate_without_a_shadow_run_says_so_and_does_not_block() -> None:
    decision = gate(_report())
    assert decision.passed
    assert decision.shadow == {"status": NO_SHADOW, "passed": True}
    assert "shadow: no shadow run" in decision.to_text()


def test_gate_fails_on_a_failing_shadow_run_and_names_its_numbers() -> None:
    decision = gate(
        _report(),
        shadow=_result(_tally(200, 0.95, 0.80, 200, 200)),
        shadow_rules=RULES,
    )
    assert not decision.passed
    assert decision.shadow["status"] == "checked"
    assert decision.shadow["candidate_estimated_accuracy"] == pytest.approx(0.8)
    assert "shadow run 7 FAILED" in decision.to_text()
    assert any("estimated accuracy" in r for r in decision.reasons)


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'shadow.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _start(session, tag: str, deployment: str = "d"):  # type: ignore[no-untyped-def]
    return shadow_store.start_run(
        session,
        deployment,
        pack_tag=tag,
        pack_sha256="0" * 64,
        model_version=tag,
        policy_version="pv",
        policy_yaml="version: x",
        served_model_version="v1",
        sample_rate=0.1,
    )


def test_a_new_run_replaces_the_active_one_and_tallies_sum_per_run(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        first, replaced = _start(s, "p:1")
        assert replaced is None
        _start(s, "other:1", deployment="elsewhere")
        second, replaced = _start(s, "p:2")
        assert replaced is not None and replaced.id == first.id
        active = shadow_store.active_run(s, "d")
        assert active is not None and active.id == second.id
        a = tally_of(["A"], probs((1, 0, 0)), ["A"], probs((1, 0, 0)))
        b = tally_of(["B"], probs((0, 1, 0)), ["C"], probs((0, 0, 1)))
        shadow_store.write_tally(s, second.id, "w1", a.to_json())
        shadow_store.write_tally(s, second.id, "w2", a.to_json())
        shadow_store.write_tally(s, second.id, "w2", b.to_json())  # replaces
        result = shadow_store.run_result(s, second)
        assert (result.workers, result.tally.rows, result.tally.agreed) == (2, 2, 1)
        stopped = shadow_store.stop_run(s, "d")
        assert stopped is not None and stopped.stopped_at is not None
        assert shadow_store.active_run(s, "d") is None
        assert shadow_store.stop_run(s, "d") is None
        found = shadow_store.result_for_pack(s, "d", "p:2")
        assert found is not None and found.tally.rows == 2
        assert shadow_store.result_for_pack(s, "d", "other:1") is None
        old = shadow_store.result_for_pack(s, "d", "p:1")
        assert old is not None and old.tally.rows == 0
