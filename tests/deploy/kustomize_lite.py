"""Render the subset of kustomize that ``deploy/k8s`` uses, offline.

No kustomize binary is installable from the package registries here, so CI
renders the overlays with this: ``resources``, ``components``, ``namespace``,
``labels`` (with ``includeSelectors``), ``configMapGenerator`` (``envs``,
``files``, ``behavior: merge``, content-hash name suffixes and the references to
them) and strategic-merge ``patches`` (lists of named items merged by name,
``$patch: delete``). Anything else in a kustomization is an error, so the
manifests cannot silently outgrow what CI checks.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

KNOWN_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "configMapGenerator",
    "patches",
}

Resource = dict[str, Any]


def _key(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge: maps recursively, lists of named maps by name, else replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        merged_list = [copy.deepcopy(i) for i in base]
        for item in patch:
            for index, existing in enumerate(merged_list):
                if existing["name"] == item["name"]:
                    merged_list[index] = merge(existing, item)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _read_env(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            data[name] = value
    return data


def _generate(directory: Path, spec: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = {}
    for env_file in spec.get("envs", []):
        data.update(_read_env(directory / env_file))
    for file in spec.get("files", []):
        data[Path(file).name] = (directory / file).read_text()
    return data


def _render(
    directory: Path, extra_components: list[Path]
) -> tuple[list[Resource], dict[str, dict[str, str]]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise ValueError(f"{directory}: kustomize_lite does not support {sorted(unknown)}")
    resources: list[Resource] = []
    generated: dict[str, dict[str, str]] = {}
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            child, child_generated = _render(path, [])
            resources += child
            generated.update(child_generated)
        else:
            resources += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for spec in kustomization.get("configMapGenerator", []):
        data = _generate(directory, spec)
        if spec.get("behavior") == "merge":
            generated[spec["name"]].update(data)
        else:
            generated[spec["name"]] = data
    components = [directory / c for c in kustomization.get("components", [])] + extra_components
    patch_sets = [(directory, kustomization.get("patches", []))]
    for component in components:
        spec = yaml.safe_load((component / "kustomization.yaml").read_text())
        resources += [
            r
            for entry in spec.get("resources", [])
            for r in yaml.safe_load_all((component / entry).read_text())
            if r
        ]
        patch_sets.append((component, spec.get("patches", [])))
    for base_dir, patches in patch_sets:
        for patch_entry in patches:
            patch = yaml.safe_load((base_dir / patch_entry["path"]).read_text())
            target = _key(patch)
            matches = [r for r in resources if _key(r) == target]
            if not matches:
                raise ValueError(f"patch {patch_entry['path']} matches no resource {target}")
            if patch.get("$patch") == "delete":
                resources = [r for r in resources if _key(r) != target]
                continue
            resources = [merge(r, patch) if _key(r) == target else r for r in resources]
    if "namespace" in kustomization:
        for resource in resources:
            resource.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for label_set in kustomization.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label_set["pairs"])
            if label_set.get("includeSelectors") and resource["kind"] in (
                "Deployment",
                "PodDisruptionBudget",
            ):
                spec = resource["spec"]
                spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(
                    label_set["pairs"]
                )
                if resource["kind"] == "Deployment":
                    template = spec["template"].setdefault("metadata", {})
                    template.setdefault("labels", {}).update(label_set["pairs"])
    return resources, generated


def render(directory: Path, *, components: list[Path] | None = None) -> list[Resource]:
    """Render a kustomization directory into its resources (ConfigMaps included)."""
    resources, generated = _render(directory, components or [])
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    names = {}
    for name, data in generated.items():
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        names[name] = f"{name}-{digest}"
        config_map: Resource = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": names[name]},
            "data": data,
        }
        if "namespace" in kustomization:
            config_map["metadata"]["namespace"] = kustomization["namespace"]
        resources.append(config_map)

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rename(v) for k, v in node.items()}
            for field in ("configMapRef", "configMap"):
                if isinstance(out.get(field), dict) and out[field].get("name") in names:
                    out[field] = {**out[field], "name": names[out[field]["name"]]}
            return out
        if isinstance(node, list):
            return [rename(i) for i in node]
        return node

    return [rename(r) if r["kind"] != "ConfigMap" else r for r in resources]
