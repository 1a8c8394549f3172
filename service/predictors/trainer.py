"""Training as durable work: a `Trainer` claims queued predictors under a lease and trains them.

A training request records a predictor in `training` state (`service.create_predictor`); that row is the
queued work. A `Trainer` thread — one in the API process (`Settings.train_in_api`, the default, so an API
without any worker still trains) and one in each `latfarm worker` — claims it (`queue.claim_training`),
renews the lease while XGBoost fits (`LeaseHeartbeat`), and stores the result, or the failure and its
reason, only while it still holds the lease. A process killed mid-training stops renewing: the lease
lapses, another trainer (or the same service, restarted) claims the predictor and trains it again, and
after `training_max_attempts` lapsed claims it is `failed` with the reason. No predictor stays
`training` while a trainer runs anywhere. A graceful stop gives the lease back without costing an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from service.db import utcnow, write_scope
from service.jobs import queue
from service.jobs.heartbeat import LeaseHeartbeat
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.schemas import TrainFilters
from service.predictors.service import load_peers, load_training_rows
from service.predictors.training import TrainingError, TrainingResult, fit_predictor
from service.predictors.transfer import pack_peers
from service.settings import Settings

_log = logging.getLogger("latfarm.predictors")


def trainer_name(role: str = "trainer") -> str:
    """A lease owner name unique across hosts and restarts."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def train_predictor(
    session_factory: sessionmaker[Session], predictor_id: int, settings: Settings, owner: str | None = None
) -> bool:
    """Train a `training` predictor under its lease; store the result, or the failure with its reason.

    `owner` is the lease holder (a trainer that claimed it); None claims this predictor first (a CLI or a
    test training synchronously). Returns False when the lease was not or no longer held: someone else
    trains it, and nothing was stored.
    """
    if owner is None:
        owner = trainer_name("sync")
        claimed = queue.claim_training(
            session_factory,
            owner,
            settings.training_lease_seconds,
            settings.training_max_attempts,
            predictor_id,
        )
        if claimed is None:
            return False
    seconds = settings.training_lease_seconds
    with LeaseHeartbeat(
        lambda: queue.extend_training_lease(session_factory, predictor_id, owner, seconds),
        seconds,
        name=f"training-lease-{predictor_id}",
    ):
        outcome = _fit(session_factory, predictor_id, settings)
    try:
        if isinstance(outcome, TrainingResult):
            return _store_trained(session_factory, predictor_id, owner, outcome)
        return _finish_failed(session_factory, predictor_id, owner, outcome)
    except Exception as exc:  # e.g. the database went away: say so on the predictor rather than hang
        _log.exception("storing trained predictor %s failed", predictor_id)
        return _finish_failed(
            session_factory, predictor_id, owner, f"storing the trained model failed: {exc}"
        )


def _fit(
    session_factory: sessionmaker[Session], predictor_id: int, settings: Settings
) -> TrainingResult | str:
    """The trained models, or the reason training failed (a message that says what to do)."""
    with session_factory() as session:
        predictor = session.get(Predictor, predictor_id)
        if predictor is None:
            return f"predictor {predictor_id} does not exist"
        family, device_id = predictor.family, predictor.device_id
        params, filters = dict(predictor.params), TrainFilters.model_validate(predictor.filters)
        transfer = predictor.transfer
    try:
        if device_id is None:
            raise TrainingError("fleet predictors (no device) are trained per device in this version")
        with session_factory() as session:
            rows = load_training_rows(session, family, device_id, filters)
            peers = load_peers(session, transfer)
        if filters.frequencies_khz and len(filters.frequencies_khz) > 1:
            seen = sorted(set(rows.frequencies_khz))
            if len(seen) < 2:
                raise TrainingError(
                    f"{len(filters.frequencies_khz)} frequencies were asked for but the measurements "
                    f"hold only {seen or 'none'}; measure the others first"
                )
        return fit_predictor(rows, params, min_rows=settings.min_training_rows, peers=peers)
    except TrainingError as exc:
        return str(exc)
    except Exception as exc:  # the predictor must never stay `training` forever
        _log.exception("training predictor %s crashed", predictor_id)
        return f"training crashed: {type(exc).__name__}: {exc}"


