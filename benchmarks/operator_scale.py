"""The FineTuneJob controller at scale, on the local control plane with kwok nodes.

For N FineTuneJobs (default: 100 and 1000) it prints

  - create-to-Job latency p50/p99: from the FineTuneJob's create call to its Job's ADDED event,
  - the time until all N Jobs exist (and, below it, until the last FineTuneJob's own creation was seen, in the
    operator's run and in a run creating the same FineTuneJobs with no operator running: the floor no operator
    can beat) and until all N FineTuneJobs are Succeeded (kwok runs the pods),
  - the same N trainer Jobs (as the builders make them) created directly with the client, with the
    same concurrency, as the lower bound (latency to the ADDED event; until all exist; until all
    Complete), and the ratio operator / direct,
  - the operator's peak RSS (VmHWM), status writes and reconcile passes per FineTuneJob,
  - the API writes per FineTuneJob, by resource and verb: the API server's apiserver_request_total
    before and after the operator's run, for the resources only the operator writes (the
    FineTuneJobs' own creation by this script left out; a Job's status belongs to the Job
    controller), plus the Events the operator posted.

The operator runs as `recops operator` (a subprocess with the ServiceAccount RBAC of config/rbac,
as in the cluster tests), with the default 60 s resync.

    .venv/bin/python benchmarks/operator_scale.py                    # N = 100 and 1000, own cluster
    .venv/bin/python benchmarks/operator_scale.py -n 100             # one size
    .venv/bin/python benchmarks/operator_scale.py --cluster-dir DIR  # reuse a running hack/cluster

Pods go to dedicated kwok nodes (tainted, with room for N pods each), so nothing else
competes for them and the node's pod limit does not bound the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

BENCH_LABEL = "recops.dev/bench"
CONCURRENCY = 16  # client threads creating objects (the operator's Kopf worker pool is 16 too)
TERMINATION = {"schemaVersion": 1, "modelUri": "/models/x", "modelVersion": "x", "metrics": {"auc": 0.8},
               "baseline": {}, "currentModel": None, "gatePassed": None, "error": None}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ftj_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
        "spec": {
            "task": "click-through", "dataset": {"uri": "/data/events.jsonl"}, "output": {"uri": "/models"},
            "backoffLimit": 0,
            "resources": {"nodeSelector": {BENCH_LABEL: "true"},
                          "tolerations": [{"key": BENCH_LABEL, "operator": "Exists", "effect": "NoSchedule"}]},
            "podTemplate": {"annotations": {"recops.dev/test-termination-message": json.dumps(TERMINATION)}},
        },
    }


def direct_job(namespace: str, name: str) -> dict[str, Any]:
    """The trainer Job the builders make for such a FineTuneJob, without an owner: what creating the Jobs without
    an operator costs."""
    from recops.api.finetunejob import FineTuneJob
    from recops.builders import finetunejob as builders
    from recops.builders.common import BuilderSettings

    manifest = ftj_manifest(name)
    manifest["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
    job = builders.trainer_job(FineTuneJob.model_validate(manifest), BuilderSettings(trainer_image="bench:1"))
    job["metadata"].pop("ownerReferences")
    job["spec"]["template"]["spec"]["serviceAccountName"] = "default"
    job["spec"]["template"]["spec"]["automountServiceAccountToken"] = False
    return job


class Watcher:
    """Local arrival time of objects in a namespace (ADDED) and of a predicate becoming true."""

    def __init__(self, list_call: Callable[..., Any], args: tuple[Any, ...], done: Callable[[dict[str, Any]], bool],
                 label_selector: str | None = None) -> None:
        self.list_call, self.args, self.done_when, self.selector = list_call, args, done, label_selector
        self.added: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        from kubernetes import client, watch

        version = None
        serializer = client.ApiClient()
        while not self.stop.is_set():
            stream = watch.Watch()
            try:
                kwargs: dict[str, Any] = {"timeout_seconds": 5, "resource_version": version}
                if self.selector:
                    kwargs["label_selector"] = self.selector
                for event in stream.stream(self.list_call, *self.args, **kwargs):
                    obj = event["object"]
                    obj = obj if isinstance(obj, dict) else serializer.sanitize_for_serialization(obj)
                    now = time.monotonic()
                    version = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    self.added.setdefault(name, now)
                    if name not in self.done and self.done_when(obj):
                        self.done[name] = now
                    if self.stop.is_set():
                        return
            except client.ApiException as error:
                if error.status != 410:
                    raise
                version = None

    def wait(self, what: dict[str, float], count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(what) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(what) >= count


def job_complete(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def ftj_succeeded(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == "Succeeded"


def create_all(create: Callable[[str], Any], names: list[str]) -> dict[str, float]:
    """Create every object with CONCURRENCY threads; returns each one's local start time."""
    started: dict[str, float] = {}

    def one(name: str) -> None:
        started[name] = time.monotonic()
        for attempt in range(5):
            try:
                create(name)
                return
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, names))
    return started


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# What the operator may write for a FineTuneJob (core group ""): while it runs nothing else writes these
# (the namespace, with its default ServiceAccount and CA ConfigMap, is created before the count starts).
OPERATOR_WRITTEN = {("recops.dev", "finetunejobs"), ("", "configmaps"), ("", "serviceaccounts"), ("", "services"),
                    ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
                    ("batch", "jobs")}
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
# What a FineTuneJob pass may read (watches, the operator's and this script's, are the verb WATCH, not counted).
OPERATOR_READ = {("recops.dev", "finetunejobs"), ("batch", "jobs"), ("", "pods"), ("", "events")}
READ_VERBS = ("GET", "LIST")


