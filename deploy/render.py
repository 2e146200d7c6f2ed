"""Render the Kustomize base without kustomize: `python -m deploy.render [BASE]`.

Implements the part of kustomize the base uses: `resources`, `configMapGenerator`
(`files: [key=path]`, names without the content-hash suffix), and `labels` (added to
every object's metadata, and with `includeSelectors` to the selectors and pod
templates of Deployments, Services and CronJobs). Prints one multi-document YAML
stream. Where `kubectl kustomize` exists, prefer it; the tests compare both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parent / "kustomize" / "base"


def render(base: Path = BASE) -> list[dict[str, Any]]:
    spec = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in spec.get("resources", []):
        docs.extend(d for d in yaml.safe_load_all((base / name).read_text()) if d)
    for generator in spec.get("configMapGenerator", []):
        docs.append(_config_map(base, generator))
    for label_set in spec.get("labels", []):
        for doc in docs:
            _add_labels(
                doc, label_set["pairs"], label_set.get("includeSelectors", False)
            )
    return docs


def _config_map(base: Path, generator: dict[str, Any]) -> dict[str, Any]:
    data = {}
    for entry in generator.get("files", []):
        key, _, path = entry.partition("=")
        data[key] = (base / path).read_text()
    meta: dict[str, Any] = {"name": generator["name"]}
    labels = generator.get("options", {}).get("labels")
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _add_labels(doc: dict[str, Any], pairs: dict[str, str], selectors: bool) -> None:
    doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if not selectors:
        return
    spec = doc.get("spec", {})
    kind = doc["kind"]
    if kind == "Deployment":
        spec["selector"].setdefault("matchLabels", {}).update(pairs)
        spec["template"]["metadata"].setdefault("labels", {}).update(pairs)
    elif kind == "Service":
        spec.setdefault("selector", {}).update(pairs)
    elif kind == "CronJob":
        template = spec["jobTemplate"]["spec"]["template"]
        template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def main(argv: list[str]) -> int:
    base = Path(argv[0]) if argv else BASE
    if not (base / "kustomization.yaml").is_file():
        print(f"no kustomization.yaml in {base}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(render(base), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
