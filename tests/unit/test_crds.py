"""CRDs generated from the models: committed, structural, carrying every CEL rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from recops.api.crd import KINDS, all_crds, crd_for

ROOT = Path(__file__).resolve().parents[2]
# Keywords an apiextensions.k8s.io/v1 schema may use.
ALLOWED = {
    "description", "type", "format", "default", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "multipleOf", "enum", "maxProperties",
    "minProperties", "required", "items", "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties",
    "nullable", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-validations", "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
}


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        out += walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def schema_of(kind: str) -> dict[str, Any]:
    crd = next(crd_for(k) for k in KINDS if k.kind == kind)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def rules_at(kind: str, path: str) -> list[str]:
    node = dict(walk(schema_of(kind)))[path]
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_committed_crds_equal_generated() -> None:
    result = subprocess.run([sys.executable, "-m", "recops", "crds", "--check", "--dir", str(ROOT / "crds")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_names_the_stale_file(tmp_path: Path) -> None:
    for name, text in all_crds().items():
        (tmp_path / name).write_text(text)
    stale = tmp_path / "finetunejobs.recops.dev.yaml"
    stale.write_text(stale.read_text().replace("click-through", "clickthrough"))
    result = subprocess.run([sys.executable, "-m", "recops", "crds", "--check", "--dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert str(stale) in result.stderr
    assert "monitorpolicies" not in result.stderr


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_schema_is_structural(kind: str) -> None:
    for path, node in walk(schema_of(kind)):
        unknown = set(node) - ALLOWED
        assert not unknown, f"{kind}{path}: keywords the apiserver rejects: {unknown}"
        if node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        assert "type" in node, f"{kind}{path}: structural schemas need a type"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        for sub in node.get("anyOf", []) + node.get("allOf", []) + node.get("oneOf", []):
            assert not {"description", "default", "nullable"} & set(sub), f"{kind}{path}: non-value keyword in anyOf"


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_crd_names_status_and_columns(kind: str) -> None:
    crd = next(crd_for(k) for k in KINDS if k.kind == kind)
    names = crd["spec"]["names"]
    assert names["categories"] == ["recops"]
    assert names["shortNames"] == [{"FineTuneJob": "ftj", "RecModelDeployment": "rmd", "MonitorPolicy": "mp"}[kind]]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "lastTransitionTime"}
    assert "observedGeneration" in status["properties"]


def test_every_cel_rule_is_present() -> None:
    assert any("fineTuneJobRef" in r and "lineage" in r for r in rules_at("RecModelDeployment", ".spec.model"))
    assert any("isSorted()" in r and "<= 100" in r for r in rules_at("RecModelDeployment", ".spec.rollout.canary"))
    threshold = rules_at("MonitorPolicy", ".spec.rules[].threshold")
    assert any("relativeDecrease" in r and "relativeIncrease" in r for r in threshold)
    assert threshold == rules_at("RecModelDeployment", ".spec.rollout.canary.analysis.rules[].threshold")
    gate = rules_at("FineTuneJob", ".spec.evaluation.gate")
    assert "!(has(self.minimum) && has(self.maximum))" in gate
    assert any("'constant' in self.beatBaselines" in r for r in gate) and any("'bm25' in self.beatBaselines" in r for r in gate)
    resources = rules_at("FineTuneJob", ".spec.resources")
    assert "self.workers >= 1" in resources and "self.gpusPerWorker >= 0" in resources
    spec_rules = rules_at("FineTuneJob", ".spec")
    immutable = [r for r in spec_rules if "oldSelf" in r]
    guarded = {r.split("has(self.")[1].split(")")[0] for r in immutable}
    spec_fields = set(schema_of("FineTuneJob")["properties"]["spec"]["properties"])
    assert guarded == spec_fields - {"suspend", "activeDeadlineSeconds"}


def test_strings_and_lists_read_by_cel_are_bounded() -> None:
    steps = dict(walk(schema_of("RecModelDeployment")))[".spec.rollout.canary.steps"]
    assert steps["maxItems"] <= 20
    rules = dict(walk(schema_of("MonitorPolicy")))[".spec.rules"]
    assert rules["maxItems"] <= 32
    assert dict(walk(schema_of("MonitorPolicy")))[".spec.rules[].name"]["maxLength"] == 63


def test_nested_objects_default_so_the_apiserver_applies_inner_defaults() -> None:
    spec = schema_of("FineTuneJob")["properties"]["spec"]["properties"]
    # Spelled out (not {}): the apiserver checks a default against the CEL rules without
    # applying nested defaults first.
    assert spec["training"]["default"]["precision"] == "auto"
    assert spec["training"]["properties"]["precision"]["default"] == "auto"
    assert spec["resources"]["default"]["workers"] == 1
    cpu = spec["resources"]["properties"]["cpu"]
    assert cpu["anyOf"] == [{"type": "integer"}, {"type": "string"}] and "pattern" in cpu


def test_stdlib_operator_module_is_not_shadowed() -> None:
    result = subprocess.run([sys.executable, "-c", "import operator, recops; operator.itemgetter; print(operator.__file__)"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "/operator/" not in result.stdout.replace(str(ROOT), "")
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_examples_validate() -> None:
    from recops.api import validate_manifest

    files = sorted((ROOT / "examples").rglob("*.yaml"))
    assert len(files) >= 3
    kinds = set()
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "recops.dev/v1alpha1":
                validate_manifest(doc)
                kinds.add(doc["kind"])
    assert kinds == {"FineTuneJob", "RecModelDeployment", "MonitorPolicy"}
