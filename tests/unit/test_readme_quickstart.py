"""examples/quickstart/, as hack/demo.py fills it in (full and fast), is valid recops API."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from recops.api.validation import validate_manifest

REPO = Path(__file__).resolve().parents[2]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recops_demo", REPO / "hack" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["recops_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
def test_quickstart_manifests_render_and_validate(fast: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_DEMO_DIR", str(tmp_path))
    demo = load_demo()
    settings = demo.Settings.make(fast)
    values = demo.quickstart_values(settings, "builtin://all-minilm-l6-v2")
    kinds = []
    for path in sorted((REPO / "examples" / "quickstart").glob("*.yaml")):
        text = demo.render(path.name, values, settings)
        assert "${" not in text, path.name
        for manifest in yaml.safe_load_all(text):
            kinds.append(manifest["kind"])
            if manifest["apiVersion"].startswith("recops.dev/"):
                assert manifest["metadata"]["namespace"] == demo.NAMESPACE
                validate_manifest(manifest)
    assert kinds == ["Namespace", "FineTuneJob", "RecModelDeployment", "MonitorPolicy"]


def test_the_monitor_policy_watches_the_deployment_that_follows_the_first_jobs_lineage(tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch
                                                                                      ) -> None:
    monkeypatch.setenv("RECOPS_DEMO_DIR", str(tmp_path))
    demo = load_demo()
    settings = demo.Settings.make(True)
    values = demo.quickstart_values(settings, "/models/tiny")
    docs = {d["kind"]: d for name in ("10-finetunejob.yaml", "20-recmodeldeployment.yaml", "30-monitorpolicy.yaml")
            for d in yaml.safe_load_all(demo.render(name, values, settings))}
    ftj, rmd, policy = docs["FineTuneJob"], docs["RecModelDeployment"], docs["MonitorPolicy"]
    assert ftj["metadata"]["name"] == "shop-ranker-v1"
    assert ftj["metadata"]["labels"]["recops.dev/lineage"] == rmd["spec"]["model"]["lineage"] == demo.LINEAGE
    assert rmd["metadata"]["name"] == policy["spec"]["targetRef"]["name"] == demo.RMD
    assert policy["metadata"]["name"] == demo.POLICY
    assert rmd["spec"]["serving"]["eventLog"]["uri"].startswith(str(tmp_path))
    assert ftj["spec"]["baseModel"]["uri"] == policy["spec"]["retrain"]["template"]["spec"]["baseModel"]["uri"]


def test_fast_mode_changes_only_the_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_DEMO_DIR", str(tmp_path))
    demo = load_demo()
    full, fast = demo.Settings.make(False), demo.Settings.make(True)
    values = demo.quickstart_values(full, "/models/base")
    as_files = yaml.safe_load(demo.render("30-monitorpolicy.yaml", values, full))
    shortened = yaml.safe_load(demo.render("30-monitorpolicy.yaml", values, fast))
    assert as_files["spec"]["baselineWindow"] == "60s" and shortened["spec"]["baselineWindow"] == "20s"
    assert shortened["spec"]["rules"][0]["minSamples"] < as_files["spec"]["rules"][0]["minSamples"]
    assert shortened["spec"]["retrain"]["template"]["spec"]["training"]["maxLength"] == fast.max_length
    assert shortened["spec"]["targetRef"] == as_files["spec"]["targetRef"]
