"""Training as durable work (issue 15, finding 3): a predictor is never `training` for ever.

The lease rules are checked in process on both engines; then real processes — `latfarm serve` and
`latfarm worker` — are killed with SIGKILL mid-training and restarted, and the predictor must end `ready`
(re-claimed once the lease lapsed, trained again) or `failed` with the reason (attempts used up).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from service.jobs import queue
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.schemas import PredictorCreate, TrainParams
from service.predictors.service import create_predictor
from service.predictors.trainer import Trainer
from service.settings import Settings
from tests.service.predictors.synthetic import FAST_PARAMS, insert_rows, synthetic_rows
from tests.service.processes import free_port, wait_for, wait_until_serving

LATFARM = Path(sys.executable).with_name("latfarm")
WAIT_S = 120.0
#: Slow enough (a few seconds here) that a kill lands mid-fit; fast enough to train again after it.
SLOW_PARAMS = {"n_estimators": 100, "learning_rate": 0.01, "early_stopping_rounds": 100}
Headers = Callable[..., dict[str, str]]


def _wait(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    return wait_for(predicate, what, timeout, interval=0.05)


def _row(factory: sessionmaker[Session], predictor_id: int) -> Predictor:
    with factory() as session:
        predictor = session.get(Predictor, predictor_id)
        assert predictor is not None
        return predictor


def _lapse(factory: sessionmaker[Session], predictor_id: int) -> None:
    """What time does to the lease of a trainer that died: it is in the past."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with factory() as session:
        session.execute(update(Predictor).where(Predictor.id == predictor_id).values(lease_expires_at=past))
        session.commit()


def _queued(
    session: Session, settings: Settings, device_id: int, params: dict[str, Any] = FAST_PARAMS
) -> int:
    data = PredictorCreate(family="sr_block", device=device_id, params=TrainParams(**params))
    return create_predictor(session, data, settings).id


def test_a_training_lease_is_exclusive_lapses_to_a_new_claim_then_fails_with_the_reason(
    session_factory: sessionmaker[Session], settings: Settings, db_session: Session, device_id: int
) -> None:
    insert_rows(db_session, device_id, synthetic_rows(20))
    predictor_id = _queued(db_session, settings, device_id)
    assert queue.claim_training(session_factory, "a", 60, 2) == predictor_id
    assert queue.claim_training(session_factory, "b", 60, 2) is None  # held: nobody else gets it
    assert queue.extend_training_lease(session_factory, predictor_id, "a", 60)
    _lapse(session_factory, predictor_id)  # "a" died
    assert queue.claim_training(session_factory, "b", 60, 2) == predictor_id
    assert not queue.extend_training_lease(session_factory, predictor_id, "a", 60)  # "a" lost it
    assert _row(session_factory, predictor_id).attempts == 2
    # A graceful stop gives it back without an attempt counted.
    assert queue.release_training(session_factory, predictor_id, "b")
    assert queue.claim_training(session_factory, "c", 60, 2) == predictor_id
    assert _row(session_factory, predictor_id).attempts == 2
    _lapse(session_factory, predictor_id)  # "c" died too: two lapsed claims of two allowed
    assert queue.claim_training(session_factory, "d", 60, 2) is None
    failed = _row(session_factory, predictor_id)
    assert failed.status is PredictorStatus.failed and failed.lease_owner is None
    assert "interrupted 2 times" in (failed.error or "") and "POST /v1/predictors" in (failed.error or "")


def test_two_trainers_train_a_queued_predictor_once(
    session_factory: sessionmaker[Session], settings: Settings, db_session: Session, device_id: int
) -> None:
    settings.worker_poll_seconds = 0.05
    insert_rows(db_session, device_id, synthetic_rows(60))
    predictor_id = _queued(db_session, settings, device_id)
    trainers = [Trainer(session_factory, settings).start() for _ in range(2)]
    try:
        for trainer in trainers:
            trainer.wake()
        done = _wait(
            lambda: _row(session_factory, predictor_id).status is not PredictorStatus.training, "training"
        )
        assert done
    finally:
        for trainer in trainers:
            trainer.stop()
    predictor = _row(session_factory, predictor_id)
    assert predictor.status is PredictorStatus.ready, predictor.error
    assert predictor.attempts == 1 and predictor.lease_owner is None
    assert sum(t.trained for t in trainers) == 1


