"""The RecModelDeployment controller: read, decide (recops.controllers.rollout), apply, status.

One pass (`reconcile`) is level-based: it reads the RecModelDeployment, the FineTuneJobs its
model source names, its Deployments (and, when pods are not ready, why) and, when a canary
analysis is due, Prometheus; decides; server-side applies the children; writes the status
through the status subresource only when it changed; posts the decisions as Events. The
user's object is never written: steering annotations are recorded in status as handled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recops.api import conditions as c
from recops.api.common import API_VERSION, format_time
from recops.api.contracts import LINEAGE_LABEL
from recops.api.finetunejob import PLURAL as FTJ_PLURAL
from recops.api.recmodeldeployment import KIND, PLURAL, RecModelDeployment
from recops.builders import recmodeldeployment as builders
from recops.builders.common import BuilderSettings
from recops.controllers import rollout
from recops.controllers.conditions import set_condition, stored_invalid
from recops.controllers.feedback_key import Outcome, SharedFeedbackKey, ensure_shared_feedback_secret
from recops.controllers.kube import ApiError, Kube, is_rejection, object_path, rejection, resource_path
from recops.controllers.status import EventPoster, ignore_event, write_status
from recops.controllers.status import parse as parse_resource
from recops.controllers.work import on_loop
from recops.monitor.evaluation import measure_builtin
from recops.monitor.promql import TrackSelector

if TYPE_CHECKING:
    from recops.monitor.prometheus import Prometheus, PrometheusAuth

log = logging.getLogger("recops.controllers.recmodeldeployment")

def rmd_path(namespace: str, name: str, subresource: str | None = None) -> str:
    return resource_path(API_VERSION, PLURAL, namespace, name, subresource)


def deployment_path(namespace: str, name: str) -> str:
    return resource_path("apps/v1", "deployments", namespace, name)


@dataclass
class PassResult:
    phase: str | None = None
    active: bool = False  # a rollout is under way: pass again soon
    status_written: bool = False
    gone: bool = False


ANALYSIS_TIMEOUT_S = 120.0  # every query of one analysis, on the operator's loop (each has its own timeout)


def parse(body: dict[str, Any]) -> tuple[RecModelDeployment | None, str | None]:
    return parse_resource(body, RecModelDeployment, builders.problems)


def _now() -> datetime:
    return datetime.now(UTC)


class RecModelDeploymentController:
    def __init__(self, kube: Kube, settings: BuilderSettings, post_event: EventPoster = ignore_event,
                 prometheus_url: str | None = None, prometheus_auth: PrometheusAuth | None = None,
                 now: Callable[[], datetime] = _now, shared_feedback_key: SharedFeedbackKey | None = None,
                 prometheus_factory: Callable[..., Prometheus] | None = None) -> None:
        self.kube = kube
        # A seam for tests (an in-memory Prometheus); called as Prometheus(url, auth=...).
        self.prometheus_factory = prometheus_factory
        self.shared_feedback_key = shared_feedback_key
        self.settings = settings
        self.post_event = post_event
        self.prometheus_url = prometheus_url
        self.prometheus_auth = prometheus_auth
        self.now = now
        # (namespace, name, kind, child name) -> hash of what was applied last: unchanged children are not re-sent.
        self._applied: dict[tuple[str, str, str, str], str] = {}
        self._lock = threading.Lock()
        # The operator's event loop: the analysis's Prometheus queries run on it (a pass runs in a worker thread).
        # None (tests, tools): each analysis runs them on a loop of its own.
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- one pass ---------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str, *, apply_children: bool = False) -> PassResult:
        body = self.kube.get(rmd_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)  # children are owned: the garbage collector removes them
            return PassResult(gone=True)
        if apply_children:
            self.forget(namespace, name)
        now = self.now()
        rmd, invalid = parse(body)
        if invalid is None and not apply_children:
            # The API server refused this generation's children once: not asked again on every tick.
            invalid = stored_invalid(body, c.READY)
        if rmd is None or invalid is not None:
            return self._invalid(body, invalid or "invalid spec", now)

        annotations = dict(body["metadata"].get("annotations") or {})
        status = rollout.operator_status(body.get("status"))
        events = rollout.apply_retry(status, annotations)
        if events:
            status["retried"] = True
        selection = self.select(rmd, status)
        observed = self.observe(rmd, status)
        analysis = None
        canary = status.get("canary")
        if canary and observed.canary_version == canary["modelVersion"] and observed.canary_ready > 0 \
                and rollout.analysis_due(rmd.spec, status, now):
            analysis = self.analyse(rmd, status)
        plan = rollout.decide(rmd.spec, annotations, body["metadata"].get("generation"), status, selection,
                              observed, analysis, now, endpoint=builders.endpoint(rmd))
        try:
            self.apply(rmd, plan, observed)
        except ApiError as error:
            if not is_rejection(error):  # transient or a permission problem: backed off and retried
                raise
            return self._invalid(body, rejection(error), now)
        written = self.write_status(body, plan.status)
        for type_, reason, message in events + plan.events:
            self.post_event(body, type_, reason, message)
        return PassResult(phase=plan.status.get("phase"), active=plan.active, status_written=written)

    def _invalid(self, body: dict[str, Any], message: str, now: datetime) -> PassResult:
        status = rollout.operator_status(body.get("status"))
        generation = body["metadata"].get("generation")
        now_text = format_time(now)
        conditions = status.get("conditions") or []
        previous: dict[str, Any] = next((x for x in conditions if x.get("type") == c.READY), {})
        conditions = set_condition(conditions, c.READY, False, c.INVALID_SPEC, message[:2000], generation=generation,
                                   now=now_text)
        status.update(conditions=conditions, observedGeneration=generation)
        if not status.get("stable"):
            status["phase"] = "Pending"
        written = self.write_status(body, status)
        if previous.get("reason") != c.INVALID_SPEC or previous.get("message") != message[:2000]:
            self.post_event(body, "Warning", c.INVALID_SPEC, message)
        return PassResult(phase=status.get("phase"), status_written=written)

    # --- reads ------------------------------------------------------------------------------
    def select(self, rmd: RecModelDeployment, status: dict[str, Any]) -> rollout.Selection:
        source = rmd.spec.model
        rejected = rollout.rejected_versions(status)
        namespace = builders.namespace_of(rmd)
        if source.uri:
            return rollout.select_uri(source.uri, rejected)
        if source.fine_tune_job_ref:
            ftj = self.kube.get(resource_path(API_VERSION, FTJ_PLURAL, namespace, source.fine_tune_job_ref.name))
            return rollout.select_fine_tune_job(source.fine_tune_job_ref.name, ftj, rejected)
        assert source.lineage is not None
        ftjs = self.kube.list(resource_path(API_VERSION, FTJ_PLURAL, namespace),
                              label_selector=f"{LINEAGE_LABEL}={source.lineage}")
        return rollout.select_lineage(source.lineage, ftjs, status.get("stable"), rejected)

    def observe(self, rmd: RecModelDeployment, status: dict[str, Any]) -> rollout.Observed:
        name, namespace = builders.name_of(rmd), builders.namespace_of(rmd)
        stable = self.kube.get(deployment_path(namespace, builders.deployment_name(name, "stable")))
        canary = self.kube.get(deployment_path(namespace, builders.deployment_name(name, "canary")))
        observed = rollout.Observed()
        if stable is not None:
            spec, st = stable.get("spec") or {}, stable.get("status") or {}
            observed.stable_replicas = spec.get("replicas")
            observed.stable_ready = int(st.get("readyReplicas") or 0)
            observed.stable_version = (stable["metadata"].get("annotations") or {}).get(builders.MODEL_VERSION_LABEL)
            want = int(spec.get("replicas") or 0)
            observed.stable_rolled_out = (
                int(st.get("observedGeneration") or 0) >= int(stable["metadata"].get("generation") or 0)
                and int(st.get("updatedReplicas") or 0) >= want
                and int(st.get("replicas") or 0) == int(st.get("updatedReplicas") or 0)
                and observed.stable_ready >= want
            )
        if canary is not None and not canary["metadata"].get("deletionTimestamp"):
            observed.canary_ready = int((canary.get("status") or {}).get("readyReplicas") or 0)
            observed.canary_version = (canary["metadata"].get("annotations") or {}).get(builders.MODEL_VERSION_LABEL)
        if stable is None or not observed.stable_rolled_out or (status.get("canary") and observed.canary_ready == 0):
            observed.problem = self.pod_problem(namespace, name)
        return observed

    def pod_problem(self, namespace: str, name: str) -> str | None:
        """Why the server pods are not ready, in the words of the most telling container status."""
        selector = ",".join(f"{k}={v}" for k, v in builders.selector_labels(name).items())
        try:
            pods = self.kube.list(resource_path("v1", "pods", namespace), label_selector=selector)
        except ApiError:
            return None
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            st = pod.get("status") or {}
            for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
                state = cs.get("state") or {}
                last = (cs.get("lastState") or {}).get("terminated") or {}
                waiting = state.get("waiting") or {}
                terminated = state.get("terminated") or last
                if terminated and terminated.get("exitCode"):
                    text = (terminated.get("message") or terminated.get("reason") or "").strip().splitlines()
                    detail = text[-1] if text else ""
                    return f"pod {pod_name} container {cs.get('name')} exited with {terminated.get('exitCode')}: " \
                           f"{detail}"[:500]
                if waiting.get("reason") and waiting.get("reason") not in ("ContainerCreating", "PodInitializing"):
                    return f"pod {pod_name} container {cs.get('name')}: {waiting.get('reason')} " \
                           f"{waiting.get('message') or ''}".strip()[:500]
            for cond in st.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    return f"pod {pod_name} is unschedulable: {cond.get('message') or ''}"[:500]
        return None

    def analyse(self, rmd: RecModelDeployment, status: dict[str, Any]) -> list[dict[str, Any]]:
        canary_spec = rmd.spec.rollout.canary
        assert canary_spec is not None
        rules = canary_spec.analysis.rules
        metrics: list[str] = sorted({str(r.metric) for r in rules})
        if not self.prometheus_url:
            failed = rollout.TrackMeasurements.failed("no Prometheus configured (recops operator --prometheus-url)")
            measured = dict.fromkeys(metrics, failed)
        else:
            name, namespace = builders.name_of(rmd), builders.namespace_of(rmd)
            tracks = {
                track: TrackSelector(namespace, name, track, (status.get(track) or {}).get("modelVersion"))
                for track in ("stable", "canary")
            }
            measuring = self._measure(metrics, tracks, canary_spec.analysis.window)
            measured = on_loop(measuring, self.loop, ANALYSIS_TIMEOUT_S)
        return rollout.evaluate_rules(rules, canary_spec.analysis.min_impressions, measured)

    async def _measure(self, metrics: list[str], tracks: dict[str, TrackSelector],
                       window: str) -> dict[str, rollout.TrackMeasurements]:
        from recops.monitor.prometheus import Prometheus, PrometheusError

        assert self.prometheus_url is not None
        prometheus = (self.prometheus_factory or Prometheus)(self.prometheus_url, auth=self.prometheus_auth)

        async def one(metric: str) -> rollout.TrackMeasurements:
            try:
                return rollout.TrackMeasurements(
                    canary=await measure_builtin(prometheus, metric, tracks["canary"], window),
                    stable=await measure_builtin(prometheus, metric, tracks["stable"], window),
                )
            except PrometheusError as error:
                return rollout.TrackMeasurements.failed(str(error))

        results = await asyncio.gather(*(one(m) for m in metrics))
        return dict(zip(metrics, results, strict=True))

    # --- writes -----------------------------------------------------------------------------
    def apply(self, rmd: RecModelDeployment, plan: rollout.Plan, observed: rollout.Observed) -> None:
        name, namespace = builders.name_of(rmd), builders.namespace_of(rmd)
        ref = rmd.spec.serving.feedback_key_secret_ref
        if ref is None:
            self.ensure_feedback_secret(rmd)
        elif self.shared_feedback_key is not None and self.shared_feedback_key.named_by(ref):
            self.ensure_shared_feedback_secret(namespace, self.shared_feedback_key)
        self._apply(namespace, name, builders.service(rmd))
        if plan.stable is not None:
            self._apply(namespace, name, builders.deployment(rmd, "stable", plan.stable, self.settings,
                                                            plan.stable_replicas))
        canary_name = builders.deployment_name(name, "canary")
        if plan.canary is not None:
            self._apply(namespace, name, builders.deployment(rmd, "canary", plan.canary, self.settings,
                                                            plan.canary_replicas))
        elif observed.canary_version is not None or observed.canary_ready:
            self._delete(namespace, name, "Deployment", deployment_path(namespace, canary_name))
        hpa = builders.hpa(rmd)
        hpa_name = builders.deployment_name(name, "stable")
        if hpa is not None:
            self._apply(namespace, name, hpa)
        else:
            self._delete(namespace, name, "HorizontalPodAutoscaler",
                         resource_path("autoscaling/v2", "horizontalpodautoscalers", namespace, hpa_name))
        pdb = builders.pdb(rmd)
        if pdb is not None:
            self._apply(namespace, name, pdb)
        else:
            self._delete(namespace, name, "PodDisruptionBudget",
                         resource_path("policy/v1", "poddisruptionbudgets", namespace, builders.service_name(name)))

    def _apply(self, namespace: str, owner: str, manifest: dict[str, Any]) -> None:
        key = (namespace, owner, manifest["kind"], manifest["metadata"]["name"])
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        with self._lock:
            if self._applied.get(key) == digest:
                return
        self.kube.apply(manifest)
        with self._lock:
            self._applied[key] = digest

    def _delete(self, namespace: str, owner: str, kind: str, path: str) -> None:
        """Delete a child that should not exist; a no-op (no request) when it is known to be gone."""
        key = (namespace, owner, kind, path.rsplit("/", 1)[-1])
        with self._lock:
            if self._applied.get(key) == "deleted":
                return
        try:
            self.kube.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiError as error:
            if error.status != 404:
                raise
        with self._lock:
            self._applied[key] = "deleted"

    def ensure_feedback_secret(self, rmd: RecModelDeployment) -> None:
        """The default feedback-key Secret, created once with random values (never rotated by recops)."""
        name, namespace = builders.name_of(rmd), builders.namespace_of(rmd)
        key = (namespace, name, "Secret", builders.feedback_secret_name(name))
        with self._lock:
            if key in self._applied:
                return
        manifest = builders.feedback_secret(rmd, secrets.token_urlsafe(32), secrets.token_urlsafe(24))
        try:
            self.kube.request("POST", resource_path("v1", "secrets", namespace), body=manifest)
        except ApiError as error:
            if error.status == 403 and "NamespaceTerminating" in str(error.body):
                return  # everything here is going away
            if error.status != 409:  # exists already: keep its key, or feedback in flight would not verify
                raise
        with self._lock:
            self._applied[key] = "created"

    def ensure_shared_feedback_secret(self, namespace: str, shared: SharedFeedbackKey) -> None:
        """The namespace's shared feedback key, when a deployment names it (its namespace may not have existed when
        the operator started)."""
        key = (namespace, "", "Secret", shared.secret)  # no owner: forget_all (drift repair) makes it checked again
        with self._lock:
            if key in self._applied:
                return
        outcome = ensure_shared_feedback_secret(self.kube, namespace, shared)
        if outcome is Outcome.CREATED:
            log.info("created the shared feedback-key Secret %s/%s", namespace, shared.secret)
        with self._lock:
            self._applied[key] = outcome.value

    def forget_all(self) -> None:
        """The next pass of every object applies all its children again (repairs edits made by others)."""
        with self._lock:
            self._applied.clear()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._applied if k[0] == namespace and k[1] == name]:
                del self._applied[key]

    def write_status(self, body: dict[str, Any], new_status: dict[str, Any]) -> bool:
        meta = body["metadata"]
        return write_status(self.kube, rmd_path(meta["namespace"], meta["name"], "status"),
                            rollout.operator_status(body.get("status")), new_status) is not None


def rmds_following(kube: Kube, ftj: dict[str, Any]) -> list[tuple[str, str]]:
    """The RecModelDeployments a FineTuneJob may feed: those pinned to it or following its lineage."""
    meta = ftj.get("metadata") or {}
    namespace = meta.get("namespace")
    if not namespace:
        return []
    lineage = (meta.get("labels") or {}).get(LINEAGE_LABEL)
    found = []
    for rmd in kube.list(resource_path(API_VERSION, PLURAL, namespace)):
        model = (rmd.get("spec") or {}).get("model") or {}
        if (lineage and model.get("lineage") == lineage) or (model.get("fineTuneJobRef") or {}).get("name") == \
                meta.get("name"):
            found.append((namespace, rmd["metadata"]["name"]))
    return found


__all__ = ["KIND", "PassResult", "RecModelDeploymentController", "object_path", "parse", "rmds_following"]
