"""Crafted snapshots (issue 15, finding 2): refused with a 422 before anything is written, every bit of the
manifest covered by a checksum, the older format still read, and a bad stored row never breaks a listing."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.predictors.models import Predictor, PredictorStatus
from service.predictors.snapshot import (
    MANIFEST_DIGEST,
    SnapshotError,
    read_snapshot,
    seal_manifest,
)
from service.settings import Settings
from tests.service.predictors.archives import members as _members
from tests.service.predictors.archives import pack as _pack
from tests.service.predictors.synthetic import insert_rows, synthetic_rows, train_now

Headers = Callable[..., dict[str, str]]
PROBLEM = "application/problem+json"
#: Single-bit flips of manifest.json tried (a fixed-seed sample; the manifest has ~12,000 bits).
BIT_FLIPS = 3000


def _crafted(members: dict[str, bytes], change: Callable[[dict[str, Any]], None], **replaced: Any) -> bytes:
    """An archive whose manifest is changed by `change` and whose JSON members are `replaced`, with every
    checksum recomputed (member hashes and the manifest's seal): only the schema can refuse it."""
    members = dict(members)
    manifest = json.loads(members["manifest.json"])
    for name, value in replaced.items():
        data = json.dumps(value).encode()
        members[name.replace("_json", ".json")] = data
        manifest["members"][name.replace("_json", ".json")] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    change(manifest)
    members["manifest.json"] = seal_manifest(manifest)
    return _pack(members)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value

    return change


def _keep(_: dict[str, Any]) -> None:
    pass


#: The seven type errors of the issue (each answered 500 before), plus a few of their neighbours.
CRAFTED: dict[str, tuple[Callable[[dict[str, Any]], None], dict[str, Any], str]] = {
    "metrics-list": (_keep, {"metrics_json": [1, 2, 3]}, "metrics.json is malformed"),
    "library_versions-string": (_set("library_versions", "xgboost 2"), {}, "library_versions"),
    "predictor-list": (_set("predictor", [1, 2]), {}, "predictor"),
    "params-list": (_set("predictor.params", [1, 2]), {}, "predictor.params"),
    "row_count-many": (_set("predictor.row_count", "many"), {}, "predictor.row_count"),
    "row_count-2^70": (_set("predictor.row_count", 2**70), {}, "predictor.row_count"),
    "feature_schema-list": (_keep, {"feature_schema_json": [1]}, "feature_schema.json is malformed"),
    "device_id-2^40": (_set("device_id", 2**40), {}, "device_id"),
    "device_id-bool": (_set("device_id", True), {}, "device_id"),
    "params-unknown": (_set("predictor.params", {"n_estimators": 5, "evil": 1}), {}, "evil"),
    "params-out-of-range": (_set("predictor.params", {"max_depth": 10_000}), {}, "max_depth"),
    "holdout-object": (_keep, {"holdout_json": {"a": 1}}, "holdout.json"),
    "holdout-row-text": (
        _keep,
        {
            "holdout_json": [
                {"config_hash": "x", "frequency_khz": "fast", "measured_ms": 1, "predicted_ms": 1}
            ]
        },
        "holdout.json is malformed at row 0.frequency_khz",
    ),
    "metrics-mape-text": (_keep, {"metrics_json": {"mape": "low"}}, "metrics.json is malformed at mape"),
    # Valid Python, refused by PostgreSQL's JSONB at commit time: refused before.
    "metrics-nan": (_keep, {"metrics_json": {"mape": float("nan")}}, "NaN is not a JSON number"),
    "library_versions-nul": (_set("library_versions", {"xgboost": "2\x00"}), {}, "NUL character"),
}


def _count(session: Session) -> int:
    session.rollback()
    return session.scalar(select(func.count()).select_from(Predictor)) or 0


#: One trained and exported archive serves every test of this module (training is the slow part).
_EXPORTED: dict[str, bytes] = {}


@pytest.fixture
def archive(
    client: TestClient,
    make_headers: Headers,
    session_factory: sessionmaker[Session],
    settings: Settings,
    db_session: Session,
    device_id: int,
) -> bytes:
    """A snapshot exported by the service (trained once per module run); its device is this test's."""
    if "archive" not in _EXPORTED:
        insert_rows(db_session, device_id, synthetic_rows(60))
        predictor = train_now(session_factory, settings, device_id)
        response = client.get(f"/v1/predictors/{predictor.id}/snapshot", headers=make_headers("read"))
        assert response.status_code == 200
        _EXPORTED["archive"] = response.content
    assert json.loads(_members(_EXPORTED["archive"])["manifest.json"])["device_id"] == device_id
    return _EXPORTED["archive"]


@pytest.fixture
def stored(client: TestClient, make_headers: Headers, archive: bytes, db_session: Session) -> Predictor:
    """The archive imported into this test's database: a ready predictor."""
    response = client.post("/v1/predictors/import", content=archive, headers=make_headers("profile"))
    assert response.status_code == 201, response.text
    predictor = db_session.get(Predictor, response.json()["id"])
    assert predictor is not None
    return predictor


def test_crafted_manifests_are_refused_nothing_written_listing_intact(
    client: TestClient, make_headers: Headers, archive: bytes, stored: Predictor, db_session: Session
) -> None:
    headers = make_headers("profile", "read")
    members = _members(archive)
    before = _count(db_session)
    for name, (change, replaced, message) in CRAFTED.items():
        refused = client.post(
            "/v1/predictors/import", content=_crafted(members, change, **replaced), headers=headers
        )
        assert refused.status_code == 422, (name, refused.status_code, refused.text)
        assert refused.headers["content-type"] == PROBLEM, name
        assert message in refused.json()["detail"], (name, refused.json()["detail"])
        assert _count(db_session) == before, name
        listing = client.get("/v1/predictors", headers=headers)
        assert listing.status_code == 200 and len(listing.json()["items"]) == before, name
        assert client.get(f"/v1/predictors/{stored.id}", headers=headers).status_code == 200, name
    # The untouched archive, re-sealed the same way, is accepted: the refusals above are the schema's.
    accepted = client.post("/v1/predictors/import", content=_crafted(members, _keep), headers=headers)
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database only makes the archive
def test_every_sampled_bit_flip_of_the_manifest_is_refused(archive: bytes) -> None:
    members = _members(archive)
    manifest = members["manifest.json"]
    read_snapshot(_pack(members))  # the intact archive reads
    rng = random.Random(15)
    bits = len(manifest) * 8
    sample = rng.sample(range(bits), min(BIT_FLIPS, bits))
    accepted = []
    for bit in sample:
        flipped = bytearray(manifest)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            read_snapshot(_pack({**members, "manifest.json": bytes(flipped)}))
        except SnapshotError:
            continue
        accepted.append(bit)
    assert accepted == [], f"{len(accepted)} of {len(sample)} single-bit flips accepted: bits {accepted[:10]}"


def test_format_1_snapshots_still_load_and_are_validated_the_same_way(
    client: TestClient, make_headers: Headers, archive: bytes, db_session: Session
) -> None:
    """What earlier builds exported (format 1, no manifest seal) imports; a crafted one is refused."""
    headers = make_headers("profile", "read")
    members = _members(archive)
    manifest = json.loads(members["manifest.json"])
    del manifest[MANIFEST_DIGEST]
    manifest["format_version"] = 1
    old = {**members, "manifest.json": json.dumps(manifest, sort_keys=True, indent=1).encode()}
    imported = client.post("/v1/predictors/import", content=_pack(old), headers=headers)
    assert imported.status_code == 201, imported.text
    before = _count(db_session)
    crafted = {**manifest, "predictor": {**manifest["predictor"], "row_count": "many"}}
    refused = client.post(
        "/v1/predictors/import",
        content=_pack({**old, "manifest.json": json.dumps(crafted).encode()}),
        headers=headers,
    )
    assert refused.status_code == 422 and "predictor.row_count" in refused.json()["detail"]
    assert _count(db_session) == before


def test_a_stored_row_that_does_not_render_never_breaks_the_api(
    client: TestClient, make_headers: Headers, stored: Predictor, db_session: Session
) -> None:
    """A row written before validation existed (metrics a list): listed, shown and activated, flagged."""
    headers = make_headers("profile", "read")
    bad = db_session.get(Predictor, stored.id)
    assert bad is not None
    bad.metrics = [1, 2, 3]  # type: ignore[assignment]
    bad.library_versions = {"xgboost": 2}  # type: ignore[dict-item]
    db_session.commit()
    listing = client.get("/v1/predictors", headers=headers)
    assert listing.status_code == 200, listing.text
    (shown,) = listing.json()["items"]
    assert shown["metrics"] == {} and shown["library_versions"] == {}
    assert "stored record is malformed (library_versions, metrics" in shown["error"]
    one = client.get(f"/v1/predictors/{stored.id}", headers=headers)
    assert one.status_code == 200 and one.json()["error"] == shown["error"]
    page = client.get("/dashboard/predictors", headers=headers)
    assert page.status_code == 200 and "malformed stored value" in page.text
    activated = client.post(f"/v1/predictors/{stored.id}/activate", headers=headers)
    assert activated.status_code == 200 and activated.json()["active"] is True
    assert activated.json()["status"] == PredictorStatus.ready.value


def test_import_checks_the_token_before_reading_the_body(client: TestClient, archive: bytes) -> None:
    """Anonymous uploads answer 401 (not a multipart 422); OpenAPI declares the body's media types."""
    for attempt in (
        {"files": {"snapshot": ("s.tar", archive, "application/x-tar")}},
        {"content": b"--broken-multipart", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        {"content": archive},
    ):
        response = client.post("/v1/predictors/import", **attempt)  # type: ignore[arg-type]
        assert response.status_code == 401, (attempt.keys(), response.text)
        assert response.headers["content-type"] == PROBLEM
    body = client.get("/openapi.json").json()["paths"]["/v1/predictors/import"]["post"]["requestBody"]
    assert {"application/x-tar", "multipart/form-data"} <= set(body["content"])
