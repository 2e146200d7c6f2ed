"""With `store_inputs: false`, no input value reaches any stored byte.

A service with that policy answers rows carrying planted values (one out of
bounds, so the input-bounds stage names it in the trace, and one in bounds),
takes a report by id and a report that sends the measurements itself, and is
stopped (its segments compacted). Then every file under its data directory is
searched for the planted values: as text, as float32 and float64 bytes, and, for
compressed Parquet segments, in their decoded values.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from tests.reliability.helpers import ADELIE, DEFAULT_POLICY, serving, write_policy

pytestmark = pytest.mark.integration

OUT_OF_BOUNDS = 987654.321  # flipper length far beyond any penguin
IN_BOUNDS = 43.21987  # a bill length, allowed


def _needles(value: float) -> list[bytes]:
    """How `value` may look in stored bytes: decimal text of the float32 and
    float64 forms, and their binary encodings."""
    f32 = np.float32(value)
    texts = {repr(value), str(f32), repr(float(f32)), f"{value:.6g}"}
    binary = [
        struct.pack("<f", f32),
        struct.pack("<d", value),
        struct.pack("<d", float(f32)),
    ]
    return [t.encode() for t in texts] + binary


def _decoded_parquet_text(path: Path) -> str:
    return repr(pq.read_table(path).to_pylist())


def _sqlite_text(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def test_no_input_value_is_stored_anywhere_under_store_inputs_false(
    tmp_path: Path, default_pack: Path
) -> None:
    bounds = yaml.safe_load(DEFAULT_POLICY.read_text())["input_bounds"]
    policy = write_policy(
        tmp_path / "no-inputs.yaml",
        store_inputs=False,
        input_bounds={**bounds, "action": "abstain"},
    )
    data_dir = tmp_path / "svc"
    rows = [
        {**ADELIE, "flipper_length_mm": OUT_OF_BOUNDS},
        {**ADELIE, "bill_length_mm": IN_BOUNDS},
    ]
    with (
        serving(
            data_dir, default_pack, FLYWHEEL_GUARDRAILS__POLICY_PATH=str(policy)
        ) as svc,
        svc.client() as c,
    ):
        answer = c.post("/predict", json={"instances": rows}).json()
        oob, in_bounds = answer["predictions"]
        assert oob["abstained"] and "out_of_bounds" in str(oob["trace"])
        assert not in_bounds["abstained"]
        columns = {f: [r[f] for r in rows] for f in rows[0]}
        assert c.post("/predict", json={"columns": columns}).status_code == 200
        by_id = c.post(
            "/report", json={"prediction_id": oob["prediction_id"], "comment": "x"}
        )
        assert by_id.status_code == 201, by_id.text
        direct = c.post(
            "/report",
            json={"inputs": rows[0], "bad_output": {"label": "Gentoo"}},
        )
        assert direct.status_code == 201, direct.text
        logged = c.get(
            f"/admin/predictions/{oob['prediction_id']}", headers=svc.admin_headers()
        )
        assert logged.status_code == 200 and logged.json()["inputs"] is None
        # The stage's reason survives without the measurement.
        assert "flipper_length_mm" in str(logged.json()["trace"])

    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files), "no compacted segment"
    assert any(p.name == "flywheel.db" for p in files)
    found = []
    for path in files:
        blobs = [path.read_bytes()]
        if path.suffix == ".parquet":
            blobs.append(_decoded_parquet_text(path).encode())
        if path.name == "flywheel.db":
            blobs.append(_sqlite_text(path).encode())
        for value in (OUT_OF_BOUNDS, IN_BOUNDS):
            for needle in _needles(value):
                if any(needle in blob for blob in blobs):
                    found.append((str(path.relative_to(data_dir)), value, needle))
    assert not found, found
