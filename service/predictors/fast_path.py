"""`POST /v1/predict` answered from the middleware stack: a search loop's request, without the router.

Why: a one-config predict costs the server well under a millisecond of work, and the router, FastAPI's
request handling and Starlette's exception and exit-stack layers added about a sixth to it on every call.

Protocol. This ASGI middleware sits inside the metrics and body-size middlewares (so every request is
still counted, timed and size-limited) and takes only `POST /v1/predict` with a body the route would
answer on the event loop. It runs the very function the route runs (`routes.answer_predict`: token check,
body validation, the domain's `predict`, the JSON answer) and sends its response. Anything else — another
path, a large body, and *any* error raised while answering — goes to the full application, with the body
replayed, so every error response (401, 403, 409, 413, 422, a crash) is exactly the route's own. Answering
has no side effect, so a request that fails here and is answered again there is answered once.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.predictors.routes import INLINE_BODY_BYTES, PREDICT_PATH, answer_predict


class PredictFastPath:
    """ASGI middleware answering `POST /v1/predict` (see the module's protocol); `route` labels metrics."""

    def __init__(self, app: ASGIApp, route: Any) -> None:
        self.app = app
        self.route = route

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
            try:
                response = answer_predict(Request(scope), body)
            except Exception:  # the full application answers it, error response and all
                pass
            else:
                scope["route"] = self.route  # the metrics label the router would have set
                await response(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)


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
