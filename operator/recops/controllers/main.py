"""The operator: Kopf settings and every handler, registered in one place.

Handlers are thin: each turns a Kopf trigger into a reconcile pass of a plain controller
(`FineTuneJobController`). Kopf writes nothing into `status` (handlers return None); its
own bookkeeping (handler progress, last-handled configuration) lives in `recops.dev/*`
annotations of RecModelDeployments. FineTuneJobs get none: their passes start from watch events,
and a spec change is told by `metadata.generation` against `status.observedGeneration`, so Kopf
patches nothing on them (one write less per job). The FineTuneJob needs no finalizer: its
children are owned and garbage-collected. Everything timed (resyncs, progress reads, rollout ticks,
policy intervals, the retries of failed passes) is an entry of one `Schedule` (controllers/schedule.py),
run by one loop (`Operator.schedule_forever`).
"""

from __future__ import annotations

import asyncio
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
from recops.controllers.kube import ApiError, Kube, load_api_client
from recops.controllers.leader import LeaseElector, lease_client
from recops.controllers.metrics import OperatorMetrics
from recops.controllers.monitorpolicy import Evaluation, MonitorMetrics, MonitorPolicyController
from recops.controllers.recmodeldeployment import PassResult as RmdPassResult
from recops.controllers.recmodeldeployment import RecModelDeploymentController, rmds_following
from recops.controllers.schedule import Schedule
from recops.controllers.work import Coalescer
from recops.monitor.prometheus import PrometheusAuth

log = logging.getLogger("recops.operator")
STEERING_ANNOTATIONS = (PROMOTE_ANNOTATION, ABORT_ANNOTATION, RETRY_MODEL_ANNOTATION)

