"""The MonitorPolicy controller on the real control plane, with a real Prometheus and real
`recops serve` processes.

The servers run as pods on the local process node (each on its own 127.0.0.x address, with
the serving identity in its environment, as the RecModelDeployment builders will set it) and
Prometheus finds them through the process node's file_sd file, by their prometheus.io/*
annotations. No RecModelDeployment controller exists yet, so the test plays its part: it
creates the RecModelDeployment and, as the admin, sets `status.stable` to the model the pods
serve. The traffic driver (`recops.shop.traffic`) sends shoppers of the synthetic shop;
with the preference shift on, the click-through rate falls. The FineTuneJob a breach creates
runs on a kwok node, whose test hook hands it a termination message.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recops.api import contracts
from recops.shop.traffic import ShopWorld, TrafficStats, drive
from tests.support.cluster import ON_PROCESS_NODE, Cluster, wait_for_status, wait_until
from tests.support.models import tiny_served_model
from tests.support.operator import RunningOperator, running_operator
from tests.support.prometheus import PrometheusServer, TokenProxy, running_prometheus, token_proxy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

MODEL_VERSION = "ranker-v1-0a1b2c3d"
FEEDBACK_KEY = secrets.token_urlsafe(24)
PROMETHEUS_TOKEN = secrets.token_urlsafe(24)


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_served_model(tmp_path_factory.mktemp("model") / MODEL_VERSION, "click-through", version=MODEL_VERSION)


@pytest.fixture(scope="module")
def world() -> ShopWorld:
    return ShopWorld.generate(seed=0)


@pytest.fixture(scope="module")
def prometheus_proxy(prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenProxy]:
    """The module's Prometheus behind a proxy that demands a bearer token (as kube-rbac-proxy or a
    managed Prometheus's frontend would): every evaluation of this module authenticates for real."""
    with token_proxy(prometheus.url, [PROMETHEUS_TOKEN]) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def operator_options(prometheus_proxy: TokenProxy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The module's operator (tests/cluster/conftest.py) asks this Prometheus, with the token from a file
    (what a mounted Secret key or projected ServiceAccount token is)."""
    token_file = tmp_path_factory.mktemp("prometheus-token") / "token"
    token_file.write_text(PROMETHEUS_TOKEN)
    return {"extra_args": ["--prometheus-url", prometheus_proxy.url,
                           "--prometheus-bearer-token-file", str(token_file)]}


# --- helpers ------------------------------------------------------------------------------
def serve_pod(name: str, namespace: str, deployment: str, model: Path, event_log: Path) -> dict[str, Any]:
    env = {
        contracts.ENV_NAMESPACE: namespace, contracts.ENV_DEPLOYMENT: deployment, contracts.ENV_TRACK: "stable",
        contracts.ENV_MODEL_VERSION: MODEL_VERSION, contracts.ENV_POD_NAME: name,
        contracts.ENV_FEEDBACK_KEY: FEEDBACK_KEY, contracts.ENV_PSEUDONYM_SALT: "salt",
        "RECOPS_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": deployment},
                     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                                     "prometheus.io/path": "/metrics"}},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{
                "name": "server", "image": "recops-server:test",
                "command": [sys.executable, "-m", "recops", "serve", "--model", str(model), "--port", "8080",
                            "--track", "stable", "--event-log", str(event_log)],
                "env": [{"name": k, "value": v} for k, v in env.items()],
            }],
            **ON_PROCESS_NODE,
        },
    }


def start_server(cluster: Cluster, namespace: str, deployment: str, model: Path, event_log: Path) -> str:
    """A ready `recops serve` pod on the process node; returns its base URL."""
    name = f"{deployment}-stable-0"
    cluster.apply(serve_pod(name, namespace, deployment, model, event_log), namespace)
    pod = cluster.wait_pod_phase(namespace, name, {"Running"}, timeout=90)
    url = f"http://{pod.status.pod_ip}:8080"

    def ready() -> bool:
        try:
            return bool(urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2).status == 200)
        except OSError:
            return False

    wait_until(ready, 180, f"recops serve in pod {name} ready")
    return url


def wait_scraped(prometheus: PrometheusServer, namespace: str, deployment: str) -> None:
    """Until Prometheus holds the server's counters (at 0): increase() counts only what comes after
    the first sample, so traffic sent before the first scrape would be invisible."""
    query = f'recops_impressions_total{{recops_namespace="{namespace}",recops_deployment="{deployment}"}}'
    wait_until(lambda: prometheus.query(query), 60, f"{query} scraped")


def scrape_state(prometheus: PrometheusServer, namespace: str) -> str:
    """What Prometheus has of a namespace's servers, for failure messages."""
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/targets", timeout=5) as response:
        targets = [(t["scrapeUrl"], t["health"], t.get("lastError"), t["labels"].get("namespace"))
                   for t in json.load(response)["data"]["activeTargets"]]
    series = prometheus.query(f'recops_impressions_total{{recops_namespace="{namespace}"}}')
    return f"targets: {targets}\nimpressions series: {series}"


def rmd(name: str, event_log: Path, rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"lineage": name}, "replicas": 1, "serving": {"eventLog": {"uri": str(event_log)}}}
    if rollout is not None:
        spec["rollout"] = rollout
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": name},
            "spec": spec}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_stable(cluster: Cluster, namespace: str, name: str, model: Path, completed_at: str | None = None) -> None:
    """What the RecModelDeployment controller will do once it exists: record the stable model."""
    stable = {"modelUri": str(model), "modelVersion": MODEL_VERSION, "revision": 1,
              "completedAt": completed_at or now_rfc3339()}
    cluster.kubectl("patch", "recmodeldeployment", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"phase": "Serving", "stable": stable}}))


