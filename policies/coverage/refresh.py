"""Refresh checkov_checks.json: the checks checkov runs on the Terraform resource types and
Kubernetes kinds of scope.py (their ids, names and the types they target).

checkov pins versions that conflict with the project's, so this runs with checkov's own
interpreter (e.g. the venv benchmarks/bench_check.py creates):

    /tmp/checkov-venv/bin/python policies/coverage/refresh.py

It reads checkov's registries and its graph-check definitions (for those, the resource types a
check filters on, not every type its conditions mention); nothing of checkov is copied but ids,
names and target types.
"""

# pyright: reportMissingImports=false
# (checkov lives in its own venv, not the project's: this script runs under checkov's interpreter.)
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scope import KUBERNETES, TERRAFORM  # noqa: E402  (a plain module next to this script)


def _graph_targets(definition: Any) -> set[str]:
    """The resource types a graph check applies to: its `filter` on resource type (or kind) if it
    has one, else the resource_types its conditions test (not the types they connect to)."""
    filters: set[str] = set()
    tested: set[str] = set()

    def listed(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else [str(v) for v in value or []]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("cond_type") == "filter" and node.get("attribute") in ("resource_type", "kind"):
                filters.update(listed(node.get("value")))
            elif "resource_types" in node:
                tested.update(t for t in listed(node["resource_types"]) if t != "all")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(definition)
    return filters or tested


def main() -> None:
    import checkov
    from checkov.kubernetes.checks.resource.registry import registry as k8s_registry
    from checkov.terraform.checks.resource.registry import resource_registry
    from checkov.version import version

    tf_types, kinds = set(TERRAFORM.values()), set(KUBERNETES.values())
    checks: dict[str, dict[str, Any]] = {}

    def add(check_id: str, name: str, target: str) -> None:
        entry = checks.setdefault(check_id, {"name": name, "on": []})
        if target not in entry["on"]:
            entry["on"].append(target)

    for rtype, registered in resource_registry.checks.items():
        if rtype in tf_types:
            for c in registered:
                add(c.id, c.name, rtype)
    for kind, registered in k8s_registry.checks.items():
        if kind in kinds:
            for c in registered:
                add(c.id, c.name, kind)
    root = Path(str(checkov.__file__)).parent
    for folder, types in (
        (root / "terraform" / "checks" / "graph_checks", tf_types),
        (root / "kubernetes" / "checks" / "graph_checks", kinds),
    ):
        for path in sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".json")):
            doc = yaml.safe_load(path.read_text())
            meta = (doc or {}).get("metadata") or {}
            for target in sorted(_graph_targets(doc.get("definition")) & types):
                add(str(meta.get("id")), str(meta.get("name")), target)
    for entry in checks.values():
        entry["on"].sort()
    out = {"checkov": version, "checks": dict(sorted(checks.items(), key=lambda kv: _order(kv[0])))}
    (HERE / "checkov_checks.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"checkov {version}: {len(checks)} checks on {len(tf_types) + len(kinds)} types")


def _order(check_id: str) -> tuple[str, int]:
    prefix, _, number = check_id.rpartition("_")
    return prefix, int(number) if number.isdigit() else 0


if __name__ == "__main__":
    main()