FTJ_OWNER_LABEL = owner_label(FTJ_KIND)
# Only the operator's own children are streamed from the API server (server-side filtering).
CHILD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{FTJ_OWNER_LABEL}"
RMD_OWNER_LABEL = owner_label(RMD_KIND)
RMD_CHILD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{RMD_OWNER_LABEL}"
# How often the scheduler looks for passes that are due (controllers/schedule.py).
TICK_SECONDS = 0.5
# A FineTuneJob's Job and pod events (and the pass that created its Job) arm one pass this much later, as the Job
# controller batches its pods' events (its syncJobBatchPeriod): a new Job's first second (pod created, scheduled,
# started) is one pass and one status write, not a write per step while a burst of creations waits on the API server.
CHILD_BATCH_SECONDS = 1.0
# While FineTuneJobs wait for their spec pass (a burst of creations), those batched status passes wait too, at most
# this much past due: every Job is created first and each status written once after, rather than both in turn on a
# saturated API server (a status patch is its dearest request).
CHILD_HOLD_MAX_SECONDS = 30.0
# How often RecModelDeployments in a rollout get a pass (canary pauses and analysis intervals are timed on it).
ROLLOUT_TICK_SECONDS = 1.0
# How often every child of every RecModelDeployment is server-side applied again, changed or not (drift repair).
REAPPLY_SECONDS = 300.0


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
        # Every object's next timed pass (resync, progress, rollout tick, policy interval, retry).
        self.schedule = Schedule()
        self.last_reapply = time.monotonic()
        self.spec_passes_waiting = 0  # FineTuneJob spec passes asked for and not yet done (on the event loop)
        # Objects whose next pass must server-side apply every child (after a spec change or restart).
        self.apply_wanted: set[tuple[str, str, str]] = set()
        self.apply_lock = threading.Lock()
        self.monitor = MonitorPolicyController(
            self.kube, default_prometheus_url=config.prometheus_url, prometheus_auth=config.prometheus_auth,
            metrics=MonitorMetrics(self.metrics.registry), post_event=self.events,
        )
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
              reconcile: Callable[..., Any], next_pass: Callable[[Any], tuple[float | None, str]]) -> None:
        """One coalesced, counted pass of `reconcile(namespace, name, apply_children=...)`, whatever asked for it.
        `next_pass` reads its result (a controller's PassResult) and says when the next timed pass is due
        (seconds or None, and its trigger). A failed pass is logged, counted and retried by the schedule with a
        growing delay; it never raises into Kopf."""
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
                failures, delay = self.schedule.failed(key)
                log_retry(kind, namespace, name, error, failures, delay)
                return
            finally:
                self.metrics.duration.labels(kind=kind).observe(time.monotonic() - start)
            if result.status_written:
                self.metrics.status_writes.labels(kind=kind).inc()
            if result.gone:
                self.schedule.forget(key)
            else:
                self.schedule.passed(key, *next_pass(result))

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

        def next_pass(result: PassResult) -> tuple[float | None, str]:
            if result.job_created:  # its status is written by the next pass
                return CHILD_BATCH_SECONDS, "child"
            self.metrics.set_phase(namespace, name, None if result.gone else result.phase)
            return self.ftj_next_pass(result.final, result.phase)

        self._pass(FTJ_KIND, namespace, name, trigger, apply_children, reconcile, next_pass)

    def ftj_next_pass(self, final: bool, phase: str | None) -> tuple[float | None, str]:
        """A FineTuneJob's next timed pass: none once its status is final, a progress read while it runs, else
        the resync (the level-based safety net)."""
        if final:
            return None, ""
        if phase == "Running" and self.config.progress_seconds:
            return self.config.progress_seconds, "progress"
        return self.config.resync_seconds, "resync"

    def reconcile_rmd(self, namespace: str, name: str, trigger: str, apply_children: bool = False) -> None:
        def next_pass(result: RmdPassResult) -> tuple[float | None, str]:
            return (ROLLOUT_TICK_SECONDS, "rollout") if result.active else (self.config.resync_seconds, "resync")

        self._pass(RMD_KIND, namespace, name, trigger, apply_children, self.rmds.reconcile, next_pass)

    def evaluate_policy(self, namespace: str, name: str, trigger: str) -> None:
        def evaluate(namespace: str, name: str, *, apply_children: bool) -> Evaluation:
            return self.monitor.evaluate(namespace, name)

        self._pass(MP_KIND, namespace, name, trigger, False, evaluate, lambda result: (result.interval, "interval"))

    def post_rmd_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a RecModelDeployment's Event; a rollback also counts in recops_operator_rollbacks_total."""
        if reason in (c.ROLLED_BACK, c.PROGRESS_DEADLINE_EXCEEDED):
            meta = body.get("metadata") or {}
            self.metrics.rollbacks.labels(namespace=meta.get("namespace", ""), deployment=meta.get("name", "")).inc()
        self.events(body, type_, reason, message)

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

    def batch_ftj_of_child(self, child: dict[str, Any]) -> None:
        owner = self.ftj_of_child(child)
        if owner is not None:
            self.schedule.soon((FTJ_KIND, *owner), CHILD_BATCH_SECONDS, "child")

    def feed_deployments(self, ftj: dict[str, Any]) -> None:
        """A pass for each RecModelDeployment a Succeeded FineTuneJob may feed."""
        for namespace, name in rmds_following(self.kube, ftj):
            self.reconcile_rmd(namespace, name, "finetunejob")

    def held(self, trigger: str, late: float) -> bool:
        """Whether a due pass waits for a later tick: a batched status pass while spec passes wait (see
        CHILD_HOLD_MAX_SECONDS)."""
        return trigger == "child" and self.spec_passes_waiting > 0 and late < CHILD_HOLD_MAX_SECONDS

    def run_timed(self, key: tuple[str, str, str], trigger: str) -> None:
        """A pass the schedule says is due: a retry of a failed pass (which applies every child when the failed
        one was to), a resync, a progress read, a rollout tick or a policy's interval."""
        kind, namespace, name = key
        if kind == FTJ_KIND:
            self.reconcile_ftj(namespace, name, trigger)
        elif kind == RMD_KIND:
            self.reconcile_rmd(namespace, name, trigger)
        else:
            self.evaluate_policy(namespace, name, trigger)

    async def schedule_forever(self) -> None:
        """Run every pass the schedule says is due, each in a worker thread (a slow one, e.g. a canary analysis,
        holds up no other); and every REAPPLY_SECONDS make the next pass of each RecModelDeployment apply every
        child again (drift repair)."""
        running: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if time.monotonic() - self.last_reapply >= REAPPLY_SECONDS:
                self.last_reapply = time.monotonic()
                self.rmds.forget_all()
            for key, trigger in self.schedule.take_due(held=self.held):
                task = asyncio.create_task(asyncio.to_thread(self.run_timed, key, trigger))
                running.add(task)  # held until done: the loop keeps only weak references to tasks
                task.add_done_callback(running.discard)


def spec_pass_wanted(body: dict[str, Any], first_seen: bool) -> bool:
    """Whether a FineTuneJob's or MonitorPolicy's watch event asks for a pass at once (for a FineTuneJob, one
    that applies every child): the first event of it since the operator started (a new object, or one to
    resume), or a generation its status has not observed (a new object, or a spec change; the pass writes
    observedGeneration, so it asks once)."""
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


