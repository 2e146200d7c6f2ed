"""Production settings refuse a weak admin token, and say so without echoing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.reliability.helpers import run_to_exit

STRONG = "a-strong-admin-token-of-32-chars"


@pytest.mark.parametrize(
    "token",
    [None, "", "changeme", "dev-admin-token", "fifteen-chars!!"],
    ids=["unset", "empty", "changeme", "known-default", "15-chars"],
)
def test_production_refuses_a_missing_or_weak_admin_token(token: str | None) -> None:
    security = {} if token is None else {"admin_token": token}
    with pytest.raises(ValidationError, match="FLYWHEEL_SECURITY__ADMIN_TOKEN") as info:
        Settings(environment="production", security=security)  # type: ignore[arg-type]
    if token:
        assert token not in str(info.value), "the error echoes the token"


def test_production_accepts_a_strong_admin_token() -> None:
    settings = Settings(
        environment="production",
        security={"admin_token": STRONG},  # type: ignore[arg-type]
    )
    assert settings.security.admin_token is not None
    assert STRONG not in repr(settings)


def test_serve_refuses_to_start_in_production_with_a_weak_token(
    tmp_path: Path, default_pack: Path
) -> None:
    weak = "weak-tok-1234"
    key = "api-key-that-must-not-leak-0123"
    code, output = run_to_exit(
        tmp_path / "data",
        default_pack,
        timeout_s=60,
        FLYWHEEL_ENVIRONMENT="production",
        FLYWHEEL_SECURITY__ADMIN_TOKEN=weak,
        FLYWHEEL_SECURITY__API_KEY=key,
    )
    assert code is not None, f"still running after 60 s:\n{output[-2000:]}"
    assert code != 0
    assert "FLYWHEEL_SECURITY__ADMIN_TOKEN" in output
    assert "Traceback" not in output, output  # one message, not a stack
    assert weak not in output
    assert key not in output
