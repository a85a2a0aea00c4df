"""Chaos on the local control plane: the operator SIGKILLed at random moments, the API server restarted once.

On its own hack/cluster (kwok nodes, no process node), with `recops operator` run as a subprocess under the
ServiceAccount RBAC of config/rbac (cluster-wide, standalone: the chart's default of one replica without
leader election; default 60 s resync), it runs

  - M FineTuneJobs (default 20), created one every 4 s while the chaos goes on; every fifth is made to fail.
    Their pods run on kwok, whose test hook hands each trainer "container" the termination message its
    FineTuneJob's podTemplate carries (a model URI and metrics, or an error, unique to that job), so what each
    trainer reported is known;
  - a RecModelDeployment rollout on kwok pods: the deployment follows a lineage; its first model serves before
    the chaos starts, then new models of the lineage (default 3) arrive one after another under chaos, each
    once the one before was promoted, spread so that the last canary still runs at the last kill. Each walks
    a three-step canary (25%, 50%, 75% of 2 replicas, a 6 s pause each). kwok pods serve nothing, so the
    canary is judged by an analysis with no rules (always a Pass): what is exercised is the operator's rollout
    state machine (canary Deployment, steps, pauses, promotion, status) under chaos, not the metric judgement,
    which tests/cluster/test_recmodeldeployment.py covers with real servers, a tiny model and Prometheus;

while it SIGKILLs the operator's process group (>= 20 times, default 24; restarted at once each time, as a
kubelet would) at random moments: three in four 0.5-5 s after it answers its liveness probe, one in four
0.1-2 s after its start (often before it is live, in its first passes). Once, halfway, the kube-apiserver
process is SIGKILLed too and started again (`hack/cluster up` starts what is not running and waits for
/readyz) while the operator runs. The last kill leaves the operator down for a moment; it is started once
more, and the script waits for everything to converge. It prints

  - duplicates: trainer Jobs (distinct Job uids per FineTuneJob, from a watch), models (distinct trainer pods
    per FineTuneJob: each real trainer run writes one model; on kwok a pod stands for it), canaries (distinct
    canary Deployment uids per rolled-out model) and stable Deployments recreated;
  - lost or wrong status: a FineTuneJob whose final phase, model or metrics disagree with what its trainer
    reported (or a failure whose message lacks the trainer's error), or whose status regressed on the watch
    (a final phase, model or metrics changed, or Running went back to Pending); a RecModelDeployment whose
    promotions are not each model once in order, or whose stable model (in status, or in the stable
    Deployment's template) or revision went back;
  - stuck objects: whatever has not converged --converge-timeout seconds (300) after the last kill: a
    FineTuneJob not final, a Job still active, a trainer pod not finished, the rollout not Serving the newest
    model on a rolled-out stable Deployment, a canary Deployment left, a Job/pod/Deployment left Terminating;
  - time to converge: from the last kill to all converged, with the FineTuneJobs and the rollout apart (the
    rollout's includes what is legitimately left of its canary pauses then).

All but the last must be 0 (the exit status is 1 otherwise). For each problem it prints the object, the
operator log lines naming it and its Events (the log of every operator start is in one file, with a marker
line at each start and kill; the file is kept).

    .venv/bin/python benchmarks/chaos.py                       # M = 20, 24 kills, own cluster (~2-4 min)
    .venv/bin/python benchmarks/chaos.py -m 40 --kills 40      # more
    .venv/bin/python benchmarks/chaos.py --cluster-dir DIR     # reuse a running hack/cluster (left running)

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

GROUP, VERSION = "recops.dev", "v1alpha1"
FTJ_LABEL = "recops.dev/finetunejob"  # recops.api.contracts.owner_label("FineTuneJob"): on the Job and its pods
RMD_LABEL = "recops.dev/recmodeldeployment"
LINEAGE_LABEL = "recops.dev/lineage"
MODEL_VERSION_ANNOTATION = "recops.dev/model-version"  # builders.recmodeldeployment.MODEL_VERSION_LABEL
TERMINATION_ANNOTATION = "recops.dev/test-termination-message"
TEST_FAIL_LABEL = "recops.dev/test-fail"
TEST_EXIT_CODE_ANNOTATION = "recops.dev/test-exit-code"
RMD_NAME = "chaos-serve"
LINEAGE = "chaos-rollout"
REPLICAS = 2
CANARY_STEPS = [{"weight": 25, "pause": "6s"}, {"weight": 50, "pause": "6s"}, {"weight": 75, "pause": "6s"}]
FINAL_PHASES = ("Succeeded", "Failed")
PHASE_RANK = {"Pending": 0, "Suspended": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


# --- the workload ---------------------------------------------------------------------------------
@dataclass
class Expected:
    """What a FineTuneJob's trainer reports (through kwok's termination-message hook)."""

    phase: str
    model_uri: str | None
    model_version: str | None
    metrics: dict[str, float]
    error: str | None


def ftj_manifest(name: str, expected: Expected, lineage: str | None = None) -> dict[str, Any]:
    report = {"schemaVersion": 1, "modelUri": expected.model_uri, "modelVersion": expected.model_version,
              "metrics": expected.metrics, "baseline": {}, "currentModel": None, "gatePassed": None,
              "error": expected.error}
    template: dict[str, Any] = {"annotations": {TERMINATION_ANNOTATION: json.dumps(report)}}
    if expected.phase == "Failed":
        template["labels"] = {TEST_FAIL_LABEL: "true"}
        template["annotations"][TEST_EXIT_CODE_ANNOTATION] = "3"
    labels = {LINEAGE_LABEL: lineage} if lineage else {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name, "labels": labels},
        "spec": {"task": "click-through", "dataset": {"uri": "/data/events.jsonl"}, "output": {"uri": "/models"},
                 "backoffLimit": 0, "podTemplate": template},
    }


def chaos_job(namespace: str, index: int) -> tuple[str, Expected]:
    name = f"chaos-{index:03d}"
    metrics = {"auc": round(0.6 + index / 1000, 4), "ndcg@10": round(0.3 + index / 1000, 4)}
    if index % 5 == 4:
        return name, Expected("Failed", None, None, metrics, f"chaos: planned failure of {name}")
    version = f"{name}-model"
    return name, Expected("Succeeded", f"/models/{namespace}/{version}", version, metrics, None)


def rollout_job(namespace: str, n: int) -> tuple[str, Expected]:
    version = f"rollout-v{n}"
    return f"train-{version}", Expected("Succeeded", f"/models/{namespace}/{version}", version,
                                        {"auc": round(0.7 + n / 100, 4)}, None)


def rmd_manifest() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RecModelDeployment", "metadata": {"name": RMD_NAME},
        "spec": {"model": {"lineage": LINEAGE}, "replicas": REPLICAS,
                 "rollout": {"strategy": "Canary", "canary": {
                     "steps": CANARY_STEPS, "analysis": {"interval": "2s", "window": "1m", "rules": []},
                     "failureLimit": 2}}},
    }


def version_number(version: str | None) -> int:
    try:
        return int(str(version).rsplit("-v", 1)[1])
    except (IndexError, ValueError):
        return -1


# --- watching ---------------------------------------------------------------------------------------
class Recorder:
    """Every event of one resource in the namespace, kept through API server outages: on any error the
    watch resumes from the last resourceVersion (a fresh list-and-watch after 410 Gone)."""

    def __init__(self, what: str, make_call: Callable[[Any], tuple[Callable[..., Any], tuple[Any, ...]]],
                 on_event: Callable[[str, dict[str, Any], float], None], label_selector: str | None = None) -> None:
        self.what, self.make_call, self.on_event, self.selector = what, make_call, on_event, label_selector
        self.stop = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self.run, name=f"watch-{what}", daemon=True)

    def start(self, api_client: Any) -> Recorder:
        self.api_client = api_client
        self.thread.start()
        return self

    def run(self) -> None:
        from kubernetes import client, watch

        list_call, args = self.make_call(self.api_client)
        serializer = client.ApiClient()
        version: str | None = None
        while not self.stop.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                kwargs: dict[str, Any] = {"timeout_seconds": 5, "_request_timeout": 15}
                if version:
                    kwargs["resource_version"] = version
                if self.selector:
                    kwargs["label_selector"] = self.selector
                for event in stream.stream(list_call, *args, **kwargs):  # type: ignore[no-untyped-call]
                    if event["type"] == "ERROR":
                        raise client.ApiException(status=int(event["raw_object"].get("code") or 500))
                    obj = event["object"]
                    if not isinstance(obj, dict):
                        obj = serializer.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
                    version = obj["metadata"].get("resourceVersion") or version
                    self.on_event(event["type"], obj, time.monotonic())
                    if self.stop.is_set():
                        return
            except client.ApiException as error:
                self.errors += 1
                if error.status == 410:
                    version = None
                time.sleep(0.5)
            except Exception:  # the API server is down or restarting: try again
                self.errors += 1
                time.sleep(0.5)


@dataclass
class Observations:
    """What the watches saw (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    job_uids: dict[str, set[str]] = field(default_factory=dict)  # FineTuneJob -> its Jobs' uids
    pod_uids: dict[str, set[str]] = field(default_factory=dict)  # FineTuneJob -> its trainer pods' uids
    ftj_states: dict[str, list[tuple[str | None, str]]] = field(default_factory=dict)  # name -> [(phase, digest)]
    ftj_regressions: dict[str, list[str]] = field(default_factory=dict)
    ftj_messages: dict[str, str] = field(default_factory=dict)  # name -> status.message at the last change
    deployment_uids: dict[str, dict[str, str | None]] = field(default_factory=dict)  # name -> uid -> version
    stable_template_versions: list[str] = field(default_factory=list)  # the stable Deployment's, in order
    rmd_stable_versions: list[str] = field(default_factory=list)  # status.stable.modelVersion, in order
    rmd_promotion_lengths: list[int] = field(default_factory=list)
    rmd_revisions: list[int] = field(default_factory=list)

    def on_job(self, _type: str, obj: dict[str, Any], _at: float) -> None:
        owner = (obj["metadata"].get("labels") or {}).get(FTJ_LABEL)
        if owner:
            with self.lock:
                self.job_uids.setdefault(owner, set()).add(obj["metadata"]["uid"])

    def on_pod(self, _type: str, obj: dict[str, Any], _at: float) -> None:
        owner = (obj["metadata"].get("labels") or {}).get(FTJ_LABEL)
        if owner:
            with self.lock:
                self.pod_uids.setdefault(owner, set()).add(obj["metadata"]["uid"])

    def on_ftj(self, type_: str, obj: dict[str, Any], _at: float) -> None:
        if type_ == "DELETED":
            return
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        phase = status.get("phase")
        digest = json.dumps({"model": status.get("model"), "metrics": status.get("metrics")}, sort_keys=True)
        message = str(status.get("message") or "")[:160]
        with self.lock:
            states = self.ftj_states.setdefault(name, [])
            if states and states[-1] == (phase, digest):
                return
            if states:
                last_phase, last_digest = states[-1]
                problem = None
                if last_phase in FINAL_PHASES and (phase, digest) != (last_phase, last_digest):
                    problem = f"final {last_phase} {last_digest} became {phase} {digest}"
                elif PHASE_RANK.get(str(phase), -1) < PHASE_RANK.get(str(last_phase), -1):
                    problem = f"{last_phase} ({self.ftj_messages.get(name)!r}) went back to {phase} ({message!r})"
                if problem:
                    self.ftj_regressions.setdefault(name, []).append(f"{now_text()}: {problem}")
            states.append((phase, digest))
            self.ftj_messages[name] = message

    def on_deployment(self, type_: str, obj: dict[str, Any], _at: float) -> None:
        meta = obj["metadata"]
        version = (meta.get("annotations") or {}).get(MODEL_VERSION_ANNOTATION)
        with self.lock:
            self.deployment_uids.setdefault(meta["name"], {}).setdefault(meta["uid"], version)
            if meta["name"] == f"{RMD_NAME}-stable" and version and type_ != "DELETED" and (
                    not self.stable_template_versions or self.stable_template_versions[-1] != version):
                self.stable_template_versions.append(version)

    def on_rmd(self, type_: str, obj: dict[str, Any], _at: float) -> None:
        if type_ == "DELETED" or obj["metadata"]["name"] != RMD_NAME:
            return
        status = obj.get("status") or {}
        stable = status.get("stable") or {}
        with self.lock:
            version = stable.get("modelVersion")
            if version and (not self.rmd_stable_versions or self.rmd_stable_versions[-1] != version):
                self.rmd_stable_versions.append(version)
            promotions = len(status.get("promotions") or [])
            if not self.rmd_promotion_lengths or self.rmd_promotion_lengths[-1] != promotions:
                self.rmd_promotion_lengths.append(promotions)
            revision = stable.get("revision")
            if revision is not None and (not self.rmd_revisions or self.rmd_revisions[-1] != revision):
                self.rmd_revisions.append(int(revision))


# --- the operator and the API server --------------------------------------------------------------
def healthy(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(url, timeout=1).status == 200)
    except OSError:
        return False


def free_port() -> int:
    from tests.support.local_servers import free_port as pick

    return pick()


class Operator:
    """`recops operator` as tests/support/operator.py runs it, started again after every kill; one log file."""

    def __init__(self, cluster: Any, workdir: Path, resync_seconds: float) -> None:
        from tests.support.operator import OPERATOR_NAMESPACE, TRAINER_IMAGE

        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = cluster.sa_kubeconfig(OPERATOR_NAMESPACE, "recops-operator",
                                                workdir / "recops-operator.kubeconfig", expiration_seconds=7200)
        self.env = {k: v for k, v in cluster.env.items() if k != "KUBECONFIG"}  # only the ServiceAccount's token
        self.resync_seconds = resync_seconds
        self.trainer_image = TRAINER_IMAGE
        self.log = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_url = ""
        self.starts = 0
        self.started_at = 0.0
        self.exited_by_itself: list[str] = []

    def mark(self, text: str) -> None:
        with self.log.open("a") as out:
            out.write(f"=== chaos: {now_text()} {text} ===\n")

    def start(self) -> None:
        metrics_port, liveness_port = free_port(), free_port()
        self.liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"
        argv = [sys.executable, "-m", "recops", "operator", "--kubeconfig", str(self.kubeconfig),
                "--namespaces", "", "--resync-seconds", str(self.resync_seconds),
                "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
                "--liveness", self.liveness_url, "--trainer-image", self.trainer_image]
        self.starts += 1
        with self.log.open("a") as out:
            out.write(f"=== chaos: {now_text()} operator start #{self.starts} ===\n")
            out.flush()
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT),
                                            start_new_session=True)
        self.started_at = time.monotonic()

    def wait_healthy(self, timeout: float) -> float | None:
        """Seconds from start until the liveness probe answers; None if it did not (or the process exited)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return None
            if healthy(self.liveness_url):
                return time.monotonic() - self.started_at
            time.sleep(0.1)
        return None

    def kill(self) -> bool:
        """SIGKILL the operator (its process group); False if it had exited by itself."""
        assert self.process is not None
        if self.process.poll() is not None:
            self.exited_by_itself.append(f"start #{self.starts} exited with {self.process.returncode}")
            self.mark(f"operator start #{self.starts} had exited by itself with {self.process.returncode}")
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.mark(f"SIGKILL operator start #{self.starts} (pid {self.process.pid}, "
                  f"{time.monotonic() - self.started_at:.1f}s after its start)")
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def restart_apiserver(cluster_dir: Path, env: dict[str, str]) -> float:
    """SIGKILL the cluster's kube-apiserver (hack/cluster starts each component in its own process group and
    records its pid in run/<component>.pid) and start it again with `hack/cluster up`, which starts only
    what is not running and waits for /readyz. Returns the seconds it was gone."""
    pid = int((cluster_dir / "run" / "kube-apiserver.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    if "kube-apiserver" not in cmdline or str(cluster_dir) not in cmdline:
        raise RuntimeError(f"pid {pid} is not this cluster's kube-apiserver: {cmdline!r}")
    t0 = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if stat and stat.rsplit(")", 1)[1].split()[0] == "Z":
            break  # a zombie: its parent (hack/cluster) is gone; the port is free
        time.sleep(0.1)
    time.sleep(1.0)  # down for a moment, as a crash and a restart by systemd would be
    up = subprocess.run([str(ROOT / "hack" / "cluster"), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"hack/cluster up failed after killing the apiserver:\n{up.stderr[-3000:]}")
    return time.monotonic() - t0


# --- reading the state ----------------------------------------------------------------------------------
class State:
    """The namespace's objects now, read with plain lists (raw JSON)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    @staticmethod
    def _items(response: Any) -> list[dict[str, Any]]:
        return list(json.loads(response.data)["items"])

    def read(self) -> dict[str, Any]:
        ns = self.ns
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": 15}
        ftjs = self._items(self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "finetunejobs", **kw))
        rmds = self._items(self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "recmodeldeployments", **kw))
        return {
            "ftjs": {o["metadata"]["name"]: o for o in ftjs},
            "rmd": next((o for o in rmds if o["metadata"]["name"] == RMD_NAME), None),
            "jobs": self._items(self.batch.list_namespaced_job(ns, **kw)),
            "pods": self._items(self.core.list_namespaced_pod(ns, **kw)),
            "deployments": {o["metadata"]["name"]: o
                            for o in self._items(self.apps.list_namespaced_deployment(ns, **kw))},
        }

    def create(self, manifest: dict[str, Any], timeout: float = 180) -> None:
        """Create, retrying through an API server outage; an AlreadyExists after a retry is success."""
        from kubernetes import client

        deadline = time.monotonic() + timeout
        plural = {"FineTuneJob": "finetunejobs", "RecModelDeployment": "recmodeldeployments"}[manifest["kind"]]
        tried = False
        while True:
            try:
                self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, manifest,
                                                            _request_timeout=15)
                return
            except client.ApiException as error:
                if error.status == 409 and tried:
                    return
                if error.status not in (429, 500, 503, 504) or time.monotonic() > deadline:
                    raise
            except Exception:  # the API server is down: retry until the deadline
                if time.monotonic() > deadline:
                    raise
            tried = True
            time.sleep(1)


