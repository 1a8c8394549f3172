"""Transfer from peers: what a device's predictor learns from the farm's other devices of the same family.

A *peer* is another device's ready predictor of the family (not itself a transfer predictor: a peer is
served from its own bytes alone). Training with peers adds a third candidate to the run (training.py),
fitted on the same split as the physics-prior and plain candidates:

- features: the device's own feature row, each peer's predicted log latency of the row's config — at the
  row's frequency mapped to the same fraction of the peer's top trained clock (`peer_frequency_khz`),
  on the row's unit and precision where the peer knows them, else the peer's defaults — and each peer's log
  latency less the device's own prior;
- base margin: the better, on the validation rows (median absolute log error), of the device's own physics
  prior and a ridge-linear map of the peers' log latencies (`choose_margin`): the peers carry the shape of
  the cost surface, the device's few measurements its scale;
- it serves only where the run's selection (holdout, or cross-validation when configs are few) says it
  beats both other candidates; on real phones whose GPUs differ in kind it often does not.

A transfer predictor that serves needs its peers' models at predict time: their median boosters and
feature schemas are packed into one blob (`pack_peers`) kept in the predictor's `peer_models` column and a
snapshot's `peers.bin`, never in the JSON schema (listings stay small). The blob format: the magic
`LFPEERS1`, a 4-byte big-endian length, that many bytes of JSON (`[{device_id, predictor_id, version,
feature_schema, size, sha256}]`), then each peer's UBJSON booster back to back.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.predictors.inference import MARGIN_PEERS, MARGIN_PRIOR, LatencyModel, PeerModel

MAGIC = b"LFPEERS1"
#: Ridge penalty of the linear map from the peers' log latencies (keeps 2–3 near-collinear peers tame).
PEER_RIDGE = 1e-3
#: Most peers a transfer predictor learns from (each adds a prediction to every served row).
MAX_PEERS = 16


class PeerBlobError(ValueError):
    """A packed peers blob is malformed or does not match its checksums."""


def load_peer(
    device_id: int, predictor_id: int, version: int, feature_schema: Mapping[str, Any], median_model: bytes
) -> PeerModel:
    """A peer ready to predict, from its stored schema and median booster (used thrice: the quantile
    models are never asked of a peer)."""
    model = LatencyModel(feature_schema, median_model, median_model, median_model)
    return PeerModel(device_id, predictor_id, version, model, median_model)


def fit_peer_map(y: np.ndarray, peer_logs: np.ndarray, fit: np.ndarray) -> list[float]:
    """Intercept and weights of log latency ≈ a + Σ b_p · peer_p on the fitted rows (ridge)."""
    a = peer_logs[fit]
    mean_a, mean_y = a.mean(axis=0), float(y[fit].mean())
    centred = a - mean_a
    gram = centred.T @ centred + PEER_RIDGE * len(a) * np.eye(a.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (y[fit] - mean_y))
    return [float(mean_y - mean_a @ weights), *map(float, weights)]


def choose_margin(
    y: np.ndarray,
    own_margin: np.ndarray,
    peer_logs: np.ndarray,
    fit: np.ndarray,
    validation: np.ndarray | None,
    given: str | None = None,
) -> dict[str, Any]:
    """The transfer model's margin entry: the linear peer map fitted on `fit`, and which margin serves —
    `given`, or the one of lower median absolute log error on the `validation` rows."""
    coefficients = fit_peer_map(y, peer_logs, fit)
    margin = given
    if margin is None:
        assert validation is not None
        mapped = coefficients[0] + peer_logs @ np.asarray(coefficients[1:])
        own_error = float(np.median(np.abs(own_margin[validation] - y[validation])))
        peer_error = float(np.median(np.abs(mapped[validation] - y[validation])))
        margin = MARGIN_PEERS if peer_error < own_error else MARGIN_PRIOR
    return {"margin": margin, "peer_coefficients": coefficients}


def pack_peers(peers: Sequence[PeerModel]) -> bytes:
    """The peers' schemas and median boosters as one blob (module docstring)."""
    head = [
        {
            **peer.provenance(),
            "feature_schema": peer.model.schema,
            "size": len(peer.median_model),
            "sha256": hashlib.sha256(peer.median_model).hexdigest(),
        }
        for peer in peers
    ]
    text = json.dumps(head, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(text)) + text + b"".join(p.median_model for p in peers)


def unpack_peers(blob: bytes) -> list[PeerModel]:
    """The peers of a packed blob, verified (sizes, checksums) and loaded; `PeerBlobError` names the fault."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise PeerBlobError("the peers blob does not start with LFPEERS1")
    (length,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        head = json.loads(blob[start : start + length])
    except ValueError as exc:
        raise PeerBlobError(f"the peers blob's header is not JSON: {exc}") from None
    if not isinstance(head, list) or len(head) > MAX_PEERS:
        raise PeerBlobError(f"the peers blob's header must list at most {MAX_PEERS} peers")
    offset = start + length
    peers = []
    for i, entry in enumerate(head):
        try:
            size = int(entry["size"])
            raw = blob[offset : offset + size]
            if len(raw) != size or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                raise PeerBlobError(f"peer {i}'s model does not match its size and sha256")
            peers.append(
                load_peer(
                    int(entry["device_id"]),
                    int(entry["predictor_id"]),
                    int(entry["version"]),
                    entry["feature_schema"],
                    raw,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PeerBlobError):
                raise
            raise PeerBlobError(f"peer {i} of the peers blob cannot be loaded: {exc}") from None
        offset += size
    if offset != len(blob):
        raise PeerBlobError("the peers blob has bytes after its last model")
    return peers
