"""The one `Settings` object: every knob of the service, read once from `LATFARM_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of a latfarm process (API, worker or CLI); see the README's table."""

    model_config = SettingsConfigDict(env_prefix="LATFARM_", extra="ignore")

    database_url: str = Field(
        "sqlite:///./latfarm.db",
        description="SQLAlchemy URL: a SQLite file (default) or postgresql+psycopg://… for several processes",
    )
    state_dir: Path = Field(Path("./.latfarm"), description="ADB key, model cache and scratch files")
    auto_migrate: bool = Field(False, description="`latfarm serve` upgrades an un-migrated database itself")
    public_read: bool = Field(False, description="let unauthenticated requests through for `read` scope")
    host: str = Field("127.0.0.1", description="address `latfarm serve` binds")
    port: int = Field(8000, description="port `latfarm serve` binds")
    max_body_bytes: int = Field(64 * 1024 * 1024, description="request bodies above this answer 413")
    page_size_max: int = Field(1000, description="largest `limit` a list endpoint accepts")
    lease_seconds: float = Field(60.0, description="how long a worker's claim on a task batch lasts")
    max_tasks_per_job: int = Field(200_000, description="a job that expands to more tasks is refused (422)")
    task_max_attempts: int = Field(3, description="device errors retried this many times before `failed`")
    device_failures_offline: int = Field(3, description="consecutive device errors that mark a phone offline")
    reprobe_seconds: float = Field(30.0, description="how often a worker re-probes an offline phone")
    worker_poll_seconds: float = Field(1.0, description="idle worker's wait between queue polls")
    retrain_check_seconds: float = Field(
        60.0, description="how often (at most) an idle worker checks the opt-in retraining policies"
    )
    worker_batch_size: int = Field(32, description="tasks a worker claims at once (one device + frequency)")
    benchmark_binary: Path | None = Field(
        None,
        description="onnxruntime_perf_test for the phones (default: the virtual phone's stand-in, which is "
        "pushed to virtual phones only; a real phone needs this set)",
    )
    tflite_benchmark_binary: Path | None = Field(
        None,
        description="TFLite benchmark_model for the phones (default: the virtual phone's stand-in, virtual "
        "phones only)",
    )
    adb_connect_timeout_s: float = Field(10.0, description="ADB connect/auth timeout")
    adb_command_timeout_s: float = Field(120.0, description="longest a single ADB shell command may take")
    cooldown_celsius: float = Field(45.0, description="hottest zone must be below this before a run")
    cooldown_timeout_s: float = Field(60.0, description="longest wait for a cooldown")
    max_predict_configs: int = Field(100_000, description="configs × frequencies per /v1/predict (more: 413)")
    min_training_rows: int = Field(40, description="fewest valid measurements a predictor trains on")
    train_in_api: bool = Field(
        True, description="the API process trains queued predictors itself (false: only `latfarm worker`s do)"
    )
    training_lease_seconds: float = Field(
        30.0,
        description="how long a trainer's claim on a predictor lasts unless renewed (renewed while it fits)",
    )
    training_max_attempts: int = Field(
        3, description="trainings interrupted (process died) this many times end `failed` with the reason"
    )
    predictor_refresh_ms: float = Field(
        500.0, description="how stale the cached active-predictor id may get (0: re-read on every predict)"
    )
    metrics_require_token: bool = Field(
        False, description="`/metrics` answers only a token with the `read` scope (Prometheus' bearer token)"
    )
    feature_cache_entries: int = Field(
        100_000,
        ge=0,
        description="feature rows of distinct configs kept per predictor layout and process (~1 KB each)",
    )
    log_level: str = Field("INFO", description="Python logging level")

    @property
    def is_sqlite(self) -> bool:
        """True when the database is a SQLite file (single-writer queue path, in-process worker)."""
        return self.database_url.startswith("sqlite")

    @property
    def adb_key_path(self) -> Path:
        """The persistent RSA key latfarm presents to phones (created on first use)."""
        return self.state_dir / "adbkey"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
