"""Validate manifests through the models, with errors that name the field and the rule."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from recops.api.common import API_VERSION
from recops.api.finetunejob import FineTuneJob
from recops.api.monitorpolicy import MonitorPolicy
from recops.api.recmodeldeployment import RecModelDeployment

MODELS: dict[str, type[BaseModel]] = {
    "FineTuneJob": FineTuneJob,
    "RecModelDeployment": RecModelDeployment,
    "MonitorPolicy": MonitorPolicy,
}


class InvalidResource(ValueError):
    """A manifest that the API refuses; ``errors`` holds one "path: problem" line per error."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def format_errors(error: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{path or '<root>'}: {message}")
    return lines


def validate_manifest(manifest: dict[str, Any]) -> BaseModel:
    """Parse a recops manifest (FineTuneJob, RecModelDeployment or MonitorPolicy)."""
    kind = manifest.get("kind")
    if manifest.get("apiVersion") != API_VERSION or kind not in MODELS:
        raise InvalidResource([f"<root>: not a {API_VERSION} resource (apiVersion/kind {manifest.get('apiVersion')}/{kind})"])
    body = {k: v for k, v in manifest.items() if k in ("apiVersion", "kind", "metadata", "spec")}
    try:
        return MODELS[kind].model_validate(body)
    except ValidationError as err:
        raise InvalidResource(format_errors(err)) from None


def validate_spec(model: type[BaseModel], spec: dict[str, Any]) -> Any:
    """Parse a bare spec, naming paths from ``spec``."""
    try:
        return model.model_validate(spec)
    except ValidationError as err:
        raise InvalidResource(format_errors(err, "spec")) from None
