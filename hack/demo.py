#!/usr/bin/env python3
"""`make demo`: the whole recops loop on this machine, and `make demo-down`.

up:      set up what is missing, start the local control plane with the process node,
         Prometheus (scraping the process node's file_sd) and the operator (installed with
         the Helm chart; the operator process itself runs here under the chart's
         ServiceAccount token, see below), apply examples/quickstart/, drive shoppers'
         traffic, switch on the shop's preference shift and follow the loop to its end.
down:    stop everything `up` started (pid files under the demo dir) and the control plane.
traffic: (internal) the shoppers: a background process started by `up`.

Where the operator runs: by default as a local process, so a change to operator/ needs no
image build: `up` installs the chart with operator.replicas=0 (CRDs, RBAC, ServiceAccount,
Services) and runs `recops operator` with a token of the chart's ServiceAccount: exactly
the permissions the chart grants, nothing more. With --operator pod (DEMO_OPERATOR=pod) the
chart's own operator Deployment runs instead, from localhost/recops-operator:dev (built by
hack/images, seconds when nothing changed), which the process node runs with podman on the
process node, in-cluster config and all.

Fast mode (--fast or RECOPS_DEMO_FAST=1): a tiny random BERT instead of MiniLM, fewer rows,
shorter windows; the end-to-end test uses it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
NAMESPACE = "recops-demo"
RMD = "shop-ranker"
POLICY = "shop-ranker-ctr"
LINEAGE = "shop-ranker"
RELEASE = "recops"
OPERATOR_IMAGE = "localhost/recops-operator:dev"  # what hack/images builds
OPERATOR_NAMESPACE = "recops-system"
# The synthetic shop; the traffic generator uses the same world (same seed and sizes).
SHOP = {"users": 200, "products": 300, "seed": 0}


def demo_dir() -> Path:
    return Path(os.environ.get("RECOPS_DEMO_DIR") or Path.home() / ".cache" / "recops" / "demo")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Settings:
    """The fast mode's changes to examples/quickstart/ (None: as the files say) and the demo's own timing."""

    fast: bool
    sessions: int = 1500
    max_rows: int | None = None
    max_length: int | None = None
    monitor_interval: str | None = None
    baseline_window: str | None = None
    ctr_window: str | None = None
    ctr_for: str | None = None
    ctr_min_samples: int | None = None
    canary_pause: str | None = None
    canary_min_impressions: int | None = None
    canary_max_ctr_drop: float | None = None
    rate: float = 12.0  # shoppers' requests a second: enough for the retrain's exploration slice (docs/finetunejob.md)
    timeouts: dict[str, float] = field(default_factory=lambda: {
        "train": 1800, "serve": 600, "baseline": 300, "breach": 300, "retrain": 1800, "rollout": 900})

    @classmethod
    def make(cls, fast: bool) -> Settings:
        if not fast:
            return cls(fast=False)
        return cls(fast=True, sessions=300, max_rows=1500, max_length=24, monitor_interval="2s",
                   baseline_window="20s", ctr_window="20s", ctr_for="4s", ctr_min_samples=120,
                   canary_pause="10s", canary_min_impressions=60, canary_max_ctr_drop=0.5, rate=10.0,
                   timeouts={"train": 600, "serve": 300, "baseline": 120, "breach": 180, "retrain": 600,
                             "rollout": 300})

    @staticmethod
    def float_onnx(spec: dict[str, Any]) -> None:
        """The fast mode's tiny random-weight model ranks far from itself in int8 (a Spearman near 0, so the job
        would keep it in full precision): it optimises to float32 ONNX, which ranks as the model does, so the
        optimised form is what the cluster serves."""
        if spec.get("optimize"):
            spec["optimize"]["quantization"] = "none"

    def tune(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The manifest with this mode's numbers (only those that are set)."""
        def put(obj: dict[str, Any], path: str, value: Any) -> None:
            if value is None:
                return
            *parents, last = path.split(".")
            for key in parents:
                obj = obj[int(key)] if isinstance(obj, list) else obj.setdefault(key, {})
            obj[last] = value

        spec = manifest.get("spec") or {}
        kind = manifest.get("kind")
        if kind == "FineTuneJob":
            put(spec, "dataset.maxRows", self.max_rows)
            put(spec, "training.maxLength", self.max_length)
            if self.fast:
                # A tiny random model on 1,500 rows cannot be expected to beat BM25, and without a first model
                # nothing serves: the fast mode drops the first job's gate. The retrain keeps its gate.
                spec.get("evaluation", {}).pop("gate", None)
                self.float_onnx(spec)
        elif kind == "RecModelDeployment":
            put(spec, "rollout.canary.steps.0.pause", self.canary_pause)
            put(spec, "rollout.canary.analysis.minImpressions", self.canary_min_impressions)
            put(spec, "rollout.canary.analysis.rules.0.threshold.relativeDecrease", self.canary_max_ctr_drop)
        elif kind == "MonitorPolicy":
            put(spec, "interval", self.monitor_interval)
            put(spec, "baselineWindow", self.baseline_window)
            put(spec, "rules.0.window", self.ctr_window)
            put(spec, "rules.0.for", self.ctr_for)
            put(spec, "rules.0.minSamples", self.ctr_min_samples)
            put(spec, "retrain.template.spec.dataset.maxRows", self.max_rows)
            put(spec, "retrain.template.spec.training.maxLength", self.max_length)
            if self.fast:
                self.float_onnx(((spec.get("retrain") or {}).get("template") or {}).get("spec") or {})
        return manifest


