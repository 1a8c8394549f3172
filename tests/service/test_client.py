"""The search-job client against the real app served by uvicorn (both database engines)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from profilers.blocks import get_family
from service.client import (
    AsyncLatfarmClient,
    Device,
    Job,
    LatfarmAPIError,
    LatfarmClient,
    LatfarmClientError,
    LatfarmConnectionError,
    LatfarmTimeoutError,
    Prediction,
    Predictor,
)
from service.demo import ServerThread
from service.devices.models import Device as Device_
from service.devices.models import DeviceStatus, Transport


@pytest.fixture
def server(app) -> Iterator[ServerThread]:
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def admin_token(make_headers: Callable[..., dict[str, str]]) -> str:
    return make_headers("admin")["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def lf(server: ServerThread, admin_token: str) -> Iterator[LatfarmClient]:
    with LatfarmClient(server.url, admin_token, retries=2, backoff_s=0.01) as client:
        yield client


class FailFirst:
    """ASGI wrapper answering `status` to the first `failures` HTTP requests, then passing them on."""

    def __init__(self, app: ASGIApp, failures: int, status: int = 503) -> None:
        self.app, self.failures, self.status = app, failures, status
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests += 1
            if self.requests <= self.failures:
                body = b'{"type":"about:blank","title":"Service unavailable","status":503,"detail":"busy"}'
                headers = [(b"content-type", b"application/problem+json")]
                await send({"type": "http.response.start", "status": self.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class CountRequests:
    """ASGI wrapper counting the HTTP requests that reach the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.requests = app, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


def test_devices_register_list_get_update_delete(lf: LatfarmClient) -> None:
    assert lf.health()["status"] == "ok"
    first = lf.register_device("127.0.0.1:5601", name="one", tags=["virtual", "demo"])
    second = lf.register_device("127.0.0.1:5602")
    assert isinstance(first, Device)
    assert (first.serial, first.address, first.status, first.tags) == (
        "127.0.0.1:5601",
        "127.0.0.1:5601",
        "offline",
        ["demo", "virtual"],
    )
    assert [d.id for d in lf.list_devices()] == [first.id, second.id]
    assert [d.id for d in lf.list_devices(tag="demo")] == [first.id]
    assert lf.get_device(second.id).serial == "127.0.0.1:5602"
    updated = lf.update_device(first.id, name="renamed", enabled=False)
    assert (updated.name, updated.enabled, updated.tags) == ("renamed", False, ["demo", "virtual"])
    lf.delete_device(second.id)
    assert [d.id for d in lf.list_devices()] == [first.id]


def test_list_devices_follows_every_page(server: ServerThread, admin_token: str) -> None:
    with LatfarmClient(server.url, admin_token) as lf:
        ids = [lf.register_device(f"10.0.0.{i}:5555").id for i in range(1, 6)]
        # A page size below the item count forces the cursor to be followed.
        lf.page_size = 2
        assert [d.id for d in lf.list_devices()] == ids
        assert [d.id for d in lf.list_devices(tag=None)] == ids


def test_problem_details_surface_in_the_error(lf: LatfarmClient) -> None:
    with pytest.raises(LatfarmAPIError) as info:
        lf.register_device("no-port-here", transport="tcp")
    assert info.value.status == 422
    assert "host:port" in info.value.detail
    assert info.value.errors and info.value.errors[0]["loc"][0] == "body"
    with pytest.raises(LatfarmAPIError) as missing:
        lf.get_device(9999)
    assert missing.value.status == 404
    assert missing.value.detail == "device 9999 does not exist"
    lf.register_device("127.0.0.1:5601")
    with pytest.raises(LatfarmAPIError) as conflict:
        lf.register_device("127.0.0.1:5601")
    assert conflict.value.status == 409


def test_scopes_are_enforced_through_the_client(server: ServerThread, make_headers) -> None:
    reader = make_headers("read")["Authorization"].removeprefix("Bearer ")
    with LatfarmClient(server.url, reader) as lf:
        assert lf.list_devices() == []
        with pytest.raises(LatfarmAPIError) as info:
            lf.register_device("127.0.0.1:5601")
    assert info.value.status == 403
    assert "'admin'" in info.value.detail
    with LatfarmClient(server.url, token="") as anonymous, pytest.raises(LatfarmAPIError) as info:
        anonymous.list_devices()
    assert info.value.status == 401


