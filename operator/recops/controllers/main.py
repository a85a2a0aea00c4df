"""The operator: Kopf settings and every handler, registered in one place.

Handlers are thin: each turns a Kopf trigger into a reconcile pass of a plain controller
(`FineTuneJobController`). Kopf writes nothing into `status` (handlers return None); its
own bookkeeping (handler progress, last-handled configuration) lives in `recops.dev/*`
annotations of RecModelDeployments. FineTuneJobs get none: their passes start from watch events,
and a spec change is told by `metadata.generation` against `status.observedGeneration`, so Kopf
patches nothing on them (one write less per job). The FineTuneJob needs no finalizer: its
children are owned and garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import kopf

from recops.api import conditions as c
from recops.api.common import GROUP, VERSION
from recops.api.contracts import (
    ABORT_ANNOTATION,
    MANAGED_BY,
    PROMOTE_ANNOTATION,
    RETRY_MODEL_ANNOTATION,
    owner_label,
)
from recops.api.finetunejob import KIND as FTJ_KIND
from recops.api.finetunejob import PLURAL as FTJ_PLURAL
from recops.api.monitorpolicy import KIND as MP_KIND
from recops.api.monitorpolicy import PLURAL as MP_PLURAL
from recops.api.recmodeldeployment import KIND as RMD_KIND
from recops.api.recmodeldeployment import PLURAL as RMD_PLURAL
from recops.builders.common import MANAGED_BY_LABEL, MAX_NAME_LENGTH, BuilderSettings
from recops.controllers import finetunejob_status
from recops.controllers.cache import WatchCache
from recops.controllers.events import COMPONENT as EVENTS_COMPONENT
from recops.controllers.events import EventRecorder
from recops.controllers.feedback_key import SharedFeedbackKey, ensure_shared_feedback_secret
from recops.controllers.finetunejob import FineTuneJobController, PassResult
from recops.controllers.kube import Kube, load_api_client
from recops.controllers.leader import LeaseElector, lease_client
from recops.controllers.metrics import OperatorMetrics
from recops.controllers.monitorpolicy import MonitorMetrics, MonitorPolicyController
from recops.controllers.recmodeldeployment import PassResult as RmdPassResult
from recops.controllers.recmodeldeployment import RecModelDeploymentController, rmds_following
from recops.controllers.work import Coalescer
from recops.monitor.prometheus import PrometheusAuth

log = logging.getLogger("recops.operator")
STEERING_ANNOTATIONS = (PROMOTE_ANNOTATION, ABORT_ANNOTATION, RETRY_MODEL_ANNOTATION)

FTJ_OWNER_LABEL = owner_label(FTJ_KIND)
# Only the operator's own children are streamed from the API server (server-side filtering).
CHILD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{FTJ_OWNER_LABEL}"
RMD_OWNER_LABEL = owner_label(RMD_KIND)
RMD_CHILD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{RMD_OWNER_LABEL}"
# How often RecModelDeployments in a rollout get a pass (canary pauses and analysis intervals are timed on it).
ROLLOUT_TICK_SECONDS = 1.0
# How often every child of every RecModelDeployment is server-side applied again, changed or not (drift repair).
REAPPLY_SECONDS = 300.0
# How often the MonitorPolicy scheduler looks for policies whose interval has passed.
MONITOR_TICK_SECONDS = 0.5
# After an evaluation raised (e.g. the API server was unreachable), the next try comes this soon.
MONITOR_RETRY_SECONDS = 5.0
# How often the FineTuneJob scheduler looks for passes that are due (resync, progress, retry).
FTJ_TICK_SECONDS = 1.0
# What the operator knows of a FineTuneJob from its watch events: which passes it is due.
FTJ_FINAL, FTJ_RUNNING, FTJ_OTHER = "final", "running", "other"


@dataclass(frozen=True)
class OperatorConfig:
    """Everything `recops operator` is told through flags and environment variables."""

    builder: BuilderSettings = field(default_factory=BuilderSettings)
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    prometheus_url: str | None = None
    prometheus_auth: PrometheusAuth | None = None  # credentials for prometheus_url only
    resync_seconds: float = 60.0
    # How often a running trainer's log is read for its newest progress line (0: on resync and pod changes only).
    progress_seconds: float = 15.0
    start_timeout_seconds: float = 900.0  # 0: a trainer that cannot start is waited for for ever
    metrics_port: int = 8080  # 0: no /metrics
    metrics_address: str = "0.0.0.0"
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    kubeconfig: str | None = None
    instance: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "recops-operator"))
    # Leader election on a Lease (several replicas: only the holder acts). See controllers/leader.py.
    leader_election: bool = False
    leader_election_namespace: str | None = None  # None: the pod's namespace, else recops-system
    leader_election_lease: str = "recops-operator"
    leader_election_lease_seconds: float = 15.0
    # The shared feedback-key Secret the operator creates when missing (controllers/feedback_key.py); None: none.
    feedback_key: SharedFeedbackKey | None = None


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Kopf adds its finalizer only for deletion handlers, daemons and timers, which recops does not
    # use; Kopf also strips its own finalizer wherever it finds one unneeded, so its name must differ
    # from any finalizer recops may use.
    settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    settings.posting.reporting_component = EVENTS_COMPONENT
    settings.posting.reporting_instance = config.instance
    settings.posting.event_name_prefix = "recops-"
    # Only Kopf's warnings and errors become Events: its INFO lines ("Handler ... succeeded",
    # "Creation is processed") cost two Event writes per object and per operator start. recops
    # posts its own Events (JobCreated, Succeeded, ...) through one EventRecorder (controllers/events.py).
    settings.posting.level = logging.WARNING
    # Watch only what exists at start-up: no cluster-wide CRD or namespace watch (least privilege).
    settings.scanning.disabled = True
    settings.watching.label_selectors["batch", "jobs"] = CHILD_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = CHILD_SELECTOR
    settings.watching.label_selectors["apps", "deployments"] = RMD_CHILD_SELECTOR
    settings.peering.standalone = True  # several replicas coordinate by a Lease (leader.py), not Kopf peering
    # Passes mostly wait on the API server (a few sequential round trips each), so more threads than
    # CPUs: with 16, a burst of FineTuneJobs queued behind them (benchmarks/operator_scale.py).
    settings.execution.max_workers = MAX_WORKERS
    settings.networking.request_timeout = 60


class Operator:
    """The running operator's state: the controllers, what is known, the metrics."""

    def __init__(self, config: OperatorConfig, kube: Kube | None = None,
                 metrics: OperatorMetrics | None = None) -> None:
        self.config = config
        self.kube = kube or Kube(load_api_client(config.kubeconfig))
        self.metrics = metrics or OperatorMetrics()
        # FineTuneJobs, their Jobs and pods as the watch streams last said: a FineTuneJob pass reads memory.
        self.watched = WatchCache(pod_owner_label=FTJ_OWNER_LABEL)
        self.events = EventRecorder(self.kube, config.instance)  # every controller's Events
        self.finetunejobs = FineTuneJobController(self.kube, config.builder, post_event=self.events,
                                                  start_timeout_s=config.start_timeout_seconds, cache=self.watched)
        self.rmds = RecModelDeploymentController(self.kube, config.builder, post_event=self.post_rmd_event,
                                                 prometheus_url=config.prometheus_url,
                                                 prometheus_auth=config.prometheus_auth,
                                                 shared_feedback_key=config.feedback_key)
        self.coalescer = Coalescer()
        # RecModelDeployments seen on the watch stream -> whether a rollout is under way.
        self.known_rmds: dict[tuple[str, str], bool] = {}
        # RecModelDeployments whose last tick pass failed -> (failures in a row, monotonic time of the next try):
        # a failing object is retried 5s, 10s, 20s, ... later, not every tick.
        self.rmd_backoff: dict[tuple[str, str], tuple[int, float]] = {}
        # FineTuneJobs seen on the watch stream -> FTJ_FINAL, FTJ_RUNNING or FTJ_OTHER.
        self.known_ftjs: dict[tuple[str, str], str] = {}
        # FineTuneJobs whose spec pass failed -> (failures in a row, monotonic time of the next try).
        self.ftj_backoff: dict[tuple[str, str], tuple[int, float]] = {}
        # Objects whose next pass must server-side apply every child (after a spec change or restart).
        self.apply_wanted: set[tuple[str, str, str]] = set()
        self.apply_lock = threading.Lock()
        self.monitor = MonitorPolicyController(
            self.kube, default_prometheus_url=config.prometheus_url, prometheus_auth=config.prometheus_auth,
            metrics=MonitorMetrics(self.metrics.registry), post_event=self.events,
        )
        # MonitorPolicies seen on the watch stream -> (generation, monotonic time of the next evaluation).
        self.monitor_due: dict[tuple[str, str], tuple[int | None, float]] = {}
        self.monitor_running: dict[tuple[str, str], asyncio.Task[None]] = {}
        # The last relevant state seen of each Job and pod (see child_changed).
        self.child_signatures: dict[tuple[str, str, str, str], Any] = {}

    def ensure_feedback_keys(self) -> None:
        """At start (as the leader): the shared feedback-key Secret in each of its namespaces, created if missing."""
        shared = self.config.feedback_key
        if shared is None:
            return
        for namespace in shared.namespaces or self.config.namespaces or (operator_namespace(self.config),):
            try:
                outcome = ensure_shared_feedback_secret(self.kube, namespace, shared)
            except Exception as error:  # not fatal: a RecModelDeployment naming it creates it later
                log.warning("feedback-key Secret %s/%s: %s", namespace, shared.secret, error)
            else:
                log.info("feedback-key Secret %s/%s: %s", namespace, shared.secret, outcome.value)

    def _pass(self, kind: str, namespace: str, name: str, trigger: str, apply_children: bool,
              reconcile: Callable[..., Any], record: Callable[[Any], None]) -> None:
        """One coalesced, counted pass of `reconcile(namespace, name, apply_children=...)`; `record`
        takes its result (a PassResult of that controller)."""
        key = (kind, namespace, name)
        if apply_children:
            # Read by whichever pass runs next, so a request that coalesces into a running pass keeps it.
            with self.apply_lock:
                self.apply_wanted.add(key)

        def one_pass() -> None:
            start = time.monotonic()
            self.metrics.reconciles.labels(kind=kind, trigger=trigger).inc()
            with self.apply_lock:
                apply = key in self.apply_wanted
                self.apply_wanted.discard(key)
            try:
                result = reconcile(namespace, name, apply_children=apply)
            except Exception as error:
                self.metrics.errors.labels(kind=kind, error=type(error).__name__).inc()
                if apply:
                    with self.apply_lock:
                        self.apply_wanted.add(key)
                raise
            finally:
                self.metrics.duration.labels(kind=kind).observe(time.monotonic() - start)
            if result.status_written:
                self.metrics.status_writes.labels(kind=kind).inc()
            record(result)

        self.coalescer.run(key, one_pass)

    def reconcile_ftj(self, namespace: str, name: str, trigger: str, apply_children: bool = False,
                      body: dict[str, Any] | None = None) -> None:
        """`body`: the object as its watch event delivered it, used by the first pass only (a pass asked for
        meanwhile, run after it, reads the object again)."""
        delivered = [body] if body is not None else []

        def reconcile(namespace: str, name: str, *, apply_children: bool) -> PassResult:
            # A Job's or pod's change rarely moves the trainer's log: the progress ticks read it.
            return self.finetunejobs.reconcile(namespace, name, apply_children=apply_children,
                                               body=delivered.pop() if delivered else None,
                                               read_log=trigger != "child")

        def record(result: PassResult) -> None:
            if result.gone or result.phase:
                self.metrics.set_phase(namespace, name, None if result.gone else result.phase)

        self._pass(FTJ_KIND, namespace, name, trigger, apply_children, reconcile, record)

    def post_rmd_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a RecModelDeployment's Event; a rollback also counts in recops_operator_rollbacks_total."""
        if reason in (c.ROLLED_BACK, c.PROGRESS_DEADLINE_EXCEEDED):
            meta = body.get("metadata") or {}
            self.metrics.rollbacks.labels(namespace=meta.get("namespace", ""), deployment=meta.get("name", "")).inc()
        self.events(body, type_, reason, message)

    def forget_rmd(self, namespace: str, name: str) -> None:
        self.known_rmds.pop((namespace, name), None)
        self.rmd_backoff.pop((namespace, name), None)

    def reconcile_rmd(self, namespace: str, name: str, trigger: str, apply_children: bool = False) -> None:
        def record(result: RmdPassResult) -> None:
            if result.gone:
                self.forget_rmd(namespace, name)
            else:
                self.known_rmds[(namespace, name)] = result.active

        self._pass(RMD_KIND, namespace, name, trigger, apply_children, self.rmds.reconcile, record)

    async def rollouts_forever(self) -> None:
        """A pass every tick for RecModelDeployments in a rollout, every resync period for the others."""
        last_full = last_reapply = time.monotonic()
        while True:
            await asyncio.sleep(ROLLOUT_TICK_SECONDS)
            full = time.monotonic() - last_full >= self.config.resync_seconds
            if full:
                last_full = time.monotonic()
            if time.monotonic() - last_reapply >= REAPPLY_SECONDS:
                last_reapply = time.monotonic()
                self.rmds.forget_all()
            for (namespace, name), active in list(self.known_rmds.items()):
                if not (active or full) or self.coalescer.busy((RMD_KIND, namespace, name)):
                    continue
                failures, next_try = self.rmd_backoff.get((namespace, name), (0, 0.0))
                if time.monotonic() < next_try:
                    continue
                try:
                    await asyncio.to_thread(self.reconcile_rmd, namespace, name, "resync" if full else "rollout")
                    self.rmd_backoff.pop((namespace, name), None)
                except Exception:  # logged and counted; retried after a growing delay
                    delay = retry_delay(failures)
                    self.rmd_backoff[(namespace, name)] = (failures + 1, time.monotonic() + delay)
                    log.exception("pass of RecModelDeployment %s/%s failed; next try in %.0fs", namespace, name,
                                  delay)

    def child_changed(self, body: dict[str, Any], deleted: bool = False) -> bool:
        """Whether a Job or pod event changes anything a FineTuneJob pass reads (most of a Job's and
        pod's status updates do not: ready counts, uncounted pods, IPs, ...). The first event of an
        object after a start always counts; the resync is the safety net."""
        meta = body.get("metadata") or {}
        key = (str(body.get("kind") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""),
               str(meta.get("uid") or ""))
        with self.apply_lock:
            if deleted:
                self.child_signatures.pop(key, None)
                return True
            signature = child_signature(body)
            if self.child_signatures.get(key) == signature:
                return False
            self.child_signatures[key] = signature
            return True

    def ftj_of_child(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """The FineTuneJob a Job or pod belongs to (the label; an owner reference when shortened)."""
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == FTJ_KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
                return namespace, str(ref["name"])
        label = (meta.get("labels") or {}).get(FTJ_OWNER_LABEL)
        if not label or not namespace:
            return None
        if len(label) < MAX_NAME_LENGTH:
            return namespace, str(label)
        job_name = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")
        job = self.kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}") if job_name else None
        return self.ftj_of_child(job) if job else None

    def reconcile_ftj_of_child(self, child: dict[str, Any]) -> None:
        owner = self.ftj_of_child(child)
        if owner is not None:
            self.reconcile_ftj(owner[0], owner[1], "child")

    def feed_deployments(self, ftj: dict[str, Any]) -> None:
        """A pass for each RecModelDeployment a Succeeded FineTuneJob may feed."""
        for namespace, name in rmds_following(self.kube, ftj):
            self.reconcile_rmd(namespace, name, "finetunejob")

    def ftj_spec_pass(self, namespace: str, name: str, trigger: str, body: dict[str, Any] | None = None) -> None:
        """A pass that server-side applies every child (new object, spec change, start, retry). A failure is
        retried 5s, 10s, 20s, ... later by the scheduler (ftjs_forever), never in a storm."""
        key = (namespace, name)
        try:
            self.reconcile_ftj(namespace, name, trigger, apply_children=True, body=body)
        except Exception as error:
            failures = self.ftj_backoff.get(key, (0, 0.0))[0]
            delay = retry_delay(failures)
            self.ftj_backoff[key] = (failures + 1, time.monotonic() + delay)
            log_retry(FTJ_KIND, namespace, name, error, failures + 1, delay)
        else:
            self.ftj_backoff.pop(key, None)

    def due_ftjs(self, now: float, full: bool, progress: bool) -> list[tuple[str, str, str]]:
        """(namespace, name, trigger) of the FineTuneJob passes due now: failed spec passes whose back-off
        ended, running ones on a progress tick, every unfinished one on a full resync."""
        due = []
        for (namespace, name), state in list(self.known_ftjs.items()):
            failures_next = self.ftj_backoff.get((namespace, name))
            if failures_next is not None:
                if failures_next[1] <= now:
                    due.append((namespace, name, "retry"))
            elif state != FTJ_FINAL and full:
                due.append((namespace, name, "resync"))
            elif state == FTJ_RUNNING and progress:
                due.append((namespace, name, "progress"))
        return due

    async def ftjs_forever(self) -> None:
        """The level-based safety net and the progress reads: one pass for each unfinished FineTuneJob every
        resync period, for each running one every progress period, and the retries of failed spec passes."""
        last_full = last_progress = time.monotonic()
        while True:
            await asyncio.sleep(FTJ_TICK_SECONDS)
            now = time.monotonic()
            full = now - last_full >= self.config.resync_seconds
            progress = bool(self.config.progress_seconds) and now - last_progress >= self.config.progress_seconds
            last_full = now if full else last_full
            last_progress = now if progress else last_progress
            for namespace, name, trigger in self.due_ftjs(now, full, progress):
                if self.coalescer.busy((FTJ_KIND, namespace, name)):
                    continue
                if trigger == "retry":
                    await asyncio.to_thread(self.ftj_spec_pass, namespace, name, trigger)
                    continue
                try:
                    await asyncio.to_thread(self.reconcile_ftj, namespace, name, trigger)
                except Exception:  # logged and counted; the next period retries
                    log.exception("%s pass of FineTuneJob %s/%s failed", trigger, namespace, name)

    def track_policy(self, namespace: str, name: str, generation: int | None, deleted: bool = False) -> None:
        """A MonitorPolicy event: a new policy or a new generation is evaluated at once."""
        key = (namespace, name)
        if deleted:
            self.monitor_due.pop(key, None)
            return
        known = self.monitor_due.get(key)
        if known is None or known[0] != generation:
            self.monitor_due[key] = (generation, time.monotonic())

    async def monitor_forever(self) -> None:
        """Evaluate each MonitorPolicy every spec.interval, one evaluation per policy at a time.

        A scheduler of its own rather than a Kopf timer: timers would add a finalizer to every
        policy and Kopf would log (and post as an Event) each successful tick.
        """
        while True:
            now = time.monotonic()
            for key, (_, due) in list(self.monitor_due.items()):
                if due <= now and key not in self.monitor_running:
                    self.monitor_running[key] = asyncio.create_task(self._evaluate_policy(key))
            await asyncio.sleep(MONITOR_TICK_SECONDS)

    async def _evaluate_policy(self, key: tuple[str, str]) -> None:
        start = time.monotonic()
        interval = MONITOR_RETRY_SECONDS
        self.metrics.reconciles.labels(kind=MP_KIND, trigger="interval").inc()
        try:
            result = await asyncio.to_thread(self.monitor.evaluate, *key)
            if result.gone:
                self.monitor_due.pop(key, None)
                return
            interval = result.interval
            if result.status_written:
                self.metrics.status_writes.labels(kind=MP_KIND).inc()
        except Exception as error:  # logged and counted; retried soon
            self.metrics.errors.labels(kind=MP_KIND, error=type(error).__name__).inc()
            log.exception("evaluation of MonitorPolicy %s/%s failed", *key)
        finally:
            self.monitor_running.pop(key, None)
            self.metrics.duration.labels(kind=MP_KIND).observe(time.monotonic() - start)
        known = self.monitor_due.get(key)
        if known is not None and known[1] <= start:  # not re-armed by a spec change meanwhile
            self.monitor_due[key] = (known[0], start + interval)


