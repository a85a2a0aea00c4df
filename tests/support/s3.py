"""A real S3-compatible server (moto's server mode) on a free loopback port, for s3:// tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.local_servers import free_port, stop_process, wait_for_http


@contextmanager
def running_moto() -> Iterator[str]:
    """Start `moto_server`; yield its endpoint URL; stop it (and wait) on exit."""
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if executable is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        if not wait_for_http(endpoint, process, timeout=30, request_timeout=1):
            pytest.fail(f"moto_server did not start on {endpoint}")
        yield endpoint
    finally:
        stop_process(process, timeout=10)
