"""Local servers that tests start as processes on the loopback interface: a free port to put one
on, a wait until it answers HTTP, and a stop that does not leave it behind."""

from __future__ import annotations

import random
import socket
import subprocess
import time
import urllib.request

# Below Linux's ephemeral range (32768-60999): a port the kernel hands out (bind to 0) is also the local port of
# outgoing connections, so between the pick and the server's own bind a kubectl or client connection could take
# it ("Address already in use"). Ports here are never taken that way.
PORTS = range(20000, 32768)


def free_port() -> int:
    """A port nothing listens on now, chosen at random below the ephemeral range."""
    for port in random.sample(PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def wait_for_http(url: str, process: subprocess.Popen, *, timeout: float = 30, request_timeout: float = 1) -> bool:
    """Poll `url` until it answers with a success status (True), or until `process` exits or
    `timeout` seconds pass (False): the caller says what did not start, in its own words."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=request_timeout).close()
            return True
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def stop_process(process: subprocess.Popen, timeout: float = 10, kill_timeout: float | None = None) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; wait for it either way."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(kill_timeout)
