"""The Kubernetes base, rendered offline (by kustomize where installed, and by
`deploy.render`), validates against the schemas kubernetes-validate ships, and its
parts fit together: probes on the service's endpoints, every Secret key, ConfigMap
and claim a pod uses exists, the settings it sets are real ones, the policy it
ships is valid, and the placeholder Secret fails closed."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.render import BASE, render
from guardrails.policy import Policy
from service.settings import Settings

K8S_VERSION = "1.32.0"
CUSTOM_KINDS = {"PodMonitor"}  # CRDs: no schema shipped; checked by hand below


def _kustomize() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) not installed; deploy.render covers it")
    out = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(BASE)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(params=["deploy.render", "kustomize"])
def manifests(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    docs = render() if request.param == "deploy.render" else _kustomize()
    by_kind: dict[str, dict[str, Any]] = {}
    for doc in docs:
        name = doc["metadata"]["name"]
        # kustomize adds a content hash to generated names: key by the stem.
        if doc["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0] if name.count("-") > 2 else name
        by_kind[f"{doc['kind']}/{name}"] = doc
    return by_kind


def _container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod = manifests["Deployment/flywheel"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def test_every_manifest_validates_against_its_kubernetes_schema(
    manifests: dict[str, dict[str, Any]],
) -> None:
    kinds = {key.split("/")[0] for key in manifests}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap",
            "Secret", "CronJob", "PodMonitor",
            "PersistentVolumeClaim"} <= kinds  # fmt: skip
    for doc in manifests.values():
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises


def test_a_broken_manifest_is_refused_by_the_validator(
    manifests: dict[str, dict[str, Any]],
) -> None:
    broken = yaml.safe_load(yaml.safe_dump(manifests["Deployment/flywheel"]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_probes_use_the_service_health_endpoints(
    manifests: dict[str, dict[str, Any]],
) -> None:
    container = _container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"


def test_service_hpa_and_pod_monitor_select_the_pods(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = manifests["Deployment/flywheel"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = manifests["Service/flywheel"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    target = manifests["HorizontalPodAutoscaler/flywheel"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "flywheel")
    monitor = manifests["PodMonitor/flywheel"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_everything_a_pod_refers_to_is_rendered(
    manifests: dict[str, dict[str, Any]],
) -> None:
    secret = manifests["Secret/flywheel-secrets"]["stringData"]
    workloads = [
        manifests["Deployment/flywheel"]["spec"]["template"]["spec"],
        manifests["CronJob/flywheel-drift"]["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ]  # fmt: skip
    for pod in workloads:
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "flywheel-secrets" and ref["key"] in secret
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                name = volume["configMap"]["name"].rsplit("-", 1)[0]
                assert any(k.startswith(f"ConfigMap/{name}") for k in manifests), name
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert f"PersistentVolumeClaim/{claim}" in manifests
    pvc = manifests["PersistentVolumeClaim/flywheel-log"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]  # every pod mounts it


def _settings_env(
    manifests: dict[str, dict[str, Any]], secret: dict[str, str]
) -> dict[str, str]:
    env = {}
    for var in _container(manifests)["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = secret[ref["key"]] if ref else var["value"]
    return env


def test_the_deployment_sets_real_settings_and_the_placeholder_secret_fails_closed(
    manifests: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    placeholder = manifests["Secret/flywheel-secrets"]["stringData"]
    real = {**placeholder, "admin-token": "a-real-token-of-32-characters-xx"}
    for key, value in _settings_env(manifests, real).items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # extra="forbid": a misspelt setting would fail here
    assert settings.environment == "production"
    assert settings.serving.workers == 2
    monkeypatch.setenv("FLYWHEEL_SECURITY__ADMIN_TOKEN", placeholder["admin-token"])
    with pytest.raises(ValueError, match="ADMIN_TOKEN"):
        Settings()


def test_the_shipped_policy_is_a_valid_policy(
    manifests: dict[str, dict[str, Any]],
) -> None:
    policy_map = next(
        v for k, v in manifests.items() if k.startswith("ConfigMap/flywheel-policy")
    )
    container = _container(manifests)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "policy")
    path = next(e["value"] for e in container["env"]
                if e["name"] == "FLYWHEEL_GUARDRAILS__POLICY_PATH")  # fmt: skip
    assert path == f"{mount['mountPath']}/policy.yaml"
    assert Policy.from_yaml(policy_map["data"]["policy.yaml"]).version
