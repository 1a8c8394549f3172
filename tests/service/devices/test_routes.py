"""The device registry over HTTP, on both engines."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from profilers.adb import Cluster, DeviceFacts, ThermalZone
from profilers.adb.units import Accelerator
from service.deps import get_runner
from service.devices.models import Device, Transport
from service.devices.runner import DeviceColumns, DeviceTarget, NoopRunner, facts_to_columns
from service.jobs.models import Job, Task, TaskStatus

PROBLEM = "application/problem+json"


def _register(client: TestClient, headers: dict[str, str], serial: str, **extra: object) -> dict:
    response = client.post(
        "/v1/devices", json={"serial": serial, "transport": "tcp", **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_register_get_list_patch_delete(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = _register(client, admin_headers, "127.0.0.1:5555", name="pixel", tags=["flagship", "lab1"])
    assert created["address"] == "127.0.0.1:5555"
    assert created["status"] == "offline"
    assert created["tags"] == ["flagship", "lab1"]
    for field in ("model", "soc", "abi", "clusters", "rooted", "thermal_zones", "last_seen_at", "last_error"):
        assert field in created

    got = client.get(f"/v1/devices/{created['id']}", headers=admin_headers).json()
    assert got["serial"] == "127.0.0.1:5555"

    patched = client.patch(
        f"/v1/devices/{created['id']}", json={"enabled": False, "tags": ["x"]}, headers=admin_headers
    ).json()
    assert patched["enabled"] is False and patched["status"] == "disabled" and patched["tags"] == ["x"]

    assert client.delete(f"/v1/devices/{created['id']}", headers=admin_headers).status_code == 204
    gone = client.get(f"/v1/devices/{created['id']}", headers=admin_headers)
    assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM


def test_list_filters_and_paginates(client: TestClient, admin_headers: dict[str, str]) -> None:
    ids = [
        _register(client, admin_headers, f"10.0.0.{i}:5555", tags=["even"] if i % 2 == 0 else [])["id"]
        for i in range(5)
    ]
    client.patch(f"/v1/devices/{ids[0]}", json={"enabled": False}, headers=admin_headers)

    first = client.get("/v1/devices?limit=2", headers=admin_headers).json()
    assert [d["id"] for d in first["items"]] == ids[:2]
    second = client.get(f"/v1/devices?limit=2&cursor={first['next_cursor']}", headers=admin_headers).json()
    assert [d["id"] for d in second["items"]] == ids[2:4]
    last = client.get(f"/v1/devices?limit=2&cursor={second['next_cursor']}", headers=admin_headers).json()
    assert [d["id"] for d in last["items"]] == ids[4:] and last["next_cursor"] is None

    even = client.get("/v1/devices?tag=even", headers=admin_headers).json()["items"]
    assert [d["id"] for d in even] == [ids[0], ids[2], ids[4]]
    disabled = client.get("/v1/devices?status=disabled", headers=admin_headers).json()["items"]
    assert [d["id"] for d in disabled] == [ids[0]]


def test_duplicate_serial_is_409(client: TestClient, admin_headers: dict[str, str]) -> None:
    _register(client, admin_headers, "127.0.0.1:5556")
    again = client.post(
        "/v1/devices", json={"serial": "127.0.0.1:5556", "transport": "tcp"}, headers=admin_headers
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert "127.0.0.1:5556" in again.json()["detail"]


def test_bad_bodies_are_422_naming_the_field(client: TestClient, admin_headers: dict[str, str]) -> None:
    cases = [
        ({"serial": "a:1", "transport": "bluetooth"}, ["body", "transport"]),
        ({"transport": "tcp"}, ["body", "serial"]),
        ({"serial": 12, "transport": "tcp"}, ["body", "serial"]),
        ({"serial": "a:1", "transport": "tcp", "tags": "nope"}, ["body", "tags"]),
        ({"serial": "a:1", "transport": "tcp", "colour": "red"}, ["body", "colour"]),
    ]
    for body, loc in cases:
        response = client.post("/v1/devices", json=body, headers=admin_headers)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["status"] == 422 and problem["title"]
        assert any(err["loc"][: len(loc)] == loc for err in problem["errors"]), (body, problem)


def test_tcp_device_needs_host_port(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/devices", json={"serial": "emulator", "transport": "tcp"}, headers=admin_headers
    )
    assert response.status_code == 422
    assert "host:port" in response.json()["detail"]
    usb = client.post("/v1/devices", json={"serial": "R58M123ABC", "transport": "usb"}, headers=admin_headers)
    assert usb.status_code == 201 and usb.json()["address"] is None


def test_delete_is_409_while_a_task_runs(
    client: TestClient, admin_headers: dict[str, str], db_session: Session
) -> None:
    device_id = _register(client, admin_headers, "127.0.0.1:5557")["id"]
    job = Job(family="sr_block", spec={})
    db_session.add(job)
    db_session.flush()
    db_session.add(
        Task(
            job_id=job.id,
            device_id=device_id,
            family="sr_block",
            config={},
            config_hash="0" * 64,
            cluster="big",
            frequency_khz=1000,
            runs=1,
            warmup=0,
            threads=1,
            status=TaskStatus.leased,
        )
    )
    db_session.commit()
    response = client.delete(f"/v1/devices/{device_id}", headers=admin_headers)
    assert response.status_code == 409
    assert "task" in response.json()["detail"]
    db_session.expire_all()
    assert db_session.get(Device, device_id) is not None


class _RecordingRunner(NoopRunner):
    """A no-op runner that remembers whom it probed."""

    def __init__(self, facts: DeviceColumns) -> None:
        super().__init__(facts)
        self.probed: list[str] = []

    def probe(self, target: DeviceTarget) -> DeviceColumns:
        self.probed.append(target.serial)
        return super().probe(target)


def test_register_and_probe_use_the_request_runner(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    clusters = [{"name": "big", "cpus": [0, 1], "frequencies_khz": [1000, 2000]}]
    runners: list[_RecordingRunner] = []

    def runner() -> _RecordingRunner:
        runners.append(_RecordingRunner({"model": "Stub Phone", "clusters": clusters, "rooted": True}))
        return runners[-1]

    app.dependency_overrides[get_runner] = runner
    created = _register(client, admin_headers, "10.9.0.1:5555")
    assert created["status"] == "online" and created["model"] == "Stub Phone" and created["rooted"] is True
    assert created["clusters"][0]["frequencies_khz"] == [1000, 2000]
    reprobed = client.post(f"/v1/devices/{created['id']}/probe", headers=admin_headers)
    assert reprobed.status_code == 200 and reprobed.json()["status"] == "online"
    assert [r.probed for r in runners] == [["10.9.0.1:5555"], ["10.9.0.1:5555"]]
    # A serial registered already is refused before any phone is probed.
    body = {"serial": "10.9.0.1:5555", "transport": "tcp"}
    dup = client.post("/v1/devices", json=body, headers=admin_headers)
    assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM
    assert runners[-1].probed == []


def test_device_api_shows_every_compute_unit(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    # The probe's facts go through `facts_to_columns` as a real probe's do: accelerators stored by name.
    little = Cluster(
        name="little", policy="policy0", cpus=[0, 1], frequencies_khz=[900, 300], governors=["schedutil"]
    )
    big = Cluster(
        name="big", policy="policy4", cpus=[4], frequencies_khz=[2000, 1000], governors=["schedutil"]
    )
    gpu = Accelerator(
        name="gpu",
        model="Adreno660v1",
        devfreq="/sys/class/kgsl/kgsl-3d0/devfreq",
        frequencies_khz=[840000, 315000],
        governors=["msm-adreno-tz", "performance"],
        precisions=["fp32", "fp16"],
        bus_devfreq="/sys/class/devfreq/ddrfreq",
    )
    npu = Accelerator(name="npu", model="Virtual NPU", precisions=["int8", "fp16"])
    facts = DeviceFacts(
        serial="R5CT1234",
        model="SM-G991B",
        manufacturer="samsung",
        board="",
        soc="SM8350",
        abi="arm64-v8a",
        android_version="14",
        sdk=34,
        clusters=[little, big],
        gpu_frequencies_khz=[315000, 840000],
        accelerators=[npu, gpu],
        rooted=True,
        thermal_zones=[ThermalZone(index=0, type="cpu-0-0")],
        is_virtual=False,
    )
    app.dependency_overrides[get_runner] = lambda: _RecordingRunner(facts_to_columns(facts))
    created = _register(client, admin_headers, "10.9.0.2:5555")
    device = client.get(f"/v1/devices/{created['id']}", headers=admin_headers).json()
    assert [a["name"] for a in device["accelerators"]] == ["npu", "gpu"]  # as probed
    assert device["accelerators"][1]["bus_devfreq"] == "/sys/class/devfreq/ddrfreq"
    units = {u["name"]: u for u in device["units"]}
    assert [u["name"] for u in device["units"]] == ["little", "big", "gpu", "npu"]
    assert [u["kind"] for u in device["units"]] == ["cpu", "cpu", "gpu", "npu"]
    assert units["big"] == {
        "name": "big",
        "kind": "cpu",
        "model": None,
        "frequencies_khz": [1000, 2000],
        "precisions": ["fp32"],
        "governors": ["schedutil"],
    }
    assert units["gpu"]["frequencies_khz"] == [315000, 840000] and units["gpu"]["model"] == "Adreno660v1"
    assert units["gpu"]["precisions"] == ["fp32", "fp16"]
    assert units["gpu"]["governors"] == ["msm-adreno-tz", "performance"]
    assert units["npu"]["frequencies_khz"] == [] and units["npu"]["precisions"] == ["int8", "fp16"]
    listed = client.get("/v1/devices", headers=admin_headers).json()["items"]
    assert [u["name"] for u in listed[0]["units"]] == ["little", "big", "gpu", "npu"]


def test_a_malformed_stored_accelerator_is_left_out(
    client: TestClient, admin_headers: dict[str, str], db_session: Session
) -> None:
    device = Device(
        serial="10.9.0.3:5555",
        transport=Transport.tcp,
        address="10.9.0.3:5555",
        clusters=[{"name": "big", "cpus": [0], "frequencies_khz": [1000]}],
        accelerators=[{"name": "tpu"}, {"name": "gpu", "frequencies_khz": [5, 1]}],
    )
    db_session.add(device)
    db_session.commit()
    got = client.get(f"/v1/devices/{device.id}", headers=admin_headers).json()
    assert [a["name"] for a in got["accelerators"]] == ["gpu"]
    assert [(u["name"], u["frequencies_khz"], u["precisions"]) for u in got["units"]] == [
        ("big", [1000], ["fp32"]),
        ("gpu", [1, 5], []),
    ]
