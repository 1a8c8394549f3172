"""Probing through the profilers: on registration and on demand, against a virtual phone."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from profilers.virtual_phone import VirtualPhone


def test_registration_probes_the_phone(
    client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    with VirtualPhone(profile="virtual-midrange", state_dir=tmp_path / "phone") as phone:
        r = client.post(
            "/v1/devices", json={"serial": phone.serial, "transport": "tcp"}, headers=admin_headers
        )
    assert r.status_code == 201, r.text
    device = r.json()
    assert device["status"] == "online" and device["last_error"] is None
    assert device["model"] == "latfarm Virtual Midrange" and device["is_virtual"] is True
    assert {c["name"] for c in device["clusters"]} == {"little", "big"}
    big = next(c for c in device["clusters"] if c["name"] == "big")
    assert big["frequencies_khz"][-1] == 2208000 and big["cpus"] == [6, 7]
    assert device["rooted"] is True and device["thermal_zones"]
    assert device["probed_at"] is not None


def test_silent_phone_registers_offline_then_probe_brings_it_online(
    client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    phone = VirtualPhone(profile="virtual-flagship", state_dir=tmp_path / "phone").start()
    serial = phone.serial
    phone.stop()  # nobody listens on that port now
    r = client.post("/v1/devices", json={"serial": serial, "transport": "tcp"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    device = r.json()
    assert device["status"] == "offline" and device["clusters"] == []
    assert "probe failed" in device["last_error"]

    port = int(serial.rsplit(":", 1)[1])
    with VirtualPhone(profile="virtual-flagship", state_dir=tmp_path / "phone2", port=port):
        probed = client.post(f"/v1/devices/{device['id']}/probe", headers=admin_headers)
    assert probed.status_code == 200, probed.text
    assert probed.json()["status"] == "online" and probed.json()["clusters"]
    assert probed.json()["last_error"] is None


def test_probe_needs_admin_and_an_existing_device(
    client: TestClient, admin_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    assert client.post("/v1/devices/4242/probe", headers=admin_headers).status_code == 404
    assert client.post("/v1/devices/4242/probe", headers=read_headers).status_code == 403