def test_503s_are_retried_until_the_app_answers(app, admin_token: str) -> None:
    flaky = FailFirst(app, failures=2)
    with ServerThread(flaky) as server, LatfarmClient(server.url, admin_token, backoff_s=0.01) as lf:
        device = lf.register_device("127.0.0.1:5601")
        assert device.serial == "127.0.0.1:5601"
    assert flaky.requests == 3
    with ServerThread(app) as server:
        assert LatfarmClient(server.url, admin_token).get_device(device.id).id == device.id


def test_retries_give_up_with_the_last_problem(app, admin_token: str) -> None:
    down = FailFirst(app, failures=100)
    with (
        ServerThread(down) as server,
        LatfarmClient(server.url, admin_token, retries=2, backoff_s=0.01) as lf,
        pytest.raises(LatfarmAPIError) as info,
    ):
        lf.list_devices()
    assert (info.value.status, info.value.detail) == (503, "busy")
    assert down.requests == 3


def test_a_422_is_never_retried(app, admin_token: str) -> None:
    counted = CountRequests(app)
    with (
        ServerThread(counted) as server,
        LatfarmClient(server.url, admin_token, retries=5, backoff_s=0.01) as lf,
        pytest.raises(LatfarmAPIError) as info,
    ):
        lf.register_device("127.0.0.1:5601", transport="bluetooth")
    assert info.value.status == 422
    assert counted.requests == 1


def test_connection_errors_are_retried_then_reported() -> None:
    # A port that was free a moment ago and that nothing listens on: every attempt is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with (
        LatfarmClient(url, "x", retries=2, backoff_s=0.01) as lf,
        pytest.raises(LatfarmConnectionError) as info,
    ):
        lf.list_devices()
    assert url in str(info.value)


def test_async_twin_against_the_app(server: ServerThread, admin_token: str) -> None:
    async def scenario() -> tuple[Device, list[Device], Device]:
        async with AsyncLatfarmClient(server.url, admin_token, backoff_s=0.01) as lf:
            made = await lf.register_device("127.0.0.1:5701", tags=["async"])
            listed = await lf.list_devices(tag="async")
            renamed = await lf.update_device(made.id, name="async phone")
            with pytest.raises(LatfarmAPIError) as info:
                await lf.get_device(made.id + 100)
            assert info.value.status == 404
            await lf.delete_device(made.id)
            return made, listed, renamed

    made, listed, renamed = asyncio.run(scenario())
    assert [d.id for d in listed] == [made.id]
    assert renamed.name == "async phone"


SR_CONFIGS = [
    {"scale": 2, "height": 8, "width": 8, "widths": [4, 4]},
    {"scale": 2, "height": 8, "width": 8, "widths": [4, 8, 4]},
]
LITTLE = [300000, 1017600, 1804800]


@pytest.fixture
def probed_device(db_session: Session) -> int:
    """A device whose probed facts are written straight into the database (no phone needed)."""
    device = Device_(
        serial="127.0.0.1:5801",
        transport=Transport.tcp,
        address="127.0.0.1:5801",
        tags=[],
        clusters=[{"name": "little", "cpus": [0, 1], "frequencies_khz": LITTLE}],
        model="Test Phone",
        status=DeviceStatus.online,
    )
    db_session.add(device)
    db_session.commit()
    return device.id


