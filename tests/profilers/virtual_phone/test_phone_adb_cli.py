"""Debian's `adb` client against the virtual phone: connect, shell (v2, exit status), push, cat."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from profilers.virtual_phone import VirtualPhone

pytestmark = pytest.mark.skipif(
    shutil.which("adb") is None, reason="the `adb` client is not installed (apt-get install adb)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb(tmp_path: Path) -> Iterator[callable]:
    """Run `adb` with a private server port and HOME; kill that server afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(free_port())}

    def call(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["adb", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    yield call
    call("kill-server", check=False)


def test_adb_connect_shell_push_cat(adb, phone: VirtualPhone, tmp_path: Path) -> None:
    serial = phone.serial
    assert "connected to" in adb("connect", serial).stdout
    devices = adb("devices", "-l").stdout
    assert serial in devices and "model:latfarm_Virtual_Flagship" in devices
    assert adb("-s", serial, "shell", "echo", "hi").stdout == "hi\n"
    status = adb("-s", serial, "shell", "echo out; echo err >&2; exit 7", check=False)
    assert (status.returncode, status.stdout, status.stderr) == (7, "out\n", "err\n")
    local = tmp_path / "model.onnx"
    local.write_bytes(os.urandom(300_000))
    adb("-s", serial, "push", str(local), "/data/local/tmp/")
    pulled = tmp_path / "back.onnx"
    adb("-s", serial, "pull", "/data/local/tmp/model.onnx", str(pulled))
    assert pulled.read_bytes() == local.read_bytes()
    small = tmp_path / "hello.txt"
    small.write_text("pushed by adb\n")
    adb("-s", serial, "push", str(small), "/data/local/tmp/hello.txt")
    assert adb("-s", serial, "shell", "cat", "/data/local/tmp/hello.txt").stdout == "pushed by adb\n"
    assert "hello.txt" in adb("-s", serial, "shell", "ls", "/data/local/tmp").stdout
    piped = adb("-s", serial, "shell", "wc -l", stdin="a\nb\n")
    assert piped.stdout.strip() == "2"