def conditions_true(obj: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def unconverged(state: dict[str, Any], expected: dict[str, Expected], last_version: str) -> list[str]:
    """Everything not yet where it must end up (empty: converged)."""
    out: list[str] = []
    for name in sorted(expected):
        ftj = state["ftjs"].get(name)
        if ftj is None:
            out.append(f"FineTuneJob {name} does not exist")
            continue
        status = ftj.get("status") or {}
        if status.get("phase") not in FINAL_PHASES:
            out.append(f"FineTuneJob {name} is {status.get('phase')}: {status.get('message')}")
    for job in state["jobs"]:
        name = job["metadata"]["name"]
        if job["metadata"].get("deletionTimestamp"):
            out.append(f"Job {name} Terminating (finalizers {job['metadata'].get('finalizers')})")
        elif not conditions_true(job, "Complete") and not conditions_true(job, "Failed"):
            out.append(f"Job {name} still active")
    for pod in state["pods"]:
        meta = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp"):
            out.append(f"pod {meta['name']} Terminating (finalizers {meta.get('finalizers')})")
        elif FTJ_LABEL in (meta.get("labels") or {}) and phase not in FINAL_PHASES:
            out.append(f"trainer pod {meta['name']} is {phase}")
    for dep in state["deployments"].values():
        if dep["metadata"].get("deletionTimestamp"):
            out.append(f"Deployment {dep['metadata']['name']} Terminating")
    rmd = state["rmd"]
    status = (rmd or {}).get("status") or {}
    stable = status.get("stable") or {}
    if rmd is None:
        out.append(f"RecModelDeployment {RMD_NAME} does not exist")
    elif status.get("phase") != "Serving" or stable.get("modelVersion") != last_version or status.get("canary"):
        out.append(f"RecModelDeployment {RMD_NAME} is {status.get('phase')} with stable {stable.get('modelVersion')}"
                   f", canary {(status.get('canary') or {}).get('modelVersion')} (want Serving {last_version})")
    if f"{RMD_NAME}-canary" in state["deployments"]:
        out.append(f"Deployment {RMD_NAME}-canary still exists")
    dep = state["deployments"].get(f"{RMD_NAME}-stable")
    if dep is None:
        out.append(f"Deployment {RMD_NAME}-stable does not exist")
    else:
        version = (dep["metadata"].get("annotations") or {}).get(MODEL_VERSION_ANNOTATION)
        st = dep.get("status") or {}
        rolled_out = (st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
                      and st.get("updatedReplicas") == REPLICAS and st.get("replicas") == REPLICAS
                      and st.get("readyReplicas") == REPLICAS)
        if version != last_version or not rolled_out:
            out.append(f"Deployment {RMD_NAME}-stable serves {version} (rolled out: {rolled_out}; want {last_version})")
    return out


# --- the verdict ------------------------------------------------------------------------------------------
def wrong_ftj_status(ftj: dict[str, Any] | None, want: Expected) -> str | None:
    if ftj is None:
        return "gone"
    status = ftj.get("status") or {}
    problems = []
    if status.get("phase") != want.phase:
        problems.append(f"phase {status.get('phase')} (want {want.phase})")
    if status.get("metrics") != want.metrics:
        problems.append(f"metrics {status.get('metrics')} (the trainer reported {want.metrics})")
    if want.phase == "Succeeded":
        model = status.get("model") or {}
        if model.get("uri") != want.model_uri or model.get("version") != want.model_version:
            problems.append(f"model {model} (the trainer reported {want.model_uri}, {want.model_version})")
    elif want.error and want.error not in str(status.get("message") or ""):
        problems.append(f"message {status.get('message')!r} lacks the trainer's error {want.error!r}")
    if status.get("phase") in FINAL_PHASES and not status.get("completionTime"):
        problems.append("no completionTime")
    return "; ".join(problems) or None


def wrong_rmd_status(state: dict[str, Any], versions: list[str], obs: Observations) -> list[str]:
    problems = []
    status = (state["rmd"] or {}).get("status") or {}
    promotions = [(p.get("modelVersion"), p.get("by")) for p in status.get("promotions") or []]
    want = [(versions[0], "initial"), *((v, "analysis") for v in versions[1:])][-10:]
    if promotions != want:
        problems.append(f"{RMD_NAME} promotions {promotions} (want {want})")
    with obs.lock:
        stable_seen = list(obs.rmd_stable_versions)
        templates = list(obs.stable_template_versions)
        revisions = list(obs.rmd_revisions)
        lengths = list(obs.rmd_promotion_lengths)
    numbers = [version_number(v) for v in stable_seen]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        problems.append(f"{RMD_NAME} status.stable went back: {stable_seen}")
    numbers = [version_number(v) for v in templates]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        problems.append(f"{RMD_NAME}-stable Deployment's model went back: {templates}")
    if revisions != sorted(revisions):
        problems.append(f"{RMD_NAME} status.stable.revision went back: {revisions}")
    if any(b < a for a, b in itertools.pairwise(lengths) if a < 10):
        problems.append(f"{RMD_NAME} status.promotions shrank: {lengths}")
    return problems


def log_evidence(log: Path, needle: str, lines: int = 8) -> list[str]:
    """The last operator log lines naming `needle` (client retries and traceback lines left out), with the chaos
    marker (a start, a kill) before each."""
    found: list[str] = []
    marker = ""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("=== chaos:"):
            marker = line
        elif needle in line and line[:2] == "20" and "urllib3.connectionpool" not in line:
            if marker:
                found.append(marker)
                marker = ""
            found.append(line[:400])
    return found[-lines:]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- the run ------------------------------------------------------------------------------------------------
def run(cluster: Any, cluster_dir: Path, env: dict[str, str], args: argparse.Namespace, workdir: Path,
        rng: random.Random) -> dict[str, Any]:
    from kubernetes import client

    namespace = cluster.create_namespace("chaos")
    state = State(cluster.api_client(), namespace)
    obs = Observations()
    recorders = [
        Recorder("jobs", lambda api: (client.BatchV1Api(api).list_namespaced_job, (namespace,)), obs.on_job,
                 FTJ_LABEL),
        Recorder("pods", lambda api: (client.CoreV1Api(api).list_namespaced_pod, (namespace,)), obs.on_pod,
                 FTJ_LABEL),
        Recorder("finetunejobs", lambda api: (client.CustomObjectsApi(api).list_namespaced_custom_object,
                                              (GROUP, VERSION, namespace, "finetunejobs")), obs.on_ftj),
        Recorder("deployments", lambda api: (client.AppsV1Api(api).list_namespaced_deployment, (namespace,)),
                 obs.on_deployment, RMD_LABEL),
        Recorder("recmodeldeployments", lambda api: (client.CustomObjectsApi(api).list_namespaced_custom_object,
                                                     (GROUP, VERSION, namespace, "recmodeldeployments")), obs.on_rmd),
    ]
    for recorder in recorders:
        recorder.start(cluster.api_client())
    operator = Operator(cluster, workdir / "operator", args.resync_seconds)
    expected: dict[str, Expected] = {}
    versions: list[str] = []  # the lineage's models, in the order they were created
    out: dict[str, Any] = {"namespace": namespace, "operator_log": str(operator.log)}

    # --- before the chaos: the first model serves -------------------------------------------------------
    operator.start()
    if operator.wait_healthy(120) is None:
        raise RuntimeError(f"the operator did not start:\n{operator.log.read_text()[-3000:]}")
    state.create(rmd_manifest())
    name, want = rollout_job(namespace, 1)
    state.create(ftj_manifest(name, want, LINEAGE))
    expected[name] = want
    versions.append(str(want.model_version))
    deadline = time.monotonic() + 180
    while unconverged(state.read(), expected, versions[-1]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the first model did not serve: {unconverged(state.read(), expected, versions[-1])}")
        time.sleep(1)

    # --- the workload under chaos ----------------------------------------------------------------------------
    chaos_over = threading.Event()
    created_all = threading.Event()
    rollouts_done = threading.Event()
    t_chaos = time.monotonic()
    creation_errors: list[str] = []

    def create_jobs() -> None:
        try:
            for i in range(args.finetunejobs):
                wait = t_chaos + args.create_interval * (i + 1) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                name, want = chaos_job(namespace, i)
                expected[name] = want
                state.create(ftj_manifest(name, want))
        except Exception as error:  # reported, and the run goes on
            creation_errors.append(f"creating FineTuneJobs: {error!r}")
        finally:
            created_all.set()

    def roll_out() -> None:
        try:
            for n in range(1, args.rollouts + 1):
                # The next model once the one before is promoted (completion times have a resolution of seconds),
                # spread over the kills so that the last canary still runs at the last kill.
                while not chaos_over.is_set():
                    status = (state_or_none() or {}).get("status") or {}
                    promoted = (status.get("stable") or {}).get("modelVersion") == versions[-1] \
                        and not status.get("canary")
                    if promoted and len(kills) >= round(args.kills * n / (args.rollouts + 0.6)):
                        break
                    time.sleep(0.5)
                if chaos_over.is_set():
                    return
                time.sleep(1.1 + rng.uniform(0, 2))
                name, want = rollout_job(namespace, n + 1)
                expected[name] = want
                state.create(ftj_manifest(name, want, LINEAGE))
                versions.append(str(want.model_version))
        except Exception as error:  # reported, and the run goes on
            creation_errors.append(f"rolling out: {error!r}")
        finally:
            rollouts_done.set()

    def state_or_none() -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = state.custom.get_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, namespace, "recmodeldeployments", RMD_NAME, _request_timeout=10)
            return body
        except Exception:  # the API server may be restarting
            return None

    kills: list[dict[str, Any]] = []
    workers = [threading.Thread(target=create_jobs, daemon=True), threading.Thread(target=roll_out, daemon=True)]
    for worker in workers:
        worker.start()

    startup_s: list[float] = []
    apiserver_down_s: float | None = None
    restart_after = args.kills // 2
    last_kill = time.monotonic()
    while True:
        restart_now = len(kills) >= restart_after and apiserver_down_s is None
        early = rng.random() < args.early_kill_share and operator.starts > 1 and not restart_now
        if early:  # a random moment of its start-up and first (resume) passes
            time.sleep(max(0.0, rng.uniform(0.1, 2.0) - (time.monotonic() - operator.started_at)))
        else:
            took = operator.wait_healthy(120)
            if took is not None and operator.starts > 1:
                startup_s.append(took)
            if restart_now:
                operator.mark("SIGKILL kube-apiserver")
                apiserver_down_s = restart_apiserver(cluster_dir, env)
                operator.mark(f"kube-apiserver ready again after {apiserver_down_s:.1f}s")
            time.sleep(rng.uniform(*args.kill_delay))
        live = healthy(operator.liveness_url)
        alive_s = time.monotonic() - operator.started_at
        killed = operator.kill()
        last_kill = time.monotonic()
        kills.append({"at_s": round(last_kill - t_chaos, 1), "alive_s": round(alive_s, 2), "killed": killed,
                      "early": early, "before_live": not live})
        enough = len(kills) >= args.kills and created_all.is_set() and rollouts_done.is_set() \
            and apiserver_down_s is not None
        if enough or len(kills) >= 3 * args.kills:
            break  # with the operator down: it starts again below, and everything must converge from there
        operator.start()
    chaos_over.set()
    operator.start()
    out["chaos_s"] = round(last_kill - t_chaos, 1)
    for worker in workers:
        worker.join(60)

    # --- convergence -------------------------------------------------------------------------------------------
    converge_s: float | None = None
    parts_s: dict[str, float] = {}  # FineTuneJobs (their Jobs and pods), the rollout: when each converged
    left: list[str] = []
    at_last_kill: list[str] | None = None
    while True:
        try:
            snapshot = state.read()
            left = unconverged(snapshot, expected, versions[-1])
            if at_last_kill is None:
                at_last_kill = left
        except Exception as error:  # keep polling
            left = [f"cannot read the state: {error!r}"]
        for part, pending in (("finetunejobs", [s for s in left if RMD_NAME not in s]),
                              ("rollout", [s for s in left if RMD_NAME in s or "cannot read" in s])):
            if not pending and part not in parts_s:
                parts_s[part] = round(time.monotonic() - last_kill, 1)
        if not left:
            converge_s = time.monotonic() - last_kill
            break
        if time.monotonic() - last_kill > args.converge_timeout:
            break
        time.sleep(0.5)
    if converge_s is not None and args.settle > 0:
        time.sleep(args.settle)  # a late duplicate or regression shows up here
    final = state.read()
    still = unconverged(final, expected, versions[-1]) if converge_s is not None else left
    operator.stop()
    for recorder in recorders:
        recorder.stop.set()

    # --- the verdict ------------------------------------------------------------------------------------------------
    with obs.lock:
        job_dups = {n: sorted(u) for n, u in obs.job_uids.items() if len(u) > 1}
        model_dups = {n: sorted(u) for n, u in obs.pod_uids.items() if len(u) > 1}
        no_job = sorted(n for n in expected if n not in obs.job_uids)
        canary_by_version: dict[str, list[str]] = {}
        for uid, version in obs.deployment_uids.get(f"{RMD_NAME}-canary", {}).items():
            canary_by_version.setdefault(str(version), []).append(uid)
        stable_uids = sorted(obs.deployment_uids.get(f"{RMD_NAME}-stable", {}))
        regressions = {n: list(r) for n, r in obs.ftj_regressions.items()}
    canary_dups = {v: u for v, u in canary_by_version.items() if len(u) > 1}
    canaries_missing = [v for v in versions[1:] if v not in canary_by_version]
    wrong = {n: w for n in sorted(expected) if (w := wrong_ftj_status(final["ftjs"].get(n), expected[n]))}
    rmd_wrong = wrong_rmd_status(final, versions, obs)
    out.update(
        finetunejobs=len(expected), chaos_finetunejobs=args.finetunejobs,
        failed_on_purpose=sum(e.phase == "Failed" for e in expected.values()),
        rollouts_under_chaos=len(versions) - 1, kills=sum(k["killed"] for k in kills),
        kills_early=sum(k["killed"] and k["early"] for k in kills),
        kills_before_live=sum(k["killed"] and k["before_live"] for k in kills),
        operator_exited_by_itself=operator.exited_by_itself, apiserver_restarts=int(apiserver_down_s is not None),
        apiserver_down_s=round(apiserver_down_s, 1) if apiserver_down_s is not None else None,
        operator_startup_p50_s=round(percentile(startup_s, 50), 2),
        operator_startup_max_s=round(max(startup_s or [0]), 2),
        duplicates={"jobs": sum(len(u) - 1 for u in job_dups.values()),
                    "models": sum(len(u) - 1 for u in model_dups.values()),
                    "canaries": sum(len(u) - 1 for u in canary_dups.values()),
                    "stable_deployments": max(0, len(stable_uids) - 1)},
        lost_or_wrong_status=len(wrong) + len(regressions.keys() - wrong.keys()) + len(rmd_wrong),
        stuck=len(still), time_to_converge_s=round(converge_s, 1) if converge_s is not None else None,
        converged_after_s=parts_s,
        unconverged_at_last_kill=len(at_last_kill or []),
        details={"job_duplicates": job_dups, "model_duplicates": model_dups, "canary_duplicates": canary_dups,
                 "stable_deployment_uids": stable_uids, "canary_deployments_per_model": canary_by_version,
                 "rollouts_without_canary": canaries_missing, "finetunejobs_without_job": no_job,
                 "wrong_status": wrong, "status_regressions": regressions, "rmd_wrong": rmd_wrong, "stuck": still,
                 "creation_errors": creation_errors, "watch_errors": {r.what: r.errors for r in recorders},
                 "unconverged_at_last_kill": at_last_kill or [], "kills": kills},
    )
    # Evidence: the operator's log lines about each object with a problem.
    named = [w.rstrip(":,") for s in still for w in s.split() if w.startswith(("chaos-", "train-"))]
    suspects = [*job_dups, *model_dups, *wrong, *regressions, *([RMD_NAME] if rmd_wrong or canary_dups else []), *named]
    events = object_events(state, namespace)
    out["evidence"] = {s: log_evidence(operator.log, s) + events.get(s, []) for s in dict.fromkeys(suspects)}
    return out


def object_events(state: State, namespace: str) -> dict[str, list[str]]:
    """Each object's Events (the operator's decisions: JobCreated, Succeeded, CanaryStarted, Promoted ...)."""
    try:
        items = State._items(state.core.list_namespaced_event(namespace, _preload_content=False, _request_timeout=15))
    except Exception as error:  # the evidence is a help, not the verdict
        return {"": [f"cannot list Events: {error!r}"]}
    out: dict[str, list[str]] = {}
    for event in sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        when = event.get("lastTimestamp") or event.get("eventTime")
        name = event["involvedObject"].get("name", "")
        out.setdefault(name, []).append(f"Event {when} {event.get('type')} {event.get('reason')} "
                                        f"(x{event.get('count') or 1}): {str(event.get('message'))[:200]}")
    return out


def report(out: dict[str, Any]) -> None:
    d = out["details"]
    dup = out["duplicates"]
    print(f"\nchaos: {out['finetunejobs']} FineTuneJobs ({out['chaos_finetunejobs']} under chaos, "
          f"{out['failed_on_purpose']} failing on purpose), {out['rollouts_under_chaos']} canary rollouts under chaos")
    print(f"  operator SIGKILLed {out['kills']} times over {out['chaos_s']:.0f}s ({out['kills_early']} within 2s of "
          f"its start, {out['kills_before_live']} of them before it was live); start-up to liveness "
          f"p50 {out['operator_startup_p50_s']:.1f}s, max {out['operator_startup_max_s']:.1f}s; "
          f"exited by itself: {len(out['operator_exited_by_itself'])}")
    print(f"  kube-apiserver SIGKILLed and restarted {out['apiserver_restarts']} time(s), "
          f"gone {out['apiserver_down_s']}s until ready again")
    print(f"  duplicates:            Jobs {dup['jobs']}, models {dup['models']}, canaries {dup['canaries']}, "
          f"stable Deployments {dup['stable_deployments']}")
    print(f"  lost or wrong status:  {out['lost_or_wrong_status']}")
    print(f"  stuck:                 {out['stuck']}")
    converge = out["time_to_converge_s"]
    parts = out["converged_after_s"]
    print(f"  time to converge:      {'n/a (not converged)' if converge is None else f'{converge:.1f}s'} after the "
          f"last kill ({out['unconverged_at_last_kill']} things unconverged then; FineTuneJobs after "
          f"{parts.get('finetunejobs', 'n/a')}s, the rollout after {parts.get('rollout', 'n/a')}s, which includes "
          f"the rest of its canary pauses)")
    if d["rollouts_without_canary"] or d["finetunejobs_without_job"] or d["creation_errors"]:
        print(f"  note: rollouts without a canary Deployment seen {d['rollouts_without_canary']}; FineTuneJobs "
              f"without a Job seen {d['finetunejobs_without_job']}; creation errors {d['creation_errors']}")
    for title, key in (("duplicate Jobs", "job_duplicates"), ("duplicate trainer pods", "model_duplicates"),
                       ("duplicate canaries", "canary_duplicates"), ("wrong status", "wrong_status"),
                       ("status regressions", "status_regressions"), ("RecModelDeployment", "rmd_wrong"),
                       ("stuck", "stuck")):
        if d[key]:
            print(f"\n  {title}:")
            items = d[key].items() if isinstance(d[key], dict) else enumerate(d[key])
            for k, v in items:
                print(f"    {k}: {v}")
    if any(out["evidence"].values()):
        print(f"\n  operator log ({out['operator_log']}) lines naming each object above:")
        for name, lines in out["evidence"].items():
            print(f"    [{name}]")
            for line in lines:
                print(f"      {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--finetunejobs", type=int, default=20, help="FineTuneJobs created under chaos")
    parser.add_argument("--kills", type=int, default=24, help="operator SIGKILLs (at least; more while work is left)")
    parser.add_argument("--rollouts", type=int, default=3, help="canary rollouts (models of the lineage) under chaos")
    parser.add_argument("--create-interval", type=float, default=4.0, help="seconds between FineTuneJob creations")
    parser.add_argument("--kill-delay", type=float, nargs=2, default=(0.5, 5.0), metavar=("MIN", "MAX"),
                        help="a kill comes this many seconds (uniform) after the operator is live")
    parser.add_argument("--early-kill-share", type=float, default=0.25,
                        help="share of kills at 0.1-2 s after the start, whether live yet or not")
    parser.add_argument("--resync-seconds", type=float, default=60.0, help="the operator's resync (its default)")
    parser.add_argument("--converge-timeout", type=float, default=300.0, help="seconds after the last kill")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds watched after convergence")
    parser.add_argument("--seed", type=int, help="random seed (kill moments); printed")
    parser.add_argument("--cluster-dir", help="a hack/cluster dir to use (started if needed, left running)")
    args = parser.parse_args()
    if args.kills < 2:
        parser.error("--kills must be at least 2")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)

    from tests.support.cluster import Cluster
    from tests.support.operator import install_rbac

    t0 = time.monotonic()
    cluster_dir = Path(args.cluster_dir) if args.cluster_dir else Path(tempfile.mkdtemp(prefix="recops-chaos-"))
    env = {**os.environ, "RECOPS_CLUSTER_DIR": str(cluster_dir.resolve())}
    up = subprocess.run([str(ROOT / "hack" / "cluster"), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stderr[-3000:], file=sys.stderr)
        return 1
    cluster = Cluster(dir=cluster_dir.resolve(), process_node=False)
    workdir = Path(tempfile.mkdtemp(prefix="recops-chaos-work-"))
    out: dict[str, Any] = {}
    try:
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        install_rbac(cluster)
        print(f"cluster up in {time.monotonic() - t0:.0f}s; chaos (seed {seed}) ...", flush=True)
        out = run(cluster, cluster.dir, env, args, workdir, rng)
        out.update(seed=seed, total_s=round(time.monotonic() - t0, 1))
        report(out)
    finally:
        if not args.cluster_dir:
            subprocess.run([str(ROOT / "hack" / "cluster"), "down", "--purge"], env=env, capture_output=True)
        elif out.get("namespace"):
            cluster.kubectl("delete", "namespace", out["namespace"], "--wait=false", check=False)
    command = (f".venv/bin/python benchmarks/chaos.py -m {args.finetunejobs} --kills {args.kills} "
               f"--rollouts {args.rollouts} --seed {seed}")
    print(f"\nreproduce: {command}   (kill moments follow the seed; timings do not)")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"run took {time.monotonic() - t0:.0f}s; operator log kept in {workdir}")
    figures = {k: v for k, v in out.items() if k not in ("details", "evidence")}
    figures["problems"] = {k: v for k, v in out.get("details", {}).items()
                           if k not in ("kills", "canary_deployments_per_model", "stable_deployment_uids",
                                        "watch_errors", "unconverged_at_last_kill") and v}
    print(json.dumps(figures, sort_keys=True))
    clean = out and not (sum(out["duplicates"].values()) or out["lost_or_wrong_status"] or out["stuck"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
