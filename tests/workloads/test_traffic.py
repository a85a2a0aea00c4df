"""`recops data traffic` against a real `recops serve`: what the driver counts is what the
server counted, and the event log holds the sessions for retraining."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.models import tiny_served_model
from tests.support.serving import ServeProcess


def test_traffic_command_sends_sessions_and_feedback_the_server_counts(tmp_path: Path) -> None:
    model = tiny_served_model(tmp_path / "model", "click-through", version="ranker-v1-00000000")
    events = tmp_path / "events"
    server = ServeProcess(model, "--event-log", str(events),
                          env={"RECOPS_NAMESPACE": "shop", "RECOPS_DEPLOYMENT": "ranker"}).wait_ready()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "recops", "data", "traffic", "--endpoint", server.base, "--requests", "40",
             "--rate", "50", "--shift", "--top-k", "4"],
            capture_output=True, text=True, timeout=180,
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["requests"] == 40 and summary["failedRequests"] == 0 and summary["rejectedFeedback"] == 0
        assert summary["impressions"] == 160
        assert server.metric("recops_impressions_total") == 160
        assert server.metric("recops_clicks_total") == summary["clicks"]
        assert server.metric("recops_purchases_total") == summary["purchases"]
        assert summary["clicks"] > 0  # 160 shown items of the shop: some are clicked
    finally:
        server.stop()
    records = [json.loads(line) for path in events.rglob("*.jsonl") for line in path.read_text().splitlines()]
    assert sum(r["event"] == "impression" for r in records) == 160
    assert sum(r["event"] == "click" for r in records) == summary["clicks"]
    assert all(r["model_version"] == "ranker-v1-00000000" for r in records)

    refused = subprocess.run([sys.executable, "-m", "recops", "data", "traffic", "--endpoint", server.base],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "give --requests or --duration" in refused.stderr
