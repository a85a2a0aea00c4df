"""`make demo` end to end, in its fast mode (a tiny random model, small data, short windows).

hack/demo.py starts its own control plane with the process node, Prometheus and the
operator (chart + the chart's ServiceAccount), fine-tunes, serves, drives shoppers, switches
on the preference shift, and follows the policy's retrain and the canary to its decision.
Then `hack/demo.py down` must leave no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "hack" / "demo.py"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose command line or environment names `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (text in cmdline or text in environ):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    # Not under /tmp: the process node mounts an emptyDir over the pods' /tmp.
    path = Path(tempfile.mkdtemp(prefix="recops-demo-e2e-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run([sys.executable, str(DEMO), "down"], env={**os.environ, "RECOPS_DEMO_DIR": str(path)},
                   capture_output=True, timeout=300)
    shutil.rmtree(path, ignore_errors=True)


def test_make_demo_runs_the_whole_loop_and_demo_down_leaves_no_process(demo_dir: Path) -> None:
    env = {**os.environ, "RECOPS_DEMO_DIR": str(demo_dir)}
    up = subprocess.run([sys.executable, str(DEMO), "up", "--fast"], env=env, capture_output=True, text=True,
                        timeout=1700)
    output = up.stdout + up.stderr
    print(output)
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in (demo_dir / "logs").glob("*.log"))
    # Promoted, rolled back, or a retrain that did not pass its gate (the stable model kept): each a whole run.
    assert up.returncode == 0, output[-6000:] + logs
    summary = json.loads((demo_dir / "summary.json").read_text())

    # A first model really trained and served, then retrained on the event log after the shift.
    first, retrained = summary["firstModel"], summary["retrainedModel"]
    assert first["version"].startswith("shop-ranker-v1-")
    assert retrained["version"].startswith("shop-ranker-ctr-") and retrained["version"] != first["version"]
    for model in (first, retrained):
        model_dir = Path(model["uri"])
        assert (model_dir / "recops.json").exists() and (model_dir / "README.md").exists(), model_dir
    assert summary["retrainedMetrics"], summary

    # The shift lowered the click-through rate: seen by the shoppers and by the policy (Prometheus).
    phases = summary["traffic"]["phases"]
    before, after = phases["before the shift"], phases["after the shift"]
    assert after["clicks"] / after["impressions"] < before["clicks"] / before["impressions"], phases
    assert summary["ctrAtBreach"] < 0.8 * summary["ctrBaseline"], summary

    # The retrain's gate names BM25 and popularity; the summary shows each model against its baselines.
    assert summary["retrainedGatePassed"] in (True, False) and set(summary["retrainedBaseline"]) >= {"bm25", "popularity"}
    assert "bm25" in output and "popularity" in output
    # A model that failed its gate never reached a canary; otherwise analysis decided, and the terminal said so.
    assert (summary["outcome"] == "GateFailed") == (summary["retrainedGatePassed"] is False)
    assert summary["outcome"] in ("Promoted", "RolledBack", "GateFailed")
    assert f"canary:          {summary['outcome']}" in output
    if summary["outcome"] == "GateFailed":
        assert f"keeps serving {first['version']}; no canary" in output
    if summary["outcome"] == "Promoted":  # the policy measured the promoted model's own baseline
        assert summary["ctrPromoted"] is not None, summary
    # spec.optimize: each model says which form serves it, and its servers' recops_model_info agrees (Prometheus).
    formats = summary["servedFormats"]
    # The fast mode optimises to float32 ONNX (its tiny model's int8 ranks far off): the cluster serves that form.
    assert formats.get(first["version"]) == "onnx-none", (formats, summary["firstOptimization"])
    for which, model in (("first", first), ("retrained", retrained)):
        optimization = summary[f"{which}Optimization"]
        assert optimization is not None and optimization["reason"], summary
        expected = f"onnx-{optimization['quantization']}" if optimization["served"] else "torch"
        assert formats.get(model["version"], expected) == expected, (which, formats, optimization)
        assert f"served as {expected}: " in output
    for line in ("==== recops demo summary ====", "phases:", "model cards and training curves"):
        assert line in output
    assert "ctr stable" in output  # the live table's header

    # make demo-down: nothing of the demo keeps running.
    down = subprocess.run([sys.executable, str(DEMO), "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_mentioning(str(demo_dir)) == []
