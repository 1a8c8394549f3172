"""Transfer predictors: fitting from peers, the selection that may refuse them, serving, snapshots, errors.

The peer is trained on the synthetic law times a factor that jumps from one kind of config to another
(`_quirk`), so what it predicts has no smooth law. The new device's latencies are 2.5 × what the peer
predicts (1 % noise): a device that differs from its peer by a constant, which 25 measurements cannot learn
from scratch but pin down at once through the peer.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.deps import TOKEN_COOKIE
from service.predictors.inference import (
    MARGIN_PEERS,
    MARGIN_PRIOR,
    MARGIN_STACKED,
    PLAIN_MODEL,
    PRIOR_MODEL,
    TRANSFER_MODEL,
    LatencyModel,
    peer_frequency_khz,
    transfer_margin,
)
from service.predictors.snapshot import Snapshot, SnapshotError, seal_manifest
from service.predictors.training import (
    TrainingResult,
    TrainingRows,
    _beats,
    choose_candidate,
    fit_predictor,
)
from service.predictors.transfer import (
    PeerBlobError,
    fit_margin,
    fit_peer_map,
    load_peer,
    pack_peers,
    unpack_peers,
)
from tests.service.predictors.archives import members as _members
from tests.service.predictors.archives import pack as _pack
from tests.service.predictors.synthetic import (
    FAST_PARAMS,
    add_device,
    insert_rows,
    sample_configs,
    synthetic_rows,
    wait_for_status,
)

Headers = Callable[..., dict[str, str]]
PROBLEM = "application/problem+json"


def _quirk(config: Mapping[str, Any]) -> float:
    """A factor in [1, 2) of the head width, activation and residual with no smooth law: 28 cells, each a
    jump of its own, which a peer with 150 configs has seen and a device with 25 has mostly not."""
    cell = f"{config['widths'][0]}:{config['activation']}:{config['residual']}"
    return 1.0 + (zlib.crc32(cell.encode()) % 1000) / 1000.0


def _quirky(rows: TrainingRows, scale: float) -> TrainingRows:
    """`rows` with every latency times `scale` and the config's quirk."""
    ms = [m * scale * _quirk(c) for m, c in zip(rows.median_ms, rows.configs, strict=True)]
    return TrainingRows(
        rows.family,
        rows.ids,
        rows.configs,
        rows.config_hashes,
        rows.frequencies_khz,
        rows.threads,
        rows.clusters,
        ms,
    )


@pytest.fixture(scope="module")
def peer_result() -> TrainingResult:
    """A peer predictor trained on 150 quirky configs (seed 3)."""
    return fit_predictor(_quirky(synthetic_rows(150, seed=3), 1.0), FAST_PARAMS)


def _scaled_peer(result: TrainingResult, n_configs: int = 25, seed: int = 11) -> TrainingRows:
    """A new device's rows: 2.5 × the peer's predictions, on other configs than the peer measured."""
    peer = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
    rows = synthetic_rows(n_configs, seed=seed)
    noise = np.random.default_rng(seed).normal(0.0, 0.01, len(rows))
    ms = [
        2.5 * float(peer.predict([c], [f]).latency_ms[0]) * (1.0 + e)
        for c, f, e in zip(rows.configs, rows.frequencies_khz, noise, strict=True)
    ]
    return TrainingRows(
        rows.family,
        rows.ids,
        rows.configs,
        rows.config_hashes,
        rows.frequencies_khz,
        rows.threads,
        rows.clusters,
        ms,
    )


