"""The farm end to end: worker processes on PostgreSQL and an in-process worker, driving virtual phones.

Workers are real `latfarm worker` processes (started with `subprocess`, killed with SIGKILL or stopped with
SIGTERM); phones are virtual phones in this process, which log every benchmark run so overlaps on one
phone can be counted. Configs are tiny (16×16 input, widths ≤ 8, 3 runs) so a 60-task job takes seconds.

Fault injection (the end of this file): a phone process and an API process (`serve --with-worker`) killed
with SIGKILL mid-job, a phone whose benchmark hangs, a benchmark that prints garbage, and the PostgreSQL
backends of the service terminated (`pg_terminate_backend`) mid-transaction. Each must end with every
task measured exactly once, or failed with its reason.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from profilers.virtual_phone import VirtualPhone
from service.app import create_app
from service.devices.models import Device
from service.jobs.models import Job, Task, TaskStatus
from service.jobs.worker import attach_background_worker
from service.measurements.models import Measurement
from service.settings import Settings
from tests.service.processes import free_port, wait_for, wait_until_serving

LATFARM = Path(sys.executable).with_name("latfarm")
ONLY_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
WAIT_S = 60.0


def _configs(n: int) -> list[dict[str, Any]]:
    widths = [(a, b) for a in (2, 4, 6, 8) for b in (2, 4, 8)]
    return [{"scale": 2, "height": 16, "width": 16, "widths": list(w)} for w in widths[:n]]


def _wait(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll `predicate` until it returns something truthy (bounded: fails after `timeout` seconds)."""
    return wait_for(predicate, what, timeout)


