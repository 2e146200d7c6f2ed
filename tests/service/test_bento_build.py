"""`bentoml build` packages the service offline from bentofile.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.integration


def test_bentoml_build_works_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env |= {"BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    done = subprocess.run(
        [bentoml, "build", "-f", "bentofile.yaml", "--output", "tag"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    bentos = list((tmp_path / "bentoml" / "bentos" / "flywheel").glob("*/src"))
    assert len(bentos) == 1
    src = bentos[0]
    needed_files = (
        "service/service.py",
        "guardrails/pipeline.py",
        "policies/default.yaml",
        "feedback/migrations/env.py",
        "packs/loader.py",
    )
    for needed in needed_files:
        assert (src / needed).is_file(), needed
    assert not (src / "tests").exists()
    assert not (src / "data").exists()
