"""The client's one retry policy, sans-I/O: which failed attempts are repeated, and how long to wait first.

Connection errors, 429 and 5xx are retried with exponential backoff and jitter (honouring `Retry-After`);
4xx never are, since repeating a bad request cannot make it good. A request that may have reached the server
(a read timeout, a connection dropped after sending) is retried only when it is idempotent, so a job is never
submitted twice. An answer the retries could not turn into a success raises `LatfarmAPIError` with the
server's problem details; a server never reached raises `LatfarmConnectionError`.

`RetryPolicy.run` wraps an operation: each `Request` it yields becomes one or more attempts (the same
`Request`, answered by the facade with the `httpx.Response` or the `httpx.TransportError` it met) separated
by `Sleep`s. The facades perform those steps and nothing else, so the policy exists once.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from service.client.errors import LatfarmAPIError, LatfarmConnectionError
from service.client.operations import Operation, Request, Sleep, Step

T = TypeVar("T")

#: Statuses that say "try again later" rather than "this request is wrong".
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: What a facade sends back for an attempt (None after a `Sleep`).
Outcome = httpx.Response | httpx.TransportError | None
Attempts = Generator[Step, Outcome, T]


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` repeats of a failed attempt, waiting `backoff_s`·2ⁿ (with jitter, at most `max_delay_s`)."""

    retries: int = 3
    backoff_s: float = 0.5
    max_delay_s: float = 30.0
    #: The longest `Retry-After` obeyed; a server asking for more is asked again sooner.
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before retry number `attempt + 1`; a server's `Retry-After` (seconds) wins when longer."""
        delay = self.backoff_s * (2**attempt) * (0.5 + random.random() / 2)
        if response is not None:
            retry_after = response.headers.get("retry-after", "")
            if retry_after.replace(".", "", 1).isdigit():
                delay = max(delay, min(float(retry_after), self.max_retry_after_s))
        return float(min(delay, self.max_delay_s))

    @staticmethod
    def may_repeat(error: httpx.TransportError, idempotent: bool) -> bool:
        """Whether a request that failed with `error` may be sent again."""
        # A connect failure means the request never left; anything later may have reached the server.
        return idempotent or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)

    def send(self, request: Request, base_url: str) -> Attempts[httpx.Response]:
        """Attempts of one request until a success (returned) or a final failure (raised)."""
        attempt = 0
        while True:
            outcome = yield request
            response: httpx.Response | None = None
            if isinstance(outcome, httpx.TransportError):
                if attempt >= self.retries or not self.may_repeat(outcome, request.idempotent):
                    raise LatfarmConnectionError(
                        f"{request.method} {base_url}{request.path} failed: {outcome!r}"
                    ) from outcome
            elif isinstance(outcome, httpx.Response):
                if outcome.status_code < 400:
                    return outcome
                if outcome.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise LatfarmAPIError.from_response(outcome)
                response = outcome
            else:
                raise TypeError(
                    f"an attempt of {request.method} {request.path} was answered with {outcome!r}"
                )
            yield Sleep(self.delay(attempt, response))
            attempt += 1

    def run(self, operation: Operation[T], base_url: str) -> Attempts[T]:
        """`operation` with each of its requests sent under this policy."""
        try:
            step = next(operation)
            while True:
                received: httpx.Response | None = None
                if isinstance(step, Sleep):
                    yield step
                else:
                    received = yield from self.send(step, base_url)
                step = operation.send(received)
        except StopIteration as stop:
            result: T = stop.value
            return result
