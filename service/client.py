"""The search-job client: latfarm's HTTP interface v1 as Python calls, sync (`LatfarmClient`) and async
(`AsyncLatfarmClient`).

    from service.client import LatfarmClient
    with LatfarmClient("http://127.0.0.1:8000", token) as lf:
        pred = lf.predict(device=1, family="sr_block", configs=configs, frequency_khz=1_804_800)
        pred.latency_ms                       # numpy array, one value per config

How it is built: every operation is written once, as a generator that yields `_Request`s (and `_Sleep`s
while it polls) and receives `httpx.Response`s — the sans-IO style of httpx's own internals. The two client
classes differ only in the driver that performs those steps, so the sync and async twins cannot drift apart.

Retries: connection errors, 429 and 5xx are retried with exponential backoff (honouring `Retry-After`);
4xx never are, since repeating a bad request cannot make it good. A request that may have reached the server
(a read timeout, a dropped connection after sending) is only retried when the call is idempotent, so a job is
never submitted twice. Every error answer raises `LatfarmAPIError` carrying the server's problem details.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from service.predictors.snapshot import Snapshot

__all__ = [
    "AsyncLatfarmClient",
    "Cluster",
    "Device",
    "Job",
    "LatfarmAPIError",
    "LatfarmClient",
    "LatfarmClientError",
    "LatfarmConnectionError",
    "LatfarmTimeoutError",
    "Prediction",
    "Predictor",
    "Snapshot",
]

T = TypeVar("T")

#: Job and predictor states after which nothing changes any more.
JOB_FINAL_STATES = frozenset({"done", "failed", "cancelled"})
PREDICTOR_FINAL_STATES = frozenset({"ready", "failed"})
#: Task states that count as finished in a job's progress.
TASK_FINAL_STATES = ("done", "reused", "failed", "cancelled")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_PAGE_LIMIT = 1000


def __getattr__(name: str) -> Any:
    # `Snapshot` lives with the predictors; importing it lazily keeps this module importable on its own.
    if name == "Snapshot":
        from service.predictors.snapshot import Snapshot

        return Snapshot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- errors -----------------------------------------------------------------------------------------


class LatfarmClientError(Exception):
    """Base of every error the client raises."""


class LatfarmAPIError(LatfarmClientError):
    """The server answered with an error; `detail` and `errors` ([{loc, msg}]) are its problem details."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        body: Any = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + (f" ({method} {url})" if method else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.body = body
        self.method = method
        self.url = url

    @classmethod
    def from_response(cls, response: httpx.Response) -> LatfarmAPIError:
        """Read a problem+json body (or whatever text came) into an error."""
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if isinstance(body, dict):
            title = str(body.get("title") or response.reason_phrase)
            detail = str(body.get("detail") or title)
            errors = body.get("errors") if isinstance(body.get("errors"), list) else None
        else:
            title, detail, errors = response.reason_phrase, (str(body)[:500] or response.reason_phrase), None
        request = response.request
        return cls(response.status_code, title, detail, errors, body, request.method, str(request.url))


class LatfarmConnectionError(LatfarmClientError):
    """The server could not be reached (after the retries)."""


class LatfarmTimeoutError(LatfarmClientError):
    """A `wait` ran past its deadline; the job or predictor is still going on the server."""


# --- typed results ----------------------------------------------------------------------------------


class _Result(BaseModel):
    # Fields the server adds later are kept (extra="allow"), so an older client still sees them.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Cluster(_Result):
    """A CPU cluster of a phone and the frequencies it can be pinned to."""

    name: str
    cpus: list[int] = Field(default_factory=list)
    frequencies_khz: list[int] = Field(default_factory=list)


