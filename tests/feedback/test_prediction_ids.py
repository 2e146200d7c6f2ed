"""Prediction ids: UUIDv7 layout, unique, and growing with time (both code paths)."""

from __future__ import annotations

import time
import uuid

import pytest

from feedback.models import new_prediction_ids


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
