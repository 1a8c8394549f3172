"""The dashboard's login cookie on `/v1`: only from this origin, and with the CSRF token to change state.

A browser attaches the cookie to whatever another site makes it send, and SameSite does not separate two
ports of one host; a bearer header it never adds by itself, so bearer calls are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from service.dashboard.csrf import HEADER, csrf_token
from service.deps import TOKEN_COOKIE

PROBLEM = "application/problem+json"
#: The TestClient's own origin is http://testserver.
FOREIGN = ["http://evil.example", "http://testserver:8001", "https://testserver", "null"]


def _cookie_client(client: TestClient, make_headers: Callable[..., dict[str, str]]) -> str:
    secret = make_headers("admin")["Authorization"].removeprefix("Bearer ")
    client.cookies.set(TOKEN_COOKIE, secret)
    return secret


def _forbidden(response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("origin", FOREIGN)
def test_the_cookie_from_another_origin_is_refused(
    client: TestClient, seeded, make_headers: Callable[..., dict[str, str]], origin: str
) -> None:
    secret = _cookie_client(client, make_headers)
    # Even a forged request that somehow carries the right CSRF token is refused from another origin.
    headers = {"Origin": origin, HEADER: csrf_token(secret)}
    _forbidden(client.post(f"/v1/devices/{seeded.device_id}/probe", headers=headers))
    _forbidden(client.post(f"/v1/jobs/{seeded.job_id}/cancel", headers=headers))
    _forbidden(client.patch(f"/v1/devices/{seeded.device_id}", json={"name": "x"}, headers=headers))
    _forbidden(client.post("/v1/predictors/import", content=b"x", headers=headers))
    _forbidden(client.get("/v1/devices", headers={"Origin": origin}))
    form = {"enabled": "false", "csrf_token": csrf_token(secret)}
    _forbidden(client.post(f"/dashboard/devices/{seeded.device_id}/enabled", data=form, headers=headers))


def test_the_cookie_changes_state_only_with_the_csrf_header(
    client: TestClient, seeded, make_headers: Callable[..., dict[str, str]]
) -> None:
    secret = _cookie_client(client, make_headers)
    path = f"/v1/devices/{seeded.device_id}"
    _forbidden(client.patch(path, json={"name": "renamed"}))
    _forbidden(client.patch(path, json={"name": "renamed"}, headers={HEADER: "0" * 64}))
    _forbidden(client.post(f"/v1/jobs/{seeded.job_id}/cancel", headers={"Origin": "http://testserver"}))
    assert client.get(path).json()["name"] != "renamed"

    same_origin = {"Origin": "http://testserver", HEADER: csrf_token(secret)}
    assert client.patch(path, json={"name": "renamed"}, headers=same_origin).status_code == 200
    # Reads need no token (a navigation sends no Origin; the snapshot link of the predictors page is one).
    assert client.get(path).json()["name"] == "renamed"
    assert client.get(path, headers={"Origin": "http://testserver"}).status_code == 200


def test_behind_a_proxy_the_forwarded_origin_counts(
    client: TestClient, seeded, make_headers: Callable[..., dict[str, str]]
) -> None:
    secret = _cookie_client(client, make_headers)
    path = f"/v1/devices/{seeded.device_id}"
    proxied = {"X-Forwarded-Host": "farm.example", "X-Forwarded-Proto": "https", HEADER: csrf_token(secret)}
    ok = client.patch(path, json={"name": "p"}, headers={**proxied, "Origin": "https://farm.example"})
    assert ok.status_code == 200, ok.text
    _forbidden(client.patch(path, json={"name": "p"}, headers={**proxied, "Origin": "http://testserver"}))


def test_bearer_tokens_are_unaffected_by_origin(
    client: TestClient, seeded, make_headers: Callable[..., dict[str, str]]
) -> None:
    headers = {**make_headers("admin"), "Origin": "http://evil.example"}
    response = client.patch(f"/v1/devices/{seeded.device_id}", json={"name": "bearer"}, headers=headers)
    assert response.status_code == 200 and response.json()["name"] == "bearer"
