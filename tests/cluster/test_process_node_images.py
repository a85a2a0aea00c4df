"""The process node runs a container from its image with podman when the image is in local
podman storage (issue 20), as a kubelet would: the service-account token (from the TokenRequest
API), CA and namespace mounted, `kubernetes.default.svc` and KUBERNETES_SERVICE_HOST/PORT reaching
the apiserver, env and command from the pod spec, the securityContext honoured, exit code,
termination message and logs reported, and the container stopped on deletion.

Uses the operator image (it has python3; built by hack/images, seconds when nothing changed);
skips without podman.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from tests.support.cluster import ON_PROCESS_NODE, Cluster, wait_until
from tests.support.images import operator_image, podman_runtime

# The time limit leaves room for a cold build of the operator image (its first use in a session).
pytestmark = [pytest.mark.cluster, pytest.mark.images, pytest.mark.timeout(300 + 1800)]

# Runs inside the container: what it sees, as the termination message.
PROBE = textwrap.dedent("""
    import json, os, socket, ssl, sys, urllib.request
    SA = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(f"{SA}/token").read()
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")

    def whoami(base):
        request = urllib.request.Request(
            f"{base}/apis/authentication.k8s.io/v1/selfsubjectreviews", method="POST",
            data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return json.load(response)["status"]["userInfo"]["username"]

    try:
        open("/etc/written", "w")
        read_only_root = False
    except OSError:
        read_only_root = True
    env_host = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    seen = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "hostname": socket.gethostname(), "namespace": open(f"{SA}/namespace").read(),
            "svc": whoami("https://kubernetes.default.svc"), "env": whoami(env_host),
            "greeting": os.environ["GREETING"], "secret": os.environ["SECRET_WORD"],
            "read_only_root": read_only_root, "path": os.environ["PATH"]}
    print("hello from the image", flush=True)
    open("/dev/termination-log", "w").write(json.dumps(seen))
    sys.exit(3)
""")


def image_pod(name: str, command: list[str], args: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    image = operator_image()
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", "serviceAccountName": "runner", **ON_PROCESS_NODE,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10002, "runAsGroup": 10003, "fsGroup": 10004,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "command": command, "args": args or [],
                "env": [{"name": "GREETING", "value": "hello $(KUBERNETES_SERVICE_HOST)"},
                        {"name": "SECRET_WORD", "valueFrom": {"secretKeyRef": {"name": "words", "key": "word"}}}],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
            **spec,
        },
    }


@pytest.fixture
def image_namespace(cluster: Cluster, namespace: str) -> str:
    operator_image()
    cluster.kubectl("create", "serviceaccount", "runner", "-n", namespace)
    cluster.kubectl("create", "secret", "generic", "words", "--from-literal=word=swordfish", "-n", namespace)
    return namespace


def test_container_runs_from_its_image_as_a_kubelet_would(cluster: Cluster, image_namespace: str) -> None:
    ns = image_namespace
    cluster.apply(image_pod("probe", ["python3"], args=["-c", PROBE]), ns)
    done = cluster.wait_pod_phase(ns, "probe", {"Failed", "Succeeded"}, timeout=120)
    (status,) = done.status.container_statuses
    term = status.state.terminated
    assert done.status.phase == "Failed" and term.exit_code == 3, term
    assert status.container_id.startswith("podman://"), status.container_id
    seen = json.loads(term.message)
    assert (seen["uid"], seen["gid"]) == (10002, 10003), seen
    assert 10004 in seen["groups"], seen  # fsGroup
    assert seen["hostname"] == "probe" and seen["namespace"] == ns, seen
    # A real bound token of the pod's ServiceAccount, accepted through both ways in.
    assert seen["svc"] == seen["env"] == f"system:serviceaccount:{ns}:runner", seen
    assert seen["greeting"] == "hello 127.0.0.1" and seen["secret"] == "swordfish", seen
    assert seen["read_only_root"] is True, seen
    assert seen["path"].startswith("/opt/recops/bin:"), seen  # the image's environment, not the host's
    logs = cluster.kubectl("logs", "-n", ns, "probe").stdout
    assert "hello from the image" in logs


def test_deleting_the_pod_stops_and_removes_its_container(cluster: Cluster, image_namespace: str) -> None:
    ns = image_namespace
    podman = podman_runtime()
    # sleep as PID 1 ignores SIGTERM: the grace period runs out and the container is killed.
    cluster.apply(image_pod("sleeper", ["sleep", "600"], terminationGracePeriodSeconds=2), ns)
    running = cluster.wait_pod_phase(ns, "sleeper", {"Running"}, timeout=120)
    name = running.status.container_statuses[0].container_id.removeprefix("podman://")

    def listed() -> list[str]:
        listing = podman.podman("ps", "--all", "--format", "{{.Names}}")
        assert listing.returncode == 0, listing.stderr  # a failed listing must not pass for "removed"
        return str(listing.stdout).split()
    assert name in listed()
    cluster.kubectl("delete", "pod", "sleeper", "-n", ns, "--timeout=60s")
    wait_until(lambda: name not in listed(), 30, f"container {name} removed")
