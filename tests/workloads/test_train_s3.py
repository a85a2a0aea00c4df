"""`recops train` with an object store (a moto S3 server process): the base model is read from
s3://, the model is uploaded with recops.json last, checkpoints are mirrored there so a pod
restarted elsewhere resumes, and a complete model there is never overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from recops.api.contracts import ModelManifest
from tests.workloads.train_support import RECOPS, job_manifest, run_train, train_env, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]
BUCKET = "shop-models"


@pytest.fixture
def s3_env(s3_store: dict[str, str]) -> dict[str, str]:
    client(s3_store).create_bucket(Bucket=BUCKET)
    return s3_store


def client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1")


def keys(env: dict[str, str], prefix: str) -> list[str]:
    listing = client(env).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def upload_dir(env: dict[str, str], source: Path, prefix: str) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            client(env).upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(source).as_posix()}")


def test_model_and_checkpoints_on_s3_and_a_restarted_trainer_resumes_from_there(
    s3_env: dict[str, str], tmp_path: Path, tiny_base: Path, shop_events: Path
) -> None:
    upload_dir(s3_env, tiny_base, "base/tiny")
    manifest = job_manifest("click-through", Path("unused"), shop_events, Path("unused"),
                            training={"epochs": 3, "batchSize": 16})
    manifest["spec"]["baseModel"] = {"uri": f"s3://{BUCKET}/base/tiny"}
    manifest["spec"]["output"] = {"uri": f"s3://{BUCKET}/recops"}
    config = write_config(tmp_path, manifest)
    env = train_env(**s3_env, RECOPS_CHECKPOINT_STEPS="10")
    checkpoints = "recops/shop/ftj-01234567.checkpoints/"

    first = subprocess.Popen([*RECOPS, "train", "--config", str(config), "--termination-message-path",
                              str(tmp_path / "first-log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while first.poll() is None and time.monotonic() < deadline:
            if any(k.endswith("/trainer_state.json") for k in keys(s3_env, checkpoints)):
                break
            time.sleep(0.3)
        assert first.poll() is None, "the first run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert keys(s3_env, "recops/shop/ftj-01234567/") == []  # nothing at the model's place yet

    run = run_train(config, tmp_path / "termination-log", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "downloaded checkpoint-" in run.stderr and "resuming from checkpoint" in run.stderr
    model_keys = keys(s3_env, "recops/shop/ftj-01234567/")
    names = {k.rsplit("/", 1)[-1] for k in model_keys}
    assert {"recops.json", "model.safetensors", "config.json", "tokenizer.json", "README.md",
            "training_curves.png"} <= names
    assert keys(s3_env, checkpoints) == []  # complete: the checkpoints are gone
    body = client(s3_env).get_object(Bucket=BUCKET, Key="recops/shop/ftj-01234567/recops.json")["Body"].read()
    assert ModelManifest.model_validate_json(body).task == "click-through"
    assert run.termination is not None and run.termination["modelUri"] == f"s3://{BUCKET}/recops/shop/ftj-01234567"

    # Again: the model there is complete, so nothing is touched.
    before = {k: client(s3_env).head_object(Bucket=BUCKET, Key=k)["ETag"] for k in model_keys}
    again = run_train(config, tmp_path / "again-log", env=env)
    assert again.returncode != 0 and "already holds a complete model" in again.last_error_line
    assert {k: client(s3_env).head_object(Bucket=BUCKET, Key=k)["ETag"] for k in model_keys} == before
    assert os.path.exists(tmp_path / "again-log")
