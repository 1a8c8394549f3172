"""Hostile inputs answer 4xx problem+json naming the field, never 500, on both engines (service.bounds)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import SQLAlchemyError

from service.app import create_app
from service.db import make_engine, make_sessionmaker
from service.demo import ServerThread
from service.measurements import service as measurements
from service.settings import Settings

PROBLEM = "application/problem+json"
TOO_BIG = [2**31, 2**63, 10**30]


def _refused(response: httpx.Response, field: str, status: int = 422) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    locs = [[str(p) for p in e["loc"]] for e in response.json().get("errors") or []]
    assert any(field in loc for loc in locs), (field, locs)


@pytest.mark.parametrize("value", TOO_BIG)
def test_ids_beyond_an_integer_column_are_422(
    client: TestClient, admin_headers: dict[str, str], value: int
) -> None:
    for method, path, field in [
        ("GET", f"/v1/devices/{value}", "device_id"),
        ("PATCH", f"/v1/devices/{value}", "device_id"),
        ("DELETE", f"/v1/devices/{value}", "device_id"),
        ("POST", f"/v1/devices/{value}/probe", "device_id"),
        ("GET", f"/v1/jobs/{value}", "job_id"),
        ("GET", f"/v1/jobs/{value}/tasks", "job_id"),
        ("POST", f"/v1/jobs/{value}/cancel", "job_id"),
        ("GET", f"/v1/predictors/{value}", "predictor_id"),
        ("GET", f"/v1/devices?cursor={value}", "cursor"),
        ("GET", f"/v1/predictors?device={value}", "device"),
        ("GET", f"/v1/measurements?device={value}", "device"),
        ("GET", f"/v1/measurements?frequency_khz={value}", "frequency_khz"),
        ("GET", f"/v1/measurements?job={value}&format=csv", "job"),
        ("GET", f"/v1/measurements?job={value}&format=parquet", "job"),
    ]:
        body = {} if method == "PATCH" else None
        _refused(client.request(method, path, json=body, headers=admin_headers), field)
    train = client.post("/v1/predictors", json={"family": "conv", "device": value}, headers=admin_headers)
    _refused(train, "device")


def test_nul_characters_are_refused(client: TestClient, admin_headers: dict[str, str]) -> None:
    _refused(
        client.post("/v1/devices", json={"serial": "a\x00b", "transport": "usb"}, headers=admin_headers),
        "serial",
    )
    _refused(client.get("/v1/measurements?family=sr%00block", headers=admin_headers), "family")
    _refused(client.get("/v1/devices?tag=a%00", headers=admin_headers), "tag")
    row = {
        "device_id": 1,
        "family": "sr_block",
        "config": {"note\x00": 1},
        "cluster": "big",
        "runtime_name": "ort\x00",
        "runs": 1,
        "median_ms": 1.0,
        "mean_ms": 1.0,
        "min_ms": 1.0,
        "max_ms": 1.0,
        "p90_ms": 1.0,
    }
    response = client.post("/v1/measurements/import", json={"rows": [row]}, headers=admin_headers)
    _refused(response, "runtime_name")
    _refused(response, "config")


def test_non_finite_numbers_and_deep_json_are_refused(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    row = '{"rows": [{"device_id": 1, "family": "sr_block", "config": {}, "cluster": "big", '
    row += '"runtime_name": "o",'
    row += '"runs": 1, "median_ms": 1, "mean_ms": 1, "min_ms": 1, "max_ms": Infinity, "p90_ms": 1}]}'
    headers = {**admin_headers, "content-type": "application/json"}
    _refused(client.post("/v1/measurements/import", content=row, headers=headers), "max_ms")
    deep: dict = {}
    for _ in range(200):
        deep = {"x": deep}
    body = {"family": "sr_block", "sampler": {"strategy": "grid", "space": deep}, "devices": [1]}
    _refused(client.post("/v1/jobs", json=body, headers=admin_headers), "space")


def test_datetimes_beyond_the_utc_range_are_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    _refused(client.get("/v1/measurements?since=0001-01-01T00:00:00%2B05:00", headers=admin_headers), "since")
    _refused(client.get("/v1/measurements?until=9999-12-31T23:59:59-05:00", headers=admin_headers), "until")
    row = {
        "device_id": 1,
        "family": "sr_block",
        "config": {},
        "cluster": "big",
        "runtime_name": "ort",
        "runs": 1,
        "measured_at": "0001-01-01T00:00:00+05:00",
        **dict.fromkeys(("median_ms", "mean_ms", "min_ms", "max_ms", "p90_ms"), 1.0),
    }
    response = client.post("/v1/measurements/import", json={"rows": [row]}, headers=admin_headers)
    _refused(response, "measured_at")


@pytest.mark.parametrize("port", [0, 65536, 99999])
def test_a_tcp_port_is_1_to_65535(client: TestClient, admin_headers: dict[str, str], port: int) -> None:
    response = client.post(
        "/v1/devices", json={"serial": f"127.0.0.1:{port}", "transport": "tcp"}, headers=admin_headers
    )
    assert response.status_code == 422 and "1-65535" in response.json()["detail"], response.text


def test_an_export_fails_before_its_first_byte(tmp_path) -> None:
    # A database without the table: the query fails when the export is opened, not mid-stream.
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SQLAlchemyError):
        measurements.open_export(make_sessionmaker(engine), measurements.MeasurementFilter(), "csv")
    engine.dispose()


def test_a_500_closes_its_connection_and_the_next_request_works(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        crashed = http.get("/boom")
        assert crashed.status_code == 500 and crashed.headers["connection"] == "close"
        assert crashed.headers["content-type"] == PROBLEM
        assert http.get("/healthz").status_code == 200  # on a fresh connection, not the dropped one