class Device(_Result):
    """A registered phone, with its probed facts and live status."""

    id: int
    serial: str
    transport: str = "tcp"
    address: str | None = None
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    status: str = "offline"
    model: str | None = None
    soc: str | None = None
    abi: str | None = None
    android_version: str | None = None
    clusters: list[Cluster] = Field(default_factory=list)
    rooted: bool | None = None
    is_virtual: bool = False
    last_error: str | None = None
    temperature_c: float | None = None
    probed_at: dt.datetime | None = None

    def frequencies_khz(self, cluster: str | None = None) -> list[int]:
        """The frequencies of `cluster` (default: the cluster with the highest top frequency)."""
        if not self.clusters:
            return []
        if cluster is None:
            chosen = max(self.clusters, key=lambda c: max(c.frequencies_khz, default=0))
        else:
            matches = [c for c in self.clusters if c.name == cluster]
            if not matches:
                raise LatfarmClientError(f"device {self.id} has no cluster {cluster!r}")
            chosen = matches[0]
        return sorted(chosen.frequencies_khz)


class Job(_Result):
    """A profiling job: its status and how many of its tasks are in each state."""

    id: int
    family: str = ""
    status: str = "queued"
    priority: int = 0
    total_tasks: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    eta_seconds: float | None = None
    error: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    created_by: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.status in JOB_FINAL_STATES

    @property
    def completed_tasks(self) -> int:
        """Tasks that will not run again (measured, reused, failed or cancelled)."""
        return sum(int(self.counts.get(state, 0)) for state in TASK_FINAL_STATES)

    @property
    def tasks(self) -> int:
        """All the job's tasks (the total the server reports, else the sum of the counts)."""
        return self.total_tasks or sum(int(v) for v in self.counts.values())


class Predictor(_Result):
    """A trained (or training) latency predictor with its holdout metrics."""

    id: int
    family: str = ""
    device_id: int | None = None
    version: int = 0
    status: str = "training"
    active: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    filters: dict[str, Any] = Field(default_factory=dict)
    row_count: int | None = None
    error: str | None = None
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    activated_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """True once training succeeded or failed."""
        return self.status in PREDICTOR_FINAL_STATES


@dataclass(frozen=True)
class Prediction:
    """Predicted latencies: shape `(n_configs,)` for one frequency, `(n_configs, n_frequencies)` for many."""

    predictor_id: int | None
    latency_ms: np.ndarray
    p10_ms: np.ndarray
    p90_ms: np.ndarray
    extrapolated: np.ndarray
    frequencies_khz: list[int] | None = None
    raw: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(self.latency_ms.shape[0])


# --- operations, written once (sans-IO) -------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    idempotent: bool = True


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Step = _Request | _Sleep
_Operation = Generator[_Step, Any, T]


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _json(response: httpx.Response) -> Any:
    return response.json()


def _one(request: _Request, model: type[BaseModel]) -> _Operation[Any]:
    response = yield request
    return model.model_validate(_json(response))


def _paged(path: str, params: Mapping[str, Any], limit: int) -> _Operation[list[dict[str, Any]]]:
    """Every item of a keyset-paginated list ({items, next_cursor}), page after page."""
    items: list[dict[str, Any]] = []
    query = {"limit": limit, **_drop_none(params)}
    while True:
        response = yield _Request("GET", path, params=query)
        page = _json(response)
        if isinstance(page, list):  # an endpoint that answers its whole list at once
            return page
        items.extend(page["items"])
        if page.get("next_cursor") is None:
            return items
        query = {**query, "cursor": page["next_cursor"]}


def _poll(
    get: Callable[[], _Operation[Any]],
    done: Callable[[Any], bool],
    progress: Callable[[Any], None] | None,
    poll_s: float,
    timeout_s: float | None,
    what: str,
) -> _Operation[Any]:
    # Polling with a bounded deadline: the HTTP interface has no push channel for job progress.
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        current = yield from get()
        if progress is not None:
            progress(current)
        if done(current):
            return current
        if deadline is not None and time.monotonic() >= deadline:
            raise LatfarmTimeoutError(f"{what} is still {current.status} after {timeout_s:g} s")
        yield _Sleep(poll_s)


