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
        ({"precision": "fp64"}, ["body", "rows", 7, "precision"]),
        ({"benchmark": "tensorrt"}, ["body", "rows", 7, "benchmark"]),
        ({"cluster": "gpu", "accelerator": "nnapi"}, ["body", "rows", 7, "accelerator"]),
        ({"bus_frequency_khz": 0}, ["body", "rows", 7, "bus_frequency_khz"]),
        (
            {"layers": [{"name": "conv0", "op_type": "Conv", "ms": -1.0}]},
            ["body", "rows", 7, "layers", 0, "ms"],
        ),
        (
            {"layers": [{"name": "conv0", "op_type": "Conv", "ms": 1.0, "x": 1}]},
            ["body", "rows", 7, "layers", 0, "x"],
        ),
        ({"layers": [{"name": "c", "op_type": "Conv", "ms": 0.1}] * 2_001}, ["body", "rows", 7, "layers"]),
        (
            {"layer_profile": False, "layers": [{"name": "c", "op_type": "Conv", "ms": 0.1}]},
            ["body", "rows", 7, "layers"],
        ),
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


LAYERS = [
    {"name": "/body/conv0/Conv", "op_type": "Conv", "ms": 0.125, "unit": "gpu"},
    {"name": "/body/act0/Relu", "op_type": "Relu", "ms": 0.0625, "unit": None},
    {"name": "/tail/DepthToSpace", "op_type": "DepthToSpace", "ms": 0.25, "unit": "cpu"},
]


def test_precision_unit_and_layers_round_trip(
    client: TestClient, make_headers: Callable[..., dict[str, str]], device: Device, db_session: Session
) -> None:
    headers = make_headers("profile", "read")
    gpu = {
        "cluster": "gpu",
        "precision": "fp16",
        "accelerator": "qnn",
        "layers": LAYERS,
        "bus_frequency_khz": 2_092_000,
    }
    rows = [_row(device.id, i, **(gpu if i % 3 == 0 else {})) for i in range(9)]
    rows[3]["benchmark"], rows[3]["accelerator"] = "tflite", "gpu"
    assert client.post("/v1/measurements/import", json={"rows": rows}, headers=headers).status_code == 201
    stored = db_session.scalars(select(Measurement).order_by(Measurement.id)).all()
    # Rows that say nothing are what every row before accelerators was: onnxruntime on a CPU at fp32.
    assert (stored[1].precision, stored[1].benchmark, stored[1].accelerator, stored[1].layers) == (
        "fp32",
        "onnxruntime",
        None,
        None,
    )
    assert stored[1].layer_profile is False and stored[0].layer_profile is True
    assert [(m.benchmark, m.accelerator) for m in stored if m.cluster == "gpu"] == [
        ("onnxruntime", "qnn"),
        ("tflite", "gpu"),
        ("onnxruntime", "qnn"),
    ]

    def items(**params: Any) -> list[dict[str, Any]]:
        response = client.get("/v1/measurements", params={"limit": 100, **params}, headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    on_gpu = items(unit="gpu")
    assert [m["id"] for m in on_gpu] == [stored[i].id for i in (0, 3, 6)]
    assert all(m["layers"] == LAYERS and m["bus_frequency_khz"] == 2_092_000 for m in on_gpu)
    assert [m["id"] for m in items(cluster="gpu")] == [m["id"] for m in on_gpu]  # the former name
    assert len(items(precision="fp16")) == 3 and len(items(precision="fp32")) == 6
    assert [m["id"] for m in items(unit="gpu", benchmark="tflite")] == [stored[3].id]
    assert items(unit="gpu", precision="fp32") == []
    assert len(items(accelerator="qnn")) == 2
    clash = client.get("/v1/measurements", params={"unit": "gpu", "cluster": "big"}, headers=headers)
    assert clash.status_code == 422 and clash.json()["errors"][0]["loc"] == ["query", "unit"]
    bad = client.get("/v1/measurements", params={"precision": "fp64"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "precision"]

    as_json = items()
    csv = pd.read_csv(
        io.BytesIO(client.get("/v1/measurements", params={"format": "csv"}, headers=headers).content)
    )
    raw = client.get("/v1/measurements", params={"format": "parquet"}, headers=headers).content
    parquet = pd.read_parquet(io.BytesIO(raw))
    for exported in (csv, parquet):
        assert list(exported["precision"]) == [m["precision"] for m in as_json]
        assert list(exported["cluster"]) == [m["cluster"] for m in as_json]
        # Layers go out JSON-encoded (a row without them: an empty cell); they read back as they went in.
        layers = [json.loads(v) if isinstance(v, str) else None for v in exported["layers"]]
        assert layers == [m["layers"] for m in as_json]
        assert layers[0] == LAYERS and layers[1] is None

    # An export imports again as it is: precision, program, option and layers survive the round trip.
    keep = ("cluster", "precision", "benchmark", "accelerator", "layers", "bus_frequency_khz")
    again = [{**_row(device.id, i), **{k: m[k] for k in keep}} for i, m in enumerate(as_json)]
    assert client.post("/v1/measurements/import", json={"rows": again}, headers=headers).status_code == 201
    second = items(limit=100)[len(as_json) :]
    assert [{k: m[k] for k in keep} for m in second] == [{k: m[k] for k in keep} for m in as_json]
