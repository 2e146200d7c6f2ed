"""Database URLs in messages and log lines never show their password."""

from __future__ import annotations

import pytest

from feedback.db import make_engine, masked_url

PASSWORD = "TopSecretPw"


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{PASSWORD}@db.example:3306/x",
        f"oracle+cx_oracle://scott:{PASSWORD}@h/orcl",
    ],
)
def test_an_unsupported_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ValueError) as err:
        make_engine(url)
    message = str(err.value)
    assert PASSWORD not in message
    assert "u:***@" in message or "scott:***@" in message
    assert "sqlite:///" in message  # says what is allowed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{PASSWORD}@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        (f"::{PASSWORD}::", "<unparseable database URL>"),
    ],
)
def test_masked_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert masked_url(url) == shown
