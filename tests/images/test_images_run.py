"""Each image of `make images`, run for real with podman as a restricted pod would run it: the torch-free server
serving an ONNX model (/v1/rank, /v2/health/ready) and refusing a torch-only one, the CPU trainer training a tiny
model to a complete output with no network, and the operator's entrypoint."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.images.conftest import RESTRICTED, ROOT, Container, podman, readable, wait_http
from tests.support.local_servers import free_port
from tests.support.models import tiny_base_model, tiny_onnx_model, tiny_served_model
from tests.support.serving import FEEDBACK_KEY, candidates

pytestmark = [pytest.mark.images, pytest.mark.timeout(2700)]


def run_detached(containers: list[str], image: str, *args: str, options: tuple[str, ...] = ()) -> Container:
    name = f"recops-test-{uuid.uuid4().hex[:8]}"
    containers.append(name)
    started = time.monotonic()
    podman("run", "--detach", "--name", name, *RESTRICTED, *options, image, *args)
    return Container(name, started)


def post(url: str, body: object) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_every_image_carries_its_oci_labels_and_runs_as_uid_10001(built_images: dict[str, str]) -> None:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name, ref in built_images.items():
        config = json.loads(podman("image", "inspect", ref).stdout)[0]
        labels = config["Labels"]
        assert labels["org.opencontainers.image.title"] == f"recops-{name}"
        assert labels["org.opencontainers.image.source"] == "https://github.com/recops/recops"
        assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
        assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.created"]
        # The commit the image was built from: HEAD, or an older one when nothing it is built from changed since.
        revision = labels["org.opencontainers.image.revision"].removesuffix("-dirty")
        assert subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", revision, head]).returncode == 0
        assert config["Config"]["User"] == "10001:10001"


def test_the_operator_image_starts_without_torch(built_images: dict[str, str]) -> None:
    help_text = podman("run", "--rm", "--network", "none", *RESTRICTED, built_images["operator"], "--help").stdout
    assert help_text.startswith("usage: recops operator") and "RECOPS_TRAINER_GPU_IMAGE" in help_text
    probe = podman("run", "--rm", "--network", "none", *RESTRICTED, "--entrypoint", "python3", built_images["operator"],
                   "-c", "import recops.controllers.main, importlib.util as u; print(u.find_spec('torch'))")
    assert probe.stdout.strip() == "None"
    # Outside a cluster it stops at once and says why (no kubeconfig, no service-account token).
    started = podman("run", "--rm", "--network", "none", *RESTRICTED, built_images["operator"], check=False, timeout=120)
    assert started.returncode != 0
    assert "kubeconfig" in (started.stdout + started.stderr).lower() or "in-cluster" in (started.stdout + started.stderr)


def test_the_torch_free_server_serves_an_onnx_model(built_images: dict[str, str], containers: list[str],
                                                    tmp_path: Path) -> None:
    from recops.serve.model import Scorer, locate

    model = readable(tiny_onnx_model(tmp_path / "model", version="ctr-onnx-1234abcd"))
    port = free_port()
    server = run_detached(containers, built_images["server"], "--model", "/models/ctr", "--port", str(port),
                          "--model-name", "ranker", options=(
                              "--network", "host", "-v", f"{model}:/models/ctr:ro",
                              "-e", "RECOPS_SERVE_HOST=127.0.0.1", "-e", f"RECOPS_FEEDBACK_KEY={FEEDBACK_KEY}",
                              "-e", "RECOPS_NAMESPACE=shop", "-e", "RECOPS_DEPLOYMENT=ranker"))
    seconds = wait_http(f"http://127.0.0.1:{port}/v2/health/ready", server)
    print(f"server image: ready {seconds:.1f}s after podman run")

    items = candidates(12)
    answer = post(f"http://127.0.0.1:{port}/v1/rank", {"query": "red running shoes", "candidates": items})
    ranked = answer["items"]
    assert isinstance(ranked, list) and sorted(e["id"] for e in ranked) == sorted(c["id"] for c in items)
    scores = [e["score"] for e in ranked]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    # The same scores as the ONNX model scored on the host: the container serves this model, not something else.
    host = Scorer(locate(str(model)), device="cpu")
    assert host.format == "onnx-none"
    expected = dict(zip([c["id"] for c in items], host.score([[("red running shoes", c["text"], c["id"])
                                                                for c in items]])[0], strict=True))
    raw = {e["id"]: e["score"] for e in ranked}
    order = sorted(expected, key=lambda i: -expected[i])
    assert [e["id"] for e in ranked] == order
    assert len(raw) == len(expected)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'model_version="ctr-onnx-1234abcd"' in metrics and "recops_requests_total" in metrics
    assert "onnx" in server.logs()


def test_the_torch_free_server_refuses_a_torch_only_model_and_names_the_image_that_serves_it(
        built_images: dict[str, str], tmp_path: Path) -> None:
    model = readable(tiny_served_model(tmp_path / "model", "click-through"))
    run = podman("run", "--rm", "--network", "none", *RESTRICTED, "-v", f"{model}:/models/ctr:ro",
                 "-e", f"RECOPS_FEEDBACK_KEY={FEEDBACK_KEY}", built_images["server"], "--model", "/models/ctr",
                 check=False, timeout=300)
    assert run.returncode != 0
    assert "has no optimised (ONNX) form, and this server has no torch" in run.stderr
    assert "server-torch" in run.stderr


def test_the_cpu_trainer_trains_a_tiny_model_to_a_complete_output_without_network(
        built_images: dict[str, str], tmp_path: Path) -> None:
    from recops.shop.synth import generate_shop, write_shop

    inputs = tmp_path / "inputs"
    tiny_base_model(inputs / "base")
    write_shop(generate_shop(users=30, products=60, sessions=80, queries=20, seed=7), str(inputs / "shop"), "jsonl")
    manifest = {
        "apiVersion": "recops.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "ctr", "namespace": "shop", "uid": "0123456789abcdef-uid"},
        "spec": {"task": "click-through", "baseModel": {"uri": "/inputs/base"},
                 "dataset": {"uri": "/inputs/shop/events.jsonl"},
                 "training": {"epochs": 1, "batchSize": 16, "maxLength": 48, "learningRate": 1e-3},
                 "output": {"uri": "/models"},
                 "evaluation": {"metrics": ["auc", "ndcg@10"], "gate": {"metric": "auc", "minimum": 0.0}}},
    }
    (inputs / "job.yaml").write_text(yaml.safe_dump(manifest))
    readable(inputs)
    output = tmp_path / "models"
    output.mkdir(mode=0o777)
    output.chmod(0o777)  # the trainer runs as uid 10001
    run = podman("run", "--rm", "--network", "none", *RESTRICTED, "--tmpfs", "/var/lib/recops/scratch:rw,mode=1777",
                 "-e", "RECOPS_SCRATCH_DIR=/var/lib/recops/scratch", "-e", "OMP_NUM_THREADS=2",
                 "-v", f"{inputs}:/inputs:ro", "-v", f"{output}:/models:rw", built_images["trainer-cpu"],
                 "--config", "/inputs/job.yaml", "--termination-message-path", "/models/termination-log",
                 check=False, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    message = json.loads((output / "termination-log").read_text())
    assert message["error"] is None and message["gatePassed"] is True
    assert message["modelUri"] == "/models/shop/ctr-01234567"
    model = output / "shop" / "ctr-01234567"
    manifest_written = json.loads((model / "recops.json").read_text())  # written last: the model is complete
    assert manifest_written["task"] == "click-through" and 0.0 <= manifest_written["metrics"]["auc"] <= 1.0
    assert (model / "model.safetensors").is_file() and (model / "README.md").is_file()
