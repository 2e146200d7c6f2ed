"""The shadow sink in-process: sampling, a full queue drops and counts (never
blocks), the candidate runs its own pipeline, and stopping a run stops counting.
Real pack store, real SQLite, real onnxruntime sessions; no HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from feedback.db import make_engine, migrate, session_factory
from feedback.models import new_prediction_ids
from guardrails.batch import RequestContext
from loadtests.payloads import penguins
from packs.model_store import PackStore
from service.served import ServedState
from service.settings import FeedbackSettings, Settings
from service.shadow import ShadowRunner
from service.shadow_admin import ShadowAdmin

QUEUE = 3


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from packs.build_default import build_default_pack

    out = tmp_path_factory.mktemp("candidate") / "wider"
    build_default_pack(out, hidden=(32,))
    return out


@pytest.fixture
def runner(tmp_path: Path, default_pack: Path) -> Iterator[ShadowRunner]:
    settings = Settings(
        data_dir=tmp_path,
        pack_dir=default_pack,
        feedback=FeedbackSettings(shadow_queue_requests=QUEUE),
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'flywheel.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    store = PackStore.at(tmp_path / "models")
    served = ServedState(settings, sessions=sessions, store=store)
    shadow = ShadowRunner(settings, served, store, sessions)
    yield shadow
    shadow.stop()
    engine.dispose()


def offer_rows(runner: ShadowRunner, n: int) -> np.ndarray:
    served = runner.served.current
    rows = [p.features for p in penguins()]
    x = np.array(
        [[r[f] for f in served.meta.feature_names] for r in rows[:n]],
        dtype=np.float32,
    )
    ctx = RequestContext()
    batch = served.pipeline.run(x, served.pack.predict_proba, ctx)
    before = batch.probabilities.copy()
    runner.offer(served, x, ctx, new_prediction_ids(n), batch)
    assert np.array_equal(batch.probabilities, before)  # the answer is untouched
    return x


def test_a_full_queue_drops_and_counts_instead_of_waiting(
    runner: ShadowRunner, candidate: Path
) -> None:
    ShadowAdmin(runner).begin(str(candidate), 1.0)
    served = runner.served.current
    for i in range(10):  # nothing drains yet: three wait, seven are dropped
        row = [p.features for p in penguins()][i]
        x = np.array([[row[f] for f in served.meta.feature_names]], np.float32)
        batch = served.pipeline.run(x, served.pack.predict_proba, RequestContext())
        runner.offer(served, x, RequestContext(), new_prediction_ids(1), batch)
    runner.start()
    assert runner.wait_idle()
    result = ShadowAdmin(runner).result()
    assert (result["rows_seen"], result["rows_dropped"]) == (QUEUE, 10 - QUEUE)
    assert result["rows_failed"] == 0


def test_rows_of_a_batch_are_sampled_at_the_rate(
    runner: ShadowRunner, candidate: Path
) -> None:
    ShadowAdmin(runner).begin(str(candidate), 0.1)
    runner.start()
    offer_rows(runner, 340)
    assert runner.wait_idle()
    seen = ShadowAdmin(runner).result()["rows_seen"]
    assert 15 <= seen <= 60  # binomial(340, 0.1): mean 34, sd 5.5


def test_no_run_no_rows_and_a_stopped_run_counts_no_more(
    runner: ShadowRunner, candidate: Path
) -> None:
    runner.start()
    offer_rows(runner, 5)  # no run yet: ignored
    ShadowAdmin(runner).begin(str(candidate), 1.0)
    offer_rows(runner, 5)
    assert runner.wait_idle()
    final = ShadowAdmin(runner).end()
    assert final["status"] == "stopped" and final["rows_seen"] == 5
    offer_rows(runner, 5)
    assert runner.wait_idle()
    assert ShadowAdmin(runner).result()["rows_seen"] == 5


def test_the_first_rows_counted_after_a_flush_reach_the_store(
    runner: ShadowRunner, candidate: Path
) -> None:
    ShadowAdmin(runner).begin(str(candidate), 1.0)
    assert (
        ShadowAdmin(runner).result()["rows_seen"] == 0
    )  # written once, with nothing counted
    offer_rows(runner, 1)
    runner.start()
    assert runner.wait_idle()
    assert ShadowAdmin(runner).result()["rows_seen"] == 1