def policy(name: str, target: str, rules: list[dict[str, Any]], *, retrain: dict[str, Any] | None = None,
           **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"targetRef": {"name": target}, "interval": "2s", "baselineWindow": "20s", "rules": rules}
    if retrain is not None:
        body["retrain"] = retrain
    body.update(spec)
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "MonitorPolicy", "metadata": {"name": name}, "spec": body}


def retrain_section(**overrides: Any) -> dict[str, Any]:
    message = {"schemaVersion": 1, "modelUri": "/models/retrained", "modelVersion": "retrained",
               "metrics": {"auc": 0.8}, "baseline": {}, "currentModel": None, "gatePassed": True, "error": None}
    section = {
        "template": {
            "labels": {"team": "search"},
            "spec": {
                "task": "click-through", "output": {"uri": "/models"}, "backoffLimit": 0,
                "podTemplate": {"annotations": {contracts.TEST_TERMINATION_MESSAGE_ANNOTATION: json.dumps(message)}},
            },
        },
        "dataWindow": "6h", "cooldown": "1h", "maxPerDay": 3, "historyLimit": 5,
    }
    section.update(overrides)
    return section


def get(cluster: Cluster, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return get(cluster, "monitorpolicy", namespace, name).get("status") or {}


def wait_status(cluster: Cluster, namespace: str, name: str, predicate: Any, timeout: float, what: str,
                extra: Any = None) -> dict[str, Any]:
    """The policy's status once `predicate(status)` holds; on timeout, fail showing the last status."""
    return wait_for_status(lambda: status_of(cluster, namespace, name), predicate, timeout, what, details=extra)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def rule_of(status: dict[str, Any], rule: str) -> dict[str, Any]:
    return next((r for r in status.get("rules") or [] if r["name"] == rule), {})


def finetunejobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return json.loads(cluster.kubectl("get", "finetunejobs", "-n", namespace, "-o", "json").stdout)["items"]


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name and e["involvedObject"]["kind"] == "MonitorPolicy"]


