"""Request bodies for load tests, sampled from the real penguin data.

Shared by the locust scenarios and the benchmark so both send what users send:
single rows, batches of named-feature rows, the columnar batch form, and rows with
their island as the deployment context.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

FEATURES = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


@dataclass(frozen=True)
class Penguin:
    features: dict[str, float]
    label: str
    island: str


@cache
def penguins() -> tuple[Penguin, ...]:
    """The 342 complete penguins of `palmerpenguins` (offline)."""
    from packs.build_default import penguin_frame

    frame = penguin_frame()
    return tuple(
        Penguin(
            features={name: float(row[name]) for name in FEATURES},
            label=str(row["label"]),
            island=str(row["island"]),
        )
        for _, row in frame.iterrows()
    )


def split_by_service(
    base_url: str, pool: Sequence[Penguin] | None = None, timeout_s: float = 10
) -> tuple[list[Penguin], list[Penguin]]:
    """(accepted, rejected): which penguins the served policy's input bounds let in.

    The default policy rejects (422 `input_out_of_bounds`) rows outside the pack's
    training range plus a margin, which excludes a real penguin or two. One batch
    is posted; each 422 names the first offending row, which is set aside and the
    rest posted again. Uses only the HTTP API, so it follows any pack and policy.
    """
    accepted = list(pool if pool is not None else penguins())
    rejected: list[Penguin] = []
    while accepted:
        body = json.dumps(instances_body(accepted)).encode()
        request = urllib.request.Request(
            f"{base_url}/predict",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                return accepted, rejected
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read()).get("error", {})
            if exc.code != 422 or error.get("code") != "input_out_of_bounds":
                raise
            rejected.append(accepted.pop(int(error["row"])))
    return accepted, rejected


def sample(
    rows: int,
    rng: random.Random | None = None,
    pool: Sequence[Penguin] | None = None,
) -> list[Penguin]:
    """`rows` penguins drawn with replacement (from `pool`, default all)."""
    return (rng or random).choices(pool or penguins(), k=rows)


def instances_body(rows: list[Penguin], context: str | None = None) -> dict[str, Any]:
    """`{"instances": [{feature: value}, ...]}`, with an optional context."""
    body: dict[str, Any] = {"instances": [p.features for p in rows]}
    if context is not None:
        body["context"] = context
    return body


def columns_body(rows: list[Penguin]) -> dict[str, Any]:
    """The columnar form: `{"columns": {feature: [values...]}}`."""
    return {"columns": {name: [p.features[name] for p in rows] for name in FEATURES}}


def report_body(prediction_id: str, expected_label: str) -> dict[str, Any]:
    """A bad-result report naming a logged prediction."""
    return {
        "prediction_id": prediction_id,
        "expected_label": expected_label,
        "categories": ["load-test"],
        "comment": "sent by the load test",
        "reporter": "locust",
    }


def fixed_bodies(
    pool: Sequence[Penguin] | None = None, seed: int = 0
) -> dict[str, bytes]:
    """The benchmark's fixed JSON bodies (same bytes for every server)."""
    rng = random.Random(seed)
    one = sample(1, rng, pool)
    thousand = sample(1000, rng, pool)

    def dumps(body: dict[str, Any]) -> str:
        return json.dumps(body, separators=(",", ":"))

    return {
        "single": dumps(instances_body(one)).encode(),
        "batch1000": dumps(instances_body(thousand)).encode(),
        "columns1000": dumps(columns_body(thousand)).encode(),
        "single_context": dumps(instances_body(one, context=one[0].island)).encode(),
    }