def api_writes(api: Any, verbs: tuple[str, ...] = WRITE_VERBS,
               resources: set[tuple[str, str]] = OPERATOR_WRITTEN) -> dict[str, float]:
    """apiserver_request_total of the writes to OPERATOR_WRITTEN (or of other verbs and resources), as
    'VERB resource[/subresource]' -> count."""
    from prometheus_client.parser import text_string_to_metric_families

    method, url, headers, body, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    text = api.call_api(method, url, header_params=headers, body=body).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_total") or labels.get("verb") not in verbs:
                continue
            if (labels.get("group", ""), labels.get("resource")) not in resources:
                continue
            if labels.get("resource") == "jobs" and labels.get("subresource") == "status":
                continue  # the Job controller's
            key = f"{labels['verb']} {labels['resource']}" + (f"/{labels['subresource']}" if labels.get("subresource")
                                                             else "")
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def operator_events(cluster: Any, namespace: str) -> int:
    """Events the operator posted in the namespace (its reporting component)."""
    from kubernetes import client

    events = client.CoreV1Api(cluster.api_client()).list_namespaced_event(namespace).items
    return sum(1 for e in events if (e.reporting_component or (e.source.component if e.source else "")) ==
               "recops-operator")


def ensure_nodes(cluster: Any, n: int) -> list[str]:
    names = []
    for i in range(2):
        name = f"kwok-bench-{i}"
        capacity = {"cpu": "1000", "memory": "4Ti", "pods": str(n + 50)}
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake",
                                                           "node.alpha.kubernetes.io/ttl": "0"},
                             "labels": {"kubernetes.io/hostname": name, "type": "kwok", BENCH_LABEL: "true"}},
                "spec": {"taints": [{"key": BENCH_LABEL, "value": "true", "effect": "NoSchedule"}]},
                "status": {"capacity": capacity, "allocatable": capacity}}
        cluster.kubectl("delete", "node", name, "--wait=true", check=False)
        cluster.kubectl("create", "-f", "-", input=json.dumps(node))
        names.append(name)
    for name in names:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = cluster.kubectl("get", "node", name, "-o",
                                  "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            if out.stdout.strip() == "True":
                break
            time.sleep(0.5)
    return names


def run_size(cluster: Any, n: int, workdir: Path, timeout: float) -> dict[str, Any]:
    from kubernetes import client
    from tests.support.operator import running_operator

    api = cluster.api_client()
    batch = client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)
    names = [f"bench-{i:04d}" for i in range(n)]
    nodes = ensure_nodes(cluster, n)
    out: dict[str, Any] = {"n": n}

    # --- lower bound: the Jobs created directly -------------------------------------------------
    direct_ns = cluster.create_namespace(f"bench-direct-{n}")
    jobs = Watcher(batch.list_namespaced_job, (direct_ns,), job_complete)
    time.sleep(1)
    t0 = time.monotonic()
    started = create_all(lambda name: batch.create_namespaced_job(direct_ns, direct_job(direct_ns, name)), names)
    all_exist = jobs.wait(jobs.added, n, timeout)
    t_exist = time.monotonic() - t0
    all_done = jobs.wait(jobs.done, n, timeout)
    t_done = time.monotonic() - t0
    jobs.stop.set()
    latencies = [jobs.added[x] - started[x] for x in names if x in jobs.added]
    out["direct"] = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                     "all_exist_s": t_exist if all_exist else None, "all_done_s": t_done if all_done else None,
                     "exist": len(jobs.added), "done": len(jobs.done)}
    # Its deletion (N Jobs and pods) must not load the control plane while the operator is measured.
    cluster.kubectl("delete", "namespace", direct_ns, f"--timeout={int(timeout)}s", check=False)

    # --- the floor: the FineTuneJobs alone, created the same way with no operator running ------------
    floor_ns = cluster.create_namespace(f"bench-floor-{n}")
    created = Watcher(custom.list_namespaced_custom_object, ("recops.dev", "v1alpha1", floor_ns, "finetunejobs"),
                      lambda _: True)
    time.sleep(1)
    t0 = time.monotonic()
    create_all(lambda name: custom.create_namespaced_custom_object(
        "recops.dev", "v1alpha1", floor_ns, "finetunejobs", ftj_manifest(name)), names)
    out["floor"] = {"all_exist_s": time.monotonic() - t0 if created.wait(created.added, n, timeout) else None}
    created.stop.set()
    cluster.kubectl("delete", "namespace", floor_ns, f"--timeout={int(timeout)}s", check=False)

    # --- the operator ---------------------------------------------------------------------------
    ns = cluster.create_namespace(f"bench-operator-{n}")
    with running_operator(cluster, workdir / f"operator-{n}", resync_seconds=60.0) as op:
        op_jobs = Watcher(batch.list_namespaced_job, (ns,), job_complete)
        ftjs = Watcher(custom.list_namespaced_custom_object, ("recops.dev", "v1alpha1", ns, "finetunejobs"),
                       ftj_succeeded)
        time.sleep(1)
        writes_before = api_writes(api)
        reads_before = api_writes(api, READ_VERBS, OPERATOR_READ)
        t0 = time.monotonic()
        started = create_all(lambda name: custom.create_namespaced_custom_object(
            "recops.dev", "v1alpha1", ns, "finetunejobs", ftj_manifest(name)), names)
        all_exist = op_jobs.wait(op_jobs.added, n, timeout)
        t_exist = time.monotonic() - t0
        all_done = ftjs.wait(ftjs.done, n, timeout)
        t_done = time.monotonic() - t0
        op_jobs.stop.set()
        ftjs.stop.set()
        metrics = op.metrics()
        rss = peak_rss_mib(op.process.pid)
        writes_after = api_writes(api)
        reads_after = api_writes(api, READ_VERBS, OPERATOR_READ)
        events = operator_events(cluster, ns)

    writes = {k: v - writes_before.get(k, 0.0) for k, v in writes_after.items() if v - writes_before.get(k, 0.0)}
    writes["POST finetunejobs"] = writes.get("POST finetunejobs", 0.0) - n  # this script's creates
    writes = {k: v / n for k, v in sorted(writes.items()) if v > 0}

    def total(metric: str) -> float:
        return sum(v for k, v in metrics.items() if k.split("{")[0] == metric)

    latencies = [op_jobs.added[x] - started[x] for x in names if x in op_jobs.added]
    out["operator"] = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                       "all_exist_s": t_exist if all_exist else None, "all_done_s": t_done if all_done else None,
                       "exist": len(op_jobs.added), "done": len(ftjs.done), "peak_rss_mib": rss,
                       # The floor of the operator's path: when the last FineTuneJob's own creation was seen.
                       "ftjs_exist_s": max(ftjs.added.values()) - t0 if len(ftjs.added) >= n else None,
                       "status_writes_per_ftj": total("recops_operator_status_writes_total") / n,
                       "cpu_seconds": total("process_cpu_seconds_total"),
                       "reconciles_per_ftj": total("recops_operator_reconciles_total") / n,
                       "errors": total("recops_operator_reconcile_errors_total"),
                       "writes_per_ftj": writes, "api_writes_per_ftj": sum(writes.values()),
                       "events_per_ftj": events / n,
                       "reads_per_ftj": {k: (v - reads_before.get(k, 0.0)) / n for k, v in sorted(reads_after.items())
                                         if v - reads_before.get(k, 0.0) > 0}}
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    for node in nodes:
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)
    return out


