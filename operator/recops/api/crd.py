"""Generate apiextensions.k8s.io/v1 CRDs from the pydantic models.

pydantic writes JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3 subset. This
module inlines references, turns Optional into "not required", and drops or rewrites the
keywords the apiserver rejects, so that the models stay the single source of truth.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from recops.api import finetunejob, monitorpolicy, recmodeldeployment
from recops.api.common import GROUP, VERSION

_DROP = {"title", "examples", "discriminator", "readOnly", "writeOnly", "deprecated"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: list[dict[str, Any]]
    description: str
    spec_required: bool = True


KINDS = (
    Kind(
        "FineTuneJob", finetunejob.PLURAL, "finetunejob", ("ftj",),
        finetunejob.FineTuneJobSpec, finetunejob.FineTuneJobStatus, finetunejob.PRINTER_COLUMNS,
        "FineTuneJob fine-tunes a pretrained transformer on shop data, evaluates it and writes a deployable model.",
    ),
    Kind(
        "RecModelDeployment", recmodeldeployment.PLURAL, "recmodeldeployment", ("rmd",),
        recmodeldeployment.RecModelDeploymentSpec, recmodeldeployment.RecModelDeploymentStatus,
        recmodeldeployment.PRINTER_COLUMNS,
        "RecModelDeployment serves a model for real-time ranking and rolls new models out safely.",
    ),
    Kind(
        "MonitorPolicy", monitorpolicy.PLURAL, "monitorpolicy", ("mp",),
        monitorpolicy.MonitorPolicySpec, monitorpolicy.MonitorPolicyStatus, monitorpolicy.PRINTER_COLUMNS,
        "MonitorPolicy watches a RecModelDeployment's live metrics and retrains when they degrade.",
    ),
)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **siblings}, defs)
    return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}


def _structural(node: Any) -> Any:
    """Rewrite one inlined pydantic schema node into the Kubernetes subset."""
    if isinstance(node, list):
        return [_structural(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # Optional[X] -> X: absence, not null, means "unset" on the Kubernetes API.
    any_of = node.get("anyOf")
    if any_of and any(s == {"type": "null"} for s in any_of):
        rest = [s for s in any_of if s != {"type": "null"}]
        node.pop("anyOf")
        if len(rest) == 1:
            node = {**rest[0], **node}
        else:
            node["anyOf"] = rest
    if node.get("default", 0) is None:
        node.pop("default")
    for key in _DROP:
        node.pop(key, None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("additionalProperties") is False or node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        if node.get("type") == "object" and "properties" not in node:
            node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    # Object fields default to {} so the apiserver applies their nested defaults.
    for name, prop in (node.get("properties") or {}).items():
        optional = name not in node.get("required", []) and not prop.get("required")
        if optional and "default" not in prop and prop.get("type") == "object" and "properties" in prop:
            prop["default"] = {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: _structural(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _structural(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_value_only(_structural(v)) for v in value]
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    # description and type first: the order `kubectl explain` readers scan in.
    head = {k: out.pop(k) for k in ("description", "type") if k in out}
    return {**head, **out}


def _value_only(node: dict[str, Any]) -> dict[str, Any]:
    """Inside anyOf/allOf/oneOf a structural schema may only hold value validations."""
    for key in ("description", "default", "nullable", "additionalProperties"):
        node.pop(key, None)
    return node


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(_inline(raw, defs))
    _materialise_defaults(schema)
    return schema


def _nested_defaults(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in (node.get("properties") or {}).items():
        if "default" in prop:
            out[name] = prop["default"]
    return out


def _materialise_defaults(node: dict[str, Any]) -> None:
    """An object default of {} spelled out with its fields' defaults.

    The apiserver validates a default (CEL rules included) without applying the nested
    defaults first, so a rule such as `self.workers >= 1` would find no key in {}.
    """
    for prop in (node.get("properties") or {}).values():
        _materialise_defaults(prop)
        if prop.get("default") == {} and prop.get("type") == "object":
            prop["default"] = _nested_defaults(prop)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _materialise_defaults(node[key])


def _immutable_spec_rules(schema: dict[str, Any]) -> list[dict[str, str]]:
    """As batch/v1 Job: every spec field but suspend and activeDeadlineSeconds is fixed at creation."""
    rules = []
    for name in schema["properties"]:
        if name in finetunejob.MUTABLE_SPEC_FIELDS:
            continue
        rules.append(
            {
                "rule": f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
                "message": f"spec.{name} is immutable; only suspend and activeDeadlineSeconds may change",
                "fieldPath": f".{name}",
                "reason": "FieldValueForbidden",
            }
        )
    return rules


def crd_for(kind: Kind) -> dict[str, Any]:
    spec = openapi_schema(kind.spec)
    spec["description"] = f"Desired state of the {kind.kind}."
    if kind.kind == "FineTuneJob":
        spec["x-kubernetes-validations"] = [*spec.get("x-kubernetes-validations", []), *_immutable_spec_rules(spec)]
    status = openapi_schema(kind.status)
    status["description"] = f"Observed state of the {kind.kind}, written by recops."
    schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "recops.dev/v1alpha1"},
            "kind": {"type": "string", "description": kind.kind},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "recops", "app.kubernetes.io/part-of": "recops"},
            # Argo CD applies CRDs in an earlier wave than the resources that use them.
            "annotations": {"argocd.argoproj.io/sync-wave": "-10"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["recops"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.printer_columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = "# Generated by `recops crds` from recops.api; do not edit.\n"
    return header + yaml.safe_dump(crd_for(kind), sort_keys=False, width=120)


def all_crds() -> dict[str, str]:
    """File name -> YAML text for every kind."""
    return {f"{k.plural}.{GROUP}.yaml": render(k) for k in KINDS}