class Traffic:
    """The traffic driver in a background thread; `shifted` switches the shoppers' tastes live."""

    def __init__(self, url: str, world: ShopWorld, rate: float) -> None:
        self.url, self.world, self.rate = url, world, rate
        self.shifted = False
        self.stop = threading.Event()
        self.stats = {False: TrafficStats(), True: TrafficStats()}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seed = 10
        while not self.stop.is_set():
            shifted = self.shifted
            drive(self.url, self.world, requests=max(int(self.rate), 1), rate=self.rate, shifted=shifted, seed=seed,
                  stats=self.stats[shifted])
            seed += 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


# --- tests --------------------------------------------------------------------------------
def test_ctr_falls_breach_after_for_one_retrain_then_cooldown(
    cluster: Cluster, namespace: str, operator: RunningOperator, prometheus: PrometheusServer, model: Path,
    world: ShopWorld, tmp_path: Path,
) -> None:
    event_log = tmp_path / "events"
    url = start_server(cluster, namespace, "ranker", model, event_log)
    wait_scraped(prometheus, namespace, "ranker")
    cluster.apply(rmd("ranker", event_log), namespace)
    rule = {"name": "ctr", "metric": "ctr", "window": "20s", "threshold": {"relativeDecrease": 0.25},
            "for": "6s", "minSamples": 150}
    with Traffic(url, world, rate=12) as traffic:
        set_stable(cluster, namespace, "ranker", model)  # the model was promoted just now
        # The scores' shape does not change with the shoppers' tastes: the drift rule stays Ok.
        drift = {"name": "drift", "metric": "scoreDrift", "window": "20s", "threshold": {"above": 0.5},
                 "minSamples": 100}
        cluster.apply(policy("ranker-watch", "ranker", [rule, drift], retrain=retrain_section()), namespace)

        # Baseline: 20s of the stable model's traffic before the shift.
        status = wait_status(cluster, namespace, "ranker-watch", lambda s: s.get("baseline", {}).get("capturedAt"),
                             90, "the baseline captured",
                             lambda: f"{traffic.stats[False].to_dict()}\n{scrape_state(prometheus, namespace)}")
        baseline = status["baseline"]
        assert baseline["modelVersion"] == MODEL_VERSION
        assert 0.05 < baseline["values"]["ctr"] < 0.4, baseline
        histogram = baseline["scoreHistogram"]
        assert len(histogram["upperBounds"]) == 20 and len(histogram["counts"]) == 21  # +Inf implied
        assert histogram["counts"][-1] >= 100 and baseline["values"]["drift"] == 0.0
        assert not finetunejobs(cluster, namespace)

        # The preference shift: CTR falls, the rule goes Pending, then Breached after `for`.
        traffic.shifted = True
        seen: set[str] = set()

        def breached(s: dict[str, Any]) -> bool:
            seen.add(rule_of(s, "ctr").get("state", ""))
            return rule_of(s, "ctr").get("state") == "Breached"

        status = wait_status(cluster, namespace, "ranker-watch", breached, 120, "the ctr rule breached",
                             lambda: f"{traffic.stats[True].to_dict()}\n{scrape_state(prometheus, namespace)}")
        assert "Pending" in seen, seen
        entry = rule_of(status, "ctr")
        assert entry["value"] < 0.75 * baseline["values"]["ctr"] and entry["baseline"] == baseline["values"]["ctr"]
        assert entry["samples"] >= 150
        print(f"baseline: {baseline['values']}; rules at the breach: {status['rules']}")
        drift_entry = rule_of(status, "drift")
        assert drift_entry["state"] == "Ok" and 0.0 <= drift_entry["value"] < 0.5 and drift_entry["samples"] >= 100
        assert conditions(status)["Healthy"]["status"] == "False"
        assert conditions(status)["Healthy"]["reason"] == "RuleBreached"

        # Exactly one FineTuneJob, owned, labelled with the lineage, on the event log's window.
        jobs = wait_until(lambda: finetunejobs(cluster, namespace), 30, "the retrain FineTuneJob")
        policy_obj = get(cluster, "monitorpolicy", namespace, "ranker-watch")
        assert len(jobs) == 1
        job = jobs[0]
        meta = job["metadata"]
        assert meta["name"].startswith("ranker-watch-")
        assert meta["ownerReferences"][0]["uid"] == policy_obj["metadata"]["uid"]
        assert meta["labels"][contracts.LINEAGE_LABEL] == "ranker"
        assert meta["labels"]["recops.dev/monitorpolicy"] == "ranker-watch" and meta["labels"]["team"] == "search"
        assert job["spec"]["dataset"]["uri"] == str(event_log)
        since = datetime.fromisoformat(job["spec"]["dataset"]["since"].replace("Z", "+00:00"))
        created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
        assert abs((created - since).total_seconds() - 6 * 3600) < 30
        status = wait_status(cluster, namespace, "ranker-watch", lambda s: s.get("lastRetrain"), 30,
                             "lastRetrain recorded")
        assert status["lastRetrain"]["fineTuneJob"] == meta["name"]
        assert "ctr breached" in status["lastRetrain"]["reason"]

        # The job finishes (kwok); the target follows its lineage and rolls the retrained model out
        # (RollingUpdate), so the policy judges the new model from a fresh baseline, and the
        # cooldown allows no second retrain.
        cluster.kubectl("wait", "--for=condition=Complete", "--timeout=90s", f"finetunejob/{meta['name']}",
                        "-n", namespace)
        status = wait_status(cluster, namespace, "ranker-watch",
                             lambda s: conditions(s).get("Retraining", {}).get("status") == "False", 30,
                             "Retraining=False")
        assert conditions(status)["Retraining"]["reason"] == "RetrainFinished"
        wait_until(lambda: (get(cluster, "recmodeldeployment", namespace, "ranker").get("status") or {})
                   .get("stable", {}).get("modelVersion") == "retrained", 60, "the retrained model rolled out")
        time.sleep(8)  # four more evaluations
        status = status_of(cluster, namespace, "ranker-watch")
        assert rule_of(status, "ctr")["state"] != "Breached"  # the new model has no data yet
        assert len(finetunejobs(cluster, namespace)) == 1
    print(f"traffic before the shift: {traffic.stats[False].to_dict()}")
    print(f"traffic after the shift:  {traffic.stats[True].to_dict()}")
    assert traffic.stats[True].ctr < traffic.stats[False].ctr

    reasons = [e["reason"] for e in events(cluster, namespace, "ranker-watch")]
    for reason in ("BaselineStarted", "BaselineCaptured", "RulePending", "RuleBreached", "RetrainStarted"):
        assert reason in reasons, reasons
    metrics = operator.metrics()
    key = f'recops_operator_monitor_retrains_total{{namespace="{namespace}",policy="ranker-watch"}}'
    assert metrics[key] == 1.0
    breaches = f'recops_operator_monitor_breaches_total{{namespace="{namespace}",policy="ranker-watch",rule="ctr"}}'
    assert metrics[breaches] >= 1.0
    # The event log the FineTuneJob trains on exists, with impressions of the stable model.
    logged = [json.loads(line) for path in event_log.rglob("*.jsonl") for line in path.read_text().splitlines()]
    assert any(r["event"] == "impression" and r["model_version"] == MODEL_VERSION for r in logged)
    assert any(r["event"] == "click" for r in logged)