def test_jobs_submit_get_list_tasks_cancel_and_wait(lf: LatfarmClient, probed_device: int) -> None:
    job = lf.submit_job("sr_block", configs=SR_CONFIGS, devices=[probed_device], runtime={"runs": 3})
    assert isinstance(job, Job)
    assert (job.status, job.tasks, job.completed_tasks, job.finished) == ("queued", 6, 0, False)
    assert lf.get_job(job.id).spec["runtime"]["runs"] == 3
    tasks = lf.list_tasks(job.id)
    assert sorted({t["frequency_khz"] for t in tasks}) == LITTLE
    other = lf.submit_job(
        "sr_block", configs=SR_CONFIGS[:1], devices=[probed_device], frequencies=[LITTLE[0]]
    )
    assert [j.id for j in lf.list_jobs()] == [other.id, job.id]  # newest first
    assert [j.id for j in lf.list_jobs(status="queued")] == [other.id, job.id]

    # Nothing works on the queue here, so a wait with a deadline gives up and says how the job stands.
    with pytest.raises(LatfarmTimeoutError, match=f"job {other.id} is still queued"):
        lf.wait(other.id, poll_s=0.01, timeout_s=0.05)

    cancelled = lf.cancel_job(job.id)
    assert cancelled.status == "cancelled"
    seen: list[Job] = []
    final = lf.wait(job.id, progress=seen.append, poll_s=0.01)
    assert final.finished and final.status == "cancelled"
    assert final.completed_tasks == final.tasks == 6
    assert [j.id for j in seen] == [job.id]


def test_job_validation_errors_name_the_field(lf: LatfarmClient, probed_device: int) -> None:
    with pytest.raises(LatfarmAPIError) as info:
        lf.submit_job("sr_block", configs=SR_CONFIGS, devices=[probed_device], frequencies=[123])
    assert info.value.status == 422
    assert any("frequencies" in [str(p) for p in e["loc"]] for e in info.value.errors)
    with pytest.raises(LatfarmAPIError) as missing:
        lf.get_job(4242)
    assert missing.value.status == 404


def _measured_rows(device_id: int, n_configs: int = 24) -> list[dict[str, Any]]:
    """Imported rows: latency grows with the block's FLOPs and falls with frequency (a clean signal)."""
    family = get_family("sr_block")
    rng = random.Random(5)
    rows = []
    for i in range(n_configs):
        config = {
            "scale": 2,
            "height": 16,
            "width": 16,
            "widths": [rng.choice([4, 8, 16, 32]) for _ in range(i % 4 + 2)],
        }
        gflops = family.costs(config).flops / 1e9
        for freq in LITTLE:
            ms = 1.0 + 400.0 * gflops * 1_804_800 / freq
            rows.append(
                {
                    "device_id": device_id,
                    "family": "sr_block",
                    "config": config,
                    "cluster": "little",
                    "frequency_khz": freq,
                    "runtime_name": "onnxruntime",
                    "runs": 5,
                    "median_ms": ms,
                    "mean_ms": ms,
                    "min_ms": ms * 0.98,
                    "max_ms": ms * 1.02,
                    "p90_ms": ms * 1.01,
                }
            )
    return rows


