"""Fixtures shared by the workload tests: the inputs of `recops train` (a tiny base model and a
small synthetic shop, made once a session) and an S3-compatible store (moto, in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_servers import free_port
from tests.support.models import tiny_base_model


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT encoder dir (tests/support/models.py), usable as baseModel.uri."""
    return tiny_base_model(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def shop_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~1,200 impressions over 40 queries: enough for every split to hold positives."""
    from recops.train.synth import generate_shop, write_shop

    root = tmp_path_factory.mktemp("shop")
    shop = generate_shop(users=40, products=90, sessions=120, queries=30, seed=7)
    write_shop(shop, str(root), "jsonl")
    return root / "events.jsonl"


@pytest.fixture
def s3_store() -> Iterator[dict[str, str]]:
    """A moto server on a free port; yields the AWS_* environment that points a process at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
    finally:
        server.stop()
