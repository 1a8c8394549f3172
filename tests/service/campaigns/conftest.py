"""Fixtures of the campaign tests: a probed device, a synthetic phone that measures a job's tasks by a known
latency law, and a trainer run on demand — so a campaign's rounds advance one step at a time, no thread."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import get_family
from service.campaigns.models import Campaign, CampaignRound
from service.campaigns.runner import run_campaigns
from service.db import utcnow
from service.devices.models import Device, DeviceStatus, Transport
from service.jobs.models import Job, Task, TaskStatus
from service.jobs.service import settle_jobs
from service.measurements.models import Measurement
from service.predictors.trainer import Trainer
from service.settings import Settings
from tests.service.predictors.synthetic import FAST_PARAMS, SPACE, law_ms

BIG = [652800, 1478400, 2208000]
LITTLE = [300000, 1017600, 1804800]


@pytest.fixture
def settings(database_url: str, tmp_path: Any) -> Settings:
    """A test service whose API process trains nothing: the tests run each training themselves."""
    return Settings(
        database_url=database_url, state_dir=tmp_path / "state", public_read=False, train_in_api=False
    )


def campaign_body(**overrides: Any) -> dict[str, Any]:
    """A small campaign over the synthetic space: 10 held-out configs, 8 per round, quick trainings."""
    return {
        "family": "sr_block",
        "space": SPACE,
        "holdout_size": 10,
        "configs_per_round": 8,
        "max_configs": 60,
        "candidates": 120,
        "runtime": {"runs": 3, "warmup": 0},
        "params": FAST_PARAMS,
        **overrides,
    }


@pytest.fixture
def make_device(db_session: Session) -> Callable[..., int]:
    """`make_device(serial)` → the id of an online device with a probed little and big cluster."""

    def make(serial: str = "phone-1") -> int:
        device = Device(
            serial=serial,
            transport=Transport.tcp,
            address=serial,
            clusters=[
                {"name": "little", "cpus": [0, 1, 2, 3], "frequencies_khz": LITTLE},
                {"name": "big", "cpus": [4, 5], "frequencies_khz": BIG},
            ],
            model="Test Phone",
            status=DeviceStatus.online,
            is_virtual=True,
        )
        db_session.add(device)
        db_session.commit()
        return device.id

    return make


def measure(
    session: Session, job_id: int, *, limit: int | None = None, noise: float = 0.0, seed: int = 0
) -> int:
    """Measure the job's queued tasks (the first `limit` of them) by the synthetic law, as a worker would
    store them; returns how many."""
    rng = random.Random(seed)
    session.rollback()
    tasks = session.scalars(
        select(Task).where(Task.job_id == job_id, Task.status == TaskStatus.queued).order_by(Task.id)
    ).all()
    tasks = tasks[:limit] if limit is not None else tasks
    for task in tasks:
        assert task.frequency_khz is not None
        ms = law_ms(get_family(task.family).costs(task.config).flops, task.frequency_khz)
        ms *= 1.0 + rng.gauss(0.0, noise)
        session.add(
            Measurement(
                device_id=task.device_id,
                family=task.family,
                config=task.config,
                config_hash=task.config_hash,
                cluster=task.cluster,
                frequency_khz=task.frequency_khz,
                observed_frequency_khz=task.frequency_khz,
                pinned=True,
                runtime_name="onnxruntime",
                threads=task.threads,
                precision=task.precision,
                runs=task.runs,
                warmup=task.warmup,
                median_ms=ms,
                mean_ms=ms,
                min_ms=ms,
                max_ms=ms,
                p90_ms=ms,
                virtual=True,
                job_id=job_id,
                task_id=task.id,
            )
        )
        task.status, task.finished_at = TaskStatus.done, utcnow()
    session.commit()
    settle_jobs(session)
    return len(tasks)


class Drive:
    """Advance campaigns step by step: the runner, the synthetic phone and a trainer, each on demand."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, session: Session) -> None:
        self.factory, self.settings, self.session = factory, settings, session
        self.trainer = Trainer(factory, settings, name="test-trainer")

    def step(self, owner: str = "runner") -> int:
        return run_campaigns(self.factory, self.settings, owner)

    def campaign(self, campaign_id: int) -> Campaign:
        self.session.rollback()
        campaign = self.session.get(Campaign, campaign_id, populate_existing=True)
        assert campaign is not None
        return campaign

    def rounds(self, campaign_id: int) -> list[CampaignRound]:
        self.session.rollback()
        query = select(CampaignRound).where(CampaignRound.campaign_id == campaign_id)
        return list(
            self.session.scalars(
                query.order_by(CampaignRound.number).execution_options(populate_existing=True)
            )
        )

    def open_job(self, campaign_id: int) -> int | None:
        rounds = self.rounds(campaign_id)
        if not rounds or rounds[-1].job_id is None:
            return None
        job = self.session.get(Job, rounds[-1].job_id, populate_existing=True)
        assert job is not None
        return job.id if job.status.value in ("queued", "running") else None

    def run(self, campaign_id: int, *, noise: float = 0.0, max_steps: int = 40) -> Campaign:
        """Step, measure and train until the campaign ends (bounded)."""
        for i in range(max_steps):
            self.step()
            job_id = self.open_job(campaign_id)
            if job_id is not None:
                measure(self.session, job_id, noise=noise, seed=i)
            while self.trainer.run_once():
                pass
            campaign = self.campaign(campaign_id)
            if campaign.status.value != "running":
                return campaign
        raise AssertionError(f"campaign {campaign_id} still running after {max_steps} steps")


@pytest.fixture
def drive(session_factory: sessionmaker[Session], settings: Settings, db_session: Session) -> Drive:
    return Drive(session_factory, settings, db_session)
