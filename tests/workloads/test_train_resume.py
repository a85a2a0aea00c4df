"""A trainer killed mid-training resumes from its last checkpoint when run again (as a restarted pod
does), and two CPU processes under torchrun train data-parallel with gloo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recops.api.contracts import ModelManifest
from tests.workloads.train_support import RECOPS, job_manifest, leftovers, model_dir, run_train, train_env, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]


def newest_complete_checkpoint(checkpoints: Path) -> int | None:
    steps = [int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(steps) if steps else None


def test_a_killed_trainer_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    output = tmp_path / "models"
    manifest = job_manifest("click-through", tiny_base, shop_events, output, training={"epochs": 3, "batchSize": 16})
    config = write_config(tmp_path, manifest)
    checkpoints = output / "shop" / "ftj-01234567.checkpoints"
    env = train_env(RECOPS_CHECKPOINT_STEPS="10")
    argv = [*RECOPS, "train", "--config", str(config), "--termination-message-path", str(tmp_path / "first-log")]
    log_file = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while newest_complete_checkpoint(checkpoints) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before it could be killed: " + (tmp_path / "first.log").read_text()[-2000:]
        first.send_signal(signal.SIGKILL)  # a pod killed without notice
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        log_file.close()
    killed_at = newest_complete_checkpoint(checkpoints)
    assert killed_at is not None
    assert not (model_dir(output) / "recops.json").exists()
    assert not model_dir(output).exists()  # never a model before it is complete
    total_steps = json.loads((checkpoints / f"checkpoint-{killed_at}" / "trainer_state.json").read_text())["max_steps"]
    assert killed_at < total_steps

    second = run_train(config, tmp_path / "termination-log", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = re.search(r"resuming from checkpoint \S+checkpoint-(\d+) \(step (\d+) of (\d+)\)", second.stderr)
    assert resumed, second.stderr[-3000:]
    assert int(resumed.group(1)) >= killed_at and int(resumed.group(3)) == total_steps
    first_step = int(re.findall(r"step (\d+)/\d+ \(", second.stderr)[0])
    assert first_step > killed_at  # it went on, it did not start over
    assert f"from step {resumed.group(1)}" in second.stderr

    written = ModelManifest.model_validate_json((model_dir(output) / "recops.json").read_text())
    assert written.metrics
    assert f"resumed from `{checkpoints}" in (model_dir(output) / "README.md").read_text()
    assert not checkpoints.exists()  # done: the checkpoints are gone, the model is complete
    assert not [p for p in leftovers(output) if "partial" in p]


def test_checkpoints_of_another_job_are_not_resumed(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    output = tmp_path / "models"
    checkpoints = output / "shop" / "ftj-01234567.checkpoints"
    stale = checkpoints / "checkpoint-5"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text(json.dumps({"global_step": 5, "max_steps": 10}))
    (checkpoints / "recops-run.json").write_text(json.dumps({"specDigest": "another job"}))
    config = write_config(tmp_path, job_manifest("relevance", tiny_base, shop_events, output))
    run = run_train(config, tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "belong to another job or other data; starting over" in run.stderr
    assert "resuming from checkpoint" not in run.stderr
    assert (model_dir(output) / "recops.json").exists()


def test_two_processes_under_torchrun_train_data_parallel(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    output = tmp_path / "models"
    config = write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, output,
                                                 training={"epochs": 1, "batchSize": 8}))
    single = write_config(tmp_path, job_manifest("click-through", tiny_base, shop_events, tmp_path / "single",
                                                 training={"epochs": 1, "batchSize": 8}), name="single.yaml")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "recops",
                "train"]
    env = train_env(OMP_NUM_THREADS="1")
    run = run_train(config, tmp_path / "termination-log", command=torchrun, env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    model = model_dir(output)
    written = ModelManifest.model_validate_json((model / "recops.json").read_text())
    assert written.metrics and run.termination is not None and run.termination["error"] is None
    assert "processes: 2" in (model / "README.md").read_text()
    steps_two = int(re.search(r"training: (\d+) optimiser steps", run.stderr).group(1))  # type: ignore[union-attr]

    # The same job in one process takes twice the optimiser steps: each of the two ranks saw half the data.
    alone = run_train(single, tmp_path / "single-log", env=dict(env, OMP_NUM_THREADS="2"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    steps_one = int(re.search(r"training: (\d+) optimiser steps", alone.stderr).group(1))  # type: ignore[union-attr]
    assert steps_two == pytest.approx(steps_one / 2, abs=1)
    assert os.path.exists(tmp_path / "single" / "shop" / "ftj-01234567" / "recops.json")