def fmt(value: float | None, unit: str = "s") -> str:
    return "n/a" if value is None else f"{value:.2f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def report(result: dict[str, Any]) -> None:
    d, o = result["direct"], result["operator"]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.1f}x" if a is not None and b else "n/a"

    print(f"\nN = {result['n']} FineTuneJobs")
    print(f"{'':32} {'operator':>10} {'direct':>10} {'ratio':>8}")
    print(f"{'create-to-Job latency p50':32} {fmt(o['p50']):>10} {fmt(d['p50']):>10} {ratio(o['p50'], d['p50']):>8}")
    print(f"{'create-to-Job latency p99':32} {fmt(o['p99']):>10} {fmt(d['p99']):>10} {ratio(o['p99'], d['p99']):>8}")
    print(f"{'until all Jobs exist':32} {fmt(o['all_exist_s']):>10} {fmt(d['all_exist_s']):>10} "
          f"{ratio(o['all_exist_s'], d['all_exist_s']):>8}")
    print(f"{'  (all FineTuneJobs created)':32} {fmt(o['ftjs_exist_s']):>10} {fmt(result['floor']['all_exist_s']):>10}"
          f"  <- the second: created alone, no operator running")
    print(f"{'until all Succeeded/Complete':32} {fmt(o['all_done_s']):>10} {fmt(d['all_done_s']):>10} "
          f"{ratio(o['all_done_s'], d['all_done_s']):>8}")
    print(f"operator: peak RSS {o['peak_rss_mib']:.0f} MiB; {o['cpu_seconds']:.0f} CPU seconds; "
          f"{o['status_writes_per_ftj']:.2f} status writes and "
          f"{o['reconciles_per_ftj']:.1f} reconcile passes per FineTuneJob; {o['errors']:.0f} errors; "
          f"{o['exist']}/{result['n']} Jobs, {o['done']}/{result['n']} Succeeded")
    print(f"operator API writes per FineTuneJob: {o['api_writes_per_ftj']:.2f} "
          f"({', '.join(f'{k} {v:.2f}' for k, v in o['writes_per_ftj'].items())}) "
          f"+ {o['events_per_ftj']:.2f} Events")
    print(f"API reads per FineTuneJob (GET and LIST while the operator ran): {sum(o['reads_per_ftj'].values()):.2f} "
          f"({', '.join(f'{k} {v:.2f}' for k, v in o['reads_per_ftj'].items())})")
    if d["exist"] < result["n"] or d["done"] < result["n"]:
        print(f"direct: only {d['exist']} Jobs seen, {d['done']} Complete before the timeout")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, action="append", help="number of FineTuneJobs (repeatable; default 100, 1000)")
    parser.add_argument("--cluster-dir", help="a hack/cluster dir to use (started if needed, left running)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each phase")
    args = parser.parse_args()
    sizes = args.n or [100, 1000]

    from tests.support.cluster import Cluster
    from tests.support.operator import install_rbac

    cluster_dir = Path(args.cluster_dir) if args.cluster_dir else Path(tempfile.mkdtemp(prefix="recops-bench-"))
    env = {**os.environ, "RECOPS_CLUSTER_DIR": str(cluster_dir)}
    up = subprocess.run([str(ROOT / "hack" / "cluster"), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stderr[-3000:], file=sys.stderr)
        return 1
    cluster = Cluster(dir=cluster_dir, process_node=False)
    try:
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        install_rbac(cluster)
        with tempfile.TemporaryDirectory(prefix="recops-bench-") as work:
            results = []
            for n in sizes:
                print(f"running N = {n} ...", flush=True)
                results.append(run_size(cluster, n, Path(work), args.timeout))
                report(results[-1])
        print("\n" + json.dumps(results, indent=1))
        print(f"\nreproduce: .venv/bin/python benchmarks/operator_scale.py {' '.join(f'-n {n}' for n in sizes)}")
        print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if not args.cluster_dir:
            subprocess.run([str(ROOT / "hack" / "cluster"), "down", "--purge"], env=env, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