def ftj_state(status: dict[str, Any]) -> str:
    if finetunejob_status.is_final(status):
        return FTJ_FINAL
    return FTJ_RUNNING if status.get("phase") == "Running" else FTJ_OTHER


def spec_pass_wanted(body: dict[str, Any], first_seen: bool) -> bool:
    """Whether a FineTuneJob's watch event asks for a pass that applies every child: the first event of it since
    the operator started (a new object, or one to resume), or a generation its status has not observed (a new
    object, or a spec change; the pass writes observedGeneration, so it asks once)."""
    generation = (body.get("metadata") or {}).get("generation")
    return first_seen or (body.get("status") or {}).get("observedGeneration") != generation


def child_signature(body: dict[str, Any]) -> Any:
    """What a FineTuneJob pass reads from a Job or a pod (see FineTuneJobController and finetunejob_status)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    common = (meta.get("deletionTimestamp"), tuple(meta.get("finalizers") or ()))
    if body.get("kind") == "Job" or "template" in spec:
        conditions = tuple(sorted((c.get("type"), c.get("status"), c.get("reason"))
                                  for c in status.get("conditions") or []))
        return (*common, spec.get("suspend"), spec.get("activeDeadlineSeconds"), status.get("succeeded"),
                status.get("failed"), status.get("startTime"), status.get("completionTime"), conditions)
    scheduled = tuple((c.get("status"), c.get("reason"), c.get("message"))
                      for c in status.get("conditions") or [] if c.get("type") == "PodScheduled")
    containers = tuple(
        (c.get("name"), json.dumps((c.get("state") or {}).get("terminated"), sort_keys=True),
         json.dumps((c.get("lastState") or {}).get("terminated"), sort_keys=True))
        for c in status.get("containerStatuses") or []
    )
    return (*common, status.get("phase"), status.get("startTime"), scheduled, containers)


MAX_WORKERS = 48
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


def retry_delay(retry: int) -> float:
    """5s, 10s, 20s, ... at most 5 minutes."""
    return float(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(retry, 16)))


def log_retry(kind: str, namespace: str, name: str, error: Exception, attempt: int, delay: float) -> None:
    """One line for a failed pass that will be retried: what failed, and when the next try is."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    log.warning("%s %s/%s: %s: %s; retry %d in %.0fs", kind, namespace, name, type(error).__name__, first_line,
                attempt, delay)