def test_a_peer_informed_transfer_model_serves_and_is_accurate(peer_result: TrainingResult) -> None:
    peer = load_peer(7, 70, 1, peer_result.feature_schema, peer_result.model)
    result = fit_predictor(_scaled_peer(peer_result), FAST_PARAMS, min_rows=1, peers=[peer])
    metrics = result.metrics
    assert metrics["serving"] == TRANSFER_MODEL
    assert metrics["transfer"]["peers"] == [{"device_id": 7, "predictor_id": 70, "version": 1}]
    assert metrics["transfer"]["serving"] is True
    assert set(metrics["candidates"]) == {PRIOR_MODEL, PLAIN_MODEL, TRANSFER_MODEL}
    assert metrics["selection"]["by"].startswith("5-fold")  # 25 configs: too few for the holdout alone
    assert result.peers == [peer]
    # Unseen configs: the transfer model knows their quirk through the peer; the device's prior cannot.
    model = LatencyModel(
        result.feature_schema, result.model, result.model_p10, result.model_p90, result.peers
    )
    unseen = _scaled_peer(peer_result, 40, seed=23)
    measured = np.asarray(unseen.median_ms)
    got = np.concatenate(
        [
            model.predict([c], [f]).latency_ms
            for c, f in zip(unseen.configs, unseen.frequencies_khz, strict=True)
        ]
    )
    moved_share = float(np.mean(np.abs(got / measured - 1) <= 0.10))
    assert moved_share >= 0.9
    scratch = fit_predictor(_scaled_peer(peer_result), FAST_PARAMS, min_rows=1)
    alone = LatencyModel(scratch.feature_schema, scratch.model, scratch.model_p10, scratch.model_p90)
    alone_got = np.concatenate(
        [
            alone.predict([c], [f]).latency_ms
            for c, f in zip(unseen.configs, unseen.frequencies_khz, strict=True)
        ]
    )
    alone_share = float(np.mean(np.abs(alone_got / measured - 1) <= 0.10))
    assert moved_share > alone_share + 0.1, (moved_share, alone_share)


def test_a_transfer_model_without_its_peers_refuses_to_load(peer_result: TrainingResult) -> None:
    peer = load_peer(7, 70, 1, peer_result.feature_schema, peer_result.model)
    result = fit_predictor(_scaled_peer(peer_result), FAST_PARAMS, min_rows=1, peers=[peer])
    with pytest.raises(ValueError, match="peer predictors"):
        LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)


def test_an_uninformative_peer_never_serves_when_it_lost(peer_result: TrainingResult) -> None:
    # The new device has no quirk: the peer's quirky predictions mislead; whatever serves must have won.
    peer = load_peer(7, 70, 1, peer_result.feature_schema, peer_result.model)
    rows = synthetic_rows(30, seed=5)
    result = fit_predictor(rows, FAST_PARAMS, min_rows=1, peers=[peer])
    scores = result.metrics["selection"]["scores"]
    serving = result.metrics["serving"]
    assert serving == choose_candidate(scores)
    assert not any(_beats(scores[kind], scores[serving]) for kind in scores if kind != serving)
    if serving != TRANSFER_MODEL:
        assert result.peers == [] and result.metrics["transfer"]["serving"] is False


def test_selection_is_by_folds_for_a_transfer_training_and_by_the_holdout_otherwise(
    peer_result: TrainingResult,
) -> None:
    peer = load_peer(7, 70, 1, peer_result.feature_schema, peer_result.model)
    rows = synthetic_rows(30, seed=5)
    by = {
        name: fit_predictor(rows, {**FAST_PARAMS, **params}, min_rows=1, peers=peers).metrics["selection"][
            "by"
        ]
        for name, params, peers in (
            ("own, auto", {}, []),
            ("transfer, auto", {}, [peer]),
            ("own, cv", {"selection": "cv"}, []),
            ("transfer, holdout", {"selection": "holdout"}, [peer]),
        )
    }
    assert by == {
        "own, auto": "holdout",
        "transfer, auto": "5-fold cross-validation + holdout",
        "own, cv": "5-fold cross-validation + holdout",
        "transfer, holdout": "holdout",
    }


def test_choose_candidate_keeps_the_prior_on_ties_and_never_takes_a_loser() -> None:
    good = {"within_10": 0.9, "mape": 3.0}
    worse = {"within_10": 0.8, "mape": 2.0}
    assert choose_candidate({PRIOR_MODEL: good, PLAIN_MODEL: worse, TRANSFER_MODEL: worse}) == PRIOR_MODEL
    assert choose_candidate({PRIOR_MODEL: good, PLAIN_MODEL: good, TRANSFER_MODEL: good}) == PRIOR_MODEL
    assert choose_candidate({PRIOR_MODEL: worse, PLAIN_MODEL: worse, TRANSFER_MODEL: good}) == TRANSFER_MODEL
    better_mape = {"within_10": 0.9, "mape": 2.0}
    assert (
        choose_candidate({PRIOR_MODEL: good, PLAIN_MODEL: good, TRANSFER_MODEL: better_mape})
        == TRANSFER_MODEL
    )


