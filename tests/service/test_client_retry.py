"""The client's retry policy, driven without a network (it is sans-I/O), and the two facades kept twins."""

from __future__ import annotations

import inspect

import httpx
import pytest

from service.client import AsyncLatfarmClient, LatfarmClient, RetryPolicy
from service.client.errors import LatfarmAPIError, LatfarmConnectionError
from service.client.operations import Request, Sleep, Step
from service.client.retry import Attempts, Outcome

BASE_URL = "http://farm.invalid"


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", f"{BASE_URL}/v1/jobs")
    return httpx.Response(
        status, headers=headers, json={"title": "T", "detail": f"answer {status}"}, request=request
    )


def _drive(attempts: Attempts[httpx.Response], outcomes: list[Outcome]) -> tuple[list[Step], httpx.Response]:
    """Answer each attempt with the next outcome; the steps seen and the response returned."""
    steps: list[Step] = []
    pending = iter(outcomes)
    try:
        step = next(attempts)
        while True:
            steps.append(step)
            step = attempts.send(None if isinstance(step, Sleep) else next(pending))
    except StopIteration as stop:
        return steps, stop.value


def _requests(steps: list[Step]) -> int:
    return sum(isinstance(step, Request) for step in steps)


def test_a_busy_server_is_asked_again_after_a_growing_backoff() -> None:
    policy = RetryPolicy(retries=3, backoff_s=1.0)
    outcomes: list[Outcome] = [_response(503), _response(502), _response(200)]
    steps, response = _drive(policy.send(Request("GET", "/v1/jobs"), BASE_URL), outcomes)
    assert response.status_code == 200
    sleeps = [step.seconds for step in steps if isinstance(step, Sleep)]
    assert _requests(steps) == 3 and len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # backoff_s·2ⁿ with jitter in [½, 1]


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    policy = RetryPolicy(retries=2, backoff_s=0.0, max_retry_after_s=60.0)
    assert policy.delay(0, _response(429, {"Retry-After": "7"})) == 7.0
    assert policy.delay(0, _response(429, {"Retry-After": "3600"})) == policy.max_delay_s
    assert policy.delay(0, _response(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


def test_a_client_error_is_never_repeated() -> None:
    attempts = RetryPolicy(retries=5).send(Request("POST", "/v1/jobs", idempotent=False), BASE_URL)
    assert isinstance(next(attempts), Request)
    with pytest.raises(LatfarmAPIError, match="answer 422") as raised:
        attempts.send(_response(422))
    assert raised.value.status == 422


def test_retries_give_up_with_the_last_answer() -> None:
    attempts = RetryPolicy(retries=1, backoff_s=0.0).send(Request("GET", "/v1/jobs"), BASE_URL)
    next(attempts)
    assert isinstance(attempts.send(_response(500)), Sleep)
    assert isinstance(attempts.send(None), Request)
    with pytest.raises(LatfarmAPIError, match="answer 503"):
        attempts.send(_response(503))


def test_a_request_that_may_have_arrived_is_repeated_only_when_idempotent() -> None:
    read_timeout = httpx.ReadTimeout("no answer")
    submit = RetryPolicy(retries=3).send(Request("POST", "/v1/jobs", idempotent=False), BASE_URL)
    next(submit)
    with pytest.raises(LatfarmConnectionError, match=r"POST http://farm\.invalid/v1/jobs failed"):
        submit.send(read_timeout)

    steps, response = _drive(
        RetryPolicy(retries=3, backoff_s=0.0).send(Request("GET", "/v1/jobs"), BASE_URL),
        [read_timeout, _response(200)],
    )
    assert response.status_code == 200 and _requests(steps) == 2


def test_a_request_that_never_left_is_repeated_even_when_not_idempotent() -> None:
    policy = RetryPolicy(retries=3, backoff_s=0.0)
    steps, response = _drive(
        policy.send(Request("POST", "/v1/jobs", idempotent=False), BASE_URL),
        [httpx.ConnectError("refused"), httpx.ConnectError("refused"), _response(201)],
    )
    assert response.status_code == 201 and _requests(steps) == 3


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


def test_the_async_facade_is_the_blocking_one_as_coroutines() -> None:
    blocking, twin = _public_methods(LatfarmClient), _public_methods(AsyncLatfarmClient)
    assert set(blocking) - {"close"} == set(twin) - {"aclose"}
    for name, signature in twin.items():
        method = getattr(AsyncLatfarmClient, name)
        assert inspect.iscoroutinefunction(method), name
        if name == "aclose":
            continue
        assert signature == blocking[name], f"{name}: {signature} differs from {blocking[name]}"
        assert method.__doc__ == getattr(LatfarmClient, name).__doc__, name
    init_params = inspect.signature(AsyncLatfarmClient.__init__).parameters
    assert list(init_params) == list(inspect.signature(LatfarmClient.__init__).parameters)
