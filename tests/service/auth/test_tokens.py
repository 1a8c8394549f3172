"""API tokens: scopes, 401/403, public read, secrets stored only as sha256."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.app import create_app
from service.auth.models import ApiToken
from service.auth.service import create_token, hash_secret, revoke_token
from service.problems import ConflictError, InvalidInputError
from service.settings import Settings


def test_no_token_is_401(client: TestClient) -> None:
    response = client.get("/v1/devices")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "read" in response.json()["detail"]


def test_unknown_or_malformed_token_is_401(client: TestClient) -> None:
    assert client.get("/v1/devices", headers={"Authorization": "Bearer lf_nope"}).status_code == 401
    assert client.get("/v1/devices", headers={"Authorization": "Basic abc"}).status_code == 401


def test_wrong_scope_is_403(client: TestClient, make_headers) -> None:
    reader = make_headers("read")
    assert client.get("/v1/devices", headers=reader).status_code == 200
    response = client.post("/v1/devices", json={"serial": "a:1", "transport": "tcp"}, headers=reader)
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    predictor = make_headers("predict")
    assert client.get("/v1/devices", headers=predictor).status_code == 403


def test_admin_holds_every_scope(client: TestClient, admin_headers: dict[str, str]) -> None:
    assert client.get("/v1/devices", headers=admin_headers).status_code == 200


def test_revoked_token_is_401(client: TestClient, db_session: Session) -> None:
    _, secret = create_token(db_session, "soon-gone", ["read"])
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/devices", headers=headers).status_code == 200
    revoke_token(db_session, "soon-gone")
    assert client.get("/v1/devices", headers=headers).status_code == 401


def test_public_read_lets_anonymous_read_only(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"public_read": True}))) as client:
        assert client.get("/v1/devices").status_code == 200
        assert client.post("/v1/devices", json={"serial": "a:1", "transport": "tcp"}).status_code == 401


def test_secret_is_stored_only_as_sha256(db_session: Session, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token, secret = create_token(db_session, "ci", ["read", "predict"])
    assert token.secret_sha256 == hash_secret(secret) and len(token.secret_sha256) == 64
    dump = "\n".join(str(row) for row in db_session.execute(text("SELECT * FROM api_token")).all())
    assert secret not in dump
    assert secret not in caplog.text


def test_scopes_are_validated_and_names_unique(db_session: Session) -> None:
    with pytest.raises(InvalidInputError, match="superuser"):
        create_token(db_session, "x", ["read", "superuser"])
    create_token(db_session, "dup", ["read"])
    with pytest.raises(ConflictError):
        create_token(db_session, "dup", ["admin"])
    assert db_session.scalar(select(ApiToken.scopes).where(ApiToken.name == "dup")) == ["read"]
