"""Argo CD health checks in Argo CD's own layout (argocd/resource_customizations/<group>/<Kind>/health.lua),
run by a real Lua 5.1 interpreter against each case of the health_test.yaml beside them, as Argo CD's
resource_customizations test does: the status and the message must both match."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CUSTOMIZATIONS = ROOT / "argocd" / "resource_customizations"
_spec = importlib.util.spec_from_file_location("argocd_generate", ROOT / "argocd" / "generate.py")
assert _spec and _spec.loader
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

# Not skipped when missing: a silent skip would hide it (`make test` installs Debian's lua5.1).
LUA = shutil.which("lua5.1")


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


def health(script: Path, obj: dict[str, Any]) -> dict[str, str]:
    """Run a health.lua as Argo CD does: the live object in the global `obj`, the script returns the status."""
    assert LUA, "lua5.1 is not installed: run hack/system-packages (or `make test`, which runs it)"
    program = f"obj = {lua_literal(obj)}\nlocal hs = dofile({lua_literal(str(script))})\n" \
              'io.write(hs.status .. "\\t" .. (hs.message or ""))\n'
    out = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    status, _, message = out.stdout.partition("\t")
    return {"status": status, "message": message}


def cases() -> list[Any]:
    found = []
    for test_file in sorted(CUSTOMIZATIONS.glob("*/*/health_test.yaml")):
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            kind_dir = test_file.parent
            found.append(pytest.param(kind_dir, case, id=f"{kind_dir.name}/{Path(case['inputPath']).stem}"))
    return found


@pytest.mark.parametrize(("kind_dir", "case"), cases())
def test_health_check_case(kind_dir: Path, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((kind_dir / case["inputPath"]).read_text())
    assert (obj["apiVersion"].split("/")[0], obj["kind"]) == (kind_dir.parent.name, kind_dir.name)
    assert health(kind_dir / "health.lua", obj) == {"message": "", **case["healthStatus"]}


def test_every_kind_has_a_check_and_tests_reaching_each_of_its_statuses() -> None:
    wanted = {"FineTuneJob": {"Healthy", "Progressing", "Degraded", "Suspended"},
              "RecModelDeployment": {"Healthy", "Progressing", "Degraded"},
              "MonitorPolicy": {"Healthy", "Progressing", "Degraded"}}
    for kind, statuses in wanted.items():
        kind_dir = CUSTOMIZATIONS / "recops.dev" / kind
        assert (kind_dir / "health.lua").is_file(), kind
        tests = yaml.safe_load((kind_dir / "health_test.yaml").read_text())["tests"]
        assert {t["healthStatus"]["status"] for t in tests} == statuses, kind


def test_every_form_is_generated_from_the_sources_and_carries_the_same_scripts() -> None:
    assert not generate.stale(), "run argocd/generate.py"
    scripts = {kind: generate.script(kind) for kind in generate.KINDS}
    for kind, text in scripts.items():
        assert generate.health_lua_path(kind).read_text().endswith(text)
    key = "resource.customizations.health.recops.dev_{}".format
    cm = yaml.safe_load((ROOT / "argocd" / "argocd-cm.yaml").read_text())["data"]
    assert cm == {key(kind): text for kind, text in scripts.items()}
    values = yaml.safe_load((ROOT / "argocd" / "argocd-helm-values.yaml").read_text())
    assert values == {"configs": {"cm": cm}}
    checks = yaml.safe_load((ROOT / "argocd" / "argocd-operator-patch.yaml").read_text())["spec"]["resourceHealthChecks"]
    assert checks == [{"group": "recops.dev", "kind": kind, "check": text} for kind, text in scripts.items()]