def test_peer_frequency_is_the_same_fraction_of_the_peer_top_clock() -> None:
    mapped = peer_frequency_khz(np.array([1_000_000.0, 2_000_000.0]), 2_000_000.0, 3_000_000.0)
    assert mapped.tolist() == [1_500_000.0, 3_000_000.0]


def test_the_stacked_margin_fits_prior_and_peers_at_once_and_older_margins_still_read() -> None:
    """The margin is one ridge map of the own prior and the peers (never worse on its fitted rows than
    either alone); the two margins older predictors chose between still predict as they did."""
    rng = np.random.default_rng(3)
    n = 120
    own = rng.normal(0.0, 1.0, n)
    peers = np.column_stack([rng.normal(0.0, 1.0, n), rng.normal(0.0, 1.0, n)])
    # Truth: half the prior, half the first peer; neither alone explains it.
    y = 0.2 + 0.5 * own + 0.5 * peers[:, 0] + rng.normal(0.0, 0.02, n)
    fit = np.ones(n, dtype=bool)
    entry = fit_margin(y, own, peers, fit)
    assert entry["margin"] == MARGIN_STACKED
    a, w_own, *w_peers = entry["stacked_coefficients"]
    assert a == pytest.approx(0.2, abs=0.02) and w_own == pytest.approx(0.5, abs=0.02)
    assert w_peers == pytest.approx([0.5, 0.0], abs=0.02)
    stacked = transfer_margin(entry, own, peers)
    peers_only = transfer_margin(
        {"margin": MARGIN_PEERS, "peer_coefficients": fit_peer_map(y, peers, fit)}, own, peers
    )
    prior_only = transfer_margin({"margin": MARGIN_PRIOR}, own, peers)
    errors = [float(np.mean((m - y) ** 2)) for m in (stacked, peers_only, prior_only)]
    assert errors[0] < 0.01 < min(errors[1:])
    assert prior_only == pytest.approx(own.astype(np.float32))