def _store_trained(
    session_factory: sessionmaker[Session], predictor_id: int, owner: str, result: TrainingResult
) -> bool:
    with write_scope(session_factory) as session:
        predictor = queue.lock_claimed_predictor(session, predictor_id, owner)
        if predictor is None:
            _log.warning("predictor %s: training lease lost; the result is dropped", predictor_id)
            return False
        predictor.model = result.model
        predictor.model_p10 = result.model_p10
        predictor.model_p90 = result.model_p90
        predictor.peer_models = pack_peers(result.peers) if result.peers else None
        predictor.feature_schema = result.feature_schema
        predictor.metrics = result.metrics
        predictor.holdout = result.holdout
        predictor.training_data_hash = result.training_data_hash
        predictor.row_count = result.row_count
        predictor.library_versions = result.library_versions
        predictor.params = result.params
        predictor.status = PredictorStatus.ready
        predictor.finished_at = utcnow()
        return True


def _finish_failed(session_factory: sessionmaker[Session], predictor_id: int, owner: str, error: str) -> bool:
    with write_scope(session_factory) as session:
        predictor = queue.lock_claimed_predictor(session, predictor_id, owner)
        if predictor is None:
            return False
        predictor.status = PredictorStatus.failed
        predictor.error = error
        predictor.finished_at = utcnow()
        return True


class Trainer:
    """A thread that claims and trains queued predictors until stopped; `wake()` after queuing one."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, name: str | None = None) -> None:
        self.factory = factory
        self.settings = settings
        self.name = name or trainer_name()
        self.trained = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: int | None = None
        #: Held from a claim's commit until `_current` names it, so `stop()` never reads the gap between.
        self._claiming = threading.Lock()

    def start(self) -> Trainer:
        """Start the thread unless it runs (again after `stop()`, as an app restarted in one process is):
        it claims whatever is queued, including work a dead process left."""
        with self._lock:
            if self._thread is not None and not self._stop.is_set():
                return self
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="latfarm-trainer", daemon=True
            )
            self._thread.start()
        return self

    def wake(self) -> None:
        """A predictor was queued: look now rather than at the next poll (starts the thread if needed)."""
        self.start()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; a training in progress gives its lease back (the next trainer claims it at once,
        without an attempt counted) — its fit is abandoned, not awaited beyond `timeout`."""
        with self._lock:
            self._stop.set()
        self._wake.set()
        with self._claiming:
            current = self._current
        if current is not None:
            try:
                queue.release_training(self.factory, current, self.name)
            except DBAPIError:
                _log.warning("could not give back the lease of predictor %s; it lapses instead", current)
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> bool:
        """Claim and train one queued predictor; False when there was none."""
        with self._claiming:
            claimed = queue.claim_training(
                self.factory,
                self.name,
                self.settings.training_lease_seconds,
                self.settings.training_max_attempts,
            )
            if claimed is None:
                return False
            self._current = claimed
        if self._stop.is_set():  # stopped while claiming: `stop()` may have missed it, give it back here
            queue.release_training(self.factory, claimed, self.name)
            self._current = None
            return True
        try:
            _log.info("trainer %s: training predictor %s", self.name, claimed)
            if train_predictor(self.factory, claimed, self.settings, owner=self.name):
                self.trained += 1
        finally:
            self._current = None
        return True

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                worked = self.run_once()
            except DBAPIError:
                _log.warning("trainer could not reach the database; retrying after a poll", exc_info=True)
                worked = False
            except Exception:  # the thread must outlive any one training: its lease lapses, it is retried
                _log.exception("trainer %s: a training failed unexpectedly", self.name)
                worked = False
            if not worked:
                self._wake.wait(self.settings.worker_poll_seconds)
                self._wake.clear()
