"""Fixtures shared by the workload tests: the inputs of `recops train` (a tiny base model and a
small synthetic shop, made once a session) and an S3-compatible store (a moto server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import tiny_base_model
from tests.support.s3 import running_moto


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT encoder dir (tests/support/models.py), usable as baseModel.uri."""
    return tiny_base_model(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def shop_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~1,200 impressions over 40 queries: enough for every split to hold positives."""
    from recops.shop.synth import generate_shop, write_shop

    root = tmp_path_factory.mktemp("shop")
    shop = generate_shop(users=40, products=90, sessions=120, queries=30, seed=7)
    write_shop(shop, str(root), "jsonl")
    return root / "events.jsonl"


@pytest.fixture
def s3_store() -> Iterator[dict[str, str]]:
    """A moto server (tests/support/s3.py); yields the AWS_* environment that points a process at it."""
    with running_moto() as endpoint:
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1"}
