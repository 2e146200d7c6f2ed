"""`bentoml build` packages the service and the default pack offline; the bento,
exported and imported into a fresh BentoML home, serves from an empty directory
with no data directory and no settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, stop_service_process, wait_ready

pytestmark = pytest.mark.integration
BENTOML = str(Path(sys.executable).parent / "bentoml")
ADELIE = [39.1, 18.7, 181, 3750]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    return env | {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_built_bento_serves_its_pack_from_a_clean_directory(
    tmp_path: Path, default_pack: Path
) -> None:
    home = tmp_path / "data" / "bentoml"
    env = clean_env(home) | {"FLYWHEEL_DATA_DIR": str(tmp_path / "data")}
    stored = run(
        [sys.executable, "-m", "service.cli", "store-pack", str(default_pack)], env
    )
    assert stored.strip().startswith("penguins:")
    tag = run([BENTOML, "build", "-f", "bentofile.yaml", "--output", "tag"], env)
    tag = tag.strip().splitlines()[-1].removeprefix("__tag__:")
    src = next((home / "bentos" / "flywheel").glob("*/src"))
    for needed in (
        "service/service.py",
        "service/ui/static/style.css",
        "service/ui/templates/base.html",
        "policies/default.yaml",
        "packs/loader.py",
        "feedback/migrations/env.py",
    ):
        assert (src / needed).is_file(), needed
    assert not (src / "tests").exists()
    assert not (src / "data").exists()
    # BentoML 1.4 lists the models in bento.yaml and packs them at export.
    assert f"tag: {stored.strip()}" in (src.parent / "bento.yaml").read_text()

    exported = tmp_path / "flywheel.bento"
    run([BENTOML, "export", tag, str(exported)], clean_env(home))
    fresh = tmp_path / "fresh-home"
    run([BENTOML, "import", str(exported)], clean_env(fresh))
    version = stored.strip().split(":")[1]
    assert (fresh / "models" / "penguins" / version / "model.onnx").is_file()
    clean = tmp_path / "clean"
    clean.mkdir()
    port = free_port()
    log_path = tmp_path / "bento-serve.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [BENTOML, "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
            cwd=clean, env=clean_env(fresh), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log_path)
        info = httpx.get(f"{url}/info", timeout=10).json()
        assert info["model_name"] == "penguins"
        answer = httpx.post(
            f"{url}/predict", json={"instances": [ADELIE]}, timeout=10
        ).json()
        assert answer["predictions"][0]["label"] == "Adelie"
    finally:
        stop_service_process(process)
    assert list(clean.iterdir()) == []


def test_serving_a_missing_pack_exits_with_one_message(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "bentoml") | {
        "FLYWHEEL_DATA_DIR": str(tmp_path / "data"),
        "FLYWHEEL_PACK_DIR": str(tmp_path / "nope"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [BENTOML, "serve", "service.service:InferenceService", "--port",
         str(free_port()), "--host", "127.0.0.1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    output = done.stdout + done.stderr
    message = f"cannot start: model pack file is missing: {tmp_path / 'nope'}"
    assert output.count(message) == 1, output[-3000:]
    assert "Traceback" not in output
    assert done.returncode == 2, output[-3000:]
    assert time.monotonic() - started < 240
    assert not (tmp_path / "nope").exists()
