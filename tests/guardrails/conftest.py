"""Fixtures for the guardrail tests (the default pack comes from tests/conftest)."""

from __future__ import annotations

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from packs.format import PackMetadata
from tests.guardrails.helpers import make_meta


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_writes_to_a_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Hypothesis caches constants and unicode tables under ./.hypothesis even
    # with its example database off; tests must not write into the checkout.
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))


@pytest.fixture
def meta() -> PackMetadata:
    return make_meta()
