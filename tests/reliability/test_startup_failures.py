"""A broken model pack or policy, or a database that cannot be used (unreachable,
unsupported, corrupt, unmigrated), stops `serve` at start-up with one clear message.

Without that check BentoML's process manager restarts the failing worker forever:
the service never exits and its log fills with the same traceback.
"""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from feedback.db import migrate
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


# --- the database ------------------------------------------------------------------

PASSWORD = "TopSecretPw"


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_on_a_closed_port(tmp_path: Path) -> tuple[dict[str, str], str]:
    url = f"postgresql://u:{PASSWORD}@127.0.0.1:{_closed_port()}/flywheel"
    return {"FLYWHEEL_FEEDBACK__DATABASE_URL": url}, "is unreachable"


def _unsupported_url(tmp_path: Path) -> tuple[dict[str, str], str]:
    url = f"mysql://u:{PASSWORD}@127.0.0.1:3306/flywheel"
    return {"FLYWHEEL_FEEDBACK__DATABASE_URL": url}, "unsupported database URL"


def _corrupt_sqlite_file(tmp_path: Path) -> tuple[dict[str, str], str]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "flywheel.db").write_bytes(b"this is not an SQLite file " * 200)
    return {}, "is not a readable SQLite file"


def _damaged_sqlite_pages(tmp_path: Path) -> tuple[dict[str, str], str]:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "flywheel.db"
    migrate(f"sqlite:///{path}")
    raw = bytearray(path.read_bytes())
    raw[4096 * 2 : 4096 * 4] = b"\xff" * (4096 * 2)  # smash pages 3 and 4
    path.write_bytes(bytes(raw))
    return {"FLYWHEEL_FEEDBACK__MIGRATE_ON_START": "false"}, "database"


def _unmigrated_without_migration(tmp_path: Path) -> tuple[dict[str, str], str]:
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "flywheel.db").close()
    return {"FLYWHEEL_FEEDBACK__MIGRATE_ON_START": "false"}, "schema revision none"


@pytest.mark.parametrize(
    "breakage",
    [
        _postgres_on_a_closed_port,
        _unsupported_url,
        _corrupt_sqlite_file,
        _damaged_sqlite_pages,
        _unmigrated_without_migration,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_an_unusable_database_stops_serve_with_one_message(
    breakage: Callable[[Path], tuple[dict[str, str], str]],
    tmp_path: Path,
    default_pack: Path,
) -> None:
    overrides, expected = breakage(tmp_path)
    code, output = run_to_exit(
        tmp_path / "data", default_pack, timeout_s=START_TIMEOUT_S * 2, **overrides
    )
    assert code is not None, (
        f"still running {START_TIMEOUT_S * 2} s after start with "
        f"{breakage.__name__}:\n{output[-3000:]}"
    )
    assert code == 2, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("cannot start")]
    assert len(lines) == 1 and expected in lines[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert PASSWORD not in output