def test_too_little_traffic_is_insufficient_data_and_never_retrains(
    cluster: Cluster, namespace: str, operator: RunningOperator, prometheus: PrometheusServer, model: Path,
    world: ShopWorld, tmp_path: Path,
) -> None:
    event_log = tmp_path / "events"
    url = start_server(cluster, namespace, "quiet", model, event_log)
    wait_scraped(prometheus, namespace, "quiet")
    cluster.apply(rmd("quiet", event_log), namespace)
    set_stable(cluster, namespace, "quiet", model, completed_at="2026-01-01T00:00:00Z")
    sent = drive(url, world, requests=6, rate=20, top_k=5)  # 30 impressions
    assert sent.impressions == 30
    # ctr below 0.99 would breach on any real data: only minSamples holds it back.
    rule = {"name": "ctr", "metric": "ctr", "window": "5m", "threshold": {"below": 0.99}, "minSamples": 100}
    cluster.apply(policy("quiet-watch", "quiet", [rule], retrain=retrain_section()), namespace)

    def judged(s: dict[str, Any]) -> bool:
        entry = rule_of(s, "ctr")
        return entry.get("state") == "InsufficientData" and (entry.get("samples") or 0) > 0

    status = wait_status(cluster, namespace, "quiet-watch", judged, 60, "InsufficientData with the samples counted",
                         lambda: scrape_state(prometheus, namespace))
    entry = rule_of(status, "ctr")
    assert 0 < entry["samples"] < 100 and "fewer than minSamples 100" in entry["message"]
    assert conditions(status)["Healthy"]["status"] == "True"
    time.sleep(6)
    assert rule_of(status_of(cluster, namespace, "quiet-watch"), "ctr")["state"] == "InsufficientData"
    assert finetunejobs(cluster, namespace) == []


