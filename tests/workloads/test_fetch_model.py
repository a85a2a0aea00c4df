"""`recops fetch-model`, the init container of serving pods whose model is on s3://: a real
process against moto as the S3-compatible store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recops.api.contracts import MODEL_MANIFEST
from tests.support.models import tiny_served_model

pytestmark = [pytest.mark.workload, pytest.mark.timeout(300)]


def fetch_model(uri: str, dest: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOPS_", "AWS_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "recops", "fetch-model", "--model", uri, "--dest", str(dest)],
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_fetches_a_complete_model_and_refuses_an_incomplete_one(tmp_path: Path, s3_store: dict[str, str]) -> None:
    import boto3

    model = tiny_served_model(tmp_path / "model", "click-through", version="v7")
    s3 = boto3.client("s3", endpoint_url=s3_store["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="models")
    for path in model.rglob("*"):
        if path.is_file():
            key = path.relative_to(model).as_posix()
            s3.upload_file(str(path), "models", f"shop/v7/{key}")
            if path.name != MODEL_MANIFEST:
                s3.upload_file(str(path), "models", f"shop/half/{key}")

    done = fetch_model("s3://models/shop/v7", tmp_path / "dest", s3_store)
    assert done.returncode == 0, done.stderr
    copied = sorted(p.relative_to(tmp_path / "dest").as_posix() for p in (tmp_path / "dest").rglob("*") if p.is_file())
    original = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    assert copied == original
    assert (tmp_path / "dest" / MODEL_MANIFEST).read_bytes() == (model / MODEL_MANIFEST).read_bytes()

    refused = fetch_model("s3://models/shop/half", tmp_path / "half", s3_store)
    assert refused.returncode == 1
    assert "incomplete" in refused.stderr and MODEL_MANIFEST in refused.stderr
    assert not (tmp_path / "half" / MODEL_MANIFEST).exists()