def _config_dicts(configs: Sequence[Any]) -> list[Any]:
    return [c.model_dump(mode="json") if isinstance(c, BaseModel) else c for c in configs]


def _prediction(body: Mapping[str, Any], n_configs: int, frequencies: list[int] | None) -> Prediction:
    rows = list(body["predictions"])
    shape: tuple[int, ...] = (n_configs,) if frequencies is None else (n_configs, len(frequencies))
    if len(rows) != int(np.prod(shape)):
        raise LatfarmClientError(f"the server returned {len(rows)} predictions for a {shape} request")

    def column(name: str, dtype: type) -> np.ndarray:
        values = [row.get(name) for row in rows]
        if dtype is float:
            values = [np.nan if v is None else v for v in values]
        return np.asarray(values, dtype=dtype).reshape(shape)

    return Prediction(
        predictor_id=body.get("predictor_id"),
        latency_ms=column("latency_ms", float),
        p10_ms=column("p10_ms", float),
        p90_ms=column("p90_ms", float),
        extrapolated=column("extrapolated", bool),
        frequencies_khz=frequencies,
        raw=rows,
    )


class _Operations:
    """The client's API as sans-IO operations; the drivers in the subclasses run them."""

    #: Items asked for per page of a list (the server caps it at its `page_size_max`).
    page_size: int = _PAGE_LIMIT

    # devices

    @staticmethod
    def _register_device(
        serial: str,
        transport: str,
        address: str | None,
        name: str | None,
        tags: Sequence[str] | None,
    ) -> _Operation[Device]:
        body = _drop_none(
            {"serial": serial, "transport": transport, "address": address, "name": name, "tags": tags}
        )
        return _one(_Request("POST", "/v1/devices", json=body, idempotent=False), Device)

    def _list_devices(self, status: str | None, tag: str | None) -> _Operation[list[Device]]:
        items = yield from _paged("/v1/devices", {"status": status, "tag": tag}, self.page_size)
        return [Device.model_validate(item) for item in items]

    @staticmethod
    def _update_device(device_id: int, changes: Mapping[str, Any]) -> _Operation[Device]:
        return _one(_Request("PATCH", f"/v1/devices/{device_id}", json=_drop_none(changes)), Device)

    @staticmethod
    def _delete_device(device_id: int) -> _Operation[None]:
        yield _Request("DELETE", f"/v1/devices/{device_id}")
        return None

    # jobs

    @staticmethod
    def _submit_job(
        family: str,
        configs: Sequence[Any] | None,
        devices: Sequence[int | str] | None,
        frequencies: Sequence[int] | str | None,
        runtime: Mapping[str, Any] | None,
        priority: int | None,
        force: bool | None,
        sampler: Mapping[str, Any] | None,
        selector: Mapping[str, Any] | None,
    ) -> _Operation[Job]:
        body = {
            "family": family,
            "configs": None if configs is None else _config_dicts(configs),
            "sampler": sampler,
            "devices": None if devices is None else list(devices),
            "selector": selector,
            "frequencies": frequencies if frequencies is None or isinstance(frequencies, str)
            else [int(f) for f in frequencies],
            "runtime": runtime,
            "priority": priority,
            "force": force,
        }  # fmt: skip
        return _one(_Request("POST", "/v1/jobs", json=_drop_none(body), idempotent=False), Job)

    @staticmethod
    def _wait_job(
        job_id: int, progress: Callable[[Job], None] | None, poll_s: float, timeout_s: float | None
    ) -> _Operation[Job]:
        def get() -> _Operation[Job]:
            return _one(_Request("GET", f"/v1/jobs/{job_id}"), Job)

        return _poll(get, lambda job: job.finished, progress, poll_s, timeout_s, f"job {job_id}")

    @staticmethod
    def _wait_predictor(
        predictor_id: int,
        progress: Callable[[Predictor], None] | None,
        poll_s: float,
        timeout_s: float | None,
    ) -> _Operation[Predictor]:
        def get() -> _Operation[Predictor]:
            return _one(_Request("GET", f"/v1/predictors/{predictor_id}"), Predictor)

        return _poll(get, lambda p: p.finished, progress, poll_s, timeout_s, f"predictor {predictor_id}")

    def _list_jobs(self, status: str | None) -> _Operation[list[Job]]:
        items = yield from _paged("/v1/jobs", {"status": status}, self.page_size)
        return [Job.model_validate(item) for item in items]

    # measurements

    def _measurements(self, filters: Mapping[str, Any]) -> _Operation[pd.DataFrame]:
        # List filters (e.g. several frequencies) travel as comma-separated values.
        params = {k: ",".join(map(str, v)) if isinstance(v, list | tuple) else v for k, v in filters.items()}
        items = yield from _paged("/v1/measurements", {**params, "format": "json"}, self.page_size)
        return pd.DataFrame.from_records(items)

    # predictors

    def _list_predictors(self, family: str | None, device: int | None) -> _Operation[list[Predictor]]:
        items = yield from _paged("/v1/predictors", {"family": family, "device": device}, self.page_size)
        return [Predictor.model_validate(item) for item in items]

    @staticmethod
    def _predict(
        device: int,
        family: str,
        configs: Sequence[Any],
        frequency_khz: int | None,
        frequencies_khz: Sequence[int] | None,
    ) -> _Operation[Prediction]:
        if (frequency_khz is None) == (frequencies_khz is None):
            raise LatfarmClientError("predict needs exactly one of frequency_khz or frequencies_khz")
        body: dict[str, Any] = {"device": device, "family": family, "configs": _config_dicts(configs)}
        if frequency_khz is not None:
            body["frequency_khz"] = int(frequency_khz)
            frequencies = None
        else:
            frequencies = [int(f) for f in frequencies_khz or ()]
            body["frequencies_khz"] = frequencies
        # Predicting changes nothing on the server, so it is safe to repeat.
        response = yield _Request("POST", "/v1/predict", json=body, idempotent=True)
        return _prediction(_json(response), len(configs), frequencies)

    @staticmethod
    def _import_measurements(rows: Sequence[Mapping[str, Any]]) -> _Operation[int]:
        body = {"rows": [dict(r) for r in rows]}
        response = yield _Request("POST", "/v1/measurements/import", json=body, idempotent=False)
        return int(_json(response)["imported"])

    @staticmethod
    def _import_predictor(archive: bytes, device: int | None) -> _Operation[Predictor]:
        params = _drop_none({"device": device})
        request = _Request("POST", "/v1/predictors/import", params=params, content=archive, idempotent=False)
        return _one(request, Predictor)

    @staticmethod
    def _snapshot_bytes(predictor_id: int) -> _Operation[bytes]:
        response = yield _Request("GET", f"/v1/predictors/{predictor_id}/snapshot")
        return response.content


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


