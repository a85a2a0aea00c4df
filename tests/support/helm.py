"""The helm binary of hack/build-binaries, and `helm template` of charts/recops as parsed objects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "recops"
# The control plane of hack/. Without --kube-version, `helm template` assumes the version helm was
# stamped with at build time (hack/build-binaries stamps this one, as helm's release builds do).
KUBE_VERSION = "1.37.2"


def helm_binary() -> str:
    paths = subprocess.run([str(REPO / "hack" / "build-binaries"), "--paths"], check=True,
                           capture_output=True, text=True).stdout.strip().split(":")
    for directory in paths:
        if (Path(directory) / "helm").is_file():
            return str(Path(directory) / "helm")
    found = shutil.which("helm")
    if found:
        return found
    raise AssertionError("no helm binary: run `make binaries` (hack/build-binaries builds it)")


def set_args(values: dict[str, Any] | None) -> list[str]:
    """--set-json per top-level key: exact types, no escaping of commas or dots."""
    return [arg for key, value in (values or {}).items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def helm(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res


def render(values: dict[str, Any] | None = None, release: str = "recops", namespace: str = "recops-system",
           *extra: str) -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION,
               *set_args(values), *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a rule list grants."""
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}
