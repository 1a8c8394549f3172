"""The device runner's typed boundary: probed facts become device columns of the same names."""

from __future__ import annotations

from profilers.adb import Cluster, DeviceFacts, ThermalZone
from service.devices.models import Device
from service.devices.runner import FACTS_NOT_STORED, facts_to_columns

BIG = Cluster(
    name="big", policy="policy4", cpus=[4, 5, 6], frequencies_khz=[710400, 2419200], governors=["schedutil"]
)


def _facts() -> DeviceFacts:
    return DeviceFacts(
        serial="R5CT1234",
        model="SM-G991B",
        manufacturer="samsung",
        board="",
        soc="SM8350",
        abi="arm64-v8a",
        android_version="14",
        sdk=34,
        clusters=[BIG],
        gpu_frequencies_khz=[315000, 840000],
        rooted=True,
        thermal_zones=[ThermalZone(index=0, type="cpu-0-0")],
        is_virtual=False,
    )


def test_every_stored_fact_has_its_device_column() -> None:
    columns = facts_to_columns(_facts())
    assert set(columns) == set(DeviceFacts.model_fields) - FACTS_NOT_STORED
    assert set(columns) <= set(Device.__table__.columns.keys())


def test_facts_become_column_values() -> None:
    columns = facts_to_columns(_facts())
    assert columns["model"] == "SM-G991B" and columns["board"] is None  # empty text is no fact
    assert columns["rooted"] is True and columns["is_virtual"] is False
    assert columns["gpu_frequencies_khz"] == [315000, 840000]
    assert columns["clusters"] == [BIG.model_dump(mode="json")]
    assert columns["thermal_zones"] == [{"index": 0, "type": "cpu-0-0"}]
    assert "serial" not in columns and "sdk" not in columns
