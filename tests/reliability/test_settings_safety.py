"""Production settings refuse a weak admin token or API key (under 128 bits by the
entropy estimate, or repeats), and say so without echoing it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.token_strength import MIN_TOKEN_BITS, estimated_bits
from tests.reliability.helpers import run_to_exit

STRONG = "a-strong-admin-token-of-32-chars"


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "changeme",
        "dev-admin-token",
        "fifteen-chars!!",
        "aaaaaaaaaaaaaaaa",
        "a" * 64,
        "abcd" * 16,
        "0123456789abcdef",
        "Password12345678",
        "aaaaaaaabbbbbbbbccccccccddddddddeeeeeeee",
    ],
    ids=[
        "unset",
        "empty",
        "changeme",
        "known-default",
        "15-chars",
        "one-letter-16",
        "one-letter-64",
        "repeated-unit",
        "hex-digits-in-order",
        "dictionary-like",
        "few-letters-in-runs",
    ],
)
def test_production_refuses_a_missing_or_weak_admin_token(token: str | None) -> None:
    security = {} if token is None else {"admin_token": token}
    with pytest.raises(ValidationError, match="FLYWHEEL_SECURITY__ADMIN_TOKEN") as info:
        Settings(environment="production", security=security)  # type: ignore[arg-type]
    if token:
        assert token not in str(info.value), "the error echoes the token"


@pytest.mark.parametrize(
    "make",
    [lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(16)],
    ids=["token_urlsafe(32)", "token_hex(16)"],
)
def test_production_accepts_generated_tokens_of_128_bits_or_more(
    make: Callable[[], str],
) -> None:
    for _ in range(200):  # random tokens: none of them may be refused
        token = make()
        assert estimated_bits(token) >= MIN_TOKEN_BITS, token
        Settings(environment="production", security={"admin_token": token})  # type: ignore[arg-type]


def test_production_refuses_a_weak_api_key() -> None:
    with pytest.raises(ValidationError, match="FLYWHEEL_SECURITY__API_KEY"):
        Settings(
            environment="production",
            security={"admin_token": STRONG, "api_key": "k" * 40},  # type: ignore[arg-type]
        )


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