def test_prometheus_stopped_is_metrics_unavailable_and_never_retrains(
    cluster: Cluster, namespace: str, operator: RunningOperator, model: Path, tmp_path: Path,
) -> None:
    event_log = tmp_path / "events"
    cluster.apply(rmd("ranker", event_log), namespace)
    set_stable(cluster, namespace, "ranker", model)
    # Its own Prometheus (scraping nothing of this target), named in the spec, stopped mid-test.
    with running_prometheus(tmp_path / "prom") as own:
        rule = {"name": "ctr", "metric": "ctr", "window": "1m", "threshold": {"below": 0.5}, "minSamples": 0}
        cluster.apply(policy("down-watch", "ranker", [rule], retrain=retrain_section(),
                             prometheus={"url": own.url}), namespace)
        status = wait_status(cluster, namespace, "down-watch",
                             lambda s: conditions(s).get("MetricsUnavailable", {}).get("status") == "False",
                             60, "MetricsUnavailable=False while Prometheus answers")
        assert rule_of(status, "ctr")["state"] == "InsufficientData"  # no traffic: no data, not a breach
    # Prometheus is gone now.
    status = wait_status(cluster, namespace, "down-watch",
                         lambda s: conditions(s).get("MetricsUnavailable", {}).get("status") == "True",
                         60, "MetricsUnavailable=True")
    unavailable = conditions(status)["MetricsUnavailable"]
    assert unavailable["reason"] == "QueryFailed" and "cannot query Prometheus" in unavailable["message"]
    assert conditions(status)["Ready"]["status"] == "False"
    assert rule_of(status, "ctr")["state"] == "Error"
    assert conditions(status)["Healthy"]["status"] != "False"
    time.sleep(5)
    assert finetunejobs(cluster, namespace) == []
    assert "QueryFailed" in [e["reason"] for e in events(cluster, namespace, "down-watch")]


