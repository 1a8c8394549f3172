"""The worker loop: lease a phone, claim a batch (one pin), measure, store each result, give the phone back.

Each step: return expired leases to the queue and close finished jobs; lease a device that has ready
tasks (or is offline and due for a re-probe); claim a batch; run it while a heartbeat thread keeps the
device and task leases alive; store each measurement as it arrives (discarded if the lease moved on).
On a device error the failing task is retried later (backoff) and the rest of the batch goes back to
the queue; repeated errors mark the phone offline. `stop()` (SIGTERM in `latfarm worker`) lets the
running benchmark finish, closes the profiler (its pin context restores the governor) and releases the
tasks that did not run, so nothing waits for a lease to expire. When idle, a worker also runs the opt-in
retraining policies (`service.predictors.policy`), at most every `retrain_check_seconds`. Its housekeeping
also steps the running bootstrap campaigns (`service.campaigns.runner`). With `train`
(as `latfarm worker` runs), a `Trainer` thread beside the loop claims queued predictor trainings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from service.campaigns.runner import run_campaigns
from service.db import write_session
from service.devices.models import Device, DeviceStatus
from service.devices.probing import apply_facts
from service.devices.runner import DeviceRunner, DeviceTarget, RunnerError, default_runner
from service.jobs import queue
from service.jobs.heartbeat import LeaseHeartbeat
from service.jobs.service import settle_jobs
from service.predictors.policy import run_retrain_policies
from service.predictors.trainer import Trainer
from service.problems import LatfarmError
from service.settings import Settings

_log = logging.getLogger("latfarm.worker")

#: Expired-lease sweeps and job settling run at most this often per worker (they scan; claims don't).
HOUSEKEEPING_INTERVAL_S = 1.0


def worker_name() -> str:
    """A lease owner name unique across hosts and restarts: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker: claims tasks of the phones it may use and drives them through a `DeviceRunner`."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        runner: DeviceRunner | None = None,
        *,
        device_tags: list[str] | None = None,
        name: str | None = None,
        train: bool = False,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.runner = runner or default_runner(settings)
        self.device_tags = set(device_tags or [])
        self.name = name or worker_name()
        self.completed = 0
        self.discarded = 0
        self.trainer = Trainer(factory, settings, name=f"{self.name}/trainer") if train else None
        self._stop = threading.Event()
        self._last_housekeeping = float("-inf")
        self._last_retrain_check = float("-inf")

    # -- control -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end after the running benchmark (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stop.is_set()

    def run(self, *, once: bool = False, max_idle_seconds: float | None = None) -> None:
        """Work until stopped; `once`: until nothing is left; `max_idle_seconds`: until idle that long."""
        _log.info("worker %s started (tags: %s)", self.name, sorted(self.device_tags) or "any")
        idle_since = time.monotonic()
        if self.trainer is not None:
            self.trainer.start()
        try:
            while not self._stop.is_set():
                try:
                    worked = self.step()
                except DBAPIError:
                    # The database was briefly unavailable or busy; the queue's state is safe, so keep going.
                    _log.warning("worker step failed on the database; retrying after a poll", exc_info=True)
                    worked = False
                if worked:
                    idle_since = time.monotonic()
                    continue
                # Idle: the phones have nothing for us, so a retraining (synchronous) delays no benchmark.
                self.check_retrain_policies()
                if once:
                    break
                if max_idle_seconds is not None and time.monotonic() - idle_since >= max_idle_seconds:
                    break
                self._stop.wait(self.settings.worker_poll_seconds)
            # Leave nothing unsettled behind (a job whose last task we just finished).
            self._housekeeping(force=True)
        finally:
            if self.trainer is not None:
                self.trainer.stop()
            self.runner.close()
            _log.info("worker %s stopped: %d results stored", self.name, self.completed)

    # -- one step ------------------------------------------------------------------------------------
    def step(self) -> bool:
        """Do one unit of work (a batch or a re-probe); False when there was nothing to do."""
        self._housekeeping()
        leased = queue.acquire_device(
            self.factory, self.name, self.settings.lease_seconds, self._eligible_devices()
        )
        if leased is None:
            return False
        target = DeviceTarget(leased.id, leased.serial, leased.transport, leased.address)
        if leased.offline:
            self._reprobe(target)
            return True
        batch = queue.claim_batch(
            self.factory, leased.id, self.name, self.settings.worker_batch_size, self.settings.lease_seconds
        )
        if batch is None:
            queue.release_device(self.factory, leased.id, self.name)
            return False
        went_offline = self._run_batch(target, batch)
        if went_offline:
            queue.release_device(
                self.factory,
                leased.id,
                self.name,
                DeviceStatus.offline,
                hold_seconds=self.settings.reprobe_seconds,
            )
        else:
            queue.release_device(self.factory, leased.id, self.name)
        self._housekeeping()
        return True

    def check_retrain_policies(self, *, force: bool = False) -> list[int]:
        """Train (and maybe activate) where a retraining policy is due; at most every
        `retrain_check_seconds` unless `force`. Returns the new predictors' ids."""
        now = time.monotonic()
        if not force and now - self._last_retrain_check < self.settings.retrain_check_seconds:
            return []
        self._last_retrain_check = now
        try:
            trained = run_retrain_policies(self.factory, self.settings)
        except (DBAPIError, LatfarmError):
            # A policy whose data vanished or a database hiccup: log it, the next check retries.
            _log.warning("retraining policy check failed; will retry", exc_info=True)
            return []
        if trained:
            _log.info("retraining policies trained predictor(s) %s", trained)
        return trained

    def _housekeeping(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_housekeeping < HOUSEKEEPING_INTERVAL_S:
            return
        self._last_housekeeping = time.monotonic()
        try:
            queue.requeue_expired(self.factory, self.settings.task_max_attempts)
            with self.factory() as session:
                settle_jobs(session)
            # Bootstrap campaigns advance here: each step is short (read a job, queue or score a training).
            run_campaigns(self.factory, self.settings, self.name)
        except DBAPIError:
            # Two workers sweeping the same rows may collide (deadlock/serialisation); the next sweep retries.
            _log.warning("queue housekeeping failed; will retry", exc_info=True)

    def _eligible_devices(self) -> list[int] | None:
        if not self.device_tags:
            return None
        with self.factory() as session:
            rows = session.execute(select(Device.id, Device.tags).where(Device.enabled.is_(True)))
            return [device_id for device_id, tags in rows if self.device_tags <= set(tags or [])]

    def _reprobe(self, target: DeviceTarget) -> None:
        """An offline phone's re-probe: back online when it answers, else charge its tasks and wait."""
        try:
            facts = self.runner.probe(target)
        except RunnerError as exc:
            failed = queue.charge_offline_device(
                self.factory, target.device_id, str(exc), self.settings.task_max_attempts
            )
            with write_session(self.factory) as session:
                device = session.get(Device, target.device_id)
                if device is not None:
                    device.last_error = f"re-probe failed: {exc}"
                    session.commit()
            _log.info("device %s still offline (%s); %d task(s) failed", target.serial, exc, failed)
            queue.release_device(
                self.factory,
                target.device_id,
                self.name,
                DeviceStatus.offline,
                hold_seconds=self.settings.reprobe_seconds,
            )
            return
        finally:
            self.runner.forget(target)
        # Read-then-write: on SQLite take the write lock first (a stale read snapshot cannot be upgraded).
        with write_session(self.factory) as session:
            device = session.get(Device, target.device_id)
            if device is not None:
                apply_facts(device, facts)
                session.commit()
        _log.info("device %s answers again: online", target.serial)
        queue.release_device(self.factory, target.device_id, self.name, DeviceStatus.online)

    def _run_batch(self, target: DeviceTarget, batch: queue.ClaimedBatch) -> bool:
        """Measure a claimed batch; returns True when a device error took the phone offline."""
        pending = {t.id for t in batch.tasks}
        went_offline = False
        records = self.runner.measure(target, batch.runtime, batch.requests())
        lease = (self.factory, batch.device_id, self.name, batch.token, self.settings.lease_seconds)
        with LeaseHeartbeat(lambda: queue.extend_leases(*lease), self.settings.lease_seconds) as beat:
            try:
                for task in batch.tasks:
                    if self._stop.is_set() or beat.lost:
                        break
                    started = time.monotonic()
                    try:
                        record = next(records)
                    except StopIteration:
                        break
                    except Exception as exc:  # a device error, or a bug in a block: the task fails, not us
                        reason = str(exc) if isinstance(exc, RunnerError) else f"{type(exc).__name__}: {exc}"
                        pending.discard(task.id)
                        went_offline = self._task_failed(target, batch, task.id, reason)
                        break
                    pending.discard(task.id)
                    if queue.complete_task(
                        self.factory, task.id, batch.token, record, time.monotonic() - started
                    ):
                        self.completed += 1
                    else:
                        self.discarded += 1
                        _log.warning("result of task %d discarded: its lease had moved on", task.id)
            finally:
                records.close()  # the profiler's pin context exits: the phone's governor is restored
                queue.release_tasks(self.factory, sorted(pending), batch.token)
        return went_offline

    def _task_failed(
        self, target: DeviceTarget, batch: queue.ClaimedBatch, task_id: int, reason: str
    ) -> bool:
        status = queue.fail_task(self.factory, task_id, batch.token, reason, self.settings.task_max_attempts)
        self.runner.forget(target)
        offline = queue.record_device_failure(
            self.factory, target.device_id, reason, self.settings.device_failures_offline
        )
        _log.warning(
            "task %d on %s: %s (%s)%s",
            task_id,
            target.serial,
            reason,
            status.value if status else "lease lost",
            "; device marked offline" if offline else "",
        )
        return offline


def attach_background_worker(app: FastAPI, settings: Settings, runner: DeviceRunner | None = None) -> Worker:
    """Run a worker thread alongside the API (`latfarm serve --with-worker`): started with the app, stopped
    gracefully (running benchmark finished, unstarted tasks released) when it shuts down."""
    # The app's own trainer, when it has one, trains queued predictors; else this worker does.
    worker = Worker(app.state.sessionmaker, settings, runner, train=app.state.trainer is None)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        thread = threading.Thread(target=worker.run, name="latfarm-worker", daemon=True)
        thread.start()
        try:
            async with inner(application) as state:
                yield state
        finally:
            worker.stop()
            thread.join(timeout=settings.adb_command_timeout_s)

    app.router.lifespan_context = lifespan
    app.state.worker = worker
    return worker