def _backoff_delay(attempt: int, base_s: float, response: httpx.Response | None) -> float:
    """Exponential backoff with jitter; a server's `Retry-After` (seconds) wins when it is longer."""
    delay = base_s * (2**attempt) * (0.5 + random.random() / 2)
    if response is not None:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
    return min(delay, 30.0)


def _may_retry(exc: httpx.TransportError, idempotent: bool) -> bool:
    # A connect failure means the request never left; anything later may have reached the server.
    return idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _base_headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "latfarm-client/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _default_url(base_url: str | None) -> str:
    return base_url or os.environ.get("LATFARM_URL", "http://127.0.0.1:8000")


def _default_token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("LATFARM_TOKEN") or None


class LatfarmClient(_Operations):
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
        self.base_url = _default_url(base_url).rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(
            base_url=self.base_url, headers=_base_headers(_default_token(token)), timeout=timeout,
            transport=transport,
        )  # fmt: skip

    def __enter__(self) -> LatfarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # driver

    def _send(self, request: _Request) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    request.method,
                    request.path,
                    params=request.params,
                    json=request.json,
                    content=request.content,
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries or not _may_retry(exc, request.idempotent):
                    raise LatfarmConnectionError(
                        f"{request.method} {self.base_url}{request.path} failed: {exc!r}"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUSES or attempt >= self.retries:
                    raise LatfarmAPIError.from_response(response)
            time.sleep(_backoff_delay(attempt, self.backoff_s, response))
            attempt += 1

    def _run(self, operation: _Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                    step = operation.send(None)
                else:
                    step = operation.send(self._send(step))
        except StopIteration as stop:
            return stop.value

    # health

    def health(self) -> dict[str, Any]:
        """`GET /healthz`."""
        return self._run(_one_json(_Request("GET", "/healthz")))

    # devices

    def register_device(
        self,
        serial: str,
        transport: str = "tcp",
        address: str | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Device:
        """Register a phone (admin scope); it stays offline until probed."""
        return self._run(self._register_device(serial, transport, address, name, tags))

    def list_devices(self, status: str | None = None, tag: str | None = None) -> list[Device]:
        """Every registered device (all pages), optionally by status and tag."""
        return self._run(self._list_devices(status, tag))

    def get_device(self, device_id: int) -> Device:
        """One device with its probed facts."""
        return self._run(_one(_Request("GET", f"/v1/devices/{device_id}"), Device))

    def update_device(
        self,
        device_id: int,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> Device:
        """Change a device's name, tags or enabled flag (admin scope)."""
        return self._run(self._update_device(device_id, {"name": name, "tags": tags, "enabled": enabled}))

    def delete_device(self, device_id: int) -> None:
        """Remove a device (409 while it runs a task)."""
        self._run(self._delete_device(device_id))

    def probe_device(self, device_id: int) -> Device:
        """Connect to the phone now and refresh its probed facts (admin scope)."""
        return self._run(_one(_Request("POST", f"/v1/devices/{device_id}/probe"), Device))

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
    ) -> Job:
        """Submit a profiling job (profile scope): configs × devices × frequencies become tasks."""
        return self._run(
            self._submit_job(
                family, configs, devices, frequencies, runtime, priority, force, sampler, selector
            )
        )

    def get_job(self, job_id: int) -> Job:
        """A job's status and task counts."""
        return self._run(_one(_Request("GET", f"/v1/jobs/{job_id}"), Job))

    def list_jobs(self, status: str | None = None) -> list[Job]:
        """Every job (all pages), optionally by status."""
        return self._run(self._list_jobs(status))

    def list_tasks(self, job_id: int) -> list[dict[str, Any]]:
        """Every task of a job (config, device, frequency, status, last error), all pages."""
        return self._run(_paged(f"/v1/jobs/{job_id}/tasks", {}, self.page_size))

    def cancel_job(self, job_id: int) -> Job:
        """Cancel a job's remaining tasks (profile scope)."""
        return self._run(_one(_Request("POST", f"/v1/jobs/{job_id}/cancel"), Job))

    def wait(
        self,
        job_id: int,
        progress: Callable[[Job], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll a job until it is done, failed or cancelled; `progress(job)` is called after every poll."""
        return self._run(self._wait_job(job_id, progress, poll_s, timeout_s))

    # measurements

    def measurements(self, **filters: Any) -> pd.DataFrame:
        """Measurements matching `filters` (the query parameters of `GET /v1/measurements`), all pages."""
        return self._run(self._measurements(filters))

    def import_measurements(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store externally measured rows, all or nothing (profile scope); returns how many were stored."""
        return self._run(self._import_measurements(rows))

    # predictors

    def train_predictor(
        self,
        family: str,
        device: int,
        params: Mapping[str, Any] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> Predictor:
        """Start training a predictor (profile scope); returns it in `training` state.

        `params` override the XGBoost defaults; `filters` pick the measurements (e.g. `frequencies_khz`).
        """
        body = _drop_none({"family": family, "device": device, "params": params, "filters": filters})
        return self._run(_one(_Request("POST", "/v1/predictors", json=body, idempotent=False), Predictor))

    def get_predictor(self, predictor_id: int) -> Predictor:
        """A predictor's status, metrics and versions."""
        return self._run(_one(_Request("GET", f"/v1/predictors/{predictor_id}"), Predictor))

    def list_predictors(self, family: str | None = None, device: int | None = None) -> list[Predictor]:
        """Every predictor (all pages)."""
        return self._run(self._list_predictors(family, device))

    def activate_predictor(self, predictor_id: int) -> Predictor:
        """Make this predictor the one `/v1/predict` answers with for its family and device."""
        return self._run(_one(_Request("POST", f"/v1/predictors/{predictor_id}/activate"), Predictor))

    def wait_predictor(
        self,
        predictor_id: int,
        progress: Callable[[Predictor], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Predictor:
        """Poll a predictor until training is `ready` or `failed`."""
        return self._run(self._wait_predictor(predictor_id, progress, poll_s, timeout_s))

    def predict(
        self,
        device: int,
        family: str,
        configs: Sequence[Any],
        frequency_khz: int | None = None,
        frequencies_khz: Sequence[int] | None = None,
    ) -> Prediction:
        """Predicted latencies of `configs` in one batched call (predict scope)."""
        return self._run(self._predict(device, family, configs, frequency_khz, frequencies_khz))

    def download_snapshot(self, predictor_id: int, path: str | os.PathLike[str]) -> Path:
        """Save a predictor's snapshot archive to `path` (atomically) for `Snapshot.load(path)`."""
        return _write_atomically(Path(path), self._run(self._snapshot_bytes(predictor_id)))

    def import_predictor(self, path: str | os.PathLike[str], device: int | None = None) -> Predictor:
        """Upload a snapshot archive as a new, inactive predictor version (for `device`, default its own)."""
        return self._run(self._import_predictor(Path(path).read_bytes(), device))


def _one_json(request: _Request) -> _Operation[Any]:
    response = yield request
    return _json(response)


class AsyncLatfarmClient(_Operations):
    """The asyncio twin of `LatfarmClient`: the same methods, as coroutines."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _default_url(base_url).rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_base_headers(_default_token(token)), timeout=timeout,
            transport=transport,
        )  # fmt: skip

    async def __aenter__(self) -> AsyncLatfarmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, request: _Request) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    params=request.params,
                    json=request.json,
                    content=request.content,
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries or not _may_retry(exc, request.idempotent):
                    raise LatfarmConnectionError(
                        f"{request.method} {self.base_url}{request.path} failed: {exc!r}"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUSES or attempt >= self.retries:
                    raise LatfarmAPIError.from_response(response)
            await asyncio.sleep(_backoff_delay(attempt, self.backoff_s, response))
            attempt += 1

    async def _run(self, operation: _Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                    step = operation.send(None)
                else:
                    step = operation.send(await self._send(step))
        except StopIteration as stop:
            return stop.value

    async def health(self) -> dict[str, Any]:
        """`GET /healthz`."""
        return await self._run(_one_json(_Request("GET", "/healthz")))

    async def register_device(
        self,
        serial: str,
        transport: str = "tcp",
        address: str | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Device:
        """Register a phone (admin scope)."""
        return await self._run(self._register_device(serial, transport, address, name, tags))

    async def list_devices(self, status: str | None = None, tag: str | None = None) -> list[Device]:
        """Every registered device (all pages)."""
        return await self._run(self._list_devices(status, tag))

    async def get_device(self, device_id: int) -> Device:
        """One device with its probed facts."""
        return await self._run(_one(_Request("GET", f"/v1/devices/{device_id}"), Device))

    async def update_device(
        self,
        device_id: int,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> Device:
        """Change a device's name, tags or enabled flag (admin scope)."""
        changes = {"name": name, "tags": tags, "enabled": enabled}
        return await self._run(self._update_device(device_id, changes))

    async def delete_device(self, device_id: int) -> None:
        """Remove a device."""
        await self._run(self._delete_device(device_id))

    async def probe_device(self, device_id: int) -> Device:
        """Connect to the phone now and refresh its probed facts."""
        return await self._run(_one(_Request("POST", f"/v1/devices/{device_id}/probe"), Device))

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
    ) -> Job:
        """Submit a profiling job (profile scope)."""
        return await self._run(
            self._submit_job(
                family, configs, devices, frequencies, runtime, priority, force, sampler, selector
            )
        )

    async def get_job(self, job_id: int) -> Job:
        """A job's status and task counts."""
        return await self._run(_one(_Request("GET", f"/v1/jobs/{job_id}"), Job))

    async def list_jobs(self, status: str | None = None) -> list[Job]:
        """Every job (all pages)."""
        return await self._run(self._list_jobs(status))

    async def list_tasks(self, job_id: int) -> list[dict[str, Any]]:
        """Every task of a job, all pages."""
        return await self._run(_paged(f"/v1/jobs/{job_id}/tasks", {}, self.page_size))

    async def cancel_job(self, job_id: int) -> Job:
        """Cancel a job's remaining tasks."""
        return await self._run(_one(_Request("POST", f"/v1/jobs/{job_id}/cancel"), Job))

    async def wait(
        self,
        job_id: int,
        progress: Callable[[Job], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll a job until it is done, failed or cancelled."""
        return await self._run(self._wait_job(job_id, progress, poll_s, timeout_s))

    async def measurements(self, **filters: Any) -> pd.DataFrame:
        """Measurements matching `filters`, all pages, as a DataFrame."""
        return await self._run(self._measurements(filters))

    async def import_measurements(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store externally measured rows, all or nothing; returns how many were stored."""
        return await self._run(self._import_measurements(rows))

    async def train_predictor(
        self,
        family: str,
        device: int,
        params: Mapping[str, Any] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> Predictor:
        """Start training a predictor."""
        body = _drop_none({"family": family, "device": device, "params": params, "filters": filters})
        request = _Request("POST", "/v1/predictors", json=body, idempotent=False)
        return await self._run(_one(request, Predictor))

    async def get_predictor(self, predictor_id: int) -> Predictor:
        """A predictor's status and metrics."""
        return await self._run(_one(_Request("GET", f"/v1/predictors/{predictor_id}"), Predictor))

    async def list_predictors(self, family: str | None = None, device: int | None = None) -> list[Predictor]:
        """Every predictor (all pages)."""
        return await self._run(self._list_predictors(family, device))

    async def activate_predictor(self, predictor_id: int) -> Predictor:
        """Make this predictor the active one for its family and device."""
        request = _Request("POST", f"/v1/predictors/{predictor_id}/activate")
        return await self._run(_one(request, Predictor))

    async def wait_predictor(
        self,
        predictor_id: int,
        progress: Callable[[Predictor], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Predictor:
        """Poll a predictor until training is `ready` or `failed`."""
        return await self._run(self._wait_predictor(predictor_id, progress, poll_s, timeout_s))

    async def predict(
        self,
        device: int,
        family: str,
        configs: Sequence[Any],
        frequency_khz: int | None = None,
        frequencies_khz: Sequence[int] | None = None,
    ) -> Prediction:
        """Predicted latencies of `configs` in one batched call."""
        return await self._run(self._predict(device, family, configs, frequency_khz, frequencies_khz))

    async def download_snapshot(self, predictor_id: int, path: str | os.PathLike[str]) -> Path:
        """Save a predictor's snapshot archive to `path` (atomically)."""
        content = await self._run(self._snapshot_bytes(predictor_id))
        return _write_atomically(Path(path), content)

    async def import_predictor(self, path: str | os.PathLike[str], device: int | None = None) -> Predictor:
        """Upload a snapshot archive as a new, inactive predictor version."""
        return await self._run(self._import_predictor(Path(path).read_bytes(), device))