def test_prometheus_refusing_the_query_is_a_clear_condition_and_the_token_stays_with_the_operators_prometheus(
    cluster: Cluster, namespace: str, operator: RunningOperator, prometheus_proxy: TokenProxy, model: Path,
    tmp_path: Path,
) -> None:
    event_log = tmp_path / "events"
    cluster.apply(rmd("guarded", event_log), namespace)
    set_stable(cluster, namespace, "guarded", model)
    rule = {"name": "ctr", "metric": "ctr", "window": "1m", "threshold": {"below": 0.5}, "minSamples": 0}
    # The operator's Prometheus (no URL in the spec): the token goes with each query and it answers.
    cluster.apply(policy("guarded-watch", "guarded", [rule]), namespace)
    status = wait_status(cluster, namespace, "guarded-watch",
                         lambda s: conditions(s).get("MetricsUnavailable", {}).get("status") == "False",
                         60, "MetricsUnavailable=False through the authenticating proxy")
    assert rule_of(status, "ctr")["state"] == "InsufficientData"
    assert any(h.get("Authorization") == f"Bearer {PROMETHEUS_TOKEN}" for h in prometheus_proxy.seen)
    # The same proxy under another origin, named in the spec: the operator's token is not sent there,
    # so the proxy refuses, and the status says why.
    other_origin = prometheus_proxy.url.replace("127.0.0.1", "localhost")
    seen_before = len(prometheus_proxy.seen)
    cluster.apply(policy("elsewhere-watch", "guarded", [rule], prometheus={"url": other_origin}), namespace)
    status = wait_status(cluster, namespace, "elsewhere-watch",
                         lambda s: conditions(s).get("MetricsUnavailable", {}).get("status") == "True",
                         60, "MetricsUnavailable=True: Prometheus refused")
    unavailable = conditions(status)["MetricsUnavailable"]
    assert unavailable["reason"] == "QueryFailed", unavailable
    assert "refused the query: HTTP 401 Unauthorized" in unavailable["message"], unavailable
    assert "--prometheus-bearer-token-file" in unavailable["message"]
    assert rule_of(status, "ctr")["state"] == "Error"
    assert "QueryFailed" in [e["reason"] for e in events(cluster, namespace, "elsewhere-watch")]
    refused = [h for h in prometheus_proxy.seen[seen_before:] if h.get("Host", "").startswith("localhost")]
    assert refused and all("Authorization" not in h for h in refused)


def test_missing_target_is_a_clear_condition_and_the_policy_waits(
    cluster: Cluster, namespace: str, operator: RunningOperator, model: Path, tmp_path: Path,
) -> None:
    rule = {"name": "ctr", "metric": "ctr", "threshold": {"below": 0.1}}
    cluster.apply(policy("lost-watch", "not-there", [rule]), namespace)
    status = wait_status(cluster, namespace, "lost-watch",
                         lambda s: conditions(s).get("Ready", {}).get("reason") == "TargetNotFound",
                         30, "Ready=False TargetNotFound")
    ready = conditions(status)["Ready"]
    assert ready["status"] == "False" and "not-there does not exist" in ready["message"]
    assert "TargetNotFound" in [e["reason"] for e in events(cluster, namespace, "lost-watch")]
    # The target appears: the policy picks it up on its next evaluation.
    cluster.apply(rmd("not-there", tmp_path / "events"), namespace)
    set_stable(cluster, namespace, "not-there", model)
    status = wait_status(cluster, namespace, "lost-watch",
                         lambda s: conditions(s).get("Ready", {}).get("reason") not in (None, "TargetNotFound"),
                         30, "the target found")
    assert status["baseline"]["modelVersion"] == MODEL_VERSION
    assert rule_of(status, "ctr")["state"] == "InsufficientData"