class Farm:
    """Phones, worker processes and the API of one test; everything is stopped at teardown."""

    def __init__(self, client: TestClient, headers: dict[str, str], settings: Settings, tmp: Path) -> None:
        self.client, self.headers, self.settings, self.tmp = client, headers, settings, tmp
        self.phones: list[VirtualPhone] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def phone(self, profile: str = "virtual-midrange") -> tuple[VirtualPhone, int]:
        phone = VirtualPhone(profile=profile, state_dir=self.tmp / f"phone{len(self.phones)}").start()
        self.phones.append(phone)
        r = self.client.post(
            "/v1/devices", json={"serial": phone.serial, "transport": "tcp"}, headers=self.headers
        )
        assert r.status_code == 201 and r.json()["status"] == "online", r.text
        return phone, r.json()["id"]

    def environment(self, **env: Any) -> dict[str, str]:
        """The environment of a `latfarm` process of this farm: short leases and polls, `env` on top."""
        return {
            **os.environ,
            "LATFARM_DATABASE_URL": self.settings.database_url,
            "LATFARM_STATE_DIR": str(self.settings.state_dir),
            "LATFARM_LEASE_SECONDS": "3",
            "LATFARM_WORKER_POLL_SECONDS": "0.2",
            "LATFARM_WORKER_BATCH_SIZE": "6",
            "LATFARM_REPROBE_SECONDS": "0.5",
            "LATFARM_COOLDOWN_CELSIUS": "95",
            "LATFARM_ADB_CONNECT_TIMEOUT_S": "2",
            "LATFARM_ADB_COMMAND_TIMEOUT_S": "20",
            **{f"LATFARM_{k.upper()}": str(v) for k, v in env.items()},
        }

    def worker(self, *options: str, **env: Any) -> subprocess.Popen[bytes]:
        return self.process("worker", *options, **env)

    def process(
        self, *command: str, extra_env: dict[str, str] | None = None, **env: Any
    ) -> subprocess.Popen[bytes]:
        """Start `latfarm <command>` (its log: `worker<i>.log`); killed at teardown if still running."""
        log = open(self.tmp / f"worker{len(self.workers)}.log", "wb")  # noqa: SIM115 - kept for the process
        environment = {**self.environment(**env), **(extra_env or {})}
        process = subprocess.Popen([str(LATFARM), *command], env=environment, stdout=log, stderr=log)
        self.workers.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker{self.workers.index(process)}.log").read_text()[-3000:]

    def serve(
        self, port: int, extra_env: dict[str, str] | None = None, **env: Any
    ) -> subprocess.Popen[bytes]:
        """`latfarm serve --with-worker` on `port`, once it answers; `self.client` then talks to it."""
        process = self.process("serve", "--with-worker", "--port", str(port), extra_env=extra_env, **env)
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(process, base, lambda: self.log(process), WAIT_S)
        self.client = httpx.Client(base_url=base, timeout=30)  # type: ignore[assignment]
        return process

    def phone_process(self, port: int, state_dir: Path) -> subprocess.Popen[bytes]:
        """A virtual phone in its own `latfarm phone` process, once it listens."""
        process = self.process(
            "phone", "--port", str(port), "--state-dir", str(state_dir), "--profile", "virtual-midrange"
        )

        def listening() -> bool:
            assert process.poll() is None, self.log(process)
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        _wait(listening, "the phone process to listen")
        return process

    def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Wait until a worker logs that its loop started (its stop signals are handled from then on).

        A signal sent before a program's first line runs can only take its default action (death by
        SIGTERM); `latfarm worker` blocks the stop signals first thing, so from the "started" line on —
        and in fact a little earlier — SIGTERM is a graceful stop.
        """
        log = self.tmp / f"worker{self.workers.index(process)}.log"
        _wait(lambda: b" started (tags:" in log.read_bytes() or process.poll() is not None, "a worker start")
        assert process.poll() is None, log.read_text()[-3000:]

    def submit(self, device_ids: list[int], n_configs: int, **extra: Any) -> dict[str, Any]:
        body = {
            "family": "sr_block",
            "configs": _configs(n_configs),
            "devices": device_ids,
            "frequencies": "min-mid-max",
            "runtime": {"runs": 3, "warmup": 1},
            **extra,
        }
        r = self.client.post("/v1/jobs", json=body, headers=self.headers)
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: int) -> dict[str, Any]:
        return self.client.get(f"/v1/jobs/{job_id}", headers=self.headers).json()

    def wait_finished(self, job_id: int, timeout: float = WAIT_S) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in ("done", "failed", "cancelled") else None

        return _wait(finished, f"job {job_id} to finish", timeout)

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        for phone in self.phones:
            phone.stop()


@pytest.fixture
def farm(
    client: TestClient, make_headers: Callable[..., dict[str, str]], settings: Settings, tmp_path: Path
) -> Iterator[Farm]:
    farm = Farm(client, make_headers("admin"), settings, tmp_path)
    try:
        yield farm
    finally:
        farm.close()


def _assert_each_task_measured_once(session: Session, job_id: int) -> int:
    session.rollback()
    tasks = session.scalar(select(func.count()).where(Task.job_id == job_id)) or 0
    done = session.scalar(select(func.count()).where(Task.job_id == job_id, Task.status == TaskStatus.done))
    measured = session.scalar(select(func.count()).where(Measurement.job_id == job_id)) or 0
    distinct = session.scalar(
        select(func.count(func.distinct(Measurement.task_id))).where(Measurement.job_id == job_id)
    )
    assert done == tasks == measured == distinct, (tasks, done, measured, distinct)
    return tasks


@ONLY_POSTGRES
def test_three_workers_two_phones_every_task_once_no_overlap(farm: Farm, db_session: Session) -> None:
    (p1, d1), (p2, d2) = farm.phone("virtual-midrange"), farm.phone("virtual-flagship")
    job = farm.submit([d1, d2], 10)
    assert job["total_tasks"] == 60
    for _ in range(3):
        farm.worker()
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done", finished
    assert finished["counts"]["done"] == 60
    assert _assert_each_task_measured_once(db_session, job["id"]) == 60
    assert p1.count_overlapping_benchmarks() == 0 and p2.count_overlapping_benchmarks() == 0
    # Two phones, three workers: some worker had to wait its turn, yet both phones were used.
    assert len(p1.benchmark_runs()) >= 30 and len(p2.benchmark_runs()) >= 30


@ONLY_POSTGRES
def test_killed_worker_task_completes_elsewhere_without_duplicate(farm: Farm, db_session: Session) -> None:
    phone, device = farm.phone()
    job = farm.submit([device], 12)
    victim = farm.worker(worker_batch_size=36)
    _wait(lambda: farm.job(job["id"])["counts"]["done"] >= 3, "the first results")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    interrupted = farm.job(job["id"])["counts"]
    assert interrupted["running"] > 0  # the dead worker still holds leases
    farm.worker()
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done", finished
    _assert_each_task_measured_once(db_session, job["id"])
    retried = db_session.scalar(select(func.count()).where(Task.job_id == job["id"], Task.attempts >= 2))
    assert retried and retried > 0
    assert phone.count_overlapping_benchmarks() == 0


@ONLY_POSTGRES
def test_phone_that_drops_off_is_retried_and_finishes(farm: Farm, db_session: Session) -> None:
    phone, device = farm.phone()
    job = farm.submit([device], 10)
    farm.worker(task_max_attempts=10, worker_batch_size=4)
    _wait(lambda: farm.job(job["id"])["counts"]["done"] >= 4, "the first results")
    phone.set_fault(offline=True)
    _wait(
        lambda: farm.client.get(f"/v1/devices/{device}", headers=farm.headers).json()["status"] == "offline",
        "the phone to be marked offline",
    )
    phone.clear_faults()
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done", finished
    _assert_each_task_measured_once(db_session, job["id"])
    assert farm.client.get(f"/v1/devices/{device}", headers=farm.headers).json()["status"] == "online"
    retried = db_session.scalar(select(func.count()).where(Task.job_id == job["id"], Task.attempts >= 2))
    assert retried and retried > 0


@ONLY_POSTGRES
def test_phone_that_never_returns_fails_its_tasks_and_the_job_ends(farm: Farm, db_session: Session) -> None:
    phone, device = farm.phone()
    job = farm.submit([device], 10)
    farm.worker(task_max_attempts=3, worker_batch_size=4)
    _wait(lambda: farm.job(job["id"])["counts"]["done"] >= 2, "the first results")
    phone.set_fault(offline=True)
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "failed"
    counts = finished["counts"]
    assert counts["failed"] > 0 and counts["done"] + counts["failed"] == 30
    assert counts["queued"] == counts["running"] == 0
    assert "offline" in finished["error"] or "connect" in finished["error"]
    db_session.rollback()
    reasons = db_session.scalars(select(Task.last_error).where(Task.status == TaskStatus.failed)).all()
    assert all(reasons)
    measured = db_session.scalar(select(func.count()).where(Measurement.job_id == job["id"]))
    assert measured == counts["done"]


@ONLY_POSTGRES
def test_restart_mid_job_loses_nothing(farm: Farm, db_session: Session, settings: Settings) -> None:
    phone, device = farm.phone()
    job = farm.submit([device], 12)
    first = [farm.worker(worker_batch_size=4), farm.worker(worker_batch_size=4)]
    for process in first:
        farm.wait_ready(process)
    _wait(lambda: farm.job(job["id"])["counts"]["done"] >= 4, "the first results")
    for process in first:
        process.send_signal(signal.SIGTERM)
    for i, process in enumerate(first):
        code = process.wait(timeout=30)
        assert code == 0, (code, (farm.tmp / f"worker{i}.log").read_text()[-3000:])
    # Graceful stop: running benchmarks finished, unstarted tasks handed back at once (no lease to expire).
    assert farm.job(job["id"])["counts"]["running"] == 0
    # The service restarts too: a new app on the same database sees the same job.
    with TestClient(create_app(settings)) as restarted:
        before = restarted.get(f"/v1/jobs/{job['id']}", headers=farm.headers).json()
        assert before["counts"]["done"] >= 4 and before["status"] == "running"
        farm.worker()
        farm.client = restarted
        finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done"
    _assert_each_task_measured_once(db_session, job["id"])
    assert phone.count_overlapping_benchmarks() == 0


def test_in_process_worker_runs_a_job_and_cancel_stops_it(
    make_headers: Callable[..., dict[str, str]], settings: Settings, tmp_path: Path, db_session: Session
) -> None:
    """`latfarm serve --with-worker`: the worker thread starts and stops with the app (on both engines)."""
    settings.worker_poll_seconds = 0.1
    settings.worker_batch_size = 2
    settings.cooldown_celsius = 95
    app = create_app(settings)
    worker = attach_background_worker(app, settings)
    headers = make_headers("admin")
    with (
        VirtualPhone(profile="virtual-midrange", state_dir=tmp_path / "phone") as phone,
        TestClient(app) as client,
    ):
        farm = Farm(client, headers, settings, tmp_path)
        device = client.post(
            "/v1/devices", json={"serial": phone.serial, "transport": "tcp"}, headers=headers
        ).json()
        small = farm.submit([device["id"]], 3)
        assert farm.wait_finished(small["id"])["status"] == "done"
        _assert_each_task_measured_once(db_session, small["id"])

        # Runs split into passes: each record pools the runs of its two invocations.
        passes = farm.submit([device["id"]], 1, runtime={"runs": 4, "warmup": 0, "passes": 2})
        assert farm.wait_finished(passes["id"])["status"] == "done"
        db_session.rollback()
        pooled = db_session.scalars(select(Measurement).where(Measurement.job_id == passes["id"])).all()
        assert len(pooled) == 3 and all(m.passes == 2 and len(m.raw_runs_ms) == m.runs == 4 for m in pooled)

        big = farm.submit([device["id"]], 12)
        _wait(lambda: farm.job(big["id"])["counts"]["done"] >= 1, "the big job to start")
        cancelled = client.post(f"/v1/jobs/{big['id']}/cancel", headers=headers).json()
        assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] > 0
        _wait(lambda: farm.job(big["id"])["counts"]["running"] == 0, "leased tasks to finish")
        counts = farm.job(big["id"])["counts"]
        # The small job's 3 configs × 3 frequencies are measured already: reused, not run again.
        assert counts["reused"] == 9
        assert counts["queued"] == 0 and counts["done"] + counts["cancelled"] == 36 - 9
        db_session.rollback()
        assert (
            db_session.scalar(select(func.count()).where(Measurement.job_id == big["id"])) == counts["done"]
        )
    assert worker.stopping and phone.count_overlapping_benchmarks() == 0


SIGTERM_CYCLES = int(os.environ.get("LATFARM_TEST_SIGTERM_CYCLES", "4"))


def _leases_held(session: Session) -> tuple[int, int]:
    """Leased tasks and devices with a lease owner, as the database sees them now."""
    session.rollback()
    tasks = session.scalar(select(func.count()).where(Task.status == TaskStatus.leased)) or 0
    devices = session.scalar(select(func.count()).where(Device.lease_owner.is_not(None))) or 0
    return tasks, devices


def test_sigterm_mid_job_exits_zero_and_releases_every_lease(farm: Farm, db_session: Session) -> None:
    """Start a worker, let it measure, SIGTERM it (twice) — repeatedly: exit 0 and no lease left each time."""
    _, device = farm.phone()
    job = farm.submit([device], 12)
    for cycle in range(SIGTERM_CYCLES):
        before = farm.job(job["id"])["counts"]["done"]
        process = farm.worker(worker_batch_size=4)
        farm.wait_ready(process)
        _wait(lambda b=before: farm.job(job["id"])["counts"]["done"] > b, f"cycle {cycle}: a new result")
        process.send_signal(signal.SIGTERM)
        # A second stop request (an impatient operator, a supervisor repeating itself) changes nothing.
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=WAIT_S)
        log = (farm.tmp / f"worker{len(farm.workers) - 1}.log").read_text()
        assert code == 0, (cycle, code, log[-3000:])
        assert "finishing the running benchmark" in log and "Traceback" not in log, log[-3000:]
        assert _leases_held(db_session) == (0, 0), (cycle, log[-3000:])
    # The stopped workers gave back what they had not run: one more worker finishes the job exactly once.
    farm.worker()
    assert farm.wait_finished(job["id"])["status"] == "done"
    _assert_each_task_measured_once(db_session, job["id"])


def test_idle_worker_stops_on_sigterm_and_once_exits_by_itself(farm: Farm) -> None:
    """SIGTERM to an idle worker, and `--once` on an empty queue: both end with exit status 0."""
    idle = farm.worker()
    farm.wait_ready(idle)
    idle.send_signal(signal.SIGINT)
    assert idle.wait(timeout=WAIT_S) == 0, (farm.tmp / "worker0.log").read_text()[-3000:]
    once = farm.worker("--once")
    assert once.wait(timeout=WAIT_S) == 0, (farm.tmp / "worker1.log").read_text()[-3000:]
    assert b"stopped: 0 results stored" in (farm.tmp / "worker1.log").read_bytes()


# -- fault injection ----------------------------------------------------------------------------------------
def _failed_reasons(session: Session, job_id: int) -> list[str | None]:
    session.rollback()
    return list(
        session.scalars(
            select(Task.last_error).where(Task.job_id == job_id, Task.status == TaskStatus.failed)
        )
    )


@ONLY_POSTGRES
def test_phone_process_killed_mid_job_then_restarted_every_task_once(
    farm: Farm, db_session: Session, tmp_path: Path
) -> None:
    """SIGKILL the phone's own process mid-benchmark; the worker retries; the phone comes back (same port,
    same state): every task measured exactly once, none on two runs at a time."""
    port, state = free_port(), tmp_path / "killed-phone"
    phone = farm.phone_process(port, state)
    r = farm.client.post(
        "/v1/devices", json={"serial": f"127.0.0.1:{port}", "transport": "tcp"}, headers=farm.headers
    )
    assert r.status_code == 201 and r.json()["status"] == "online", r.text
    job = farm.submit([r.json()["id"]], 8)
    farm.worker(task_max_attempts=20, worker_batch_size=4)
    _wait(lambda: farm.job(job["id"])["counts"]["done"] >= 3, "the first results")
    phone.send_signal(signal.SIGKILL)
    phone.wait(timeout=10)
    farm.phone_process(port, state)
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done", finished
    assert _assert_each_task_measured_once(db_session, job["id"]) == 24
    assert VirtualPhone(profile="virtual-midrange", state_dir=state).count_overlapping_benchmarks() == 0


def test_api_process_killed_mid_job_then_restarted_every_task_once(farm: Farm, db_session: Session) -> None:
    """`latfarm serve --with-worker` (API and worker in one process) SIGKILLed mid-job and started again:
    its leases lapse, the new process measures the rest; every task exactly once (on both engines)."""
    phone, device = farm.phone()
    port = free_port()
    api = farm.serve(port, worker_batch_size=4)
    job = farm.submit([device], 10)
    _wait(lambda: farm.job(job["id"])["counts"]["done"] >= 4, "the first results")
    api.send_signal(signal.SIGKILL)
    api.wait(timeout=10)
    farm.serve(port, worker_batch_size=4)
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done", finished
    assert _assert_each_task_measured_once(db_session, job["id"]) == 30
    assert phone.count_overlapping_benchmarks() == 0


@ONLY_POSTGRES
def test_phone_whose_benchmark_hangs_is_timed_out_retried_and_finishes(
    farm: Farm, db_session: Session
) -> None:
    """The benchmark never answers: the ADB command times out, the attempt fails and is retried; once the
    phone answers again every task is measured exactly once."""
    phone, device = farm.phone()
    phone.set_fault(hang_commands=["onnxruntime_perf_test"])
    job = farm.submit([device], 2)
    worker = farm.worker(task_max_attempts=10, worker_batch_size=2, adb_command_timeout_s=1.5)
    _wait(
        lambda: b"timed out" in (farm.tmp / "worker0.log").read_bytes() or worker.poll() is not None,
        "a timeout",
    )
    assert worker.poll() is None, farm.log(worker)
    phone.clear_faults()
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "done", finished
    _assert_each_task_measured_once(db_session, job["id"])
    retried = db_session.scalar(select(func.count()).where(Task.job_id == job["id"], Task.attempts >= 2))
    assert retried and retried > 0


@ONLY_POSTGRES
def test_garbage_benchmark_output_fails_each_task_with_its_reason(farm: Farm, db_session: Session) -> None:
    """A benchmark that prints garbage (exit 0) is never stored as a latency: each task fails after its
    attempts, the reason names the unreadable report, and the job ends `failed`."""
    phone, device = farm.phone()
    phone.set_fault(garbage_benchmark=True)
    job = farm.submit([device], 1)
    farm.worker(task_max_attempts=2, worker_batch_size=3)
    finished = farm.wait_finished(job["id"])
    assert finished["status"] == "failed", finished
    assert finished["counts"]["failed"] == 3 and finished["counts"]["done"] == 0
    reasons = _failed_reasons(db_session, job["id"])
    assert len(reasons) == 3 and all(r and "attempt 2 of 2" in r for r in reasons), reasons
    assert all("per-run times" in r or "report" in r or "runs" in r for r in reasons if r), reasons
    assert db_session.scalar(select(func.count()).where(Measurement.job_id == job["id"])) == 0
    assert len(phone.benchmark_runs()) >= 3  # the phone did run them: it is the output that is refused


def _job_status(session: Session, job_id: int) -> str:
    session.rollback()
    return str(session.scalar(select(Job.status).where(Job.id == job_id)))


def _answer(farm: Farm, job_id: int) -> dict[str, Any] | None:
    try:
        return farm.job(job_id)
    except httpx.HTTPError:
        return None


#: The service's PostgreSQL connections carry this application name, so the test can find and end them.
SERVICE_APP_NAME = "latfarm-fault-injection"


@ONLY_POSTGRES
def test_service_backends_terminated_mid_transaction_every_task_once(
    farm: Farm, db_session: Session, engine: Any
) -> None:
    """`pg_terminate_backend` on the service's own connections while they are inside a transaction, again
    and again during a job: the service reconnects, and every task is measured exactly once."""
    phone, device = farm.phone()
    farm.serve(free_port(), extra_env={"PGAPPNAME": SERVICE_APP_NAME}, worker_batch_size=4)
    job = farm.submit([device], 12)
    terminated = 0
    deadline = time.monotonic() + WAIT_S
    with engine.connect() as admin:
        admin.execute(text("SET application_name = 'latfarm-test-admin'"))
        # The job is watched in the database: a request the API serves on a connection ended under it fails
        # (that is the fault injected), and only the queue's outcome is under test here.
        while _job_status(db_session, job["id"]) not in ("done", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job {job['id']} did not finish; {terminated} terminated"
            if terminated < 5:
                terminated += len(
                    admin.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = :app AND xact_start IS NOT NULL "
                            "AND state IN ('active', 'idle in transaction')"
                        ),
                        {"app": SERVICE_APP_NAME},
                    ).all()
                )
                admin.commit()
            time.sleep(0.01)
    assert terminated >= 1, "no service backend was caught inside a transaction"
    finished = _wait(lambda: _answer(farm, job["id"]), "the API to answer again")
    assert finished["status"] == "done", finished
    assert _assert_each_task_measured_once(db_session, job["id"]) == 36
    assert phone.count_overlapping_benchmarks() == 0
