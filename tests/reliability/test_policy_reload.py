"""A broken policy sent to `PUT /admin/policy` is refused with a 4xx naming the
problem, and the policy that was serving keeps serving (now and after the workers'
next look at the state file)."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.reliability.helpers import ADELIE, DEFAULT_POLICY
from tests.servers import ServiceProcess

pytestmark = pytest.mark.integration


def _default_with(**changes: object) -> str:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy.update(changes)
    return yaml.safe_dump(policy)


BAD_POLICIES = [
    pytest.param("version: x\ninput_bounds: [unclosed\n", "line", id="not-yaml"),
    pytest.param("- just\n- a list\n", "mapping", id="not-a-mapping"),
    pytest.param(
        _default_with(version="bad-label", blacklist={"global": ["Emperor"]}),
        "Emperor",
        id="unknown-label",
    ),
    pytest.param(
        _default_with(version="bad-key", temprature={"enabled": True}),
        "temprature",
        id="misspelt-key",
    ),
    pytest.param(
        _default_with(version="bad-floor", priors={"floor": 0.9}),
        "floor",
        id="impossible-floor",
    ),
    pytest.param("", "", id="empty"),
]


@pytest.mark.parametrize(("text", "named"), BAD_POLICIES)
def test_broken_policy_is_refused_and_the_old_one_keeps_serving(
    open_service: ServiceProcess, text: str, named: str
) -> None:
    admin = {**open_service.admin_headers(), "Content-Type": "application/yaml"}
    with open_service.client() as c:
        before = c.get("/info").json()["policy_version"]
        state_before = served_row(open_service)
        r = c.put("/admin/policy", content=text.encode(), headers=admin)
        assert 400 <= r.status_code < 500, r.text
        assert named in r.json()["error"]["message"]
        time.sleep(1.2)  # longer than reload_poll_s: workers have looked again
        assert c.get("/info").json()["policy_version"] == before
        answer = c.post("/predict", json={"instances": [ADELIE]})
        assert answer.json()["predictions"][0]["policy_version"] == before
    assert served_row(open_service) == state_before


def served_row(svc: ServiceProcess) -> object:
    """The deployment's served-state row, as the workers poll it."""
    from feedback.db import make_engine, session_factory
    from feedback.served_state import read_served

    engine = make_engine(f"sqlite:///{svc.data_dir / 'flywheel.db'}")
    try:
        with session_factory(engine)() as session:
            record = read_served(session, "default")
    finally:
        engine.dispose()
    assert record is not None
    return record
