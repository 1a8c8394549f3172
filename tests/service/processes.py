"""Helpers of the tests that run real `latfarm` processes: bounded polling, free ports, waiting for an API."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest


def wait_for(predicate: Callable[[], Any], what: str, timeout: float, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy (bounded: fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(
    process: subprocess.Popen[bytes], base_url: str, log: Callable[[], str], timeout: float
) -> None:
    """Wait until `latfarm serve` at `base_url` answers /healthz; fail with its log if it exits first."""

    def healthy() -> bool:
        assert process.poll() is None, log()
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, "the API process to answer", timeout)
