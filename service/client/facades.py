"""The two client facades: `LatfarmClient` (blocking) and `AsyncLatfarmClient` (asyncio).

Each method is one line: it picks the operation (`service.client.operations`) and hands it to the facade's
driver, which performs the steps the retry policy (`service.client.retry`) makes of it — an HTTP attempt or a
sleep — and nothing else. The methods are documented once, on `LatfarmClient`; the asyncio twin takes each
docstring from its blocking namesake (`_documented_by`), which also refuses an undocumented method without
one, so the two cannot drift apart. The signatures are written twice on purpose: a type checker (and a
reader) must see each method's arguments and whether it returns a value or a coroutine of it, which one
generic definition cannot say in Python's type system; a test holds the two signatures equal.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd

from service.client import operations as op
from service.client.models import Campaign, Device, Job, Prediction, Predictor
from service.client.operations import Operation, Request, Sleep
from service.client.retry import RetryPolicy

T = TypeVar("T")
ClassT = TypeVar("ClassT", bound=type)


def _write_atomically(path: Path, content: bytes) -> Path:
    """Write next to `path` then rename, so an interrupted download never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        partial.write_bytes(content)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class _ClientSettings:
    """What both facades decide the same way: the URL, the headers, the retry policy, the page size."""

    #: Items asked for per page of a list (the server caps it at its `page_size_max`).
    page_size: int = op.PAGE_SIZE

    def __init__(self, base_url: str | None, token: str | None, retries: int, backoff_s: float) -> None:
        self.base_url = (base_url or os.environ.get("LATFARM_URL", "http://127.0.0.1:8000")).rstrip("/")
        self.retry = RetryPolicy(retries=retries, backoff_s=backoff_s)
        token = token if token is not None else os.environ.get("LATFARM_TOKEN") or None
        self.headers = {"Accept": "application/json", "User-Agent": "latfarm-client/0.1"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"


class LatfarmClient(_ClientSettings):
    """A blocking client of the latfarm API; one connection pool, reused across calls (use it as a context
    manager or call `close()`).

    `base_url` and `token` default to `LATFARM_URL` (else http://127.0.0.1:8000) and `LATFARM_TOKEN`;
    `timeout` is per HTTP request; `retries` is how many times a failed attempt is repeated, waiting
    `backoff_s`·2ⁿ (with jitter, at most 30 s) between attempts; `transport` is for tests and proxies.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries, backoff_s)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> LatfarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _attempt(self, request: Request) -> httpx.Response | httpx.TransportError:
        try:
            return self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                content=request.content,
            )
        except httpx.TransportError as exc:
            return exc  # the retry policy decides what it means

    def _run(self, operation: Operation[T]) -> T:
        steps = self.retry.run(operation, self.base_url)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = steps.send(None)
                else:
                    step = steps.send(self._attempt(step))
        except StopIteration as stop:
            result: T = stop.value
            return result

    # health

    def health(self) -> dict[str, Any]:
        """`GET /healthz`: the service and its database answer."""
        return self._run(op.health())

    # devices

    def register_device(
        self,
        serial: str,
        transport: str = "tcp",
        address: str | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Device:
        """Register a phone (admin scope); the service probes it at once (see its `status`)."""
        return self._run(op.register_device(serial, transport, address, name, tags))

    def list_devices(self, status: str | None = None, tag: str | None = None) -> list[Device]:
        """Every registered device (all pages), optionally by status and tag."""
        return self._run(op.list_devices(status, tag, self.page_size))

    def get_device(self, device_id: int) -> Device:
        """One device with its probed facts."""
        return self._run(op.get_device(device_id))

    def update_device(
        self,
        device_id: int,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> Device:
        """Change a device's name, tags or enabled flag (admin scope)."""
        return self._run(op.update_device(device_id, {"name": name, "tags": tags, "enabled": enabled}))

    def delete_device(self, device_id: int) -> None:
        """Remove a device (admin scope; 409 while it runs a task)."""
        self._run(op.delete_device(device_id))

    def probe_device(self, device_id: int) -> Device:
        """Connect to the phone now and refresh its probed facts (admin scope)."""
        return self._run(op.probe_device(device_id))

    # jobs

    def submit_job(
        self,
        family: str,
        configs: Sequence[Any] | None = None,
        devices: Sequence[int | str] | None = None,
        frequencies: Sequence[int] | str | None = None,
        runtime: Mapping[str, Any] | None = None,
        priority: int | None = None,
        force: bool | None = None,
        sampler: Mapping[str, Any] | None = None,
        selector: Mapping[str, Any] | None = None,
        *,
        unit: str | None = None,
        precision: str | None = None,
        benchmark: str | None = None,
        accelerator: str | None = None,
        layer_profile: bool | None = None,
    ) -> Job:
        """Submit a profiling job (profile scope): configs × devices × frequencies become tasks.

        `unit` (a CPU cluster, `gpu` or `npu`; `frequencies` are then that unit's clocks), `precision`
        (`fp32`, `fp16`, `int8`), `benchmark` (`onnxruntime`, `tflite`), `accelerator` (its execution
        provider or delegate) and `layer_profile` (record per-layer times) go into `runtime`; None leaves
        the server's default. Giving one of them in `runtime` too, differently, is a LatfarmClientError.
        """
        return self._run(
            op.submit_job(
                family,
                configs,
                devices,
                frequencies,
                runtime,
                priority,
                force,
                sampler,
                selector,
                op.UnitChoice(unit, precision, benchmark, accelerator, layer_profile),
            )
        )

    def get_job(self, job_id: int) -> Job:
        """A job's status and task counts."""
        return self._run(op.get_job(job_id))

    def list_jobs(self, status: str | None = None) -> list[Job]:
        """Every job (all pages), optionally by status."""
        return self._run(op.list_jobs(status, self.page_size))

    def list_tasks(self, job_id: int) -> list[dict[str, Any]]:
        """Every task of a job (config, device, frequency, status, last error), all pages."""
        return self._run(op.list_tasks(job_id, self.page_size))

    def cancel_job(self, job_id: int) -> Job:
        """Cancel a job's queued tasks (profile scope); running ones finish."""
        return self._run(op.cancel_job(job_id))

    def wait(
        self,
        job_id: int,
        progress: Callable[[Job], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll a job until it is done, failed or cancelled; `progress(job)` is called after every poll.

        Raises `LatfarmTimeoutError` after `timeout_s` (the job goes on on the server).
        """
        return self._run(op.wait_job(job_id, progress, poll_s, timeout_s))

    # bootstrap campaigns

    def start_campaign(self, device: int, family: str, **options: Any) -> Campaign:
        """Start a bootstrap campaign of `device` for `family` (profile scope); `options` are the other
        fields of `POST /v1/devices/{id}/bootstrap` (unit, frequencies, target_accuracy, max_configs, …)."""
        return self._run(op.start_campaign(device, {"family": family, **options}))

    def get_campaign(self, campaign_id: int) -> Campaign:
        """A campaign with its rounds."""
        return self._run(op.get_campaign(campaign_id))

    def list_campaigns(self, device: int | None = None, status: str | None = None) -> list[Campaign]:
        """Every campaign (all pages), newest first, optionally of one device or in one status."""
        return self._run(op.list_campaigns(device, status, self.page_size))

    def cancel_campaign(self, campaign_id: int) -> Campaign:
        """Stop a running campaign (profile scope): its job is cancelled, nothing it trained is activated."""
        return self._run(op.cancel_campaign(campaign_id))

    def wait_campaign(
        self,
        campaign_id: int,
        progress: Callable[[Campaign], None] | None = None,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
    ) -> Campaign:
        """Poll a campaign until it is over; `progress(campaign)` after every poll."""
        return self._run(op.wait_campaign(campaign_id, progress, poll_s, timeout_s))

    # measurements

    def measurements(self, **filters: Any) -> pd.DataFrame:
        """Measurements matching `filters` (the query parameters of `GET /v1/measurements`), all pages."""
        return self._run(op.measurements(filters, self.page_size))

    def import_measurements(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store externally measured rows, all or nothing (profile scope); returns how many were stored."""
        return self._run(op.import_measurements(rows))

    # predictors

    def train_predictor(
        self,
        family: str,
        device: int,
        params: Mapping[str, Any] | None = None,
        filters: Mapping[str, Any] | None = None,
        transfer: Mapping[str, Any] | None = None,
    ) -> Predictor:
        """Start training a predictor (profile scope); returns it in `training` state.

        `params` override the XGBoost defaults; `filters` pick the measurements (e.g. `frequencies_khz`);
        `transfer` learns from peers too (`{"peers": [device ids]}` or `{"peers": "all"}`).
        """
        return self._run(op.train_predictor(family, device, params, filters, transfer))

    def get_predictor(self, predictor_id: int) -> Predictor:
        """A predictor's status, metrics and versions."""
        return self._run(op.get_predictor(predictor_id))

    def list_predictors(self, family: str | None = None, device: int | None = None) -> list[Predictor]:
        """Every predictor (all pages), optionally by family and device."""
        return self._run(op.list_predictors(family, device, self.page_size))

    def activate_predictor(self, predictor_id: int) -> Predictor:
        """Make this predictor the one `/v1/predict` answers with for its family and device (profile)."""
        return self._run(op.activate_predictor(predictor_id))

    def wait_predictor(
        self,
        predictor_id: int,
        progress: Callable[[Predictor], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Predictor:
        """Poll a predictor until training is `ready` or `failed`; `progress` as in `wait`."""
        return self._run(op.wait_predictor(predictor_id, progress, poll_s, timeout_s))

    def predict(
        self,
        device: int,
        family: str,
        configs: Sequence[Any],
        frequency_khz: int | None = None,
        frequencies_khz: Sequence[int] | None = None,
        *,
        unit: str | None = None,
        precision: str | None = None,
    ) -> Prediction:
        """Predicted latencies of `configs` in one batched call (predict scope).

        Exactly one of `frequency_khz` (arrays of shape `(n_configs,)`) or `frequencies_khz` (shape
        `(n_configs, n_frequencies)`), clocks of `unit` (a CPU cluster, `gpu` or `npu`; None: the server's
        default) at `precision` (`fp32`, `fp16`, `int8`; None: fp32).
        """
        return self._run(op.predict(device, family, configs, frequency_khz, frequencies_khz, unit, precision))

    def download_snapshot(self, predictor_id: int, path: str | os.PathLike[str]) -> Path:
        """Save a predictor's snapshot archive to `path` (atomically) for `Snapshot.load(path)`."""
        return _write_atomically(Path(path), self._run(op.snapshot_bytes(predictor_id)))

    def import_predictor(self, path: str | os.PathLike[str], device: int | None = None) -> Predictor:
        """Upload a snapshot archive as a new, inactive predictor version (for `device`, default its own)."""
        return self._run(op.import_predictor(Path(path).read_bytes(), device))


def _documented_by(blocking: type) -> Callable[[ClassT], ClassT]:
    """Give each undocumented public method of the decorated class the docstring of `blocking`'s method of
    that name; one without such a twin is an error at import. (Only a method with no twin, like `aclose`,
    carries its own docstring.)"""

    def document(twin: ClassT) -> ClassT:
        for name, method in vars(twin).items():
            if name.startswith("_") or not callable(method) or method.__doc__:
                continue
            original = getattr(blocking, name, None)
            if original is None or not original.__doc__:
                raise TypeError(f"{twin.__name__}.{name} has no documented twin on {blocking.__name__}")
            method.__doc__ = original.__doc__
        return twin

    return document


@_documented_by(LatfarmClient)
class AsyncLatfarmClient(_ClientSettings):
    """The asyncio twin of `LatfarmClient`: the same methods and arguments, as coroutines."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries, backoff_s)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncLatfarmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _attempt(self, request: Request) -> httpx.Response | httpx.TransportError:
        try:
            return await self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                content=request.content,
            )
        except httpx.TransportError as exc:
            return exc  # the retry policy decides what it means

    async def _run(self, operation: Operation[T]) -> T:
        steps = self.retry.run(operation, self.base_url)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = steps.send(None)
                else:
                    step = steps.send(await self._attempt(step))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def health(self) -> dict[str, Any]:
        return await self._run(op.health())

    async def register_device(
        self,
        serial: str,
        transport: str = "tcp",
        address: str | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Device:
        return await self._run(op.register_device(serial, transport, address, name, tags))

    async def list_devices(self, status: str | None = None, tag: str | None = None) -> list[Device]:
        return await self._run(op.list_devices(status, tag, self.page_size))

    async def get_device(self, device_id: int) -> Device:
        return await self._run(op.get_device(device_id))

    async def update_device(
        self,
        device_id: int,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> Device:
        return await self._run(op.update_device(device_id, {"name": name, "tags": tags, "enabled": enabled}))

    async def delete_device(self, device_id: int) -> None:
        await self._run(op.delete_device(device_id))

    async def probe_device(self, device_id: int) -> Device:
        return await self._run(op.probe_device(device_id))

    async def submit_job(
        self,
        family: str,
        configs: Sequence[Any] | None = None,
        devices: Sequence[int | str] | None = None,
        frequencies: Sequence[int] | str | None = None,
        runtime: Mapping[str, Any] | None = None,
        priority: int | None = None,
        force: bool | None = None,
        sampler: Mapping[str, Any] | None = None,
        selector: Mapping[str, Any] | None = None,
        *,
        unit: str | None = None,
        precision: str | None = None,
        benchmark: str | None = None,
        accelerator: str | None = None,
        layer_profile: bool | None = None,
    ) -> Job:
        return await self._run(
            op.submit_job(
                family,
                configs,
                devices,
                frequencies,
                runtime,
                priority,
                force,
                sampler,
                selector,
                op.UnitChoice(unit, precision, benchmark, accelerator, layer_profile),
            )
        )

    async def get_job(self, job_id: int) -> Job:
        return await self._run(op.get_job(job_id))

    async def list_jobs(self, status: str | None = None) -> list[Job]:
        return await self._run(op.list_jobs(status, self.page_size))

    async def list_tasks(self, job_id: int) -> list[dict[str, Any]]:
        return await self._run(op.list_tasks(job_id, self.page_size))

    async def cancel_job(self, job_id: int) -> Job:
        return await self._run(op.cancel_job(job_id))

    async def wait(
        self,
        job_id: int,
        progress: Callable[[Job], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Job:
        return await self._run(op.wait_job(job_id, progress, poll_s, timeout_s))

    async def start_campaign(self, device: int, family: str, **options: Any) -> Campaign:
        return await self._run(op.start_campaign(device, {"family": family, **options}))

    async def get_campaign(self, campaign_id: int) -> Campaign:
        return await self._run(op.get_campaign(campaign_id))

    async def list_campaigns(self, device: int | None = None, status: str | None = None) -> list[Campaign]:
        return await self._run(op.list_campaigns(device, status, self.page_size))

    async def cancel_campaign(self, campaign_id: int) -> Campaign:
        return await self._run(op.cancel_campaign(campaign_id))

    async def wait_campaign(
        self,
        campaign_id: int,
        progress: Callable[[Campaign], None] | None = None,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
    ) -> Campaign:
        return await self._run(op.wait_campaign(campaign_id, progress, poll_s, timeout_s))

    async def measurements(self, **filters: Any) -> pd.DataFrame:
        return await self._run(op.measurements(filters, self.page_size))

    async def import_measurements(self, rows: Sequence[Mapping[str, Any]]) -> int:
        return await self._run(op.import_measurements(rows))

    async def train_predictor(
        self,
        family: str,
        device: int,
        params: Mapping[str, Any] | None = None,
        filters: Mapping[str, Any] | None = None,
        transfer: Mapping[str, Any] | None = None,
    ) -> Predictor:
        return await self._run(op.train_predictor(family, device, params, filters, transfer))

    async def get_predictor(self, predictor_id: int) -> Predictor:
        return await self._run(op.get_predictor(predictor_id))

    async def list_predictors(self, family: str | None = None, device: int | None = None) -> list[Predictor]:
        return await self._run(op.list_predictors(family, device, self.page_size))

    async def activate_predictor(self, predictor_id: int) -> Predictor:
        return await self._run(op.activate_predictor(predictor_id))

    async def wait_predictor(
        self,
        predictor_id: int,
        progress: Callable[[Predictor], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Predictor:
        return await self._run(op.wait_predictor(predictor_id, progress, poll_s, timeout_s))

    async def predict(
        self,
        device: int,
        family: str,
        configs: Sequence[Any],
        frequency_khz: int | None = None,
        frequencies_khz: Sequence[int] | None = None,
        *,
        unit: str | None = None,
        precision: str | None = None,
    ) -> Prediction:
        return await self._run(
            op.predict(device, family, configs, frequency_khz, frequencies_khz, unit, precision)
        )

    async def download_snapshot(self, predictor_id: int, path: str | os.PathLike[str]) -> Path:
        return _write_atomically(Path(path), await self._run(op.snapshot_bytes(predictor_id)))

    async def import_predictor(self, path: str | os.PathLike[str], device: int | None = None) -> Predictor:
        return await self._run(op.import_predictor(Path(path).read_bytes(), device))