@contextlib.contextmanager
def backing_off(kind: str, namespace: str, name: str, retry: int) -> Iterator[None]:
    """A spec handler's pass: transient API errors and missing permissions are retried with an exponential
    back-off, never in a storm (an invalid spec never gets here: it is a status, not an error)."""
    try:
        yield
    except Exception as error:
        delay = retry_delay(retry)
        log_retry(kind, namespace, name, error, retry + 1, delay)
        raise kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=delay) from error


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Every handler of the operator. Each calls a plain function and returns None."""
    _register_lifecycle(registry, operator)
    _register_finetunejob(registry, operator)
    _register_recmodeldeployment(registry, operator)

    @kopf.on.event(GROUP, VERSION, MP_PLURAL, registry=registry, id="monitorpolicy")  # type: ignore[arg-type]
    def track_monitorpolicy(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        operator.track_policy(namespace, name, body.get("metadata", {}).get("generation"), deleted=type == "DELETED")


def _register_lifecycle(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Login, and the operator's own loops (started and stopped with Kopf)."""
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        # One pool of worker threads: Kopf's (sync handlers) is also where every pass asyncio.to_thread starts runs.
        asyncio.get_running_loop().set_default_executor(settings.execution.executor)
        # One event loop for every async request (the passes' Prometheus queries).
        operator.rmds.loop = operator.monitor.loop = asyncio.get_running_loop()
        await asyncio.to_thread(operator.ensure_feedback_keys)
        memo["resync"] = asyncio.create_task(operator.ftjs_forever())
        memo["monitor"] = asyncio.create_task(operator.monitor_forever())
        memo["rollouts"] = asyncio.create_task(operator.rollouts_forever())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        for key in ("resync", "monitor", "rollouts"):
            task = memo.get(key)
            if task is not None:
                task.cancel()


