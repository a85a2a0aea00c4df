"""hack/process_node/podman.py's pure parts: what `podman run` is given for a pod's container."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parents[2] / "hack"


def runtime() -> Any:
    spec = importlib.util.spec_from_file_location("podman_runtime", HACK / "process_node" / "podman.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_command(tmp_path: Path, **overrides: Any) -> tuple[list[str], dict[str, str]]:
    podman = runtime().Podman(root=tmp_path)
    podman.exe = "/usr/bin/podman"
    kwargs: dict[str, Any] = {
        "name": "k8s_main_p_ns_12345678", "image": "localhost/recops-operator:dev", "command": [], "args": [],
        "env": {"TOKEN": "s3cret", "PATH": "/custom/bin"}, "working_dir": None, "security": {},
        "mounts": [{"source": "/state/pods/x/volumes/kube-api-access",
                    "target": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
                   {"source": "/state/pods/x/termination/main", "target": "/dev/termination-log", "readOnly": False}],
        "hostname": "p", "service_ip": "127.9.255.254", "labels": {"recops.dev/process-node-dir": "/state"},
    }
    kwargs.update(overrides)
    argv: list[str]
    env: dict[str, str]
    argv, env = podman.run_command(**kwargs)
    return argv, env


def test_env_values_travel_in_the_environment_not_the_argv(tmp_path: Path) -> None:
    argv, env = run_command(tmp_path)
    assert "s3cret" not in " ".join(argv)
    assert argv[argv.index("--env") + 1] in ("TOKEN", "PATH=/custom/bin")
    assert env["TOKEN"] == "s3cret"
    # A name podman itself needs keeps podman's value; the container's goes in the argv.
    assert "PATH=/custom/bin" in argv and env["PATH"] != "/custom/bin"
    assert (tmp_path / "process-node.conf").read_text().count("default_ulimits = []") == 1


def test_image_entrypoint_unless_a_command_is_given(tmp_path: Path) -> None:
    argv, _ = run_command(tmp_path, args=["--verbose"])
    assert "--entrypoint" not in argv and argv[-2:] == ["localhost/recops-operator:dev", "--verbose"]
    argv, _ = run_command(tmp_path, command=["recops", "operator"], args=["--x"])
    assert json.loads(argv[argv.index("--entrypoint") + 1]) == ["recops", "operator"]
    assert argv[-2:] == ["localhost/recops-operator:dev", "--x"]


def test_what_a_kubelet_gives_a_container(tmp_path: Path) -> None:
    argv, _ = run_command(tmp_path)
    joined = " ".join(argv)
    assert "--network host" in joined and "--pull never" in joined and "--hostname p" in joined
    assert "--add-host kubernetes.default.svc:127.9.255.254" in joined
    assert ("type=bind,source=/state/pods/x/volumes/kube-api-access,"
            "destination=/var/run/secrets/kubernetes.io/serviceaccount,ro=true") in argv
    assert "type=bind,source=/state/pods/x/termination/main,destination=/dev/termination-log" in argv
    assert "recops.dev/process-node-dir=/state" in argv


def test_security_context_pod_level_overlaid_by_the_container() -> None:
    module = runtime()
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000, "runAsNonRoot": True}}
    container = {"securityContext": {"runAsUser": 10001, "readOnlyRootFilesystem": True,
                                     "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    security = module.merged_security(pod, container)
    assert module.security_args(security) == [
        "--user", "10001:2000", "--group-add", "3000", "--read-only", "--security-opt", "no-new-privileges",
        "--cap-drop=ALL"]
    assert module.security_args({}) == []  # the image's USER and the runtime's defaults
