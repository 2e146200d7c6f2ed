"""Playwright over Debian's Chromium for the admin-page tests (no browser download).

`tests/install_browser.sh` installs /usr/bin/chromium (the Makefile's test-deps
target runs it). Without it the browser tests are skipped with that reason, except
under CI, where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        reason = "Debian's chromium is not installed: run tests/install_browser.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the run's screenshots go: $ADMIN_UI_SCREENSHOTS, else a temp folder."""
    chosen = os.environ.get("ADMIN_UI_SCREENSHOTS")
    out = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out
