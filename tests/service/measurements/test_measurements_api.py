"""`/v1/measurements`: all-or-nothing import, filters, keyset pages, CSV/Parquet exports equal to JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profilers.blocks import config_hash
from service.devices.models import Device, DeviceStatus, Transport
from service.measurements.models import Measurement

NUMERIC = ["median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "frequency_khz", "runs"]


@pytest.fixture
def device(db_session: Session) -> Device:
    d = Device(
        serial="10.0.0.9:5555", transport=Transport.tcp, address="10.0.0.9:5555", status=DeviceStatus.online
    )
    db_session.add(d)
    db_session.commit()
    return d


def _row(device_id: int, i: int, **extra: Any) -> dict[str, Any]:
    base = 1.0 + i / 7
    return {
        "device_id": device_id,
        "family": "sr_block",
        "config": {"scale": 2, "height": 16, "width": 16, "widths": [1 + i % 5, 1 + i % 3]},
        "cluster": "big" if i % 2 else "little",
        "frequency_khz": 1_000_000 + 1000 * (i % 3),
        "runtime_name": "onnxruntime",
        "runtime_version": "1.20",
        "runs": 3,
        "warmup": 1,
        "median_ms": base,
        "mean_ms": base * 1.01,
        "std_ms": 0.1 / 3,
        "min_ms": base * 0.9,
        "max_ms": base * 1.2,
        "p90_ms": base * 1.1,
        "raw_runs_ms": [base * 0.9, base, base * 1.2],
        **extra,
    }


def _count(db_session: Session) -> int:
    return db_session.scalar(select(func.count()).select_from(Measurement)) or 0


def test_import_computes_hash_and_canonical_config(
    client: TestClient, make_headers: Callable[..., dict[str, str]], device: Device, db_session: Session
) -> None:
    rows = [_row(device.id, i) for i in range(20)]
    rows[5]["passes"] = 3
    r = client.post("/v1/measurements/import", json={"rows": rows}, headers=make_headers("profile"))
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 20
    stored = db_session.scalars(select(Measurement).order_by(Measurement.id)).all()
    assert len(stored) == 20
    assert {m.source.value for m in stored} == {"imported"}
    assert stored[3].config_hash == config_hash("sr_block", rows[3]["config"])
    # Defaults of the family are filled in, so the stored config is the canonical one.
    assert stored[3].config["kernel"] == 3
    # A row that does not say how its runs were taken was taken in one invocation.
    assert stored[5].passes == 3 and stored[3].passes == 1


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"median_ms": 9.0}, ["body", "rows", 7, "median_ms"]),
        ({"p90_ms": 0.5}, ["body", "rows", 7, "p90_ms"]),
        ({"device_id": 424242}, ["body", "rows", 7, "device_id"]),
        ({"family": "nope"}, ["body", "rows", 7, "family"]),
        (
            {"config": {"scale": 5, "height": 16, "width": 16, "widths": [4]}},
            ["body", "rows", 7, "config", "scale"],
        ),
        ({"runs": 0}, ["body", "rows", 7, "runs"]),
        ({"passes": 99}, ["body", "rows", 7, "passes"]),
        ({"raw_runs_ms": [1.0]}, ["body", "rows", 7, "raw_runs_ms"]),
    ],
)
def test_import_is_all_or_nothing(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    device: Device,
    db_session: Session,
    change: dict[str, Any],
    loc: list[Any],
) -> None:
    rows = [_row(device.id, i) for i in range(10)]
    rows[7].update(change)
    r = client.post("/v1/measurements/import", json={"rows": rows}, headers=make_headers("profile"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(e["loc"] == loc for e in r.json()["errors"]), r.json()["errors"]
    assert _count(db_session) == 0


def test_import_needs_profile_scope(
    client: TestClient, make_headers: Callable[..., dict[str, str]], device: Device
) -> None:
    r = client.post(
        "/v1/measurements/import", json={"rows": [_row(device.id, 0)]}, headers=make_headers("read")
    )
    assert r.status_code == 403


def test_filters_and_keyset_pages(
    client: TestClient, make_headers: Callable[..., dict[str, str]], device: Device
) -> None:
    headers = make_headers("profile", "read")
    rows = [_row(device.id, i) for i in range(25)]
    assert client.post("/v1/measurements/import", json={"rows": rows}, headers=headers).status_code == 201
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, "cluster": "big"}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/measurements", params=params, headers=headers).json()
        seen += [m["id"] for m in page["items"]]
        assert all(m["cluster"] == "big" for m in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 12 and seen == sorted(set(seen))
    digest = config_hash("sr_block", rows[4]["config"])
    by_hash = client.get("/v1/measurements", params={"config_hash": digest}, headers=headers).json()["items"]
    assert by_hash and all(m["config_hash"] == digest for m in by_hash)
    freq = client.get(
        "/v1/measurements", params={"frequency_khz": 1_001_000, "device": device.id}, headers=headers
    )
    assert len(freq.json()["items"]) == len([r for r in rows if r["frequency_khz"] == 1_001_000])
    future = client.get("/v1/measurements", params={"since": "2999-01-01T00:00:00Z"}, headers=headers)
    assert future.json()["items"] == []
    assert client.get("/v1/measurements", params={"valid": "false"}, headers=headers).json()["items"] == []


def test_csv_and_parquet_exports_equal_json(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    device: Device,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.measurements import service

    # Small batches so the export really is produced in several chunks / row groups.
    monkeypatch.setattr(service, "EXPORT_BATCH_ROWS", 4)
    headers = make_headers("profile", "read")
    rows = [_row(device.id, i) for i in range(11)]
    rows[2]["std_ms"] = None
    assert client.post("/v1/measurements/import", json={"rows": rows}, headers=headers).status_code == 201
    as_json = pd.DataFrame(
        client.get("/v1/measurements", params={"limit": 1000}, headers=headers).json()["items"]
    )

    csv = client.get("/v1/measurements", params={"format": "csv"}, headers=headers)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    from_csv = pd.read_csv(io.BytesIO(csv.content))

    parquet = client.get("/v1/measurements", params={"format": "parquet"}, headers=headers)
    assert parquet.status_code == 200
    from_parquet = pd.read_parquet(io.BytesIO(parquet.content))
    import pyarrow.parquet as pq

    assert pq.ParquetFile(io.BytesIO(parquet.content)).num_row_groups == 3

    for exported in (from_csv, from_parquet):
        assert list(exported["id"]) == list(as_json["id"])
        for column in NUMERIC:
            pd.testing.assert_series_equal(
                exported[column].astype(float), as_json[column].astype(float), check_names=False
            )
        assert [json.loads(c) for c in exported["config"]] == list(as_json["config"])
        assert [json.loads(r) for r in exported["raw_runs_ms"]] == list(as_json["raw_runs_ms"])
        assert list(exported["config_hash"]) == list(as_json["config_hash"])

    filtered = client.get("/v1/measurements", params={"format": "csv", "cluster": "nowhere"}, headers=headers)
    assert pd.read_csv(io.BytesIO(filtered.content)).empty
