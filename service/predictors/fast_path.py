"""`POST /v1/predict` answered from the middleware stack: a search loop's request, without the router.

Why: a one-config predict costs the server well under a millisecond of work, and the router, FastAPI's
request handling and Starlette's exception and exit-stack layers added about a sixth to it on every call.

Protocol. This ASGI middleware sits inside the metrics and body-size middlewares (so every request is
still counted, timed and size-limited) and takes only `POST /v1/predict` with a body the route would
answer on the event loop. It runs what the route runs (`routes.answer_predicts`: token check, body
validation, the domain's prediction, the JSON answer) and sends its response. Anything else — another
path, a large body, and *any* error raised while answering — goes to the full application, with the body
replayed, so every error response (401, 403, 409, 413, 422, a crash) is exactly the route's own. Answering
has no side effect, so a request that fails here and is answered again there is answered once.

Requests whose bodies are read in the same event-loop turn are answered together: the first one queued
schedules a flush at the end of the turn (`loop.call_soon`), every one queued before it runs joins, and
`routes.answer_predicts` answers them with one model call per group asking the same question
(`coalesce.py`: bit for bit each request's own answer). A lone request waits one loop turn, a few µs;
under load a process's ready requests share the fixed cost of a model call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.operations import RequestMetrics
from service.predictors.routes import INLINE_BODY_BYTES, PREDICT_PATH, answer_predicts


class PredictFastPath:
    """ASGI middleware answering `POST /v1/predict` (see the module's protocol); `route` labels metrics,
    `metrics` counts the requests each loop turn answers together."""

    def __init__(self, app: ASGIApp, route: Any, metrics: RequestMetrics) -> None:
        self.app = app
        self.route = route
        self.metrics = metrics
        #: Requests read this loop turn, waiting for the flush (`_flush`) to answer them together.
        self._queued: list[tuple[Request, bytes, asyncio.Future[Response | None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body: nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if len(body) <= INLINE_BODY_BYTES:
            response = await self._answer(Request(scope), body)
            if response is not None:
                scope["route"] = self.route  # the metrics label the router would have set
                await response(scope, receive, send)
                return
        # The full application answers it, error response and all.
        await self.app(scope, _replay(body, receive), send)

    def _answer(self, request: Request, body: bytes) -> asyncio.Future[Response | None]:
        """The answer to one request, once this loop turn's requests are answered together (None: not
        answered here)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response | None] = loop.create_future()
        if self._queued and self._queued[0][2].get_loop() is not loop:
            self._queued = []  # left by an event loop that stopped before its flush ran
        self._queued.append((request, body, future))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        self.metrics.predict_turns.observe(len(queued))
        try:
            responses = answer_predicts([(request, body) for request, body, _ in queued])
        except Exception:  # every one of them is answered by the full application
            responses = [None] * len(queued)
        for (_, _, future), response in zip(queued, responses, strict=True):
            if not future.done():  # its client may have gone (the task awaiting it cancelled)
                future.set_result(response)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