def test_packed_peers_round_trip_and_refuse_tampering(peer_result: TrainingResult) -> None:
    peer = load_peer(7, 70, 2, peer_result.feature_schema, peer_result.model)
    blob = pack_peers([peer])
    (back,) = unpack_peers(blob)
    assert back.provenance() == {"device_id": 7, "predictor_id": 70, "version": 2}
    assert back.median_model == peer.median_model
    configs = sample_configs(5, seed=9)
    np.testing.assert_array_equal(
        back.model.predict(configs, [1_600_000]).latency_ms,
        peer.model.predict(configs, [1_600_000]).latency_ms,
    )
    with pytest.raises(PeerBlobError, match="sha256"):
        unpack_peers(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(PeerBlobError, match="LFPEERS1"):
        unpack_peers(b"nonsense")
    with pytest.raises(PeerBlobError, match="after its last model"):
        unpack_peers(blob + b"x")


# -- over HTTP, on both engines -------------------------------------------------------------------------
def _train(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    created = client.post("/v1/predictors", json=body, headers=headers)
    assert created.status_code == 202, created.text
    done = wait_for_status(client, headers, created.json()["id"])
    assert done["status"] == "ready", done["error"]
    return done


def test_transfer_over_http_serves_lists_small_and_round_trips_a_snapshot(
    client: TestClient, make_headers: Headers, db_session: Session
) -> None:
    profile, predict = make_headers("profile", "read"), make_headers("predict")
    peer_device, device = add_device(db_session), add_device(db_session)
    peer_rows = _quirky(synthetic_rows(150, seed=3), 1.0)
    insert_rows(db_session, peer_device, peer_rows)
    peer = _train(client, profile, {"family": "sr_block", "device": peer_device, "params": FAST_PARAMS})
    # The device's rows from the very peer model the service trained (its snapshot predicts as it does).
    peer_snapshot = Snapshot.from_bytes(
        client.get(f"/v1/predictors/{peer['id']}/snapshot", headers=profile).content
    )
    contents = peer_snapshot.contents
    insert_rows(
        db_session,
        device,
        _scaled_peer(
            TrainingResult(
                contents.model,
                contents.model_p10,
                contents.model_p90,
                contents.feature_schema,
                {},
                [],
                "",
                0,
                {},
                {},
            )
        ),
    )
    assert client.post(f"/v1/predictors/{peer['id']}/activate", headers=profile).status_code == 200

    done = _train(
        client,
        profile,
        {"family": "sr_block", "device": device, "params": FAST_PARAMS, "transfer": {"peers": "all"}},
    )
    named = [{"device_id": peer_device, "predictor_id": peer["id"], "version": peer["version"]}]
    assert done["transfer"] == {"peers": named}
    assert done["metrics"]["serving"] == TRANSFER_MODEL and done["metrics"]["transfer"]["peers"] == named
    assert client.post(f"/v1/predictors/{done['id']}/activate", headers=profile).status_code == 200

    configs = sample_configs(6, seed=31)
    answer = client.post(
        "/v1/predict",
        json={
            "device": device,
            "family": "sr_block",
            "configs": configs,
            "frequencies_khz": [800_000, 2_400_000],
        },
        headers=predict,
    )
    assert answer.status_code == 200, answer.text
    served = [p["latency_ms"] for p in answer.json()["predictions"]]

    archive = client.get(f"/v1/predictors/{done['id']}/snapshot", headers=profile)
    assert archive.status_code == 200
    offline = Snapshot.from_bytes(archive.content)
    got = offline.predict("sr_block", configs, frequencies_khz=[800_000, 2_400_000]).latency_ms
    assert got.tolist() == served  # bit for bit, peers and all

    # Without its peers a transfer snapshot is refused, never served by half a model.
    parts = _members(archive.content)
    manifest = json.loads(parts.pop("peers.bin") and parts["manifest.json"])
    del manifest["members"]["peers.bin"]
    parts["manifest.json"] = seal_manifest(manifest)
    with pytest.raises(SnapshotError, match="peer predictors"):
        Snapshot.from_bytes(_pack(parts))

    listing = client.get("/v1/predictors", params={"device": device}, headers=profile)
    assert listing.status_code == 200
    assert len(listing.content) < len(archive.content) / 4  # no model nor peer bytes in a listing
    assert all("peer_models" not in item for item in listing.json()["items"])

    imported = client.post(
        "/v1/predictors/import", content=archive.content, params={"device": device}, headers=profile
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["transfer"] == {"peers": named}
    assert client.post(f"/v1/predictors/{imported.json()['id']}/activate", headers=profile).status_code == 200
    again = client.post(
        "/v1/predict",
        json={
            "device": device,
            "family": "sr_block",
            "configs": configs,
            "frequencies_khz": [800_000, 2_400_000],
        },
        headers=predict,
    )
    assert [p["latency_ms"] for p in again.json()["predictions"]] == served

    client.cookies.set(TOKEN_COOKIE, profile["Authorization"].removeprefix("Bearer "))
    page = client.get("/dashboard/predictors")
    client.cookies.clear()
    assert page.status_code == 200
    assert "learnt from peers" in page.text and f'data-peer-predictor="{peer["id"]}"' in page.text
    assert "chosen by 5-fold cross-validation + holdout" in page.text


def test_transfer_requests_with_no_or_unknown_peers_are_refused_naming_the_field(
    client: TestClient, make_headers: Headers, db_session: Session
) -> None:
    profile = make_headers("profile", "read")
    device, bystander = add_device(db_session), add_device(db_session)
    insert_rows(db_session, device, synthetic_rows(20))
    base = {"family": "sr_block", "device": device, "params": FAST_PARAMS}

    def refused(transfer: dict[str, Any], status: int = 422) -> dict[str, Any]:
        answer = client.post("/v1/predictors", json={**base, "transfer": transfer}, headers=profile)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith(PROBLEM)
        return dict(answer.json())

    none = refused({"peers": "all"})
    assert none["errors"][0]["loc"] == ["body", "transfer", "peers"] and "no other device" in none["detail"]
    unknown = refused({"peers": [999_999]})
    assert unknown["errors"][0]["loc"] == ["body", "transfer", "peers", 0]
    assert "999999 does not exist" in unknown["detail"]
    idle = refused({"peers": [bystander]})
    assert f"device {bystander} has no active sr_block predictor" in idle["detail"]
    itself = refused({"peers": [device]})
    assert "being trained" in itself["detail"]
    repeated = refused({"peers": [bystander, bystander]})
    assert "transfer" in str(repeated["errors"][0]["loc"])
    assert refused({"peers": []})["errors"][0]["loc"][:2] == ["body", "transfer"]
