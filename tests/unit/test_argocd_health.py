"""Argo CD health checks, run by a real Lua 5.1 interpreter against sample statuses."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("argocd_generate", ROOT / "argocd" / "generate.py")
assert _spec and _spec.loader
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

# Not skipped when missing: .ci/run installs Debian's lua5.1, and a silent skip would hide it.
LUA = shutil.which("lua5.1") or "lua5.1-is-not-installed"


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local check = loadstring({lua_literal(generate.script(kind))})\n"
        'local hs = check()\nio.write(hs.status .. "\\t" .. (hs.message or ""))\n'
    )
    out = subprocess.run([str(LUA), "-"], input=program, capture_output=True, text=True, check=True)
    status, _, message = out.stdout.partition("\t")
    return status, message


def resource(generation: int = 1, observed: int | None = 1, **conditions: tuple[str, str]) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}}
    if observed is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "phase": "Running",
            "conditions": [{"type": t, "status": s, "reason": "R", "message": m} for t, (s, m) in conditions.items()],
        }
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(observed=None), "Progressing"),
        (resource(generation=2, Complete=("True", "done"), Ready=("True", "ok")), "Progressing"),
        (resource(Complete=("True", ""), GatePassed=("True", ""), Ready=("True", "ok")), "Healthy"),
        (resource(Complete=("True", ""), Ready=("True", "ok")), "Healthy"),
        (resource(Complete=("True", ""), GatePassed=("False", "auc 0.51 < 0.6")), "Degraded"),
        (resource(Failed=("True", "exit code 3: out of memory"), Complete=("False", "")), "Degraded"),
        (resource(Suspended=("True", "spec.suspend is true")), "Suspended"),
        (resource(Complete=("False", ""), Failed=("False", "")), "Progressing"),
    ],
)
def test_finetunejob(obj: dict[str, Any], expected: str) -> None:
    assert health("FineTuneJob", obj)[0] == expected


def test_messages_come_from_conditions() -> None:
    status, message = health("FineTuneJob", resource(Failed=("True", "exit code 3: out of memory")))
    assert (status, message) == ("Degraded", "exit code 3: out of memory")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(observed=None), "Progressing"),
        (resource(Available=("True", ""), Ready=("True", ""), Progressing=("False", "")), "Healthy"),
        (resource(Available=("True", ""), Progressing=("True", "canary at 10%")), "Progressing"),
        (resource(Available=("True", ""), Degraded=("True", "ctr 0.02 below 0.05")), "Degraded"),
        (resource(Ready=("False", "waiting for lineage shop")), "Progressing"),
    ],
)
def test_recmodeldeployment(obj: dict[str, Any], expected: str) -> None:
    assert health("RecModelDeployment", obj)[0] == expected


def test_recmodeldeployment_without_ready_replicas_is_degraded() -> None:
    obj = resource(Available=("False", "no ready replica"), Ready=("False", ""))
    obj["status"]["stable"] = {"modelVersion": "m-1"}
    assert health("RecModelDeployment", obj) == ("Degraded", "no ready replica")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(observed=None), "Progressing"),
        (resource(Healthy=("True", ""), Ready=("True", ""), MetricsUnavailable=("False", "")), "Healthy"),
        (resource(Healthy=("False", "ctr breached"), MetricsUnavailable=("False", "")), "Degraded"),
        (resource(Healthy=("False", ""), Retraining=("True", "retrain-1 running")), "Progressing"),
        (resource(MetricsUnavailable=("True", "connection refused")), "Degraded"),
    ],
)
def test_monitorpolicy(obj: dict[str, Any], expected: str) -> None:
    assert health("MonitorPolicy", obj)[0] == expected


def test_argocd_cm_is_generated_from_the_scripts() -> None:
    assert (ROOT / "argocd" / "argocd-cm.yaml").read_text() == generate.render()
