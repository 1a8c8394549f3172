"""What the serving benchmarks share: a trained predictor on synthetic rows, `latfarm serve` as a separate
process, a minimal keep-alive HTTP/1.1 client, and the CPU time of the server's processes.

The server runs in its own process group, as a search job meets it: the client's work (encoding, reading
the answer) and the server's never share a GIL, and the server's CPU time is read from /proc.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.blocks import config_hash, get_family
from service.auth.service import create_token
from service.db import make_engine, make_sessionmaker
from service.devices.models import Device, Transport
from service.measurements.models import Measurement
from service.predictors.schemas import PredictorCreate
from service.predictors.service import activate_predictor, create_predictor
from service.predictors.trainer import train_predictor
from service.settings import Settings

FREQUENCIES = [800_000, 1_400_000, 2_000_000, 2_600_000]
ROOT = Path(__file__).resolve().parents[1]


def sample_configs(n: int, seed: int) -> list[dict]:
    """`n` distinct random sr_block configs of the family's sampler."""
    import random

    family = get_family("sr_block")
    rng = random.Random(seed)
    found: dict[str, dict] = {}
    while len(found) < n:
        c = family.sample(rng).model_dump(mode="json")
        found.setdefault(config_hash("sr_block", c), c)
    return list(found.values())


def seed_database(settings: Settings, n_configs: int) -> tuple[int, int, str]:
    """A device, synthetic measurements (FLOPs/frequency law, 1 % noise), a trained and active sr_block
    predictor and a `predict` token: (device id, predictor id, token secret)."""
    factory = make_sessionmaker(make_engine(settings.database_url))
    family = get_family("sr_block")
    noise = np.random.default_rng(0)
    with factory() as session:
        device = Device(serial="bench-phone", transport=Transport.tcp, is_virtual=True)
        session.add(device)
        session.commit()
        for c in sample_configs(n_configs, seed=1):
            flops = family.costs(c).flops
            for f in FREQUENCIES:
                ms = (flops / (4.0 * f) + 0.5) * (1 + noise.normal(0, 0.01))
                session.add(
                    Measurement(
                        device_id=device.id, family="sr_block", config=c,
                        config_hash=config_hash("sr_block", c),
                        cluster="big", frequency_khz=f, observed_frequency_khz=f, pinned=True,
                        runtime_name="onnxruntime", threads=1, runs=5, warmup=1, median_ms=ms, mean_ms=ms,
                        min_ms=ms, max_ms=ms, p90_ms=ms, virtual=True,
                    )
                )  # fmt: skip
        session.commit()
        predictor_id = create_predictor(
            session, PredictorCreate(family="sr_block", device=device.id), settings
        ).id
        _, secret = create_token(session, "bench", ["predict"])
        device_id = device.id
    started = time.perf_counter()
    train_predictor(factory, predictor_id, settings)
    print(f"trained on {n_configs * len(FREQUENCIES)} rows in {time.perf_counter() - started:.1f} s")
    with factory() as session:
        activate_predictor(session, predictor_id)
    return device_id, predictor_id, secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LATFARM_DATABASE_URL": settings.database_url,
        "LATFARM_STATE_DIR": str(settings.state_dir),
        "LATFARM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def start_server(workers: int, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`latfarm serve --workers N` in its own process group, once `/healthz` answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--workers", str(workers), "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(
        f"the server did not start: {process.stderr.read().decode() if process.stderr else ''}"
    )


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)  # uvicorn's supervisor stops its worker processes on SIGINT
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every live process of a process group (the server and its workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def predict_request(port: int, secret: str, body: bytes) -> bytes:
    """A whole `POST /v1/predict` request, pre-encoded."""
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class KeepAliveClient:
    """One keep-alive connection, blocking: send a pre-encoded request, read the whole answer.

    A few socket calls a request, so what is timed is the server and the loopback, not a client library.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def send(self, request: bytes) -> bytes:
        """The answer's body; raises unless the status is 200. Reconnects once when the server has closed
        an idle connection (uvicorn's keep-alive timeout is 5 s)."""
        try:
            self.sock.sendall(request)
            status = self.reader.readline()
        except OSError:
            status = b""
        if not status:
            self.close()
            self._connect()
            self.sock.sendall(request)
            status = self.reader.readline()
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = self.reader.read(length)
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{status.decode().strip()}: {body[:300]!r}")
        return body

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
