"""A real `recops train` prints the progress lines of the Contracts, which the operator copies into the
FineTuneJob's status.progress from the pod's log (tests/cluster/test_finetunejob.py reads a real pod's log through
the API server). The trainer needs no API credentials for it: this one has none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recops.api import contracts
from tests.workloads.train_support import RECOPS, job_manifest, model_dir, train_env, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]


def test_the_trainer_prints_progress_lines_the_operator_reads(tmp_path: Path, tiny_base: Path,
                                                              shop_events: Path) -> None:
    output = tmp_path / "models"
    config = write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, output,
                                                 training={"epochs": 4, "batchSize": 8}))
    # As in a trainer pod: the operator names the job; no kubeconfig, no token.
    env = train_env(RECOPS_FTJ_NAMESPACE="shop", RECOPS_FTJ_NAME="mine", RECOPS_PROGRESS_INTERVAL="0.5",
                    HOME=str(tmp_path))
    proc = subprocess.run([*RECOPS, "train", "--config", str(config), "--termination-message-path",
                           str(tmp_path / "termination-log")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (model_dir(output) / "recops.json").exists()

    lines = [line for line in proc.stderr.splitlines() if line.startswith(contracts.PROGRESS_MARKER)]
    seen = [contracts.last_progress(line) for line in lines]
    assert all(p is not None for p in seen), lines
    steps = [p["step"] for p in seen if p is not None]
    assert steps == sorted(steps) and len(steps) >= 2, lines
    assert any(p is not None and 0 < p["percent"] < 100 for p in seen), lines  # while training, not only at the end
    final = contracts.last_progress(proc.stderr)  # what the operator takes from the log's tail
    assert final is not None
    assert final["step"] == final["totalSteps"] > 0 and final["percent"] == 100
    if "training stopped early" in proc.stderr:  # the best epoch on validation was behind it (BestEpoch)
        assert 0 < final["epoch"] < 4.0
    else:
        assert final["epoch"] == pytest.approx(4.0)  # in epochs of the spec, not passes over merged rows
    assert final["updatedAt"].endswith("Z")
    # The final line comes when training ends, before the evaluation's lines.
    assert proc.stderr.rindex(contracts.PROGRESS_MARKER) < proc.stderr.rindex("model written to")