# --- processes ---------------------------------------------------------------------------
def run(*argv: str, env: dict[str, str] | None = None, check: bool = True, capture: bool = True,
        timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), env=env, text=True, capture_output=capture, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stdout or ''}{result.stderr or ''}")
    return result


def start_background(name: str, argv: list[str], env: dict[str, str]) -> int:
    """A detached process (own session, so `down` can end its whole group) with a pid file."""
    runs = demo_dir() / "run"
    logs = demo_dir() / "logs"
    runs.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=REPO)
    (runs / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_background(name: str) -> None:
    pid_file = demo_dir() / "run" / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def free_port() -> int:
    """A free port below Linux's ephemeral range, whose ports outgoing connections take (as hack/cluster's)."""
    import random
    import socket

    for port in random.sample(range(20000, 32768), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


# --- setup -------------------------------------------------------------------------------
def ensure_binaries() -> None:
    cache = Path(os.environ.get("RECOPS_BIN_CACHE") or Path.home() / ".cache" / "recops" / "bin")
    if not (cache.exists() and any(cache.glob("k8s-*"))):
        say("first run: building the control-plane binaries with Go (kube-apiserver, etcd, kwok, helm, ...) "
            "once into ~/.cache/recops/bin; about 10 minutes on an idle 2-core machine, up to 30 when busy")
    run(str(REPO / "hack" / "build-binaries"), capture=False, timeout=None)


def ensure_prometheus() -> str:
    path = shutil.which("prometheus")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing Prometheus (Debian's package, apt-get install prometheus; about a minute)")
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus", capture=False, timeout=None)
        path = shutil.which("prometheus")
    if not path:
        raise SystemExit("Prometheus is missing: install it (e.g. `sudo apt-get install prometheus`) and rerun")
    return path


def tool_path() -> str:
    paths = run(str(REPO / "hack" / "build-binaries"), "--paths").stdout.split()
    return ":".join([str(VENV_BIN), *paths, os.environ.get("PATH", "")])


def cluster_env(env: dict[str, str]) -> dict[str, str]:
    """Start (or keep) the control plane with the process node; its export lines into env."""
    out = run(str(REPO / "hack" / "cluster"), "up", "--process-node", env=env, timeout=900).stdout
    result = dict(env)
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            result[key] = value.strip().strip("'\"")
    return result


def kubectl(env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(["kubectl", *args], env=env, text=True, capture_output=True, input=stdin, timeout=120)
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def get_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = kubectl(env, "get", *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


def start_prometheus(env: dict[str, str], binary: str) -> str:
    state = demo_dir() / "prometheus"
    url_file = state / "url"
    if url_file.exists() and (demo_dir() / "run" / "prometheus.pid").exists() and \
            alive(int((demo_dir() / "run" / "prometheus.pid").read_text())):
        return url_file.read_text().strip()
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
              "scrape_configs": [{"job_name": "recops-pods", "file_sd_configs": [
                  {"files": [env["RECOPS_PROMETHEUS_SD_FILE"]], "refresh_interval": "2s"}]}]}
    (state / "prometheus.yml").write_text(yaml.safe_dump(config))
    start_background("prometheus", [binary, f"--config.file={state / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={state / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                     env)
    url = f"http://127.0.0.1:{port}"
    wait(lambda: http_ok(f"{url}/-/ready"), 60, "Prometheus ready")
    url_file.write_text(url)
    return url


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait(predicate: Any, timeout: float, what: str, on_tick: Any = None, tick: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}; logs under {demo_dir() / 'logs'}")
        if on_tick:
            on_tick()
        time.sleep(tick)


def operator_pod_values() -> dict[str, Any]:
    """The chart's operator Deployment from the locally built image, on the process node (host network:
    its ports must be free here)."""
    say(f"building {OPERATOR_IMAGE} (hack/images operator; seconds when nothing changed)")
    run(str(REPO / "hack" / "images"), "operator", timeout=1800)
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    return {"replicas": 1, "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "resyncSeconds": 5, "metricsPort": free_port(), "healthPort": free_port(),
            "nodeSelector": {"kubernetes.io/hostname": "recops-local"},
            "tolerations": [{"key": "recops.dev/process-node", "operator": "Exists", "effect": "NoSchedule"}]}


def install_operator(env: dict[str, str], prometheus_url: str, in_pod: bool) -> None:
    helm = shutil.which("helm", path=env["PATH"])
    if not helm:
        raise SystemExit("helm is missing: hack/build-binaries builds it")
    operator_values = operator_pod_values() if in_pod else {"replicas": 0}
    say("installing the operator with the Helm chart (charts/recops: CRDs, RBAC, ServiceAccount)")
    # Helm installs CRDs only when missing and never upgrades them: apply them first, as docs/install.md says.
    kubectl(env, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "recops" / "crds"))
    if in_pod:
        stop_background("operator")  # a local one from an earlier `up`: never two operators
    started = time.monotonic()
    run(helm, "upgrade", "--install", RELEASE, str(REPO / "charts" / "recops"), "-n", OPERATOR_NAMESPACE,
        "--create-namespace", "--set-json", f"operator={json.dumps(operator_values)}",
        "--set", f"prometheus.url={prometheus_url}", "--wait", "--timeout", "300s", env=env)
    if in_pod:
        say(f"the chart's operator Deployment runs from {OPERATOR_IMAGE} on the process node (podman): Ready "
            f"{time.monotonic() - started:.0f}s after helm started; its log: kubectl logs -n {OPERATOR_NAMESPACE} "
            f"deploy/{RELEASE}-operator")
        return
    if (demo_dir() / "run" / "operator.pid").exists() and alive(int((demo_dir() / "run" / "operator.pid").read_text())):
        return
    say("the chart's operator Deployment is scaled to 0 and `recops operator` runs here with a token of the "
        "chart's ServiceAccount (--operator pod runs the Deployment from the operator image instead)")
    token = kubectl(env, "create", "token", f"{RELEASE}-operator", "-n", OPERATOR_NAMESPACE, "--duration=24h").strip()
    admin = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    server = admin["clusters"][0]["cluster"]
    kubeconfig = {"apiVersion": "v1", "kind": "Config",
                  "clusters": [{"name": "recops-local", "cluster": server}],
                  "users": [{"name": "recops-operator", "user": {"token": token}}],
                  "contexts": [{"name": "operator", "context": {"cluster": "recops-local", "user": "recops-operator"}}],
                  "current-context": "operator"}
    path = demo_dir() / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    metrics_port, health_port = free_port(), free_port()
    operator_env = {k: v for k, v in env.items() if k != "KUBECONFIG"}
    start_background("operator", [str(VENV_BIN / "recops"), "operator", "--kubeconfig", str(path),
                                  "--prometheus-url", prometheus_url, "--resync-seconds", "5",
                                  "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
                                  "--liveness", f"http://127.0.0.1:{health_port}/healthz"], operator_env)
    wait(lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"), 120, "the operator's /healthz")


# --- the quickstart ----------------------------------------------------------------------
def quickstart_values(settings: Settings, base_model: str) -> dict[str, str]:
    """The placeholders of examples/quickstart/."""
    return {"DEMO_DIR": str(demo_dir()), "BASE_MODEL": base_model}


def render(name: str, values: dict[str, str], settings: Settings) -> str:
    """One file of examples/quickstart/ with its placeholders filled and the mode's numbers."""
    text = string.Template((REPO / "examples" / "quickstart" / name).read_text()).substitute(values)
    # JSON documents: kubectl's YAML parser would read some strings PyYAML leaves unquoted as numbers.
    return "\n---\n".join(json.dumps(settings.tune(doc)) for doc in yaml.safe_load_all(text) if doc)


def start_afresh(env: dict[str, str]) -> None:
    """A second `make demo` runs the loop again from the start: the previous run's objects, models,
    event log and counts go (the synthetic shop's data and the fast mode's tiny model stay)."""
    stop_background("traffic")
    if get_json(env, "namespace", NAMESPACE):
        say(f"deleting the previous run's namespace {NAMESPACE}")
        kubectl(env, "delete", "namespace", NAMESPACE, "--wait", "--timeout=180s")
    for stale in ("event-log", f"models/{NAMESPACE}"):
        shutil.rmtree(demo_dir() / stale, ignore_errors=True)
    for stale in ("traffic.json", "summary.json", "shift"):
        (demo_dir() / stale).unlink(missing_ok=True)


def prepare_data(env: dict[str, str], settings: Settings) -> str:
    shop = demo_dir() / "shop"
    if not (shop / "events.jsonl").exists():
        say(f"writing the synthetic shop ({settings.sessions} search sessions) to {shop}")
        run(str(VENV_BIN / "recops"), "data", "synth", "--out", str(shop), "--format", "jsonl",
            "--users", str(SHOP["users"]), "--products", str(SHOP["products"]), "--seed", str(SHOP["seed"]),
            "--sessions", str(settings.sessions), env=env)
    if not settings.fast:
        return "builtin://all-minilm-l6-v2"
    base = demo_dir() / "models" / "tiny-bert"
    if not (base / "config.json").exists():
        say("fast mode: a tiny random BERT (with the MiniLM tokenizer) instead of MiniLM")
        sys.path.insert(0, str(REPO))
        from tests.support.models import tiny_base_model

        tiny_base_model(base)
    return str(base)


# --- progress ----------------------------------------------------------------------------
class Progress:
    """One line of the live table every few seconds: training, rollout, CTR by track, policy."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.last_print = 0.0
        self.previous: dict[str, dict[str, int]] = {}
        self.header_printed = False

    def ctr_by_track(self) -> dict[str, str]:
        path = demo_dir() / "traffic.json"
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        out = {}
        for track, counts in stats.get("tracks", {}).items():
            before = self.previous.get(track, {"impressions": 0, "clicks": 0})
            impressions = counts["impressions"] - before["impressions"]
            clicks = counts["clicks"] - before["clicks"]
            out[track] = f"{clicks / impressions:.3f}" if impressions > 0 else "-"
        self.previous = {t: dict(c) for t, c in stats.get("tracks", {}).items()}
        return out

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_print < 5:
            return
        self.last_print = time.monotonic()
        if not self.header_printed:
            print(f"{'time':8} {'training':40} {'stable':24} {'canary':24} {'weight':>6} "
                  f"{'ctr stable':>10} {'ctr canary':>10}  policy", flush=True)
            self.header_printed = True
        jobs = get_json(self.env, "finetunejobs", "-n", NAMESPACE).get("items", [])
        training = "-"
        for job in sorted(jobs, key=lambda j: j["metadata"]["creationTimestamp"]):
            status = job.get("status") or {}
            progress = status.get("progress") or {}
            phase = status.get("phase", "Pending")
            if phase not in ("Succeeded", "Failed") or job is jobs[-1]:
                step = f" {progress.get('step', 0)}/{progress.get('totalSteps', '?')}" if progress else ""
                training = f"{job['metadata']['name']} {phase}{step}"
        rmd = (get_json(self.env, "recmodeldeployment", RMD, "-n", NAMESPACE).get("status")) or {}
        stable = (rmd.get("stable") or {}).get("modelVersion", "-")
        canary = (rmd.get("canary") or {}).get("modelVersion", "-")
        weight = rmd.get("canaryWeight") or 0 if rmd.get("canary") else 0
        policy = (get_json(self.env, "monitorpolicy", POLICY, "-n", NAMESPACE).get("status")) or {}
        rules = {r.get("name"): r for r in policy.get("rules") or []}
        ctr_rule = rules.get("ctr", {})
        policy_text = ctr_rule.get("state", "-")
        if ctr_rule.get("value") is not None:
            policy_text += f" ctr={ctr_rule['value']:.3f}"
        if (policy.get("baseline") or {}).get("values", {}).get("ctr") is not None:
            policy_text += f" baseline={policy['baseline']['values']['ctr']:.3f}"
        ctr = self.ctr_by_track()
        print(f"{time.strftime('%H:%M:%S'):8} {training[:40]:40} {stable[:24]:24} {canary[:24]:24} {weight!s:>6} "
              f"{ctr.get('stable', '-'):>10} {ctr.get('canary', '-'):>10}  {policy_text}", flush=True)


def ftj_done(env: dict[str, str], name: str) -> dict[str, Any] | None:
    job = get_json(env, "finetunejob", name, "-n", NAMESPACE)
    status = job.get("status") or {}
    if status.get("phase") == "Failed":
        raise SystemExit(f"FineTuneJob {name} failed: {json.dumps(status.get('conditions'), indent=1)}\n"
                         f"pod logs: kubectl logs -n {NAMESPACE} -l recops.dev/finetunejob={name}")
    return status if status.get("phase") == "Succeeded" else None


def rmd_status(env: dict[str, str]) -> dict[str, Any]:
    return (get_json(env, "recmodeldeployment", RMD, "-n", NAMESPACE).get("status")) or {}


def policy_status(env: dict[str, str]) -> dict[str, Any]:
    return (get_json(env, "monitorpolicy", POLICY, "-n", NAMESPACE).get("status")) or {}


def up(args: argparse.Namespace) -> int:
    settings = Settings.make(args.fast or os.environ.get("RECOPS_DEMO_FAST") == "1")
    phases: dict[str, float] = {}
    started = time.monotonic()

    def phase_done(name: str, since: float) -> float:
        phases[name] = time.monotonic() - since
        say(f"{name}: {phases[name]:.0f}s")
        return time.monotonic()

    demo_dir().mkdir(parents=True, exist_ok=True)
    mark = time.monotonic()
    ensure_binaries()
    prometheus_binary = ensure_prometheus()
    env = dict(os.environ)
    env["PATH"] = tool_path()
    env["RECOPS_CLUSTER_DIR"] = str(demo_dir() / "cluster")
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    say(f"starting the local control plane with the process node (state in {env['RECOPS_CLUSTER_DIR']})")
    env = cluster_env(env)
    prometheus_url = start_prometheus(env, prometheus_binary)
    say(f"Prometheus at {prometheus_url}, scraping the process node's pods ({env['RECOPS_PROMETHEUS_SD_FILE']})")
    install_operator(env, prometheus_url, in_pod=args.operator == "pod")
    mark = phase_done("setup (control plane, Prometheus, operator)", mark)

    start_afresh(env)
    base_model = prepare_data(env, settings)
    values = quickstart_values(settings, base_model)
    for name in sorted(p.name for p in (REPO / "examples" / "quickstart").glob("*.yaml")):
        if name.startswith("30-"):
            continue  # the MonitorPolicy comes once the first model serves
        kubectl(env, "apply", "-f", "-", stdin=render(name, values, settings))
    say(f"applied examples/quickstart/ (FineTuneJob shop-ranker-v1, RecModelDeployment {RMD})")
    progress = Progress(env)
    first = wait(lambda: ftj_done(env, "shop-ranker-v1"), settings.timeouts["train"], "the first fine-tune",
                 on_tick=progress)
    progress(force=True)
    mark = phase_done("first fine-tune", mark)
    if first.get("gatePassed") is False:
        raise SystemExit(f"the first model did not pass its gate, so nothing will serve: {first.get('message')}\n"
                         f"its model card: {(first.get('model') or {}).get('uri')}/README.md")

    wait(lambda: rmd_status(env).get("phase") == "Serving" and (rmd_status(env).get("stable") or {}).get("modelVersion"),
         settings.timeouts["serve"], "the first model serving", on_tick=progress)
    say(f"serving {rmd_status(env)['stable']['modelVersion']}; shoppers start (traffic log: {demo_dir() / 'logs'})")
    (demo_dir() / "shift").unlink(missing_ok=True)
    (demo_dir() / "traffic.json").unlink(missing_ok=True)
    if not ((demo_dir() / "run" / "traffic.pid").exists() and alive(int((demo_dir() / "run" / "traffic.pid").read_text()))):
        start_background("traffic", [str(VENV_BIN / "python"), str(Path(__file__).resolve()), "traffic",
                                     "--rate", str(settings.rate)], env)
    kubectl(env, "apply", "-f", "-", stdin=render("30-monitorpolicy.yaml", values, settings))
    mark = phase_done("first model serving", mark)

    baseline = wait(lambda: (policy_status(env).get("baseline") or {}).get("capturedAt") and policy_status(env)["baseline"],
                    settings.timeouts["baseline"], "the MonitorPolicy's baseline", on_tick=progress)
    ctr_before = baseline.get("values", {}).get("ctr")
    say(f"baseline captured: ctr={ctr_before}")
    mark = phase_done("baseline", mark)

    say("switching on the shop's preference shift: shoppers' tastes change")
    (demo_dir() / "shift").write_text("on\n")
    wait(lambda: [j for j in get_json(env, "finetunejobs", "-n", NAMESPACE).get("items", [])
                  if j["metadata"]["name"] != "shop-ranker-v1"], settings.timeouts["breach"],
         "the CTR rule to breach and a retrain to start", on_tick=progress)
    breach = policy_status(env)
    ctr_breach = next((r.get("value") for r in breach.get("rules") or [] if r.get("name") == "ctr"), None)
    retrain = (breach.get("lastRetrain") or {})
    say(f"retraining: {retrain.get('fineTuneJob')} ({retrain.get('reason')})")
    mark = phase_done("shift to breach", mark)

    retrain_name = retrain.get("fineTuneJob") or next(j["metadata"]["name"] for j in get_json(
        env, "finetunejobs", "-n", NAMESPACE)["items"] if j["metadata"]["name"] != "shop-ranker-v1")
    second = wait(lambda: ftj_done(env, retrain_name), settings.timeouts["retrain"], "the retrain", on_tick=progress)
    mark = phase_done("retrain", mark)

    new_version = (second.get("model") or {}).get("version")
    if second.get("gatePassed") is False:
        # The gate keeps a model that loses to what the shop has off the canary: the stable model serves on.
        outcome = "GateFailed"
        say(f"the retrained model {new_version} did not pass its gate: {second.get('message')}")
        time.sleep(5)  # a pass of the RecModelDeployment controller would have started a canary by now
        status = rmd_status(env)
        kept = (status.get("stable") or {}).get("modelVersion")
        if kept != (first.get("model") or {}).get("version") or status.get("canary"):
            raise SystemExit(f"a model that failed its gate reached the RecModelDeployment: {json.dumps(status)}")
        say(f"{RMD} keeps serving {kept}; no canary")
    else:
        outcome = wait(lambda: rollout_outcome(env, new_version), settings.timeouts["rollout"],
                       f"the canary of {new_version} to be promoted or rolled back", on_tick=progress)
    progress(force=True)
    mark = phase_done("canary rollout", mark)
    ctr_now = None
    if outcome == "Promoted":
        # The "after" figure: the promoted model's CTR in Prometheus over a window of its own traffic.
        # The stable Deployment rolls to the promoted model: measure once its new pod serves.
        wait(lambda: promoted_pod_ready(env, new_version), settings.timeouts["serve"],
             f"a stable pod serving {new_version}", on_tick=progress)
        window = yaml.safe_load(render("30-monitorpolicy.yaml", values, settings))["spec"]["baselineWindow"]
        say(f"measuring the promoted model's CTR in Prometheus over {window} (the policy's baselineWindow) of traffic")
        time.sleep(go_seconds(window) + 5)
        ctr_now = prometheus_ctr(prometheus_url, new_version, window)
        mark = phase_done("measuring the promoted model", mark)
    summary = {
        "outcome": outcome, "firstModel": first.get("model"), "firstMetrics": first.get("metrics"),
        "firstBaseline": first.get("baseline"), "firstGatePassed": first.get("gatePassed"),
        "retrainedModel": second.get("model"), "retrainedMetrics": second.get("metrics"),
        "retrainedBaseline": second.get("baseline"), "retrainedGatePassed": second.get("gatePassed"),
        "retrainedCurrentModel": second.get("currentModel"), "retrainedDebiased": second.get("debiased"),
        "firstOptimization": first.get("optimization"), "retrainedOptimization": second.get("optimization"),
        "firstMargins": model_margins(first.get("model")), "retrainedMargins": model_margins(second.get("model")),
        "servedFormats": served_formats(prometheus_url),
        "ctrBaseline": ctr_before, "ctrAtBreach": ctr_breach,
        "ctrPromoted": ctr_now,
        "traffic": read_traffic(), "phasesSeconds": {k: round(v) for k, v in phases.items()},
        "totalSeconds": round(time.monotonic() - started), "fast": settings.fast,
    }
    (demo_dir() / "summary.json").write_text(json.dumps(summary, indent=1))
    print_summary(summary)
    # Each outcome is a whole, working run of the loop (which one depends on the live traffic): the summary and
    # summary.json's "outcome" say which; a failure of the demo itself raises.
    return 0


def go_seconds(duration: str) -> float:
    """Seconds of a Go duration such as 20s, 1m or 1h30m."""
    import re

    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


def prometheus_ctr(url: str, model_version: str | None, window: str) -> float | None:
    """Clicks / impressions of one model version (both tracks) over the last window, from Prometheus."""
    import urllib.parse

    selector = f'recops_namespace="{NAMESPACE}",recops_deployment="{RMD}",model_version="{model_version}"'
    query = (f"sum(increase(recops_clicks_total{{{selector}}}[{window}])) / "
             f"sum(increase(recops_impressions_total{{{selector}}}[{window}]))")
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}),
                                    timeout=10) as response:
            result = json.loads(response.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    value = float(result[0]["value"][1]) if result else math.nan
    return None if math.isnan(value) else value


def served_formats(url: str) -> dict[str, str]:
    """{model version: the format its servers reported} (recops_model_info over the last hour, from Prometheus)."""
    import urllib.parse

    query = f'last_over_time(recops_model_info{{recops_namespace="{NAMESPACE}",recops_deployment="{RMD}"}}[1h])'
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}),
                                    timeout=10) as response:
            result = json.loads(response.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return {}
    return {series["metric"].get("model_version", ""): series["metric"].get("format", "") for series in result}


def promoted_pod_ready(env: dict[str, str], version: str | None) -> bool:
    selector = f"recops.dev/recmodeldeployment={RMD},recops.dev/track=stable,recops.dev/model-version={version}"
    pods = get_json(env, "pods", "-n", NAMESPACE, "-l", selector).get("items", [])
    return any(c["type"] == "Ready" and c["status"] == "True"
               for pod in pods for c in (pod.get("status") or {}).get("conditions") or [])


def rollout_outcome(env: dict[str, str], version: str | None) -> str | None:
    status = rmd_status(env)
    if (status.get("stable") or {}).get("modelVersion") == version and not status.get("canary"):
        return "Promoted"
    if version in [r.get("modelVersion") for r in status.get("rejectedModels") or []]:
        return "RolledBack"
    return None


def read_traffic() -> dict[str, Any]:
    try:
        return dict(json.loads((demo_dir() / "traffic.json").read_text()))
    except (OSError, ValueError):
        return {}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def against_baselines(metrics: dict[str, float] | None, baseline: dict[str, dict[str, float]] | None) -> list[str]:
    """One line per metric: the model, each baseline that has the metric, and what the model does not beat."""
    from recops.api.gate import better

    lines = []
    for metric, value in (metrics or {}).items():
        others = {name: values[metric] for name, values in (baseline or {}).items() if metric in values}
        lost = [name for name, reference in others.items() if not better(metric, value, reference)]
        lines.append(f"    {metric:8} {value:.3f}  " + "  ".join(f"{n} {v:.3f}" for n, v in others.items())
                     + (f"  -> does NOT beat {', '.join(lost)}" if lost else ("  -> beats all" if others else "")))
    return lines


def model_margins(model: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The margins in a model's recops.json (the demo's models are on this machine's disk)."""
    from recops.api.contracts import MODEL_MANIFEST

    manifest = Path((model or {}).get("uri") or "/nonexistent") / MODEL_MANIFEST
    return list(json.loads(manifest.read_text()).get("margins") or []) if manifest.exists() else []


def how_sure(margins: list[dict[str, Any]] | None) -> list[str]:
    """One line per reference: the gate metric's margin and its 95% interval (recops.json's margins)."""
    from recops.api.contracts import Margin

    lines = []
    for m in (Margin.model_validate(each) for each in margins or []):
        lines.append(f"    {m.metric} over {m.reference:13} {m.margin:+.3f} (95% interval {m.low:+.3f} to {m.high:+.3f}, "
                     f"{m.groups} groups of {m.judged_on}): {m.reading}")
    return ["  how sure (paired bootstrap over groups):", *lines] if lines else []


def online_verdict(summary: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether the retrained model's shoppers clicked more than the first model's after the shift (a two-proportion
    z-test over what the traffic generator counted; None within noise), and how that was decided."""
    first, second = (summary.get("firstModel") or {}).get("version"), (summary.get("retrainedModel") or {}).get("version")
    models = (summary.get("traffic") or {}).get("models") or {}
    a, b = models.get(f"after the shift, model {first}") or {}, models.get(f"after the shift, model {second}") or {}
    if not a.get("impressions") or not b.get("impressions"):
        return None, "no online verdict: the retrained model served no shopper"
    p1, n1, p2, n2 = a["clicks"] / a["impressions"], a["impressions"], b["clicks"] / b["impressions"], b["impressions"]
    pooled = (a["clicks"] + b["clicks"]) / (n1 + n2)
    z = (p2 - p1) / max(math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)), 1e-12)
    word = "better" if z > 2 else ("worse" if z < -2 else "not clearly different")
    verdict = True if z > 2 else (False if z < -2 else None)  # within noise: nothing to agree or disagree with
    return verdict, (f"online, after the shift: the retrained model's CTR {p2:.3f} ({n2} impressions) vs the first "
                   f"model's {p1:.3f} ({n1}): {word} (z = {z:.1f})")


def against_current(summary: dict[str, Any]) -> list[str]:
    """The retrained model against the model serving when it was trained, plain and debiased (the event log's
    exploration slice), and whether each offline verdict agrees with what the shoppers did online."""
    from recops.api.gate import better

    online, how = online_verdict(summary)
    debiased = summary.get("retrainedDebiased") or {}
    lines = ["the retrained model against the model serving then, offline (plain and debiased) and online:",
             f"  {how}"]
    for label, metrics, current in [
        ("offline, plain (the whole test split)", summary.get("retrainedMetrics"), summary.get("retrainedCurrentModel")),
        (f"offline, debiased ({debiased.get('rows', 0)} explored impressions)", debiased.get("metrics"),
         debiased.get("currentModel")),
    ]:
        shared = [m for m in (metrics or {}) if m in (current or {})]
        if not shared:
            lines.append(f"  {label}: no comparison")
            continue
        lines.append(f"  {label}:")
        for metric in shared:
            wins = better(metric, metrics[metric], current[metric])
            agreement = "" if online is None else ("  (agrees with online)" if wins == online
                                                   else "  (DISAGREES with online)")
            lines.append(f"    {metric:8} {metrics[metric]:.3f} vs {current[metric]:.3f}: "
                         f"{'beats' if wins else 'does not beat'} it{agreement}")
    return lines


def served_as(summary: dict[str, Any], which: str) -> str:
    """How a model is served: the optimised or the full-precision form, why, and what its servers reported."""
    optimization = summary.get(f"{which}Optimization")
    version = (summary.get(f"{which}Model") or {}).get("version")
    reported = (summary.get("servedFormats") or {}).get(version)
    seen = f"; its servers reported format {reported}" if reported else ""
    if not optimization:
        return f"  served in full precision (no spec.optimize){seen}"
    latency = optimization.get("latencyMsPer100") or {}
    form = f"{optimization['format']}-{optimization['quantization']}" if optimization.get("served") else "torch"
    return (f"  served as {form}: {optimization.get('reason', '')}; {latency.get('optimized', 0):.0f} ms vs "
            f"{latency.get('fullPrecision', 0):.0f} ms in full precision per 100 pairs on one thread{seen}")


def gate_word(passed: bool | None) -> str:
    return {True: "passed", False: "FAILED", None: "none"}[passed]


def print_summary(summary: dict[str, Any]) -> None:
    print("\n==== recops demo summary ====")
    print(f"first model:     {summary['firstModel']}")
    print(f"  gate {gate_word(summary.get('firstGatePassed'))}; test split of the synthetic shop's history, "
          "against the baselines:")
    print("\n".join(against_baselines(summary["firstMetrics"], summary.get("firstBaseline")) +
                    how_sure(summary.get("firstMargins"))))
    print(served_as(summary, "first"))
    print(f"retrained model: {summary['retrainedModel']}")
    debiased = summary.get("retrainedDebiased") or {}
    judged = "on its exploration slice, below" if debiased.get("rows") else "plainly: the log has no exploration slice"
    print(f"  gate {gate_word(summary.get('retrainedGatePassed'))} (judged {judged}); the whole test split of the "
          "served event log, against the baselines:")
    print("\n".join(against_baselines(summary["retrainedMetrics"], summary.get("retrainedBaseline"))))
    if debiased.get("rows"):
        print(f"  debiased: the test split's exploration slice ({debiased['rows']} impressions), against the baselines:")
        print("\n".join(against_baselines(debiased.get("metrics"), debiased.get("baseline"))))
    print("\n".join(how_sure(summary.get("retrainedMargins"))))
    print(served_as(summary, "retrained"))
    print(f"canary:          {summary['outcome']}")
    print("\n".join(against_current(summary)))
    print(f"CTR measured by the MonitorPolicy: first model before the shift {fmt(summary['ctrBaseline'])}, "
          f"at the breach {fmt(summary['ctrAtBreach'])}; the promoted model after the shift (Prometheus, its last "
          f"window) {fmt(summary['ctrPromoted'])}")
    traffic = summary.get("traffic") or {}
    for label, counts in (traffic.get("models") or {}).items():
        ctr = counts["clicks"] / counts["impressions"] if counts.get("impressions") else 0.0
        print(f"CTR seen by the shoppers, {label}: {ctr:.3f} over {counts.get('impressions', 0)} impressions")
    print("phases:")
    for name, seconds in summary["phasesSeconds"].items():
        print(f"  {name:48} {seconds:6d}s")
    print(f"  {'total':48} {summary['totalSeconds']:6d}s")
    models = demo_dir() / "models"
    print(f"model cards and training curves: {models}/{NAMESPACE}/<version>/README.md and training_curves.png")
    for card in sorted(models.glob(f"{NAMESPACE}/*/README.md")):
        print(f"  {card}")
    print(f"summary as JSON: {demo_dir() / 'summary.json'}; logs: {demo_dir() / 'logs'}")
    print("explore: eval \"$(RECOPS_CLUSTER_DIR=" + str(demo_dir() / "cluster") + " hack/cluster env)\"; "
          f"kubectl get ftj,rmd,mp -n {NAMESPACE}")
    print("stop everything: make demo-down")


# --- the shoppers ------------------------------------------------------------------------
def traffic(args: argparse.Namespace) -> int:
    """Shoppers spread over the stable and canary pods by the rollout's weight; the shift
    switches on when the file <demo dir>/shift exists. Counts go to <demo dir>/traffic.json."""
    import random

    sys.path.insert(0, str(REPO / "operator"))
    from recops.shop.traffic import ShopWorld, TrafficStats, drive

    env = dict(os.environ)
    world = ShopWorld.generate(**SHOP)
    stats: dict[str, TrafficStats] = {}
    by_phase: dict[str, TrafficStats] = {}
    by_model: dict[str, TrafficStats] = {}
    chooser = random.Random(7)
    pods: dict[str, list[tuple[str, str]]] = {}  # track -> [(pod IP, model version)]
    weight = 0
    refreshed = 0.0
    written = 0.0
    session = 0
    due = time.monotonic()
    while True:
        now = time.monotonic()
        if now - refreshed > 2:
            refreshed = now
            items = get_json(env, "pods", "-n", NAMESPACE, "-l", f"recops.dev/recmodeldeployment={RMD}").get("items", [])
            pods = {}
            for pod in items:
                ready = any(c["type"] == "Ready" and c["status"] == "True"
                            for c in (pod.get("status") or {}).get("conditions") or [])
                if ready and not pod["metadata"].get("deletionTimestamp") and pod["status"].get("podIP"):
                    labels = pod["metadata"].get("labels", {})
                    pods.setdefault(labels.get("recops.dev/track", "stable"), []).append(
                        (pod["status"]["podIP"], labels.get("recops.dev/model-version", "?")))
            status = rmd_status(env)
            weight = int(status.get("canaryWeight") or 0) if status.get("canary") else 0
        shifted = (demo_dir() / "shift").exists()
        track = "canary" if pods.get("canary") and chooser.random() * 100 < weight else "stable"
        if pods.get(track):
            session += 1
            ip, version = chooser.choice(pods[track])
            one = drive(f"http://{ip}:8080", world, requests=1, rate=0, shifted=shifted, seed=session, timeout=30)
            shift_phase = "after the shift" if shifted else "before the shift"
            for bucket in (stats.setdefault(track, TrafficStats()), by_phase.setdefault(shift_phase, TrafficStats()),
                           by_model.setdefault(f"{shift_phase}, model {version}", TrafficStats())):
                bucket.requests += one.requests
                bucket.impressions += one.impressions
                bucket.clicks += one.clicks
                bucket.purchases += one.purchases
                bucket.failed_requests += one.failed_requests
        if now - written > 1:
            written = now
            doc = {"shift": shifted, "weight": weight,
                   "tracks": {t: {"impressions": s.impressions, "clicks": s.clicks, "requests": s.requests,
                                  "failed": s.failed_requests} for t, s in stats.items()},
                   "phases": {p: {"impressions": s.impressions, "clicks": s.clicks} for p, s in by_phase.items()},
                   "models": {p: {"impressions": s.impressions, "clicks": s.clicks} for p, s in by_model.items()}}
            tmp = demo_dir() / "traffic.json.tmp"
            tmp.write_text(json.dumps(doc))
            tmp.replace(demo_dir() / "traffic.json")
        # Paced by the clock, not by sleeping after each request, so `--rate` is the rate whatever a request takes;
        # after a stall it catches up at most a second's requests.
        due = max(due + 1.0 / args.rate, time.monotonic() - 1.0) if pods.get(track) else time.monotonic() + 1.0
        time.sleep(max(0.0, due - time.monotonic()))


def down(_: argparse.Namespace) -> int:
    for name in ("traffic", "operator", "prometheus"):
        stop_background(name)
    if (demo_dir() / "cluster").exists():
        env = dict(os.environ)
        env["RECOPS_CLUSTER_DIR"] = str(demo_dir() / "cluster")
        env["PATH"] = tool_path() if (REPO / "hack" / "build-binaries").exists() else env.get("PATH", "")
        run(str(REPO / "hack" / "cluster"), "down", env=env, capture=False, timeout=300)
    say("the demo is down (no demo process left); its files stay in " + str(demo_dir()) +
        " (delete that directory to start afresh)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="run the whole loop (make demo)")
    up_parser.add_argument("--fast", action="store_true", help="tiny random model, small data, short windows")
    up_parser.add_argument("--operator", choices=("process", "pod"), default=os.environ.get("RECOPS_DEMO_OPERATOR",
                           "process"), help="the operator as a local process (default) or the chart's Deployment "
                           "running from the operator image (pod)")
    sub.add_parser("down", help="stop everything (make demo-down)")
    traffic_parser = sub.add_parser("traffic", help="(internal) the shoppers")
    traffic_parser.add_argument("--rate", type=float, default=Settings.rate)
    args = parser.parse_args()
    return {"up": up, "down": down, "traffic": traffic}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