def test_measurements_predictors_predict_and_snapshots(
    lf: LatfarmClient, probed_device: int, tmp_path: Path
) -> None:
    rows = _measured_rows(probed_device)
    assert lf.import_measurements(rows) == len(rows) == 72
    frame = lf.measurements(device=probed_device, family="sr_block")
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 72 and {"config_hash", "median_ms", "frequency_khz"} <= set(frame.columns)
    lf.page_size = 10  # the DataFrame is the same whatever the page size
    paged = lf.measurements(device=probed_device, frequency_khz=LITTLE[0])
    assert len(paged) == 24 and set(paged["frequency_khz"]) == {LITTLE[0]}
    assert lf.measurements(device=probed_device + 1).empty

    with pytest.raises(LatfarmAPIError) as none_active:
        lf.predict(probed_device, "sr_block", [rows[0]["config"]], frequency_khz=LITTLE[0])
    assert none_active.value.status in (404, 409)

    predictor = lf.train_predictor("sr_block", probed_device, params={"n_estimators": 60, "seed": 1})
    assert isinstance(predictor, Predictor) and predictor.status == "training"
    states: list[str] = []
    predictor = lf.wait_predictor(
        predictor.id, progress=lambda p: states.append(p.status), poll_s=0.05, timeout_s=120
    )
    assert predictor.status == "ready", predictor.error
    assert states[-1] == "ready"
    assert predictor.metrics["rows"] > 0 and predictor.metrics["mape"] >= 0
    assert [p.id for p in lf.list_predictors(family="sr_block", device=probed_device)] == [predictor.id]
    assert lf.activate_predictor(predictor.id).active is True
    assert lf.get_predictor(predictor.id).active is True

    configs = [r["config"] for r in rows[::3][:6]]
    one = lf.predict(probed_device, "sr_block", configs, frequency_khz=LITTLE[0])
    assert isinstance(one, Prediction) and one.predictor_id == predictor.id
    assert one.latency_ms.shape == one.p10_ms.shape == one.extrapolated.shape == (6,)
    assert np.all(np.isfinite(one.latency_ms)) and one.extrapolated.dtype == bool
    many = lf.predict(probed_device, "sr_block", configs, frequencies_khz=LITTLE)
    assert many.latency_ms.shape == (6, 3) and many.frequencies_khz == LITTLE
    np.testing.assert_allclose(many.latency_ms[:, 0], one.latency_ms, rtol=1e-6)
    # Lower frequency, slower block: the model learnt the direction of the data.
    assert np.all(many.latency_ms[:, 0] > many.latency_ms[:, 2])
    with pytest.raises(LatfarmClientError, match="exactly one"):
        lf.predict(probed_device, "sr_block", configs)

    path = lf.download_snapshot(predictor.id, tmp_path / "snap" / "predictor.tar")
    assert path.is_file() and not list(path.parent.glob(".*.part"))
    from service.client import Snapshot

    offline = Snapshot.load(path).predict("sr_block", configs, LITTLE[0])
    np.testing.assert_allclose(offline.latency_ms, one.latency_ms, rtol=1e-5)
    imported = lf.import_predictor(path)
    assert imported.id != predictor.id and imported.active is False

    async def async_predict() -> Prediction:
        async with AsyncLatfarmClient(lf.base_url, lf._http.headers["authorization"][7:]) as alf:
            assert (await alf.get_predictor(predictor.id)).status == "ready"
            assert len(await alf.measurements(device=probed_device)) == 72
            return await alf.predict(probed_device, "sr_block", configs, frequencies_khz=LITTLE)

    np.testing.assert_allclose(asyncio.run(async_predict()).latency_ms, many.latency_ms, rtol=1e-6)


def test_probe_a_virtual_phone(lf: LatfarmClient, tmp_path: Path) -> None:
    from profilers.virtual_phone.phone import VirtualPhone

    with VirtualPhone(profile="virtual-midrange", state_dir=tmp_path / "phone") as phone:
        device = lf.register_device(phone.serial, name="midrange")
        probed = lf.probe_device(device.id)
    assert probed.status == "online" and probed.is_virtual is True
    assert probed.model == "latfarm Virtual Midrange"
    assert [c.name for c in probed.clusters] == ["little", "big"]
    assert probed.frequencies_khz()[-1] == 2208000 == max(probed.frequencies_khz("big"))
    with pytest.raises(LatfarmClientError, match="no cluster 'prime'"):
        probed.frequencies_khz("prime")


def test_async_jobs_and_predictor_calls(server: ServerThread, admin_token: str, probed_device: int) -> None:
    async def scenario() -> tuple[Job, Job, list[Job], list[dict[str, Any]], list[Job]]:
        async with AsyncLatfarmClient(server.url, admin_token, backoff_s=0.01) as alf:
            job = await alf.submit_job("sr_block", configs=SR_CONFIGS, devices=[probed_device])
            tasks = await alf.list_tasks(job.id)
            listed = await alf.list_jobs()
            await alf.cancel_job(job.id)
            seen: list[Job] = []
            final = await alf.wait(job.id, progress=seen.append, poll_s=0.01)
            queued = await alf.submit_job("sr_block", configs=SR_CONFIGS[:1], devices=[probed_device])
            with pytest.raises(LatfarmTimeoutError):
                await alf.wait(queued.id, poll_s=0.01, timeout_s=0.03)
            with pytest.raises(LatfarmAPIError) as info:
                await alf.train_predictor("sr_block", probed_device)
            assert info.value.status == 422  # no measurements to train on yet
            assert await alf.list_predictors() == []
            return job, final, listed, tasks, seen

    job, final, listed, tasks, seen = asyncio.run(scenario())
    assert final.status == "cancelled" and final.id == job.id
    assert [j.id for j in listed] == [job.id]
    assert len(tasks) == job.tasks == 6
    assert seen[-1].status == "cancelled"
