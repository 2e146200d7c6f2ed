"""What the service hands the log, from real guardrail output: labels and reasons
as codes that name the same answers, a trace shared by rows written once, and no
input value in a trace when inputs may not be stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedback.log_batch import answered_batch
from feedback.log_segments import (
    ColumnsRecord,
    column_record,
    schema_for,
    to_record_batch,
)
from feedback.models import new_prediction_id_block
from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.policy import Policy
from packs.loader import ModelPack

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PLANTED = 987.625  # an out-of-bounds flipper length, exactly representable


@pytest.mark.parametrize("store_inputs", [True, False])
def test_a_guarded_request_reads_back_from_its_columns_record(
    default_pack: Path, store_inputs: bool
) -> None:
    import pandas as pd

    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    policy = Policy.load(POLICIES / "default.yaml")
    policy = policy.model_copy(
        update={
            "input_bounds": policy.input_bounds.model_copy(update={"action": "abstain"})
        }
    )
    pipeline = build_pipeline(pack, policy)
    meta = pack.metadata
    test = pd.read_parquet(pack.test_path())
    x = np.resize(test[meta.feature_names].to_numpy(np.float32), (200, 4))
    x[3, meta.feature_names.index("flipper_length_mm")] = PLANTED
    guarded = pipeline.run(x, pack.predict_proba, RequestContext("Biscoe"))
    assert guarded.abstained[3] and guarded.reasons[3] == "out_of_bounds"
    ids, ids_hex = new_prediction_id_block(len(x))
    batch = answered_batch(
        ids,
        guarded,
        x,
        context="Biscoe",
        versions=(meta.version, policy.version),
        store_inputs=store_inputs,
        feature_names=tuple(meta.feature_names),
        label_names=tuple(meta.labels),
        ids_hex=ids_hex,
    )
    record = column_record(batch)
    assert record is not None
    table = ColumnsRecord(record, schema_for(batch)).batch()
    assert table.to_pylist() == to_record_batch(batch, schema_for(batch)).to_pylist()
    assert table.column("label").to_pylist() == guarded.labels
    assert table.column("reason").to_pylist() == guarded.reasons
    assert table.column("id").to_pylist() == list(ids)
    # The context acted on every row alike: its trace is written a few times
    # (once per distinct trace), not once per row.
    assert record.count(b'"context":"Biscoe"') < 5
    planted = f"{PLANTED}".encode()
    assert (planted in record) is store_inputs
    assert (np.float32(PLANTED).tobytes() in record) is store_inputs


def test_the_metric_counts_from_codes_are_the_answers_counted(
    default_pack: Path,
) -> None:
    """Labels and reasons counted from their codes (what the metrics take) equal
    the named answers counted, abstentions included."""
    import dataclasses
    from collections import Counter

    import pandas as pd

    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    policy = Policy.load(POLICIES / "default.yaml")
    policy = policy.model_copy(
        update={
            "input_bounds": policy.input_bounds.model_copy(update={"action": "abstain"})
        }
    )
    meta = pack.metadata
    test = pd.read_parquet(pack.test_path())
    x = np.resize(test[meta.feature_names].to_numpy(np.float32), (300, 4))
    x[::7, meta.feature_names.index("flipper_length_mm")] = PLANTED
    guarded = build_pipeline(pack, policy).run(x, pack.predict_proba, RequestContext())
    named = Counter(guarded.labels)
    del named[None]
    reasons = Counter(guarded.reasons)
    del reasons[None]
    assert reasons["out_of_bounds"] >= 300 // 7
    assert guarded.label_counts(meta.labels) == dict(named)
    assert guarded.reason_counts() == dict(reasons)
    by_hand = dataclasses.replace(guarded, label_codes=None, reason_codes=None)
    assert by_hand.label_counts(meta.labels) == dict(named)
    assert by_hand.reason_counts() == dict(reasons)
