"""Transfer from peers: what a device's predictor learns from the farm's other devices of the same family.

A *peer* is another device's ready predictor of the family (not itself a transfer predictor: a peer is
served from its own bytes alone). Training with peers adds a third candidate to the run (training.py),
fitted on the same split as the physics-prior and plain candidates:

- features: the device's own feature row, each peer's predicted log latency of the row's config — at the
  row's frequency mapped to the same fraction of the peer's top trained clock (`peer_frequency_khz`),
  on the row's unit and precision where the peer knows them, else the peer's defaults — and each peer's log
  latency less the device's own prior;
- base margin: one ridge-linear map of the device's own physics prior (out of fold) and the peers' log
  latencies (`fit_margin`; predictors trained before it keep the choice they made between the two): the
  peers carry the shape of the cost surface, the device's few measurements its scale;
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

from service.predictors.inference import MARGIN_STACKED, LatencyModel, PeerModel

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
    """Intercept and weights of log latency ≈ a + Σ b_p · column_p on the fitted rows (ridge): the columns are
    the peers' log latencies, and for the stacked margin the own prior's before them."""
    a = peer_logs[fit]
    mean_a, mean_y = a.mean(axis=0), float(y[fit].mean())
    centred = a - mean_a
    gram = centred.T @ centred + PEER_RIDGE * len(a) * np.eye(a.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (y[fit] - mean_y))
    return [float(mean_y - mean_a @ weights), *map(float, weights)]


def fit_margin(
    y: np.ndarray, own_margin: np.ndarray, peer_logs: np.ndarray, fit: np.ndarray
) -> dict[str, Any]:
    """The transfer model's margin entry: log latency ≈ a + w · own prior + Σ b_p · peer_p, one ridge fit on
    the `fit` rows (`MARGIN_STACKED`). Training passes the prior's out-of-fold log ms as `own_margin`
    (`prior.out_of_fold_log_ms`): in-sample, a prior fitted on 10 configs looks nearly exact and the map
    would trust it far beyond what it predicts for a new config.

    Why one map of both, not a choice between them: a choice made on the few validation rows of a small
    training flips from seed to seed (the own prior on one, the peers' map on the next, each losing a few
    points where the other was right), while the map weighs the two on every fitted row.
    """
    coefficients = fit_peer_map(y, np.column_stack([own_margin, peer_logs]), fit)
    return {"margin": MARGIN_STACKED, "stacked_coefficients": coefficients}


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
