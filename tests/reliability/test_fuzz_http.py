"""Schemathesis against the running service's own `/openapi.json`.

Every operation gets generated requests, valid by the schema (positive) and invalid
on purpose (negative); each answer must not be a 5xx and must match what the schema
declares (status code, content type, headers, body). Admin operations are called
with the admin token so that their handlers, not just the token check, are fuzzed.
Bounded and derandomized: the same cases on every run, in a few seconds.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from tests.servers import ADMIN_TOKEN, ServiceProcess

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
]


def _fuzz(url: str, mode: GenerationMode) -> tuple[list[str], dict[str, set[int]]]:
    """Run every operation; (failures, statuses seen per operation)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: list[str] = []
    seen = {op.label: _fuzz_operation(url, op, mode, failures) for op in operations}
    return failures, seen


def _fuzz_operation(
    url: str, operation: Any, mode: GenerationMode, failures: list[str]
) -> set[int]:
    headers = (
        {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if operation.path.startswith("/admin")
        else {}
    )
    statuses: set[int] = set()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        statuses.add(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except BaseException as exc:  # schemathesis raises a FailureGroup
            failures.append(f"{operation.label} -> {response.status_code}: {exc}")

    # Negative mode finds nothing to make invalid in an operation without input.
    with contextlib.suppress(Unsatisfiable):
        run()
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_no_5xx_and_answers_match_the_schema(
    open_service: ServiceProcess, mode: GenerationMode
) -> None:
    failures, seen = _fuzz(open_service.url, mode)
    assert not failures, f"{len(failures)} failures:\n" + "\n\n".join(failures[:5])
    # The fuzzing reached handlers, not only the validation in front of them.
    assert any(200 in codes for codes in seen.values()), seen
    with open_service.client() as c:
        assert c.get("/readyz").status_code == 200