def test_a_stopped_trainer_gives_its_training_back_without_an_attempt(
    session_factory: sessionmaker[Session], settings: Settings, db_session: Session, device_id: int
) -> None:
    """A graceful stop (app shutdown, SIGTERM to a worker) mid-fit hands the lease back at once; the next
    trainer trains the predictor, and the abandoned fit stores nothing when it ends."""
    settings.worker_poll_seconds = 0.05
    insert_rows(db_session, device_id, synthetic_rows(60))
    predictor_id = _queued(db_session, settings, device_id, SLOW_PARAMS)
    first = Trainer(session_factory, settings).start()
    _wait(lambda: _claimed(session_factory, predictor_id), "the first trainer to claim it")
    first.stop(timeout=0)
    given_back = _row(session_factory, predictor_id)
    assert given_back.status is PredictorStatus.training
    assert given_back.lease_owner is None and given_back.attempts == 0
    second = Trainer(session_factory, settings).start()
    try:
        _wait(lambda: _row(session_factory, predictor_id).status is not PredictorStatus.training, "training")
    finally:
        second.stop()
        first.stop()
    predictor = _row(session_factory, predictor_id)
    assert predictor.status is PredictorStatus.ready and predictor.attempts == 1, predictor.error
    assert second.trained == 1 and first.trained == 0


