"""Shared by the trainer workload tests (tests/workloads/test_train*.py): a job manifest, and a
helper that runs `recops train` as a real process. Their inputs, the fixtures `tiny_base` and
`shop_events`, are in tests/workloads/conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RECOPS = [sys.executable, "-m", "recops"]
TRAIN_TIMEOUT_S = 600


def train_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOPS_FTJ_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    env.pop("KUBECONFIG", None)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "2", **extra})
    return env


def job_manifest(
    task: str, base: Path, data: Path, output: Path, *, name: str = "ftj", uid: str = "0123456789abcdef-uid",
    namespace: str = "shop", training: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "recops.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {
            "task": task,
            "baseModel": {"uri": str(base)},
            "dataset": {"uri": str(data), **(dataset or {})},
            "training": {"epochs": 1, "batchSize": 16, "maxLength": 48, "learningRate": 1e-3, **(training or {})},
            "output": {"uri": str(output)},
            "evaluation": evaluation or {"metrics": ["auc", "logloss", "rmse", "ndcg@10", "mrr", "recall@10", "loss"]},
        },
    }


@dataclass
class TrainRun:
    returncode: int
    stdout: str
    stderr: str
    termination: dict[str, Any] | None

    @property
    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def write_config(tmp_path: Path, manifest: dict[str, Any], name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(manifest))
    return path


def run_train(config: Path, termination: Path, *extra: str, env: dict[str, str] | None = None,
              command: list[str] | None = None, timeout: int = TRAIN_TIMEOUT_S) -> TrainRun:
    argv = [*(command or [*RECOPS, "train"]), "--config", str(config), "--termination-message-path", str(termination),
            *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or train_env(), timeout=timeout)
    message = json.loads(termination.read_text()) if termination.exists() else None
    return TrainRun(proc.returncode, proc.stdout, proc.stderr, message)


def model_dir(output: Path, namespace: str = "shop", version: str = "ftj-01234567") -> Path:
    return output / namespace / version


def leftovers(output: Path) -> list[str]:
    """Everything under the output prefix (relative paths), to assert nothing is left behind."""
    if not output.exists():
        return []
    return sorted(str(p.relative_to(output)) for p in output.rglob("*"))


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