def log_retry(kind: str, namespace: str, name: str, error: Exception, attempt: int, delay: float) -> None:
    """One line for a failed pass that will be retried: what failed, and when the next try is (with the traceback
    when it is not the API server's answer, i.e. likely a bug)."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    log.warning("%s %s/%s: %s: %s; retry %d in %.0fs", kind, namespace, name, type(error).__name__, first_line,
                attempt, delay, exc_info=not isinstance(error, ApiError))


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Every handler of the operator. Each calls a plain function and returns None."""
    _register_lifecycle(registry, operator)
    _register_finetunejob(registry, operator)
    _register_recmodeldeployment(registry, operator)

    @kopf.on.event(GROUP, VERSION, MP_PLURAL, registry=registry, id="monitorpolicy")  # type: ignore[arg-type]
    def track_monitorpolicy(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        # A MonitorPolicy only ever gets timed passes: a new policy or generation is evaluated on the next tick.
        key = (MP_KIND, namespace, name)
        if type == "DELETED":
            operator.schedule.forget(key)
        elif spec_pass_wanted(dict(body), first_seen=not operator.schedule.knows(key)):
            operator.schedule.arm(key, 0.0, "spec")


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
        memo["schedule"] = asyncio.create_task(operator.schedule_forever())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("schedule")
        if task is not None:
            task.cancel()


def _on_spec(registry: kopf.OperatorRegistry, plural: str, reconcile: Callable[..., None]) -> None:
    """A pass that applies every child on create, update and resume of a kind (a spec to act on); a failed pass
    is retried by the schedule, so Kopf sees none fail."""
    def on_spec(namespace: str, name: str, **_: Any) -> None:
        reconcile(namespace, name, "spec", apply_children=True)

    resource = {"group": GROUP, "version": VERSION, "plural": plural, "registry": registry}
    for cause in (kopf.on.create, kopf.on.update, kopf.on.resume):
        cause(**resource, id="reconcile")(on_spec)  # type: ignore[arg-type]


def _register_finetunejob(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    ftj = {"group": GROUP, "version": VERSION, "plural": FTJ_PLURAL, "registry": registry}

    # The handlers are coroutines: most events need no pass, and those that do run it in a worker thread, so the
    # rest costs no thread hop.
    @kopf.on.event(**ftj, id="track")  # type: ignore[arg-type]
    async def track_finetunejob(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        # No on.create/on.update/on.resume here: those make Kopf patch its bookkeeping annotations onto every
        # FineTuneJob. The watch event is enough to tell what the handlers would.
        key = (FTJ_KIND, namespace, name)
        operator.watched.observe(dict(body), deleted=type == "DELETED")
        if type == "DELETED":
            operator.schedule.forget(key)
            operator.metrics.set_phase(namespace, name, None)
            return
        status = dict(body.get("status") or {})
        phase = status.get("phase")
        first_seen = not operator.schedule.knows(key)
        operator.schedule.arm(key, *operator.ftj_next_pass(finetunejob_status.is_final(status), phase))
        if phase:
            operator.metrics.set_phase(namespace, name, phase)
        if phase == "Succeeded":  # only a finished job can change which model a deployment wants
            await asyncio.to_thread(operator.feed_deployments, dict(body))
        if spec_pass_wanted(dict(body), first_seen) and not operator.schedule.backing_off(key):
            operator.spec_passes_waiting += 1
            try:
                await asyncio.to_thread(operator.reconcile_ftj, namespace, name, "spec", True,
                                        copy.deepcopy(dict(body)))
            finally:
                operator.spec_passes_waiting -= 1

    async def on_child(body: kopf.Body, type: str | None = None, **_: Any) -> None:
        child = dict(body)
        operator.watched.observe(child, deleted=type == "DELETED")
        if not operator.child_changed(child, deleted=type == "DELETED"):
            return  # nothing the FineTuneJob's status depends on changed
        await asyncio.to_thread(operator.batch_ftj_of_child, child)

    kopf.on.event("batch", "v1", "jobs", labels={FTJ_OWNER_LABEL: kopf.PRESENT}, registry=registry,
                  id="finetunejob-job")(on_child)
    kopf.on.event("v1", "pods", labels={FTJ_OWNER_LABEL: kopf.PRESENT}, registry=registry,
                  id="finetunejob-pod")(on_child)


def _register_recmodeldeployment(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    _on_spec(registry, RMD_PLURAL, operator.reconcile_rmd)

    @kopf.on.event(group=GROUP, version=VERSION, plural=RMD_PLURAL, registry=registry, id="track")  # type: ignore[arg-type]
    def track_recmodeldeployment(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        key = (RMD_KIND, namespace, name)
        if type == "DELETED":
            operator.schedule.forget(key)
            operator.rmds.forget(namespace, name)
            return
        if not operator.schedule.knows(key):  # ticks until a pass says no rollout is under way
            operator.schedule.arm(key, ROLLOUT_TICK_SECONDS, "rollout")
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
