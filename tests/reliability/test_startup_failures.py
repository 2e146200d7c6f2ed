"""A broken model pack or policy stops `serve` at start-up with one clear message.

Without that check BentoML's process manager restarts the failing worker forever:
the service never exits and its log fills with the same traceback.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.helpers import MarkerOnUnpickle, run_to_exit, write_policy

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 30
#: Breaks a copy of the pack (or writes a policy); returns (settings, message part).
Breakage = Callable[[Path, Path], tuple[dict[str, str], str]]


def _pack_copy(default_pack: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_pack, tmp_path / "pack"))


def _broken_metadata(pack: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    meta = json.loads((pack / "metadata.json").read_text())
    meta["labels"] = "Adelie"  # not a list
    (pack / "metadata.json").write_text(json.dumps(meta))
    return {}, "metadata.json is invalid: labels"


def _missing_model(pack: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    (pack / "model.onnx").unlink()
    return {}, "model pack file is missing"


def _pickled_model(pack: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    marker = tmp_path / "unpickled"
    (pack / "model.onnx").write_bytes(pickle.dumps(MarkerOnUnpickle(marker)))
    return {}, str(pack / "model.onnx")


def _policy_not_yaml(pack: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    path = tmp_path / "policy.yaml"
    path.write_text("version: broken\ninput_bounds: [unclosed\n")
    return {"FLYWHEEL_GUARDRAILS__POLICY_PATH": str(path)}, "not valid YAML"


def _policy_unknown_label(pack: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    path = write_policy(
        tmp_path / "policy.yaml",
        version="unknown-label",
        blacklist={"global": ["Emperor"], "per_context": {}, "action": "fallback"},
    )
    return {"FLYWHEEL_GUARDRAILS__POLICY_PATH": str(path)}, "Emperor"


@pytest.mark.parametrize(
    "breakage",
    [
        _broken_metadata,
        _missing_model,
        _pickled_model,
        _policy_not_yaml,
        _policy_unknown_label,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_broken_pack_or_policy_stops_serve_with_one_message(
    breakage: Breakage, tmp_path: Path, default_pack: Path
) -> None:
    pack = _pack_copy(default_pack, tmp_path)
    overrides, expected = breakage(pack, tmp_path)
    code, output = run_to_exit(
        tmp_path / "data", pack, timeout_s=START_TIMEOUT_S, **overrides
    )
    assert code is not None, (
        f"still running {START_TIMEOUT_S} s after start with a broken "
        f"{breakage.__name__}:\n{output[-3000:]}"
    )
    assert code != 0
    assert output.count(expected) == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not (tmp_path / "unpickled").exists()
