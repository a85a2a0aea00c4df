"""The RecModelDeployment controller on the real control plane.

`recops operator` runs as a subprocess under the ServiceAccount RBAC of config/rbac. The
Deployments it builds are scheduled on the local process node (`spec.resources.nodeSelector`
and `tolerations`), whose pods run real `recops serve` processes on tiny models, each on its
own 127.0.x.y address; a real Prometheus (Debian's package) finds them through the process
node's file_sd file. The test plays the shoppers: it ranks on the pods' IPs and sends
feedback, so the click-through rate of each track is what the test makes it. FineTuneJobs of
a lineage run on a kwok node, whose test hook hands them their termination message (the
model URI of a tiny model made here).
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recops.api import contracts
from recops.controllers.rollout import parse_time
from tests.support.cluster import ON_PROCESS_NODE, Cluster, wait_for_status, wait_until
from tests.support.models import tiny_served_model
from tests.support.operator import RunningOperator, settle
from tests.support.prometheus import PrometheusServer, TokenProxy, token_proxy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

SERVER_ENV = [{"name": "RECOPS_TORCH_THREADS", "value": "1"}, {"name": "TOKENIZERS_PARALLELISM", "value": "false"}]
PROMETHEUS_TOKEN = secrets.token_urlsafe(24)
SERVE_TIMEOUT = 240  # a `recops serve` process imports torch and loads a model on a busy 2-core machine


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, Path]]:
    """Tiny complete models, outside /tmp (the pods mount an emptyDir over /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="recops-rmd-models-", dir="/var/tmp"))
    root.chmod(0o755)
    made = {v: tiny_served_model(root / v, "click-through", version=v, seed=i)
            for i, v in enumerate(("ranker-a", "ranker-b", "ranker-c"))}
    yield made
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus_proxy(prometheus: PrometheusServer) -> Iterator[TokenProxy]:
    """The module's Prometheus behind a proxy that demands a bearer token: canary analysis authenticates."""
    with token_proxy(prometheus.url, [PROMETHEUS_TOKEN]) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def operator_options(prometheus_proxy: TokenProxy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The module's operator (tests/cluster/conftest.py) asks this Prometheus, with a token from a file."""
    token_file = tmp_path_factory.mktemp("prometheus-token") / "token"
    token_file.write_text(PROMETHEUS_TOKEN)
    return {"resync_seconds": 2.0, "extra_args": ["--prometheus-url", prometheus_proxy.url,
                                                  "--prometheus-bearer-token-file", str(token_file)]}


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    # The server pods meet the restricted Pod Security Standard (else the Deployments could create no pod).
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace


# --- helpers ------------------------------------------------------------------------------
def rmd(name: str, model: dict[str, Any], *, process_node: bool = True, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "podTemplate": {"env": SERVER_ENV}}
    if process_node:
        body["resources"] = dict(ON_PROCESS_NODE)
    body.update(spec)
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": name},
            "spec": body}


def canary_rollout(**analysis: Any) -> dict[str, Any]:
    return {"strategy": "Canary", "canary": {
        "steps": [{"weight": 50, "pause": "4s"}],
        "analysis": {"interval": "2s", "window": "2m", "minImpressions": 30,
                     "rules": [{"metric": "ctr", "threshold": {"relativeDecrease": 0.3}},
                               {"metric": "errorRate", "threshold": {"above": 0.5}}], **analysis},
        "failureLimit": 2,
    }}


