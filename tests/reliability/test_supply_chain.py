"""Supply chain: model packs are ONNX only (never pickle or joblib, which run code when
loaded), the project's own code has no code-executing loaders, and every dependency
is pinned in the lock file that is installed and audited (`make audit`)."""

from __future__ import annotations

import ast
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from common.audit import NO_ADVISORY_SERVICE
from packs.loader import ModelPack
from tests.reliability.helpers import MarkerOnUnpickle
from tests.servers import ROOT

PACKAGES = ["common", "packs", "guardrails", "feedback", "monitoring", "service"]
# Modules whose loading runs code from the data.
CODE_LOADING_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
    "torch",
}
CODE_LOADING_CALLS = {"read_pickle", "unsafe_load", "full_load", "eval", "exec"}


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(MarkerOnUnpickle(marker))


def test_the_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # Without this the marker tests below could pass for the wrong reason.
    marker = tmp_path / "ran"
    handle = pickle.loads(_pickle_payload(marker))
    handle.close()
    assert marker.exists()


def test_pack_whose_model_is_a_pickle_is_refused_without_running_it(
    tmp_path: Path, default_pack: Path
) -> None:
    pack = Path(shutil.copytree(default_pack, tmp_path / "pack"))
    marker = tmp_path / "ran"
    (pack / "model.onnx").write_bytes(_pickle_payload(marker))
    with pytest.raises(Exception) as info:
        ModelPack.load(pack, providers=["CPUExecutionProvider"])
    assert "model.onnx" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "model.pickle"])
def test_pickle_files_beside_the_model_are_never_opened(
    tmp_path: Path, default_pack: Path, name: str
) -> None:
    pack = Path(shutil.copytree(default_pack, tmp_path / "pack"))
    marker = tmp_path / "ran"
    (pack / name).write_bytes(_pickle_payload(marker))
    loaded = ModelPack.load(pack, providers=["CPUExecutionProvider"])
    assert loaded.metadata.labels == ["Adelie", "Chinstrap", "Gentoo"]
    assert not marker.exists()


def _code_loading_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else None
            name = func.id if isinstance(func, ast.Name) else name
            if name in CODE_LOADING_CALLS:
                found.append(f"{path}:{node.lineno}: {name}()")
            if name == "load" and any(k.arg == "allow_pickle" for k in node.keywords):
                found.append(f"{path}:{node.lineno}: load(allow_pickle=...)")
            if name == "load" and _is_yaml(func):
                found.append(f"{path}:{node.lineno}: yaml.load (use safe_load)")
            continue
        else:
            continue
        found += [
            f"{path}:{node.lineno}: import {n}"
            for n in names
            if n in CODE_LOADING_MODULES
        ]
    return found


def _is_yaml(func: ast.expr) -> bool:
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "yaml"
    )


def test_project_code_has_no_code_executing_loaders() -> None:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 20
    found = [use for path in files for use in _code_loading_uses(path)]
    assert not found, "\n".join(found)


def test_the_scan_finds_a_pickle_load(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text(
        "import pickle\nimport yaml\nyaml.load(s)\nnp.load(f, allow_pickle=True)\n"
    )
    assert len(_code_loading_uses(sample)) == 3


LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]+\])?==([^\s;]+)")


def _locked(path: Path = ROOT / "requirements.lock") -> dict[str, str]:
    return {name: version for name, (version, _) in _locked_with_hashes(path).items()}


def _locked_with_hashes(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, the sha256 hashes that follow its pin)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            assert current is not None, f"{path.name}: a hash before any pin"
            current.append(line.removeprefix("--hash="))
            continue
        match = LOCK_LINE.match(line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        current = []
        pins[_normal(match.group(1))] = (match.group(3), current)
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_locked_dependency_is_an_exact_pin_and_covers_requirements_in() -> None:
    pins = _locked()
    assert len(pins) > 50
    for raw in (ROOT / "requirements.in").read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name = _normal(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0])
            assert name in pins, f"{name} is in requirements.in but not locked"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-bootstrap.txt"])
def test_every_pin_carries_hashes_and_install_verifies_them(lock: str) -> None:
    pins = _locked_with_hashes(ROOT / lock)
    assert pins
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed, f"{lock}: pins without a hash: {unhashed}"
    assert all(
        h.startswith("sha256:") and len(h) == 71
        for _, hashes in pins.values()
        for h in hashes
    )
    install = re.search(
        r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M
    )
    assert install is not None
    commands = [c for c in install.group(1).splitlines() if lock in c]
    assert commands and all("--require-hashes" in c for c in commands), commands


def test_installed_packages_are_the_locked_versions() -> None:
    wrong = {}
    for name, version in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"(locked, installed): {wrong}"


def test_the_audit_of_the_lock_file_is_a_make_target_and_documented() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^audit:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert target and "pip-audit" in target.group(1)
    assert "requirements.lock" in target.group(1)
    assert "make audit" in (ROOT / "SECURITY.md").read_text()


def test_audit_without_the_advisory_service_says_so_and_exits_3() -> None:
    """A proxy on a closed loopback port stands in for "no network"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
        env = {**os.environ, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy}
        env.pop("NO_PROXY", None)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "common.audit",
                str(Path(sys.executable).parent / "pip-audit"),
                "--strict",
                "--no-deps",
                "--disable-pip",
                "-r",
                str(ROOT / "requirements.lock"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == NO_ADVISORY_SERVICE == 3, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit not run"), lines[-5:]
    assert "Traceback" not in done.stderr
