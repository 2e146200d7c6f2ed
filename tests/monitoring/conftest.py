"""Fixtures for the monitoring tests: the default pack's reference data, windows of
live rows (drifted or not), and a real Prometheus server started on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from packs.format import REFERENCE_FILE, PackMetadata
from packs.loader import ModelPack, load_table, read_metadata
from tests.servers import free_port


def require_binary(name: str) -> str:
    """The binary's path; missing fails under CI (never skip there), else skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: run monitoring/install_prometheus.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def pack_meta(default_pack: Path) -> PackMetadata:
    return read_metadata(default_pack)


@pytest.fixture(scope="session")
def reference(default_pack: Path) -> pd.DataFrame:
    return load_table(default_pack / REFERENCE_FILE)


@pytest.fixture(scope="session")
def pack_model(default_pack: Path) -> ModelPack:
    """The default pack's model (its outputs are what the drift detector tests)."""
    return ModelPack.load(default_pack, providers=["CPUExecutionProvider"])


def live_window(
    reference: pd.DataFrame, rows: int, *, seed: int, shift: float = 0.0
) -> pd.DataFrame:
    """Rows resampled from the reference, as the prediction log returns them;
    `shift` moves bill and flipper length by that many standard deviations and
    tilts the predicted labels towards Gentoo (a world that changed)."""
    window = reference.sample(rows, replace=True, random_state=seed)
    window = window.reset_index(drop=True).drop(columns=["label"])
    if shift:
        for column in ("bill_length_mm", "flipper_length_mm"):
            window[column] += shift * reference[column].std()
        rng = np.random.default_rng(seed)
        flip = rng.random(rows) < 0.5
        window.loc[flip, "predicted_label"] = "Gentoo"
    return window


@pytest.fixture
def clean_window(reference: pd.DataFrame) -> pd.DataFrame:
    return live_window(reference, 1500, seed=7)


@pytest.fixture
def drifted_window(reference: pd.DataFrame) -> pd.DataFrame:
    return live_window(reference, 1500, seed=7, shift=1.5)


def promql(base_url: str, expr: str) -> dict:
    """One instant query; returns Prometheus' `data` object (raises on error)."""
    response = httpx.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body.get("status") == "success", (expr, body)
    return body["data"]


StartPrometheus = Callable[[list[str]], str]


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[StartPrometheus]:
    """Start a real Prometheus (1 s scrapes, the project's rules) on a free port;
    returns its base URL. Stopped at teardown."""
    require_binary("prometheus")
    from monitoring.prometheus_server import server_command, write_config

    processes: list[subprocess.Popen[bytes]] = []

    def start(targets: list[str]) -> str:
        data = tmp_path / f"prometheus-{len(processes)}"
        config = write_config(data, targets, scrape_interval_s=1)
        port = free_port()
        log = (data / "prometheus.log").open("wb")
        process = subprocess.Popen(
            server_command(config, data, port=port), stdout=log, stderr=log
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (data / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError((data / "prometheus.log").read_text()[-3000:])

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_value(
    base_url: str, expr: str, *, above: float = 0.0, timeout_s: float = 30
) -> float:
    """Poll `expr` until its first sample exceeds `above` (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        last = promql(base_url, expr)
        if last["result"]:
            value = float(last["result"][0]["value"][1])
            if value > above:
                return value
        time.sleep(0.5)
    raise AssertionError(f"{expr} never exceeded {above} in {timeout_s}s: {last}")
