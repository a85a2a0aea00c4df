"""Server images (`make images`): size, and seconds from `podman run` to `/v2/health/ready` for one model.

    .venv/bin/python benchmarks/image_ready.py [--model DIR] [--runs 3]
        [--image localhost/recops-server:dev --image localhost/recops-server-torch:dev]

The model (default: a tiny random cross-encoder with its float32 ONNX form, made here) is mounted read-only;
each image serves it with `--runtime auto` (its ONNX form), and an image with torch also with `--runtime torch`.
Containers run as the tests run them (tests/images: uid 10001, no capabilities, read-only root, host network).
Needs podman (hack/images). The last line is one JSON object: {"rows": [{image, runtime, size_mb, ready_s}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

HACK_IMAGES = str(ROOT / "hack" / "images")
RESTRICTED = ["--user", "10001:10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
              "--tmpfs", "/tmp:rw,mode=1777"]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HACK_IMAGES, "podman", *args], capture_output=True, text=True, check=check, timeout=600)


def has_torch(image: str) -> bool:
    probe = podman("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c",
                   "import importlib.util as u; print(u.find_spec('torch') is not None)")
    return probe.stdout.strip() == "True"


def ready_seconds(image: str, model: Path, runtime: str) -> float:
    from tests.support.local_servers import free_port

    port, name = free_port(), f"recops-bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    podman("run", "--detach", "--name", name, *RESTRICTED, "--network", "host", "-v", f"{model}:/models/m:ro",
           "-e", "RECOPS_SERVE_HOST=127.0.0.1", "-e", "RECOPS_FEEDBACK_KEY=bench-feedback-key-0123456789",
           image, "--model", "/models/m", "--port", str(port), "--runtime", runtime)
    try:
        while time.monotonic() - started < 300:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
            if state in ("exited", "stopped"):
                raise SystemExit(f"{image} exited:\n{podman('logs', name, check=False).stderr[-3000:]}")
            time.sleep(0.05)
        raise SystemExit(f"{image}: not ready after 300 s")
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a complete model directory with an ONNX form (default: tiny)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", action="append", dest="images",
                        help="default: localhost/recops-server:dev and, when built, localhost/recops-server-torch:dev")
    args = parser.parse_args()
    images = args.images or ["localhost/recops-server:dev"] + (
        ["localhost/recops-server-torch:dev"]
        if podman("image", "exists", "localhost/recops-server-torch:dev", check=False).returncode == 0 else [])
    with tempfile.TemporaryDirectory(prefix="recops-image-ready-") as scratch:
        model = args.model
        if model is None:
            from tests.support.models import tiny_onnx_model

            model = tiny_onnx_model(Path(scratch) / "model")
        for path in [model, *model.rglob("*")]:  # readable by the container's uid 10001
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
        rows = []
        for image in images:
            size_mb = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6
            for runtime in ["auto", "torch"] if has_torch(image) else ["auto"]:
                times = [ready_seconds(image, model, runtime) for _ in range(args.runs)]
                rows.append({"image": image, "runtime": runtime, "size_mb": round(size_mb),
                             "ready_s": round(statistics.median(times), 2)})
                print(f"{image:40} runtime {runtime:5} {size_mb:8.0f} MB  ready in {statistics.median(times):.2f} s "
                      f"(median of {args.runs}: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    print(f"model: {args.model or 'tiny random cross-encoder (tests/support/models.py) with its float32 ONNX form'}")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