# -- real processes, killed ---------------------------------------------------------------------------------
class Processes:
    """`latfarm` processes of one test on its database; every one is killed at teardown."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings, self.tmp = settings, tmp
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str, **env: Any) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "LATFARM_DATABASE_URL": self.settings.database_url,
            "LATFARM_STATE_DIR": str(self.settings.state_dir),
            "LATFARM_TRAINING_LEASE_SECONDS": "1.5",
            "LATFARM_WORKER_POLL_SECONDS": "0.1",
            **{f"LATFARM_{k.upper()}": str(v) for k, v in env.items()},
        }
        log = open(self.tmp / f"process{len(self.started)}.log", "wb")  # noqa: SIM115 - kept for the process
        process = subprocess.Popen([str(LATFARM), *command], env=environment, stdout=log, stderr=log)
        self.started.append(process)
        return process

    def serve(self, port: int, **env: Any) -> subprocess.Popen[bytes]:
        process = self.start("serve", "--port", str(port), **env)
        wait_until_serving(process, f"http://127.0.0.1:{port}", lambda: self.log(process), WAIT_S)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"process{self.started.index(process)}.log").read_text()[-3000:]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    running = Processes(settings, tmp_path)
    try:
        yield running
    finally:
        running.close()


def _claimed(factory: sessionmaker[Session], predictor_id: int) -> bool:
    row = _row(factory, predictor_id)
    return row.lease_owner is not None and row.status is PredictorStatus.training


# SQLite: the lone API without any worker is its deployment; PostgreSQL's lease path runs in real processes
# in the worker test below, and in process on both engines above.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_api_killed_mid_training_then_restarted_ends_ready(
    processes: Processes,
    session_factory: sessionmaker[Session],
    db_session: Session,
    device_id: int,
    make_headers: Headers,
) -> None:
    """`latfarm serve` (no worker anywhere) trains in its own process; SIGKILL it mid-fit and start it
    again: the lapsed lease is claimed again and the predictor ends `ready`, trained on its second try."""
    insert_rows(db_session, device_id, synthetic_rows(60))
    headers = make_headers("profile", "read")
    port = free_port()
    api = processes.serve(port)
    created = httpx.post(
        f"http://127.0.0.1:{port}/v1/predictors",
        json={"family": "sr_block", "device": device_id, "params": SLOW_PARAMS},
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    predictor_id = created.json()["id"]
    _wait(lambda: _claimed(session_factory, predictor_id), "the API's trainer to claim the training")
    processes.kill(api)
    interrupted = _row(session_factory, predictor_id)
    assert interrupted.status is PredictorStatus.training and interrupted.attempts == 1

    processes.serve(port)

    def finished() -> dict[str, Any] | None:
        body = httpx.get(f"http://127.0.0.1:{port}/v1/predictors/{predictor_id}", headers=headers).json()
        return body if body["status"] != "training" else None

    body = _wait(finished, "the restarted API to train the predictor again")
    assert body["status"] == "ready", body["error"]
    assert body["row_count"] == 180 and body["metrics"]["rows"] > 0
    final = _row(session_factory, predictor_id)
    assert final.attempts == 2 and final.lease_owner is None and final.model


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_worker_killed_mid_training_with_no_attempt_left_ends_failed_with_the_reason(
    processes: Processes,
    session_factory: sessionmaker[Session],
    settings: Settings,
    db_session: Session,
    device_id: int,
) -> None:
    """A training queued with no API trainer is claimed by `latfarm worker`; SIGKILL that worker mid-fit.
    With one attempt allowed, the next worker fails the predictor with the reason rather than retry."""
    insert_rows(db_session, device_id, synthetic_rows(60))
    predictor_id = _queued(db_session, settings, device_id, SLOW_PARAMS)
    victim = processes.start("worker", training_max_attempts=1)
    _wait(lambda: _claimed(session_factory, predictor_id), "the worker's trainer to claim the training")
    processes.kill(victim)
    assert _row(session_factory, predictor_id).status is PredictorStatus.training
    processes.start("worker", training_max_attempts=1)
    failed = _wait(
        lambda: (row := _row(session_factory, predictor_id)).status is not PredictorStatus.training and row,
        "the next worker to give up on the training",
    )
    assert failed.status is PredictorStatus.failed, failed.error
    assert "interrupted 1 time" in (failed.error or "") and failed.lease_owner is None
    assert failed.model is None and failed.attempts == 1


def test_a_stop_between_a_claims_commit_and_its_bookkeeping_still_gives_the_training_back(
    session_factory: sessionmaker[Session],
    settings: Settings,
    db_session: Session,
    device_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim is committed (the row names the trainer) but the thread has not yet noted which predictor it
    holds: a `stop()` then must wait for that note and give the lease back, not return with it held."""
    settings.worker_poll_seconds = 0.05
    insert_rows(db_session, device_id, synthetic_rows(60))
    predictor_id = _queued(db_session, settings, device_id, SLOW_PARAMS)
    committed, stopping = threading.Event(), threading.Event()
    real_claim = queue.claim_training

    def claim_then_linger(*args: Any, **kwargs: Any) -> int | None:
        claimed = real_claim(*args, **kwargs)
        if claimed is not None:
            committed.set()
            stopping.wait(2.0)  # the gap the stop lands in; bounded, as the stop cannot end it itself
        return claimed

    monkeypatch.setattr(queue, "claim_training", claim_then_linger)
    trainer = Trainer(session_factory, settings).start()
    try:
        assert committed.wait(WAIT_S), "the trainer never claimed the predictor"
        assert _claimed(session_factory, predictor_id)
        stopper = threading.Thread(target=trainer.stop, kwargs={"timeout": 0})
        stopper.start()
        stopper.join(0.5)
        if not stopper.is_alive():  # a stop that returned must already have given the lease back
            assert _row(session_factory, predictor_id).lease_owner is None
        stopping.set()
        stopper.join(WAIT_S)
        given_back = _row(session_factory, predictor_id)
        assert given_back.lease_owner is None and given_back.attempts == 0
    finally:
        trainer.stop()
