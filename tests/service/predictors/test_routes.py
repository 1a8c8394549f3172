"""`/v1/predictors` and `/v1/predict` over HTTP, on both engines."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.predictors.models import Predictor
from service.predictors.schemas import PredictResponse
from service.predictors.snapshot import Snapshot, seal_manifest
from service.settings import Settings
from tests.service.predictors.archives import members as _members
from tests.service.predictors.archives import pack as _pack
from tests.service.predictors.synthetic import (
    FAST_PARAMS,
    insert_rows,
    sample_configs,
    synthetic_rows,
    train_now,
    wait_for_status,
)

PROBLEM = "application/problem+json"
_JSON = {"content-type": "application/json"}
Headers = Callable[..., dict[str, str]]


def _predict(client: TestClient, headers: dict[str, str], device: int, configs: list, **freq: object):
    return client.post(
        "/v1/predict",
        json={"device": device, "family": "sr_block", "configs": configs, **freq},
        headers=headers,
    )


def _count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Predictor)) or 0)


def test_train_over_http_then_activate_and_predict(
    client: TestClient, make_headers: Headers, db_session: Session, device_id: int
) -> None:
    insert_rows(db_session, device_id, synthetic_rows(60))
    profile, predict = make_headers("profile", "read"), make_headers("predict")
    created = client.post(
        "/v1/predictors",
        json={"family": "sr_block", "device": device_id, "params": FAST_PARAMS},
        headers=profile,
    )
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "training"
    done = wait_for_status(client, profile, created.json()["id"])
    assert done["status"] == "ready", done["error"]
    assert "model" not in done and done["metrics"]["per_frequency"] and done["row_count"] == 180

    # Configs of the training data: every feature and kernel shape in range, so none is extrapolated.
    configs = sample_configs(3, seed=0)
    before = _predict(client, predict, device_id, configs, frequency_khz=1_600_000)
    assert before.status_code == 409 and before.headers["content-type"] == PROBLEM
    assert "POST /v1/predictors" in before.json()["detail"] and "activate" in before.json()["detail"]

    activated = client.post(f"/v1/predictors/{done['id']}/activate", headers=profile)
    assert activated.status_code == 200 and activated.json()["active"] is True

    several = _predict(client, predict, device_id, configs, frequencies_khz=[800_000, 2_400_000])
    assert several.status_code == 200, several.text
    body = several.json()
    assert body["predictor_id"] == done["id"] and len(body["predictions"]) == 6
    # The hand-encoded body is exactly the documented response model (no field missing or extra).
    documented = PredictResponse.model_validate_json(several.content, strict=True)
    assert documented.model_dump() == body
    # Config-major: row i*2 + j is config i at frequency j.
    for j, freq in enumerate([800_000, 2_400_000]):
        single = _predict(client, predict, device_id, configs, frequency_khz=freq).json()["predictions"]
        assert [p["latency_ms"] for p in body["predictions"][j::2]] == [p["latency_ms"] for p in single]
    for p in body["predictions"]:
        assert p["p10_ms"] <= p["latency_ms"] <= p["p90_ms"] and p["extrapolated"] is False
    slow, fast = body["predictions"][0]["latency_ms"], body["predictions"][1]["latency_ms"]
    assert slow > fast  # three times the clock is faster

    listed = client.get(f"/v1/predictors?family=sr_block&device={device_id}", headers=profile).json()
    assert [p["id"] for p in listed["items"]] == [done["id"]] and listed["next_cursor"] is None


def test_predict_errors_409_413_422(
    settings: Settings, make_headers: Headers, trained: Predictor, db_session: Session
) -> None:
    app = create_app(settings.model_copy(update={"max_predict_configs": 4}))
    predict, profile = make_headers("predict"), make_headers("profile")
    configs = sample_configs(3, seed=7)
    with TestClient(app) as client:
        other_device = _predict(client, predict, trained.device_id + 1000, configs, frequency_khz=1_000_000)
        assert (
            other_device.status_code == 409
            and "no active sr_block predictor" in other_device.json()["detail"]
        )

        client.post(f"/v1/predictors/{trained.id}/activate", headers=profile)
        too_many = _predict(client, predict, trained.device_id, configs, frequencies_khz=[800_000, 1_600_000])
        assert too_many.status_code == 413 and too_many.headers["content-type"] == PROBLEM
        assert "3 configs × 2 frequencies = 6" in too_many.json()["detail"]

        bad = [configs[0], {**configs[1], "widths": [16, 0]}, configs[2]]
        invalid = _predict(client, predict, trained.device_id, bad, frequency_khz=1_000_000)
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["loc"] == ["body", "configs", 1, "widths"]

        missing = [configs[0], {k: v for k, v in configs[1].items() if k != "scale"}]
        assert _predict(client, predict, trained.device_id, missing, frequency_khz=1_000_000).json()[
            "errors"
        ][0]["loc"] == ["body", "configs", 1, "scale"]

        both = _predict(client, predict, trained.device_id, configs, frequency_khz=1, frequencies_khz=[1])
        assert both.status_code == 422 and "exactly one of" in both.json()["detail"]

        unknown = client.post(
            "/v1/predict",
            json={"device": trained.device_id, "family": "nope", "configs": [], "frequency_khz": 1},
            headers=predict,
        )
        assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "family"]

        # The body is validated from its bytes: broken JSON, a missing field and a non-object config are
        # problem+json 422s naming the place, and a caller without a token is refused before any of that.
        broken = client.post("/v1/predict", content=b'{"device": 1, "configs": [', headers=_JSON | predict)
        assert broken.status_code == 422 and broken.headers["content-type"] == PROBLEM
        assert broken.json()["errors"][0]["loc"] == ["body"]
        no_configs = client.post(
            "/v1/predict", json={"device": trained.device_id, "family": "sr_block", "frequency_khz": 1},
            headers=predict,
        )  # fmt: skip
        assert no_configs.status_code == 422 and no_configs.json()["errors"][0]["loc"] == ["body", "configs"]
        not_object = _predict(client, predict, trained.device_id, [configs[0], 7], frequency_khz=1_000_000)
        assert not_object.status_code == 422
        assert not_object.json()["errors"][0]["loc"] == ["body", "configs", 1]
        anonymous = client.post("/v1/predict", content=b"not json", headers=_JSON)
        assert anonymous.status_code == 401
        assert (
            _predict(client, make_headers("read"), trained.device_id, configs, frequency_khz=1).status_code
            == 403
        )


def test_extrapolation_is_flagged(client: TestClient, make_headers: Headers, trained: Predictor) -> None:
    profile, predict = make_headers("profile"), make_headers("predict")
    client.post(f"/v1/predictors/{trained.id}/activate", headers=profile)
    inside = sample_configs(1, seed=1)
    wider = [{**inside[0], "height": 720, "width": 1280}]
    got = _predict(client, predict, trained.device_id, inside + wider, frequencies_khz=[1_600_000, 4_000_000])
    flags = [p["extrapolated"] for p in got.json()["predictions"]]
    assert flags == [False, True, True, True]


def test_snapshot_round_trip_is_bit_identical(
    client: TestClient, make_headers: Headers, trained: Predictor, db_session: Session
) -> None:
    read, profile, predict = make_headers("read"), make_headers("profile"), make_headers("predict")
    client.post(f"/v1/predictors/{trained.id}/activate", headers=profile)
    response = client.get(f"/v1/predictors/{trained.id}/snapshot", headers=read)
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert f'filename="sr_block-device{trained.device_id}-v1.tar"' in response.headers["content-disposition"]

    configs = sample_configs(50, seed=11)
    freqs = [800_000, 1_200_000, 2_400_000]
    served = _predict(client, predict, trained.device_id, configs, frequencies_khz=freqs).json()[
        "predictions"
    ]
    offline = Snapshot.from_bytes(response.content).predict("sr_block", configs, frequencies_khz=freqs)
    for key in ("latency_ms", "p10_ms", "p90_ms"):
        assert np.array_equal(np.array([p[key] for p in served]), getattr(offline, key))
    assert np.array_equal(np.array([p["extrapolated"] for p in served]), offline.extrapolated)

    imported = client.post(
        "/v1/predictors/import",
        content=response.content,
        headers={**profile, "content-type": "application/octet-stream"},
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["version"] == 2 and imported.json()["status"] == "ready"
    assert imported.json()["training_data_hash"] == trained.training_data_hash
    client.post(f"/v1/predictors/{imported.json()['id']}/activate", headers=profile)
    again = _predict(client, predict, trained.device_id, configs, frequencies_khz=freqs).json()
    assert again["predictor_id"] == imported.json()["id"]
    assert [p["latency_ms"] for p in again["predictions"]] == [p["latency_ms"] for p in served]

    multipart = client.post(
        "/v1/predictors/import",
        files={"snapshot": ("s.tar", response.content, "application/x-tar")},
        headers=profile,
    )
    assert multipart.status_code == 201 and multipart.json()["version"] == 3


def _with_manifest(archive_members: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    """The manifest changed and re-sealed, as a tamperer who recomputes the checksums would."""
    manifest = json.loads(archive_members["manifest.json"])
    manifest.update(changes)
    return {**archive_members, "manifest.json": seal_manifest(manifest)}


TAMPERINGS = dict(
    zip(
        [
            "changed-byte",
            "wrong-manifest-hash",
            "missing-member",
            "features-version",
            "format-version",
            "extra-member",
            "garbage-manifest",
        ],
        [
            (
                lambda m: {
                    **m,
                    "model.ubj": m["model.ubj"][:-9] + bytes([m["model.ubj"][-9] ^ 1]) + m["model.ubj"][-8:],
                },
                "does not match its sha256",
            ),
            (
                lambda m: _with_manifest(
                    m,
                    members={
                        **json.loads(m["manifest.json"])["members"],
                        "metrics.json": {"sha256": "0" * 64, "size": len(m["metrics.json"])},
                    },
                ),
                "metrics.json' does not match its sha256",
            ),
            (lambda m: {k: v for k, v in m.items() if k != "model_p90.ubj"}, "'model_p90.ubj' is missing"),
            (
                lambda m: _with_manifest(m, features_version=999),
                "incompatible snapshot: features version 999",
            ),
            (lambda m: _with_manifest(m, format_version=3), "incompatible snapshot: format version 3"),
            (lambda m: {**m, "extra.pkl": b"cos\nsystem\n"}, "unexpected member 'extra.pkl'"),
            (lambda m: {"manifest.json": b"not json"}, "manifest.json is not valid JSON"),
        ],
        strict=True,
    )
)


def test_tampered_snapshot_is_refused_and_nothing_written(
    client: TestClient, make_headers: Headers, trained: Predictor, db_session: Session
) -> None:
    profile = make_headers("profile", "read")
    archive = client.get(f"/v1/predictors/{trained.id}/snapshot", headers=profile).content
    before = _count(db_session)
    for name, (tamper, message) in TAMPERINGS.items():
        refused = client.post(
            "/v1/predictors/import", content=_pack(tamper(_members(archive))), headers=profile
        )
        assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM, name
        assert message in refused.json()["detail"], (name, refused.json()["detail"])
        assert _count(db_session) == before, name
    truncated = client.post("/v1/predictors/import", content=archive[:1000], headers=profile)
    assert truncated.status_code == 422 and _count(db_session) == before
    assert client.post("/v1/predictors/import", content=archive, headers=profile).status_code == 201


def test_activation_swaps_atomically_and_other_processes_see_it(
    settings: Settings,
    session_factory: sessionmaker[Session],
    make_headers: Headers,
    trained: Predictor,
    db_session: Session,
) -> None:
    second = train_now(session_factory, settings, trained.device_id, seed=1)
    assert second.status.value == "ready" and second.version == 2
    fresh = settings.model_copy(update={"predictor_refresh_ms": 0})
    profile, predict = make_headers("profile"), make_headers("predict")
    configs = sample_configs(2, seed=3)
    # Two apps on one database stand for two service processes, each with its own cache.
    with TestClient(create_app(fresh)) as first_app, TestClient(create_app(fresh)) as other_app:
        first_app.post(f"/v1/predictors/{trained.id}/activate", headers=profile)
        answer = _predict(first_app, predict, trained.device_id, configs, frequency_khz=1_000_000).json()
        assert answer["predictor_id"] == trained.id

        swapped = other_app.post(f"/v1/predictors/{second.id}/activate", headers=profile)
        assert swapped.status_code == 200
        active = db_session.scalars(
            select(Predictor.id).where(Predictor.device_id == trained.device_id, Predictor.active.is_(True))
        ).all()
        assert active == [second.id]

        answer = _predict(first_app, predict, trained.device_id, configs, frequency_khz=1_000_000).json()
        assert answer["predictor_id"] == second.id


def test_failed_or_missing_predictors(
    client: TestClient, make_headers: Headers, db_session: Session, device_id: int
) -> None:
    profile = make_headers("profile", "read")
    few = client.post("/v1/predictors", json={"family": "sr_block", "device": device_id}, headers=profile)
    assert few.status_code == 422 and "at least 40 are needed (40 more)" in few.json()["detail"]
    assert few.json()["errors"][0]["loc"] == ["body", "device"]
    assert client.get("/v1/predictors/999", headers=profile).status_code == 404
    assert client.post("/v1/predictors/999/activate", headers=profile).status_code == 404
    bad_param = client.post(
        "/v1/predictors",
        json={"family": "sr_block", "device": device_id, "params": {"n_trees": 3}},
        headers=profile,
    )
    assert bad_param.status_code == 422 and bad_param.json()["errors"][0]["loc"][:3] == [
        "body",
        "params",
        "n_trees",
    ]


def test_list_is_keyset_paginated_newest_first(
    client: TestClient, make_headers: Headers, db_session: Session, device_id: int
) -> None:
    for version in (1, 2, 3):
        db_session.add(Predictor(family="sr_block", device_id=device_id, version=version))
    db_session.add(Predictor(family="conv", device_id=device_id, version=1))
    db_session.commit()
    reader = make_headers("read")
    first = client.get("/v1/predictors?family=sr_block&limit=2", headers=reader).json()
    assert [p["version"] for p in first["items"]] == [3, 2] and first["next_cursor"] is not None
    rest = client.get(
        f"/v1/predictors?family=sr_block&limit=2&cursor={first['next_cursor']}", headers=reader
    ).json()
    assert [p["version"] for p in rest["items"]] == [1] and rest["next_cursor"] is None
    assert "model" not in first["items"][0]


def test_a_predictor_says_which_model_serves_and_both_holdout_figures(
    client: TestClient, make_headers: Headers, trained: Predictor
) -> None:
    got = client.get(f"/v1/predictors/{trained.id}", headers=make_headers("read")).json()
    metrics = got["metrics"]
    assert metrics["serving"] in ("prior_xgboost", "plain_xgboost")
    assert set(metrics["candidates"]) == {"prior_xgboost", "plain_xgboost"}
    served = metrics["candidates"][metrics["serving"]]
    other = metrics["candidates"][({"prior_xgboost", "plain_xgboost"} - {metrics["serving"]}).pop()]
    assert (served["within_10"], -served["mape"]) >= (other["within_10"], -other["mape"])
    assert got["feature_schema"]["model"]["kind"] == metrics["serving"]
    assert got["feature_schema"]["features_version"] == 6
