"""Event-log records and files: the Contracts' fields and layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recops.api.contracts import EVENT_LOG_FIELDS, pseudonymise
from recops.serve.eventlog import EventLog, feedback_record, impression_records, pseudonymous_user

TS = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def test_records_have_exactly_the_contract_fields() -> None:
    impressions = impression_records(ts=TS, request_id="r", query="q", user_id="u_x", user_context=None,
                                     items=[("a", "A", 0.9, 0.9), ("b", "B", 0.1, 0.05)], explored=False,
                                     track="stable", model_version="m",
                                     deployment="d", namespace="n")
    click = feedback_record(ts=TS, event="click", request_id="r", product_id="a", track="canary", model_version="m2",
                            deployment="d", namespace="n")
    for record in [*impressions, click]:
        assert list(record) == list(EVENT_LOG_FIELDS)
    assert [r["position"] for r in impressions] == [0, 1] and impressions[0]["ts"] == "2026-05-28T20:26:40.000000Z"
    assert click["title"] is None and click["track"] == "canary"


def test_user_ids_are_pseudonymised_or_left_out() -> None:
    assert pseudonymous_user("alice", "salt") == pseudonymise("alice", "salt") != "alice"
    assert pseudonymous_user("alice", None) is None
    assert pseudonymous_user(None, "salt") is None


def test_local_files_are_partitioned_by_day_and_hour(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path), pod="pod-1")
    log.append(impression_records(ts=TS, request_id="r", query=None, user_id=None, user_context=None,
                                  items=[("a", "A", 0.5, 1.0)], explored=False, track="stable", model_version="m", deployment="d",
                                  namespace="n"))
    log.append([feedback_record(ts=TS + 3600, event="purchase", request_id="r", product_id="a", track="stable",
                                model_version="m", deployment="d", namespace="n")])
    log.close()
    first = tmp_path / "dt=2026-05-28" / "hour=20" / "pod-1.jsonl"
    second = tmp_path / "dt=2026-05-28" / "hour=21" / "pod-1.jsonl"
    assert [json.loads(line)["event"] for line in first.read_text().splitlines()] == ["impression"]
    assert [json.loads(line)["event"] for line in second.read_text().splitlines()] == ["purchase"]
    assert log.written == 2 and log.errors == 0


def test_s3_hour_files_are_uploaded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.support.local_servers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        s3.create_bucket(Bucket="events")
        log = EventLog("s3://events/shop/ranker", pod="pod-2", upload_interval_s=0.0)
        for position in range(3):  # three appends; each upload replaces the object with the whole file
            log.append([feedback_record(ts=TS, event="click", request_id=f"r{position}", product_id="a",
                                        track="stable", model_version="m", deployment="d", namespace="n")])
        log.close()
        body = s3.get_object(Bucket="events", Key="shop/ranker/dt=2026-05-28/hour=20/pod-2.jsonl")["Body"].read()
        assert [json.loads(line)["request_id"] for line in body.decode().splitlines()] == ["r0", "r1", "r2"]
        assert log.errors == 0
    finally:
        server.stop()
