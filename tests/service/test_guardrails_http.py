"""Guardrails over HTTP: contexts, explicit priors, blacklist, abstention,
out-of-bounds handling, and policy reload (good and bad)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ROOT, ServiceProcess, running

pytestmark = pytest.mark.integration

BORDERLINE = {
    "bill_length_mm": 45,
    "bill_depth_mm": 17,
    "flipper_length_mm": 195,
    "body_mass_g": 3900,
}
ADELIE = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181,
    "body_mass_g": 3750,
}
# Half-way between an Adelie and a Chinstrap: the model gives each about 0.5.
UNSURE = {
    "bill_length_mm": 44.3,
    "bill_depth_mm": 18.8,
    "flipper_length_mm": 190.5,
    "body_mass_g": 3775,
}
CHINSTRAP = {
    "bill_length_mm": 49.5,
    "bill_depth_mm": 19.0,
    "flipper_length_mm": 200,
    "body_mass_g": 3800,
}


def predict(
    svc: ServiceProcess, rows: list[dict[str, float]], **extra: object
) -> list[dict]:  # type: ignore[type-arg]
    with svc.client() as c:
        r = c.post("/predict", json={"instances": rows, **extra})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]  # type: ignore[no-any-return]


def stage(p: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in p["trace"] if s["stage"] == name)


def test_same_measurements_get_the_answer_of_their_island(
    running_service: ServiceProcess,
) -> None:
    answers = {
        island: predict(running_service, [BORDERLINE], context=island)[0]
        for island in ("Biscoe", "Dream", "Torgersen")
    }
    assert answers["Biscoe"]["label"] == "Gentoo"
    assert answers["Dream"]["label"] == "Chinstrap"
    assert answers["Torgersen"]["label"] == "Adelie"
    for island, p in answers.items():
        priors = stage(p, "priors")
        assert priors["acted"] and priors["source"] == f"context:{island}"
    assert answers["Torgersen"]["probabilities"]["Gentoo"] < 0.05


def test_explicit_priors_win_over_the_context(running_service: ServiceProcess) -> None:
    (p,) = predict(
        running_service, [BORDERLINE], context="Biscoe",
        priors={"Adelie": 0.98, "Chinstrap": 0.01, "Gentoo": 0.01},
    )  # fmt: skip
    assert p["label"] == "Adelie"
    assert stage(p, "priors")["source"] == "explicit"


def test_without_context_the_training_priors_change_nothing(
    running_service: ServiceProcess,
) -> None:
    (p,) = predict(running_service, [BORDERLINE])
    assert stage(p, "priors")["acted"] is False


@pytest.fixture(scope="module")
def strict_service(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("strict")
    policy = shutil.copy(
        ROOT / "policies" / "strict-example.yaml", root / "strict.yaml"
    )
    with running(
        root / "data",
        default_pack,
        FLYWHEEL_GUARDRAILS__POLICY_PATH=str(policy),
        FLYWHEEL_SERVING__RELOAD_POLL_S="0.2",
    ) as svc:
        yield svc


def test_blacklisted_label_is_never_returned(strict_service: ServiceProcess) -> None:
    rows = [CHINSTRAP, BORDERLINE, ADELIE]
    for p in predict(strict_service, rows, context="Torgersen", priors=None):
        assert p["label"] != "Chinstrap"
    # Explicit priors that favour Chinstrap cannot bring it back on Torgersen.
    favour = {"Adelie": 0.01, "Chinstrap": 0.98, "Gentoo": 0.01}
    (p,) = predict(strict_service, [CHINSTRAP], context="Torgersen", priors=favour)
    assert p["label"] is None and p["abstained"] and p["reason"] == "blacklisted"
    assert stage(p, "blacklist")["acted"]
    assert p["probabilities"]["Chinstrap"] > 0.5  # still shown


def test_low_confidence_abstains_and_still_shows_probabilities(
    strict_service: ServiceProcess,
) -> None:
    (p,) = predict(strict_service, [UNSURE])
    assert p["abstained"] is True and p["label"] is None
    assert p["reason"] in ("low_confidence", "high_entropy")
    assert abs(sum(p["probabilities"].values()) - 1) < 1e-6


def test_each_stage_that_acts_is_counted_under_its_own_name_in_metrics(
    strict_service: ServiceProcess,
) -> None:
    rows = [UNSURE] * 3
    assert all(p["reason"] is not None for p in predict(strict_service, rows))
    with strict_service.client() as c:
        deadline = time.monotonic() + 10  # metrics are applied once a second
        while True:
            text = c.get("/metrics").text
            acted = sample(
                text, "flywheel_guardrail_actions_total", stage="output_bounds"
            )
            if acted >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert acted >= 3
    assert sample(text, "flywheel_guardrail_actions_total", stage="other") == 0
    assert sample(text, "flywheel_abstentions_total", reason="other") == 0


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one labelled sample in Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_out_of_range_input_abstains_when_the_policy_says_so(
    strict_service: ServiceProcess,
) -> None:
    (p,) = predict(strict_service, [{**ADELIE, "body_mass_g": 9000}])
    assert p["abstained"] and p["reason"] == "out_of_bounds"
    assert stage(p, "input_bounds")["acted"]


def test_policy_reload_takes_effect_and_a_bad_one_is_refused(
    strict_service: ServiceProcess,
) -> None:
    admin = strict_service.admin_headers()
    yaml_headers = {**admin, "Content-Type": "application/yaml"}
    with strict_service.client() as c:
        before = c.get("/info").json()["policy_version"]
        bad = c.put(
            "/admin/policy",
            content=b"version: x\nblacklist:\n  global: [Emperor]\n",
            headers=yaml_headers,
        )
        assert bad.status_code == 422, bad.text
        assert "Emperor" in bad.json()["error"]["message"]
        typo = c.put(
            "/admin/policy",
            content=b"version: y\noutput_bonds: {}\n",
            headers=yaml_headers,
        )
        assert typo.status_code == 422
        assert "output_bonds" in typo.json()["error"]["message"]
        assert c.get("/info").json()["policy_version"] == before
        good = (
            (ROOT / "policies" / "default.yaml")
            .read_text()
            .replace("blacklist:\n  global: []", "blacklist:\n  global: [Gentoo]", 1)
        )
        assert "global: [Gentoo]" in good
        ok = c.put("/admin/policy", content=good.encode(), headers=yaml_headers)
        assert ok.status_code == 200, ok.text
        version = ok.json()["policy_version"]
        assert c.get("/info").json()["policy_version"] == version
    gentoo = {
        "bill_length_mm": 47.5,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 218,
        "body_mass_g": 4950,
    }
    for p in predict(strict_service, [gentoo] * 20):
        assert p["label"] != "Gentoo"
        assert p["policy_version"] == version
