"""Prediction ids: UUIDv7 layout, unique, and growing with time (both code paths)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from feedback.models import (
    PredictionIdBlock,
    new_prediction_id_block,
    new_prediction_ids,
)


@pytest.mark.parametrize("n", [1, 31, 32, 1000])
def test_ids_are_unique_uuid7_hex(n: int) -> None:
    ids = new_prediction_ids(n)
    assert len(ids) == n == len(set(ids))
    for text in ids:
        assert len(text) == 32 and int(text, 16) >= 0
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        millis = int(text[:12], 16)
        assert abs(millis - time.time() * 1000) < 60_000


@pytest.mark.parametrize("n", [1, 1000])
def test_ids_grow_with_time(n: int) -> None:
    first = new_prediction_ids(n)
    time.sleep(0.002)
    later = new_prediction_ids(n)
    assert max(first) < min(later)


@pytest.mark.parametrize("n", [1, 31, 32, 1000])
def test_a_block_reads_as_its_ids_and_its_buffer(n: int) -> None:
    """However the ids are held (a list, or a block over their buffer), each
    reads the same by index, by slice, by iteration and as JSON."""
    ids, joined = new_prediction_id_block(n)
    listed = list(ids)
    assert "".join(listed).encode() == joined and len(ids) == n
    assert ids[0] == listed[0] and ids[-1] == listed[-1] == ids[n - 1]
    assert list(ids[1:4]) == listed[1:4]
    with pytest.raises(IndexError):
        ids[n]
    if isinstance(ids, PredictionIdBlock):
        assert orjson.loads(ids.json_array()) == listed
        assert (
            orjson.loads(orjson.dumps({"i": orjson.Fragment(ids.json_array())}))["i"]
            == listed
        )


def test_an_empty_block_and_a_torn_buffer() -> None:
    assert orjson.loads(PredictionIdBlock(b"").json_array()) == []
    assert list(PredictionIdBlock(b"")) == []
    with pytest.raises(ValueError, match="32 hex digits"):
        PredictionIdBlock(b"0" * 33)
