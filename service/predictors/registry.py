"""The in-memory cache of loaded predictors, one per app (`PredictorRegistry`).

Loading a predictor (three boosters from UBJSON) takes milliseconds; a `/v1/predict` must not pay that.
The registry keeps each loaded `LatencyModel` by predictor id (a predictor's models never change once it is
ready) and remembers which id is active for each (device, family). That second fact can change in another
process (another API replica, a CLI, the retraining policy), so the registry re-reads it with one indexed
query when its copy is older than `refresh_ms` (0: on every request). An activation in this process
invalidates the copy at once.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.predictors.inference import LatencyModel
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.transfer import unpack_peers


class NoActivePredictorError(LookupError):
    """No predictor is active for a (device, family)."""

    def __init__(self, device_id: int, family: str) -> None:
        super().__init__(f"no active {family} predictor for device {device_id}")
        self.device_id = device_id
        self.family = family


def active_predictor_id(session: Session, device_id: int, family: str) -> int | None:
    """The id of the active predictor of (device, family), if any (one indexed lookup)."""
    return session.scalar(
        select(Predictor.id).where(
            Predictor.device_id == device_id, Predictor.family == family, Predictor.active.is_(True)
        )
    )


def load_latency_model(session: Session, predictor_id: int) -> LatencyModel:
    """Build the in-memory model of a ready predictor from its stored bytes and schema."""
    predictor = session.get(Predictor, predictor_id)
    if predictor is None:
        raise LookupError(f"predictor {predictor_id} does not exist")
    if predictor.status is not PredictorStatus.ready or not (
        predictor.model and predictor.model_p10 and predictor.model_p90
    ):
        raise LookupError(f"predictor {predictor_id} is {predictor.status.value}, not ready")
    peers = unpack_peers(predictor.peer_models) if predictor.peer_models else []
    return LatencyModel(
        predictor.feature_schema, predictor.model, predictor.model_p10, predictor.model_p90, peers
    )


class PredictorRegistry:
    """Loaded models by predictor id and the active id per (device, family), refreshed every `refresh_ms`."""

    def __init__(self, refresh_ms: float = 500.0) -> None:
        self.refresh_s = refresh_ms / 1000.0
        self._models: dict[int, LatencyModel] = {}
        self._active: dict[tuple[int, str], tuple[int | None, float]] = {}
        self._lock = threading.Lock()

    def active(self, session: Session, device_id: int, family: str) -> tuple[int, LatencyModel]:
        """The active predictor's id and loaded model; raises NoActivePredictorError when there is none."""
        key = (device_id, family)
        now = time.monotonic()
        entry = self._active.get(key)
        if entry is None or now - entry[1] >= self.refresh_s:
            predictor_id = active_predictor_id(session, device_id, family)
            previous = entry[0] if entry else None
            self._active[key] = (predictor_id, now)
            if previous is not None and previous != predictor_id:
                self._forget_unless_active(previous)
        else:
            predictor_id = entry[0]
        if predictor_id is None:
            raise NoActivePredictorError(device_id, family)
        model = self._models.get(predictor_id)
        if model is None:
            with self._lock:
                model = self._models.get(predictor_id)
                if model is None:
                    model = load_latency_model(session, predictor_id)
                    self._models[predictor_id] = model
        return predictor_id, model

    def invalidate(self, device_id: int | None, family: str) -> None:
        """Forget the active id of (device, family) so the next request re-reads it."""
        if device_id is not None:
            self._active.pop((device_id, family), None)

    def _forget_unless_active(self, predictor_id: int) -> None:
        with self._lock:
            if all(pid != predictor_id for pid, _ in self._active.values()):
                self._models.pop(predictor_id, None)
