"""/healthz checks the database; /metrics counts requests per route template."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_healthz_reports_the_database(client: TestClient, settings: Settings) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == ("sqlite" if settings.is_sqlite else "postgresql")


def test_healthz_is_503_when_the_database_is_gone(tmp_path) -> None:
    settings = Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none", state_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


def test_metrics_count_requests_by_route_template(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/v1/devices/41", headers=admin_headers)
    client.get("/v1/devices/42", headers=admin_headers)
    text = client.get("/metrics").text
    line = next(
        row
        for row in text.splitlines()
        if row.startswith("latfarm_http_requests_total{")
        and 'route="/v1/devices/{device_id}"' in row
        and 'status="404"' in row
    )
    assert line.endswith(" 2.0")
    assert "latfarm_http_request_duration_seconds_bucket" in text
