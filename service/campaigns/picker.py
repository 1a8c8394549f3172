"""Which configs a campaign measures next: spread over the space, preferring where peers disagree.

Pure numpy, no database. Each candidate is a point: its featuriser row (config fields, MACs, bytes,
layers, kernel shapes…) compressed with a signed log (costs span orders of magnitude, and what matters is
the ratio between configs) and standardised per column, plus — when peers exist — each peer's predicted
log latency, centred per peer (a peer twice as fast everywhere tells nothing new). The pick is a greedy
farthest-point walk: each next config is the candidate farthest from everything measured or picked so
far, its distance scaled up by `1 + disagreement_weight · d` where `d ∈ [0, 1]` is how much the peers
disagree about it, relative to the most disputed candidate. Farthest-point rather than k-means because
it accounts for what is measured already (a later round fills the gaps instead of re-covering the
clusters) and is deterministic without a seed.
"""

from __future__ import annotations

import numpy as np


def log_scaled(rows: np.ndarray) -> np.ndarray:
    """`sign(x)·log1p(|x|)` column by column: costs and sizes spanning decades become comparable."""
    x = np.asarray(rows, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def disagreement(peer_log_ms: np.ndarray) -> np.ndarray:
    """Per candidate, how much the peers disagree on its *relative* cost: the spread across peers of
    their log predictions, each peer's centred on its own mean (a constant speed factor cancels).
    Zero for every candidate when fewer than two peers predict."""
    logs = np.asarray(peer_log_ms, dtype=np.float64)
    if logs.ndim != 2 or logs.shape[1] < 2:
        return np.zeros(logs.shape[0] if logs.ndim else 0)
    centred = logs - logs.mean(axis=0, keepdims=True)
    spread: np.ndarray = centred.std(axis=1)
    return spread


def embed(config_rows: np.ndarray, peer_log_ms: np.ndarray | None = None) -> np.ndarray:
    """The points the picker measures distances between (rows: candidates, then any measured configs
    stacked by the caller before calling, so both share one scaling)."""
    x = log_scaled(config_rows)
    if peer_log_ms is not None and peer_log_ms.size:
        logs = np.asarray(peer_log_ms, dtype=np.float64)
        x = np.hstack([x, logs - logs.mean(axis=0, keepdims=True)])
    std = x.std(axis=0)
    keep = std > 1e-12  # a column equal everywhere separates nothing
    points: np.ndarray = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
    return points


def pick_spread(
    candidates: np.ndarray,
    measured: np.ndarray,
    n: int,
    *,
    disputed: np.ndarray | None = None,
    disagreement_weight: float = 1.0,
) -> list[int]:
    """Indices of `n` candidates (rows of `candidates`) chosen by weighted farthest-point sampling away
    from `measured` (rows in the same embedding; may be empty) and from each other."""
    points = np.asarray(candidates, dtype=np.float64)
    count = points.shape[0]
    n = max(0, min(n, count))
    if n == 0:
        return []
    weight = np.ones(count)
    if disputed is not None and count:
        top = float(np.max(disputed))
        if top > 0:
            weight = 1.0 + disagreement_weight * np.asarray(disputed, dtype=np.float64) / top
    done = np.asarray(measured, dtype=np.float64).reshape(-1, points.shape[1])
    if done.shape[0]:
        nearest = np.min(np.linalg.norm(points[:, None, :] - done[None, :, :], axis=2), axis=1)
    else:
        # Nothing measured yet: start from the edge of the space (farthest from its centre).
        nearest = np.linalg.norm(points - points.mean(axis=0), axis=1)
    chosen: list[int] = []
    available = np.ones(count, dtype=bool)
    for _ in range(n):
        score = np.where(available, nearest * weight, -np.inf)
        best = int(np.argmax(score))  # ties: the lowest index, so a seeded draw picks reproducibly
        chosen.append(best)
        available[best] = False
        nearest = np.minimum(nearest, np.linalg.norm(points - points[best], axis=1))
    return chosen
