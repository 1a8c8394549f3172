"""Every error is application/problem+json: 404, 405, 413, 500 and validation alike."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

PROBLEM = "application/problem+json"


def _assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def test_unknown_route_is_404_problem(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = _assert_problem(client.get("/v1/nothing-here", headers=admin_headers), 404)
    assert "/v1/nothing-here" in body["detail"]


def test_wrong_method_is_405_problem(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = _assert_problem(client.put("/v1/devices", json={}, headers=admin_headers), 405)
    assert "PUT" in body["detail"]


def test_oversize_body_is_413(settings: Settings, admin_headers: dict[str, str]) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 1000}))
    with TestClient(app) as small:
        body = {"serial": "a:1", "transport": "tcp", "name": "x" * 5000}
        _assert_problem(small.post("/v1/devices", json=body, headers=admin_headers), 413)
        # Chunked bodies without a Content-Length are counted as they stream in.
        chunks = (b"x" * 400 for _ in range(5))
        streamed = small.post(
            "/v1/devices", content=chunks, headers={**admin_headers, "content-type": "application/json"}
        )
        _assert_problem(streamed, 413)
        ok = small.post("/v1/devices", json={"serial": "a:1", "transport": "tcp"}, headers=admin_headers)
        assert ok.status_code == 201


def test_unhandled_error_is_500_without_trace(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    body = _assert_problem(response, 500)
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in body["detail"]


def test_malformed_json_is_422_problem(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/devices", content=b"{not json", headers={**admin_headers, "content-type": "application/json"}
    )
    body = _assert_problem(response, 422)
    assert body["errors"]
