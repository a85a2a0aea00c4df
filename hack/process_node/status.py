"""What a pod's status says (phase, conditions, container statuses), and its write to the API server."""

from __future__ import annotations

import json

from .api import ApiError
from .common import now


class PodStatus:
    """PodRunner's status."""

    def compute_status(self) -> dict:
        with self.lock:
            mains = [c for c in self.containers if not c.init]
            inits = [c for c in self.containers if c.init]
            phase = self.phase
            if not self.terminal and any("running" in c.state or c.restart_count for c in mains):
                phase = "Running"
            all_ready = bool(mains) and all(c.ready for c in mains) and not self.terminal and not self.deleting
            started = any(c.proc for c in self.containers)

            def cond(ty: str, ok: bool, reason: str | None = None) -> dict:
                st = "True" if ok else "False"
                key = f"{ty}={st}"
                if key not in self.transitions:
                    self.transitions = {k: v for k, v in self.transitions.items() if not k.startswith(ty + "=")}
                    self.transitions[key] = now()
                c = {"type": ty, "status": st, "lastTransitionTime": self.transitions[key], "lastProbeTime": None}
                if reason and not ok:
                    c["reason"] = reason
                return c
            done_reason = "PodCompleted" if self.terminal else "ContainersNotReady"
            status = {
                "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "conditions": [
                    cond("PodReadyToStartContainers", started),
                    cond("Initialized", self.initialized, "ContainersNotInitialized"),
                    cond("ContainersReady", all_ready, done_reason),
                    cond("Ready", all_ready, done_reason),
                    cond("PodScheduled", True),
                ],
                "containerStatuses": [c.status() for c in mains],
            }
            if inits:
                status["initContainerStatuses"] = [c.status() for c in inits]
            if self.ip:
                status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
            if self.reason:
                status["reason"], status["message"] = self.reason, self.message
            return status

    def push_status(self) -> None:
        if self.deleted:
            return
        status = self.compute_status()
        text = json.dumps(status, sort_keys=True)
        with self.lock:
            if text == self.last_status:
                return
            self.last_status = text
        try:
            self.node.api.request("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                                  {"metadata": {"uid": self.uid}, "status": status},
                                  "application/strategic-merge-patch+json")
        except ApiError as e:
            if e.status not in (404, 409):
                self.log(f"status update failed: {e}")
        self.node.write_sd()