def finetunejob(name: str, lineage: str, model: Path, **report: Any) -> dict[str, Any]:
    message = {"schemaVersion": 1, "modelUri": str(model), "modelVersion": model.name, "metrics": {"auc": 0.8},
               "baseline": {}, "currentModel": None, "gatePassed": None, "error": None, **report}
    spec: dict[str, Any] = {
        "task": "click-through", "dataset": {"uri": "/data/events.jsonl"}, "output": {"uri": "/models"},
        "backoffLimit": 0, "podTemplate": {"annotations": {contracts.TEST_TERMINATION_MESSAGE_ANNOTATION: json.dumps(message)}}}
    if report.get("gatePassed") is not None:
        spec["evaluation"] = {"gate": {"metric": "auc", "beatBaselines": ["bm25"]}}
    return {"apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "labels": {contracts.LINEAGE_LABEL: lineage}}, "spec": spec}


def get(cluster: Cluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return (get(cluster, "recmodeldeployment", namespace, name) or {}).get("status") or {}


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def wait_status(cluster: Cluster, namespace: str, name: str, predicate: Callable[[dict[str, Any]], Any],
                timeout: float, what: str, operator: RunningOperator | None = None) -> dict[str, Any]:
    """The deployment's status once `predicate(status)` holds; on timeout, fail showing the last
    status, the namespace's pods and the operator's log."""
    def pods_and_log() -> str:
        pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        tail = operator.log_tail(3000) if operator else ""
        return f"{pods}\n{tail}"

    return wait_for_status(lambda: status_of(cluster, namespace, name), predicate, timeout, what, details=pods_and_log)


def serving(version: str) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        return (status.get("phase") == "Serving" and (status.get("stable") or {}).get("modelVersion") == version
                and conditions(status).get("Available", {}).get("status") == "True")
    return check


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name
            and e["involvedObject"]["kind"] == "RecModelDeployment"]


def ready_pods(cluster: Cluster, namespace: str, name: str, track: str) -> list[str]:
    """Pod IPs of the track's ready server pods."""
    selector = f"recops.dev/recmodeldeployment={name},recops.dev/track={track}"
    items = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
    return [p["status"]["podIP"] for p in items if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]


def call(ip: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://{ip}:8080{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


CANDIDATES = [{"id": f"sku-{i}", "text": t} for i, t in enumerate(
    ["red running shoes", "blue wool socks", "leather bag", "summer dress", "garden chair"])]


def rank(ip: str) -> dict[str, Any]:
    code, body = call(ip, "/v1/rank", {"query": "shoes", "user": {"id": "u-1"}, "candidates": CANDIDATES})
    assert code == 200, body
    return body


class Shoppers:
    """Ranks on every ready pod of both tracks, clicking the top item of a response with the
    probability its track's entry in `click_rate` says (deterministically: every n-th response)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, click_rate: dict[str, float]) -> None:
        self.cluster, self.namespace, self.name, self.click_rate = cluster, namespace, name, click_rate
        self.counts: dict[str, int] = {"stable": 0, "canary": 0}
        self.clicks: dict[str, int] = {"stable": 0, "canary": 0}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Shoppers:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ips = [(t, ip) for t in ("stable", "canary") for ip in ready_pods(self.cluster, self.namespace,
                                                                                 self.name, t)]
                for _ in range(5):
                    for _track, ip in ips:
                        response = rank(ip)
                        track = response["track"]
                        self.counts[track] += 1
                        every = self.click_rate.get(track, 0.0)
                        if every and self.clicks[track] < every * self.counts[track]:
                            code, body = call(ip, "/v1/feedback", {"requestId": response["requestId"],
                                                                   "itemId": response["items"][0]["id"],
                                                                   "event": "click"})
                            assert code == 200, body
                            self.clicks[track] += 1
                    time.sleep(0.1)
            except Exception as error:  # a pod going away mid-request; keep shopping
                self.errors.append(repr(error))
                time.sleep(0.5)


# --- tests --------------------------------------------------------------------------------
def test_pinned_uri_rolling_update_printer_columns_and_deletion(
        cluster: Cluster, operator: RunningOperator, restricted: str, models: dict[str, Path]) -> None:
    namespace = restricted
    cluster.apply(rmd("shop", {"uri": str(models["ranker-a"])}, replicas=1), namespace)
    status = wait_status(cluster, namespace, "shop", serving("ranker-a"), SERVE_TIMEOUT, "ranker-a serving", operator)
    assert status["stable"]["modelUri"] == str(models["ranker-a"])
    assert status["endpoint"] == f"http://shop.{namespace}.svc:80"
    assert [p["by"] for p in status["promotions"]] == ["initial"]
    assert conditions(status)["Ready"]["status"] == "True"

    # The real server answers on its pod IP, as the stable track, with the model's identity.
    [ip] = ready_pods(cluster, namespace, "shop", "stable")
    response = rank(ip)
    assert (response["track"], response["modelVersion"]) == ("stable", "ranker-a")
    code, body = call(ip, "/v1/feedback", {"requestId": response["requestId"], "itemId": response["items"][0]["id"],
                                          "event": "click"})
    assert code == 200, body

    # Children: one Service over both tracks, the feedback-key Secret, no HPA or PDB for one replica.
    service = get(cluster, "service", namespace, "shop")
    assert service is not None and "recops.dev/track" not in service["spec"]["selector"]
    assert get(cluster, "secret", namespace, "shop-feedback-key") is not None
    assert get(cluster, "hpa", namespace, "shop-stable") is None
    assert get(cluster, "pdb", namespace, "shop") is None

    table = cluster.kubectl("get", "rmd", "shop", "-n", namespace).stdout
    assert table.split("\n")[0].split()[:5] == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT"], table
    assert table.split("\n")[1].split()[:3] == ["shop", "Serving", "ranker-a"], table

    # RollingUpdate: a new pinned URI swaps the model in the stable Deployment.
    cluster.kubectl("patch", "rmd", "shop", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"model": {"uri": str(models["ranker-b"])}}}))
    status = wait_status(cluster, namespace, "shop", serving("ranker-b"), SERVE_TIMEOUT, "ranker-b serving", operator)
    assert [(p["modelVersion"], p["by"]) for p in status["promotions"]] == [
        ("ranker-a", "initial"), ("ranker-b", "rollingUpdate")]
    assert status["stable"]["revision"] == 2
    assert get(cluster, "deployment", namespace, "shop-canary") is None
    wait_until(lambda: len(ready_pods(cluster, namespace, "shop", "stable")) == 1
               and rank(ready_pods(cluster, namespace, "shop", "stable")[0])["modelVersion"] == "ranker-b",
               60, "the stable pod serving ranker-b")
    reasons = [e["reason"] for e in events(cluster, namespace, "shop")]
    assert "RollingUpdate" in reasons, reasons

    # The operator never wrote the user's object.
    obj = get(cluster, "recmodeldeployment", namespace, "shop")
    assert obj is not None and obj["metadata"].get("generation") == 2
    managers = {m["manager"] for m in obj["metadata"]["managedFields"] if m.get("subresource") != "status"}
    assert "recops" not in managers, managers

    # Deletion: the garbage collector takes every child, and the server processes stop.
    cluster.kubectl("delete", "rmd", "shop", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_until(lambda: not json.loads(cluster.kubectl(
        "get", "deployments,services,secrets,pods", "-n", namespace, "-l", "recops.dev/recmodeldeployment=shop",
        "-o", "json").stdout)["items"], 120, "every child of shop gone")


def test_waits_for_a_lineage_then_canary_promotes(
        cluster: Cluster, operator: RunningOperator, restricted: str, models: dict[str, Path],
        prometheus: PrometheusServer, prometheus_proxy: TokenProxy) -> None:
    namespace = restricted
    cluster.apply(rmd("ranker", {"lineage": "ranker"}, replicas=1, rollout=canary_rollout()), namespace)
    # A model that never appears: a clear waiting condition, and no Deployment.
    status = wait_status(cluster, namespace, "ranker", lambda s: s.get("phase") == "Pending", 60, "Pending")
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForModel")
    assert "recops.dev/lineage=ranker" in ready["message"]
    settle(3)
    assert get(cluster, "deployment", namespace, "ranker-stable") is None

    cluster.apply(finetunejob("train-a", "ranker", models["ranker-a"]), namespace)
    wait_status(cluster, namespace, "ranker", serving("ranker-a"), SERVE_TIMEOUT, "ranker-a serving", operator)

    # A newer model that loses to BM25 fails its gate: it never reaches a canary; ranker-a serves on.
    time.sleep(1.1)  # completion times have a resolution of seconds
    cluster.apply(finetunejob("train-worse", "ranker", models["ranker-b"], baseline={"bm25": {"auc": 0.9}},
                              gatePassed=False), namespace)
    wait_until(lambda: ((get(cluster, "finetunejob", namespace, "train-worse") or {}).get("status") or {}).get(
        "gatePassed") is False, 60, "train-worse GatePassed=False")
    settle(3)
    status = status_of(cluster, namespace, "ranker")
    assert serving("ranker-a")(status) and not status.get("canary"), status

    # A newer FineTuneJob of the lineage: a canary at 50% (one canary pod next to the one stable pod).
    time.sleep(1.1)
    cluster.apply(finetunejob("train-b", "ranker", models["ranker-b"]), namespace)
    status = wait_status(cluster, namespace, "ranker", lambda s: (s.get("canary") or {}).get("modelVersion")
                         == "ranker-b", 90, "canary ranker-b", operator)
    assert status["phase"] == "Canary" and status["canaryWeight"] == 50 and status["canaryStep"] == 0
    assert status["stable"]["modelVersion"] == "ranker-a"

    # Equal click-through on both tracks (a click on every response): analysis passes, the canary is promoted.
    with Shoppers(cluster, namespace, "ranker", {"stable": 1.0, "canary": 1.0}) as shoppers:
        try:
            status = wait_status(cluster, namespace, "ranker", lambda s: (s.get("stable") or {}).get("modelVersion")
                                 == "ranker-b", SERVE_TIMEOUT, "ranker-b promoted", operator)
        finally:
            print("shoppers:", shoppers.counts, shoppers.clicks, shoppers.errors[-3:])
            for track, version in (("stable", "ranker-a"), ("canary", "ranker-b")):
                for metric in ("impressions_total", "clicks_total"):
                    print(track, metric, prometheus.query(
                        f'recops_{metric}{{recops_namespace="{namespace}",track="{track}",model_version="{version}"}}'))
    assert shoppers.counts["canary"] > 0, shoppers.errors
    # Analysis reached Prometheus through the token-checking proxy, with the operator's token.
    assert any(h.get("Authorization") == f"Bearer {PROMETHEUS_TOKEN}" for h in prometheus_proxy.seen)
    assert status.get("canary") is None
    assert [(p["modelVersion"], p["by"]) for p in status["promotions"]] == [
        ("ranker-a", "initial"), ("ranker-b", "analysis")]
    assert status["promotions"][-1]["fromVersion"] == "ranker-a"
    wait_status(cluster, namespace, "ranker", serving("ranker-b"), SERVE_TIMEOUT, "ranker-b serving")
    wait_until(lambda: get(cluster, "deployment", namespace, "ranker-canary") is None, 60, "canary Deployment gone")
    reasons = [e["reason"] for e in events(cluster, namespace, "ranker")]
    assert "CanaryStarted" in reasons and "Promoted" in reasons, reasons

    # Deleting FineTuneJobs never triggers a rollout.
    cluster.kubectl("delete", "finetunejob", "train-b", "-n", namespace)
    settle(5)
    status = status_of(cluster, namespace, "ranker")
    assert status["phase"] == "Serving" and status["stable"]["modelVersion"] == "ranker-b" and not status.get("canary")


def test_worse_canary_rolled_back_not_retried_until_asked(
        cluster: Cluster, operator: RunningOperator, restricted: str, models: dict[str, Path]) -> None:
    namespace = restricted
    cluster.apply(finetunejob("train-a", "shop", models["ranker-a"]), namespace)
    cluster.apply(rmd("shop", {"lineage": "shop"}, replicas=1, rollout=canary_rollout()), namespace)
    wait_status(cluster, namespace, "shop", serving("ranker-a"), SERVE_TIMEOUT, "ranker-a serving", operator)
    time.sleep(1.1)
    cluster.apply(finetunejob("train-c", "shop", models["ranker-c"]), namespace)

    # No traffic yet: inconclusive, not a pass: the step waits past its pause with a visible reason.
    status = wait_status(cluster, namespace, "shop", lambda s: conditions(s).get("Progressing", {}).get("reason")
                         == "Inconclusive", SERVE_TIMEOUT, "an inconclusive step", operator)
    assert "too little traffic" in conditions(status)["Progressing"]["message"]
    settle(6)  # longer than the 4s pause
    status = status_of(cluster, namespace, "shop")
    assert status["phase"] == "Canary" and status["stable"]["modelVersion"] == "ranker-a"
    assert conditions(status)["Progressing"]["reason"] == "Inconclusive"
    assert any(r["state"] == "Inconclusive" for r in status["lastAnalysis"])

    # The canary's shoppers never click: its CTR falls far below stable's; two failed analyses roll it back.
    with Shoppers(cluster, namespace, "shop", {"stable": 0.5, "canary": 0.0}):
        status = wait_status(cluster, namespace, "shop", lambda s: conditions(s).get("Degraded", {}).get("status")
                             == "True", SERVE_TIMEOUT, "rolled back", operator)
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "RolledBack"
    assert "ctr of the canary is 0" in degraded["message"] and "30% below baseline" in degraded["message"], degraded
    assert "bound" in degraded["message"]
    assert status["stable"]["modelVersion"] == "ranker-a" and not status.get("canary")
    assert [r["modelVersion"] for r in status["rejectedModels"]] == ["ranker-c"]
    assert status["phase"] == "Failed"
    rolled_back = [e for e in events(cluster, namespace, "shop") if e["reason"] == "RolledBack"]
    assert rolled_back and "ctr" in rolled_back[0]["message"], rolled_back
    wait_until(lambda: get(cluster, "deployment", namespace, "shop-canary") is None, 60, "canary Deployment gone")

    # Not retried by itself...
    settle(6)
    status = status_of(cluster, namespace, "shop")
    assert not status.get("canary") and conditions(status)["Degraded"]["status"] == "True"
    # ... until recops.dev/retry-model names it; the annotation is recorded as handled, not removed.
    cluster.kubectl("annotate", "rmd", "shop", "-n", namespace, f"{contracts.RETRY_MODEL_ANNOTATION}=ranker-c")
    status = wait_status(cluster, namespace, "shop", lambda s: (s.get("canary") or {}).get("modelVersion")
                         == "ranker-c", 60, "canary ranker-c again", operator)
    assert status["handledAnnotations"][contracts.RETRY_MODEL_ANNOTATION] == "ranker-c"
    assert not status.get("rejectedModels")
    assert conditions(status)["Degraded"]["status"] == "False"
    obj = get(cluster, "rmd", namespace, "shop")
    assert obj is not None and obj["metadata"]["annotations"][contracts.RETRY_MODEL_ANNOTATION] == "ranker-c"

    # A newer candidate arriving mid-canary restarts the canary with it.
    time.sleep(1.1)
    cluster.apply(finetunejob("train-b", "shop", models["ranker-b"]), namespace)
    status = wait_status(cluster, namespace, "shop", lambda s: (s.get("canary") or {}).get("modelVersion")
                         == "ranker-b", 60, "canary restarted with ranker-b", operator)
    assert status["canaryStep"] == 0 and status["stable"]["modelVersion"] == "ranker-a"
    assert "CanaryRestarted" in [e["reason"] for e in events(cluster, namespace, "shop")]

    # recops.dev/abort rolls it back at once, and it stays rejected.
    cluster.kubectl("annotate", "rmd", "shop", "-n", namespace, f"{contracts.ABORT_ANNOTATION}=1")
    status = wait_status(cluster, namespace, "shop", lambda s: conditions(s).get("Degraded", {}).get("reason")
                         == "Aborted", 60, "aborted", operator)
    assert not status.get("canary") and [r["modelVersion"] for r in status["rejectedModels"]] == ["ranker-b"]
    assert status["handledAnnotations"][contracts.ABORT_ANNOTATION] == "1"
    wait_until(lambda: get(cluster, "deployment", namespace, "shop-canary") is None, 60, "canary Deployment gone")
    # ... and ranker-c, older than the aborted ranker-b (superseded, never rejected), does not take its place.
    settle(6)
    status = status_of(cluster, namespace, "shop")
    assert not status.get("canary") and conditions(status)["Degraded"]["reason"] == "Aborted", status
    assert get(cluster, "deployment", namespace, "shop-canary") is None


def test_a_canary_without_metrics_is_rolled_back_at_its_progress_deadline(
        cluster: Cluster, operator: RunningOperator, restricted: str, models: dict[str, Path]) -> None:
    namespace = restricted
    deadline = 40
    rollout = canary_rollout()
    rollout["canary"]["progressDeadlineSeconds"] = deadline
    cluster.apply(finetunejob("slow-a", "slow", models["ranker-a"]), namespace)
    cluster.apply(rmd("slow", {"lineage": "slow"}, replicas=1, rollout=rollout), namespace)
    wait_status(cluster, namespace, "slow", serving("ranker-a"), SERVE_TIMEOUT, "ranker-a serving", operator)
    rollbacks_before = sum(v for k, v in operator.metrics().items()
                           if k.startswith("recops_operator_rollbacks_total{") and 'deployment="slow"' in k)
    time.sleep(1.1)
    cluster.apply(finetunejob("slow-c", "slow", models["ranker-c"]), namespace)
    # No traffic ever: no verdict. At the deadline the canary is rolled back, never promoted unmeasured.
    status = wait_status(cluster, namespace, "slow", lambda s: conditions(s).get("Degraded", {}).get("status")
                         == "True", SERVE_TIMEOUT + deadline, "rolled back at the progress deadline", operator)
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "ProgressDeadlineExceeded", degraded
    assert f"no verdict for {deadline}s" in degraded["message"], degraded
    # Its pods came up slowly on a busy machine, or (usually) every analysis lacked traffic: either way no verdict.
    assert "analysis inconclusive: " in degraded["message"] or "waiting for its pods" in degraded["message"]
    assert status["stable"]["modelVersion"] == "ranker-a" and not status.get("canary")
    (rejected,) = status["rejectedModels"]
    assert rejected["modelVersion"] == "ranker-c"
    started = next(e for e in events(cluster, namespace, "slow") if e["reason"] == "CanaryStarted")
    started_at = parse_time(started.get("eventTime") or started.get("lastTimestamp") or started.get("firstTimestamp"))
    assert (parse_time(rejected["rejectedAt"]) - started_at).total_seconds() >= deadline - 1  # not before it
    warning = next(e for e in events(cluster, namespace, "slow") if e["reason"] == "ProgressDeadlineExceeded")
    assert warning["type"] == "Warning" and "progressDeadlineSeconds" in warning["message"]
    wait_until(lambda: get(cluster, "deployment", namespace, "slow-canary") is None, 60, "canary Deployment gone")
    assert sum(v for k, v in operator.metrics().items() if k.startswith("recops_operator_rollbacks_total{")
               and 'deployment="slow"' in k) == rollbacks_before + 1


def test_operator_leaves_hpa_replicas_alone(cluster: Cluster, operator: RunningOperator, namespace: str,
                                            models: dict[str, Path]) -> None:
    # kwok pods (no process): this is about what the operator applies, not about serving.
    cluster.apply(rmd("scaled", {"uri": str(models["ranker-a"])}, process_node=False,
                      autoscaling={"minReplicas": 1, "maxReplicas": 3}), namespace)
    wait_until(lambda: get(cluster, "hpa", namespace, "scaled-stable"), 60, "the HPA")
    hpa = get(cluster, "hpa", namespace, "scaled-stable")
    assert hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "scaled-stable"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert get(cluster, "pdb", namespace, "scaled") is not None  # up to 3 replicas may run
    wait_status(cluster, namespace, "scaled", serving("ranker-a"), 90, "ranker-a serving", operator)

    # What the HPA does: scale the stable Deployment through the scale subresource.
    cluster.kubectl("scale", "deployment", "scaled-stable", "-n", namespace, "--replicas=2")
    # A spec change makes the operator apply its Deployment again.
    cluster.kubectl("patch", "rmd", "scaled", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"serving": {"maxQueue": 100}}}))

    def applied_again() -> bool:
        dep = get(cluster, "deployment", namespace, "scaled-stable") or {}
        args = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("args", [])
        return "100" in args
    wait_until(applied_again, 60, "the new template applied")
    settle(5)  # several resync periods
    dep = get(cluster, "deployment", namespace, "scaled-stable")
    assert dep is not None and dep["spec"]["replicas"] == 2
    recops_fields = [m for m in dep["metadata"]["managedFields"] if m["manager"] == "recops"]
    assert recops_fields and all("f:replicas" not in json.dumps(m.get("fieldsV1", {})) for m in recops_fields)
    wait_status(cluster, namespace, "scaled", lambda s: (s.get("stable") or {}).get("readyReplicas") == 2, 60,
                "two ready replicas in status")


def test_pinned_fine_tune_job_waits_for_it(cluster: Cluster, operator: RunningOperator, namespace: str,
                                           models: dict[str, Path]) -> None:
    # kwok pods (no process): this is about which model is chosen, not about serving.
    cluster.apply(rmd("pinned", {"fineTuneJobRef": {"name": "train-b"}}, process_node=False), namespace)
    status = wait_status(cluster, namespace, "pinned", lambda s: s.get("phase") == "Pending", 60, "Pending")
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ModelNotFound", "FineTuneJob train-b does not exist")
    assert get(cluster, "deployment", namespace, "pinned-stable") is None

    # Another job of the same lineage is not what the spec pins.
    cluster.apply(finetunejob("train-a", "pinned", models["ranker-a"]), namespace)
    cluster.apply(finetunejob("train-b", "pinned", models["ranker-b"]), namespace)
    status = wait_status(cluster, namespace, "pinned", serving("ranker-b"), 90, "ranker-b serving", operator)
    assert status["stable"]["fineTuneJob"] == "train-b"
    assert status["stable"]["modelUri"] == str(models["ranker-b"])
    job = get(cluster, "finetunejob", namespace, "train-b")
    assert job is not None and status["stable"]["completedAt"] == job["status"]["completionTime"]
    dep = get(cluster, "deployment", namespace, "pinned-stable")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["args"][1] == str(models["ranker-b"])


def test_a_spec_that_cannot_be_built_is_invalid_once_not_retried(cluster: Cluster, operator: RunningOperator,
                                                                 namespace: str, models: dict[str, Path]) -> None:
    """Issue 19: a podTemplate volume named like the server's own got a 500 from the API server on every pass and
    no status was ever written. Now: the builders name the collision; what only the API server refuses (a mount of a
    volume that does not exist) is InvalidSpec with its words, asked once per generation."""
    def invalid(status: dict[str, Any]) -> bool:
        return conditions(status).get("Ready", {}).get("reason") == "InvalidSpec"

    def warnings(name: str) -> list[tuple[str, int]]:
        listed = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                 f"involvedObject.name={name},reason=InvalidSpec", "-o", "json").stdout
        return [(e["message"], int(e.get("count") or 1)) for e in json.loads(listed)["items"]]

    model = {"uri": str(models["ranker-a"])}
    cluster.apply(rmd("tmp-volume", model, process_node=False, podTemplate={
        "volumes": [{"name": "tmp", "emptyDir": {}}]}), namespace)
    status = wait_status(cluster, namespace, "tmp-volume", invalid, 60, "InvalidSpec", operator)
    assert conditions(status)["Ready"]["message"] == "spec.podTemplate.volumes[0].name: 'tmp' is used by recops"
    assert get(cluster, "deployment", namespace, "tmp-volume-stable") is None

    cluster.apply(rmd("bad-mount", model, process_node=False, podTemplate={
        "volumeMounts": [{"name": "nope", "mountPath": "/data"}]}), namespace)
    status = wait_status(cluster, namespace, "bad-mount", invalid, 60, "InvalidSpec", operator)
    message = conditions(status)["Ready"]["message"]
    assert message.startswith("the API server rejected a child object: ") and "nope" in message
    version = get(cluster, "recmodeldeployment", namespace, "bad-mount")["metadata"]["resourceVersion"]  # type: ignore[index]
    settle(6)  # several rollout ticks: no new status write, no new Event
    assert get(cluster, "recmodeldeployment", namespace, "bad-mount")["metadata"]["resourceVersion"] == version  # type: ignore[index]
    assert [count for _, count in warnings("bad-mount")] == [1]

    # A new generation that can be built serves.
    cluster.apply(rmd("bad-mount", model, process_node=False, podTemplate={}), namespace)
    wait_status(cluster, namespace, "bad-mount", lambda s: conditions(s).get("Ready", {}).get("reason") != "InvalidSpec",
                60, "the fixed spec to be acted on", operator)
    assert get(cluster, "deployment", namespace, "bad-mount-stable") is not None
