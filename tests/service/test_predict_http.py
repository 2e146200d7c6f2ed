"""/predict, /info and the probes over real HTTP against `bentoml serve`."""

from __future__ import annotations

import pytest

from tests.servers import ServiceProcess

pytestmark = pytest.mark.integration

ADELIE = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181,
    "body_mass_g": 3750,
}
GENTOO = {
    "bill_length_mm": 47.5,
    "bill_depth_mm": 15.0,
    "flipper_length_mm": 218,
    "body_mass_g": 4950,
}
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def post(svc: ServiceProcess, body: object, **kw: object):  # type: ignore[no-untyped-def]
    with svc.client() as c:
        return c.post("/predict", json=body, **kw)  # type: ignore[arg-type]


def test_single_instance_gets_a_label_and_a_distribution(
    running_service: ServiceProcess,
) -> None:
    r = post(running_service, {"instances": [ADELIE]})
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    assert p["label"] == "Adelie"
    assert set(p["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert abs(sum(p["probabilities"].values()) - 1) < 1e-6
    assert len(p["prediction_id"]) == 32
    assert p["model_version"].startswith("sha256-")
    assert p["policy_version"]
    assert next(s["stage"] for s in p["trace"]) == "input_bounds"
    # The default policy turns conformal sets on in report mode.
    assert p["prediction_set"] == ["Adelie"]


def test_batch_rows_lists_and_columns_agree(running_service: ServiceProcess) -> None:
    rows = post(running_service, {"instances": [ADELIE, GENTOO]}).json()["predictions"]
    lists = post(
        running_service,
        {"instances": [[ADELIE[f] for f in FEATURES], [GENTOO[f] for f in FEATURES]]},
    ).json()["predictions"]
    columns = {f: [ADELIE[f], GENTOO[f]] for f in FEATURES}
    cols = post(running_service, {"columns": columns, "format": "rows"}).json()
    cols = cols["predictions"]
    assert [p["label"] for p in rows] == ["Adelie", "Gentoo"]
    for a, b, c in zip(rows, lists, cols, strict=True):
        assert a["probabilities"] == b["probabilities"] == c["probabilities"]
        assert a["trace"] == b["trace"] == c["trace"]
    assert len({p["prediction_id"] for p in rows + lists + cols}) == 6


def test_columns_in_columns_out_with_the_trace_per_stage(
    running_service: ServiceProcess,
) -> None:
    # Under Torgersen's priors (Adelie only) the ambiguous row changes its answer.
    ambiguous = dict(zip(FEATURES, [45.0, 17.5, 200.0, 4000.0], strict=True))
    instances = [ADELIE, GENTOO, ambiguous]
    body = {"instances": instances, "context": "Torgersen"}
    rows = post(running_service, body).json()["predictions"]
    columns = {f: [row[f] for row in instances] for f in FEATURES}
    answer = post(running_service, {"columns": columns, "context": "Torgersen"}).json()
    assert "predictions" not in answer
    assert answer["model_version"] == rows[0]["model_version"]
    assert answer["policy_version"] == rows[0]["policy_version"]
    got = answer["columns"]
    assert len(set(got["prediction_id"])) == 3
    assert got["label"] == [p["label"] for p in rows] == ["Adelie", "Gentoo", "Adelie"]
    assert got["abstained"] == [False, False, False]
    assert got["reason"] == [None, None, None]
    for label, values in got["probabilities"].items():
        assert values == [p["probabilities"][label] for p in rows]
    assert got["prediction_set"] == [p["prediction_set"] for p in rows]
    assert got["prediction_set"][0] == ["Adelie"]
    stages = [t["stage"] for t in answer["trace"]]
    assert stages == [t["stage"] for t in rows[0]["trace"]]
    # Each row's trace, rebuilt from the columns, is the one the row form gives.
    for i, row in enumerate(rows):
        rebuilt = [
            t["entries"][t["rows"].index(i)] if i in t["rows"] else t["entry"]
            for t in answer["trace"]
        ]
        assert rebuilt == row["trace"]
    priors = answer["trace"][2]
    assert priors["stage"] == "priors" and priors["rows"] == [2]
    assert priors["entry"]["acted"] and priors["entries"][0]["top_after"] == "Adelie"
    as_rows = post(running_service, {**body, "format": "columns"})
    assert as_rows.json()["columns"]["label"] == got["label"]


def test_info_reports_model_labels_and_real_provider(
    running_service: ServiceProcess,
) -> None:
    with running_service.client() as c:
        info = c.get("/info").json()
    assert info["model_name"] == "penguins"
    assert info["labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert [f["name"] for f in info["features"]] == FEATURES
    assert info["provider"] == "CPUExecutionProvider"
    assert info["guardrail_stages"][0] == "input_bounds"


def test_probes_answer(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        assert c.get("/livez").status_code == 200
        assert c.get("/readyz").status_code == 200


def test_openapi_schema_describes_predict(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        schema = c.get("/openapi.json").json()
    assert "/predict" in schema["paths"]
    assert "PredictRequest" in schema["components"]["schemas"]
    assert "PredictResponse" in schema["components"]["schemas"]


BAD_BODIES = [
    pytest.param(
        {"instances": [{**ADELIE, "bill_length_mm": "long"}]},
        422,
        "instances.0",
        id="wrong-type",
    ),
    pytest.param(
        {"instances": [{k: v for k, v in ADELIE.items() if k != "body_mass_g"}]},
        422,
        "body_mass_g",
        id="missing-feature",
    ),
    pytest.param(
        {"instances": [{**ADELIE, "beak_colour": 1.0}]},
        422,
        "beak_colour",
        id="unknown-feature",
    ),
    pytest.param({"instances": []}, 422, "instances", id="empty-batch"),
    pytest.param({"instances": [[1.0, 2.0]]}, 422, "instances.0", id="short-list-row"),
    pytest.param({"rows": [ADELIE]}, 422, "rows", id="unknown-top-level-key"),
    pytest.param({}, 400, "instances", id="no-instances"),
    pytest.param(
        {"instances": [ADELIE], "columns": {}}, 400, "instances", id="both-forms"
    ),
    pytest.param(
        {"instances": [ADELIE] * 10_001}, 413, "instances", id="oversized-batch"
    ),
    pytest.param(
        {"columns": {f: [1.0] for f in FEATURES[:3]}},
        422,
        "body_mass_g",
        id="missing-column",
    ),
    pytest.param(
        {"instances": [{**ADELIE, "body_mass_g": 1e39}]},
        422,
        "body_mass_g",
        id="float32-overflow",
    ),
    pytest.param(
        {"instances": [ADELIE], "context": "Atlantis"},
        422,
        "context",
        id="unknown-context",
    ),
    pytest.param(
        {"instances": [ADELIE], "priors": {"Adelie": -1, "Chinstrap": 1, "Gentoo": 1}},
        422,
        "priors",
        id="negative-priors",
    ),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
def test_bad_input_gets_a_4xx_naming_the_field(
    running_service: ServiceProcess, body: object, status: int, field: str
) -> None:
    r = post(running_service, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert field in (error.get("field") or "") + error["message"], error


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(
    running_service: ServiceProcess, literal: str
) -> None:
    row = (
        f'"bill_length_mm": {literal}, "bill_depth_mm": 18.7, '
        '"flipper_length_mm": 181, "body_mass_g": 3750'
    )
    body = f'{{"instances": [{{{row}}}]}}'
    with running_service.client() as c:
        r = c.post(
            "/predict", content=body, headers={"Content-Type": "application/json"}
        )
    assert r.status_code in (400, 422), r.text
    assert "bill_length_mm" in r.text or "JSON" in r.text


def test_malformed_json_is_a_400(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        r = c.post(
            "/predict",
            content=b'{"instances": [',
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"


def test_wrong_content_type_is_a_415(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        r = c.post(
            "/predict",
            content=b"instances=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 415
    assert "application/json" in r.json()["error"]["message"]


def test_body_over_the_size_limit_is_a_413(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        r = c.post(
            "/predict",
            content=b" " * 3_000_000,
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 413


def test_out_of_range_input_is_rejected_naming_the_bound(
    running_service: ServiceProcess,
) -> None:
    r = post(running_service, {"instances": [{**ADELIE, "body_mass_g": 60_000}]})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"].endswith("body_mass_g")
    assert "60000" in error["message"]


def _sample(text: str, name: str) -> float:
    from service.demo import metric

    return metric(text, name) or 0.0


def test_metrics_move_with_traffic(running_service: ServiceProcess) -> None:
    import time

    adelie = 'flywheel_predictions_total{label="Adelie"}'
    count = 'flywheel_request_duration_seconds_count{endpoint="predict"}'
    stage = (
        'flywheel_stage_duration_seconds_count{endpoint="predict",stage="inference"}'
    )
    with running_service.client() as c:
        time.sleep(1.5)  # let earlier requests' metrics flush (every second)
        before = c.get("/metrics").text
        c.post("/predict", json={"instances": [ADELIE, GENTOO, ADELIE]})
        deadline = time.monotonic() + 10
        while True:
            after = c.get("/metrics").text
            if (
                _sample(after, count) > _sample(before, count)
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.2)
    assert _sample(after, adelie) == _sample(before, adelie) + 2
    assert _sample(after, count) == _sample(before, count) + 1
    assert _sample(after, stage) == _sample(before, stage) + 1
    assert 'provider="CPUExecutionProvider"' in after
    assert "bentoml_service_request_total" in after