def test_mid_canary_max_per_day_and_history_limit(
    cluster: Cluster, namespace: str, operator: RunningOperator, model: Path, tmp_path: Path,
) -> None:
    """A `query` rule that always breaches: the policy retrains as often as its limits allow."""
    # A real canary: a candidate of the lineage, judged on traffic it never gets (inconclusive).
    canary_rollout = {"strategy": "Canary", "canary": {"steps": [{"weight": 50, "pause": "1h"}],
                                                        "analysis": {"minImpressions": 1000000}}}
    cluster.apply(rmd("ranker", tmp_path / "events", canary_rollout), namespace)
    set_stable(cluster, namespace, "ranker", model)
    candidate = retrain_section()["template"]["spec"] | {"dataset": {"uri": "/data"}}
    message = json.loads(candidate["podTemplate"]["annotations"][contracts.TEST_TERMINATION_MESSAGE_ANNOTATION])
    candidate["podTemplate"] = {"annotations": {contracts.TEST_TERMINATION_MESSAGE_ANNOTATION: json.dumps(
        message | {"modelUri": "/models/candidate", "modelVersion": "candidate-1"})}}
    cluster.apply({"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
                   "metadata": {"name": "candidate", "labels": {contracts.LINEAGE_LABEL: "ranker"}},
                   "spec": candidate}, namespace)
    wait_until(lambda: (get(cluster, "recmodeldeployment", namespace, "ranker").get("status") or {}).get("canary"),
               90, "the canary started")

    def retrains() -> list[dict[str, Any]]:
        return [j for j in finetunejobs(cluster, namespace)
                if j["metadata"].get("labels", {}).get("recops.dev/monitorpolicy") == "busy-watch"]

    rule = {"name": "always", "metric": "query", "query": "vector(1)", "threshold": {"above": 0.5}}
    # deploy: false, so that the retrains themselves start no canary.
    cluster.apply(policy("busy-watch", "ranker", [rule], interval="1s",
                         retrain=retrain_section(cooldown="1s", maxPerDay=2, historyLimit=1, deploy=False)),
                  namespace)

    # Mid-canary: breached, but no retrain until the rollout ends.
    status = wait_status(cluster, namespace, "busy-watch", lambda s: rule_of(s, "always").get("state") == "Breached",
                         30, "the query rule breached")
    time.sleep(4)
    assert retrains() == []
    status = status_of(cluster, namespace, "busy-watch")
    assert "mid-canary" in conditions(status)["Retraining"]["message"]

    # The canary ends (aborted by a person): retrain, and again after the 1s cooldown, then maxPerDay holds.
    cluster.kubectl("annotate", "recmodeldeployment", "ranker", "-n", namespace, f"{contracts.ABORT_ANNOTATION}=1")
    wait_until(lambda: not (get(cluster, "recmodeldeployment", namespace, "ranker").get("status") or {}).get("canary"),
               60, "the canary aborted")
    status = wait_status(cluster, namespace, "busy-watch", lambda s: len(s.get("retrains") or []) == 2, 120,
                         "two retrains")
    first, second = (r["fineTuneJob"] for r in status["retrains"])
    assert first != second
    cluster.kubectl("wait", "--for=condition=Complete", "--timeout=90s", f"finetunejob/{second}", "-n", namespace)
    # historyLimit 1: the older finished job is deleted; the newer one stays.
    wait_until(lambda: [j["metadata"]["name"] for j in retrains()] == [second], 30,
               "the older retrain pruned")
    time.sleep(4)
    status = status_of(cluster, namespace, "busy-watch")
    assert len(status["retrains"]) == 2 and status["lastRetrain"]["fineTuneJob"] == second
    assert "maxPerDay 2" in conditions(status)["Retraining"]["message"]
    assert [j["metadata"]["name"] for j in retrains()] == [second]
    reasons = [e["reason"] for e in events(cluster, namespace, "busy-watch")]
    assert "RetrainPruned" in reasons and reasons.count("RetrainStarted") == 2


def test_two_operators_at_once_create_one_retrain(
    cluster: Cluster, namespace: str, operator: RunningOperator, prometheus: PrometheusServer, model: Path,
    tmp_path: Path,
) -> None:
    """An operator restart overlaps old and new process (or a crash leaves the status behind):
    both compute the same name for the same retrain, so only one FineTuneJob exists."""
    cluster.apply(rmd("ranker", tmp_path / "events"), namespace)
    set_stable(cluster, namespace, "ranker", model)
    with running_operator(cluster, tmp_path / "second", extra_args=["--prometheus-url", prometheus.url]) as second:
        rule = {"name": "always", "metric": "query", "query": "vector(1)", "threshold": {"above": 0.5}}
        cluster.apply(policy("twice-watch", "ranker", [rule], interval="1s", retrain=retrain_section()), namespace)
        wait_status(cluster, namespace, "twice-watch", lambda s: s.get("lastRetrain"), 30, "a retrain")
        time.sleep(5)
        jobs = finetunejobs(cluster, namespace)
        assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
        key = f'recops_operator_monitor_retrains_total{{namespace="{namespace}",policy="twice-watch"}}'
        created = operator.metrics().get(key, 0.0) + second.metrics().get(key, 0.0)
        assert created == 1.0
    assert status_of(cluster, namespace, "twice-watch")["lastRetrain"]["fineTuneJob"] == jobs[0]["metadata"]["name"]
