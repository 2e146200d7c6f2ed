"""Bring-your-own matrix: four scikit-learn datasets x three model kinds, each
exported with skl2onnx's defaults and packed with the documented command.

All twelve packs are checked in process (probabilities as scikit-learn's, a valid
policy of their own, held-out rows inside the default bounds); then, per dataset,
one real `bentoml serve` serves the logistic-regression pack and goes through
/predict, /report, triage into a regression case, and the regression replay of
the gate over HTTP (`POST /admin/promote`) with the other two kinds as candidates.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from guardrails.input_bounds import resolve_bounds
from guardrails.policy import Policy
from packs.format import POLICY_FILE, PackMetadata
from packs.loader import ModelPack
from tests.packs.byo_models import (
    DATASETS,
    KINDS,
    LABEL_COLUMN,
    Dataset,
    export,
    load,
    train,
)
from tests.servers import running

#: Share of held-out rows allowed outside the default bounds of a pack's policy.
MAX_OUT_OF_BOUNDS = 0.01


@functools.cache
def dataset(name: str) -> Dataset:
    return load(name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("byo-matrix")


def pack_with_cli(workdir: Path, name: str, kind: str) -> tuple[Path, object]:
    """Train, export with the defaults and pack with `service.cli pack`, as the
    README shows; returns the pack directory and the scikit-learn model."""
    from service.cli import app

    data = dataset(name)
    csv = workdir / f"{name}.csv"
    if not csv.exists():
        data.train.to_csv(csv, index=False)
    model = train(kind, data)
    onnx_path = export(model, data, workdir / f"{name}-{kind}.onnx")
    out = workdir / "packs" / f"{name}-{kind}"
    argv = ["pack", str(onnx_path), str(csv), "--out", str(out)]
    argv += ["--name", f"{name}-{kind}", "--label-column", LABEL_COLUMN]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.stderr
    return out, model


def out_of_bounds_share(pack_dir: Path, data: Dataset) -> float:
    meta = ModelPack.load(pack_dir).metadata
    policy = Policy.load(pack_dir / POLICY_FILE)
    low, high = resolve_bounds(policy.input_bounds, meta)
    x = data.x(data.held_out)
    return float((~((x >= low) & (x <= high))).any(axis=1).mean())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", DATASETS)
def test_default_export_packs_and_matches_scikit_learn(
    workdir: Path, name: str, kind: str
) -> None:
    pack_dir, model = pack_with_cli(workdir, name, kind)
    data = dataset(name)
    pack = ModelPack.load(pack_dir)
    meta: PackMetadata = pack.metadata
    assert meta.labels == [str(c) for c in model.classes_]  # type: ignore[attr-defined]
    policy = Policy.load(pack_dir / POLICY_FILE)
    policy.check_against(meta)
    x = data.x(data.held_out)
    ours, theirs = pack.predict_proba(x), model.predict_proba(x)  # type: ignore[attr-defined]
    if kind == "forest":
        # skl2onnx compares a double input with float32 tree thresholds, so a
        # value next to a threshold can take the other branch in a tree or two
        assert np.abs(ours - theirs).max() < 0.1
        assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.97
    else:
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert meta.metrics["test_accuracy"] > meta.metrics["test_majority_rate"]
    assert out_of_bounds_share(pack_dir, data) < MAX_OUT_OF_BOUNDS


def held_out_instances(data: Dataset) -> list[list[float]]:
    return data.x(data.held_out).tolist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", DATASETS)
def test_served_pack_predicts_takes_reports_and_replays_the_gate_over_http(
    workdir: Path, tmp_path: Path, name: str
) -> None:
    data = dataset(name)
    packs = {kind: pack_with_cli(workdir, name, kind)[0] for kind in KINDS}
    truth = data.held_out[LABEL_COLUMN].astype(str).tolist()
    # The gate replays inside the promote request: on a shared, loaded CI machine
    # that can take longer than the service's 30 s request timeout.
    slow_ok = {"BENTOML_CONFIG_OPTIONS": "services.flywheel.traffic.timeout=300"}
    service = running(tmp_path / "service", packs["logreg"], **slow_ok)
    with service as svc, svc.client(timeout=60) as c:
        info = c.get("/info").json()
        assert info["labels"] == ModelPack.load(packs["logreg"]).metadata.labels
        r = c.post("/predict", json={"instances": held_out_instances(data)})
        assert r.status_code == 200, r.text
        answers = r.json()["predictions"]
        out = [a for a in answers if a["reason"] == "out_of_bounds"]
        assert len(out) / len(answers) < MAX_OUT_OF_BOUNDS
        answered = [(a, t) for a, t in zip(answers, truth, strict=True) if a["label"]]
        accuracy = np.mean([a["label"] == t for a, t in answered])
        assert accuracy > 0.9

        # a user reports one answer with the right label; triage confirms it
        wrong = next(((a, t) for a, t in answered if a["label"] != t), answered[0])
        created = c.post(
            "/report",
            json={
                "prediction_id": wrong[0]["prediction_id"],
                "expected_label": wrong[1],
            },
        )
        assert created.status_code == 201, created.text
        admin = svc.admin_headers()
        confirmed = c.patch(
            f"/admin/reports/{created.json()['id']}",
            json={"status": "confirmed"},
            headers=admin,
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["regression_case_id"] is not None

        # the gate replays the case and the test set for each other kind
        for kind in ("mlp", "forest"):
            before = c.get("/info").json()["model_version"]
            r = c.post(
                "/admin/promote",
                json={"pack_dir": str(packs[kind])},
                headers=admin,
                timeout=180,
            )
            assert r.status_code in (200, 409), r.text
            body = r.json() if r.status_code == 200 else r.json()["error"]["gate"]
            assert body["regression"]["cases"] == 1
            assert body["regression"]["test_rows"] > 0
            now = c.get("/info").json()["model_version"]
            if r.status_code == 200:
                assert now == ModelPack.load(packs[kind]).metadata.version != before
            else:
                assert now == before and body["reasons"]
            again = c.post("/predict", json={"instances": held_out_instances(data)[:5]})
            assert again.status_code == 200, again.text
            assert {a["model_version"] for a in again.json()["predictions"]} == {now}
