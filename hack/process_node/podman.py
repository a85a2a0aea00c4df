"""The process node's container runtime: runs a pod's container from its image with podman
when that image is in local podman storage (issue 20), the way a kubelet's runtime would,
and the one Service such a container needs, `kubernetes` (ApiserverProxy).

Podman is set up as ../shared/notes/containers.md says works on these machines (runc,
cgroupfs, no default ulimits, overlay storage under ~/.cache) and shares its storage with
`make images`, so an image built there is found here. Every container gets the host
network (pod IPs are loopback addresses; a server binds its RECOPS_SERVE_HOST),
`kubernetes.default.svc` resolving to the apiserver, the pod's volumes bind-mounted, its
env passed by name (values travel in podman's environment, not in its argv), and its
securityContext (user, groups, read-only root, no new privileges, dropped capabilities).

Stdlib only, like the rest of the process node; tests load it on its own (no imports of the package).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

# Where images and containers live: the storage `make images` (hack/images) builds into.
ROOT_ENV = "RECOPS_IMAGES_DIR"
DEFAULT_ROOT = Path.home() / ".cache" / "recops" / "containers"
NODE_LABEL = "recops.dev/process-node-dir"  # on every container: lets a restarted node remove leftovers
CONTAINERS_CONF = """\
# Written by hack/process_node/podman.py: the sandbox's hard limits are below podman's default ulimits.
[containers]
default_ulimits = []
pids_limit = 0
"""
# Podman's own errors (125: podman failed, 126: command cannot be invoked, 127: command not found)
# read as a kubelet's StartError, not as the container's exit code, when podman said why.
START_ERROR_CODES = (125, 126, 127)


class Podman:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
        self.exe = shutil.which("podman")
        self.conf = self.root / "process-node.conf"  # hack/images writes its own containers.conf

    @property
    def available(self) -> bool:
        return self.exe is not None

    def global_args(self) -> list[str]:
        return [str(self.exe), "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--storage-driver", "overlay", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file"]

    def base_env(self) -> dict[str, str]:
        if not self.conf.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.conf.write_text(CONTAINERS_CONF)
        return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(Path.home()),
                "CONTAINERS_CONF": str(self.conf)}

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.global_args(), *args], env=self.base_env(), capture_output=True, text=True,
                              timeout=timeout)

    def has_image(self, image: str) -> bool:
        """Whether `image` is in local storage (nothing is ever pulled)."""
        if not self.available or not image:
            return False
        try:
            return self.podman("image", "exists", image).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def run_command(self, *, name: str, image: str, command: list[str], args: list[str], env: dict[str, str],
                    mounts: list[dict], working_dir: str | None, security: dict, hostname: str,
                    service_ip: str, labels: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """argv and environment of an attached `podman run` of one container; it exits with the
        container's exit code and its output is the container's log."""
        argv = [*self.global_args(), "run", "--rm", "--replace", "--name", name, "--network", "host",
                "--hostname", hostname, "--add-host", f"kubernetes.default.svc:{service_ip}",
                "--add-host", f"kubernetes.default.svc.cluster.local:{service_ip}",
                "--pull", "never", "--log-driver", "none", "--stop-signal", "SIGTERM"]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        for m in mounts:
            argv += ["--mount", f"type=bind,source={m['source']},destination={m['target']}"
                     + (",ro=true" if m["readOnly"] else "")]
        popen_env = self.base_env()
        for key, value in env.items():
            if key in popen_env:  # podman's own variables: this one's value goes in the argv
                argv += ["--env", f"{key}={value}"]
            else:
                argv += ["--env", key]
                popen_env[key] = value
        argv += security_args(security)
        if working_dir:
            argv += ["--workdir", working_dir]
        if command:
            argv += ["--entrypoint", json.dumps(command)]
        return [*argv, image, *args], popen_env

    def signal(self, name: str, sig: str) -> None:
        self.podman("kill", "--signal", sig, name, timeout=30)

    def remove(self, name: str) -> None:
        """Stop (SIGKILL) and remove a container; nothing if it is gone."""
        self.podman("rm", "--force", "--time", "0", "--ignore", name, timeout=60)

    def wait_running(self, name: str, run: subprocess.Popen, poll_s: float = 0.2) -> None:
        """Until container `name` runs, or `run` (its `podman run`) has exited: the container is created a moment
        (seconds, on a busy machine) after `podman run` starts."""
        while run.poll() is None:
            inspected = self.podman("container", "inspect", "--format", "{{.State.Running}}", name)
            if inspected.returncode == 0 and inspected.stdout.strip() == "true":
                return
            time.sleep(poll_s)

    def exec_command(self, name: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
        return [*self.global_args(), "exec", name, *command], self.base_env()

    def remove_labelled(self, value: str) -> list[str]:
        """Remove every container this node (its state dir) left behind; their names."""
        if not self.available:
            return []
        listing = self.podman("ps", "--all", "--filter", f"label={NODE_LABEL}={value}", "--format", "{{.Names}}")
        names = listing.stdout.split()
        for name in names:
            self.remove(name)
        return names


def security_args(security: dict) -> list[str]:
    """The pod's and container's securityContext (merged, the container's winning) as podman flags."""
    args: list[str] = []
    user, group = security.get("runAsUser"), security.get("runAsGroup")
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    for extra in [*security.get("supplementalGroups", []), security.get("fsGroup")]:
        if extra is not None:
            args += ["--group-add", str(extra)]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")  # podman then mounts tmpfs at /tmp, /run and /var/tmp, as a runtime may
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    capabilities = security.get("capabilities") or {}
    args += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
    args += [f"--cap-add={c}" for c in capabilities.get("add", [])]
    if security.get("privileged"):
        args.append("--privileged")
    return args


def merged_security(pod_spec: dict, container_spec: dict) -> dict:
    """Pod-level securityContext overlaid by the container's, as the kubelet resolves them."""
    pod = pod_spec.get("securityContext") or {}
    container = container_spec.get("securityContext") or {}
    merged = {k: pod[k] for k in ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups") if k in pod}
    merged.update(container)
    return merged


def container_name(ns: str, pod: str, container: str, uid: str) -> str:
    return f"k8s_{container}_{pod}_{ns}_{uid[:8]}"


class ApiserverProxy:
    """What kube-proxy does for the `kubernetes` Service: a TCP relay from SERVICE_IP:443 to the
    apiserver, so https://kubernetes.default.svc (Kopf's in-cluster address; the apiserver's
    certificate names it) reaches the apiserver from a container, as on a real cluster."""

    PORT = 443

    def __init__(self, service_ip: str, apiserver: tuple[str, int]):
        self.service_ip, self.apiserver = service_ip, apiserver

    def start(self) -> None:
        apiserver = self.apiserver

        class Relay(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(apiserver, timeout=10) as upstream:
                    upstream.settimeout(None)
                    back = threading.Thread(target=pipe, args=(upstream, self.request), daemon=True)
                    back.start()
                    pipe(self.request, upstream)
                    back.join()

        server = socketserver.ThreadingTCPServer((self.service_ip, self.PORT), Relay)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="apiserver-proxy", daemon=True).start()


def pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until the source ends, then end the sink's sending side (half-close, as TCP relays do)."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