def _on_spec(registry: kopf.OperatorRegistry, plural: str, kind: str,
             reconcile: Callable[..., None]) -> None:
    """A pass that applies every child on create, update and resume of a kind (a spec to act on); a failed pass
    is retried by Kopf with backoff."""
    def on_spec(namespace: str, name: str, retry: int = 0, **_: Any) -> None:
        with backing_off(kind, namespace, name, retry):
            reconcile(namespace, name, "spec", apply_children=True)

    resource = {"group": GROUP, "version": VERSION, "plural": plural, "registry": registry}
    for cause in (kopf.on.create, kopf.on.update, kopf.on.resume):
        cause(**resource, id="reconcile", backoff=5)(on_spec)  # type: ignore[arg-type]


def _register_finetunejob(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    ftj = {"group": GROUP, "version": VERSION, "plural": FTJ_PLURAL, "registry": registry}

    # The handlers are coroutines: most events need no pass, and those that do run it in a worker thread, so the
    # rest costs no thread hop.
    @kopf.on.event(**ftj, id="track")  # type: ignore[arg-type]
    async def track_finetunejob(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        # No on.create/on.update/on.resume here: those make Kopf patch its bookkeeping annotations onto every
        # FineTuneJob. The watch event is enough to tell what the handlers would.
        key = (namespace, name)
        operator.watched.observe(dict(body), deleted=type == "DELETED")
        if type == "DELETED":
            operator.known_ftjs.pop(key, None)
            operator.ftj_backoff.pop(key, None)
            operator.metrics.set_phase(namespace, name, None)
            return
        status = dict(body.get("status") or {})
        first_seen = key not in operator.known_ftjs
        operator.known_ftjs[key] = ftj_state(status)
        if status.get("phase"):
            operator.metrics.set_phase(namespace, name, status["phase"])
        if spec_pass_wanted(dict(body), first_seen) and key not in operator.ftj_backoff:
            await asyncio.to_thread(operator.ftj_spec_pass, namespace, name, "spec", copy.deepcopy(dict(body)))

    async def on_child(body: kopf.Body, type: str | None = None, **_: Any) -> None:
        child = dict(body)
        operator.watched.observe(child, deleted=type == "DELETED")
        if not operator.child_changed(child, deleted=type == "DELETED"):
            return  # nothing the FineTuneJob's status depends on changed
        await asyncio.to_thread(operator.reconcile_ftj_of_child, child)

    kopf.on.event("batch", "v1", "jobs", labels={FTJ_OWNER_LABEL: kopf.PRESENT}, registry=registry,
                  id="finetunejob-job")(on_child)
    kopf.on.event("v1", "pods", labels={FTJ_OWNER_LABEL: kopf.PRESENT}, registry=registry,
                  id="finetunejob-pod")(on_child)

    @kopf.on.event(**ftj, id="feed-deployments")  # type: ignore[arg-type]
    async def finetunejob_for_deployments(type: str | None, body: kopf.Body, **_: Any) -> None:
        # Only a finished job can change which model a RecModelDeployment wants; deletions never do.
        if type == "DELETED" or (body.get("status") or {}).get("phase") != "Succeeded":
            return
        await asyncio.to_thread(operator.feed_deployments, dict(body))


def _register_recmodeldeployment(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    _on_spec(registry, RMD_PLURAL, RMD_KIND, operator.reconcile_rmd)

    @kopf.on.event(group=GROUP, version=VERSION, plural=RMD_PLURAL, registry=registry, id="track")  # type: ignore[arg-type]
    def track_recmodeldeployment(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        if type == "DELETED":
            operator.forget_rmd(namespace, name)
            operator.rmds.forget(namespace, name)
            return
        key = (namespace, name)
        if key not in operator.known_rmds:
            operator.known_rmds[key] = True
        # A steering annotation not acted on yet: act now (annotations alone may not count as an update).
        annotations = dict(body.get("metadata", {}).get("annotations") or {})
        handled = dict((body.get("status") or {}).get("handledAnnotations") or {})
        if any(annotations.get(k) and annotations.get(k) != handled.get(k) for k in STEERING_ANNOTATIONS):
            operator.reconcile_rmd(namespace, name, "annotation")

    def on_rmd_child(type: str | None, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        owner = next((ref["name"] for ref in meta.get("ownerReferences") or []
                      if ref.get("kind") == RMD_KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/")), None)
        if owner and meta.get("namespace"):
            operator.reconcile_rmd(str(meta["namespace"]), str(owner), "child", apply_children=type == "DELETED")

    kopf.on.event("apps", "v1", "deployments", labels={RMD_OWNER_LABEL: kopf.PRESENT}, registry=registry,
                  id="recmodeldeployment-deployment")(on_rmd_child)


SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_OPERATOR_NAMESPACE = "recops-system"


def operator_namespace(config: OperatorConfig) -> str:
    if config.leader_election_namespace:
        return config.leader_election_namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE_FILE) as file:
            return file.read().strip() or DEFAULT_OPERATOR_NAMESPACE
    except OSError:
        return os.environ.get("POD_NAMESPACE") or DEFAULT_OPERATOR_NAMESPACE


@contextmanager
def standby_health(endpoint: str | None) -> Iterator[None]:
    """While a replica waits for the Lease it is alive (not the leader): answer the liveness probe."""
    if not endpoint:
        yield
        return
    url = urlsplit(endpoint)

    class Alive(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"standby\n")

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Alive)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def lost_leadership() -> None:
    # Another replica may already act: stop at once, without finishing anything (the pod restarts
    # and stands by). Level-based reconciling makes an interrupted pass harmless.
    log.critical("lost the leader Lease: exiting")
    logging.shutdown()
    os._exit(1)


def run(config: OperatorConfig, ready: Callable[[], None] | None = None) -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    if config.kubeconfig:
        os.environ["KUBECONFIG"] = config.kubeconfig
    registry = kopf.OperatorRegistry()
    operator = Operator(config)
    register(registry, operator)
    settings = kopf.OperatorSettings()
    configure(settings, config)
    # Served before the election, so that a standby's scrape target is up (with recops_operator_leader 0)
    # rather than down, which a ServiceMonitor over every replica would report as a failing target.
    if config.metrics_port:
        operator.metrics.serve(config.metrics_port, config.metrics_address)
    elector = None
    if config.leader_election:
        identity = f"{config.instance}_{uuid.uuid4().hex[:12]}"
        lease_seconds = config.leader_election_lease_seconds
        elector = LeaseElector(lease_client(operator.kube, lease_seconds), operator_namespace(config),
                               config.leader_election_lease, identity, lease_seconds=lease_seconds)
        operator.metrics.leader.set(0)
        with standby_health(config.liveness_endpoint):
            elector.acquire()
        elector.keep_renewing(lost_leadership)
    operator.metrics.leader.set(1)
    try:
        kopf.run(
            registry=registry,
            settings=settings,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=True,
            liveness_endpoint=config.liveness_endpoint or None,
        )
    finally:
        if elector is not None:
            elector.release()
