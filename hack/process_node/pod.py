"""One pod's life on the node: its containers as processes (or podman containers), restarts, deletion."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .api import ApiError
from .common import MARKER, PACKAGE, REPO, UNSHARE, NotReadyYet, log, now, proc_wait
from .downward import expand, field_path, resource_field
from .podman import NODE_LABEL, START_ERROR_CODES, container_name, merged_security
from .probes import Probes
from .status import PodStatus
from .volumes import Volumes

if TYPE_CHECKING:
    from .node import Node


class Container:
    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.restart_count = 0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.ready = False
        self.started = False
        self.done = threading.Event()  # terminated for good (no restart coming)
        self.startup_ok = threading.Event()
        self.env: dict[str, str] = {}
        self.podman_name: str | None = None  # set while it runs from its image with podman

    @property
    def container_id(self) -> str:
        if self.podman_name:
            return f"podman://{self.podman_name}"
        return f"process://{self.proc.pid}" if self.proc else ""

    def status(self) -> dict:
        s = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "", "containerID":
             self.container_id, "ready": self.ready,
             "restartCount": self.restart_count, "started": self.started, "state": self.state}
        if self.last_state:
            s["lastState"] = self.last_state
        return s


class PodRunner(Probes, Volumes, PodStatus):
    """A pod bound to this node: a thread that runs its containers, and what deletes it (probes, volumes and
    status are its mixins, each in its own module)."""

    def __init__(self, node: Node, pod: dict):
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid = meta["uid"]
        self.ns, self.name = meta["namespace"], meta["name"]
        self.dir = node.pods_dir / f"{self.ns}_{self.name}_{self.uid}"
        self.ip: str | None = (pod.get("status") or {}).get("podIP")
        self.lock = threading.RLock()
        self.containers = [Container(c, True) for c in pod["spec"].get("initContainers", [])] + \
                          [Container(c, False) for c in pod["spec"]["containers"]]
        self.deleting = False
        self.deleted = False
        self.terminal = False
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now()
        self.initialized = not pod["spec"].get("initContainers")
        self.last_status: str | None = None
        self.transitions: dict[str, str] = {}
        self.wake = threading.Event()
        self.mounts: dict[str, list[dict]] = {}

    # ------------------------------------------------------------ events from the watch

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"pod-{self.ns}/{self.name}", daemon=True).start()

    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp") and not self.deleting:
                self.deleting = True
                threading.Thread(target=self.terminate, daemon=True).start()

    def on_deleted(self) -> None:
        with self.lock:
            self.deleted = True
            self.deleting = True
        self.kill_all(grace=0)
        self.cleanup()

    # ------------------------------------------------------------ lifecycle

    def log(self, msg: str) -> None:
        log(f"pod {self.ns}/{self.name}: {msg}")

    def run(self) -> None:
        try:
            self.ip = self.node.allocate_ip(self.ip)
            self.dir.mkdir(parents=True, exist_ok=True)
            for sub in ("volumes", "logs", "termination", "tmp"):
                (self.dir / sub).mkdir(exist_ok=True)
            (self.dir / "tmp").chmod(0o1777)
            self.push_status()
            while True:  # volumes may reference objects that do not exist yet
                if self.deleting:
                    return
                try:
                    self.prepare_volumes()
                    break
                except NotReadyYet as e:
                    self.set_waiting("CreateContainerConfigError", str(e))
                    self.push_status()
                    time.sleep(2)
            for c in [c for c in self.containers if c.init]:
                if not self.run_container(c, wait=True):
                    return
            self.initialized = True
            mains = [c for c in self.containers if not c.init]
            threads = [threading.Thread(target=self.run_container, args=(c,), daemon=True) for c in mains]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.finish_if_done()
        except Exception as e:
            self.log(f"failed: {e!r}")
            self.fail("ProcessNodeError", str(e))

    def set_waiting(self, reason: str, message: str) -> None:
        for c in self.containers:
            if not c.proc:
                c.state = {"waiting": {"reason": reason, "message": message}}

    def fail(self, reason: str, message: str) -> None:
        with self.lock:
            self.phase, self.reason, self.message, self.terminal = "Failed", reason, message, True
        self.push_status()
        self.node.write_sd()

    def run_container(self, c: Container, wait: bool = False) -> bool:
        """Run one container, restarting it as the restart policy says. True if it ended
        successfully (or it is a long-running container that was stopped)."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        backoff = 1.0
        while True:
            if self.deleting:
                return False
            code, reason, message = self.start_and_wait(c)
            restart = not self.deleting and (policy == "Always" or (policy == "OnFailure" and code != 0))
            if reason == "ExecutableNotFound":
                restart = False
            if not restart:
                c.done.set()
                self.push_status()
                if c.init and code != 0:
                    self.fail("InitContainerFailed", f"init container {c.name} exited with {code}")
                elif reason == "ExecutableNotFound" or reason == "CreateContainerError":
                    self.fail(reason, message)
                return code == 0
            # Restart with back-off (short, since this serves tests).
            c.last_state, c.restart_count = c.state, c.restart_count + 1
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {backoff:.0f}s restarting failed container={c.name}"}}
            self.push_status()
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)

    def container_env(self, c: dict, local: bool = True) -> dict[str, str]:
        """The container's environment; a local process also gets the host's PATH, HOME and LANG
        and a per-pod TMPDIR (a container from an image has its image's)."""
        env: dict[str, str] = {
            "HOSTNAME": self.name,
            # Services' ClusterIPs are not routable here; point in-cluster clients at the apiserver
            # (at an address its certificate names: kubernetes.default.svc is the other way in).
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.node.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.node.apiserver_port),
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.node.apiserver_port}",
            "RECOPS_SERVE_HOST": self.ip or "127.0.0.1",
        }
        if local:
            env.update({
                "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/root"), "LANG": os.environ.get("LANG", "C.UTF-8"),
                # A per-pod temp dir (not a mount over /tmp, which would hide host paths such
                # as a checkout under /tmp from the process).
                "TMPDIR": str(self.dir / "tmp"),
            })
            venv_bin = REPO / ".venv" / "bin"
            if venv_bin.is_dir():  # the project's `recops` executable lives here
                env["PATH"] = f"{venv_bin}:{env['PATH']}"
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = self.read_object("configmaps", src["configMapRef"]["name"], src["configMapRef"].get("optional"))
                env.update({prefix + k: v for k, v in (data or {}).get("data", {}).items()})
            if "secretRef" in src:
                data = self.read_object("secrets", src["secretRef"]["name"], src["secretRef"].get("optional"))
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in (data or {}).get("data", {}).items()})
        for e in c.get("env", []):
            if "valueFrom" not in e:
                env[e["name"]] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = field_path(self.pod_with_ip(), vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[e["name"]] = resource_field(self.pod, c["name"], vf["resourceFieldRef"])
            elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind = "configmaps" if "configMapKeyRef" in vf else "secrets"
                ref = vf.get("configMapKeyRef") or vf["secretKeyRef"]
                obj = self.read_object(kind, ref["name"], ref.get("optional"))
                data = (obj or {}).get("data", {})
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise NotReadyYet(f"couldn't find key {ref['key']} in {kind[:-1]} {self.ns}/{ref['name']}")
                value = data[ref["key"]]
                env[e["name"]] = base64.b64decode(value).decode() if kind == "secrets" else value
        env[MARKER] = str(self.node.state)
        env["RECOPS_POD_UID"] = self.uid
        return env

    def pod_with_ip(self) -> dict:
        pod = json.loads(json.dumps(self.pod))
        pod.setdefault("status", {}).update(podIP=self.ip, podIPs=[{"ip": self.ip}], hostIP="127.0.0.1")
        return pod

    def read_object(self, kind: str, name: str, optional: bool | None) -> dict | None:
        try:
            return self.node.api.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        except ApiError as e:
            if e.status == 404:
                if optional:
                    return None
                raise NotReadyYet(f'{kind[:-1]} "{name}" not found') from None
            raise

    def start_and_wait(self, c: Container) -> tuple[int, str, str]:
        spec = c.spec
        from_image = bool(self.node.podman and self.node.podman.has_image(spec.get("image", "")))
        try:
            env = self.container_env(spec, local=not from_image)
        except NotReadyYet as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            self.push_status()
            time.sleep(2)
            return self.start_and_wait(c) if not self.deleting else (1, "Error", str(e))
        command = [expand(a, env) for a in spec.get("command", [])]
        args = [expand(a, env) for a in spec.get("args", [])]
        argv = command + args
        term_path = spec.get("terminationMessagePath", "/dev/termination-log")
        term_file = self.dir / "termination" / c.name
        term_file.write_text("")
        status_file = self.dir / "termination" / f"{c.name}.launch.json"
        status_file.unlink(missing_ok=True)
        if not command and not from_image:
            msg = (f"container {c.name} has no command: the process node runs commands locally "
                   f"and cannot use the entrypoint of image {spec.get('image')!r}")
            c.state = {"terminated": {"exitCode": 127, "reason": "ExecutableNotFound", "message": msg,
                                      "startedAt": now(), "finishedAt": now()}}
            return 127, "ExecutableNotFound", msg
        mounts = []
        for vm in spec.get("volumeMounts", []):
            src = Path(self.volume_dir(vm["name"]))
            if vm.get("subPath"):
                src = src / expand(vm["subPath"], env)
                if not src.exists():
                    src.mkdir(parents=True)
            mounts.append({"source": str(src), "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        mounts.append({"source": str(term_file), "target": term_path, "readOnly": False})
        if from_image:
            popen_argv, popen_env = self.podman_command(c, command, args, env, mounts)
        else:
            c.podman_name = None
            launch = {"argv": argv, "env": env, "mounts": mounts, "workingDir": spec.get("workingDir"),
                      "statusFile": str(status_file), "image": spec.get("image", "")}
            launch_file = self.dir / f"{c.name}.launch-spec.json"
            launch_file.write_text(json.dumps(launch))
            # A private mount namespace per container; `unshare` execs (no fork), so the
            # pid we hold is the container's process.
            popen_argv = [UNSHARE, "--mount", "--propagation", "private", sys.executable,
                          str(PACKAGE), "exec", str(launch_file)]
            popen_env = {MARKER: str(self.node.state)}
        log_file = self.dir / "logs" / f"{c.name}-{c.restart_count}.log"
        with open(log_file, "ab") as out:
            # Own session, so the group can be signalled.
            proc = subprocess.Popen(popen_argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=popen_env)
        with self.lock:
            c.proc = proc
        if c.podman_name and self.node.podman:
            # Running once podman has started it, as the kubelet reports, not when `podman run` was asked to.
            self.node.podman.wait_running(c.podman_name, proc)
        with self.lock:
            started = now()
            c.state = {"running": {"startedAt": started}}
            # With a startup probe the container counts as started (and other probes
            # begin) only once that probe succeeds.
            c.started = not spec.get("startupProbe")
            c.ready = c.started and not spec.get("readinessProbe")
            c.env, c.startup_ok = env, threading.Event()
            if c.started:
                c.startup_ok.set()
        self.log(f"started container {c.name} {c.container_id}: {argv or spec.get('image')}")
        self.push_status()
        probes = threading.Event()
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if spec.get(kind):
                threading.Thread(target=self.probe_loop, args=(c, kind, spec[kind], proc, probes, env),
                                 daemon=True).start()
        code = proc.wait()
        probes.set()
        finished = now()
        reason, message = ("Completed" if code == 0 else "Error"), ""
        if code < 0:  # killed by a signal: report as a shell would
            code = 128 - code
        podman_error = self.podman_error(c, code, log_file)
        if status_file.exists():  # the launcher could not start the command
            info = json.loads(status_file.read_text())
            reason, message = info["reason"], info["message"]
        elif podman_error:
            reason, message = "StartError", podman_error
        else:
            message = term_file.read_bytes()[:4096].decode(errors="replace")
            if not message and code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                lines = log_file.read_bytes()[-2048:].decode(errors="replace").splitlines()[-80:]
                message = "\n".join(lines)
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished,
                "containerID": c.container_id}
        if message:
            term["message"] = message
        with self.lock:
            c.state = {"terminated": term}
            c.ready = False
        self.log(f"container {c.name} exited {code} ({reason})")
        return code, reason, message

    def podman_command(self, c: Container, command: list[str], args: list[str], env: dict[str, str],
                       mounts: list[dict]) -> tuple[list[str], dict[str, str]]:
        """`podman run` of a container whose image is in local storage, given what a kubelet gives it."""
        assert self.node.podman
        security = merged_security(self.pod["spec"], c.spec)
        # The termination-message file (the last mount) is written by the container's user, whoever it is.
        Path(mounts[-1]["source"]).chmod(0o666)
        if security.get("fsGroup") is not None:  # the pod's own volumes belong to its fsGroup, as in k8s
            volumes = self.dir / "volumes"
            for path in [volumes, *volumes.rglob("*")]:
                os.chown(path, -1, security["fsGroup"])
        c.podman_name = container_name(self.ns, self.name, c.name, self.uid)
        return self.node.podman.run_command(
            name=c.podman_name, image=c.spec["image"], command=command, args=args, env=env, mounts=mounts,
            working_dir=c.spec.get("workingDir"), security=security, hostname=self.name,
            service_ip=self.node.service_ip or "127.0.0.1", labels={NODE_LABEL: str(self.node.state)})

    @staticmethod
    def podman_error(c: Container, code: int, log_file: Path) -> str | None:
        """Podman's own words when it, not the container's command, ended the run."""
        if not c.podman_name or code not in START_ERROR_CODES or not log_file.exists():
            return None
        lines = log_file.read_bytes()[-4096:].decode(errors="replace").splitlines()
        return next((line for line in reversed(lines) if line.startswith("Error: ")), None)

    def signal_container(self, c: Container, proc: subprocess.Popen, sig: int) -> None:
        if not c.podman_name or proc.poll() is not None:
            self.signal_proc(proc, sig)
            return
        assert self.node.podman
        if sig == signal.SIGKILL:
            self.node.podman.remove(c.podman_name)
        else:
            self.node.podman.signal(c.podman_name, signal.Signals(sig).name)

    def exec_argv(self, c: Container, proc: subprocess.Popen, command: list[str]) -> tuple[list[str], dict]:
        """A command run inside the container (exec probes, preStop hooks)."""
        if c.podman_name and self.node.podman:
            return self.node.podman.exec_command(c.podman_name, command)
        return ["nsenter", "-t", str(proc.pid), "-m", "--", *command], c.env



    @staticmethod
    def signal_proc(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the container's whole process group

    def pre_stop(self, c: Container, timeout: float) -> None:
        hook = c.spec["lifecycle"]["preStop"]
        try:
            if "exec" in hook and c.proc:
                exec_argv, exec_env = self.exec_argv(c, c.proc, hook["exec"]["command"])
                subprocess.run(exec_argv, env=exec_env, capture_output=True, timeout=timeout)
            elif "httpGet" in hook:
                self.probe_once({"httpGet": hook["httpGet"], "timeoutSeconds": timeout}, c, c.proc, c.env)
            elif "sleep" in hook:
                time.sleep(min(timeout, hook["sleep"]["seconds"]))
        except Exception as e:  # a failing hook does not stop the deletion
            self.log(f"preStop hook of {c.name} failed: {e}")

    def kill_all(self, grace: float) -> None:
        running = [(c, c.proc) for c in self.containers if c.proc and c.proc.poll() is None]
        for c, p in running:
            self.signal_container(c, p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c, p in running:
            if proc_wait(p, max(0.0, deadline - time.monotonic())) is None:
                self.signal_container(c, p, signal.SIGKILL)
                if proc_wait(p, 10) is None:  # podman itself stuck: its group goes too
                    self.signal_proc(p, signal.SIGKILL)
                    p.wait()

    def terminate(self) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the pod."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self.log(f"deleting (grace {grace}s)")
        deadline = time.monotonic() + grace
        hooks = [threading.Thread(target=self.pre_stop, args=(c, grace), daemon=True) for c in self.containers
                 if c.proc and c.proc.poll() is None and (c.spec.get("lifecycle") or {}).get("preStop")]
        for t in hooks:  # preStop hooks first, within the grace period, as the kubelet does
            t.start()
        for t in hooks:
            t.join(max(0.0, deadline - time.monotonic()))
        self.kill_all(max(0.0, deadline - time.monotonic()))
        for c in self.containers:
            c.done.set()
        with self.lock:
            if not self.terminal:
                codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in self.containers if not c.init]
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self.terminal = True
        self.push_status()
        self.node.finalize_delete(self.pod)
        self.cleanup()

    def cleanup(self) -> None:
        self.node.release_ip(self.ip)
        self.node.forget(self.uid)
        # Keep the logs; drop volume data and the per-pod /tmp.
        for sub in ("volumes", "tmp"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)

    def finish_if_done(self) -> None:
        mains = [c for c in self.containers if not c.init]
        if self.deleting or not all(c.done.is_set() for c in mains):
            return
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
        with self.lock:
            if not self.terminal:
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self.terminal = True
        self.push_status()
        self.node.write_sd()

    # ------------------------------------------------------------ status
